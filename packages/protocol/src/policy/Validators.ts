/**
 * SMTP validators: the per-command policy hooks of the edge (slimta's
 * `SmtpValidators`: banner, ehlo, mail, rcpt, data, have_data, auth, rset,
 * queued, close) as Effects over read-only session facts that return a typed
 * `Decision` carrying a `Reply`.
 *
 * A hook that is not defined accepts, and the session does not even ask for
 * it (no asynchronous round trip on the hot path). Hooks cannot fail: a
 * policy that depends on the network decides what its own failure means
 * (SPF's temperror, a spamd that is down), and the edge turns a defect into
 * `451 4.3.0`.
 *
 * What this module deliberately does not do: run the hooks (the SMTP edge
 * does), or know any concrete policy (SPF, DNSBL, lists live beside it).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Envelope from "../envelope/Envelope.ts"
import type * as Address from "../smtp/Address.ts"
import type * as Params from "../smtp/Params.ts"
import type * as Reply from "../smtp/Reply.ts"
import type { AskHooks, Facts } from "../smtp/ServerModel.ts"
import * as Decision from "./Decision.ts"

/** After the whole message: accept (optionally prepending header fields, e.g. X-Spam-Status) or refuse. */
export type MessageDecision =
  | { readonly _tag: "Accept"; readonly reply: Reply.Reply | undefined; readonly headers: ReadonlyArray<readonly [string, string]> }
  | { readonly _tag: "Reject"; readonly reply: Reply.Reply }

/** The identity SASL established, for the `auth` hook to allow or refuse (e.g. authzid rules). */
export interface AuthIdentity {
  readonly mechanism: string
  readonly authcid: string
  readonly authzid: string | undefined
}

/** What the queue said about a message, for the `queued` hook. */
export interface QueuedInfo {
  readonly replies: ReadonlyArray<Reply.Reply>
  readonly ids: ReadonlyArray<string>
}

export interface Validators<R = never> {
  /** Before the banner (slimta `handle_banner`); a Reject sends its reply and closes. */
  readonly connect?: (facts: Facts) => Effect.Effect<Decision.Decision, never, R>
  readonly ehlo?: (facts: Facts, domain: string) => Effect.Effect<Decision.Decision, never, R>
  readonly mail?: (facts: Facts, sender: Address.Mailbox | null, params: Params.MailParams) => Effect.Effect<Decision.Decision, never, R>
  readonly rcpt?: (facts: Facts, recipient: Address.Mailbox, params: Params.RcptParams) => Effect.Effect<Decision.Decision, never, R>
  /** The DATA command, before 354. */
  readonly data?: (facts: Facts) => Effect.Effect<Decision.Decision, never, R>
  /** The whole message, before it is queued (slimta `handle_have_data`). */
  readonly message?: (facts: Facts, envelope: Envelope.Envelope) => Effect.Effect<MessageDecision, never, R>
  /** Verified credentials: may still refuse (slimta `handle_auth`). */
  readonly auth?: (facts: Facts, identity: AuthIdentity) => Effect.Effect<Decision.Decision, never, R>
  /** After the queue answered (slimta `handle_queued`); for logging and accounting. */
  readonly queued?: (facts: Facts, envelope: Envelope.Envelope, info: QueuedInfo) => Effect.Effect<void, never, R>
  /** The session ended, however it ended. */
  readonly close?: (facts: Facts) => Effect.Effect<void, never, R>
}

/** No hooks: accept everything. */
export const none: Validators = {}

/** Which hooks the session must ask about. */
export const askHooks = <R>(v: Validators<R>): AskHooks => ({
  connect: v.connect !== undefined,
  ehlo: v.ehlo !== undefined,
  mail: v.mail !== undefined,
  rcpt: v.rcpt !== undefined,
  data: v.data !== undefined
})

/** Message accepted, nothing added. */
export const acceptMessage: MessageDecision = { _tag: "Accept", reply: undefined, headers: [] }

type DecisionHook<R, Args extends ReadonlyArray<unknown>> =
  | ((...args: Args) => Effect.Effect<Decision.Decision, never, R>)
  | undefined

const chain = <R, Args extends ReadonlyArray<unknown>>(
  hooks: ReadonlyArray<DecisionHook<R, Args>>
): ((...args: Args) => Effect.Effect<Decision.Decision, never, R>) | undefined => {
  const defined = hooks.filter((h): h is NonNullable<typeof h> => h !== undefined)
  if (defined.length === 0) return undefined
  if (defined.length === 1) return defined[0]
  return (...args: Args) =>
    Effect.gen(function*() {
      let reply: Reply.Reply | undefined
      for (const hook of defined) {
        const d = yield* hook(...args)
        if (d._tag === "Reject") return d
        if (d.reply) reply = d.reply
      }
      return reply ? Decision.acceptWith(reply) : Decision.accept
    })
}

/**
 * Composes validators in order. For each decision hook the first refusal
 * wins and later validators are not asked; among acceptances the last reply
 * given replaces the default. Message hooks also collect every header field
 * to prepend, in order. Notification hooks (`queued`, `close`) all run.
 */
export const compose = <R>(...all: ReadonlyArray<Validators<R>>): Validators<R> => {
  const messageHooks = all.map((v) => v.message).filter((h): h is NonNullable<typeof h> => h !== undefined)
  const queuedHooks = all.map((v) => v.queued).filter((h): h is NonNullable<typeof h> => h !== undefined)
  const closeHooks = all.map((v) => v.close).filter((h): h is NonNullable<typeof h> => h !== undefined)
  const out: {
    -readonly [K in keyof Validators<R>]: Validators<R>[K]
  } = {}
  const connect = chain(all.map((v) => v.connect))
  const ehlo = chain(all.map((v) => v.ehlo))
  const mail = chain(all.map((v) => v.mail))
  const rcpt = chain(all.map((v) => v.rcpt))
  const data = chain(all.map((v) => v.data))
  const auth = chain(all.map((v) => v.auth))
  if (connect) out.connect = connect
  if (ehlo) out.ehlo = ehlo
  if (mail) out.mail = mail
  if (rcpt) out.rcpt = rcpt
  if (data) out.data = data
  if (auth) out.auth = auth
  if (messageHooks.length > 0) {
    out.message = (facts, envelope) =>
      Effect.gen(function*() {
        let reply: Reply.Reply | undefined
        const headers: Array<readonly [string, string]> = []
        for (const hook of messageHooks) {
          const d = yield* hook(facts, envelope)
          if (d._tag === "Reject") return d
          if (d.reply) reply = d.reply
          headers.push(...d.headers)
        }
        return { _tag: "Accept", reply, headers } as const
      })
  }
  if (queuedHooks.length > 0) {
    out.queued = (facts, envelope, info) => Effect.forEach(queuedHooks, (h) => h(facts, envelope, info), { discard: true })
  }
  if (closeHooks.length > 0) {
    out.close = (facts) => Effect.forEach(closeHooks, (h) => h(facts), { discard: true })
  }
  return out
}
