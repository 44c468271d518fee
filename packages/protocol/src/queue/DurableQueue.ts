/**
 * The durable queue (slimta's `Queue`): runs the queue policies, writes each
 * resulting envelope to `QueueStorage` and answers `Queued` only once every
 * write is durable; then attempts delivery at once and retries on a schedule
 * whose next-attempt time is persisted, so a restart loses no schedule.
 *
 * Per attempt: claim the message with an expiring lease recorded in the
 * storage (not an in-process lock, so several processes can share one
 * storage), read it, relay the recipients still pending, and record each
 * result. Delivered recipients are never sent again; transient ones are
 * retried with back-off until `maxAge`, then bounced; permanent ones are
 * bounced at once (RFC 3464 DSNs from `<>`, never to `<>`, honouring
 * NOTIFY/RET/ENVID/ORCPT), and a delay notice goes out once after
 * `delayWarning`.
 *
 * Crash safety, in order: the bounce is written before the failure is
 * recorded, and results are recorded before the message is removed, so a
 * crash at any point repeats work (at-least-once) and never drops it.
 *
 * What it deliberately does not do: know how storage or relaying work (both
 * are services), or run relay policies (relays do).
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as EQueue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Envelope from "../envelope/Envelope.ts"
import * as QueuePolicy from "../policy/QueuePolicy.ts"
import * as Relay from "../relay/Relay.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Bounce from "./Bounce.ts"
import * as Queue from "./Queue.ts"
import * as QueueStorage from "./QueueStorage.ts"

/** A queue policy: run once before storage, may return several envelopes (see `QueuePolicy`). */
export type Policy<R = never> = QueuePolicy.QueuePolicy<R>

export interface RetryOptions {
  /** Delays before the 1st, 2nd, ... retry, ms. */
  readonly intervals: ReadonlyArray<number>
  /** The delay once `intervals` is used up, ms. */
  readonly maxInterval: number
  /** Give up (bounce) after this long in the queue, ms. */
  readonly maxAge: number
  /** Send one delay notice after this long, ms (0 = never). */
  readonly delayWarning: number
}

const minute = 60_000
const hour = 60 * minute

/** Postfix-like defaults: first retry within minutes, back-off to an hour, give up after 5 days, warn after 4 hours. */
export const defaultRetry: RetryOptions = {
  intervals: [1 * minute, 5 * minute, 15 * minute, 30 * minute, hour],
  maxInterval: hour,
  maxAge: 5 * 24 * hour,
  delayWarning: 4 * hour
}

/** The delay after the `attempts`-th failed attempt (1-based). */
export const retryDelay = (retry: RetryOptions, attempts: number): number =>
  retry.intervals[attempts - 1] ?? retry.maxInterval

export interface Options<R = never> {
  /** Our hostname: Reporting-MTA of DSNs. */
  readonly hostname: string
  readonly policies?: ReadonlyArray<Policy<R>>
  readonly retry?: Partial<RetryOptions>
  /**
   * This process's name in leases. Stable across restarts by default (the
   * hostname), so a restarted process takes its own leases back at once;
   * give each process its own when several share one storage.
   */
  readonly owner?: string
  /** How long a claim lasts, ms [10 min]. */
  readonly leaseMs?: number
  /** Attempts running at once [20]. */
  readonly concurrency?: number
  /** How often storage is re-read for messages written by other processes, ms [15 s]. */
  readonly pollMs?: number
  /** Start delivering (false: store only, like slimta without a relay) [true]. */
  readonly deliver?: boolean
  /** Randomness for DSN boundaries and ids (defaults to crypto.getRandomValues). */
  readonly random?: (n: number) => Uint8Array
}

export interface DurableQueue {
  /** The edge-facing service. */
  readonly queue: Queue.Queue["Service"]
  /** Attempt every message now, held ones excepted. */
  readonly flush: Effect.Effect<void>
  /** Attempt one message now (clears its hold). */
  readonly retryNow: (id: string) => Effect.Effect<void, QueueStorage.StorageError>
  /** Resolves once nothing is due and nothing is in flight (tests, shutdown). */
  readonly idle: Effect.Effect<void>
  /** Ids with an attempt running now. */
  readonly inFlight: Effect.Effect<ReadonlyArray<string>>
}

const defaultRandom = (n: number): Uint8Array => {
  const out = new Uint8Array(n)
  globalThis.crypto.getRandomValues(out)
  return out
}

const storageReply = (e: QueueStorage.StorageError): Reply.Reply =>
  e.reason === "Full" ? Reply.insufficientStorage : Reply.queueError

/** Starts the queue in the current scope: its scheduler runs until the scope closes. */
export const make = <R = never>(
  options: Options<R>
): Effect.Effect<DurableQueue, never, Scope.Scope | QueueStorage.QueueStorage | Relay.Relay | R> =>
  Effect.gen(function*() {
    const storage = yield* QueueStorage.QueueStorage
    const relay = yield* Relay.Relay
    const services = yield* Effect.context<R>()
    const retry: RetryOptions = { ...defaultRetry, ...options.retry }
    const owner = options.owner ?? options.hostname
    const leaseMs = options.leaseMs ?? 10 * minute
    const concurrency = options.concurrency ?? 20
    const pollMs = options.pollMs ?? 15_000
    const random = options.random ?? defaultRandom
    const policies = options.policies ?? []
    const deliver = options.deliver ?? true

    /** id → next attempt time, as far as this process knows. */
    const schedule = new Map<string, number>()
    const running = new Set<string>()
    /** Ids removed by their attempt, whose lease is gone with them. */
    const gone = new Set<string>()
    /**
     * One set per resync under way: the ids whose schedule this process
     * changed while that resync was listing the storage. Its listing may be
     * older than what this process knows of them (a message written after
     * the directory was read, one delivered and removed meanwhile), so the
     * resync leaves them as they are.
     */
    const listings = new Set<Set<string>>()
    const touch = (id: string): void => {
      for (const l of listings) l.add(id)
    }
    /** Sets an id's next attempt time on this process's behalf (a resync under way leaves it alone). */
    const plan = (id: string, at: number): void => {
      schedule.set(id, at)
      touch(id)
    }
    /** Takes an id off the schedule on this process's behalf. */
    const unplan = (id: string): void => {
      schedule.delete(id)
      touch(id)
    }
    const wake = yield* EQueue.sliding<void>(1)
    const fibers = yield* FiberSet.make<void, never>()
    const signal = Effect.asVoid(EQueue.offer(wake, undefined))

    /** Writes envelopes durably; on any failure removes what was written and fails. */
    const writeAll = (
      envelopes: ReadonlyArray<Envelope.Envelope>,
      now: number
    ): Effect.Effect<ReadonlyArray<string>, QueueStorage.StorageError> =>
      envelopes.length === 1
        ? Effect.map(storage.write(envelopes[0]!, { nextAttemptAt: now }), (id) => {
          plan(id, now)
          return [id]
        })
        : writeMany(envelopes, now)

    const writeMany = (envelopes: ReadonlyArray<Envelope.Envelope>, now: number) =>
      Effect.gen(function*() {
        const results = yield* Effect.forEach(
          envelopes,
          (e) => Effect.result(storage.write(e, { nextAttemptAt: now })),
          { concurrency: "unbounded" }
        )
        const failure = results.find((r) => r._tag === "Failure")
        if (failure && failure._tag === "Failure") {
          yield* Effect.forEach(results, (r) => (r._tag === "Success" ? Effect.ignore(storage.remove(r.success)) : Effect.void), {
            discard: true
          })
          return yield* Effect.fail(failure.failure)
        }
        const ids = results.map((r) => (r._tag === "Success" ? r.success : ""))
        for (const id of ids) {
          plan(id, now)
        }
        return ids
      })

    const enqueue = (envelope: Envelope.Envelope): Effect.Effect<Queue.EnqueueResult> =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const envelopes = yield* QueuePolicy.run(policies, envelope)
        const written = yield* Effect.result(writeAll(envelopes, now))
        if (written._tag === "Failure") {
          yield* Effect.logError("queue write failed").pipe(
            Effect.annotateLogs({ id: envelope.id, reason: written.failure.reason, error: written.failure.message })
          )
          return { _tag: "Refused", reply: storageReply(written.failure) } as const
        }
        if (deliver) yield* signal
        return { _tag: "Queued", ids: written.success } as const
      }).pipe(Effect.provideContext(services))

    /** Writes a DSN (no policies: it is complete as built). */
    const sendDsn = (dsn: Envelope.Envelope | undefined, now: number) =>
      dsn === undefined
        ? Effect.void
        : Effect.flatMap(writeAll([dsn], now), () => signal).pipe(
          Effect.tap(() => Effect.logInfo("dsn queued").pipe(Effect.annotateLogs({ id: dsn.id, to: dsn.recipients.join(",") })))
        )

    const attempt = (id: string): Effect.Effect<void, QueueStorage.StorageError> =>
      Effect.gen(function*() {
        const claimedAt = yield* Clock.currentTimeMillis
        if (!(yield* storage.claim(id, owner, claimedAt, leaseMs))) {
          plan(id, claimedAt + leaseMs)
          return
        }
        // A removed message has no lease left to release (and releasing it would cost a write).
        const removed = yield* Effect.ensuring(
          attemptClaimed(id),
          Effect.suspend(() => (gone.has(id) ? Effect.sync(() => gone.delete(id)) : Effect.ignore(storage.release(id, owner))))
        )
        return removed
      })

    const attemptClaimed = (id: string): Effect.Effect<void, QueueStorage.StorageError> =>
      Effect.gen(function*() {
        const { envelope, meta } = yield* storage.read(id)
        if (meta.held) {
          unplan(id)
          return
        }
        const pending = meta.recipients.flatMap((r, i) => (r.status === "pending" ? [i] : []))
        if (pending.length === 0) {
          yield* storage.remove(id)
          gone.add(id)
          unplan(id)
          return
        }
        const sub = Envelope.withRecipients(envelope, pending)
        const result = yield* relay.attempt(sub, meta.attempts).pipe(
          Effect.catchCause((cause) =>
            Effect.as(
              Effect.logError("relay defect").pipe(Effect.annotateLogs({ id, cause: Cause.pretty(cause) })),
              Relay.all(sub, Reply.make(451, "4.3.0", "Error: internal delivery error"))
            )
          )
        )
        const now = yield* Clock.currentTimeMillis
        const age = now - envelope.timestamp
        const expired = age >= retry.maxAge
        const records: Array<QueueStorage.RecipientResult> = []
        const failed: Array<Bounce.FailedRecipient> = []
        const delayed: Array<Bounce.FailedRecipient> = []
        const delivered: Array<Bounce.FailedRecipient> = []
        let transientLeft = 0
        pending.forEach((index, k) => {
          const r = result.recipients[k] ?? {
            outcome: "transient" as const,
            reply: Reply.make(451, "4.3.0", "Error: no result from relay")
          }
          const recipient = envelope.recipients[index]!
          let outcome = r.outcome
          let reply = r.reply
          if (outcome === "transient" && expired) {
            outcome = "permanent"
            reply = Reply.make(reply.code + 100 >= 600 ? 554 : reply.code + 100, reply.enhanced ? "5" + reply.enhanced.slice(1) : undefined, [
              ...reply.lines.slice(0, -1),
              `${reply.lines.at(-1) ?? ""} (message expired after ${Math.round(age / hour)} hours in the queue)`
            ])
          }
          const remote = result.remote
          if (outcome === "delivered") {
            records.push({ index, status: "delivered", reply: Reply.toString(reply), remoteMta: remote })
            delivered.push({ recipient, index, reply, remote, action: "delivered" })
          } else if (outcome === "permanent") {
            records.push({ index, status: "failed", reply: Reply.toString(reply), remoteMta: remote })
            failed.push({ recipient, index, reply, remote, action: "failed" })
          } else {
            transientLeft++
            records.push({ index, status: "pending", reply: Reply.toString(reply), remoteMta: remote })
            delayed.push({ recipient, index, reply, remote, action: "delayed" })
          }
        })
        yield* Effect.logInfo("delivery", {
          id,
          attempt: meta.attempts + 1,
          delivered: delivered.length,
          deferred: transientLeft,
          bounced: failed.length,
          remote: result.remote ?? "-",
          tls: result.tls ?? "-",
          reply: Reply.toString((failed[0] ?? delayed[0] ?? delivered[0])?.reply ?? Reply.ok)
        })
        // Bounces first, then the record: a crash in between repeats a bounce, never loses one.
        const dsnOptions = { hostname: options.hostname, now, random }
        if (failed.length > 0) yield* sendDsn(Bounce.build(envelope, failed, { ...dsnOptions, kind: "failure" }), now)
        if (delivered.length > 0) yield* sendDsn(Bounce.build(envelope, delivered, { ...dsnOptions, kind: "success" }), now)
        let delayWarned = meta.delayWarned
        if (transientLeft > 0 && !delayWarned && retry.delayWarning > 0 && age >= retry.delayWarning) {
          yield* sendDsn(Bounce.build(envelope, delayed, { ...dsnOptions, kind: "delay", delayedFor: age }), now)
          delayWarned = true
        }
        if (transientLeft === 0) {
          // Nothing is left to retry: remove at once, without recording the results first. A crash
          // before the removal repeats this attempt (at least once), it never loses a recipient.
          yield* storage.remove(id)
          gone.add(id)
          unplan(id)
          return
        }
        yield* storage.recordResults(id, records)
        const attempts = meta.attempts + 1
        const nextAttemptAt = Math.min(now + retryDelay(retry, attempts), envelope.timestamp + retry.maxAge)
        yield* storage.reschedule(id, { attempts, nextAttemptAt, delayWarned })
        plan(id, Math.max(nextAttemptAt, now + 1))
      })

    /** Re-reads the storage: new messages of other processes, changed schedules, holds. */
    const resync = Effect.suspend(() => {
      const changed = new Set<string>()
      listings.add(changed)
      return storage.list().pipe(
        Effect.map((metas) => {
          const seen = new Set<string>()
          for (const m of metas) {
            seen.add(m.id)
            if (changed.has(m.id)) continue
            if (m.held) schedule.delete(m.id)
            else if (!running.has(m.id)) schedule.set(m.id, m.nextAttemptAt)
          }
          for (const id of schedule.keys()) if (!seen.has(id) && !running.has(id) && !changed.has(id)) schedule.delete(id)
        }),
        Effect.ensuring(Effect.sync(() => listings.delete(changed)))
      )
    })

    const dispatchDue = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      let earliest = Infinity
      for (const [id, at] of schedule) {
        if (running.has(id)) continue
        if (at > now) {
          earliest = Math.min(earliest, at)
          continue
        }
        if (running.size >= concurrency) break
        running.add(id)
        unplan(id)
        yield* FiberSet.run(
          fibers,
          attempt(id).pipe(
            Effect.catchCause((cause) =>
              Cause.hasInterruptsOnly(cause)
                ? Effect.void
                : Effect.gen(function*() {
                  yield* Effect.logError("attempt failed").pipe(Effect.annotateLogs({ id, cause: Cause.pretty(cause) }))
                  const t = yield* Clock.currentTimeMillis
                  plan(id, t + retry.intervals[0]!)
                })
            ),
            // the scheduler is needed again only when something waits: a
            // delivered and removed message leaves nothing behind
            Effect.ensuring(Effect.suspend(() => {
              running.delete(id)
              touch(id)
              return schedule.size > 0 ? signal : Effect.void
            }))
          )
        )
      }
      return earliest
    })

    /**
     * The time the pending timer wakes the scheduler (Infinity: none). A wake
     * is a signal, so the scheduler itself only ever waits on `wake`: no race
     * and no timer per message, a timer only when the next due time moves
     * earlier. A timer made useless by a later change just wakes it once.
     */
    let timerAt = Infinity
    const armTimer = (at: number, now: number): Effect.Effect<void> => {
      if (at >= timerAt) return Effect.void
      timerAt = at
      const fire = Effect.suspend(() => {
        if (timerAt === at) timerAt = Infinity
        return signal
      })
      return Effect.asVoid(FiberSet.run(fibers, Effect.andThen(Effect.sleep(Math.max(1, at - now)), fire)))
    }

    const scheduler = Effect.gen(function*() {
      yield* Effect.ignore(resync)
      let lastSync = yield* Clock.currentTimeMillis
      for (;;) {
        const earliest = yield* dispatchDue
        const now = yield* Clock.currentTimeMillis
        const untilPoll = lastSync + pollMs - now
        if (untilPoll <= 0) {
          yield* Effect.ignore(resync)
          lastSync = now
          continue
        }
        yield* armTimer(now + Math.max(1, Math.min(untilPoll, earliest - now)), now)
        yield* EQueue.take(wake)
      }
    })

    if (deliver) yield* Effect.forkScoped(scheduler)

    const flush = Effect.gen(function*() {
      yield* Effect.ignore(resync)
      const now = yield* Clock.currentTimeMillis
      for (const id of schedule.keys()) schedule.set(id, now)
      yield* signal
    })

    // Yields first (attempts over fast services finish within a few turns, and a
    // test clock never moves by itself), then sleeps between checks.
    const idle = Effect.gen(function*() {
      for (let turn = 0; ; turn++) {
        const now = yield* Clock.currentTimeMillis
        const due = [...schedule.values()].some((at) => at <= now)
        if (running.size === 0 && !due) return
        if (turn < 2000) yield* Effect.yieldNow
        else yield* Effect.sleep(5)
      }
    })

    return {
      queue: { enqueue },
      flush,
      retryNow: (id) =>
        Effect.gen(function*() {
          yield* storage.setHeld(id, false)
          const now = yield* Clock.currentTimeMillis
          const meta = yield* storage.meta(id)
          yield* storage.reschedule(id, { attempts: meta.attempts, nextAttemptAt: now })
          plan(id, now)
          yield* signal
        }),
      idle,
      inFlight: Effect.sync(() => [...running])
    } satisfies DurableQueue
  })

/**
 * The proxy queue (slimta's `ProxyQueue`): no storage; the relay's own
 * answer is the edge's reply, per recipient where LMTP allows. Nothing is
 * stored, so nothing is retried or bounced: the client keeps responsibility.
 */
export const proxy: Effect.Effect<Queue.Queue["Service"], never, Relay.Relay> = Effect.gen(function*() {
  const relay = yield* Relay.Relay
  return {
    enqueue: (envelope) =>
      relay.attempt(envelope, 0).pipe(
        Effect.map((r): Queue.EnqueueResult => ({ _tag: "Relayed", replies: r.recipients.map((x) => x.reply) })),
        Effect.catchCause(() => Effect.succeed<Queue.EnqueueResult>({ _tag: "Refused", reply: Reply.queueError }))
      )
  }
})
