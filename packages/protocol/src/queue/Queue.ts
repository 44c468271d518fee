/**
 * The queue as the edges see it: one operation, `enqueue`, whose answer the
 * edge turns into its reply. The contract behind "the one promise": an
 * implementation answers `Queued` only once every envelope it made of the
 * message is on stable storage.
 *
 * Implementations: the durable queue (storage, retries, bounces), the proxy
 * queue (no storage: the relay's own answer is the reply, as slimta's
 * `ProxyQueue`), and `Queue.memory` for tests.
 *
 * What this module deliberately does not do: schedule, store or relay.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import type * as Envelope from "../envelope/Envelope.ts"
import * as Reply from "../smtp/Reply.ts"

/** What the queue did with a message. */
export type EnqueueResult =
  /** Stored durably, under these ids (queue policies may split one message into several). */
  | { readonly _tag: "Queued"; readonly ids: ReadonlyArray<string> }
  /** Not taken: e.g. `451 4.3.0` on a storage error, `452 4.3.1` when the disk is full. */
  | { readonly _tag: "Refused"; readonly reply: Reply.Reply }
  /** Relayed at once (proxy queue): one reply per recipient, in envelope order. */
  | { readonly _tag: "Relayed"; readonly replies: ReadonlyArray<Reply.Reply> }

export class Queue extends Context.Service<Queue, {
  readonly enqueue: (envelope: Envelope.Envelope) => Effect.Effect<EnqueueResult>
}>()("@mailroom/protocol/Queue") {}

/**
 * The replies an edge sends for a result: one per recipient (LMTP uses them
 * all, SMTP the first). For a proxied message with mixed results, SMTP gets
 * the first failure, transient ones first, so the client retries rather than
 * a failed recipient being dropped silently.
 */
export const replies = (result: EnqueueResult, recipients: number): ReadonlyArray<Reply.Reply> => {
  switch (result._tag) {
    case "Queued": {
      const reply = Reply.queuedAs(result.ids.join(","))
      return Array.from({ length: Math.max(1, recipients) }, () => reply)
    }
    case "Refused":
      return Array.from({ length: Math.max(1, recipients) }, () => result.reply)
    case "Relayed":
      return result.replies.length > 0 ? result.replies : [Reply.queueError]
  }
}

/** The single SMTP reply for a result (see `replies`). */
export const smtpReply = (result: EnqueueResult): Reply.Reply => {
  if (result._tag !== "Relayed") return replies(result, 1)[0]!
  const failures = result.replies.filter((r) => r.code >= 400)
  if (failures.length === 0) return result.replies[0] ?? Reply.queueError
  return failures.find((r) => r.code < 500) ?? failures[0]!
}

/** An in-memory queue for tests: keeps what it is given; `received` reads it back. */
export interface MemoryQueue {
  readonly received: Effect.Effect<ReadonlyArray<Envelope.Envelope>>
}

/** A layer with a memory queue answering `Queued`, and a handle on what it received. */
export const memory = (
  answer: (envelope: Envelope.Envelope) => EnqueueResult = (e) => ({ _tag: "Queued", ids: [e.id] })
): Effect.Effect<{ readonly layer: Layer.Layer<Queue>; readonly queue: MemoryQueue }> =>
  Effect.gen(function*() {
    const ref = yield* Ref.make<ReadonlyArray<Envelope.Envelope>>([])
    const layer = Layer.succeed(Queue)({
      enqueue: (envelope) =>
        Effect.gen(function*() {
          const result = answer(envelope)
          if (result._tag === "Queued") yield* Ref.update(ref, (all) => [...all, envelope])
          return result
        })
    })
    return { layer, queue: { received: Ref.get(ref) } }
  })
