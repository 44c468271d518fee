/**
 * The conformance scenarios every `QueueStorage` passes, runtime-neutral:
 * `queueStorageScenarios(name, layer, options)` gives a `ScenarioSuite` that
 * vitest (`test/conformance/QueueStorageSuite.ts`'s `suite`) and `Deno.test`
 * (packages/deno-adapter/test) register alike.
 *
 * Each scenario builds `layer` afresh (`Effect.provide(…, { local: true })`),
 * so a persistent layer sees what earlier scenarios left behind: they only
 * look at the ids they wrote themselves. With `options.reopen` (a layer that
 * opens the SAME storage again, e.g. the same directory) the suite also
 * checks that everything survives a reopen and (unless `options.shared` is
 * false) that two open instances share messages, leases and changes, as two
 * processes would.
 *
 * What it deliberately does not do: crash recovery (`kill -9` in the middle
 * of a write needs a child process of the storage's own runtime; each
 * storage's own tests do it) or any runtime API.
 */
import { Effect, Fiber, type Layer, Stream } from "effect"
import * as Envelope from "../../packages/protocol/src/envelope/Envelope.ts"
import * as QueueStorage from "../../packages/protocol/src/queue/QueueStorage.ts"
import * as Assert from "./Assert.ts"
import type { Scenario, ScenarioSuite } from "./Scenario.ts"

/** Options of `queueStorageScenarios`. */
export interface SuiteOptions {
  /** A layer that opens the same storage again (persistent storages only). */
  readonly reopen?: Layer.Layer<QueueStorage.QueueStorage, unknown> | undefined
  /** Per-scenario timeout in ms (default: the runner's). */
  readonly timeout?: number | undefined
  /**
   * Whether two open instances may share the storage, as two processes
   * would (default true). `false` for a single-owner storage (the journal):
   * the "two open instances share…" scenario is skipped.
   */
  readonly shared?: boolean | undefined
}

type Storage = QueueStorage.Service

/** Orders rows by their first cell, an id (as `list` orders its metadata). */
const byFirst = (x: ReadonlyArray<unknown>, y: ReadonlyArray<unknown>): number =>
  String(x[0]) < String(y[0]) ? -1 : String(x[0]) > String(y[0]) ? 1 : 0

const random = (n: number): Uint8Array => globalThis.crypto.getRandomValues(new Uint8Array(n))

/** A fresh envelope id. */
export const freshId = (): string => Envelope.newId(random, Date.now())

/** Every byte value 0-255, then CRLF-terminated 8-bit text, then NULs: what a body must survive. */
export const eightBitBody = (): Uint8Array => {
  const head = new TextEncoder().encode("Subject: =?utf-8?q?caf=C3=A9?=\r\nX-8bit: caf\u00e9 \u2603\r\n\r\n")
  const all = Uint8Array.from({ length: 256 }, (_, i) => i)
  const tail = Uint8Array.of(0x0d, 0x0a, 0x2e, 0x0d, 0x0a, 0xff, 0xfe, 0x00, 0x00, 0x0d, 0x0a)
  const out = new Uint8Array(head.length + all.length + tail.length)
  out.set(head, 0)
  out.set(all, head.length)
  out.set(tail, head.length + all.length)
  return out
}

/** A simple envelope with `n` recipients and the 8-bit body. */
export const simpleEnvelope = (n = 3, message: Uint8Array = eightBitBody()): Envelope.Envelope =>
  Envelope.make({
    id: freshId(),
    sender: "sender@example.org",
    recipients: Array.from({ length: n }, (_, i) => `rcpt${i}@example.com`),
    message,
    timestamp: 1_795_324_232_000
  })

/** An envelope with every field set to something other than its default. */
export const fullEnvelope = (): Envelope.Envelope =>
  Envelope.make({
    id: freshId(),
    sender: "b\u00f6b@ex\u00e4mple.org",
    recipients: ["one@example.com", "zw\u00f6i@example.net", "three@example.org"],
    message: eightBitBody(),
    client: {
      address: "2001:db8::25",
      port: 54321,
      reverseName: "client.example.org",
      ehlo: "client.example.org",
      protocol: "UTF8SMTPSA",
      tls: { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256 },
      auth: "bob"
    },
    receiver: "mx.example.com",
    timestamp: 1_795_324_232_123,
    dsn: {
      ret: "HDRS",
      envid: "QQ314159",
      notify: [["SUCCESS", "FAILURE"], ["NEVER"], undefined],
      orcpt: [{ addrType: "rfc822", address: "one@example.com" }, undefined, { addrType: "utf-8", address: "three@example.org" }]
    },
    body: "8BITMIME",
    smtputf8: true
  })

/** The reason the operation failed with, or `"succeeded"`. */
const reasonOf = <A>(eff: Effect.Effect<A, QueueStorage.StorageError>): Effect.Effect<QueueStorage.StorageErrorReason | "succeeded"> =>
  Effect.match(eff, { onFailure: (e) => e.reason, onSuccess: () => "succeeded" as const })

const byId = (a: { readonly id: string }, b: { readonly id: string }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/**
 * The conformance scenarios for `layer`.
 *
 * @example
 * register(queueStorageScenarios("memory", QueueStorage.memory))
 * register(queueStorageScenarios("disk", DiskStorage.layer({ directory }), { reopen: DiskStorage.layer({ directory }) }))
 */
export const queueStorageScenarios = (
  name: string,
  layer: Layer.Layer<QueueStorage.QueueStorage, unknown>,
  options: SuiteOptions = {}
): ScenarioSuite => {
  const using = (l: Layer.Layer<QueueStorage.QueueStorage, unknown>) => <A, E>(f: (s: Storage) => Effect.Effect<A, E>): Promise<A> =>
    Effect.runPromise(Effect.provide(Effect.flatMap(QueueStorage.QueueStorage, f), l, { local: true }))
  const run = using(layer)
  const scenarios: Array<Scenario> = []
  const test = (title: string, body: () => Promise<unknown>) =>
    scenarios.push({ name: title, run: async () => void (await body()), timeoutMs: options.timeout })

  test("writes and reads back an 8-bit message byte for byte, with fresh metadata", () =>
    run((s) =>
      Effect.gen(function*() {
        const env = simpleEnvelope(2)
        const before = Date.now()
        const id = yield* s.write(env, { nextAttemptAt: 1234 })
        Assert.equal(id, env.id)
        const { envelope, meta } = yield* s.read(id)
        Assert.bytesEqual(envelope.message, env.message)
        Assert.bytesEqual(envelope.message, eightBitBody())
        Assert.equal(envelope, env)
        Assert.equal(meta, {
          id,
          createdAt: meta.createdAt,
          attempts: 0,
          nextAttemptAt: 1234,
          held: false,
          delayWarned: false,
          recipients: [{ status: "pending", reply: undefined }, { status: "pending", reply: undefined }],
          lease: undefined,
          size: env.message.length,
          sender: "sender@example.org"
        })
        Assert.atLeast(meta.createdAt, before - 1000)
        Assert.atMost(meta.createdAt, Date.now() + 1000)
        Assert.equal(yield* s.meta(id), meta)
      })
    ))

  test("round-trips an envelope that sets every field, and an empty and a large message", () =>
    run((s) =>
      Effect.gen(function*() {
        const full = fullEnvelope()
        yield* s.write(full, { nextAttemptAt: 0 })
        Assert.equal((yield* s.read(full.id)).envelope, full)
        const empty = simpleEnvelope(1, new Uint8Array(0))
        yield* s.write(empty, { nextAttemptAt: 0 })
        Assert.equal((yield* s.read(empty.id)).envelope.message.length, 0)
        const bigBytes = new Uint8Array(3 * 1024 * 1024 + 17)
        for (let i = 0; i < bigBytes.length; i += 65536) bigBytes.set(random(Math.min(65536, bigBytes.length - i)), i)
        const big = simpleEnvelope(1, bigBytes)
        yield* s.write(big, { nextAttemptAt: 0 })
        const back = yield* s.read(big.id)
        Assert.equal(back.meta.size, bigBytes.length)
        Assert.bytesEqual(back.envelope.message, bigBytes)
      })
    ))

  test("refuses a second write of the same id, and an envelope without an id", () =>
    run((s) =>
      Effect.gen(function*() {
        const env = simpleEnvelope(1)
        yield* s.write(env, { nextAttemptAt: 0 })
        Assert.equal(yield* reasonOf(s.write(Envelope.withMessage(env, new Uint8Array([1, 2])), { nextAttemptAt: 0 })), "Conflict")
        Assert.bytesEqual((yield* s.read(env.id)).envelope.message, env.message)
        Assert.equal(yield* reasonOf(s.write({ ...env, id: "" }, { nextAttemptAt: 0 })), "Invalid")
        Assert.equal(yield* reasonOf(s.write({ ...env, id: "../x" }, { nextAttemptAt: 0 })), "Invalid")
      })
    ))

  test("records per-recipient progress and keeps the envelope as written", () =>
    run((s) =>
      Effect.gen(function*() {
        const env = simpleEnvelope(3)
        const id = yield* s.write(env, { nextAttemptAt: 0 })
        const m1 = yield* s.recordResults(id, [
          { index: 1, status: "delivered", reply: "250 2.0.0 Ok: queued as 123", remoteMta: "mx1.example.com" },
          { index: 2, status: "failed", reply: "550 5.1.1 No such user" }
        ])
        Assert.equal(m1.recipients.map((r) => r.status), ["pending", "delivered", "failed"])
        Assert.matches(m1.recipients[1], { reply: "250 2.0.0 Ok: queued as 123", remoteMta: "mx1.example.com" })
        Assert.matches(m1.recipients[2], { reply: "550 5.1.1 No such user" })
        Assert.equal(m1.recipients[2]!.remoteMta, undefined)
        Assert.equal(typeof m1.recipients[1]!.at, "number")
        const m2 = yield* s.recordResults(id, [{ index: 0, status: "pending", reply: "451 4.7.1 Greylisted" }])
        Assert.equal(m2.recipients.map((r) => [r.status, r.reply]), [
          ["pending", "451 4.7.1 Greylisted"],
          ["delivered", "250 2.0.0 Ok: queued as 123"],
          ["failed", "550 5.1.1 No such user"]
        ])
        const back = yield* s.read(id)
        Assert.equal(back.meta, m2)
        Assert.equal(back.envelope.recipients, env.recipients)
        Assert.equal(yield* reasonOf(s.recordResults(id, [{ index: 3, status: "delivered", reply: undefined }])), "Invalid")
        Assert.equal(yield* reasonOf(s.recordResults(id, [{ index: -1, status: "delivered", reply: undefined }])), "Invalid")
        Assert.equal((yield* s.meta(id)).recipients, m2.recipients)
      })
    ))

  test("concurrent metadata updates of one message are all kept (atomic read-modify-write)", () =>
    run((s) =>
      Effect.gen(function*() {
        const env = simpleEnvelope(16)
        const id = yield* s.write(env, { nextAttemptAt: 0 })
        yield* Effect.forEach(
          env.recipients,
          (_, index) => s.recordResults(id, [{ index, status: "delivered", reply: `250 ok ${index}` }]),
          { concurrency: "unbounded" }
        )
        const m = yield* s.meta(id)
        Assert.equal(m.recipients.map((r) => r.reply), env.recipients.map((_, i) => `250 ok ${i}`))
      })
    ))

  test("keeps attempts, the next attempt time and the delay-warned flag", () =>
    run((s) =>
      Effect.gen(function*() {
        const id = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 100 })
        const m1 = yield* s.reschedule(id, { attempts: 1, nextAttemptAt: 60_100 })
        Assert.equal([m1.attempts, m1.nextAttemptAt, m1.delayWarned], [1, 60_100, false])
        const m2 = yield* s.reschedule(id, { attempts: 2, nextAttemptAt: 300_100, delayWarned: true })
        Assert.equal([m2.attempts, m2.nextAttemptAt, m2.delayWarned], [2, 300_100, true])
        const m3 = yield* s.reschedule(id, { attempts: 3, nextAttemptAt: 900_100 })
        Assert.equal([m3.attempts, m3.nextAttemptAt, m3.delayWarned], [3, 900_100, true])
        Assert.equal(yield* s.meta(id), m3)
        Assert.equal(yield* reasonOf(s.reschedule(id, { attempts: -1, nextAttemptAt: 0 })), "Invalid")
      })
    ))

  test("holds and releases a message", () =>
    run((s) =>
      Effect.gen(function*() {
        const id = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
        Assert.equal((yield* s.setHeld(id, true)).held, true)
        Assert.equal((yield* s.meta(id)).held, true)
        Assert.equal((yield* s.setHeld(id, false)).held, false)
        Assert.equal((yield* s.read(id)).meta.held, false)
      })
    ))

  test("removes a message", () =>
    run((s) =>
      Effect.gen(function*() {
        const keep = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
        const gone = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
        yield* s.remove(gone)
        Assert.equal(yield* reasonOf(s.read(gone)), "NotFound")
        Assert.equal(yield* reasonOf(s.meta(gone)), "NotFound")
        Assert.equal(yield* reasonOf(s.remove(gone)), "NotFound")
        const ids = (yield* s.list()).map((m) => m.id)
        Assert.ok(ids.includes(keep), "the kept message is listed")
        Assert.ok(!ids.includes(gone), "the removed message is not listed")
      })
    ))

  test("lists metadata sorted by id, with sizes and senders", () =>
    run((s) =>
      Effect.gen(function*() {
        const envs = [simpleEnvelope(1), simpleEnvelope(2), simpleEnvelope(3, new Uint8Array([65, 13, 10]))]
        for (const e of envs) yield* s.write(e, { nextAttemptAt: 42 })
        const all = yield* s.list()
        const ids = all.map((m) => m.id)
        Assert.equal(ids, [...ids].sort())
        const mine = all.filter((m) => envs.some((e) => e.id === m.id))
        Assert.equal(
          mine.map((m) => [m.id, m.size, m.sender, m.recipients.length, m.nextAttemptAt]),
          [...envs].sort(byId).map((e) => [e.id, e.message.length, e.sender, e.recipients.length, 42])
        )
      })
    ))

  test("answers NotFound for an unknown or unsafe id, in every operation", () =>
    run((s) =>
      Effect.gen(function*() {
        for (const id of [freshId(), "../../etc/passwd", "", "a/b", "x".repeat(129)]) {
          Assert.equal(yield* reasonOf(s.read(id)), "NotFound", `read ${id}`)
          Assert.equal(yield* reasonOf(s.meta(id)), "NotFound", `meta ${id}`)
          Assert.equal(yield* reasonOf(s.recordResults(id, [])), "NotFound", `recordResults ${id}`)
          Assert.equal(yield* reasonOf(s.reschedule(id, { attempts: 1, nextAttemptAt: 0 })), "NotFound", `reschedule ${id}`)
          Assert.equal(yield* reasonOf(s.setHeld(id, true)), "NotFound", `setHeld ${id}`)
          Assert.equal(yield* reasonOf(s.claim(id, "a", 0, 1000)), "NotFound", `claim ${id}`)
          Assert.equal(yield* reasonOf(s.release(id, "a")), "NotFound", `release ${id}`)
          Assert.equal(yield* reasonOf(s.remove(id)), "NotFound", `remove ${id}`)
        }
      })
    ))

  test("leases: claim, conflict, renewal, expiry and release", () =>
    run((s) =>
      Effect.gen(function*() {
        const id = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
        Assert.equal(yield* s.claim(id, "queue-a", 1_000, 500), true)
        Assert.equal((yield* s.meta(id)).lease, { owner: "queue-a", until: 1_500 })
        Assert.equal(yield* s.claim(id, "queue-b", 1_200, 500), false)
        Assert.equal((yield* s.meta(id)).lease, { owner: "queue-a", until: 1_500 })
        Assert.equal(yield* s.claim(id, "queue-a", 1_400, 500), true)
        Assert.equal((yield* s.meta(id)).lease, { owner: "queue-a", until: 1_900 })
        Assert.equal(yield* s.claim(id, "queue-b", 1_899, 500), false)
        // expired: taken over
        Assert.equal(yield* s.claim(id, "queue-b", 1_900, 500), true)
        Assert.equal((yield* s.meta(id)).lease, { owner: "queue-b", until: 2_400 })
        Assert.equal(yield* reasonOf(s.release(id, "queue-a")), "Conflict")
        yield* s.release(id, "queue-b")
        Assert.equal((yield* s.meta(id)).lease, undefined)
        yield* s.release(id, "queue-b")
        Assert.equal(yield* s.claim(id, "queue-a", 2_000, 500), true)
        Assert.equal(yield* reasonOf(s.claim(id, "queue-a", 2_000, 0)), "Invalid")
        Assert.equal(yield* reasonOf(s.claim(id, "", 2_000, 10)), "Invalid")
      })
    ))

  test("concurrent claims of one message: exactly one owner wins", () =>
    run((s) =>
      Effect.gen(function*() {
        const id = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
        const wins = yield* Effect.forEach(
          Array.from({ length: 12 }, (_, i) => `owner-${i}`),
          (owner) => s.claim(id, owner, 5_000, 60_000),
          { concurrency: "unbounded" }
        )
        Assert.equal(wins.filter((w) => w).length, 1)
        const winner = `owner-${wins.indexOf(true)}`
        Assert.equal((yield* s.meta(id)).lease, { owner: winner, until: 65_000 })
      })
    ))

  test("100 concurrent writes are all durable, distinct and byte-exact", () =>
    run((s) =>
      Effect.gen(function*() {
        const envs = Array.from({ length: 100 }, (_, i) => simpleEnvelope(1 + (i % 3), Uint8Array.from([...random(200 + i), 0x0d, 0x0a])))
        const ids = yield* Effect.forEach(envs, (e) => s.write(e, { nextAttemptAt: 7 }), { concurrency: "unbounded" })
        Assert.equal(new Set(ids).size, 100)
        Assert.equal(ids, envs.map((e) => e.id))
        const listed = new Set((yield* s.list()).map((m) => m.id))
        for (const id of ids) Assert.ok(listed.has(id), `${id} is listed`)
        const back = yield* Effect.forEach(ids, (id) => s.read(id), { concurrency: 16 })
        back.forEach((b, i) => Assert.equal(b.envelope, envs[i]))
      })
    ))

  test("changes: a diff against the known ids, and poll as a stream", () =>
    run((s) =>
      Effect.gen(function*() {
        const a = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
        const known = new Set((yield* s.list()).map((m) => m.id))
        Assert.equal(yield* s.changes(known), { added: [], removed: [] })
        const b = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
        yield* s.remove(a)
        const c = yield* s.changes(known)
        Assert.equal(c.added.map((m) => m.id), [b])
        Assert.equal(c.removed, [a])
        const after = new Set(known)
        after.add(b)
        after.delete(a)
        const fiber = yield* QueueStorage.poll(after, "5 millis").pipe(
          Stream.take(1),
          Stream.runCollect,
          Effect.provideService(QueueStorage.QueueStorage, s),
          Effect.forkChild
        )
        yield* Effect.sleep("20 millis")
        const d = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
        const emitted = yield* Fiber.join(fiber)
        Assert.equal(emitted.flatMap((x) => x.added.map((m) => m.id)), [d])
      })
    ))

  const reopen = options.reopen
  if (reopen !== undefined) {
    const runAgain = using(reopen)

    test("everything survives a reopen", async () => {
      const env = fullEnvelope()
      const before = await run((s) =>
        Effect.gen(function*() {
          yield* s.write(env, { nextAttemptAt: 10 })
          yield* s.recordResults(env.id, [{ index: 2, status: "failed", reply: "550 5.1.1 No such user", remoteMta: "mx.example.net" }])
          yield* s.reschedule(env.id, { attempts: 4, nextAttemptAt: 99_000, delayWarned: true })
          yield* s.setHeld(env.id, true)
          yield* s.claim(env.id, "queue-a", 1_000, 5_000)
          return yield* s.meta(env.id)
        })
      )
      const after = await runAgain((s) => s.read(env.id))
      Assert.equal(after.envelope, env)
      Assert.equal(after.meta, before)
      Assert.matches(after.meta, { attempts: 4, nextAttemptAt: 99_000, delayWarned: true, held: true, lease: { owner: "queue-a", until: 6_000 } })
      Assert.matches(after.meta.recipients[2], { status: "failed", reply: "550 5.1.1 No such user", remoteMta: "mx.example.net" })
      const removed = await runAgain((s) => Effect.as(s.remove(env.id), env.id))
      Assert.equal(await run((s) => reasonOf(s.read(removed))), "NotFound")
    })

    if (options.shared !== false) {
      test("two open instances share messages, leases and changes (like two processes)", () =>
        run((a) =>
          Effect.provide(
            Effect.gen(function*() {
              const b = yield* QueueStorage.QueueStorage
              const known = new Set((yield* a.list()).map((m) => m.id))
              const env = simpleEnvelope(2)
              yield* b.write(env, { nextAttemptAt: 0 })
              const c = yield* a.changes(known)
              Assert.equal(c.added.map((m) => m.id), [env.id])
              Assert.equal((yield* a.read(env.id)).envelope, env)
              Assert.equal(yield* a.claim(env.id, "process-a", 1_000, 1_000), true)
              Assert.equal(yield* b.claim(env.id, "process-b", 1_500, 1_000), false)
              const wins = yield* Effect.all(
                [a.claim(env.id, "process-a2", 2_000, 1_000), b.claim(env.id, "process-b2", 2_000, 1_000)],
                { concurrency: "unbounded" }
              )
              Assert.equal(wins.filter((w) => w).length, 1)
              yield* Effect.all(
                [
                  a.recordResults(env.id, [{ index: 0, status: "delivered", reply: "250 a" }]),
                  b.recordResults(env.id, [{ index: 1, status: "delivered", reply: "250 b" }])
                ],
                { concurrency: "unbounded" }
              )
              Assert.equal((yield* a.meta(env.id)).recipients.map((r) => r.reply), ["250 a", "250 b"])
              yield* b.remove(env.id)
              Assert.equal(yield* reasonOf(a.read(env.id)), "NotFound")
            }),
            reopen,
            { local: true }
          )
        ))

      // A storage may keep what it listed (the disk storages index records older than 2 s, by
      // inode and times): every change the other instance makes must still show in the next listing.
      test("a listing shows every change another instance made since the last one, even right after it", () =>
        run((a) =>
          Effect.provide(
            Effect.gen(function*() {
              const b = yield* QueueStorage.QueueStorage
              const envs = [simpleEnvelope(1), simpleEnvelope(1), simpleEnvelope(1)]
              for (const e of envs) yield* b.write(e, { nextAttemptAt: 10 })
              const [held, moved, gone] = envs.map((e) => e.id) as [string, string, string]
              const mine = (all: ReadonlyArray<QueueStorage.Meta>) =>
                all.filter((m) => envs.some((e) => e.id === m.id) || m.id === added.id)
              const added = simpleEnvelope(1)
              // old enough to be indexed, then listed twice (the second from the index)
              yield* Effect.sleep("2200 millis")
              const first = mine(yield* a.list())
              Assert.equal(mine(yield* a.list()), first)
              Assert.equal(first.map((m) => [m.id, m.held, m.attempts, m.nextAttemptAt]), envs.map((e) => [e.id, false, 0, 10]).sort(byFirst))
              yield* b.setHeld(held, true)
              yield* b.reschedule(moved, { attempts: 3, nextAttemptAt: 77, delayWarned: true })
              yield* b.remove(gone)
              yield* b.write(added, { nextAttemptAt: 5 })
              const second = mine(yield* a.list())
              Assert.equal(
                second.map((m) => [m.id, m.held, m.attempts, m.nextAttemptAt, m.delayWarned]),
                [
                  [held, true, 0, 10, false],
                  [moved, false, 3, 77, true],
                  [added.id, false, 0, 5, false]
                ].sort(byFirst)
              )
              // changes in quick succession, each followed at once by a listing
              for (const at of [78, 79, 80]) {
                yield* b.reschedule(moved, { attempts: 4, nextAttemptAt: at, delayWarned: true })
                Assert.equal((yield* a.list()).find((m) => m.id === moved)?.nextAttemptAt, at)
              }
              yield* b.setHeld(held, false)
              Assert.equal((yield* a.list()).find((m) => m.id === held)?.held, false)
            }),
            reopen,
            { local: true }
          )
        ))
    }
  }

  return { name: `QueueStorage conformance: ${name}`, scenarios }
}
