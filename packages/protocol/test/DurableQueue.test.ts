import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as TestClock from "effect/testing/TestClock"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as DurableQueue from "../src/queue/DurableQueue.ts"
import * as QueueStorage from "../src/queue/QueueStorage.ts"
import * as Relay from "../src/relay/Relay.ts"
import * as Reply from "../src/smtp/Reply.ts"

const minute = 60_000
const hour = 60 * minute
const enc = (s: string) => new TextEncoder().encode(s)
const dec = (b: Uint8Array) => new TextDecoder().decode(b)

let counter = 0
const envelope = (recipients: ReadonlyArray<string>, sender = "alice@a.test", extra: Partial<Envelope.Envelope> = {}) =>
  Envelope.make({
    id: `m${String(++counter).padStart(6, "0")}`,
    sender,
    recipients,
    message: enc("Subject: test\r\nMessage-Id: <x@a.test>\r\n\r\nhello\r\n"),
    timestamp: 0,
    ...extra
  })

/** A relay whose answer per recipient is scripted by a function of (recipient, attempt). */
const scripted = (answer: (recipient: string, attempts: number) => Reply.Reply) =>
  Effect.gen(function*() {
    const calls = yield* Ref.make<ReadonlyArray<{ readonly recipients: ReadonlyArray<string>; readonly sender: string; readonly message: string }>>([])
    const relay: Relay.Relay["Service"] = {
      attempt: (env, attempts) =>
        Effect.gen(function*() {
          yield* Ref.update(calls, (c) => [...c, { recipients: env.recipients, sender: env.sender, message: dec(env.message) }])
          return {
            recipients: env.recipients.map((r) => {
              const reply = answer(r, attempts)
              return { outcome: Relay.outcomeOf(reply), reply }
            }),
            remote: "mx.b.test",
            tls: undefined
          }
        })
    }
    return { relay, calls }
  })

const ok = Reply.make(250, "2.0.0", "Ok")
const later = Reply.make(451, "4.4.1", "Try again later")
const never = Reply.make(550, "5.1.1", "No such user")

const setup = (answer: (recipient: string, attempts: number) => Reply.Reply, retry?: Partial<DurableQueue.RetryOptions>) =>
  Effect.gen(function*() {
    const { relay, calls } = yield* scripted(answer)
    const storage = yield* QueueStorage.makeMemory
    const q = yield* DurableQueue.make({
      hostname: "mx.test",
      retry,
      random: (n) => new Uint8Array(n).fill(1),
      pollMs: hour
    }).pipe(
      Effect.provide(Layer.mergeAll(Layer.succeed(Relay.Relay, relay), Layer.succeed(QueueStorage.QueueStorage, storage)))
    )
    return { q, storage, calls }
  })

/**
 * Memory storage whose `list` can be made slow: while `slow` is set when a
 * listing starts, it takes its snapshot, resolves `listing`, and returns only
 * once `gate` is resolved (a DiskStorage listing reading many records).
 */
const slowListing = (memory: QueueStorage.Service, extra: Partial<QueueStorage.Service> = {}) =>
  Effect.gen(function*() {
    const listing = yield* Deferred.make<void>()
    const gate = yield* Deferred.make<void>()
    const control = { slow: false, listing, gate }
    const storage: QueueStorage.Service = {
      ...memory,
      ...extra,
      list: () =>
        Effect.gen(function*() {
          const gated = control.slow
          const snapshot = yield* memory.list()
          if (gated) {
            yield* Deferred.succeed(listing, undefined)
            yield* Deferred.await(gate)
          }
          return snapshot
        })
    }
    return { storage, control }
  })

describe("DurableQueue", () => {
  it.effect("stores before answering, delivers at once, then removes", () =>
    Effect.gen(function*() {
      const { q, storage, calls } = yield* setup(() => ok)
      const result = yield* q.queue.enqueue(envelope(["bob@b.test"]))
      expect(result._tag).toBe("Queued")
      yield* q.idle
      expect((yield* Ref.get(calls)).map((c) => c.recipients)).toEqual([["bob@b.test"]])
      expect(yield* storage.list()).toEqual([])
    }))

  it.effect("mixed results: records the delivered, bounces the rejected, retries the deferred only", () =>
    Effect.gen(function*() {
      const answer = (r: string, attempts: number) =>
        r.startsWith("ok") ? ok : r.startsWith("no") ? never : attempts === 0 ? later : ok
      const { q, storage, calls } = yield* setup(answer)
      const result = yield* q.queue.enqueue(envelope(["ok@b.test", "later@b.test", "no@b.test"]))
      expect(result._tag).toBe("Queued")
      yield* q.idle
      // first attempt: all three; the DSN for no@ goes to the sender from <>
      const metas = yield* storage.list()
      const original = metas.find((m) => m.sender === "alice@a.test")!
      expect(original.recipients.map((r) => r.status)).toEqual(["delivered", "pending", "failed"])
      expect(original.attempts).toBe(1)
      expect(original.nextAttemptAt).toBe(1 * minute)
      const bounce = metas.find((m) => m.sender === "")
      expect(bounce).toBeDefined()
      const dsn = yield* storage.read(bounce!.id)
      expect(dsn.envelope.recipients).toEqual(["alice@a.test"])
      const text = dec(dsn.envelope.message)
      expect(text).toContain("Final-Recipient: rfc822; no@b.test")
      expect(text).toContain("Action: failed")
      expect(text).toContain("Status: 5.1.1")
      // the retry comes one minute later and carries only the deferred recipient
      yield* TestClock.adjust(1 * minute)
      yield* q.idle
      const sent = (yield* Ref.get(calls)).filter((c) => c.sender === "alice@a.test").map((c) => c.recipients)
      expect(sent).toEqual([["ok@b.test", "later@b.test", "no@b.test"], ["later@b.test"]])
      expect((yield* storage.list()).some((m) => m.id === original.id)).toBe(false)
    }))

  it.effect("backs off, warns once after the delay time, and bounces when the message expires", () =>
    Effect.gen(function*() {
      const { q, storage, calls } = yield* setup((r) => (r === "alice@a.test" ? ok : later), {
        intervals: [minute, 10 * minute],
        maxInterval: hour,
        maxAge: 6 * hour,
        delayWarning: 2 * hour
      })
      yield* q.queue.enqueue(envelope(["slow@b.test"]))
      yield* q.idle
      for (let i = 0; i < 12; i++) {
        yield* TestClock.adjust(hour)
        yield* q.idle
      }
      const attempts = (yield* Ref.get(calls)).filter((c) => c.recipients[0] === "slow@b.test").length
      // 0, +1m, +10m, then hourly until 6h: a bounded number of attempts
      expect(attempts).toBeGreaterThanOrEqual(7)
      expect(attempts).toBeLessThanOrEqual(9)
      const dsns = (yield* Ref.get(calls)).filter((c) => c.sender === "")
      const delay = dsns.filter((c) => c.message.includes("Action: delayed"))
      const failure = dsns.filter((c) => c.message.includes("Action: failed"))
      expect(delay.length).toBe(1)
      expect(failure.length).toBe(1)
      expect(failure[0]!.message).toMatch(/expired/)
      expect(yield* storage.list()).toEqual([])
    }))

  it.effect("never bounces a bounce", () =>
    Effect.gen(function*() {
      const { q, storage, calls } = yield* setup(() => never)
      yield* q.queue.enqueue(envelope(["no@b.test"], ""))
      yield* q.idle
      expect((yield* Ref.get(calls)).length).toBe(1)
      expect(yield* storage.list()).toEqual([])
    }))

  it.effect("holds are honoured and retryNow releases them", () =>
    Effect.gen(function*() {
      const { q, storage, calls } = yield* setup((_, attempts) => (attempts === 0 ? later : ok))
      const r = yield* q.queue.enqueue(envelope(["b@b.test"]))
      yield* q.idle
      const id = r._tag === "Queued" ? r.ids[0]! : ""
      yield* storage.setHeld(id, true)
      yield* q.flush
      yield* TestClock.adjust(2 * hour)
      yield* q.idle
      expect((yield* Ref.get(calls)).length).toBe(1)
      yield* q.retryNow(id)
      yield* q.idle
      expect((yield* Ref.get(calls)).length).toBe(2)
      expect(yield* storage.list()).toEqual([])
    }))

  it.effect("a new queue over the same storage picks up what the old one held", () =>
    Effect.gen(function*() {
      const storage = yield* QueueStorage.makeMemory
      const provide = (relay: Relay.Relay["Service"]) =>
        Effect.provide(Layer.mergeAll(Layer.succeed(Relay.Relay, relay), Layer.succeed(QueueStorage.QueueStorage, storage)))
      const first = yield* scripted(() => later)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const q = yield* DurableQueue.make({ hostname: "mx.test", pollMs: hour }).pipe(provide(first.relay))
          yield* q.queue.enqueue(envelope(["b@b.test"]))
          yield* q.idle
        })
      )
      const second = yield* scripted(() => ok)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const q = yield* DurableQueue.make({ hostname: "mx.test", pollMs: hour }).pipe(provide(second.relay))
          yield* TestClock.adjust(1 * minute)
          yield* q.idle
        })
      )
      expect((yield* Ref.get(second.calls)).map((c) => c.recipients)).toEqual([["b@b.test"]])
      expect(yield* storage.list()).toEqual([])
    }))

  it.effect("a message written while a resync lists the storage is attempted at once, not at the next poll", () =>
    Effect.gen(function*() {
      const { relay, calls } = yield* scripted(() => ok)
      const { storage, control } = yield* slowListing(yield* QueueStorage.makeMemory)
      const q = yield* DurableQueue.make({ hostname: "mx.test", pollMs: minute }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Relay.Relay, relay), Layer.succeed(QueueStorage.QueueStorage, storage)))
      )
      // one message delivered and removed before the listing, one written during it
      const first = envelope(["early@b.test"])
      yield* q.queue.enqueue(first)
      yield* q.idle
      control.slow = true
      yield* TestClock.adjust(minute)
      yield* Deferred.await(control.listing)
      control.slow = false
      const during = envelope(["during@b.test"])
      expect((yield* q.queue.enqueue(during))._tag).toBe("Queued")
      yield* Deferred.succeed(control.gate, undefined)
      // delivered at once, not a poll (a minute) later
      yield* q.idle
      expect((yield* Ref.get(calls)).map((c) => c.recipients)).toEqual([["early@b.test"], ["during@b.test"]])
      expect(yield* storage.list()).toEqual([])
    }))

  it.effect("a message removed while a resync lists the storage is not scheduled again", () =>
    Effect.gen(function*() {
      const memory = yield* QueueStorage.makeMemory
      const relayGate = yield* Deferred.make<void>()
      const claims: Array<string> = []
      const { storage, control } = yield* slowListing(memory, {
        claim: (id, owner, now, leaseMs) => Effect.suspend(() => (claims.push(id), memory.claim(id, owner, now, leaseMs)))
      })
      const relay: Relay.Relay["Service"] = {
        attempt: (env) =>
          Effect.gen(function*() {
            if (env.recipients[0] === "slow@b.test") yield* Deferred.await(relayGate)
            return { recipients: env.recipients.map(() => ({ outcome: "delivered" as const, reply: ok })), remote: "mx.b.test", tls: undefined }
          })
      }
      const q = yield* DurableQueue.make({ hostname: "mx.test", pollMs: hour }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Relay.Relay, relay), Layer.succeed(QueueStorage.QueueStorage, storage)))
      )
      // the scheduler is past its first listing once a message has been delivered
      yield* q.queue.enqueue(envelope(["warm@b.test"]))
      yield* q.idle
      // a message whose delivery is under way when a flush lists the storage
      const m = envelope(["slow@b.test"])
      yield* q.queue.enqueue(m)
      while ((yield* q.inFlight).length === 0) yield* Effect.yieldNow
      control.slow = true
      const flushing = yield* Effect.forkChild(q.flush)
      yield* Deferred.await(control.listing)
      control.slow = false
      // it is delivered and removed while the listing (which still has it) waits
      yield* Deferred.succeed(relayGate, undefined)
      yield* q.idle
      expect(yield* memory.list()).toEqual([])
      yield* Deferred.succeed(control.gate, undefined)
      yield* Fiber.join(flushing)
      yield* q.idle
      yield* TestClock.adjust(2 * minute)
      yield* q.idle
      // claimed once each: the stale listing did not bring the removed message back
      expect(claims).toEqual([claims[0], m.id])
      expect(yield* q.inFlight).toEqual([])
    }))

  it.effect("answers 451 when storage fails and stores nothing", () =>
    Effect.gen(function*() {
      const { relay } = yield* scripted(() => ok)
      const memory = yield* QueueStorage.makeMemory
      const failing: QueueStorage.Service = {
        ...memory,
        write: () => Effect.fail(QueueStorage.error("Full", "write", undefined, "no space left on device"))
      }
      const q = yield* DurableQueue.make({ hostname: "mx.test" }).pipe(
        Effect.provide(Layer.mergeAll(Layer.succeed(Relay.Relay, relay), Layer.succeed(QueueStorage.QueueStorage, failing)))
      )
      const r = yield* q.queue.enqueue(envelope(["b@b.test"]))
      expect(r).toEqual({ _tag: "Refused", reply: Reply.insufficientStorage })
      expect(yield* memory.list()).toEqual([])
    }))
})
