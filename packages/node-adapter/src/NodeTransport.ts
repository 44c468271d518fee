/**
 * The Node transport: `Transport.Listener` and `Transport.Connector` over
 * `node:net` and `node:tls`, in the measured "lean" shape
 * (shared/reference/effect-socket-probe.md):
 *
 * - one `net.Server` per listener inside `Effect.acquireRelease`, and one
 *   fiber per connection forked with a `FiberSet.makeRuntime` fork function;
 * - `read` hands over every chunk buffered since the last read (the socket
 *   is paused above a high-water mark and resumed when the batch is taken),
 *   `null` at end of stream; no error object is built for a normal close;
 * - `write` is a plain `socket.write` that suspends on `'drain'` only when the
 *   socket applies back-pressure;
 * - socket listeners are module-level functions that find their connection
 *   through a symbol on the socket, so a connection costs few closures.
 *
 * Listeners also do what must happen before the handler sees a byte: the
 * PROXY header (v1/v2, read EXACTLY with `socket.read(n)` so nothing of the
 * next layer is consumed, from trusted peers only, under a time limit) and
 * implicit TLS. STARTTLS (`startTls`) discards every byte received before it
 * was called and not yet returned by `read` (CVE-2011-0411); the driver must
 * call it right after writing its `220`, in the same fiber step.
 *
 * Closing a listener's scope stops accepting and then interrupts the live
 * handler fibers; each connection's socket is destroyed when its handler
 * ends. `close` ends gracefully (flush, FIN, then a short linger for the
 * peer's FIN so that unread input does not turn into a reset); `destroy` is
 * immediate.
 *
 * What this module deliberately does not do: framing, SMTP, choosing time
 * limits other than the PROXY header wait and TLS handshakes (the driver
 * passes its read deadlines and write limits; the connection enforces them).
 *
 * @since 0.1.0
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Transport from "@mailroom/protocol/edge/Transport"
import * as ProxyProtocol from "@mailroom/protocol/wire/ProxyProtocol"
import {
  compileTls,
  errorCode,
  localOf,
  makeServerTls,
  messageOf,
  NodeConnection,
  noop,
  plainAddress,
  remoteOf,
  type Settings
} from "./internal/NodeConnection.ts"

/** Tunables of the Node transport. */
export interface NodeTransportOptions {
  /** Limit for a TLS handshake (implicit TLS, `startTls`), ms. Default 30 000. */
  readonly handshakeTimeoutMs?: number
  /** After `close` has flushed, how long to wait for the peer's FIN before destroying, ms. Default 2 000. */
  readonly lingerMs?: number
  /** Bytes buffered by the connection before the socket is paused. Default 256 KiB. */
  readonly highWaterMark?: number
}

const DEFAULT_PROXY_TIMEOUT_MS = 5_000

const settingsOf = (o: NodeTransportOptions | undefined): Settings => ({
  handshakeTimeoutMs: o?.handshakeTimeoutMs ?? 30_000,
  lingerMs: o?.lingerMs ?? 2_000,
  highWaterMark: o?.highWaterMark ?? 256 * 1024
})

// ---------------------------------------------------------------------------
// PROXY header
// ---------------------------------------------------------------------------

/**
 * Reads a PROXY header with exact `socket.read(n)` calls in paused mode, so
 * that the bytes after it stay in the socket for the next layer. Fails with
 * the reason.
 */
const readProxyHeader = (sock: net.Socket, timeoutMs: number): Effect.Effect<Transport.ProxiedFacts, string> =>
  Effect.callback<Transport.ProxiedFacts, string>((resume) => {
    let buf: Buffer = Buffer.alloc(0)
    let atLeast = 1
    let finished = false
    const finish = (result: Effect.Effect<Transport.ProxiedFacts, string>) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      sock.off("readable", onReadable)
      sock.off("end", onGone)
      sock.off("close", onGone)
      sock.off("error", onGone)
      resume(result)
    }
    const onReadable = () => {
      while (!finished) {
        const r = ProxyProtocol.decode(buf)
        if (r._tag === "Done") return finish(Effect.succeed(r.header))
        if (r._tag === "Invalid") return finish(Effect.fail(`invalid PROXY header: ${r.reason}`))
        atLeast = r.atLeast
        // Never more than `atLeast` (a lower bound of the header's length), but what is
        // there now when that is less: a bad byte (a bare LF...) is seen at once instead
        // of after the time limit.
        const want = atLeast - buf.length
        const available = sock.readableLength
        const chunk = sock.read(available > 0 && available < want ? available : want) as Buffer | null
        if (chunk === null) return
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
      }
    }
    const onGone = () => finish(Effect.fail("connection closed before a complete PROXY header"))
    const timer = setTimeout(() => finish(Effect.fail(`no complete PROXY header within ${timeoutMs} ms`)), timeoutMs)
    if (sock.destroyed || sock.readableEnded) return onGone()
    sock.on("readable", onReadable)
    sock.once("end", onGone)
    sock.once("close", onGone)
    sock.once("error", onGone)
    onReadable()
    return Effect.sync(() => finish(Effect.fail("interrupted")))
  })

// ---------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------

const listenError = (message: string, cause?: unknown) =>
  new Transport.TransportError({ reason: "Listen", message, cause })

/** Removes a Unix socket file nobody listens on; refuses a live one or a non-socket. */
const removeStaleSocket = (path: string): Effect.Effect<void, Transport.TransportError> =>
  Effect.callback<void, Transport.TransportError>((resume) => {
    let st: fs.Stats
    try {
      st = fs.lstatSync(path)
    } catch {
      resume(Effect.void)
      return
    }
    if (!st.isSocket()) {
      resume(Effect.fail(listenError(`${path} exists and is not a socket`)))
      return
    }
    const probe = net.connect({ path })
    probe.once("connect", () => {
      probe.destroy()
      resume(Effect.fail(listenError(`${path} is in use by a live listener`)))
    })
    probe.once("error", (err) => {
      probe.destroy()
      const code = errorCode(err)
      if (code !== "ECONNREFUSED" && code !== "ENOENT") {
        resume(Effect.fail(listenError(`cannot check ${path}: ${err.message}`, err)))
        return
      }
      try {
        fs.unlinkSync(path)
        resume(Effect.void)
      } catch (cause) {
        resume(Effect.fail(listenError(`cannot remove stale socket ${path}: ${messageOf(cause)}`, cause)))
      }
    })
    return Effect.sync(() => probe.destroy())
  })

const bind = (
  endpoint: Transport.Endpoint,
  backlog: number | undefined,
  reusePort: boolean,
  onConnection: (sock: net.Socket) => void
): Effect.Effect<net.Server, Transport.TransportError> =>
  Effect.callback<net.Server, Transport.TransportError>((resume) => {
    const server = net.createServer({ noDelay: true, allowHalfOpen: true })
    server.on("connection", onConnection)
    const onListenError = (err: Error) => {
      server.off("listening", onListening)
      resume(Effect.fail(listenError(`cannot listen on ${Transport.formatEndpoint(endpoint)}: ${err.message}`, err)))
    }
    const onListening = () => {
      server.off("error", onListenError)
      // accept errors (EMFILE...) must not crash the process; node retries
      server.on("error", noop)
      resume(Effect.succeed(server))
    }
    server.once("error", onListenError)
    server.once("listening", onListening)
    if (endpoint._tag === "Unix") server.listen({ path: endpoint.path, backlog })
    else server.listen({ host: endpoint.address, port: endpoint.port, backlog, ...(reusePort ? { reusePort } : {}) })
    return Effect.sync(() => server.close())
  })

/** An address that stands for every local address: the sockets of such a listener differ in their own end. */
const isWildcard = (address: string): boolean =>
  address === "" || address === "0.0.0.0" || address === "::" || address === "::ffff:0.0.0.0"

const boundEndpoint = (server: net.Server, requested: Transport.Endpoint): Transport.Endpoint => {
  const a = server.address()
  if (requested._tag === "Unix" || a === null || typeof a === "string") return requested
  return { _tag: "Inet", address: plainAddress(a.address), port: a.port }
}

/** Makes a `Listener` with the given tunables. */
export const makeListener = (options?: NodeTransportOptions): (typeof Transport.Listener)["Service"] => {
  const settings = settingsOf(options)
  const listen = (
    opts: Transport.ListenOptions,
    handler: (connection: Transport.Connection) => Effect.Effect<void>
  ) =>
    Effect.gen(function*() {
      const contexts = opts.tls !== undefined ? yield* compileTls(opts.tls) : undefined
      if (opts.implicitTls === true && contexts === undefined) {
        return yield* listenError("implicitTls needs tls certificates")
      }
      const proxy = opts.proxyProtocol
      if (proxy !== undefined) {
        const bad = proxy.trusted.filter((t) => !ProxyProtocol.isValidTrustEntry(t))
        if (bad.length > 0) return yield* listenError(`invalid trusted PROXY peers: ${bad.join(", ")}`)
      }
      const serverTls = makeServerTls(contexts)
      const unixPath = opts.endpoint._tag === "Unix" ? opts.endpoint.path : undefined
      const proxyTimeout = proxy?.timeoutMs ?? DEFAULT_PROXY_TIMEOUT_MS
      const implicit = opts.implicitTls === true
      const reject = (conn: NodeConnection, reason: string) => {
        conn.hardClose()
        try {
          opts.onReject?.({ remote: conn.remote, reason })
        } catch {
          // a logging hook must not break the listener
        }
      }
      const guarded = (conn: NodeConnection) =>
        Effect.catchDefect(handler(conn), (defect) => Effect.logError(`connection ${conn.id} handler died`, defect))

      const prelude = (conn: NodeConnection, sock: net.Socket): Effect.Effect<void> => {
        let eff: Effect.Effect<boolean> = Effect.succeed(true)
        if (proxy !== undefined) {
          const r = conn.remote
          if (r._tag === "Inet" && !ProxyProtocol.isTrusted(r.address, proxy.trusted)) {
            reject(conn, r.address === "" ? "peer gone before its address was known" : `PROXY header not allowed from ${r.address}`)
            return Effect.void
          }
          eff = readProxyHeader(sock, proxyTimeout).pipe(
            Effect.map((facts) => {
              conn.proxied = facts
              return true
            }),
            Effect.catch((reason: string) => Effect.sync(() => (reject(conn, reason), false)))
          )
        }
        if (implicit) {
          eff = Effect.flatMap(eff, (ok) =>
            ok
              ? conn.handshake(sock, undefined, settings.handshakeTimeoutMs).pipe(
                Effect.as(true),
                Effect.catch((e) => Effect.sync(() => (reject(conn, e.message), false)))
              )
              : Effect.succeed(false))
        } else {
          eff = Effect.map(eff, (ok) => {
            if (ok) conn.attach(sock)
            return ok
          })
        }
        // The handler starts when the prelude is over: it is no longer pending then.
        return Effect.flatMap(Effect.ensuring(eff, Effect.sync(() => pending--)), (ok) => ok ? guarded(conn) : Effect.void)
      }
      /** Connections still in their PROXY header or implicit-TLS handshake: bounded by `maxPending`. */
      let pending = 0
      const maxPending = opts.maxPending ?? 512

      /**
       * A listener bound to one address (not a wildcard) accepts every connection on that address and
       * port: its sockets' own end is known without a `getsockname` each. Set once bound.
       */
      let fixedLocal: Transport.Endpoint | undefined = undefined
      const runFork = yield* FiberSet.makeRuntime<never, void, never>()
      const onConnection = (sock: net.Socket) => {
        sock.on("error", noop)
        const conn = new NodeConnection(sock, remoteOf(sock, unixPath), fixedLocal ?? localOf(sock, unixPath), serverTls, settings)
        if (proxy === undefined && !implicit) {
          conn.attach(sock)
          runFork(Effect.ensuring(guarded(conn), conn.finalize))
          return
        }
        if (pending >= maxPending) {
          reject(conn, `too many connections still in their ${proxy !== undefined ? "PROXY header" : "TLS handshake"} (${maxPending})`)
          sock.destroy()
          return
        }
        pending++
        runFork(Effect.ensuring(prelude(conn, sock), conn.finalize))
      }
      if (unixPath !== undefined) yield* removeStaleSocket(unixPath)
      const server = yield* Effect.acquireRelease(
        bind(opts.endpoint, opts.backlog, opts.reusePort === true, onConnection),
        // stop accepting; live connections are interrupted by the FiberSet afterwards
        (s) => Effect.sync(() => s.close())
      )
      const endpoint = boundEndpoint(server, opts.endpoint)
      if (endpoint._tag === "Inet" && !isWildcard(endpoint.address)) fixedLocal = endpoint
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

const dial = (
  opts: Transport.ConnectOptions,
  settings: Settings
): Effect.Effect<NodeConnection, Transport.TransportError> =>
  Effect.callback<NodeConnection, Transport.TransportError>((resume) => {
    const ep = opts.endpoint
    const sock = ep._tag === "Unix"
      ? net.connect({ path: ep.path, allowHalfOpen: true })
      : net.connect({
        host: ep.address,
        port: ep.port,
        allowHalfOpen: true,
        noDelay: true,
        ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {})
      })
    sock.on("error", noop)
    const cleanup = () => {
      if (timer !== undefined) clearTimeout(timer)
      sock.off("connect", onConnect)
      sock.off("error", onFail)
    }
    const onConnect = () => {
      cleanup()
      const unix = ep._tag === "Unix" ? ep.path : undefined
      const conn = new NodeConnection(
        sock,
        unix !== undefined ? { _tag: "Unix", path: unix } : remoteOf(sock, undefined),
        unix !== undefined ? { _tag: "Unix", path: "" } : localOf(sock, undefined),
        undefined,
        settings
      )
      // implicit TLS: the handshake attaches the read side to the TLS socket instead
      if (opts.tls === undefined) conn.attach(sock)
      resume(Effect.succeed(conn))
    }
    const onFail = (err: Error) => {
      cleanup()
      sock.destroy()
      resume(Effect.fail(
        new Transport.TransportError({
          reason: "Connect",
          message: `cannot connect to ${Transport.formatEndpoint(ep)}: ${err.message}`,
          cause: err
        })
      ))
    }
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
      cleanup()
      sock.destroy()
      resume(Effect.fail(
        new Transport.TransportError({
          reason: "Timeout",
          message: `connecting to ${Transport.formatEndpoint(ep)} timed out after ${opts.timeoutMs} ms`
        })
      ))
    }, opts.timeoutMs)
    sock.once("connect", onConnect)
    sock.once("error", onFail)
    return Effect.sync(() => {
      cleanup()
      sock.destroy()
    })
  })

/** Makes a `Connector` with the given tunables. */
export const makeConnector = (options?: NodeTransportOptions): (typeof Transport.Connector)["Service"] => {
  const settings = settingsOf(options)
  return {
    connect: (opts) =>
      Effect.acquireRelease(dial(opts, settings), (conn) => conn.finalize).pipe(
        Effect.flatMap((conn) => {
          if (opts.tls === undefined) return Effect.succeed<Transport.Connection>(conn)
          return Effect.as(
            conn.handshake(conn.sock, opts.tls, opts.timeoutMs ?? settings.handshakeTimeoutMs),
            conn as Transport.Connection
          )
        })
      )
  }
}

/** The Node `Listener`, with default tunables. */
export const listenerLayer: Layer.Layer<Transport.Listener> = Layer.sync(Transport.Listener, () => makeListener())

/** The Node `Connector`, with default tunables. */
export const connectorLayer: Layer.Layer<Transport.Connector> = Layer.sync(Transport.Connector, () => makeConnector())

/** Both services. */
export const layer: Layer.Layer<Transport.Listener | Transport.Connector> = Layer.merge(listenerLayer, connectorLayer)

/** Both services with custom tunables. */
export const layerWith = (options: NodeTransportOptions): Layer.Layer<Transport.Listener | Transport.Connector> =>
  Layer.merge(
    Layer.succeed(Transport.Listener, makeListener(options)),
    Layer.succeed(Transport.Connector, makeConnector(options))
  )
