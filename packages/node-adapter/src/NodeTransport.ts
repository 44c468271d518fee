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
 * What this module deliberately does not do: framing, SMTP, time limits other
 * than the PROXY header wait and TLS handshakes (those are the driver's).
 *
 * @since 0.1.0
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as tls from "node:tls"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Transport from "@mailroom/protocol/edge/Transport"
import * as ProxyProtocol from "@mailroom/protocol/wire/ProxyProtocol"

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

interface Settings {
  readonly handshakeTimeoutMs: number
  readonly lingerMs: number
  readonly highWaterMark: number
}

const settingsOf = (o: NodeTransportOptions | undefined): Settings => ({
  handshakeTimeoutMs: o?.handshakeTimeoutMs ?? 30_000,
  lingerMs: o?.lingerMs ?? 2_000,
  highWaterMark: o?.highWaterMark ?? 256 * 1024
})

let nextConnectionId = 0
const noop = (): void => {}

// ---------------------------------------------------------------------------
// Endpoints, errors
// ---------------------------------------------------------------------------

/** Drops the `::ffff:` of IPv4-mapped addresses, as the PROXY decoder does. */
const plainAddress = (a: string | undefined): string =>
  a === undefined ? "" : a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a

const remoteOf = (s: net.Socket, unix: string | undefined): Transport.Endpoint =>
  unix !== undefined
    ? { _tag: "Unix", path: "" }
    : { _tag: "Inet", address: plainAddress(s.remoteAddress), port: s.remotePort ?? 0 }

const localOf = (s: net.Socket, unix: string | undefined): Transport.Endpoint =>
  unix !== undefined
    ? { _tag: "Unix", path: unix }
    : { _tag: "Inet", address: plainAddress(s.localAddress), port: s.localPort ?? 0 }

const errorCode = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined

const messageOf = (e: unknown): string => e instanceof Error ? e.message : String(e)

const ioError = (cause: unknown): Transport.TransportError => {
  const code = errorCode(cause)
  return new Transport.TransportError({
    reason: code === "ECONNRESET" || code === "EPIPE" ? "Reset" : "Io",
    message: messageOf(cause),
    cause
  })
}

const closedError = (): Transport.TransportError =>
  new Transport.TransportError({ reason: "Closed", message: "connection is closed" })

// ---------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------

interface ServerContexts {
  readonly fallback: tls.SecureContext
  readonly exact: ReadonlyMap<string, tls.SecureContext>
  /** `*.example.com` stored under `example.com`. */
  readonly wildcard: ReadonlyMap<string, tls.SecureContext>
}

const compileTls = (config: Transport.ServerTlsConfig): Effect.Effect<ServerContexts, Transport.TransportError> =>
  Effect.try({
    try: () => {
      const minVersion = config.minVersion ?? "TLSv1.2"
      const make = (c: Transport.CertificatePem) => tls.createSecureContext({ key: c.key, cert: c.cert, minVersion })
      const exact = new Map<string, tls.SecureContext>()
      const wildcard = new Map<string, tls.SecureContext>()
      for (const entry of config.sni ?? []) {
        const ctx = make(entry.certificate)
        for (const raw of entry.names) {
          const name = raw.toLowerCase()
          if (name.startsWith("*.")) wildcard.set(name.slice(2), ctx)
          else exact.set(name, ctx)
        }
      }
      return { fallback: make(config.default), exact, wildcard }
    },
    catch: (cause) =>
      new Transport.TransportError({ reason: "Listen", message: `invalid TLS certificate: ${messageOf(cause)}`, cause })
  })

/** The context for an SNI name: exact match, then `*.` one label deep, then the default. */
const selectContext = (c: ServerContexts, servername: string): tls.SecureContext => {
  const name = servername.toLowerCase()
  const exact = c.exact.get(name)
  if (exact !== undefined) return exact
  const dot = name.indexOf(".")
  return (dot > 0 ? c.wildcard.get(name.slice(dot + 1)) : undefined) ?? c.fallback
}

/** What the server side of a listener needs for handshakes; `current` is swapped by `setTls`. */
interface ServerTls {
  current: ServerContexts | undefined
  readonly sni: (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void
}

const makeServerTls = (initial: ServerContexts | undefined): ServerTls => {
  const st: ServerTls = {
    current: initial,
    sni: (servername, cb) => {
      const c = st.current
      if (c === undefined) cb(new Error("no TLS certificates"))
      else cb(null, selectContext(c, servername))
    }
  }
  return st
}

const defaultCas = (): ReadonlyArray<string> =>
  typeof tls.getCACertificates === "function" ? tls.getCACertificates("default") : tls.rootCertificates

const cipherBits = (name: string): number | undefined => {
  const m = /AES_?(128|256)|CHACHA20/i.exec(name)
  return m === null ? undefined : m[1] !== undefined ? Number(m[1]) : 256
}

const tlsInfoOf = (s: tls.TLSSocket, client: boolean, servername: string | undefined): Transport.TlsInfo => {
  const c = s.getCipher()
  const cipher = c.standardName || c.name
  const authError = s.authorizationError as unknown
  return {
    version: s.getProtocol() ?? "unknown",
    cipher,
    bits: cipherBits(cipher),
    servername: client ? servername : typeof s.servername === "string" ? s.servername : undefined,
    authorized: client ? s.authorized : undefined,
    authorizationError: client && !s.authorized && authError != null
      ? typeof authError === "string" ? authError : errorCode(authError) ?? messageOf(authError)
      : undefined
  }
}

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

const kConn = Symbol.for("@mailroom/node/NodeTransport/connection")
type Owned = net.Socket & { [kConn]?: NodeConnection }

type Resume<A> = (effect: Effect.Effect<A, Transport.TransportError>) => void
type Batch = ReadonlyArray<Uint8Array> | null

const succeedNull: Effect.Effect<Batch> = Effect.succeed(null)

function onData(this: Owned, chunk: Buffer): void {
  this[kConn]?.pushChunk(chunk)
}
function onEnd(this: Owned): void {
  this[kConn]?.onEnd()
}
function onError(this: Owned, err: Error): void {
  this[kConn]?.onError(err)
}
function onClose(this: Owned): void {
  this[kConn]?.onClose()
}
function onDrain(this: Owned): void {
  this[kConn]?.onDrain()
}

/** One live connection: the state behind `Transport.Connection`. */
class NodeConnection implements Transport.Connection {
  readonly id: number
  readonly remote: Transport.Endpoint
  readonly local: Transport.Endpoint
  proxied: Transport.ProxiedFacts | undefined = undefined
  readonly read: Effect.Effect<Batch, Transport.TransportError>
  readonly close: Effect.Effect<void>
  readonly destroy: Effect.Effect<void>
  readonly finalize: Effect.Effect<void>
  readonly tls: () => Transport.TlsInfo | undefined
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, Transport.TransportError>
  readonly startTls: (options?: Transport.ClientTlsOptions) => Effect.Effect<Transport.TlsInfo, Transport.TransportError>

  sock: net.Socket
  /** The plain socket under a TLS one (destroyed with it). */
  raw: net.Socket | undefined = undefined
  chunks: Array<Uint8Array> = []
  buffered = 0
  paused = false
  eof = false
  /** `close` or `destroy` was called: reads see end of stream, writes fail. */
  ended = false
  /** `close` is flushing or lingering: the finalizer leaves the socket to it. */
  closing = false
  failure: Transport.TransportError | undefined = undefined
  reader: Resume<Batch> | undefined = undefined
  writer: Resume<void> | undefined = undefined
  tlsInfo: Transport.TlsInfo | undefined = undefined
  upgrading = false
  readonly settings: Settings
  /** Server side: the listener's certificates. Client side: undefined. */
  readonly serverTls: ServerTls | undefined

  constructor(
    sock: net.Socket,
    remote: Transport.Endpoint,
    local: Transport.Endpoint,
    serverTls: ServerTls | undefined,
    settings: Settings
  ) {
    this.id = ++nextConnectionId
    this.sock = sock
    this.remote = remote
    this.local = local
    this.serverTls = serverTls
    this.settings = settings
    const waitRead = Effect.callback<Batch, Transport.TransportError>((resume) => {
      this.reader = resume
      return Effect.sync(() => {
        if (this.reader === resume) this.reader = undefined
      })
    })
    this.read = Effect.suspend(() => {
      if (this.chunks.length > 0) return Effect.succeed(this.take())
      if (this.failure !== undefined) return Effect.fail(this.failure)
      if (this.eof || this.ended) return succeedNull
      return waitRead
    })
    const waitDrain = Effect.callback<void, Transport.TransportError>((resume) => {
      this.writer = resume
      return Effect.sync(() => {
        if (this.writer === resume) this.writer = undefined
      })
    })
    this.write = (bytes) => {
      if (this.failure !== undefined) return Effect.fail(this.failure)
      if (this.ended || this.upgrading || this.sock.destroyed) return Effect.fail(closedError())
      return this.sock.write(bytes) ? Effect.void : waitDrain
    }
    this.tls = () => this.tlsInfo
    this.close = Effect.suspend(() => this.gracefulClose())
    this.destroy = Effect.sync(() => this.hardClose())
    this.finalize = Effect.sync(() => {
      if (!this.closing) this.hardClose()
    })
    this.startTls = (options) => this.upgrade(options)
  }

  /** Starts delivering `'data'` from `s` to `read`. */
  attach(s: net.Socket): void {
    ;(s as Owned)[kConn] = this
    s.on("data", onData)
    s.on("end", onEnd)
    s.on("error", onError)
    s.on("close", onClose)
    s.on("drain", onDrain)
    s.resume()
  }

  detach(s: net.Socket): void {
    s.off("data", onData)
    s.off("end", onEnd)
    s.off("error", onError)
    s.off("close", onClose)
    s.off("drain", onDrain)
    ;(s as Owned)[kConn] = undefined
  }

  take(): ReadonlyArray<Uint8Array> {
    const batch = this.chunks
    this.chunks = []
    this.buffered = 0
    if (this.paused) {
      this.paused = false
      this.sock.resume()
    }
    return batch
  }

  pushChunk(chunk: Uint8Array): void {
    if (this.ended) return
    const reader = this.reader
    if (reader !== undefined) {
      this.reader = undefined
      reader(Effect.succeed([chunk]))
      return
    }
    this.chunks.push(chunk)
    this.buffered += chunk.length
    if (!this.paused && this.buffered >= this.settings.highWaterMark) {
      this.paused = true
      this.sock.pause()
    }
  }

  onEnd(): void {
    this.eof = true
    this.wakeReader()
  }

  onError(err: unknown): void {
    this.failure ??= ioError(err)
    this.wakeReader()
    this.wakeWriter()
  }

  onClose(): void {
    this.eof = true
    this.wakeReader()
    this.wakeWriter()
  }

  onDrain(): void {
    const writer = this.writer
    if (writer !== undefined) {
      this.writer = undefined
      writer(Effect.void)
    }
  }

  wakeReader(): void {
    const reader = this.reader
    if (reader === undefined) return
    this.reader = undefined
    reader(this.failure !== undefined && this.chunks.length === 0 ? Effect.fail(this.failure) : succeedNull)
  }

  wakeWriter(): void {
    const writer = this.writer
    if (writer === undefined) return
    this.writer = undefined
    writer(Effect.fail(this.failure ?? closedError()))
  }

  dropInput(): void {
    this.chunks = []
    this.buffered = 0
    this.wakeReader()
  }

  hardClose(): void {
    this.ended = true
    this.dropInput()
    this.sock.destroy()
    this.raw?.destroy()
  }

  gracefulClose(): Effect.Effect<void> {
    if (this.ended) return Effect.void
    this.ended = true
    this.closing = true
    this.dropInput()
    const s = this.sock
    if (s.destroyed) return Effect.void
    // keep draining input so that unread bytes do not make the kernel send a reset
    if (this.paused) s.resume()
    s.end()
    if (s.writableFinished) {
      this.linger(s)
      return Effect.void
    }
    return Effect.callback<void>((resume) => {
      const done = () => {
        s.off("finish", done)
        s.off("close", done)
        this.linger(s)
        resume(Effect.void)
      }
      s.on("finish", done)
      s.on("close", done)
      return Effect.sync(() => {
        s.off("finish", done)
        s.off("close", done)
        this.hardClose()
      })
    })
  }

  linger(s: net.Socket): void {
    if (s.destroyed) return
    const timer = setTimeout(() => this.hardClose(), this.settings.lingerMs)
    timer.unref()
    s.once("close", () => clearTimeout(timer))
  }

  /** STARTTLS on a live connection. */
  upgrade(options: Transport.ClientTlsOptions | undefined): Effect.Effect<Transport.TlsInfo, Transport.TransportError> {
    return Effect.suspend(() => {
      if (this.tlsInfo !== undefined || this.upgrading) {
        return Effect.fail(new Transport.TransportError({ reason: "TlsHandshake", message: "TLS is already active" }))
      }
      if (this.failure !== undefined) return Effect.fail(this.failure)
      if (this.ended || this.eof || this.sock.destroyed) return Effect.fail(closedError())
      const raw = this.sock
      this.detach(raw)
      // CVE-2011-0411: nothing received before the handshake may be read after it.
      this.chunks = []
      this.buffered = 0
      this.paused = false
      raw.pause()
      while (raw.read() !== null) { /* discard */ }
      return this.handshake(raw, options, this.settings.handshakeTimeoutMs)
    })
  }

  /**
   * Wraps `raw` in TLS (server side when the listener has certificates,
   * client side otherwise), waits for the handshake and reattaches the read
   * side to the TLS socket. Bytes still buffered in `raw` are fed to TLS.
   */
  handshake(
    raw: net.Socket,
    options: Transport.ClientTlsOptions | undefined,
    timeoutMs: number
  ): Effect.Effect<Transport.TlsInfo, Transport.TransportError> {
    return Effect.callback<Transport.TlsInfo, Transport.TransportError>((resume) => {
      const server = this.serverTls
      let secure: tls.TLSSocket
      try {
        if (server !== undefined) {
          const contexts = server.current
          if (contexts === undefined) throw new Error("the listener has no TLS certificates")
          secure = new tls.TLSSocket(raw, {
            isServer: true,
            secureContext: contexts.fallback,
            SNICallback: server.sni,
            requestCert: false,
            rejectUnauthorized: false
          })
        } else {
          const servername = options?.servername
          secure = tls.connect({
            socket: raw,
            ...(servername !== undefined && net.isIP(servername) === 0 ? { servername } : {}),
            // an IP literal is not sent as SNI, but the certificate is still checked against it
            ...(servername !== undefined
              ? { checkServerIdentity: (_host, cert) => tls.checkServerIdentity(servername, cert) }
              : {}),
            rejectUnauthorized: options?.rejectUnauthorized ?? true,
            ...(options?.ca !== undefined ? { ca: [...defaultCas(), ...options.ca] } : {})
          })
        }
      } catch (cause) {
        this.failure = new Transport.TransportError({ reason: "TlsHandshake", message: messageOf(cause), cause })
        this.hardClose()
        resume(Effect.fail(this.failure))
        return
      }
      this.upgrading = true
      this.raw = raw
      this.sock = secure
      secure.on("error", noop)
      const event = server !== undefined ? "secure" : "secureConnect"
      const cleanup = () => {
        clearTimeout(timer)
        secure.off(event, onSecure)
        secure.off("error", onFail)
        secure.off("close", onFail)
        this.upgrading = false
      }
      const fail = (reason: "TlsHandshake" | "Timeout", message: string, cause?: unknown) => {
        cleanup()
        this.failure = new Transport.TransportError({ reason, message, cause })
        this.hardClose()
        resume(Effect.fail(this.failure))
      }
      const onFail = (err?: unknown) =>
        fail("TlsHandshake", err instanceof Error ? `TLS handshake failed: ${err.message}` : "connection closed during the TLS handshake", err)
      const onSecure = () => {
        cleanup()
        const sent = options?.servername !== undefined && net.isIP(options.servername) === 0 ? options.servername : undefined
        this.tlsInfo = tlsInfoOf(secure, server === undefined, sent)
        this.attach(secure)
        resume(Effect.succeed(this.tlsInfo))
      }
      const timer = setTimeout(() => fail("Timeout", `TLS handshake timed out after ${timeoutMs} ms`), timeoutMs)
      secure.once(event, onSecure)
      secure.once("error", onFail)
      secure.once("close", onFail)
      return Effect.sync(() => {
        if (!this.upgrading) return
        cleanup()
        this.hardClose()
      })
    })
  }
}

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
        const chunk = sock.read(atLeast - buf.length) as Buffer | null
        if (chunk === null) return
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
        if (buf.length < atLeast) return // the stream ended short; 'end' follows
      }
    }
    const onGone = () => finish(Effect.fail("connection closed before a complete PROXY header"))
    const timer = setTimeout(() => finish(Effect.fail(`no complete PROXY header within ${timeoutMs} ms`)), timeoutMs)
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
    else server.listen({ host: endpoint.address, port: endpoint.port, backlog })
    return Effect.sync(() => server.close())
  })

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
            reject(conn, `PROXY header not allowed from ${r.address}`)
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
        return Effect.flatMap(eff, (ok) => ok ? guarded(conn) : Effect.void)
      }

      const runFork = yield* FiberSet.makeRuntime<never, void, never>()
      const onConnection = (sock: net.Socket) => {
        sock.on("error", noop)
        const conn = new NodeConnection(sock, remoteOf(sock, unixPath), localOf(sock, unixPath), serverTls, settings)
        const run = proxy === undefined && !implicit ? (conn.attach(sock), guarded(conn)) : prelude(conn, sock)
        runFork(Effect.ensuring(run, conn.finalize))
      }
      if (unixPath !== undefined) yield* removeStaleSocket(unixPath)
      const server = yield* Effect.acquireRelease(
        bind(opts.endpoint, opts.backlog, onConnection),
        // stop accepting; live connections are interrupted by the FiberSet afterwards
        (s) => Effect.sync(() => s.close())
      )
      const bound: Transport.BoundListener = {
        endpoint: boundEndpoint(server, opts.endpoint),
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
      conn.attach(sock)
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
          const raw = conn.sock
          conn.detach(raw)
          return Effect.as(
            conn.handshake(raw, opts.tls, opts.timeoutMs ?? settings.handshakeTimeoutMs),
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
