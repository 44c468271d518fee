/**
 * The SMTP/LMTP server session as plain functions: `step(state, input, now)`
 * returns the next state and the outputs to perform. Every transition rule of
 * the server lives in this module.
 *
 * No Effect runs inside a step and nothing here touches the world: bytes
 * come in as `Received` inputs, replies go out as one `Send` per step (so a
 * pipelined batch of commands is answered in one write, in command order),
 * policy questions go out as `Ask` and come back as `Decision`, `Credentials`
 * or `Delivered`, time comes in as `now` and leaves as `deadline(state)`.
 *
 * What it deliberately does not do: I/O, policy logic, building the stored
 * `Envelope` (the driver adds id, timestamp and trace headers), rate limits
 * that span connections (the edge's job).
 *
 * @example
 * ```ts
 * let s = ServerSession.initial(ServerSession.config({ hostname: "mx.example" }), endpoints)
 * let r = ServerSession.start(s, 0)            // asks nothing by default: sends the banner
 * r = ServerSession.step(r.state, { _tag: "Received", bytes }, now)
 * ```
 *
 * @since 0.1.0
 */
import * as Base64 from "../auth/Base64.ts"
import * as Sasl from "../auth/Sasl.ts"
import type * as Transport from "../edge/Transport.ts"
import * as Decision from "../policy/Decision.ts"
import * as BdatDecoder from "../wire/BdatDecoder.ts"
import * as Bytes from "../wire/Bytes.ts"
import * as DataDecoder from "../wire/DataDecoder.ts"
import * as LineDecoder from "../wire/LineDecoder.ts"
import * as Address from "./Address.ts"
import * as Command from "./Command.ts"
import * as Extensions from "./Extensions.ts"
import type * as Params from "./Params.ts"
import * as Reply from "./Reply.ts"
import type { Awaiting, Config, Facts, Input, Output, Phase, State, Transaction } from "./ServerModel.ts"

export type { Config, Facts, Input, Message, Output, Question, State } from "./ServerModel.ts"

/** The result of a step: the next state and what to do, in order. */
export interface Step {
  readonly state: State
  readonly outputs: ReadonlyArray<Output>
}

const defaults: Omit<Config, "hostname" | "random"> = {
  bannerText: "ESMTP Mailroom",
  mode: "smtp",
  maxMessageSize: 25 * 1024 * 1024,
  maxRecipients: 100,
  maxBadCommands: 20,
  maxAuthFailures: 3,
  maxLineLength: 512,
  maxAuthLineLength: 12288,
  maxHops: 50,
  authMechanisms: [],
  allowPlaintextAuthWithoutTls: false,
  startTls: false,
  requireTls: false,
  requireAuth: false,
  pipelining: true,
  chunking: true,
  smtputf8: true,
  eightBitMime: true,
  dsn: true,
  enhancedStatusCodes: true,
  bareNewline: "normalize",
  vrfy: true,
  rejectEarlyTalkers: true,
  commandTimeoutMs: 300_000,
  dataTimeoutMs: 180_000,
  ask: { connect: false, ehlo: false, mail: false, rcpt: false, data: false }
}

/** A full configuration from the required fields and any overrides. */
export const config = (
  options: Partial<Config> & { readonly hostname: string; readonly random?: Config["random"] }
): Config => ({
  ...defaults,
  ...(options.mode === "lmtp" ? { bannerText: "LMTP Mailroom" } : {}),
  random: (n) => {
    const out = new Uint8Array(n)
    globalThis.crypto.getRandomValues(out)
    return out
  },
  ...options
})

/** The state of a new connection, before `start`. */
export const initial = (
  cfg: Config,
  endpoints: {
    readonly remote: Transport.Endpoint
    readonly local: Transport.Endpoint
    readonly proxied?: Transport.ProxiedFacts | undefined
    /** TLS already up (implicit TLS listener). */
    readonly tls?: Transport.TlsInfo | undefined
  }
): State => ({
  config: cfg,
  remote: endpoints.remote,
  local: endpoints.local,
  proxied: endpoints.proxied,
  phase: { _tag: "Greeting" },
  buffer: Bytes.empty,
  line: LineDecoder.initial,
  hello: undefined,
  tls: endpoints.tls,
  auth: undefined,
  transaction: undefined,
  badCommands: 0,
  authFailures: 0,
  earlyTalker: false,
  shuttingDown: false,
  deadline: undefined
})

/** The deadline the driver must sleep on, if any. */
export const deadline = (state: State): State["deadline"] => state.deadline

/** True once the session has asked to close. */
export const isClosed = (state: State): boolean => state.phase._tag === "Closed"

/** The facts policies see. */
export const facts = (state: State): Facts => ({
  remote: state.proxied?.source ? { _tag: "Inet", ...state.proxied.source } : state.remote,
  local: state.proxied?.destination ? { _tag: "Inet", ...state.proxied.destination } : state.local,
  proxied: state.proxied,
  hello: state.hello,
  tls: state.tls,
  auth: state.auth,
  protocol: protocolName(state),
  sender: state.transaction?.sender,
  mailParams: state.transaction?.mailParams,
  recipients: state.transaction?.recipients.map((r) => r.mailbox) ?? []
})

/**
 * RFC 3848 / RFC 6531 protocol name: SMTP for HELO, ESMTP with S for TLS and
 * A for AUTH, LMTP likewise, UTF8 prefix when the transaction uses SMTPUTF8.
 */
export const protocolName = (state: State): string => {
  const lmtp = state.config.mode === "lmtp"
  if (!lmtp && state.hello?.verb === "HELO") return "SMTP"
  const utf8 = state.transaction?.mailParams.smtputf8 === true
  const base = lmtp ? (utf8 ? "UTF8LMTP" : "LMTP") : utf8 ? "UTF8SMTP" : "ESMTP"
  return base + (state.tls ? "S" : "") + (state.auth ? "A" : "")
}

// ---------------------------------------------------------------------------
// The step machinery: a small mutable builder local to one step, so the rules
// read top to bottom; nothing escapes but the frozen result.
// ---------------------------------------------------------------------------

/**
 * The bytes of reply text, cached: most replies are the same few constant
 * strings (greeting, EHLO, 250 Ok, 354, 221), so each is encoded once. The
 * cache is bounded (cleared when full: replies that vary, such as "queued as",
 * only make it refill) and its bytes are shared, never to be mutated.
 */
const replyCache = new Map<string, Uint8Array>()
const replyCacheMax = 256
const replyBytes = (text: string): Uint8Array => {
  let bytes = replyCache.get(text)
  if (bytes === undefined) {
    bytes = Bytes.fromString(text)
    if (text.length <= 512) {
      if (replyCache.size >= replyCacheMax) replyCache.clear()
      replyCache.set(text, bytes)
    }
  }
  return bytes
}

class Builder {
  state: State
  readonly now: number
  private replies: Array<string> = []
  private outputs: Array<Output> = []
  constructor(state: State, now: number) {
    this.state = state
    this.now = now
  }
  set(patch: Partial<State>): void {
    this.state = { ...this.state, ...patch }
  }
  phase(phase: Phase): void {
    this.state = { ...this.state, phase }
  }
  reply(r: Reply.Reply): void {
    const code = this.state.config.enhancedStatusCodes ? r : { ...r, enhanced: undefined }
    this.replies.push(Reply.encodeString(code))
  }
  raw(line: string): void {
    this.replies.push(line)
  }
  private flush(): void {
    if (this.replies.length > 0) {
      this.outputs.push({ _tag: "Send", bytes: replyBytes(this.replies.length === 1 ? this.replies[0]! : this.replies.join("")) })
      this.replies = []
    }
  }
  output(o: Output): void {
    this.flush()
    this.outputs.push(o)
  }
  event(event: Extract<Output, { _tag: "Event" }>["event"]): void {
    this.outputs.push({ _tag: "Event", event })
  }
  close(reason: Extract<Output, { _tag: "Close" }>["reason"]): void {
    this.phase({ _tag: "Closed" })
    this.set({ deadline: undefined, buffer: Bytes.empty })
    this.output({ _tag: "Close", reason })
  }
  commandDeadline(): void {
    this.set({ deadline: { name: "command", at: this.now + this.state.config.commandTimeoutMs } })
  }
  dataDeadline(): void {
    this.set({ deadline: { name: "data", at: this.now + this.state.config.dataTimeoutMs } })
  }
  done(): Step {
    this.flush()
    return { state: this.state, outputs: this.outputs }
  }
}

/** Starts the session: asks the connect question, or sends the banner. */
export const start = (state: State, now: number): Step => {
  const b = new Builder(state, now)
  if (state.config.ask.connect) {
    b.phase({ _tag: "Waiting", awaiting: { _tag: "Connect" } })
    b.output({ _tag: "Ask", question: { _tag: "Connect", facts: facts(state) } })
    return b.done()
  }
  greet(b, undefined)
  return b.done()
}

/** Feeds one input. */
export const step = (state: State, input: Input, now: number): Step => {
  const b = new Builder(state, now)
  if (state.phase._tag === "Closed") return b.done()
  switch (input._tag) {
    case "Received":
      onReceived(b, input.bytes)
      break
    case "Eof":
      b.close("eof")
      break
    case "Decision":
      onDecision(b, input.decision)
      break
    case "Credentials":
      onCredentials(b, input.answer)
      break
    case "Delivered":
      onDelivered(b, input.replies)
      break
    case "TlsEstablished":
      onTlsEstablished(b, input.tls)
      break
    case "TlsFailed":
      b.close("tls-failed")
      break
    case "Timeout":
      onTimeout(b)
      break
    case "Shutdown":
      onShutdown(b)
      break
  }
  return b.done()
}

// ---------------------------------------------------------------------------
// Greeting, timeouts, shutdown
// ---------------------------------------------------------------------------

const greet = (b: Builder, decision: Decision.Decision | undefined): void => {
  const cfg = b.state.config
  if (decision && decision._tag === "Reject") {
    // RFC 5321 §3.1: a 554 greeting, then the client QUITs; we still answer only QUIT.
    b.reply(decision.reply)
    b.close("rejected")
    return
  }
  b.reply(decision?.reply ?? Reply.banner(cfg.hostname, cfg.bannerText))
  if (b.state.earlyTalker && cfg.rejectEarlyTalkers) {
    b.reply(Reply.syncError)
    b.close("early-talker")
    return
  }
  b.phase({ _tag: "Command" })
  b.commandDeadline()
}

const onTimeout = (b: Builder): void => {
  b.reply(Reply.timeout(b.state.config.hostname))
  b.close("timeout")
}

const onShutdown = (b: Builder): void => {
  const phase = b.state.phase
  // A message on the wire or in the queue's hands is finished first.
  if (phase._tag === "Data" || phase._tag === "Bdat" || (phase._tag === "Waiting" && phase.awaiting._tag === "Message")) {
    b.set({ shuttingDown: true })
    return
  }
  if (phase._tag !== "TlsHandshake") b.reply(Reply.serviceNotAvailable(b.state.config.hostname))
  b.close("shutdown")
}

/** After a message is answered during shutdown, or any 421: close. */
const closeIfShuttingDown = (b: Builder): boolean => {
  if (!b.state.shuttingDown) return false
  b.reply(Reply.serviceNotAvailable(b.state.config.hostname))
  b.close("shutdown")
  return true
}

// ---------------------------------------------------------------------------
// Bytes in: the one loop over a read batch
// ---------------------------------------------------------------------------

const onReceived = (b: Builder, bytes: Uint8Array): void => {
  const phase = b.state.phase._tag
  if (phase === "TlsHandshake") return // plaintext after STARTTLS and before the handshake: discarded
  const phaseNow = b.state.phase
  if (phase === "Greeting" || (phaseNow._tag === "Waiting" && phaseNow.awaiting._tag === "Connect")) {
    // RFC 5321 §4.3.1: the client waits for the greeting. What it sent early is dropped.
    b.set({ earlyTalker: true })
    return
  }
  const buffer = b.state.buffer.length === 0 ? bytes : Bytes.concat([b.state.buffer, bytes])
  b.set({ buffer })
  if (phase === "Data" || phase === "Bdat") b.dataDeadline()
  else if (phase === "Command" || phase === "Auth") b.commandDeadline()
  drain(b)
}

/** Consumes buffered input until the session must wait (a question, TLS, more bytes) or closes. */
const drain = (b: Builder): void => {
  let offset = 0
  for (;;) {
    const s = b.state
    const buf = s.buffer
    const phase = s.phase
    if (offset >= buf.length && phase._tag !== "Bdat") break
    if (phase._tag === "Command" || phase._tag === "Auth") {
      const limit = phase._tag === "Auth" ? s.config.maxAuthLineLength : lineLimit(s.config)
      const { result, state: line } = LineDecoder.decode(s.line, buf, offset, limit)
      b.set({ line })
      offset += result.consumed
      if (result._tag === "NeedMore") break
      if (result._tag === "TooLong") {
        badCommand(b, "(line too long)", Reply.lineTooLong)
        if (phase._tag === "Auth") b.phase({ _tag: "Command" })
      } else if (result._tag === "BareNewline") {
        badCommand(b, "(bare newline)", Reply.bareLineFeed)
        if (phase._tag === "Auth") b.phase({ _tag: "Command" })
      } else if (phase._tag === "Auth") {
        onAuthLine(b, phase, result.line)
      } else {
        onCommandLine(b, result.line)
      }
    } else if (phase._tag === "Data") {
      const r = DataDecoder.decode(phase.data, buf, offset, {
        maxSize: s.config.maxMessageSize === 0 ? Infinity : s.config.maxMessageSize,
        bareNewline: s.config.bareNewline
      })
      offset += r.consumed
      const chunks = r.chunks.length === 0 ? phase.chunks : [...phase.chunks, ...r.chunks.map(copyIfView(buf))]
      if (!r.done) {
        b.phase({ _tag: "Data", data: r.state, chunks })
        break
      }
      endOfData(b, r.state, chunks)
    } else if (phase._tag === "Bdat") {
      const r = BdatDecoder.decode(phase.remaining, buf, offset)
      offset += r.consumed
      const chunk = r.chunk.length > 0 && !phase.refused ? [...phase.chunk, r.chunk.slice()] : phase.chunk
      if (r.remaining > 0) {
        b.phase({ ...phase, remaining: r.remaining, chunk })
        break
      }
      endOfChunk(b, { ...phase, remaining: 0, chunk })
    } else {
      break // Waiting, TlsHandshake, Closed, Greeting: the rest stays buffered (or is dropped below)
    }
  }
  const s = b.state
  if (s.phase._tag === "Closed" || s.phase._tag === "TlsHandshake") {
    b.set({ buffer: Bytes.empty })
  } else if (offset > 0) {
    b.set({ buffer: offset >= s.buffer.length ? Bytes.empty : s.buffer.slice(offset) })
  }
}

const copyIfView = (buf: Uint8Array) => (chunk: Uint8Array): Uint8Array =>
  chunk.buffer === buf.buffer ? chunk.slice() : chunk

const lineLimit = (cfg: Config): number => cfg.maxLineLength + (cfg.dsn ? 500 : 0)

const badCommand = (b: Builder, command: string, reply: Reply.Reply): void => {
  const count = b.state.badCommands + 1
  b.set({ badCommands: count })
  b.event({ _tag: "CommandRejected", command, reply })
  if (count > b.state.config.maxBadCommands) {
    b.reply(Reply.tooManyErrors(b.state.config.hostname))
    b.close("errors")
    return
  }
  b.reply(reply)
}

/** Answers a refusal from a policy or a rule, closing on 421. */
const refuse = (b: Builder, command: string, reply: Reply.Reply): void => {
  b.event({ _tag: "CommandRejected", command, reply })
  b.reply(reply)
  if (reply.code === 421) b.close("rejected")
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

const onCommandLine = (b: Builder, lineBytes: Uint8Array): void => {
  const text = Bytes.decodeUtf8(lineBytes)
  if (text === undefined) {
    badCommand(b, "(invalid UTF-8)", Reply.make(500, "5.5.2", "Error: invalid UTF-8 in command"))
    return
  }
  const parsed = Command.parse(text)
  if (parsed._tag === "Error") {
    badCommand(b, verbOf(text), parsed.reply)
    return
  }
  const c = parsed.command
  switch (c._tag) {
    case "Ehlo":
    case "Helo":
    case "Lhlo":
      return onHello(b, c._tag === "Ehlo" ? "EHLO" : c._tag === "Helo" ? "HELO" : "LHLO", c.domain)
    case "Mail":
      return onMail(b, c.sender, c.params)
    case "Rcpt":
      return onRcpt(b, c.recipient, c.params)
    case "Data":
      return onData(b)
    case "Bdat":
      return onBdat(b, c.size, c.last)
    case "Rset":
      b.set({ transaction: undefined })
      b.reply(Reply.ok)
      return
    case "Noop":
      b.reply(Reply.ok)
      return
    case "Help":
      b.reply(Reply.help)
      return
    case "Vrfy":
      if (b.state.config.vrfy) b.reply(Reply.cannotVrfy)
      else badCommand(b, "VRFY", Reply.notImplemented)
      return
    case "Quit":
      b.reply(Reply.bye)
      b.close("quit")
      return
    case "StartTls":
      return onStartTls(b)
    case "Auth":
      return onAuth(b, c.mechanism, c.initial)
  }
}

const verbOf = (line: string): string => (line.split(" ", 1)[0] ?? "").slice(0, 16).toUpperCase()

const onHello = (b: Builder, verb: "EHLO" | "HELO" | "LHLO", domain: string): void => {
  const lmtp = b.state.config.mode === "lmtp"
  if (lmtp && verb !== "LHLO") return badCommand(b, verb, Reply.make(500, "5.5.1", "Error: use LHLO in LMTP"))
  if (!lmtp && verb === "LHLO") return badCommand(b, verb, Reply.unknownCommand)
  if (b.state.config.ask.ehlo) {
    wait(b, { _tag: "Ehlo", verb, domain }, { _tag: "Ehlo", facts: facts(b.state), verb, domain })
    return
  }
  acceptHello(b, verb, domain, undefined)
}

const acceptHello = (b: Builder, verb: "EHLO" | "HELO" | "LHLO", domain: string, reply: Reply.Reply | undefined): void => {
  // RFC 5321 §4.1.4: EHLO/HELO resets like RSET.
  b.set({ hello: { verb, domain }, transaction: undefined })
  if (verb === "HELO") {
    b.reply(reply ?? Reply.make(250, undefined, `${b.state.config.hostname}`))
    return
  }
  const greeting = reply?.lines[0] ?? b.state.config.hostname
  b.reply(Extensions.build(greeting, extensions(b.state)))
}

/** The EHLO keywords offered in this state. */
export const extensions = (state: State): ReadonlyArray<readonly [string, ReadonlyArray<string>]> => {
  const cfg = state.config
  const out: Array<readonly [string, ReadonlyArray<string>]> = []
  if (cfg.pipelining) out.push(["PIPELINING", []])
  out.push(["SIZE", cfg.maxMessageSize > 0 ? [String(cfg.maxMessageSize)] : []])
  if (cfg.vrfy) out.push(["VRFY", []])
  if (cfg.eightBitMime) out.push(["8BITMIME", []])
  if (cfg.enhancedStatusCodes) out.push(["ENHANCEDSTATUSCODES", []])
  if (cfg.smtputf8) out.push(["SMTPUTF8", []])
  if (cfg.chunking) {
    out.push(["CHUNKING", []])
    out.push(["BINARYMIME", []])
  }
  if (cfg.dsn) out.push(["DSN", []])
  if (cfg.startTls && !state.tls) out.push(["STARTTLS", []])
  const mechanisms = offeredMechanisms(state)
  if (mechanisms.length > 0 && !state.auth) out.push(["AUTH", mechanisms])
  if (state.tls) out.push(["REQUIRETLS", []])
  return out
}

const offeredMechanisms = (state: State): ReadonlyArray<Sasl.Mechanism> => {
  const cfg = state.config
  if (cfg.requireTls && !state.tls) return []
  return cfg.authMechanisms.filter((m) => state.tls || cfg.allowPlaintextAuthWithoutTls || !Sasl.isPlaintext(m))
}

const esmtp = (state: State): boolean => state.hello !== undefined && state.hello.verb !== "HELO"

const onMail = (b: Builder, sender: Address.Mailbox | null, params: Params.MailParams): void => {
  const s = b.state
  const cfg = s.config
  if (!s.hello) return badCommand(b, "MAIL", Reply.badSequence(`Error: send ${cfg.mode === "lmtp" ? "LHLO" : "HELO/EHLO"} first`))
  if (s.transaction) return badCommand(b, "MAIL", Reply.badSequence("Error: nested MAIL command"))
  if (cfg.requireTls && !s.tls) return refuse(b, "MAIL", Reply.mustStartTls)
  if (cfg.requireAuth && !s.auth) return refuse(b, "MAIL", Reply.authRequired)
  const paramError = checkMailParams(s, params)
  if (paramError) return badCommand(b, "MAIL", paramError)
  if (sender && !Address.isAscii(sender) && !params.smtputf8) {
    return refuse(b, "MAIL", Reply.make(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8"))
  }
  if (cfg.ask.mail) {
    wait(b, { _tag: "Mail", sender, params }, { _tag: "Mail", facts: facts(s), sender, params })
    return
  }
  acceptMail(b, sender, params, undefined)
}

const checkMailParams = (s: State, p: Params.MailParams): Reply.Reply | undefined => {
  const cfg = s.config
  const ext = esmtp(s)
  const first = p.unknown[0]
  if (first) return Reply.unsupportedParameter(first[0])
  if (!ext && (p.size !== undefined || p.body !== undefined || p.smtputf8 || p.ret || p.envid || p.auth || p.requireTls)) {
    return Reply.unsupportedParameter("(ESMTP parameters need EHLO)")
  }
  if (p.size !== undefined && cfg.maxMessageSize > 0 && p.size > cfg.maxMessageSize) return Reply.declaredSizeTooBig
  if (p.body === "8BITMIME" && !cfg.eightBitMime) return Reply.unsupportedParameter("BODY=8BITMIME")
  if (p.body === "BINARYMIME" && !cfg.chunking) return Reply.unsupportedParameter("BODY=BINARYMIME")
  if (p.smtputf8 && !cfg.smtputf8) return Reply.unsupportedParameter("SMTPUTF8")
  if ((p.ret !== undefined || p.envid !== undefined) && !cfg.dsn) return Reply.unsupportedParameter(p.ret ? "RET" : "ENVID")
  if (p.requireTls && !s.tls) return Reply.unsupportedParameter("REQUIRETLS")
  return undefined
}

const acceptMail = (b: Builder, sender: Address.Mailbox | null, mailParams: Params.MailParams, reply: Reply.Reply | undefined): void => {
  const transaction: Transaction = {
    sender,
    mailParams,
    recipients: [],
    chunks: [],
    size: 0,
    bdat: false,
    failed: undefined
  }
  b.set({ transaction })
  b.reply(reply ?? Reply.senderOk)
}

const onRcpt = (b: Builder, recipient: Address.Mailbox, params: Params.RcptParams): void => {
  const s = b.state
  const t = s.transaction
  if (!t) return badCommand(b, "RCPT", Reply.badSequence("Error: need MAIL command"))
  if (t.bdat) return badCommand(b, "RCPT", Reply.badSequence("Error: RCPT after BDAT"))
  const first = params.unknown[0]
  if (first) return badCommand(b, "RCPT", Reply.unsupportedParameter(first[0]))
  if ((params.notify !== undefined || params.orcpt !== undefined) && !s.config.dsn) {
    return badCommand(b, "RCPT", Reply.unsupportedParameter(params.notify ? "NOTIFY" : "ORCPT"))
  }
  if (!Address.isAscii(recipient) && !t.mailParams.smtputf8) {
    return refuse(b, "RCPT", Reply.make(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8"))
  }
  if (t.recipients.length >= s.config.maxRecipients) return refuse(b, "RCPT", Reply.tooManyRecipients)
  if (s.config.ask.rcpt) {
    wait(b, { _tag: "Rcpt", recipient, params }, { _tag: "Rcpt", facts: facts(s), recipient, params })
    return
  }
  acceptRcpt(b, recipient, params, undefined)
}

const acceptRcpt = (b: Builder, mailbox: Address.Mailbox, params: Params.RcptParams, reply: Reply.Reply | undefined): void => {
  const t = b.state.transaction
  if (!t) return
  b.set({ transaction: { ...t, recipients: [...t.recipients, { mailbox, params }] } })
  b.reply(reply ?? Reply.recipientOk)
}

const onData = (b: Builder): void => {
  const s = b.state
  const t = s.transaction
  if (!t) return badCommand(b, "DATA", Reply.badSequence("Error: need MAIL command"))
  if (t.bdat) return badCommand(b, "DATA", Reply.badSequence("Error: DATA after BDAT"))
  if (t.recipients.length === 0) return badCommand(b, "DATA", Reply.make(554, "5.5.1", "Error: no valid recipients"))
  if (t.mailParams.body === "BINARYMIME") {
    return badCommand(b, "DATA", Reply.badSequence("Error: BODY=BINARYMIME requires BDAT"))
  }
  if (s.config.ask.data) {
    wait(b, { _tag: "Data" }, { _tag: "Data", facts: facts(s) })
    return
  }
  startData(b, undefined)
}

const startData = (b: Builder, reply: Reply.Reply | undefined): void => {
  b.reply(reply ?? Reply.startData)
  b.phase({ _tag: "Data", data: DataDecoder.initial, chunks: [] })
  b.dataDeadline()
}

const endOfData = (b: Builder, data: DataDecoder.DataState, chunks: ReadonlyArray<Uint8Array>): void => {
  b.phase({ _tag: "Command" })
  b.commandDeadline()
  const cfg = b.state.config
  if (data.exceeded) return messageRefused(b, Reply.messageTooBig, data.size)
  if (data.bareNewline && cfg.bareNewline === "reject") {
    return messageRefused(b, Reply.make(550, "5.5.2", "Error: bare <CR> or <LF> received in message data"), data.size)
  }
  handOver(b, Bytes.concat(chunks))
}

const messageRefused = (b: Builder, reply: Reply.Reply, size: number): void => {
  b.event({ _tag: "MessageRefused", reply, size })
  const t = b.state.transaction
  const n = b.state.config.mode === "lmtp" && t ? t.recipients.length : 1
  b.set({ transaction: undefined })
  for (let i = 0; i < n; i++) b.reply(reply)
  closeIfShuttingDown(b)
}

const handOver = (b: Builder, data: Uint8Array): void => {
  const s = b.state
  const t = s.transaction
  if (!t) return
  if (s.config.maxHops > 0 && countReceived(data, s.config.maxHops + 1) > s.config.maxHops) {
    return messageRefused(b, Reply.loopDetected, data.length)
  }
  const message = { sender: t.sender, mailParams: t.mailParams, recipients: t.recipients, data }
  wait(b, { _tag: "Message", recipients: t.recipients.length }, { _tag: "Message", facts: facts(s), message })
}

/** Counts `Received:` header fields in the header block, stopping at `stopAt`. */
const countReceived = (data: Uint8Array, stopAt: number): number => {
  let count = 0
  let lineStart = 0
  for (let i = 0; i < data.length && count < stopAt; i++) {
    if (data[i] !== Bytes.LF) continue
    const len = i - lineStart
    if (len <= 1) break // the empty line ending the header block
    if (len >= 9 && isReceived(data, lineStart)) count++
    lineStart = i + 1
  }
  return count
}

const RECEIVED = "received:"
const isReceived = (data: Uint8Array, at: number): boolean => {
  for (let k = 0; k < RECEIVED.length; k++) {
    if (((data[at + k] ?? 0) | 0x20) !== RECEIVED.charCodeAt(k)) return false
  }
  return true
}

const onBdat = (b: Builder, size: number, last: boolean): void => {
  const s = b.state
  const cfg = s.config
  if (!cfg.chunking) return badCommand(b, "BDAT", Reply.unknownCommand)
  const t = s.transaction
  // The chunk's bytes follow the command whatever we answer: a refused chunk is read and dropped.
  let refused: Reply.Reply | undefined
  let failed = t?.failed
  if (!t) refused = Reply.badSequence("Error: need MAIL command")
  else if (t.recipients.length === 0) refused = Reply.make(554, "5.5.1", "Error: no valid recipients")
  else if (t.failed) refused = t.failed
  else if (cfg.maxMessageSize > 0 && t.size + size > cfg.maxMessageSize) refused = failed = Reply.messageTooBig
  if (refused && (!t || t.recipients.length === 0)) {
    b.set({ badCommands: s.badCommands + 1 })
    b.event({ _tag: "CommandRejected", command: "BDAT", reply: refused })
  }
  if (t) b.set({ transaction: { ...t, bdat: true, failed } })
  b.phase({ _tag: "Bdat", remaining: size, last: last || t === undefined, chunk: [], refused })
  b.dataDeadline()
}

const endOfChunk = (b: Builder, phase: Extract<Phase, { _tag: "Bdat" }>): void => {
  const s = b.state
  const t = s.transaction
  b.phase({ _tag: "Command" })
  b.commandDeadline()
  if (phase.refused) {
    if (s.badCommands > s.config.maxBadCommands) {
      b.reply(Reply.tooManyErrors(s.config.hostname))
      b.close("errors")
      return
    }
    b.reply(phase.refused)
    if (phase.last && t) {
      b.event({ _tag: "MessageRefused", reply: phase.refused, size: t.size })
      b.set({ transaction: undefined })
      closeIfShuttingDown(b)
    }
    return
  }
  if (!t) return
  const data = phase.chunk.length === 0 ? Bytes.empty : Bytes.concat(phase.chunk)
  const chunks = data.length > 0 ? [...t.chunks, data] : t.chunks
  const size = t.size + data.length
  if (!phase.last) {
    b.set({ transaction: { ...t, chunks, size } })
    b.reply(Reply.chunkOk(data.length))
    return
  }
  let message = Bytes.concat(chunks)
  b.set({ transaction: { ...t, chunks: [], size } })
  const trailingCr = message.length > 0 && message[message.length - 1] === Bytes.CR
  if (t.mailParams.body !== "BINARYMIME" && (trailingCr || BdatDecoder.hasBareNewline(message, false))) {
    if (s.config.bareNewline === "reject") {
      return messageRefused(b, Reply.make(550, "5.5.2", "Error: bare <CR> or <LF> received in message data"), size)
    }
    message = BdatDecoder.normalize(message, false)
    if (trailingCr) message = Bytes.concat([message, Bytes.fromString("\n")])
  }
  handOver(b, message)
}

// ---------------------------------------------------------------------------
// STARTTLS
// ---------------------------------------------------------------------------

const onStartTls = (b: Builder): void => {
  const s = b.state
  if (!s.config.startTls || s.config.mode === "lmtp" && !s.config.startTls) return badCommand(b, "STARTTLS", Reply.notImplemented)
  if (s.tls) return badCommand(b, "STARTTLS", Reply.make(554, "5.5.1", "Error: TLS already active"))
  if (!esmtp(s)) return badCommand(b, "STARTTLS", Reply.badSequence("Error: send EHLO first"))
  if (s.transaction) return badCommand(b, "STARTTLS", Reply.badSequence("Error: MAIL transaction in progress"))
  b.reply(Reply.readyToStartTls)
  b.phase({ _tag: "TlsHandshake" })
  // Everything the client pipelined after STARTTLS is dropped (CVE-2011-0411).
  b.set({ buffer: Bytes.empty, line: LineDecoder.initial, deadline: undefined })
  b.output({ _tag: "StartTls" })
}

const onTlsEstablished = (b: Builder, tls: Transport.TlsInfo): void => {
  if (b.state.phase._tag !== "TlsHandshake") return
  // RFC 3207 §4.2: forget everything learnt before the handshake.
  b.set({ tls, hello: undefined, transaction: undefined, auth: undefined, buffer: Bytes.empty, line: LineDecoder.initial })
  b.phase({ _tag: "Command" })
  b.commandDeadline()
  b.event({ _tag: "TlsStarted" })
}

// ---------------------------------------------------------------------------
// AUTH
// ---------------------------------------------------------------------------

const onAuth = (b: Builder, mechanismName: string, initial: string | undefined): void => {
  const s = b.state
  const cfg = s.config
  if (cfg.authMechanisms.length === 0) return badCommand(b, "AUTH", Reply.notImplemented)
  if (!esmtp(s)) return badCommand(b, "AUTH", Reply.badSequence("Error: send EHLO first"))
  if (s.auth) return badCommand(b, "AUTH", Reply.badSequence("Error: already authenticated"))
  if (s.transaction) return badCommand(b, "AUTH", Reply.badSequence("Error: MAIL transaction in progress"))
  if (cfg.requireTls && !s.tls) return refuse(b, "AUTH", Reply.mustStartTls)
  const mechanism = cfg.authMechanisms.find((m) => m === mechanismName)
  if (!mechanism) return badCommand(b, "AUTH", Reply.unknownAuthMechanism)
  if (!offeredMechanisms(s).includes(mechanism)) {
    return refuse(b, "AUTH", Reply.make(538, "5.7.11", "Error: encryption required for requested authentication mechanism"))
  }
  const started = Sasl.start(mechanism, initial, { random: cfg.random, hostname: cfg.hostname })
  saslStep(b, mechanism, started.state, started.step)
}

const onAuthLine = (b: Builder, phase: Extract<Phase, { _tag: "Auth" }>, line: Uint8Array): void => {
  const text = Bytes.toLatin1(line)
  const r = Sasl.respond(phase.sasl, text)
  saslStep(b, phase.mechanism, r.state, r.step)
}

const onCredentials = (b: Builder, answer: Parameters<typeof Sasl.answer>[1]): void => {
  const phase = b.state.phase
  if (phase._tag !== "Waiting" || phase.awaiting._tag !== "Auth") return
  const { mechanism, sasl } = phase.awaiting
  const r = Sasl.answer(sasl, answer)
  saslStep(b, mechanism, r.state, r.step)
  if (b.state.phase._tag === "Command") drain(b)
}

const saslStep = (b: Builder, mechanism: Sasl.Mechanism, sasl: Sasl.ServerState, st: Sasl.ServerStep): void => {
  switch (st._tag) {
    case "Challenge": {
      // RFC 4954 §4: "334 " and the base64 challenge (empty for an empty one).
      b.raw(`334 ${Base64.encode(st.data)}\r\n`)
      b.phase({ _tag: "Auth", mechanism, sasl })
      b.commandDeadline()
      return
    }
    case "Ask":
      wait(b, { _tag: "Auth", mechanism, sasl }, { _tag: "Auth", facts: facts(b.state), mechanism, request: st.request })
      return
    case "Success":
      if (st.final !== undefined && st.final.length > 0) {
        // RFC 4954 §4: additional data with success goes in a last 334; the client answers with an empty line.
        b.raw(`334 ${Base64.encode(st.final)}\r\n`)
        b.phase({ _tag: "Auth", mechanism, sasl })
        b.commandDeadline()
        return
      }
      b.phase({ _tag: "Command" })
      b.set({ auth: st.identity })
      b.event({ _tag: "AuthSucceeded", mechanism, authcid: st.identity.authcid })
      b.reply(Reply.authSuccessful)
      return
    case "Failure": {
      b.phase({ _tag: "Command" })
      b.event({ _tag: "AuthFailed", mechanism, reply: st.reply })
      const failures = b.state.authFailures + 1
      b.set({ authFailures: failures })
      if (failures >= b.state.config.maxAuthFailures && st.reply.code === 535) {
        b.reply(st.reply)
        b.reply(Reply.make(421, "4.7.0", `${b.state.config.hostname} Error: too many failed authentications`))
        b.close("auth-failures")
        return
      }
      b.reply(st.reply)
      return
    }
  }
}

// ---------------------------------------------------------------------------
// Questions and answers
// ---------------------------------------------------------------------------

const wait = (b: Builder, awaiting: Awaiting, question: Extract<Output, { _tag: "Ask" }>["question"]): void => {
  b.phase({ _tag: "Waiting", awaiting })
  // While a question is out the client's time does not run.
  b.set({ deadline: undefined })
  b.output({ _tag: "Ask", question })
}

const onDecision = (b: Builder, decision: Decision.Decision): void => {
  const phase = b.state.phase
  if (phase._tag !== "Waiting") return
  const a = phase.awaiting
  if (a._tag === "Connect") {
    greet(b, decision)
    if (b.state.phase._tag === "Command") drain(b)
    return
  }
  b.phase({ _tag: "Command" })
  b.commandDeadline()
  const verb = a._tag === "Ehlo" ? a.verb : a._tag.toUpperCase()
  if (decision._tag === "Reject") {
    refuse(b, verb, decision.reply)
  } else {
    switch (a._tag) {
      case "Ehlo":
        acceptHello(b, a.verb, a.domain, decision.reply)
        break
      case "Mail":
        acceptMail(b, a.sender, a.params, decision.reply)
        break
      case "Rcpt":
        acceptRcpt(b, a.recipient, a.params, decision.reply)
        break
      case "Data":
        startData(b, decision.reply)
        break
      case "Auth":
      case "Message":
        return // answered by Credentials / Delivered
    }
    if (decision.reply?.code === 421) b.close("rejected")
  }
  if (b.state.phase._tag !== "Closed") drain(b)
}

const onDelivered = (b: Builder, replies: ReadonlyArray<Reply.Reply>): void => {
  const phase = b.state.phase
  if (phase._tag !== "Waiting" || phase.awaiting._tag !== "Message") return
  const n = b.state.config.mode === "lmtp" ? phase.awaiting.recipients : 1
  b.phase({ _tag: "Command" })
  b.commandDeadline()
  b.set({ transaction: undefined })
  const fallback = replies[0] ?? Reply.queueError
  let closing = false
  for (let i = 0; i < n; i++) {
    const r = replies[i] ?? fallback
    b.reply(r)
    if (r.code === 421) closing = true
  }
  if (closing) {
    b.close("rejected")
    return
  }
  if (closeIfShuttingDown(b)) return
  drain(b)
}
