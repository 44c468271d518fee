/**
 * Internal to `DenoTransport`: one live connection over a native `Deno.Conn`
 * (`DenoConnection`, the state behind `Transport.Connection`), and the client
 * side of TLS on it.
 *
 * Reads are pulled: `read` starts one `conn.read` when nothing is buffered,
 * so it hands over what the kernel held at that moment (one batch, up to the
 * buffer's size), and the socket is never read ahead of the driver, which is
 * what lets `Deno.startTls` take the connection over. The buffer is small
 * (256 bytes) while reads are small, since a waiting read holds its buffer and
 * an idle connection is mostly that wait, and 64 KiB while data streams in
 * (see `pull`). A read that the driver gave up on (a timeout, a wake-up)
 * keeps its data for the next `read`. `readWithin`'s deadlines live in one
 * process-wide heap behind one timer (`Deadlines.ts`): a Deno timer per
 * connection would cost as much as the connection's own state. Writes are
 * queued and flushed by one loop; `write` suspends only while more than the
 * high-water mark is queued. End of stream is `null`, never an error.
 *
 * Server-side TLS (STARTTLS and implicit TLS) is Deno's `node:tls`: a
 * `TLSSocket` with `isServer` over a small `Duplex` that reads and writes the
 * native connection. Deno has no server-side `startTls` of its own. Because
 * reads are pulled, no read of the plain connection runs behind the
 * driver's back: bytes already read before the handshake are discarded
 * (STARTTLS injection, CVE-2011-0411), and only a read the driver abandoned
 * (still in flight) is handed to TLS, where plaintext can only fail the
 * handshake, never be read as a command. (Wrapping a `node:net` socket
 * instead loses a ClientHello that arrives while that socket's own read is in
 * flight, which is why the Deno listener does not do so.)
 *
 * Client TLS (`startTls` on a dialled connection, and implicit TLS) is
 * `Deno.startTls` when the certificate is to be verified (the default), and
 * `node:tls` over the same connection when `rejectUnauthorized` is false:
 * Deno's own TLS can only refuse an unverifiable certificate, while
 * opportunistic TLS to an MX must go on and record why verification failed.
 * Deno's native TLS reports no protocol version or cipher, so `TlsInfo` says
 * `"TLS"` and `"unknown"` there.
 *
 * What this module deliberately does not do: accept, dial, PROXY headers.
 *
 * @internal
 */
import * as crypto from "node:crypto"
import { Duplex } from "node:stream"
import * as tls from "node:tls"
import * as Effect from "effect/Effect"
import * as Transport from "@mailroom/protocol/edge/Transport"
import * as Deadlines from "./Deadlines.ts"

/** Tunables after defaults. */
export interface Settings {
  readonly handshakeTimeoutMs: number
  readonly lingerMs: number
  /** Bytes queued for writing before `write` suspends. */
  readonly highWaterMark: number
}

/** What a connection reads from and writes to: a `Deno.Conn`, or TLS over one. */
export interface ByteStream {
  read(buf: Uint8Array): Promise<number | null>
  write(bytes: Uint8Array): Promise<number>
  closeWrite(): Promise<void>
  close(): void
}

/**
 * The smallest read buffer: what an idle connection's pending read holds.
 * A command, or a pipelined group of a few, fits; a read that fills it makes the
 * next one `MAX_READ_SIZE`.
 */
const MIN_READ_SIZE = 256
/** The largest read buffer, reached while reads keep filling theirs (a message streaming in). */
const MAX_READ_SIZE = 64 * 1024
/** The buffer of `node:tls` over a native connection: a whole TLS record (16 KiB and its overhead). */
const TLS_READ_SIZE = 17 * 1024
let nextConnectionId = 0

// ---------------------------------------------------------------------------
// Endpoints, errors
// ---------------------------------------------------------------------------

/** Drops the `::ffff:` of IPv4-mapped addresses, as the PROXY decoder does. */
export const plainAddress = (a: string): string => (a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a)

/** A `Deno.Addr` as a `Transport.Endpoint`. */
export const endpointOf = (a: Deno.Addr, unixPath?: string): Transport.Endpoint =>
  a.transport === "tcp" || a.transport === "udp"
    ? { _tag: "Inet", address: plainAddress(a.hostname), port: a.port }
    : { _tag: "Unix", path: unixPath ?? ("path" in a ? a.path : "") }

/** A message for any thrown value. */
export const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e))

const ioError = (cause: unknown): Transport.TransportError => {
  const reset = cause instanceof Deno.errors.ConnectionReset || cause instanceof Deno.errors.BrokenPipe ||
    /ECONNRESET|EPIPE|reset by peer|Broken pipe/i.test(messageOf(cause))
  return new Transport.TransportError({ reason: reset ? "Reset" : "Io", message: messageOf(cause), cause })
}

const closedError = (): Transport.TransportError =>
  new Transport.TransportError({ reason: "Closed", message: "connection is closed" })

const handshakeError = (message: string, cause?: unknown): Transport.TransportError =>
  new Transport.TransportError(cause === undefined ? { reason: "TlsHandshake", message } : { reason: "TlsHandshake", message, cause })

const isIp = (s: string): boolean => /^[0-9.]+$/.test(s) || s.includes(":")

// ---------------------------------------------------------------------------
// node:tls over a native connection (client side, verification off)
// ---------------------------------------------------------------------------

/**
 * A node `Duplex` over a native connection, for `node:tls` to ride on.
 * `first` is a read of the connection already in flight: its bytes come first.
 */
const duplexOver = (conn: ByteStream, first?: Promise<Uint8Array | null>): Duplex => {
  const buf = new Uint8Array(TLS_READ_SIZE)
  let pending = first
  return new Duplex({
    read() {
      if (pending !== undefined) {
        const p = pending
        pending = undefined
        p.then(
          (b) => void this.push(b),
          (e) => this.destroy(e instanceof Error ? e : new Error(String(e)))
        )
        return
      }
      conn.read(buf).then(
        (n) => void this.push(n === null ? null : buf.slice(0, n)),
        (e) => this.destroy(e instanceof Error ? e : new Error(String(e)))
      )
    },
    write(chunk: Uint8Array, _encoding, callback) {
      ;(async () => {
        for (let o = 0; o < chunk.length;) o += await conn.write(chunk.subarray(o))
      })().then(() => callback(), (e) => callback(e instanceof Error ? e : new Error(String(e))))
    },
    final(callback) {
      conn.closeWrite().then(() => callback(), () => callback())
    },
    destroy(err, callback) {
      try {
        conn.close()
      } catch {
        // already closed
      }
      callback(err)
    }
  })
}

/** A `ByteStream` over a `node:tls` socket. */
class NodeTlsStream implements ByteStream {
  readonly socket: tls.TLSSocket
  private chunks: Array<Uint8Array> = []
  private buffered = 0
  private ended = false
  private error: unknown = undefined
  private waiter: (() => void) | undefined = undefined
  private readonly highWaterMark: number
  constructor(socket: tls.TLSSocket, highWaterMark: number) {
    this.socket = socket
    this.highWaterMark = highWaterMark
    socket.on("data", (chunk: Uint8Array) => {
      this.chunks.push(chunk)
      this.buffered += chunk.length
      if (this.buffered >= this.highWaterMark) socket.pause()
      this.wake()
    })
    socket.on("end", () => {
      this.ended = true
      this.wake()
    })
    socket.on("close", () => {
      this.ended = true
      this.wake()
    })
    socket.on("error", (e) => {
      this.error ??= e
      this.wake()
    })
  }
  private wake() {
    const w = this.waiter
    this.waiter = undefined
    w?.()
  }
  async read(buf: Uint8Array): Promise<number | null> {
    while (this.chunks.length === 0) {
      if (this.error !== undefined) throw this.error
      if (this.ended) return null
      await new Promise<void>((resolve) => (this.waiter = resolve))
    }
    let n = 0
    while (n < buf.length && this.chunks.length > 0) {
      const c = this.chunks[0]!
      const take = Math.min(c.length, buf.length - n)
      buf.set(c.subarray(0, take), n)
      n += take
      if (take === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(take)
    }
    this.buffered -= n
    if (this.socket.isPaused() && this.buffered < this.highWaterMark) this.socket.resume()
    return n
  }
  write(bytes: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (err) => (err ? reject(err) : resolve(bytes.length)))
    })
  }
  closeWrite(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.writableFinished || this.socket.destroyed) return resolve()
      this.socket.once("finish", () => resolve())
      this.socket.once("close", () => resolve())
      this.socket.end()
    })
  }
  close(): void {
    this.socket.destroy()
  }
}

const cipherBits = (name: string): number | undefined => {
  const m = /AES_?(128|256)|CHACHA20/i.exec(name)
  return m === null ? undefined : m[1] !== undefined ? Number(m[1]) : 256
}

const tlsInfoOf = (s: tls.TLSSocket, client: boolean, servername: string | undefined): Transport.TlsInfo => {
  const c = s.getCipher()
  const cipher = c.standardName || c.name
  const authError = s.authorizationError as unknown
  const sni = (s as { servername?: unknown }).servername
  return {
    version: s.getProtocol() ?? "unknown",
    cipher,
    bits: cipherBits(cipher),
    servername: client ? servername : typeof sni === "string" ? sni : undefined,
    authorized: client ? s.authorized : undefined,
    authorizationError: client && !s.authorized && authError != null
      ? typeof authError === "string" ? authError : (authError as { code?: string }).code ?? messageOf(authError)
      : undefined
  }
}

// ---------------------------------------------------------------------------
// Server certificates
// ---------------------------------------------------------------------------

/** Compiled certificates of a listener. */
export interface ServerContexts {
  readonly fallback: tls.SecureContext
  readonly exact: ReadonlyMap<string, tls.SecureContext>
  /** `*.example.com` stored under `example.com`. */
  readonly wildcard: ReadonlyMap<string, tls.SecureContext>
}

/**
 * Compiles a `ServerTlsConfig` into secure contexts. Every certificate and
 * key is checked first (PEM that parses, a key that matches its
 * certificate): Deno's `tls.createSecureContext` accepts anything and would
 * fail only at the first handshake. A bad one is a `Listen` error.
 */
export const compileTls = (config: Transport.ServerTlsConfig): Effect.Effect<ServerContexts, Transport.TransportError> =>
  Effect.try({
    try: () => {
      const minVersion = config.minVersion ?? "TLSv1.2"
      const make = (c: Transport.CertificatePem) => {
        const cert = new crypto.X509Certificate(c.cert)
        if (!cert.checkPrivateKey(crypto.createPrivateKey(c.key))) {
          throw new Error(`the key does not match the certificate of ${cert.subject}`)
        }
        return tls.createSecureContext({ key: c.key, cert: c.cert, minVersion })
      }
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
    catch: (cause) => new Transport.TransportError({ reason: "Listen", message: `invalid TLS certificate: ${messageOf(cause)}`, cause })
  })

/** The certificates of one listener; `current` is swapped by `setTls`. */
export interface ServerTls {
  current: ServerContexts | undefined
  readonly sni: (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void
}

/** The swappable TLS state of one listener, with its SNI callback: exact name, `*.` one label deep, else the default. */
export const makeServerTls = (initial: ServerContexts | undefined): ServerTls => {
  const st: ServerTls = {
    current: initial,
    sni: (servername, cb) => {
      const c = st.current
      if (c === undefined) return cb(new Error("no TLS certificates"))
      const name = servername.toLowerCase()
      const dot = name.indexOf(".")
      cb(null, c.exact.get(name) ?? (dot > 0 ? c.wildcard.get(name.slice(dot + 1)) : undefined) ?? c.fallback)
    }
  }
  return st
}

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

type Batch = ReadonlyArray<Uint8Array> | null
/** Resumes the fiber waiting in a read. `read` waits for a `Batch`, `readWithin` for any `ReadResult`. */
type Resume = (effect: Effect.Effect<Transport.ReadResult, Transport.TransportError>) => void
type ResumeWrite = (effect: Effect.Effect<void, Transport.TransportError>) => void

const succeedNull: Effect.Effect<Batch> = Effect.succeed(null)
const succeedTimeout: Effect.Effect<Transport.ReadResult> = Effect.succeed("timeout")
const succeedWoken: Effect.Effect<Transport.ReadResult> = Effect.succeed("woken")

/**
 * One live native connection: the state behind `Transport.Connection`. The
 * operations are prototype methods and getters, not per-connection closures,
 * and the read buffer is small until data flows (see `pull`): an idle
 * connection costs its fields, one pending native read into
 * `MIN_READ_SIZE` bytes, and its socket.
 */
export class DenoConnection implements Transport.Connection, Deadlines.Waiter {
  readonly id: number
  readonly remote: Transport.Endpoint
  readonly local: Transport.Endpoint
  proxied: Transport.ProxiedFacts | undefined = undefined

  /** The native connection (closed with the stream). */
  readonly raw: Deno.Conn
  stream: ByteStream
  /** Server side: the listener's certificates (maybe none). Client side: undefined. */
  readonly serverTls: ServerTls | undefined
  readonly settings: Settings
  /** The buffer the next read goes into; allocated when a read starts. */
  private buf: Uint8Array | undefined = undefined
  /** How large the next read buffer is: grows while reads come back full, shrinks once they do not. */
  private readSize = MIN_READ_SIZE
  private chunks: Array<Uint8Array> = []
  private inflight: Promise<void> | undefined = undefined
  /** The read behind `inflight`: its byte count, for handing over to TLS. */
  private inflightRead: Promise<number | null> | undefined = undefined
  /** The buffer `inflightRead` reads into. */
  private inflightBuf: Uint8Array | undefined = undefined
  private eof = false
  /** `close` or `destroy` was called: reads see end of stream, writes fail. */
  private ended = false
  private closing = false
  private failure: Transport.TransportError | undefined = undefined
  private reader: Resume | undefined = undefined
  /** The pending reader came from `readWithin`: `wake` may end it. */
  private readerWakeable = false
  /** `wake` was called with no `readWithin` pending: the next one returns "woken". */
  private woken = false
  /** @internal `Deadlines.Waiter` */
  deadlineAt = 0
  /** @internal `Deadlines.Waiter` */
  deadlineSlot = -1
  private queue: Array<Uint8Array> = []
  private queued = 0
  private flushing = false
  private drainer: ResumeWrite | undefined = undefined
  private drainTimer: ReturnType<typeof setTimeout> | undefined = undefined
  private flushWaiters: Array<() => void> = []
  private tlsInfo: Transport.TlsInfo | undefined = undefined
  private upgrading = false

  constructor(raw: Deno.Conn, remote: Transport.Endpoint, local: Transport.Endpoint, serverTls: ServerTls | undefined, settings: Settings) {
    this.id = ++nextConnectionId
    this.raw = raw
    this.stream = raw
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
      if (ms !== undefined && ms <= 0) {
        // a poll: nothing is read ahead of the driver here, so it starts the read that a later poll sees
        this.pull()
        return succeedTimeout
      }
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
    if (this.ended || this.upgrading) return Effect.fail(closedError())
    if (bytes.length === 0) return Effect.void
    this.queue.push(bytes)
    this.queued += bytes.length
    if (!this.flushing) void this.flush()
    return this.queued > this.settings.highWaterMark ? this.waitDrain(timeoutMs) : Effect.void
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

  private waitRead(wakeable: boolean, ms: number | undefined): Effect.Effect<Transport.ReadResult, Transport.TransportError> {
    return Effect.callback<Transport.ReadResult, Transport.TransportError>((resume) => {
      this.reader = resume
      this.readerWakeable = wakeable
      if (ms !== undefined) Deadlines.add(this, ms)
      this.pull()
      return Effect.sync(() => {
        if (this.reader === resume) this.clearReader()
      })
    })
  }

  /** Forgets the pending reader and withdraws its deadline (its native read, if any, goes on: see the module header). */
  private clearReader(): void {
    this.reader = undefined
    this.readerWakeable = false
    Deadlines.remove(this)
  }

  /** @internal `Deadlines.Waiter`: the pending `readWithin` ran out of time. */
  deadlineReached(): void {
    const reader = this.reader
    if (reader === undefined) return
    this.clearReader()
    reader(succeedTimeout)
  }

  private take(): ReadonlyArray<Uint8Array> {
    const batch = this.chunks
    this.chunks = []
    return batch
  }

  /**
   * Starts one read of the current stream unless one is running. The buffer
   * is `MIN_READ_SIZE` (what an idle connection waits on) until a read fills
   * it; the next reads are then `MAX_READ_SIZE` (a message streaming in),
   * until one is smaller than `MIN_READ_SIZE` again. A read that filled more
   * than half of its buffer hands that buffer over as the chunk (no copy); a
   * smaller one is copied out and the buffer kept for the next read.
   */
  private pull(): void {
    if (this.inflight !== undefined || this.eof || this.ended || this.upgrading || this.failure !== undefined) return
    const stream = this.stream
    const buf = this.buf ?? new Uint8Array(this.readSize)
    this.buf = undefined
    const read = stream.read(buf)
    this.inflightRead = read
    this.inflightBuf = buf
    this.inflight = read.then(
      (n) => {
        this.inflight = undefined
        this.inflightRead = undefined
        this.inflightBuf = undefined
        // a read handed over to TLS (see `handshake`) is not ours any more
        if (stream !== this.stream || this.ended || this.upgrading) return
        if (n === null) this.eof = true
        else this.chunks.push(this.keep(buf, n))
        this.wakeReader()
      },
      (e) => {
        this.inflight = undefined
        this.inflightRead = undefined
        this.inflightBuf = undefined
        if (stream !== this.stream || this.ended || this.upgrading) return
        this.failure ??= ioError(e)
        this.wakeReader()
        this.wakeWriter()
      }
    )
  }

  /** The chunk of `n` bytes read into `buf`; sizes the next read (see `pull`). */
  private keep(buf: Uint8Array, n: number): Uint8Array {
    if (n === buf.length) this.readSize = MAX_READ_SIZE
    else if (n < MIN_READ_SIZE) this.readSize = MIN_READ_SIZE
    if (n * 2 > buf.length) return n === buf.length ? buf : buf.subarray(0, n)
    if (buf.length === this.readSize) this.buf = buf
    return buf.slice(0, n)
  }

  private wakeReader(): void {
    const reader = this.reader
    if (reader === undefined) return
    this.clearReader()
    if (this.chunks.length > 0) reader(Effect.succeed(this.take()))
    else if (this.failure !== undefined) reader(Effect.fail(this.failure))
    else reader(succeedNull)
  }

  // --- writes ----------------------------------------------------------------

  private waitDrain(timeoutMs: number | undefined): Effect.Effect<void, Transport.TransportError> {
    return Effect.callback<void, Transport.TransportError>((resume) => {
      this.drainer = resume
      if (timeoutMs !== undefined) {
        this.drainTimer = setTimeout(() => {
          this.drainTimer = undefined
          if (this.drainer !== resume) return
          this.drainer = undefined
          resume(Effect.fail(new Transport.TransportError({ reason: "Timeout", message: "write blocked by back-pressure for too long" })))
        }, Math.max(0, timeoutMs))
      }
      return Effect.sync(() => {
        if (this.drainer === resume) this.clearDrainer()
      })
    })
  }

  private clearDrainer(): void {
    this.drainer = undefined
    if (this.drainTimer !== undefined) {
      clearTimeout(this.drainTimer)
      this.drainTimer = undefined
    }
  }

  private wakeWriter(): void {
    const d = this.drainer
    if (d === undefined) return
    this.clearDrainer()
    d(Effect.fail(this.failure ?? closedError()))
  }

  private async flush(): Promise<void> {
    this.flushing = true
    const stream = this.stream
    try {
      while (this.queue.length > 0) {
        const chunk = this.queue[0]!
        const n = await stream.write(chunk)
        this.queued -= n
        if (n >= chunk.length) this.queue.shift()
        else this.queue[0] = chunk.subarray(n)
        if (this.drainer !== undefined && this.queued <= this.settings.highWaterMark) {
          const d = this.drainer
          this.clearDrainer()
          d(Effect.void)
        }
      }
    } catch (e) {
      this.queue = []
      this.queued = 0
      if (!this.ended) {
        this.failure ??= ioError(e)
        this.wakeReader()
      }
      this.wakeWriter()
    } finally {
      this.flushing = false
      const waiters = this.flushWaiters
      this.flushWaiters = []
      for (const w of waiters) w()
    }
  }

  /** Resolves once every queued byte was handed to the stream (or writing failed). */
  private flushed(): Promise<void> {
    if (!this.flushing && this.queue.length === 0) return Promise.resolve()
    return new Promise((resolve) => this.flushWaiters.push(resolve))
  }

  // --- closing ---------------------------------------------------------------

  private dropInput(): void {
    this.chunks = []
    this.wakeReader()
  }

  hardClose(): void {
    this.ended = true
    this.dropInput()
    this.wakeWriter()
    try {
      this.stream.close()
    } catch {
      // already closed
    }
    if (this.stream !== this.raw) {
      try {
        this.raw.close()
      } catch {
        // closed with the TLS stream
      }
    }
  }

  private gracefulClose(): Effect.Effect<void> {
    if (this.ended) return Effect.void
    this.ended = true
    this.closing = true
    this.dropInput()
    return Effect.callback<void>((resume) => {
      let done = false
      this.flushed().then(async () => {
        try {
          await this.stream.closeWrite()
        } catch {
          // the peer is gone already
        }
        if (done) return
        done = true
        this.linger()
        resume(Effect.void)
      })
      return Effect.sync(() => {
        if (done) return
        done = true
        this.hardClose()
      })
    })
  }

  /** After QUIT: once every queued byte is with the kernel, a plain connection closes at once (see `Transport.Connection.closeAfterQuit`). */
  private quitClose(): Effect.Effect<void> {
    if (this.ended) return Effect.void
    if (this.tlsInfo !== undefined || this.upgrading || this.stream !== this.raw) return this.gracefulClose()
    if (!this.flushing && this.queue.length === 0) {
      this.hardClose()
      return Effect.void
    }
    this.ended = true
    this.closing = true
    this.dropInput()
    return Effect.callback<void>((resume) => {
      this.flushed().then(() => {
        this.hardClose()
        resume(Effect.void)
      })
      return Effect.sync(() => this.hardClose())
    })
  }

  /** After our FIN: reads and drops input until the peer's FIN, for at most `lingerMs`, then closes. */
  private linger(): void {
    const timer = setTimeout(() => this.hardClose(), this.settings.lingerMs)
    const stream = this.stream
    const buf = new Uint8Array(MIN_READ_SIZE)
    ;(async () => {
      try {
        if (this.inflight !== undefined) await this.inflight
        while ((await stream.read(buf)) !== null) { /* discard */ }
      } catch {
        // reset or closed: nothing left to wait for
      }
      clearTimeout(timer)
      this.hardClose()
    })()
  }

  /** STARTTLS on a live connection: the server side with the listener's certificates, the client side with `options`. */
  private upgrade(options: Transport.ClientTlsOptions | undefined): Effect.Effect<Transport.TlsInfo, Transport.TransportError> {
    return Effect.suspend(() => {
      if (this.tlsInfo !== undefined || this.upgrading) return Effect.fail(handshakeError("TLS is already active"))
      if (this.failure !== undefined) return Effect.fail(this.failure)
      if (this.ended || this.eof) return Effect.fail(closedError())
      if (this.serverTls !== undefined && this.serverTls.current === undefined) {
        this.failure = handshakeError("the listener has no TLS certificates")
        this.hardClose()
        return Effect.fail(this.failure)
      }
      // CVE-2011-0411: nothing received before the handshake may be read after it
      this.chunks = []
      return this.handshake(options, this.settings.handshakeTimeoutMs)
    })
  }

  /**
   * The TLS handshake over the current (plain) stream: the server side with
   * the listener's certificates (node:tls), the client side natively when
   * verifying, with node:tls otherwise. Reattaches reads and writes to TLS.
   */
  handshake(options: Transport.ClientTlsOptions | undefined, timeoutMs: number): Effect.Effect<Transport.TlsInfo, Transport.TransportError> {
    return Effect.callback<Transport.TlsInfo, Transport.TransportError>((resume) => {
      this.upgrading = true
      let settled = false
      const fail = (error: Transport.TransportError) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.upgrading = false
        this.failure = error
        this.hardClose()
        resume(Effect.fail(error))
      }
      const succeed = (stream: ByteStream, info: Transport.TlsInfo) => {
        if (settled) {
          stream.close()
          return
        }
        settled = true
        clearTimeout(timer)
        this.upgrading = false
        this.stream = stream
        this.tlsInfo = info
        resume(Effect.succeed(info))
      }
      const timer = setTimeout(
        () => fail(new Transport.TransportError({ reason: "Timeout", message: `TLS handshake timed out after ${timeoutMs} ms` })),
        timeoutMs
      )
      /** A read abandoned by the driver is still in flight: TLS gets its bytes (see the module header). */
      const handOver = (): Promise<Uint8Array | null> | undefined => {
        const read = this.inflightRead
        const buf = this.inflightBuf
        if (read === undefined || buf === undefined) return undefined
        return read.then((n) => (n === null ? null : buf.slice(0, n)))
      }
      /** node:tls over the native connection; resolves once the handshake is done. */
      const nodeTls = (make: (socket: Duplex) => tls.TLSSocket, event: "secure" | "secureConnect", client: boolean, sent: string | undefined) =>
        new Promise<{ stream: ByteStream; info: Transport.TlsInfo }>((resolve, reject) => {
          const secure = make(duplexOver(this.raw, handOver()))
          const onError = (e: unknown) => reject(e)
          const onClose = () => reject(new Error("connection closed during the TLS handshake"))
          secure.once("error", onError)
          secure.once("close", onClose)
          secure.once(event, () => {
            secure.off("error", onError)
            secure.off("close", onClose)
            resolve({ stream: new NodeTlsStream(secure, this.settings.highWaterMark), info: tlsInfoOf(secure, client, sent) })
          })
        })
      const servername = options?.servername
      const sni = servername !== undefined && !isIp(servername) ? servername : undefined
      const verify = options?.rejectUnauthorized !== false
      const run = async (): Promise<{ stream: ByteStream; info: Transport.TlsInfo }> => {
        // the reply or command that led to TLS must be on the wire first
        await this.flushed()
        const server = this.serverTls
        if (server !== undefined) {
          const contexts = server.current
          if (contexts === undefined) throw handshakeError("the listener has no TLS certificates")
          return await nodeTls(
            (socket) =>
              new tls.TLSSocket(socket, {
                isServer: true,
                secureContext: contexts.fallback,
                SNICallback: server.sni,
                requestCert: false,
                rejectUnauthorized: false
              }),
            "secure",
            false,
            undefined
          )
        }
        if (verify && this.raw.remoteAddr.transport === "tcp") {
          if (this.inflight !== undefined) throw handshakeError("a read is still pending on the plain connection")
          const hostname = servername ?? (this.remote._tag === "Inet" ? this.remote.address : "localhost")
          const conn = await Deno.startTls(this.raw as Deno.TcpConn, {
            hostname,
            ...(options?.ca !== undefined ? { caCerts: [...options.ca] } : {})
          })
          try {
            await conn.handshake()
          } catch (e) {
            conn.close()
            throw e
          }
          return {
            stream: conn,
            info: { version: "TLS", cipher: "unknown", bits: undefined, servername: sni, authorized: true, authorizationError: undefined }
          }
        }
        const ca = options?.ca !== undefined ? [...tls.rootCertificates, ...options.ca] : undefined
        return await nodeTls(
          (socket) =>
            tls.connect({
              socket,
              ...(sni !== undefined ? { servername: sni } : {}),
              // an IP literal is not sent as SNI, but the certificate is still checked against it
              ...(servername !== undefined ? { checkServerIdentity: (_host, cert) => tls.checkServerIdentity(servername, cert) } : {}),
              rejectUnauthorized: verify,
              ...(ca !== undefined ? { ca } : {})
            }),
          "secureConnect",
          true,
          sni
        )
      }
      run().then(
        ({ stream, info }) => succeed(stream, info),
        (e) => fail(e instanceof Transport.TransportError ? e : handshakeError(`TLS handshake failed: ${messageOf(e)}`, e))
      )
      return Effect.sync(() => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.upgrading = false
        this.hardClose()
      })
    })
  }
}
