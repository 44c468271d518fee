/**
 * Test harness for the SMTP edge interop suites: starts `SmtpEdge.make` over
 * the real Node listener on a loopback port inside the caller's scope, with a
 * memory queue (or a queue of the test's own) and a table of users; a raw
 * socket client that reads whole SMTP replies; and helpers to run external
 * client programs (swaks, python3, openssl, smtp-source) with a time limit,
 * killing only the child they started, by PID.
 *
 * Nothing here is a mock of the code under test: the edge, the session and
 * the Node transport are the production modules.
 */
import { spawn } from "node:child_process"
import * as net from "node:net"
import * as tls from "node:tls"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import type * as Scope from "effect/Scope"
import * as CredentialsService from "@mailroom/protocol/auth/CredentialsService"
import * as SmtpEdge from "@mailroom/protocol/edge/SmtpEdge"
import * as Transport from "@mailroom/protocol/edge/Transport"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as Queue from "@mailroom/protocol/queue/Queue"
import type * as ServerSession from "@mailroom/protocol/smtp/ServerSession"
import * as NodeTransport from "@mailroom/node/NodeTransport"

export const HOST = "mx.test.example"

/** What a test may set; everything else gets test-friendly defaults. */
export interface EdgeSetup {
  readonly address?: string
  readonly session?: Partial<ServerSession.Config>
  readonly listen?: Partial<Omit<Transport.ListenOptions, "endpoint">>
  readonly edge?: Partial<Omit<SmtpEdge.Options, "listen" | "session">>
  /** user name → stored password (`{PLAIN}secret`, `pbkdf2-sha256$...`). */
  readonly users?: Readonly<Record<string, string>>
  /** How the memory queue answers. */
  readonly answer?: (envelope: Envelope.Envelope) => Queue.EnqueueResult
  /** A queue of the test's own instead of the memory queue. */
  readonly queue?: Layer.Layer<Queue.Queue>
  readonly transport?: NodeTransport.NodeTransportOptions
}

export interface RunningEdge {
  readonly edge: SmtpEdge.SmtpEdge
  readonly host: string
  readonly port: number
  /** What the memory queue accepted so far. */
  readonly received: () => Promise<ReadonlyArray<Envelope.Envelope>>
}

/** Logs of the edge are hidden unless `EDGE_LOG=1`. */
const quiet = <A, E, R>(e: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  process.env["EDGE_LOG"] === "1" ? e : Effect.provideService(e, References.MinimumLogLevel, "Error")

/** Starts an edge on `127.0.0.1:0` (or `setup.address`) in the current scope. */
export const startEdge = (
  setup: EdgeSetup = {}
): Effect.Effect<RunningEdge, Transport.TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const memory = yield* Queue.memory(setup.answer)
    const layer = Layer.mergeAll(
      setup.transport ? Layer.succeed(Transport.Listener, NodeTransport.makeListener(setup.transport)) : NodeTransport.listenerLayer,
      setup.queue ?? memory.layer,
      CredentialsService.layerTable(new Map(Object.entries(setup.users ?? {})))
    )
    const address = setup.address ?? "127.0.0.1"
    const edge = yield* quiet(
      SmtpEdge.make({
        listen: { endpoint: { _tag: "Inet", address, port: 0 }, ...setup.listen },
        session: {
          hostname: HOST,
          commandTimeoutMs: 10_000,
          dataTimeoutMs: 10_000,
          ...setup.session
        },
        shutdownGraceMs: 5_000,
        ...setup.edge
      }).pipe(Effect.provide(layer))
    )
    const port = edge.endpoint._tag === "Inet" ? edge.endpoint.port : 0
    return {
      edge,
      host: address,
      port,
      received: () => Effect.runPromise(memory.queue.received)
    }
  })

// ---------------------------------------------------------------------------
// A raw client that reads whole replies
// ---------------------------------------------------------------------------

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** A socket client (plain, then maybe TLS) that splits what it reads into whole SMTP replies. */
export class RawClient {
  sock: net.Socket
  /** Everything received, latin1. */
  all = ""
  private pending = ""
  private readonly queue: Array<string> = []
  private waiters: Array<() => void> = []
  closed = false
  error: Error | undefined

  private constructor(sock: net.Socket) {
    this.sock = sock
    this.wire(sock)
  }

  private wire(sock: net.Socket): void {
    sock.on("data", (d: Buffer) => this.onData(d))
    sock.on("error", (e) => {
      this.error = e
      this.wake()
    })
    sock.on("close", () => {
      this.closed = true
      this.wake()
    })
  }

  private onData(d: Buffer): void {
    const text = d.toString("latin1")
    this.all += text
    this.pending += text
    for (;;) {
      const m = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/.exec(this.pending)
      if (!m) break
      this.queue.push(m[0])
      this.pending = this.pending.slice(m[0].length)
    }
    this.wake()
  }

  private wake(): void {
    const ws = this.waiters
    this.waiters = []
    for (const w of ws) w()
  }

  private until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (cond()) {
          clearTimeout(timer)
          resolve()
          return true
        }
        return false
      }
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== loop)
        reject(new Error(`timeout waiting for ${what}; received so far: ${JSON.stringify(this.all)}`))
      }, timeoutMs)
      const loop = () => {
        if (!check()) this.waiters.push(loop)
      }
      loop()
    })
  }

  static connect(
    port: number,
    host = "127.0.0.1",
    options: { readonly localAddress?: string; readonly tls?: tls.ConnectionOptions } = {}
  ): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const sock = options.tls
        ? tls.connect({ host, port, ...options.tls })
        : net.connect({ host, port, ...(options.localAddress ? { localAddress: options.localAddress } : {}) })
      const ev = options.tls ? "secureConnect" : "connect"
      const client = new RawClient(sock)
      sock.once(ev, () => resolve(client))
      sock.once("error", reject)
    })
  }

  /** The local port of the client socket (the one a PROXY header reports). */
  get localPort(): number {
    return this.sock.localPort ?? 0
  }

  send(data: string | Uint8Array): void {
    this.sock.write(typeof data === "string" ? Buffer.from(data, "latin1") : data)
  }

  /** The next whole reply (all its lines, with CRLF). */
  async reply(timeoutMs = 5_000): Promise<string> {
    await this.until(() => this.queue.length > 0 || this.closed || this.error !== undefined, timeoutMs, "a reply")
    const r = this.queue.shift()
    if (r === undefined) throw new Error(`connection closed with no reply; received: ${JSON.stringify(this.all)}`)
    return r
  }

  /** The next `n` replies, joined. */
  async replies(n: number, timeoutMs = 5_000): Promise<string> {
    let out = ""
    for (let i = 0; i < n; i++) out += await this.reply(timeoutMs)
    return out
  }

  /** Sends a line (CRLF added) and returns the reply. */
  async command(line: string, timeoutMs = 5_000): Promise<string> {
    this.send(`${line}\r\n`)
    return this.reply(timeoutMs)
  }

  /** Waits until the server closed the connection; resolves with what was left unread. */
  async waitClosed(timeoutMs = 5_000): Promise<string> {
    await this.until(() => this.closed, timeoutMs, "the connection to close")
    const rest = this.queue.join("") + this.pending
    this.queue.length = 0
    this.pending = ""
    return rest
  }

  /** Upgrades to TLS on the same socket (after a 220 to STARTTLS). */
  startTls(options: tls.ConnectionOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      const plain = this.sock
      plain.removeAllListeners("data")
      plain.removeAllListeners("close")
      plain.removeAllListeners("error")
      plain.on("error", () => {})
      const secure = tls.connect({ socket: plain, ...options })
      this.sock = secure
      this.wire(secure)
      secure.once("secureConnect", () => resolve())
      secure.once("error", reject)
    })
  }

  destroy(): void {
    this.sock.destroy()
  }
}

/** Connects, reads the banner and checks it. */
export const connectGreeted = async (port: number, host = "127.0.0.1"): Promise<RawClient> => {
  const c = await RawClient.connect(port, host)
  const banner = await c.reply()
  if (banner !== `220 ${HOST} ESMTP Mailroom\r\n`) throw new Error(`unexpected banner ${JSON.stringify(banner)}`)
  return c
}

/** A well-behaved client sending one message through a raw socket; returns the transcript of replies. */
export const sendOne = async (
  port: number,
  from: string,
  to: string,
  body: string,
  host = "127.0.0.1"
): Promise<string> => {
  const c = await connectGreeted(port, host)
  let out = await c.command("EHLO good.client.example")
  out += await c.command(`MAIL FROM:<${from}>`)
  out += await c.command(`RCPT TO:<${to}>`)
  out += await c.command("DATA")
  out += await c.command(`${body}\r\n.`)
  out += await c.command("QUIT")
  await c.waitClosed()
  return out
}

/** The EHLO reply of the test hostname with the given extension lines. */
export const ehloReply = (keywords: ReadonlyArray<string>): string =>
  [HOST, ...keywords].map((l, i, all) => `250${i === all.length - 1 ? " " : "-"}${l}\r\n`).join("")

/** Default extension list (no TLS, no AUTH). */
export const baseKeywords = [
  "PIPELINING",
  "SIZE 26214400",
  "VRFY",
  "8BITMIME",
  "ENHANCEDSTATUSCODES",
  "SMTPUTF8",
  "CHUNKING",
  "BINARYMIME",
  "DSN"
]

// ---------------------------------------------------------------------------
// External programs
// ---------------------------------------------------------------------------

export interface ProgramResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs a program with a time limit; on timeout sends SIGKILL to that child's
 * PID only. `input` goes to stdin (then stdin is closed, unless `keepStdinMs`
 * delays the close).
 */
export const runProgram = (
  file: string,
  args: ReadonlyArray<string>,
  options: { readonly input?: string | Buffer; readonly timeoutMs?: number; readonly stdinChunks?: ReadonlyArray<readonly [number, string]> } = {}
): Promise<ProgramResult> =>
  new Promise((resolve, reject) => {
    const child = spawn(file, [...args], { stdio: ["pipe", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString("latin1")))
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString("latin1")))
    child.stdin.on("error", () => {})
    const timer = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGKILL")
    }, options.timeoutMs ?? 20_000)
    child.once("error", (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.once("close", (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
    if (options.stdinChunks) {
      const chunks = options.stdinChunks
      const next = (i: number) => {
        if (i >= chunks.length) {
          child.stdin.end()
          return
        }
        const [delay, text] = chunks[i]!
        setTimeout(() => {
          child.stdin.write(text)
          next(i + 1)
        }, delay)
      }
      next(0)
    } else {
      if (options.input !== undefined) child.stdin.write(options.input)
      child.stdin.end()
    }
  })

/** Text of a message's bytes. */
export const text = (m: Uint8Array): string => Buffer.from(m).toString("latin1")
