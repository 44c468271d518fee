import fc from "fast-check"
import { Effect, Result } from "effect"
import { describe, expect, it } from "vitest"
import { fullEnvelope, suite } from "../../../test/conformance/QueueStorageSuite.ts"
import * as QueueStorage from "../src/queue/QueueStorage.ts"
import * as Reply from "../src/smtp/Reply.ts"

suite("memory", QueueStorage.memory)

describe("QueueStorage.memory", () => {
  it("each build of the layer is a separate, empty storage", async () => {
    const env = fullEnvelope()
    const first = await Effect.runPromise(
      Effect.provide(Effect.flatMap(QueueStorage.QueueStorage, (s) => Effect.andThen(s.write(env, { nextAttemptAt: 0 }), s.list())), QueueStorage.memory)
    )
    expect(first.map((m) => m.id)).toEqual([env.id])
    const second = await Effect.runPromise(Effect.provide(Effect.flatMap(QueueStorage.QueueStorage, (s) => s.list()), QueueStorage.memory))
    expect(second).toEqual([])
  })

  it("copies message bytes in and out", async () => {
    const env = fullEnvelope()
    const original = env.message.slice()
    const back = await Effect.runPromise(
      Effect.provide(
        Effect.flatMap(QueueStorage.QueueStorage, (s) =>
          Effect.gen(function*() {
            yield* s.write(env, { nextAttemptAt: 0 })
            env.message[0] = 0x00
            const r1 = yield* s.read(env.id)
            r1.envelope.message[1] = 0x00
            return yield* s.read(env.id)
          })),
        QueueStorage.memory
      )
    )
    expect(back.envelope.message).toEqual(original)
  })
})

describe("QueueStorage.toReply", () => {
  it("answers 452 4.3.1 when full and 451 4.3.0 otherwise", () => {
    const e = (reason: QueueStorage.StorageErrorReason) => QueueStorage.error(reason, "write", "x", "test")
    expect(Reply.encodeString(QueueStorage.toReply(e("Full")))).toBe("452 4.3.1 Insufficient system storage\r\n")
    for (const r of ["Io", "Corrupt", "Conflict", "Invalid", "NotFound"] as const) {
      expect(Reply.encodeString(QueueStorage.toReply(e(r)))).toBe("451 4.3.0 Error: queue file write error\r\n")
    }
  })

  it("says what failed in the error message", () => {
    expect(QueueStorage.error("Full", "write", "01abc", "no space left on device").message).toBe(
      "Full: QueueStorage.write (01abc): no space left on device"
    )
  })
})

describe("the storage record, version 1", () => {
  const env = fullEnvelope()
  const meta: QueueStorage.Meta = {
    ...QueueStorage.initialMeta(env, 1000, 2000),
    attempts: 2,
    held: true,
    recipients: [
      { status: "delivered", reply: "250 2.0.0 Ok", remoteMta: "mx.example.com", at: 1500 },
      { status: "failed", reply: "550 5.1.1 No such user", at: 1600 },
      { status: "pending", reply: undefined }
    ],
    lease: { owner: "q1", until: 9000 }
  }

  it("round-trips through JSON text, without the message bytes in the record", () => {
    const text = JSON.stringify(QueueStorage.encodeRecord(env, meta))
    expect(text).not.toContain("\"message\"")
    const parsed = JSON.parse(text)
    expect(parsed.v).toBe(1)
    expect(parsed.meta.recipients[2]).toEqual({ status: "pending", reply: null, remoteMta: null, at: null })
    const back = QueueStorage.decodeRecord(parsed, env.message)
    expect(Result.isSuccess(back) && back.success).toEqual({ envelope: env, meta })
    const noBody = QueueStorage.decodeRecord(parsed)
    expect(Result.isSuccess(noBody) && noBody.success.meta).toEqual(meta)
  })

  it("refuses a bad record with a Corrupt error naming the field", () => {
    const good = JSON.parse(JSON.stringify(QueueStorage.encodeRecord(env, meta)))
    const cases: Array<[string, (r: any) => void, string]> = [
      ["version", (r) => (r.v = 2), "unsupported record version 2"],
      ["unknown key", (r) => (r.extra = 1), "extra: unknown key"],
      ["attempts", (r) => (r.meta.attempts = -1), "meta.attempts"],
      ["status", (r) => (r.meta.recipients[0].status = "sent"), "meta.recipients[0].status"],
      ["count", (r) => r.meta.recipients.pop(), "meta.recipients has 2 entries for 3 recipients"],
      ["id", (r) => (r.meta.id = "other"), "differs from envelope.id"],
      ["envelope", (r) => (r.envelope.client.port = 70000), "envelope.client.port"],
      ["lease", (r) => (r.meta.lease = { owner: 1 }), "meta.lease"]
    ]
    for (const [, mutate, expected] of cases) {
      const r = structuredClone(good)
      mutate(r)
      const out = QueueStorage.decodeRecord(r, env.message)
      expect(Result.isFailure(out)).toBe(true)
      if (Result.isFailure(out)) {
        expect(out.failure.reason).toBe("Corrupt")
        expect(out.failure.detail).toContain(expected)
      }
    }
    const short = QueueStorage.decodeRecord(good, env.message.subarray(1))
    expect(Result.isFailure(short) && short.failure.detail).toContain("bytes, the record says")
  })

  it("never throws on arbitrary JSON", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (u) => {
        const out = QueueStorage.decodeRecord(u)
        expect(Result.isFailure(out)).toBe(true)
      })
    )
    const good = QueueStorage.encodeRecord(env, meta)
    fc.assert(
      fc.property(fc.constantFrom("v", "envelope", "meta"), fc.jsonValue(), (key, value) => {
        const out = QueueStorage.decodeRecord({ ...good, [key]: value })
        expect(Result.isResult(out)).toBe(true)
      })
    )
  })
})
