/**
 * A client session and a server session joined over an in-memory link with a
 * virtual clock, for scenario tests (quinn-proto's `Pair`): the client's
 * writes reach the server's `Received` inputs and the other way round, split
 * by a `Chunker`; the server's policy questions are answered by a function;
 * a STARTTLS handshake is faked once both sides asked for it; deadlines fire
 * only when the test advances the clock. Everything written each way is kept
 * in a transcript.
 *
 * Exported for users' own tests: run your policies' decisions through
 * `answer`, or your relay's client configuration through `client`.
 *
 * Deliberately not here: real sockets, real TLS (the handshake is a pair of
 * `TlsEstablished` inputs), concurrency (one input at a time, in a fixed
 * order: answers to the server, bytes to the client, bytes to the server,
 * then the handshake), and the drivers' Effects.
 *
 * @example
 * ```ts
 * const pair = SessionPair.make({
 *   server: ServerSession.config({ hostname: "mx.test" }),
 *   client: ClientSession.config({ hostname: "relay.test" }),
 *   chunking: Chunking.bytewise
 * })
 * const result = pair.send({ sender: "a@x.test", recipients: [{ address: "b@y.test" }], data })
 * pair.advance(300_000) // the server's command timeout fires
 * ```
 *
 * @since 0.1.0
 */
import * as Credentials from "../auth/Credentials.ts"
import type * as Transport from "../edge/Transport.ts"
import * as Decision from "../policy/Decision.ts"
import * as ClientSession from "../smtp/ClientSession.ts"
import * as Reply from "../smtp/Reply.ts"
import type * as ServerModel from "../smtp/ServerModel.ts"
import * as ServerSession from "../smtp/ServerSession.ts"
import * as Bytes from "../wire/Bytes.ts"
import * as Chunking from "./Chunking.ts"

export type Side = "client" | "server"

/** One write, as the writer made it. */
export interface Entry {
  readonly from: Side
  readonly bytes: Uint8Array
}

/** How the fake driver answers the server's questions; `undefined` holds the question (see `Pair.answer`). */
export type Answer = (q: ServerModel.Question) => ServerModel.Input | undefined

export interface Options {
  readonly server: ServerModel.Config
  readonly client: ClientSession.Config
  /** Default: `defaultAnswer(users)`: accept everything, deliver with `250 2.6.0 Ok: queued as Q<n>`. */
  readonly answer?: Answer | undefined
  /** How each write is split on the link (default: whole). */
  readonly chunking?: Chunking.Chunker | undefined
  /** Users (name → password) the default answer knows for AUTH. */
  readonly users?: Readonly<Record<string, string>> | undefined
  /** The faked handshake: the facts each side learns, or a failure reason for both. */
  readonly tls?: {
    readonly client?: Transport.TlsInfo | undefined
    readonly server?: Transport.TlsInfo | undefined
    readonly fail?: string | undefined
  } | undefined
}

export interface Pair {
  /** The virtual clock, ms. */
  readonly now: number
  readonly client: ClientSession.State
  readonly server: ServerModel.State
  /** Every write, both ways, in the order they were made. */
  readonly transcript: ReadonlyArray<Entry>
  readonly results: ReadonlyArray<ClientSession.Result>
  readonly failures: ReadonlyArray<ClientSession.Failure>
  /** Messages the server handed over (its `Message` questions). */
  readonly delivered: ReadonlyArray<ServerModel.Message>
  readonly questions: ReadonlyArray<ServerModel.Question>
  /** Questions `answer` held back, oldest first. */
  readonly held: ReadonlyArray<ServerModel.Question>
  readonly clientOutputs: ReadonlyArray<ClientSession.Output>
  readonly serverOutputs: ReadonlyArray<ServerModel.Output>
  readonly clientClosed: ClientSession.CloseReason | undefined
  readonly serverClosed: ServerModel.CloseReason | undefined
  /** Delivers bytes, answers and handshakes until nothing moves. */
  run(): void
  /** Gives the client a message, runs, and returns its result if it came. */
  send(message: ClientSession.Message): ClientSession.Result | undefined
  /** Asks the client to QUIT and runs. */
  quit(): void
  /** Moves the clock on, firing every deadline that falls due (in time order), running after each. */
  advance(ms: number): void
  /** Feeds any input to one side and runs. */
  input(side: "client", input: ClientSession.Input): void
  input(side: "server", input: ServerModel.Input): void
  /** Answers the oldest held question and runs. */
  answer(input: ServerModel.Input): void
  /** All bytes one side wrote, as latin1 text. */
  text(side: Side): string
  /** The transcript with consecutive writes of one side merged, as latin1 text. */
  conversation(): ReadonlyArray<{ readonly from: Side; readonly text: string }>
}

/** The TLS facts the faked handshake gives by default. */
export const tlsInfo: Transport.TlsInfo = {
  version: "TLSv1.3",
  cipher: "TLS_AES_256_GCM_SHA384",
  bits: 256,
  servername: undefined,
  authorized: true,
  authorizationError: undefined
}

const SCRAM_SALT = new Uint8Array(16).fill(0x5a)

/**
 * The default driver: accept every policy question, hand every message to a
 * pretend queue (`250 2.6.0 Ok: queued as Q1`, `Q2`, ...), check AUTH
 * against `users`.
 */
export const defaultAnswer = (users: Readonly<Record<string, string>> = {}): Answer => {
  let queued = 0
  const scram = new Map<string, Credentials.ScramCredentials>()
  const password = (name: string): string | undefined => (Object.hasOwn(users, name) ? users[name] : undefined)
  return (q) => {
    switch (q._tag) {
      case "Message":
        queued++
        return { _tag: "Delivered", replies: [Reply.queuedAs(`Q${queued}`)] }
      case "Auth": {
        const r = q.request
        const pw = password(r.authcid)
        if (r._tag === "VerifyPassword") return { _tag: "Credentials", answer: { _tag: "Verified", ok: pw !== undefined && pw === r.password } }
        if (r._tag === "LookupSecret") return { _tag: "Credentials", answer: { _tag: "Secret", password: pw } }
        if (pw === undefined) return { _tag: "Credentials", answer: { _tag: "Scram", credentials: undefined } }
        let c = scram.get(r.authcid)
        if (c === undefined) {
          c = Credentials.scramCredentials(pw, SCRAM_SALT, Credentials.minIterations)
          scram.set(r.authcid, c)
        }
        return { _tag: "Credentials", answer: { _tag: "Scram", credentials: c } }
      }
      default:
        return { _tag: "Decision", decision: Decision.accept }
    }
  }
}

const endpoints = {
  remote: { _tag: "Inet", address: "192.0.2.10", port: 40000 } as const,
  local: { _tag: "Inet", address: "192.0.2.25", port: 25 } as const
}

type LinkItem = Uint8Array | "eof"

class PairImpl implements Pair {
  now = 0
  client: ClientSession.State
  server: ServerModel.State
  transcript: Array<Entry> = []
  results: Array<ClientSession.Result> = []
  failures: Array<ClientSession.Failure> = []
  delivered: Array<ServerModel.Message> = []
  questions: Array<ServerModel.Question> = []
  held: Array<ServerModel.Question> = []
  clientOutputs: Array<ClientSession.Output> = []
  serverOutputs: Array<ServerModel.Output> = []
  clientClosed: ClientSession.CloseReason | undefined = undefined
  serverClosed: ServerModel.CloseReason | undefined = undefined
  private readonly toClient: Array<LinkItem> = []
  private readonly toServer: Array<LinkItem> = []
  private readonly serverInputs: Array<ServerModel.Input> = []
  private clientTls = false
  private serverTls = false
  private readonly chunking: Chunking.Chunker
  private readonly answerFn: Answer
  private readonly tls: NonNullable<Options["tls"]>

  constructor(options: Options) {
    this.chunking = options.chunking ?? Chunking.whole
    this.answerFn = options.answer ?? defaultAnswer(options.users)
    this.tls = options.tls ?? {}
    const implicit = options.client.implicitTls
    this.client = ClientSession.initial(options.client, { tls: implicit ? this.tls.client ?? tlsInfo : undefined })
    this.server = ServerSession.initial(options.server, { ...endpoints, tls: implicit ? this.tls.server ?? tlsInfo : undefined })
    this.applyClient(ClientSession.start(this.client, this.now))
    this.applyServer(ServerSession.start(this.server, this.now))
    this.run()
  }

  private applyClient(step: ClientSession.Step): void {
    this.client = step.state
    for (const o of step.outputs) {
      this.clientOutputs.push(o)
      switch (o._tag) {
        case "Send":
          this.transcript.push({ from: "client", bytes: o.bytes })
          for (const piece of this.chunking(o.bytes)) this.toServer.push(piece)
          break
        case "StartTls":
          this.clientTls = true
          break
        case "Result":
          this.results.push(o.result)
          break
        case "Failed":
          this.failures.push(o.failure)
          break
        case "Close":
          this.clientClosed = o.reason
          this.toServer.push("eof")
          break
        case "Ready":
        case "Event":
          break
      }
    }
  }

  private applyServer(step: { readonly state: ServerModel.State; readonly outputs: ReadonlyArray<ServerModel.Output> }): void {
    this.server = step.state
    for (const o of step.outputs) {
      this.serverOutputs.push(o)
      switch (o._tag) {
        case "Send":
          this.transcript.push({ from: "server", bytes: o.bytes })
          for (const piece of this.chunking(o.bytes)) this.toClient.push(piece)
          break
        case "StartTls":
          this.serverTls = true
          break
        case "Ask": {
          this.questions.push(o.question)
          if (o.question._tag === "Message") this.delivered.push(o.question.message)
          const a = this.answerFn(o.question)
          if (a === undefined) this.held.push(o.question)
          else this.serverInputs.push(a)
          break
        }
        case "Close":
          this.serverClosed = o.reason
          this.toClient.push("eof")
          break
        case "Event":
          break
      }
    }
  }

  private stepClient(input: ClientSession.Input): void {
    this.applyClient(ClientSession.step(this.client, input, this.now))
  }

  private stepServer(input: ServerModel.Input): void {
    this.applyServer(ServerSession.step(this.server, input, this.now))
  }

  run(): void {
    for (let guard = 0; guard < 10_000_000; guard++) {
      const answer = this.serverInputs.shift()
      if (answer !== undefined) {
        this.stepServer(answer)
        continue
      }
      const down = this.toClient.shift()
      if (down !== undefined) {
        if (this.clientClosed === undefined) this.stepClient(down === "eof" ? { _tag: "Eof" } : { _tag: "Received", bytes: down })
        continue
      }
      const up = this.toServer.shift()
      if (up !== undefined) {
        if (this.serverClosed === undefined) this.stepServer(up === "eof" ? { _tag: "Eof" } : { _tag: "Received", bytes: up })
        continue
      }
      if (this.clientTls && this.serverTls) {
        this.clientTls = false
        this.serverTls = false
        const fail = this.tls.fail
        if (fail !== undefined) {
          this.stepServer({ _tag: "TlsFailed", reason: fail })
          this.stepClient({ _tag: "TlsFailed", reason: fail })
        } else {
          this.stepServer({ _tag: "TlsEstablished", tls: this.tls.server ?? tlsInfo })
          this.stepClient({ _tag: "TlsEstablished", tls: this.tls.client ?? tlsInfo })
        }
        continue
      }
      return
    }
    throw new Error("SessionPair.run: no quiescence after 10,000,000 steps")
  }

  send(message: ClientSession.Message): ClientSession.Result | undefined {
    const before = this.results.length
    this.stepClient({ _tag: "Send", message })
    this.run()
    return this.results[before]
  }

  quit(): void {
    this.stepClient({ _tag: "Quit" })
    this.run()
  }

  advance(ms: number): void {
    const target = this.now + ms
    for (;;) {
      const s = ServerSession.deadline(this.server)
      const c = ClientSession.deadline(this.client)
      const serverDue = s !== undefined && s.at <= target && this.serverClosed === undefined
      const clientDue = c !== undefined && c.at <= target && this.clientClosed === undefined
      if (!serverDue && !clientDue) break
      // The earlier deadline first; the server first on a tie.
      if (serverDue && (!clientDue || s.at <= c.at)) {
        this.now = Math.max(this.now, s.at)
        this.stepServer({ _tag: "Timeout" })
      } else if (c !== undefined) {
        this.now = Math.max(this.now, c.at)
        this.stepClient({ _tag: "Timeout" })
      }
      this.run()
    }
    this.now = target
  }

  input(side: Side, input: ClientSession.Input | ServerModel.Input): void {
    if (side === "client") this.stepClient(input as ClientSession.Input)
    else this.stepServer(input as ServerModel.Input)
    this.run()
  }

  answer(input: ServerModel.Input): void {
    if (this.held.shift() === undefined) throw new Error("SessionPair.answer: no question is held")
    this.stepServer(input)
    this.run()
  }

  text(side: Side): string {
    return Bytes.toLatin1(Bytes.concat([Bytes.empty, ...this.transcript.filter((e) => e.from === side).map((e) => e.bytes)]))
  }

  conversation(): ReadonlyArray<{ readonly from: Side; readonly text: string }> {
    const out: Array<{ from: Side; text: string }> = []
    for (const e of this.transcript) {
      const text = Bytes.toLatin1(e.bytes)
      const last = out[out.length - 1]
      if (last !== undefined && last.from === e.from) last.text += text
      else out.push({ from: e.from, text })
    }
    return out
  }
}

/** Makes a pair, starts both sessions and runs until nothing moves (usually: the client is `Ready`). */
export const make = (options: Options): Pair => new PairImpl(options)
