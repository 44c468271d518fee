/**
 * The SMTP/LMTP client session as plain functions: `step(state, input, now)`
 * returns the next state and the outputs to perform. Every transition rule of
 * the sending side lives in this module; every relay (MX, smarthost, LMTP)
 * runs it over a connector.
 *
 * - Handshake: banner → EHLO (HELO after a 500/502; LHLO in LMTP, no
 *   fallback) → STARTTLS when offered and wanted, EHLO again → AUTH when
 *   configured → `Ready`.
 * - Transactions: `Send` inputs are started when `Ready` and queued
 *   otherwise; each gets exactly one `Result`, in order. With PIPELINING,
 *   MAIL, every RCPT and DATA go in one write (RFC 2920) and the replies are
 *   read in order; without it, one command per reply. With CHUNKING the body
 *   goes as one `BDAT n LAST` once a recipient was accepted (not pipelined
 *   with the envelope, so no body is shipped to a server that refused
 *   everyone). LMTP reads one final reply per accepted recipient.
 * - After a failed transaction the session sends RSET before it is `Ready`
 *   again, so the connection can carry the next message.
 * - Replies are decoded with `ReplyDecoder` over the accumulated buffer, so
 *   how the bytes are split never matters; a malformed reply, EOF, timeout or
 *   421 ends the session and every undecided recipient is transient.
 * - Plaintext that arrives after the 220 to STARTTLS is discarded (STARTTLS
 *   response injection); nothing with CR, LF or NUL is ever put on the wire
 *   (the transaction is refused locally instead, nodemailer's
 *   GHSA-c7w3-x93f-qmm8 / GHSA-vvjj-xcjg-gr5g); the body is dot-stuffed with
 *   every bare CR or LF written as CRLF (`DataEncoder`).
 *
 * Deliberately not here: I/O, DNS/MX choice, pooling, downgrading 8-bit or
 * UTF-8 messages (a message that needs an extension the server lacks is
 * refused permanently without being sent: the relay decides), certificate
 * policy, retry scheduling.
 *
 * @example
 * ```ts
 * let s = ClientSession.initial(ClientSession.config({ hostname: "relay.example" }))
 * let r = ClientSession.start(s, now)       // waits for the banner
 * r = ClientSession.step(r.state, { _tag: "Received", bytes }, now)
 * r = ClientSession.step(r.state, { _tag: "Send", message }, now)
 * ```
 *
 * @since 0.1.0
 */
import * as SaslClient from "../auth/Client.ts"
import * as Sasl from "../auth/Sasl.ts"
import type * as Transport from "../edge/Transport.ts"
import * as BodyShape from "../wire/BodyShape.ts"
import * as Bytes from "../wire/Bytes.ts"
import * as DataEncoder from "../wire/DataEncoder.ts"
import * as ReplyDecoder from "../wire/ReplyDecoder.ts"
import * as Address from "./Address.ts"
import type {
  CloseReason,
  Config,
  Event,
  Expect,
  FailureReason,
  Input,
  Message,
  Output,
  Phase,
  RecipientStatus,
  Result,
  State,
  Transaction
} from "./ClientModel.ts"
import * as Command from "./Command.ts"
import * as Extensions from "./Extensions.ts"
import * as Params from "./Params.ts"
import * as Reply from "./Reply.ts"

export type {
  AuthConfig,
  CloseReason,
  Config,
  Event,
  Failure,
  FailureReason,
  Input,
  Message,
  Outcome,
  Output,
  Recipient,
  RecipientResult,
  Result,
  State
} from "./ClientModel.ts"

/** The result of a step: the next state and what to do, in order. */
export interface Step {
  readonly state: State
  readonly outputs: ReadonlyArray<Output>
}

const defaults: Omit<Config, "hostname" | "random"> = {
  mode: "smtp",
  tls: "opportunistic",
  implicitTls: false,
  auth: undefined,
  authRequireTls: true,
  commandTimeoutMs: 300_000,
  dataInitTimeoutMs: 120_000,
  dataTimeoutMs: 600_000,
  quitTimeoutMs: 30_000,
  preferChunking: false
}

/** A full configuration from the required fields and any overrides (RFC 5321 §4.5.3.2 timeouts by default). */
export const config = (
  options: Partial<Config> & { readonly hostname: string; readonly random?: Config["random"] }
): Config => ({
  ...defaults,
  random: (n) => {
    const out = new Uint8Array(n)
    globalThis.crypto.getRandomValues(out)
    return out
  },
  ...options
})

/** TLS facts used when `implicitTls` is set and the driver gave none. */
const unknownTls: Transport.TlsInfo = {
  version: "unknown",
  cipher: "unknown",
  bits: undefined,
  servername: undefined,
  authorized: undefined,
  authorizationError: undefined
}

/** The state of a new connection, before `start`. Pass `tls` for an implicit-TLS connection. */
export const initial = (cfg: Config, options?: { readonly tls?: Transport.TlsInfo | undefined }): State => ({
  config: cfg,
  phase: { _tag: "Initial" },
  buffer: Bytes.empty,
  tls: options?.tls ?? (cfg.implicitTls ? unknownTls : undefined),
  hello: undefined,
  extensions: Extensions.empty,
  auth: undefined,
  queue: [],
  quitRequested: false,
  failure: undefined,
  deadline: undefined
})

/** The deadline the driver must sleep on, if any. */
export const deadline = (state: State): State["deadline"] => state.deadline

/** True once the session has asked to close. */
export const isClosed = (state: State): boolean => state.phase._tag === "Closed"

/** True when idle: a `Send` starts at once (and a pooled connection may be reused). */
export const isReady = (state: State): boolean => state.phase._tag === "Ready"

/** What the server advertised in its last EHLO/LHLO reply. */
export const extensions = (state: State): Extensions.Extensions => state.extensions

// ---------------------------------------------------------------------------
// The step machinery: a small mutable builder local to one step. All bytes of
// a step leave in one `Send`, first; `StartTls` and `Close` end a step.
// ---------------------------------------------------------------------------

class Builder {
  private current: State
  /** `current` is this step's own copy (made on the first change), so changes mutate it in place. */
  private owned = false
  readonly now: number
  private bytes: Array<Uint8Array> = []
  /** Command text not yet encoded: the commands of a step are encoded together. */
  private text = ""
  private outputs: Array<Output> = []
  /** A reply was consumed, bytes were written or the phase changed: the deadline restarts. */
  private progress = false
  constructor(state: State, now: number) {
    this.current = state
    this.now = now
  }
  get state(): State {
    return this.current
  }
  private own(): { -readonly [K in keyof State]: State[K] } {
    if (!this.owned) {
      this.current = { ...this.current }
      this.owned = true
    }
    return this.current as { -readonly [K in keyof State]: State[K] }
  }
  set(patch: Partial<State>): void {
    Object.assign(this.own(), patch)
  }
  phase(phase: Phase): void {
    this.own().phase = phase
    this.progress = true
  }
  consumed(): void {
    this.progress = true
  }
  write(text: string): void {
    this.text += text
    this.progress = true
  }
  writeBytes(bytes: Uint8Array): void {
    this.flushText()
    this.bytes.push(bytes)
    this.progress = true
  }
  emit(o: Output): void {
    this.outputs.push(o)
  }
  event(event: Event): void {
    this.outputs.push({ _tag: "Event", event })
  }
  private flushText(): void {
    if (this.text === "") return
    this.bytes.push(Bytes.fromString(this.text))
    this.text = ""
  }
  done(): Step {
    if (this.progress) this.own().deadline = deadlineFor(this.current, this.now)
    this.flushText()
    const outputs: ReadonlyArray<Output> = this.bytes.length === 0
      ? this.outputs
      : [{ _tag: "Send", bytes: Bytes.concat(this.bytes) }, ...this.outputs]
    return { state: this.current, outputs }
  }
}

/** The deadline of what the session now waits for. */
const deadlineFor = (s: State, now: number): State["deadline"] => {
  const cfg = s.config
  switch (s.phase._tag) {
    case "Banner":
    case "Hello":
    case "StartTls":
    case "TlsHandshake":
    case "Auth":
    case "Reset":
    case "Stale":
      return { name: "command", at: now + cfg.commandTimeoutMs }
    case "Transaction": {
      const head = s.phase.transaction.expect[0]
      if (head?._tag === "Data") return { name: "data-init", at: now + cfg.dataInitTimeoutMs }
      if (head?._tag === "Final") return { name: "data", at: now + cfg.dataTimeoutMs }
      return { name: "command", at: now + cfg.commandTimeoutMs }
    }
    case "Quitting":
      return { name: "quit", at: now + cfg.quitTimeoutMs }
    case "Initial":
    case "Ready":
    case "Closed":
      return undefined
  }
}

// ---------------------------------------------------------------------------
// Local replies
// ---------------------------------------------------------------------------

const connectionLost = Reply.make(451, "4.3.0", "Connection lost")
const timedOut = Reply.make(421, "4.4.2", "Connection timed out")
const quitting = Reply.make(451, "4.3.0", "Client session is closing")

/** The server's name from its greeting, for local replies. */
const peer = (s: State): string => {
  const first = s.hello?.greeting.split(" ", 1)[0]
  return first !== undefined && first.length > 0 ? first : "the server"
}

const is2xx = (r: Reply.Reply): boolean => r.code >= 200 && r.code < 300

/** A reply that refuses something: 5xx permanent, anything else transient. */
const refusal = (reply: Reply.Reply): RecipientStatus => ({
  _tag: "Done",
  outcome: reply.code >= 500 ? "permanent" : "transient",
  reply
})

/** A final reply: 2xx delivered, 5xx permanent, anything else transient. */
const final = (reply: Reply.Reply): RecipientStatus =>
  is2xx(reply) ? { _tag: "Done", outcome: "delivered", reply } : refusal(reply)

// ---------------------------------------------------------------------------
// start / step
// ---------------------------------------------------------------------------

const CONTROL = /[\u0000-\u001f\u007f]/

/** A reason the configuration cannot be used, or undefined. */
const checkConfig = (cfg: Config): Reply.Reply | undefined => {
  const name = Address.parseDomain(cfg.hostname, { utf8: false, allowLiteral: true, allowUnderscore: true })
  if (name._tag === "Error") return Reply.make(421, "4.3.5", `Invalid EHLO name in configuration: ${name.message}`)
  const auth = cfg.auth
  if (auth) {
    if (auth.authcid.length === 0 || auth.password.length === 0) {
      return Reply.make(421, "4.3.5", "Invalid AUTH configuration: empty user name or password")
    }
    if (CONTROL.test(auth.authcid) || CONTROL.test(auth.password) || (auth.authzid !== undefined && CONTROL.test(auth.authzid))) {
      return Reply.make(421, "4.3.5", "Invalid AUTH configuration: control character in user name or password")
    }
  }
  return undefined
}

/** Starts the session: checks the configuration and waits for the banner. */
export const start = (state: State, now: number): Step => {
  const b = new Builder(state, now)
  if (state.phase._tag !== "Initial") return b.done()
  const bad = checkConfig(state.config)
  if (bad) {
    fail(b, "local", bad, false)
    return b.done()
  }
  b.phase({ _tag: "Banner" })
  return b.done()
}

/** Feeds one input. */
export const step = (state: State, input: Input, now: number): Step => {
  const b = new Builder(state, now)
  const tag = state.phase._tag
  if (input._tag === "Send") {
    onSend(b, input.message)
    return b.done()
  }
  if (input._tag === "Quit") {
    onQuit(b)
    return b.done()
  }
  if (tag === "Closed" || tag === "Initial") return b.done()
  switch (input._tag) {
    case "Received":
      onReceived(b, input.bytes)
      break
    case "Eof":
      if (state.phase._tag === "Quitting") close(b, state.phase.reason)
      else fail(b, "connection-lost", connectionLost, false)
      break
    case "TlsEstablished":
      onTlsEstablished(b, input.tls)
      break
    case "TlsFailed":
      if (tag === "TlsHandshake") fail(b, "tls-failed", Reply.make(421, "4.7.0", `TLS handshake failed: ${input.reason}`), false)
      break
    case "Timeout":
      if (state.deadline === undefined) break
      if (state.phase._tag === "Quitting") close(b, state.phase.reason)
      else fail(b, "timeout", timedOut, false)
      break
  }
  return b.done()
}

// ---------------------------------------------------------------------------
// Ending: failure, QUIT, close
// ---------------------------------------------------------------------------

/**
 * The session cannot go on: the open transaction and every queued message get
 * their `Result` (undecided recipients transient with `reply`), then `Failed`,
 * then QUIT when `quit` (the connection is sane: never after the server's
 * 421, a timeout, EOF or a malformed reply) or else `Close`.
 */
const fail = (b: Builder, reason: FailureReason, reply: Reply.Reply, quit: boolean): void => {
  const s = b.state
  if (s.phase._tag === "Transaction") b.emit({ _tag: "Result", result: resultOf(s, s.phase.transaction, reply) })
  for (const m of s.queue) b.emit({ _tag: "Result", result: unsent(s, m, reply) })
  const failure = { reason, reply }
  b.set({ queue: [], failure })
  b.emit({ _tag: "Failed", failure })
  if (quit) sendQuit(b, reason)
  else close(b, reason)
}

const sendQuit = (b: Builder, reason: CloseReason): void => {
  b.write("QUIT\r\n")
  b.phase({ _tag: "Quitting", reason })
}

const close = (b: Builder, reason: CloseReason): void => {
  b.phase({ _tag: "Closed", reason })
  b.set({ buffer: Bytes.empty })
  b.emit({ _tag: "Close", reason })
}

const onQuit = (b: Builder): void => {
  const s = b.state
  const tag = s.phase._tag
  if (tag === "Closed" || tag === "Quitting" || s.quitRequested) return
  b.set({ quitRequested: true })
  if (tag === "Initial") close(b, "quit")
  else if (tag === "Ready") sendQuit(b, "quit")
  // otherwise: QUIT once the handshake and the queue are done (see `next`)
}

// ---------------------------------------------------------------------------
// Bytes in: every complete reply of the buffer, in order
// ---------------------------------------------------------------------------

const onReceived = (b: Builder, bytes: Uint8Array): void => {
  // Plaintext after the 220 to STARTTLS and before the handshake is discarded.
  if (b.state.phase._tag === "TlsHandshake") return
  const old = b.state.buffer
  b.set({ buffer: old.length === 0 ? bytes : Bytes.concat([old, bytes]) })
  drain(b)
}

const drain = (b: Builder): void => {
  let offset = 0
  for (;;) {
    const s = b.state
    const phase = s.phase
    if (phase._tag === "Closed" || phase._tag === "TlsHandshake" || offset >= s.buffer.length) break
    const r = ReplyDecoder.decode(s.buffer, offset)
    if (r._tag === "NeedMore") {
      // Bytes while idle: the connection is unusable; wait for the whole reply to report it.
      if (phase._tag === "Ready") b.phase({ _tag: "Stale" })
      break
    }
    offset += r.consumed
    b.consumed()
    if (r._tag === "Malformed") {
      if (phase._tag === "Quitting") close(b, phase.reason)
      else fail(b, "malformed", Reply.make(451, "4.5.0", `Malformed reply from server: ${r.reason}`), false)
      break
    }
    onReply(b, r.reply)
  }
  const s = b.state
  if (s.phase._tag === "Closed" || s.phase._tag === "TlsHandshake") b.set({ buffer: Bytes.empty })
  else if (offset > 0) b.set({ buffer: offset >= s.buffer.length ? Bytes.empty : s.buffer.slice(offset) })
}

const onReply = (b: Builder, reply: Reply.Reply): void => {
  const phase = b.state.phase
  switch (phase._tag) {
    case "Banner":
      return onBanner(b, reply)
    case "Hello":
      return onHello(b, phase.verb, reply)
    case "StartTls":
      return onStartTls(b, reply)
    case "Auth":
      return saslStep(b, phase.mechanism, SaslClient.receive(phase.sasl, reply))
    case "Transaction":
      return onTransactionReply(b, phase.transaction, reply)
    case "Reset":
      if (is2xx(reply)) return next(b)
      return reply.code === 421 ? fail(b, "server-closed", reply, false) : fail(b, "rejected", reply, true)
    case "Ready":
    case "Stale":
      return fail(b, "stale", reply, false)
    case "Quitting":
      return close(b, phase.reason)
    case "Initial":
    case "TlsHandshake":
    case "Closed":
      return
  }
}

// ---------------------------------------------------------------------------
// Handshake: banner, EHLO/HELO/LHLO, STARTTLS, AUTH
// ---------------------------------------------------------------------------

const helloVerb = (b: Builder): "EHLO" | "LHLO" => (b.state.config.mode === "lmtp" ? "LHLO" : "EHLO")

const sendHello = (b: Builder, verb: "EHLO" | "HELO" | "LHLO"): void => {
  const domain = b.state.config.hostname
  const tag = verb === "EHLO" ? "Ehlo" : verb === "HELO" ? "Helo" : "Lhlo"
  b.write(`${Command.print({ _tag: tag, domain })}\r\n`)
  b.phase({ _tag: "Hello", verb })
}

const onBanner = (b: Builder, reply: Reply.Reply): void => {
  if (reply.code === 220) return sendHello(b, helloVerb(b))
  // RFC 5321 §3.1: after a 554 greeting the client should QUIT.
  if (reply.code === 421) fail(b, "server-closed", reply, false)
  else fail(b, "rejected", reply, true)
}

const onHello = (b: Builder, verb: "EHLO" | "HELO" | "LHLO", reply: Reply.Reply): void => {
  if (is2xx(reply)) {
    if (verb === "HELO") {
      b.set({ hello: { verb, greeting: reply.lines[0] ?? "" }, extensions: Extensions.empty })
    } else {
      const parsed = Extensions.parseEhlo(reply)
      b.set({ hello: { verb, greeting: parsed.greeting }, extensions: parsed.extensions })
    }
    return afterHello(b)
  }
  if (reply.code === 421) return fail(b, "server-closed", reply, false)
  if (verb === "EHLO" && (reply.code === 500 || reply.code === 502)) {
    b.event({ _tag: "HeloFallback", reply })
    return sendHello(b, "HELO")
  }
  fail(b, "rejected", reply, true)
}

const afterHello = (b: Builder): void => {
  const s = b.state
  const cfg = s.config
  if (s.tls === undefined && cfg.tls !== "none") {
    if (Extensions.has(s.extensions, "STARTTLS")) {
      b.write("STARTTLS\r\n")
      b.phase({ _tag: "StartTls" })
      return
    }
    if (cfg.tls === "required") {
      return fail(b, "tls-unavailable", Reply.make(421, "4.7.10", `TLS required but not offered by ${peer(s)}`), true)
    }
    b.event({ _tag: "TlsSkipped", reply: undefined })
  }
  afterTls(b)
}

const afterTls = (b: Builder): void => {
  const s = b.state
  if (s.config.auth !== undefined && s.auth === undefined) startAuth(b)
  else next(b)
}

const onStartTls = (b: Builder, reply: Reply.Reply): void => {
  if (reply.code === 220) {
    b.phase({ _tag: "TlsHandshake" })
    b.emit({ _tag: "StartTls" })
    return
  }
  if (reply.code === 421) return fail(b, "server-closed", reply, false)
  if (b.state.config.tls === "required") {
    const text = `TLS required but ${peer(b.state)} refused STARTTLS: ${Reply.toString(reply)}`
    return fail(b, "tls-unavailable", Reply.make(421, "4.7.10", text), true)
  }
  b.event({ _tag: "TlsSkipped", reply })
  afterTls(b)
}

const onTlsEstablished = (b: Builder, tls: Transport.TlsInfo): void => {
  if (b.state.phase._tag !== "TlsHandshake") return
  // RFC 3207 §4.2: everything learnt before the handshake is forgotten.
  b.set({ tls, hello: undefined, extensions: Extensions.empty, buffer: Bytes.empty })
  b.event({ _tag: "TlsStarted", tls })
  sendHello(b, helloVerb(b))
}

/** Our preference when the configuration names no mechanism. */
const preference: ReadonlyArray<Sasl.Mechanism> = ["SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"]

const startAuth = (b: Builder): void => {
  const s = b.state
  const auth = s.config.auth!
  const name = peer(s)
  const offered = Extensions.authMechanisms(s.extensions)
  const plaintextOk = s.tls !== undefined || !s.config.authRequireTls
  const authzid = auth.authzid === undefined || auth.authzid === "" || auth.authzid === auth.authcid ? undefined : auth.authzid
  const carries = (m: Sasl.Mechanism): boolean => authzid === undefined || m === "PLAIN" || m === "SCRAM-SHA-256"
  let mechanism = auth.mechanism
  if (mechanism !== undefined) {
    if (!offered.includes(mechanism)) {
      return fail(b, "auth", Reply.make(421, "4.7.0", `AUTH ${mechanism} not offered by ${name}`), true)
    }
    if (Sasl.isPlaintext(mechanism) && !plaintextOk) {
      return fail(b, "auth", Reply.make(421, "4.7.11", `Refusing AUTH ${mechanism} without TLS to ${name}`), true)
    }
  } else {
    mechanism = preference.find((m) => offered.includes(m) && (plaintextOk || !Sasl.isPlaintext(m)) && carries(m))
    if (mechanism === undefined) {
      const text = offered.length === 0
        ? `Authentication configured but ${name} does not offer AUTH`
        : `No usable AUTH mechanism offered by ${name}${plaintextOk ? "" : " without TLS"}: ${offered.join(" ")}`
      return fail(b, "auth", Reply.make(421, "4.7.0", text), true)
    }
  }
  const credentials = { authcid: auth.authcid, authzid, password: auth.password, random: s.config.random }
  saslStep(b, mechanism, SaslClient.start(mechanism, credentials))
}

const saslStep = (b: Builder, mechanism: Sasl.Mechanism, t: SaslClient.Transition): void => {
  const st = t.step
  switch (st._tag) {
    case "Send":
      b.write(`${st.line}\r\n`)
      b.phase({ _tag: "Auth", mechanism, sasl: t.state })
      return
    case "Success":
      b.set({ auth: { mechanism, authcid: b.state.config.auth?.authcid ?? "" } })
      b.event({ _tag: "Authenticated", mechanism })
      return next(b)
    case "Failure": {
      const reply = st.reply !== undefined && st.reply.code >= 400
        ? st.reply
        : st.transient
        ? Reply.make(454, "4.7.0", `Authentication failed: ${st.reason}`)
        : Reply.make(535, "5.7.8", `Authentication failed: ${st.reason}`)
      if (reply.code === 421) fail(b, "server-closed", reply, false)
      else fail(b, "auth", reply, true)
      return
    }
  }
}

// ---------------------------------------------------------------------------
// Messages: queue, local checks, the transaction
// ---------------------------------------------------------------------------

const onSend = (b: Builder, message: Message): void => {
  const s = b.state
  if (s.phase._tag === "Closed" || s.phase._tag === "Quitting" || s.quitRequested) {
    b.emit({ _tag: "Result", result: unsent(s, message, s.failure?.reply ?? quitting) })
  } else if (s.phase._tag === "Ready") {
    if (!begin(b, message)) next(b)
  } else {
    b.set({ queue: [...s.queue, message] })
  }
}

/** The session is idle: the next queued message, QUIT, or `Ready`. */
const next = (b: Builder): void => {
  for (;;) {
    const s = b.state
    const first = s.queue[0]
    if (first === undefined) break
    b.set({ queue: s.queue.slice(1) })
    if (begin(b, first)) return
  }
  if (b.state.quitRequested) return sendQuit(b, "quit")
  b.phase({ _tag: "Ready" })
  b.emit({ _tag: "Ready" })
}

/** Starts a transaction, or answers it with a local refusal (false). */
const begin = (b: Builder, message: Message): boolean => {
  const prepared = prepare(b.state, message)
  if (prepared._tag === "Refused") {
    b.emit({ _tag: "Result", result: prepared.result })
    return false
  }
  let t = prepared.transaction
  if (t.pipelining) {
    // RFC 2920: MAIL, every RCPT and DATA in one write; BDAT waits for the RCPT replies.
    b.write(t.mail + t.rcpts.map((r) => r.line).join("") + (t.chunking ? "" : "DATA\r\n"))
    const expect: Array<Expect> = [{ _tag: "Mail" }, ...t.rcpts.map((r): Expect => ({ _tag: "Rcpt", index: r.index }))]
    if (!t.chunking) expect.push({ _tag: "Data" })
    t = { ...t, expect, rcptsSent: t.rcpts.length, dataIssued: !t.chunking }
  } else {
    b.write(t.mail)
    t = { ...t, expect: [{ _tag: "Mail" }] }
  }
  b.phase({ _tag: "Transaction", transaction: t })
  return true
}

type Prepared =
  | { readonly _tag: "Refused"; readonly result: Result }
  | { readonly _tag: "Ready"; readonly transaction: Transaction }

const ADDR_TYPE = /^[A-Za-z0-9][A-Za-z0-9-]*$/
const NOTIFY = new Set<string>(["NEVER", "SUCCESS", "FAILURE", "DELAY"])

const validNotify = (n: ReadonlyArray<string>): boolean =>
  n.length > 0 && n.every((v) => NOTIFY.has(v)) && new Set(n).size === n.length && (!n.includes("NEVER") || n.length === 1)

/** The first value of the message that may not go on the wire (CR, LF, NUL), named. */
const lineBreakField = (m: Message): string | undefined => {
  if (Bytes.hasLineBreakOrNul(m.sender)) return "sender"
  if (m.envid !== undefined && Bytes.hasLineBreakOrNul(m.envid)) return "ENVID"
  for (const r of m.recipients) {
    if (Bytes.hasLineBreakOrNul(r.address)) return "recipient"
    if (r.orcpt && (Bytes.hasLineBreakOrNul(r.orcpt.address) || Bytes.hasLineBreakOrNul(r.orcpt.addrType))) return "ORCPT"
    if (r.notify && r.notify.some((n) => Bytes.hasLineBreakOrNul(n))) return "NOTIFY"
  }
  return undefined
}

/** Checks a message against our rules and the server's extensions, and prints its commands. */
const prepare = (s: State, m: Message): Prepared => {
  const ext = s.extensions
  const name = peer(s)
  const refuse = (reply: Reply.Reply): Prepared => ({
    _tag: "Refused",
    result: local(s, m, m.recipients.map(() => refusal(reply)))
  })
  const field = lineBreakField(m)
  if (field !== undefined) return refuse(Reply.make(501, "5.5.4", `Refused to send: CR, LF or NUL in ${field}`))
  let sender: Address.Mailbox | null = null
  if (m.sender !== "") {
    const r = Address.parsePath(`<${m.sender}>`, { utf8: true, allowNull: false, allowPostmaster: false })
    if (r._tag === "Error") return refuse(Reply.make(553, "5.1.7", `Bad sender address syntax: ${r.message}`))
    sender = r.value
  }
  if (m.envid !== undefined && (Address.checkCharacters(m.envid, true) !== undefined || Address.utf8Length(m.envid) > Params.MAX_ENVID)) {
    return refuse(Reply.make(501, "5.5.4", "Refused to send: bad ENVID"))
  }
  const statuses: Array<RecipientStatus> = []
  const valid: Array<{ readonly index: number; readonly mailbox: Address.Mailbox }> = []
  for (let i = 0; i < m.recipients.length; i++) {
    const r = m.recipients[i]!
    if (r.notify !== undefined && !validNotify(r.notify)) return refuse(Reply.make(501, "5.5.4", "Refused to send: bad NOTIFY"))
    const o = r.orcpt
    if (
      o !== undefined &&
      (!ADDR_TYPE.test(o.addrType) || o.address.length === 0 || Address.checkCharacters(o.address, true) !== undefined ||
        Address.utf8Length(o.address) > Params.MAX_ORCPT)
    ) return refuse(Reply.make(501, "5.5.4", "Refused to send: bad ORCPT"))
    const p = Address.parsePath(`<${r.address}>`, { utf8: true, allowNull: false, allowPostmaster: true })
    if (p._tag === "Error" || p.value === null) {
      statuses.push(refusal(Reply.make(553, "5.1.3", `Bad recipient address syntax: ${p._tag === "Error" ? p.message : "null"}`)))
    } else {
      statuses.push({ _tag: "Pending" })
      valid.push({ index: i, mailbox: p.value })
    }
  }
  if (valid.length === 0) return { _tag: "Refused", result: local(s, m, statuses) }
  const binary = m.body === "BINARYMIME"
  const utf8 = m.smtputf8 === true || (sender !== null && !Address.isAscii(sender)) || valid.some((v) => !Address.isAscii(v.mailbox))
  const shape = binary ? undefined : BodyShape.of(m.data)
  const eightBit = shape !== undefined && shape.eightBit
  if (binary && !(Extensions.has(ext, "CHUNKING") && Extensions.has(ext, "BINARYMIME"))) {
    return refuse(Reply.make(554, "5.6.1", `Message needs BINARYMIME and CHUNKING, which ${name} does not offer`))
  }
  if (utf8 && !Extensions.has(ext, "SMTPUTF8")) {
    return refuse(Reply.make(553, "5.6.7", `Message needs SMTPUTF8, which ${name} does not offer`))
  }
  const has8 = Extensions.has(ext, "8BITMIME")
  if (eightBit && !has8) return refuse(Reply.make(554, "5.6.3", `Message has 8-bit content and ${name} does not offer 8BITMIME`))
  const size = shape === undefined ? m.data.length : shape.size
  const limit = Extensions.sizeLimit(ext)
  if (limit !== undefined && size > limit) {
    return refuse(Reply.make(552, "5.3.4", `Message size ${size} exceeds the fixed limit ${limit} of ${name}`))
  }
  const dsn = Extensions.has(ext, "DSN")
  const body: Params.Body | undefined = binary
    ? "BINARYMIME"
    : has8 && (eightBit || m.body === "8BITMIME")
    ? "8BITMIME"
    : has8 && m.body === "7BIT"
    ? "7BIT"
    : undefined
  const params: Params.MailParams = {
    ...Params.emptyMail,
    size: Extensions.has(ext, "SIZE") ? size : undefined,
    body,
    smtputf8: utf8,
    ret: dsn ? m.ret : undefined,
    envid: dsn ? m.envid : undefined
  }
  const rcpts = valid.map(({ index, mailbox }) => {
    const r = m.recipients[index]!
    const p: Params.RcptParams = {
      ...Params.emptyRcpt,
      notify: dsn ? r.notify : undefined,
      orcpt: dsn ? r.orcpt : undefined
    }
    return { index, line: `${Command.print({ _tag: "Rcpt", recipient: mailbox, params: p })}\r\n` }
  })
  return {
    _tag: "Ready",
    transaction: {
      message: m,
      mail: `${Command.print({ _tag: "Mail", sender, params })}\r\n`,
      rcpts,
      statuses,
      expect: [],
      mailOk: undefined,
      rcptsSent: 0,
      dataIssued: false,
      dataSent: false,
      completed: false,
      pipelining: Extensions.has(ext, "PIPELINING"),
      chunking: binary || (s.config.preferChunking && Extensions.has(ext, "CHUNKING")),
      binary
    }
  }
}

const onTransactionReply = (b: Builder, tx: Transaction, reply: Reply.Reply): void => {
  const head = tx.expect[0]
  if (head === undefined) return
  // 421: the server is closing; whatever is undecided is transient with its reply.
  if (reply.code === 421) return fail(b, "server-closed", reply, false)
  let t: Transaction = { ...tx, expect: tx.expect.slice(1) }
  switch (head._tag) {
    case "Mail":
      t = is2xx(reply)
        ? { ...t, mailOk: true }
        : { ...t, mailOk: false, statuses: t.statuses.map((st) => (st._tag === "Pending" ? refusal(reply) : st)) }
      break
    case "Rcpt":
      // After a refused MAIL the pipelined RCPT replies are read and ignored.
      if (t.mailOk === true) t = withStatus(t, head.index, is2xx(reply) ? { _tag: "Accepted" } : refusal(reply))
      break
    case "Data":
      if (reply.code !== 354) {
        t = { ...t, statuses: t.statuses.map((st) => (st._tag === "Accepted" ? refusal(reply) : st)) }
      } else if (t.mailOk === true && accepted(t).length > 0) {
        t = sendBody(b, t)
      } else {
        // RFC 2920 §3.1: a 354 with no accepted recipient: end the (empty) data at once.
        b.write(".\r\n")
        t = { ...t, expect: [...t.expect, { _tag: "Dot" }] }
      }
      break
    case "Final":
      t = head.index === undefined
        ? { ...t, statuses: t.statuses.map((st) => (st._tag === "Accepted" ? final(reply) : st)) }
        : withStatus(t, head.index, final(reply))
      if (t.expect.length === 0) t = { ...t, completed: true }
      break
    case "Dot":
      break
  }
  if (t.expect.length > 0) return b.phase({ _tag: "Transaction", transaction: t })
  proceed(b, t)
}

/** Nothing more is expected: the next command, or the end of the transaction. */
const proceed = (b: Builder, tx: Transaction): void => {
  let t = tx
  if (t.mailOk === true && !t.dataIssued) {
    const r = t.rcpts[t.rcptsSent]
    if (r !== undefined) {
      b.write(r.line)
      t = { ...t, rcptsSent: t.rcptsSent + 1, expect: [{ _tag: "Rcpt", index: r.index }] }
      return b.phase({ _tag: "Transaction", transaction: t })
    }
    if (accepted(t).length > 0) {
      if (t.chunking) {
        t = sendBody(b, t)
      } else {
        b.write("DATA\r\n")
        t = { ...t, dataIssued: true, expect: [{ _tag: "Data" }] }
      }
      return b.phase({ _tag: "Transaction", transaction: t })
    }
  }
  b.emit({ _tag: "Result", result: resultOf(b.state, t, undefined) })
  if (t.completed) return next(b)
  b.write("RSET\r\n")
  b.phase({ _tag: "Reset" })
}

const accepted = (t: Transaction): ReadonlyArray<number> =>
  t.rcpts.filter((r) => t.statuses[r.index]?._tag === "Accepted").map((r) => r.index)

const withStatus = (t: Transaction, index: number, status: RecipientStatus): Transaction => {
  const statuses = [...t.statuses]
  statuses[index] = status
  return { ...t, statuses }
}

const DOT_CRLF = new Uint8Array([Bytes.DOT, Bytes.CR, Bytes.LF])

/** Writes the body (after the 354, or as one BDAT LAST) and expects the final replies. */
const sendBody = (b: Builder, t: Transaction): Transaction => {
  const data = t.message.data
  if (t.chunking) {
    const payload = t.binary || BodyShape.of(data).canonical ? data : BodyShape.canonical(data)
    b.write(`${Command.print({ _tag: "Bdat", size: payload.length, last: true })}\r\n`)
    b.writeBytes(payload)
  } else if (BodyShape.of(data).clean) {
    // nothing to stuff or convert: the message as it is, then the terminator
    b.writeBytes(data)
    b.writeBytes(DOT_CRLF)
  } else {
    b.writeBytes(DataEncoder.encode(data))
  }
  const finals: Array<Expect> = b.state.config.mode === "lmtp"
    ? accepted(t).map((index): Expect => ({ _tag: "Final", index }))
    : [{ _tag: "Final", index: undefined }]
  return { ...t, dataIssued: true, dataSent: true, expect: [...t.expect, ...finals] }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

const resultOf = (s: State, t: Transaction, failure: Reply.Reply | undefined): Result => ({
  recipients: t.statuses.map((st, i) => ({
    address: t.message.recipients[i]?.address ?? "",
    ...(st._tag === "Done"
      ? { outcome: st.outcome, reply: st.reply }
      : { outcome: "transient" as const, reply: failure ?? connectionLost })
  })),
  tls: s.tls,
  auth: s.auth?.authcid,
  dataSent: t.dataSent,
  local: false
})

const local = (s: State, m: Message, statuses: ReadonlyArray<RecipientStatus>): Result => ({
  recipients: m.recipients.map((r, i) => {
    const st = statuses[i]
    return st?._tag === "Done"
      ? { address: r.address, outcome: st.outcome, reply: st.reply }
      : { address: r.address, outcome: "transient" as const, reply: connectionLost }
  }),
  tls: s.tls,
  auth: s.auth?.authcid,
  dataSent: false,
  local: true
})

/** A message that was never started: every recipient transient with `reply`. */
const unsent = (s: State, m: Message, reply: Reply.Reply): Result =>
  local(s, m, m.recipients.map(() => ({ _tag: "Done", outcome: "transient", reply })))
