/**
 * The conformance suite every `QueueStorage` passes: call
 * `suite(name, layer, options)` from an implementation's test file.
 *
 * Each test builds `layer` afresh (`Effect.provide(…, { local: true })`), so
 * a persistent layer sees what earlier tests left behind: the tests only look
 * at the ids they wrote themselves. With `options.reopen` (a layer that opens
 * the SAME storage again, e.g. the same directory) the suite also checks that
 * everything survives a reopen and that two open instances share messages,
 * leases and changes, as two processes would.
 *
 * It uses no runtime API (only `effect`, vitest and web globals), so Deno can
 * run it too.
 */
import { Effect, Fiber, Layer, Stream } from "effect"
import { describe, expect, it } from "vitest"
import * as Envelope from "../../packages/protocol/src/envelope/Envelope.ts"
import * as QueueStorage from "../../packages/protocol/src/queue/QueueStorage.ts"

/** Options of `suite`. */
export interface SuiteOptions {
  /** A layer that opens the same storage again (persistent storages only). */
  readonly reopen?: Layer.Layer<QueueStorage.QueueStorage, unknown> | undefined
  /** Per-test timeout in ms (default: vitest's). */
  readonly timeout?: number | undefined
}

type Storage = QueueStorage.Service

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

/**
 * Runs the conformance suite against `layer`.
 *
 * @example
 * suite("memory", QueueStorage.memory)
 * suite("disk", DiskStorage.layer({ directory }), { reopen: DiskStorage.layer({ directory }) })
 */
export const suite = (
  name: string,
  layer: Layer.Layer<QueueStorage.QueueStorage, unknown>,
  options: SuiteOptions = {}
): void => {
  const using = (l: Layer.Layer<QueueStorage.QueueStorage, unknown>) => <A, E>(f: (s: Storage) => Effect.Effect<A, E>): Promise<A> =>
    Effect.runPromise(Effect.provide(Effect.flatMap(QueueStorage.QueueStorage, f), l, { local: true }))
  const run = using(layer)
  const test = (title: string, body: () => Promise<void>) => it(title, body, options.timeout)

  describe(`QueueStorage conformance: ${name}`, () => {
    test("writes and reads back an 8-bit message byte for byte, with fresh metadata", () =>
      run((s) =>
        Effect.gen(function*() {
          const env = simpleEnvelope(2)
          const before = Date.now()
          const id = yield* s.write(env, { nextAttemptAt: 1234 })
          expect(id).toBe(env.id)
          const { envelope, meta } = yield* s.read(id)
          expect(envelope.message).toEqual(env.message)
          expect(Array.from(envelope.message)).toEqual(Array.from(eightBitBody()))
          expect(envelope).toEqual(env)
          expect(meta).toEqual({
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
          expect(meta.createdAt).toBeGreaterThanOrEqual(before - 1000)
          expect(meta.createdAt).toBeLessThanOrEqual(Date.now() + 1000)
          expect(yield* s.meta(id)).toEqual(meta)
        })
      ))

    test("round-trips an envelope that sets every field, and an empty and a large message", () =>
      run((s) =>
        Effect.gen(function*() {
          const full = fullEnvelope()
          yield* s.write(full, { nextAttemptAt: 0 })
          expect((yield* s.read(full.id)).envelope).toEqual(full)
          const empty = simpleEnvelope(1, new Uint8Array(0))
          yield* s.write(empty, { nextAttemptAt: 0 })
          expect((yield* s.read(empty.id)).envelope.message.length).toBe(0)
          const bigBytes = new Uint8Array(3 * 1024 * 1024 + 17)
          for (let i = 0; i < bigBytes.length; i += 65536) bigBytes.set(random(Math.min(65536, bigBytes.length - i)), i)
          const big = simpleEnvelope(1, bigBytes)
          yield* s.write(big, { nextAttemptAt: 0 })
          const back = yield* s.read(big.id)
          expect(back.meta.size).toBe(bigBytes.length)
          expect(bytesEqual(back.envelope.message, bigBytes)).toBe(true)
        })
      ))

    test("refuses a second write of the same id, and an envelope without an id", () =>
      run((s) =>
        Effect.gen(function*() {
          const env = simpleEnvelope(1)
          yield* s.write(env, { nextAttemptAt: 0 })
          expect(yield* reasonOf(s.write(Envelope.withMessage(env, new Uint8Array([1, 2])), { nextAttemptAt: 0 }))).toBe("Conflict")
          expect((yield* s.read(env.id)).envelope.message).toEqual(env.message)
          expect(yield* reasonOf(s.write({ ...env, id: "" }, { nextAttemptAt: 0 }))).toBe("Invalid")
          expect(yield* reasonOf(s.write({ ...env, id: "../x" }, { nextAttemptAt: 0 }))).toBe("Invalid")
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
          expect(m1.recipients.map((r) => r.status)).toEqual(["pending", "delivered", "failed"])
          expect(m1.recipients[1]).toMatchObject({ reply: "250 2.0.0 Ok: queued as 123", remoteMta: "mx1.example.com" })
          expect(m1.recipients[2]).toMatchObject({ reply: "550 5.1.1 No such user" })
          expect(m1.recipients[2]!.remoteMta).toBeUndefined()
          expect(typeof m1.recipients[1]!.at).toBe("number")
          const m2 = yield* s.recordResults(id, [{ index: 0, status: "pending", reply: "451 4.7.1 Greylisted" }])
          expect(m2.recipients.map((r) => [r.status, r.reply])).toEqual([
            ["pending", "451 4.7.1 Greylisted"],
            ["delivered", "250 2.0.0 Ok: queued as 123"],
            ["failed", "550 5.1.1 No such user"]
          ])
          const back = yield* s.read(id)
          expect(back.meta).toEqual(m2)
          expect(back.envelope.recipients).toEqual(env.recipients)
          expect(yield* reasonOf(s.recordResults(id, [{ index: 3, status: "delivered", reply: undefined }]))).toBe("Invalid")
          expect(yield* reasonOf(s.recordResults(id, [{ index: -1, status: "delivered", reply: undefined }]))).toBe("Invalid")
          expect((yield* s.meta(id)).recipients).toEqual(m2.recipients)
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
          expect(m.recipients.map((r) => r.reply)).toEqual(env.recipients.map((_, i) => `250 ok ${i}`))
        })
      ))

    test("keeps attempts, the next attempt time and the delay-warned flag", () =>
      run((s) =>
        Effect.gen(function*() {
          const id = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 100 })
          const m1 = yield* s.reschedule(id, { attempts: 1, nextAttemptAt: 60_100 })
          expect([m1.attempts, m1.nextAttemptAt, m1.delayWarned]).toEqual([1, 60_100, false])
          const m2 = yield* s.reschedule(id, { attempts: 2, nextAttemptAt: 300_100, delayWarned: true })
          expect([m2.attempts, m2.nextAttemptAt, m2.delayWarned]).toEqual([2, 300_100, true])
          const m3 = yield* s.reschedule(id, { attempts: 3, nextAttemptAt: 900_100 })
          expect([m3.attempts, m3.nextAttemptAt, m3.delayWarned]).toEqual([3, 900_100, true])
          expect(yield* s.meta(id)).toEqual(m3)
          expect(yield* reasonOf(s.reschedule(id, { attempts: -1, nextAttemptAt: 0 }))).toBe("Invalid")
        })
      ))

    test("holds and releases a message", () =>
      run((s) =>
        Effect.gen(function*() {
          const id = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
          expect((yield* s.setHeld(id, true)).held).toBe(true)
          expect((yield* s.meta(id)).held).toBe(true)
          expect((yield* s.setHeld(id, false)).held).toBe(false)
          expect((yield* s.read(id)).meta.held).toBe(false)
        })
      ))

    test("removes a message", () =>
      run((s) =>
        Effect.gen(function*() {
          const keep = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
          const gone = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
          yield* s.remove(gone)
          expect(yield* reasonOf(s.read(gone))).toBe("NotFound")
          expect(yield* reasonOf(s.meta(gone))).toBe("NotFound")
          expect(yield* reasonOf(s.remove(gone))).toBe("NotFound")
          const ids = (yield* s.list()).map((m) => m.id)
          expect(ids).toContain(keep)
          expect(ids).not.toContain(gone)
        })
      ))

    test("lists metadata sorted by id, with sizes and senders", () =>
      run((s) =>
        Effect.gen(function*() {
          const envs = [simpleEnvelope(1), simpleEnvelope(2), simpleEnvelope(3, new Uint8Array([65, 13, 10]))]
          for (const e of envs) yield* s.write(e, { nextAttemptAt: 42 })
          const all = yield* s.list()
          const ids = all.map((m) => m.id)
          expect(ids).toEqual([...ids].sort())
          const mine = all.filter((m) => envs.some((e) => e.id === m.id))
          expect(mine.map((m) => [m.id, m.size, m.sender, m.recipients.length, m.nextAttemptAt])).toEqual(
            [...envs].sort((a, b) => (a.id < b.id ? -1 : 1)).map((e) => [e.id, e.message.length, e.sender, e.recipients.length, 42])
          )
        })
      ))

    test("answers NotFound for an unknown or unsafe id, in every operation", () =>
      run((s) =>
        Effect.gen(function*() {
          for (const id of [freshId(), "../../etc/passwd", "", "a/b", "x".repeat(129)]) {
            expect(yield* reasonOf(s.read(id))).toBe("NotFound")
            expect(yield* reasonOf(s.meta(id))).toBe("NotFound")
            expect(yield* reasonOf(s.recordResults(id, []))).toBe("NotFound")
            expect(yield* reasonOf(s.reschedule(id, { attempts: 1, nextAttemptAt: 0 }))).toBe("NotFound")
            expect(yield* reasonOf(s.setHeld(id, true))).toBe("NotFound")
            expect(yield* reasonOf(s.claim(id, "a", 0, 1000))).toBe("NotFound")
            expect(yield* reasonOf(s.release(id, "a"))).toBe("NotFound")
            expect(yield* reasonOf(s.remove(id))).toBe("NotFound")
          }
        })
      ))

    test("leases: claim, conflict, renewal, expiry and release", () =>
      run((s) =>
        Effect.gen(function*() {
          const id = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
          expect(yield* s.claim(id, "queue-a", 1_000, 500)).toBe(true)
          expect((yield* s.meta(id)).lease).toEqual({ owner: "queue-a", until: 1_500 })
          expect(yield* s.claim(id, "queue-b", 1_200, 500)).toBe(false)
          expect((yield* s.meta(id)).lease).toEqual({ owner: "queue-a", until: 1_500 })
          expect(yield* s.claim(id, "queue-a", 1_400, 500)).toBe(true)
          expect((yield* s.meta(id)).lease).toEqual({ owner: "queue-a", until: 1_900 })
          expect(yield* s.claim(id, "queue-b", 1_899, 500)).toBe(false)
          // expired: taken over
          expect(yield* s.claim(id, "queue-b", 1_900, 500)).toBe(true)
          expect((yield* s.meta(id)).lease).toEqual({ owner: "queue-b", until: 2_400 })
          expect(yield* reasonOf(s.release(id, "queue-a"))).toBe("Conflict")
          yield* s.release(id, "queue-b")
          expect((yield* s.meta(id)).lease).toBeUndefined()
          yield* s.release(id, "queue-b")
          expect(yield* s.claim(id, "queue-a", 2_000, 500)).toBe(true)
          expect(yield* reasonOf(s.claim(id, "queue-a", 2_000, 0))).toBe("Invalid")
          expect(yield* reasonOf(s.claim(id, "", 2_000, 10))).toBe("Invalid")
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
          expect(wins.filter((w) => w).length).toBe(1)
          const winner = `owner-${wins.indexOf(true)}`
          expect((yield* s.meta(id)).lease).toEqual({ owner: winner, until: 65_000 })
        })
      ))

    test("100 concurrent writes are all durable, distinct and byte-exact", () =>
      run((s) =>
        Effect.gen(function*() {
          const envs = Array.from({ length: 100 }, (_, i) => simpleEnvelope(1 + (i % 3), Uint8Array.from([...random(200 + i), 0x0d, 0x0a])))
          const ids = yield* Effect.forEach(envs, (e) => s.write(e, { nextAttemptAt: 7 }), { concurrency: "unbounded" })
          expect(new Set(ids).size).toBe(100)
          expect(ids).toEqual(envs.map((e) => e.id))
          const listed = new Set((yield* s.list()).map((m) => m.id))
          for (const id of ids) expect(listed.has(id)).toBe(true)
          const back = yield* Effect.forEach(ids, (id) => s.read(id), { concurrency: 16 })
          back.forEach((b, i) => expect(b.envelope).toEqual(envs[i]))
        })
      ))

    test("changes: a diff against the known ids, and poll as a stream", () =>
      run((s) =>
        Effect.gen(function*() {
          const a = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
          const known = new Set((yield* s.list()).map((m) => m.id))
          expect(yield* s.changes(known)).toEqual({ added: [], removed: [] })
          const b = yield* s.write(simpleEnvelope(1), { nextAttemptAt: 0 })
          yield* s.remove(a)
          const c = yield* s.changes(known)
          expect(c.added.map((m) => m.id)).toEqual([b])
          expect(c.removed).toEqual([a])
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
          expect(emitted.flatMap((x) => x.added.map((m) => m.id))).toEqual([d])
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
        expect(after.envelope).toEqual(env)
        expect(after.meta).toEqual(before)
        expect(after.meta).toMatchObject({ attempts: 4, nextAttemptAt: 99_000, delayWarned: true, held: true, lease: { owner: "queue-a", until: 6_000 } })
        expect(after.meta.recipients[2]).toMatchObject({ status: "failed", reply: "550 5.1.1 No such user", remoteMta: "mx.example.net" })
        const removed = await runAgain((s) => Effect.as(s.remove(env.id), env.id))
        expect(await run((s) => reasonOf(s.read(removed)))).toBe("NotFound")
      })

      test("two open instances share messages, leases and changes (like two processes)", () =>
        run((a) =>
          Effect.provide(
            Effect.gen(function*() {
              const b = yield* QueueStorage.QueueStorage
              const known = new Set((yield* a.list()).map((m) => m.id))
              const env = simpleEnvelope(2)
              yield* b.write(env, { nextAttemptAt: 0 })
              const c = yield* a.changes(known)
              expect(c.added.map((m) => m.id)).toEqual([env.id])
              expect((yield* a.read(env.id)).envelope).toEqual(env)
              expect(yield* a.claim(env.id, "process-a", 1_000, 1_000)).toBe(true)
              expect(yield* b.claim(env.id, "process-b", 1_500, 1_000)).toBe(false)
              const wins = yield* Effect.all(
                [a.claim(env.id, "process-a2", 2_000, 1_000), b.claim(env.id, "process-b2", 2_000, 1_000)],
                { concurrency: "unbounded" }
              )
              expect(wins.filter((w) => w).length).toBe(1)
              yield* Effect.all(
                [
                  a.recordResults(env.id, [{ index: 0, status: "delivered", reply: "250 a" }]),
                  b.recordResults(env.id, [{ index: 1, status: "delivered", reply: "250 b" }])
                ],
                { concurrency: "unbounded" }
              )
              expect((yield* a.meta(env.id)).recipients.map((r) => r.reply)).toEqual(["250 a", "250 b"])
              yield* b.remove(env.id)
              expect(yield* reasonOf(a.read(env.id))).toBe("NotFound")
            }),
            reopen,
            { local: true }
          )
        ))
    }
  })
}

const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
