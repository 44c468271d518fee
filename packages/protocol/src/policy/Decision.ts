/**
 * The answer a policy gives to a question of the session: go on (optionally
 * with a reply of its own in place of the default one) or refuse with a
 * reply. Typed, never a loose string: a policy cannot forget the code or
 * send a malformed one, because `Reply.make` checks both.
 *
 * A reply with code 421 also closes the connection, whoever sent it.
 *
 * @since 0.1.0
 */
import type * as Reply from "../smtp/Reply.ts"

export type Decision =
  | { readonly _tag: "Accept"; readonly reply: Reply.Reply | undefined }
  | { readonly _tag: "Reject"; readonly reply: Reply.Reply }

/** Go on with the session's default reply. */
export const accept: Decision = { _tag: "Accept", reply: undefined }

/** Go on, answering with `reply` (2xx/3xx) instead of the default one. */
export const acceptWith = (reply: Reply.Reply): Decision => ({ _tag: "Accept", reply })

/** Refuse with `reply` (4xx transient, 5xx permanent). */
export const reject = (reply: Reply.Reply): Decision => ({ _tag: "Reject", reply })

/** True for a refusal. */
export const isReject = (d: Decision): d is Extract<Decision, { _tag: "Reject" }> => d._tag === "Reject"
