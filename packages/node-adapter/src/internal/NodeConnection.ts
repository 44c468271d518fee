/**
 * Internal to `NodeTransport`: one live connection over a `node:net` or
 * `node:tls` socket (`NodeConnection`, the state behind
 * `Transport.Connection`), and the TLS material it handshakes with.
 *
 * Reads hand over every buffered chunk at once (`null` at end of stream) and
 * pause the socket above a high-water mark; `readWithin` arms one timer while
 * it waits (a `Timeout` whose callback is a module-level function) and `wake`
 * ends it from outside. Writes are plain `socket.write` calls that suspend on
 * `'drain'` only under back-pressure, for at most their time limit. Socket
 * listeners are module-level functions that find their connection through a
 * symbol on the socket, and the operations are prototype methods and
 * getters, so an idle connection costs its fields and its socket, no
 * closures. A reset after `close` or `destroy` builds no error object (nobody
 * would read it). STARTTLS discards every byte received before it and not
 * yet read (CVE-2011-0411).
 *
 * What this module deliberately does not do: accept, dial, PROXY headers
 * (see `NodeTransport`).
 *
 * @internal
 */
import * as net from "node:net"
import * as tls from "node:tls"
import * as Effect from "effect/Effect"
import * as Transport from "@mailroom/protocol/edge/Transport"

/** Tunables after defaults. */
export interface Settings {
  readonly handshakeTimeoutMs: number
  readonly lingerMs: number
  readonly highWaterMark: number
}

/** Process-wide connection numbers. */
let nextConnectionId = 0
/** Listener that swallows events (socket `'error'`s we handle elsewhere). */
export const noop = (): void => {}

// ---------------------------------------------------------------------------
// Endpoints, errors
// ---------------------------------------------------------------------------

/** Drops the `::ffff:` of IPv4-mapped addresses, as the PROXY decoder does. */
export const plainAddress = (a: string | undefined): string =>
  a === undefined ? "" : a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a

/** The socket's peer; a Unix socket's peer is unnamed. */
export const remoteOf = (s: net.Socket, unix: string | undefined): Transport.Endpoint =>
  unix !== undefined
    ? { _tag: "Unix", path: "" }
    : { _tag: "Inet", address: plainAddress(s.remoteAddress), port: s.remotePort ?? 0 }

/** The socket's own end; for a Unix socket, the listener's path. */
export const localOf = (s: net.Socket, unix: string | undefined): Transport.Endpoint =>
  unix !== undefined
    ? { _tag: "Unix", path: unix }
    : { _tag: "Inet", address: plainAddress(s.localAddress), port: s.localPort ?? 0 }

/** The `code` of a Node system error, if any. */
export const errorCode = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined

/** A message for any thrown value. */
export const messageOf = (e: unknown): string => e instanceof Error ? e.message : String(e)

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

/** Compiled certificates of a listener. */
export interface ServerContexts {
  readonly fallback: tls.SecureContext
  readonly exact: ReadonlyMap<string, tls.SecureContext>
  /** `*.example.com` stored under `example.com`. */
  readonly wildcard: ReadonlyMap<string, tls.SecureContext>
}

/** Compiles a `ServerTlsConfig` into secure contexts; a bad PEM is a `Listen` error. */
export const compileTls = (config: Transport.ServerTlsConfig): Effect.Effect<ServerContexts, Transport.TransportError> =>
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
export interface ServerTls {
  current: ServerContexts | undefined
  readonly sni: (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void
}

/** The swappable TLS state of one listener, with its SNI callback. */
export const makeServerTls = (initial: ServerContexts | undefined): ServerTls => {
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

/** Client contexts trusting the default CAs plus `ca`, cached per `ca` array (building one costs milliseconds). */
const clientContexts = new WeakMap<ReadonlyArray<string>, tls.SecureContext>()
const clientContext = (ca: ReadonlyArray<string>): tls.SecureContext => {
  let ctx = clientContexts.get(ca)
  if (ctx === undefined) {
    ctx = tls.createSecureContext({ ca: [...defaultCas(), ...ca] })
    clientContexts.set(ca, ctx)
  }
  return ctx
}

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

const kConn = Symbol.for("@mailroom/node/NodeConnection")
type Owned = net.Socket & { [kConn]?: NodeConnection }

type Batch = ReadonlyArray<Uint8Array> | null
/** Resumes the fiber waiting in a read. `read` waits for a `Batch`, `readWithin` for any `ReadResult`. */
type Resume = (effect: Effect.Effect<Transport.ReadResult, Transport.TransportError>) => void
type ResumeWrite = (effect: Effect.Effect<void, Transport.TransportError>) => void

const succeedNull: Effect.Effect<Batch> = Effect.succeed(null)
const succeedTimeout: Effect.Effect<Transport.ReadResult> = Effect.succeed("timeout")
const succeedWoken: Effect.Effect<Transport.ReadResult> = Effect.succeed("woken")

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
/** Timer callbacks: module-level, so that arming a timer allocates no closure. */
function onReadTimeout(conn: NodeConnection): void {
  conn.readTimedOut()
}
function onWriteTimeout(conn: NodeConnection): void {
  conn.writeTimedOut()
}

/**
 * One live connection: the state behind `Transport.Connection`. The
 * operations are prototype methods and getters, not per-connection closures:
 * an idle connection costs its fields and its socket.
 */
export class NodeConnection implements Transport.Connection {
  readonly id: number
  readonly remote: Transport.Endpoint
  readonly local: Transport.Endpoint
  proxied: Transport.ProxiedFacts | undefined = undefined

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
  reader: Resume | undefined = undefined
  /** The pending reader came from `readWithin`: `wake` may end it. */
  readerWakeable = false
  /** `wake` was called with no `readWithin` pending: the next one returns "woken". */
  woken = false
  readTimer: ReturnType<typeof setTimeout> | undefined = undefined
  writer: ResumeWrite | undefined = undefined
  writeTimer: ReturnType<typeof setTimeout> | undefined = undefined
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
  }

  // --- Transport.Connection -------------------------------------------------

  get read(): Effect.Effect<Batch, Transport.TransportError> {
    return Effect.suspend(() => {
      if (this.chunks.length > 0) return Effect.succeed(this.take())
      if (this.failure !== undefined) return Effect.fail(this.failure)
      if (this.eof || this.ended) return succeedNull
      return this.waitRead(false, undefined) as Effect.Effect<Batch, Transport.TransportError>
    })
  }

  readWithin(ms: number | undefined): Effect.Effect<Transport.ReadResult, Transport.TransportError> {
    return Effect.suspend(() => {
      if (this.chunks.length > 0) return Effect.succeed(this.take())
      if (this.failure !== undefined) return Effect.fail(this.failure)
      if (this.eof || this.ended) return succeedNull
      if (this.woken) {
        this.woken = false
        return succeedWoken
      }
      if (ms !== undefined && ms <= 0) return succeedTimeout
      return this.waitRead(true, ms)
    })
  }

  wake(): void {
    const reader = this.reader
    if (reader === undefined || !this.readerWakeable) {
      this.woken = true
      return
    }
    this.clearReader()
    reader(succeedWoken)
  }

  write(bytes: Uint8Array, timeoutMs?: number): Effect.Effect<void, Transport.TransportError> {
    if (this.failure !== undefined) return Effect.fail(this.failure)
    if (this.ended || this.upgrading || this.sock.destroyed) return Effect.fail(closedError())
    return this.sock.write(bytes) ? Effect.void : this.waitDrain(timeoutMs)
  }

  tls(): Transport.TlsInfo | undefined {
    return this.tlsInfo
  }

  startTls(options?: Transport.ClientTlsOptions): Effect.Effect<Transport.TlsInfo, Transport.TransportError> {
    return this.upgrade(options)
  }

  get close(): Effect.Effect<void> {
    return Effect.suspend(() => this.gracefulClose())
  }

  get closeAfterQuit(): Effect.Effect<void> {
    return Effect.suspend(() => this.quitClose())
  }

  get destroy(): Effect.Effect<void> {
    return Effect.sync(() => this.hardClose())
  }

  /** What the listener and the connector run when the handler or scope ends. */
  get finalize(): Effect.Effect<void> {
    return Effect.sync(() => {
      if (!this.closing) this.hardClose()
    })
  }

  // --- reads -----------------------------------------------------------------

  waitRead(wakeable: boolean, ms: number | undefined): Effect.Effect<Transport.ReadResult, Transport.TransportError> {
    return Effect.callback<Transport.ReadResult, Transport.TransportError>((resume) => {
      this.reader = resume
      this.readerWakeable = wakeable
      if (ms !== undefined) this.readTimer = setTimeout(onReadTimeout, ms, this)
      return Effect.sync(() => {
        if (this.reader === resume) this.clearReader()
      })
    })
  }

  /** Forgets the pending reader and disarms its timer. */
  clearReader(): void {
    this.reader = undefined
    this.readerWakeable = false
    if (this.readTimer !== undefined) {
      clearTimeout(this.readTimer)
      this.readTimer = undefined
    }
  }

  readTimedOut(): void {
    this.readTimer = undefined
    const reader = this.reader
    if (reader === undefined) return
    this.clearReader()
    reader(succeedTimeout)
  }

  /** Attaches the socket's listeners (module-level functions) and starts the flow. */
  attach(s: net.Socket): void {
    ;(s as Owned)[kConn] = this
    s.on("data", onData)
    s.on("end", onEnd)
    s.on("error", onError)
    s.on("close", onClose)
    s.on("drain", onDrain)
    // the peer may have gone while nobody listened (between a PROXY header and here)
    if (s.destroyed || s.readableEnded) this.eof = true
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
      this.clearReader()
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
    // after `close`/`destroy` nobody reads the failure: a peer's reset then costs no error object
    if (!this.ended) this.failure ??= ioError(err)
    this.wakeReader()
    this.wakeWriter()
  }

  onClose(): void {
    this.eof = true
    this.wakeReader()
    this.wakeWriter()
  }

  wakeReader(): void {
    const reader = this.reader
    if (reader === undefined) return
    this.clearReader()
    reader(this.failure !== undefined && this.chunks.length === 0 ? Effect.fail(this.failure) : succeedNull)
  }

  // --- writes ----------------------------------------------------------------

  waitDrain(timeoutMs: number | undefined): Effect.Effect<void, Transport.TransportError> {
    return Effect.callback<void, Transport.TransportError>((resume) => {
      this.writer = resume
      if (timeoutMs !== undefined) this.writeTimer = setTimeout(onWriteTimeout, Math.max(0, timeoutMs), this)
      return Effect.sync(() => {
        if (this.writer === resume) this.clearWriter()
      })
    })
  }

  clearWriter(): void {
    this.writer = undefined
    if (this.writeTimer !== undefined) {
      clearTimeout(this.writeTimer)
      this.writeTimer = undefined
    }
  }

  writeTimedOut(): void {
    this.writeTimer = undefined
    const writer = this.writer
    if (writer === undefined) return
    this.clearWriter()
    writer(Effect.fail(new Transport.TransportError({ reason: "Timeout", message: "write blocked by back-pressure for too long" })))
  }

  onDrain(): void {
    const writer = this.writer
    if (writer !== undefined) {
      this.clearWriter()
      writer(Effect.void)
    }
  }

  wakeWriter(): void {
    const writer = this.writer
    if (writer === undefined) return
    this.clearWriter()
    writer(Effect.fail(this.failure ?? closedError()))
  }

  // --- closing ---------------------------------------------------------------

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
    // keep draining input so that unread bytes do not make the kernel send a reset,
    // and so that the peer's FIN is seen: that is what lets the socket close before the linger ends
    s.resume()
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

  quitClose(): Effect.Effect<void> {
    if (this.ended) return Effect.void
    const s = this.sock
    // TLS sends close_notify on `end`; bytes still queued in user space would be dropped by `destroy`
    if (this.tlsInfo !== undefined || this.upgrading || s.destroyed || s.writableLength > 0) return this.gracefulClose()
    this.hardClose()
    return Effect.void
  }

  linger(s: net.Socket): void {
    if (s.destroyed) return
    const timer = setTimeout(() => this.hardClose(), this.settings.lingerMs)
    timer.unref()
    s.once("close", () => clearTimeout(timer))
    // both sides have said FIN: nothing is left to wait for
    if (s.readableEnded) s.destroy()
    else s.once("end", () => s.destroy())
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
        if (raw.destroyed) throw new Error("connection closed before the TLS handshake")
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
            ...(options?.ca !== undefined ? { secureContext: clientContext(options.ca) } : {})
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
