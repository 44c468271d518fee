/**
 * The Deno transport: `Transport.Listener` and `Transport.Connector` for
 * Deno 2, in the same lean shape as the Node one (one fiber per connection
 * forked from a `FiberSet` runtime, batch reads with `null` at end of
 * stream, writes that suspend only under back-pressure).
 *
 * - Listeners run on `Deno.listen` (TCP or a Unix socket) with native
 *   connections (`internal/DenoConnection.ts`). A PROXY header (v1/v2, from
 *   trusted peers only, under a time limit) is read with EXACT reads: each
 *   `conn.read` asks for no more bytes than the pure decoder still needs, so
 *   nothing of the next layer (a TLS ClientHello, a command) is consumed.
 * - Server-side TLS (STARTTLS, implicit TLS, SNI, `setTls`) is Deno's
 *   `node:tls` over the native connection, as the design allows: Deno has no
 *   server-side STARTTLS of its own, and `Deno.listenTls` takes one
 *   certificate (no SNI), cannot swap it, handshakes from the first byte (no
 *   PROXY header before TLS) and reports no protocol version or cipher for
 *   the Received header. Bytes pipelined after STARTTLS are discarded.
 * - The connector dials with `Deno.connect` (TCP or Unix); implicit TLS and
 *   STARTTLS use `Deno.startTls` when the certificate is verified (the
 *   default; `Deno.connectTls` would be the same handshake), and `node:tls`
 *   over the same connection when `rejectUnauthorized` is false
 *   (opportunistic TLS that records why verification failed, which Deno's
 *   own TLS cannot do).
 *
 * What this module deliberately does not do: framing, SMTP, choosing time
 * limits other than the PROXY header wait and TLS handshakes (the driver
 * passes its read deadlines and write limits; the connection enforces them).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Transport from "@mailroom/protocol/edge/Transport"
import * as ProxyProtocol from "@mailroom/protocol/wire/ProxyProtocol"
import { compileTls, DenoConnection, endpointOf, makeServerTls, messageOf, type Settings } from "./internal/DenoConnection.ts"

/** Tunables of the Deno transport. */
export interface DenoTransportOptions {
  /** Limit for a TLS handshake (implicit TLS, `startTls`), ms. Default 30 000. */
  readonly handshakeTimeoutMs?: number
  /** After `close` has flushed, how long to wait for the peer's FIN before closing, ms. Default 2 000. */
  readonly lingerMs?: number
  /** Bytes queued for writing before `write` suspends (and, on `node:tls`, read before pausing). Default 256 KiB. */
  readonly highWaterMark?: number
}

const DEFAULT_PROXY_TIMEOUT_MS = 5_000

const settingsOf = (o: DenoTransportOptions | undefined): Settings => ({
  handshakeTimeoutMs: o?.handshakeTimeoutMs ?? 30_000,
  lingerMs: o?.lingerMs ?? 2_000,
  highWaterMark: o?.highWaterMark ?? 256 * 1024
})

const listenError = (message: string, cause?: unknown) =>
  new Transport.TransportError(cause === undefined ? { reason: "Listen", message } : { reason: "Listen", message, cause })

// ---------------------------------------------------------------------------
// PROXY header
// ---------------------------------------------------------------------------

/** Reads a PROXY header with exact reads; resolves with the facts or the reason it was refused. */
const readProxyHeader = (conn: Deno.Conn, timeoutMs: number): Effect.Effect<Transport.ProxiedFacts, string> =>
  Effect.callback<Transport.ProxiedFacts, string>((resume) => {
    let finished = false
    const finish = (result: Effect.Effect<Transport.ProxiedFacts, string>) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      resume(result)
    }
    const timer = setTimeout(() => finish(Effect.fail(`no complete PROXY header within ${timeoutMs} ms`)), timeoutMs)
    ;(async () => {
      let buf = new Uint8Array(0)
      while (!finished) {
        const r = ProxyProtocol.decode(buf)
        if (r._tag === "Done") return finish(Effect.succeed(r.header))
        if (r._tag === "Invalid") return finish(Effect.fail(`invalid PROXY header: ${r.reason}`))
        const chunk = new Uint8Array(r.atLeast - buf.length)
        const n = await conn.read(chunk)
        if (n === null) return finish(Effect.fail("connection closed before a complete PROXY header"))
        const next = new Uint8Array(buf.length + n)
        next.set(buf)
        next.set(chunk.subarray(0, n), buf.length)
        buf = next
      }
    })().catch(() => finish(Effect.fail("connection closed before a complete PROXY header")))
    return Effect.sync(() => finish(Effect.fail("interrupted")))
  })

// ---------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------

const isMissing = (e: unknown) => e instanceof Deno.errors.NotFound

/** Removes a Unix socket file nobody listens on; refuses a live one or a non-socket. */
const removeStaleSocket = (path: string): Effect.Effect<void, Transport.TransportError> =>
  Effect.tryPromise({
    try: async () => {
      let st: Deno.FileInfo
      try {
        st = await Deno.lstat(path)
      } catch (e) {
        if (isMissing(e)) return
        throw e
      }
      if (st.isSocket !== true) throw listenError(`${path} exists and is not a socket`)
      try {
        const probe = await Deno.connect({ transport: "unix", path })
        probe.close()
      } catch (e) {
        if (!(e instanceof Deno.errors.ConnectionRefused) && !isMissing(e)) throw listenError(`cannot check ${path}: ${messageOf(e)}`, e)
        await Deno.remove(path)
        return
      }
      throw listenError(`${path} is in use by a live listener`)
    },
    catch: (e) => (e instanceof Transport.TransportError ? e : listenError(`cannot remove stale socket ${path}: ${messageOf(e)}`, e))
  })

/** `reusePort` needs `--unstable-net` (the worker processes `serve` starts have it). */
const bind = (endpoint: Transport.Endpoint, reusePort: boolean): Effect.Effect<Deno.Listener, Transport.TransportError> =>
  Effect.try({
    try: (): Deno.Listener =>
      endpoint._tag === "Unix"
        ? Deno.listen({ transport: "unix", path: endpoint.path })
        : Deno.listen({ transport: "tcp", hostname: endpoint.address, port: endpoint.port, ...(reusePort ? { reusePort } : {}) }),
    catch: (e) => listenError(`cannot listen on ${Transport.formatEndpoint(endpoint)}: ${messageOf(e)}`, e)
  })

/** Makes a `Listener` with the given tunables. */
export const makeListener = (options?: DenoTransportOptions): (typeof Transport.Listener)["Service"] => {
  const settings = settingsOf(options)

  const listen = (opts: Transport.ListenOptions, handler: (connection: Transport.Connection) => Effect.Effect<void>) =>
    Effect.gen(function*() {
      const contexts = opts.tls !== undefined ? yield* compileTls(opts.tls) : undefined
      if (opts.implicitTls === true && contexts === undefined) return yield* listenError("implicitTls needs tls certificates")
      const serverTls = makeServerTls(contexts)
      const implicit = opts.implicitTls === true
      const proxy = opts.proxyProtocol
      if (proxy !== undefined) {
        const bad = proxy.trusted.filter((t) => !ProxyProtocol.isValidTrustEntry(t))
        if (bad.length > 0) return yield* listenError(`invalid trusted PROXY peers: ${bad.join(", ")}`)
      }
      const unixPath = opts.endpoint._tag === "Unix" ? opts.endpoint.path : undefined
      const proxyTimeout = proxy?.timeoutMs ?? DEFAULT_PROXY_TIMEOUT_MS
      const reject = (conn: DenoConnection, reason: string) => {
        conn.hardClose()
        try {
          opts.onReject?.({ remote: conn.remote, reason })
        } catch {
          // a logging hook must not break the listener
        }
      }
      const guarded = (conn: DenoConnection) =>
        Effect.catchDefect(handler(conn), (defect) => Effect.logError(`connection ${conn.id} handler died`, defect))
      const tlsFirst = (conn: DenoConnection): Effect.Effect<void> =>
        !implicit ? guarded(conn) : conn.handshake(undefined, settings.handshakeTimeoutMs).pipe(
          Effect.matchEffect({
            onSuccess: () => guarded(conn),
            onFailure: (e) => Effect.sync(() => reject(conn, e.message))
          })
        )
      const prelude = (conn: DenoConnection): Effect.Effect<void> => {
        if (proxy === undefined) return tlsFirst(conn)
        const r = conn.remote
        if (r._tag === "Inet" && !ProxyProtocol.isTrusted(r.address, proxy.trusted)) {
          reject(conn, `PROXY header not allowed from ${r.address}`)
          return Effect.void
        }
        return readProxyHeader(conn.raw, proxyTimeout).pipe(
          Effect.matchEffect({
            onSuccess: (facts) => {
              conn.proxied = facts
              return tlsFirst(conn)
            },
            onFailure: (reason) => Effect.sync(() => reject(conn, reason))
          })
        )
      }

      const runFork = yield* FiberSet.makeRuntime<never, void, never>()
      if (unixPath !== undefined) yield* removeStaleSocket(unixPath)
      const listener = yield* Effect.acquireRelease(bind(opts.endpoint, opts.reusePort === true), (l) =>
        Effect.sync(() => {
          // stop accepting; live connections are interrupted by the FiberSet afterwards
          try {
            l.close()
          } catch {
            // closed already
          }
          if (unixPath !== undefined) {
            try {
              Deno.removeSync(unixPath)
            } catch {
              // gone already
            }
          }
        }))
      const endpoint = unixPath !== undefined ? opts.endpoint : endpointOf(listener.addr)
      let open = true
      yield* Effect.addFinalizer(() => Effect.sync(() => (open = false)))
      ;(async () => {
        while (open) {
          let raw: Deno.Conn
          try {
            raw = await listener.accept()
          } catch {
            if (!open) return
            // out of descriptors or similar: retry shortly rather than stop accepting
            await new Promise((r) => setTimeout(r, 50))
            continue
          }
          if (raw.remoteAddr.transport === "tcp") {
            try {
              ;(raw as Deno.TcpConn).setNoDelay(true)
            } catch {
              // the peer is gone already
            }
          }
          const conn = new DenoConnection(
            raw,
            unixPath !== undefined ? { _tag: "Unix", path: "" } : endpointOf(raw.remoteAddr),
            unixPath !== undefined ? { _tag: "Unix", path: unixPath } : endpointOf(raw.localAddr),
            serverTls,
            settings
          )
          runFork(Effect.ensuring(prelude(conn), conn.finalize))
        }
      })()
      const bound: Transport.BoundListener = {
        endpoint,
        setTls: (config) =>
          Effect.map(compileTls(config), (c) => {
            serverTls.current = c
          })
      }
      return bound
    })
  return { listen }
}

// ---------------------------------------------------------------------------
// Connector
// ---------------------------------------------------------------------------

const dial = (opts: Transport.ConnectOptions, settings: Settings): Effect.Effect<DenoConnection, Transport.TransportError> =>
  Effect.callback<DenoConnection, Transport.TransportError>((resume) => {
    const ep = opts.endpoint
    let done = false
    let timer: ReturnType<typeof setTimeout> | undefined
    const settle = (e: Effect.Effect<DenoConnection, Transport.TransportError>) => {
      if (done) return false
      done = true
      if (timer !== undefined) clearTimeout(timer)
      resume(e)
      return true
    }
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() =>
        settle(Effect.fail(
          new Transport.TransportError({
            reason: "Timeout",
            message: `connecting to ${Transport.formatEndpoint(ep)} timed out after ${opts.timeoutMs} ms`
          })
        )), opts.timeoutMs)
    }
    const pending: Promise<Deno.Conn> = ep._tag === "Unix"
      ? Deno.connect({ transport: "unix", path: ep.path })
      : Deno.connect({ transport: "tcp", hostname: ep.address, port: ep.port })
    pending.then(
      (raw) => {
        if (raw.remoteAddr.transport === "tcp") (raw as Deno.TcpConn).setNoDelay(true)
        const conn = new DenoConnection(
          raw,
          ep._tag === "Unix" ? { _tag: "Unix", path: ep.path } : endpointOf(raw.remoteAddr),
          ep._tag === "Unix" ? { _tag: "Unix", path: "" } : endpointOf(raw.localAddr),
          undefined,
          settings
        )
        if (!settle(Effect.succeed(conn))) raw.close()
      },
      (e) =>
        settle(Effect.fail(
          new Transport.TransportError({
            reason: "Connect",
            message: `cannot connect to ${Transport.formatEndpoint(ep)}: ${messageOf(e)}`,
            cause: e
          })
        ))
    )
    return Effect.sync(() => {
      // interrupted: a connection that still arrives is closed by `settle`
      if (timer !== undefined) clearTimeout(timer)
      done = true
      pending.then((raw) => raw.close(), () => undefined)
    })
  })

/** Makes a `Connector` with the given tunables. `localAddress` is not supported by `Deno.connect` and is ignored. */
export const makeConnector = (options?: DenoTransportOptions): (typeof Transport.Connector)["Service"] => {
  const settings = settingsOf(options)
  return {
    connect: (opts) =>
      Effect.acquireRelease(dial(opts, settings), (conn) => conn.finalize).pipe(
        Effect.flatMap((conn) =>
          opts.tls === undefined
            ? Effect.succeed<Transport.Connection>(conn)
            : Effect.as(conn.handshake(opts.tls, opts.timeoutMs ?? settings.handshakeTimeoutMs), conn as Transport.Connection)
        )
      )
  }
}

/** The Deno `Listener`, with default tunables. */
export const listenerLayer: Layer.Layer<Transport.Listener> = Layer.sync(Transport.Listener, () => makeListener())

/** The Deno `Connector`, with default tunables. */
export const connectorLayer: Layer.Layer<Transport.Connector> = Layer.sync(Transport.Connector, () => makeConnector())

/** Both services. */
export const layer: Layer.Layer<Transport.Listener | Transport.Connector> = Layer.merge(listenerLayer, connectorLayer)

/** Both services with custom tunables. */
export const layerWith = (options: DenoTransportOptions): Layer.Layer<Transport.Listener | Transport.Connector> =>
  Layer.merge(
    Layer.succeed(Transport.Listener, makeListener(options)),
    Layer.succeed(Transport.Connector, makeConnector(options))
  )
