/**
 * A plain-value driver for ServerSession unit tests: feeds byte chunks,
 * answers questions with a handler, and records everything sent as text.
 */
import * as Decision from "../../src/policy/Decision.ts"
import * as Reply from "../../src/smtp/Reply.ts"
import * as ServerSession from "../../src/smtp/ServerSession.ts"
import type { Input, Output, Question, State } from "../../src/smtp/ServerModel.ts"

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b)

export type Answer = (q: Question) => Input

export const defaultAnswer: Answer = (q) => {
  switch (q._tag) {
    case "Auth":
      if (q.request._tag === "VerifyPassword") {
        return { _tag: "Credentials", answer: { _tag: "Verified", ok: q.request.password === "secret" } }
      }
      if (q.request._tag === "LookupSecret") {
        return { _tag: "Credentials", answer: { _tag: "Secret", password: q.request.authcid === "user" ? "secret" : undefined } }
      }
      return { _tag: "Credentials", answer: { _tag: "Scram", credentials: undefined } }
    case "Message":
      return { _tag: "Delivered", replies: [Reply.queuedAs("Q1")] }
    default:
      return { _tag: "Decision", decision: Decision.accept }
  }
}

export interface Run {
  state: State
  sent: string
  questions: Array<Question>
  closed: string | undefined
  startTls: number
  outputs: Array<Output>
}

export const cfg = (over: Partial<ServerSession.Config> = {}): ServerSession.Config =>
  ServerSession.config({
    hostname: "mx.test",
    random: (n) => new Uint8Array(n).fill(7),
    ...over
  })

const endpoints = {
  remote: { _tag: "Inet", address: "192.0.2.1", port: 40000 } as const,
  local: { _tag: "Inet", address: "192.0.2.25", port: 25 } as const
}

/** A harness over one session. */
export class Harness implements Run {
  state: State
  sent = ""
  questions: Array<Question> = []
  closed: string | undefined
  startTls = 0
  outputs: Array<Output> = []
  now = 0
  constructor(config = cfg(), readonly answer: Answer = defaultAnswer, tls?: ServerSession.State["tls"]) {
    this.state = ServerSession.initial(config, { ...endpoints, tls })
  }
  start(): this {
    this.apply(ServerSession.start(this.state, this.now))
    return this
  }
  private apply(step: ServerSession.Step | { state: State; outputs: ReadonlyArray<Output> }): void {
    this.state = step.state
    const pending: Array<Input> = []
    for (const o of step.outputs) {
      this.outputs.push(o)
      if (o._tag === "Send") this.sent += dec(o.bytes)
      else if (o._tag === "Close") this.closed = o.reason
      else if (o._tag === "StartTls") this.startTls++
      else if (o._tag === "Ask") {
        this.questions.push(o.question)
        pending.push(this.answer(o.question))
      }
    }
    for (const input of pending) this.input(input)
  }
  input(input: Input): this {
    this.apply(ServerSession.step(this.state, input, this.now))
    return this
  }
  send(...chunks: Array<string | Uint8Array>): this {
    for (const c of chunks) this.input({ _tag: "Received", bytes: typeof c === "string" ? enc(c) : c })
    return this
  }
  /** Takes what was sent since the last take. */
  take(): string {
    const s = this.sent
    this.sent = ""
    return s
  }
  /** The reply codes sent since the last take, in order (first line of each reply only). */
  codes(): Array<string> {
    return this.take()
      .split("\r\n")
      .filter((l) => /^\d{3} /.test(l) || /^\d{3}$/.test(l))
      .map((l) => l.slice(0, 3))
  }
}
