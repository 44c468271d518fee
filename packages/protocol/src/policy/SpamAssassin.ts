/**
 * Content filtering with SpamAssassin (slimta's `reject_spam` rule and its
 * `spamassassin` queue policy) as a `message` validator: every message is
 * shown to spamd before it is queued, and is
 *
 * - refused with `554 5.6.0 Message content rejected` when its score reaches
 *   the reject level (`rejectAt`: a score of our own, or `"spam"` for
 *   spamd's own verdict);
 * - otherwise accepted with `X-Spam-Status: Yes, score=7.3 required=5.0`
 *   (or `No, ...`) and `X-Spam-Symbols: RULE_A,RULE_B` prepended.
 *
 * When spamd is down, refuses, or does not answer within the time limit the
 * outcome is configurable: accept with `X-Spam-Status: Unknown` (default),
 * or `451 4.7.1` so the client retries. Messages over `maxSize` are not
 * scanned (spamc's own default is 500 KB) and get `Unknown` as well.
 *
 * What it deliberately does not do: rewrite the message (`PROCESS`), strip
 * X-Spam headers the client sent, or learn.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Transport from "../edge/Transport.ts"
import type * as Envelope from "../envelope/Envelope.ts"
import type { Facts } from "../smtp/ServerModel.ts"
import * as ReplyTemplate from "./ReplyTemplate.ts"
import * as SpamdClient from "./SpamdClient.ts"
import type * as Validators from "./Validators.ts"

export interface Options {
  readonly spamd: SpamdClient.Options
  /** Refuse at or above this score, or when spamd calls it spam (`"spam"`); unset: only flag. */
  readonly rejectAt?: number | "spam" | undefined
  /** The refusal [`554 5.6.0 Message content rejected`]; `{score}`, `{threshold}`, `{symbols}` are filled. */
  readonly reply?: string | ReplyTemplate.Template | undefined
  /** When there is no verdict: accept with `X-Spam-Status: Unknown` (default) or refuse temporarily. */
  readonly onError?: "accept" | "tempfail" | undefined
  /** The temporary refusal [`451 4.7.1 Content scanner unavailable, try again later`]. */
  readonly errorReply?: string | ReplyTemplate.Template | undefined
  /** Messages larger than this are not scanned [512000 bytes]. */
  readonly maxSize?: number | undefined
  /** Do not scan mail from authenticated clients [false]. */
  readonly skipAuthenticated?: boolean | undefined
}

export const defaultReply = "554 5.6.0 Message content rejected"
export const defaultErrorReply = "451 4.7.1 Content scanner unavailable, try again later"

const fixed1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : "0.0")

/** The `X-Spam-Status` value for a verdict: `Yes, score=1001.1 required=5.0`. */
export const statusValue = (v: SpamdClient.Verdict): string =>
  `${v.spam ? "Yes" : "No"}, score=${fixed1(v.score)} required=${fixed1(v.threshold)}`

/** True when the verdict reaches the reject level. */
export const shouldReject = (v: SpamdClient.Verdict, rejectAt: Options["rejectAt"]): boolean =>
  rejectAt === undefined ? false : rejectAt === "spam" ? v.spam : v.score >= rejectAt

type Accept = Extract<Validators.MessageDecision, { _tag: "Accept" }>

const unknown = (why: string): Accept => ({ _tag: "Accept", reply: undefined, headers: [["X-Spam-Status", `Unknown, ${why}`]] })

/**
 * A `message` validator over spamd (see the module header). Needs the
 * `Connector` service to reach spamd.
 */
export const validators = (options: Options): Validators.Validators<Transport.Connector> => {
  const reject = ReplyTemplate.from(options.reply ?? defaultReply)
  const tempfail = ReplyTemplate.from(options.errorReply ?? defaultErrorReply)
  const maxSize = options.maxSize ?? 512_000
  const onError = options.onError ?? "accept"
  return {
    message: (facts: Facts, envelope: Envelope.Envelope) =>
      Effect.gen(function*() {
        if (options.skipAuthenticated === true && facts.auth !== undefined) {
          return { _tag: "Accept", reply: undefined, headers: [] } satisfies Validators.MessageDecision
        }
        if (envelope.message.length > maxSize) return unknown("not scanned (message too large)")
        const result = yield* Effect.result(SpamdClient.check(envelope.message, options.spamd))
        if (result._tag === "Failure") {
          const e = result.failure
          yield* Effect.logWarning("spamd unavailable").pipe(
            Effect.annotateLogs({ reason: e.reason, error: e.message, outcome: onError })
          )
          return onError === "tempfail"
            ? ({ _tag: "Reject", reply: ReplyTemplate.render(tempfail) } satisfies Validators.MessageDecision)
            : unknown("spamd unavailable")
        }
        const v = result.success
        const values = { score: fixed1(v.score), threshold: fixed1(v.threshold), symbols: v.symbols.join(",") }
        if (shouldReject(v, options.rejectAt)) {
          yield* Effect.logInfo("spam rejected").pipe(Effect.annotateLogs(values))
          return { _tag: "Reject", reply: ReplyTemplate.render(reject, values) } satisfies Validators.MessageDecision
        }
        const headers: Array<readonly [string, string]> = [["X-Spam-Status", statusValue(v)]]
        if (v.symbols.length > 0) headers.push(["X-Spam-Symbols", v.symbols.join(",")])
        return { _tag: "Accept", reply: undefined, headers } satisfies Validators.MessageDecision
      })
  }
}
