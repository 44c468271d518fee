/**
 * The child process of JournalStorage's crash test: opens the journal in
 * the directory given as the first argument (optionally with a segment size
 * as the second, so that the test also crosses rotations and compaction)
 * and runs the shared crash workload (`test/scenarios/CrashWorkload.ts`):
 * eight concurrent fibers write envelopes in a loop, print `W <id>` once a
 * write resolved and `R <id>` once the following reschedule resolved. The
 * parent kills it with SIGKILL at a random moment and checks that
 * everything printed is there.
 *
 * With `idle <count>` after the segment size it writes `count` envelopes
 * one at a time instead (small ones: each batch gets the zero prefill),
 * says `W <id>` for each, then `ready`, and waits to be killed: the segment
 * is left with its prefilled zeros after the last frame.
 *
 * Run with `node JournalCrashWriter.ts <directory> [segmentBytes [idle <count>]]` (Node 24 strips types).
 */
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import type * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as CrashWorkload from "../../../test/scenarios/CrashWorkload.ts"
import * as JournalStorage from "../src/JournalStorage.ts"

/** The message bytes for `id` (see `CrashWorkload.bodyFor`). */
export const bodyFor = CrashWorkload.bodyFor

const newId = () => Envelope.newId((n) => randomBytes(n), Date.now())
const say = (line: string) => process.stdout.write(`${line}\n`)

/** Writes `count` small envelopes one at a time (body: the first 2,000 bytes at most of `bodyFor`), then says `ready` and waits. */
const idle = (storage: QueueStorage.Service, count: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < count; i++) {
      const id = newId()
      const message = bodyFor(id).subarray(0, 2_000)
      yield* storage.write(Envelope.make({ id, sender: "crash@example.org", recipients: ["a@example.com"], message }), { nextAttemptAt: 0 })
      say(`W ${id}`)
    }
    say("ready")
    return yield* Effect.never
  })

const main = (directory: string, segmentBytes: number | undefined, idleCount: number | undefined) =>
  Effect.scoped(
    Effect.gen(function*() {
      const storage = yield* JournalStorage.make({ directory, segmentBytes })
      if (idleCount !== undefined) return yield* idle(storage, idleCount)
      yield* CrashWorkload.run(storage, newId, say)
    })
  )

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const segmentBytes = process.argv[3] === undefined ? undefined : Number(process.argv[3])
  const idleCount = process.argv[4] === "idle" ? Number(process.argv[5]) : undefined
  Effect.runPromise(main(process.argv[2]!, segmentBytes, idleCount)).catch((e) => {
    process.stderr.write(`writer failed: ${String(e)}\n`)
    process.exit(1)
  })
}
