/**
 * The relay contract: deliver one envelope, answer per recipient. Every relay
 * (SMTP to MX or a smarthost, LMTP, a pipe to a delivery agent, Maildir,
 * HTTP, blackhole) implements it; the queue decides what a result means
 * (record, retry, bounce).
 *
 * A relay never fails: every problem, a refused connection as much as a 5xx
 * reply, is classified into per-recipient results, each carrying the reply
 * that explains it. Transient means "try again later", permanent means
 * "bounce".
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Envelope from "../envelope/Envelope.ts"
import * as Reply from "../smtp/Reply.ts"

/** The outcome for one recipient. */
export type Outcome = "delivered" | "transient" | "permanent"

export interface RecipientResult {
  readonly outcome: Outcome
  readonly reply: Reply.Reply
}

export interface RelayResult {
  /** One per recipient of the envelope given, in order. */
  readonly recipients: ReadonlyArray<RecipientResult>
  /** Who answered, for DSNs and logs: `dns; mx.example.com` style name, or a path. */
  readonly remote: string | undefined
  /** The TLS outcome of the attempt, for the delivery log (e.g. "TLSv1.3 verified", "none"). */
  readonly tls: string | undefined
}

export class Relay extends Context.Service<Relay, {
  /**
   * Attempts delivery of `envelope` to all its recipients. `attempts` counts
   * earlier attempts of the same message (0 on the first), for relays that
   * rotate hosts.
   */
  readonly attempt: (envelope: Envelope.Envelope, attempts: number) => Effect.Effect<RelayResult>
}>()("@mailroom/protocol/Relay") {}

/** Classifies a reply: 2xx delivered, 4xx transient, 5xx permanent. */
export const outcomeOf = (reply: Reply.Reply): Outcome =>
  reply.code < 400 ? "delivered" : reply.code < 500 ? "transient" : "permanent"

/** The same result for every recipient. */
export const all = (envelope: Envelope.Envelope, reply: Reply.Reply, remote?: string): RelayResult => ({
  recipients: envelope.recipients.map(() => ({ outcome: outcomeOf(reply), reply })),
  remote,
  tls: undefined
})

/** A blackhole: accepts everything, delivers nowhere (slimta's BlackholeRelay). */
export const blackhole: Relay["Service"] = {
  attempt: (envelope) => Effect.succeed(all(envelope, Reply.make(250, "2.0.0", "Message delivered (blackhole)"), "blackhole"))
}
