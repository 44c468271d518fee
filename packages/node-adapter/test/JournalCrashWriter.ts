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
 * Run with `node JournalCrashWriter.ts <directory> [segmentBytes]` (Node 24 strips types).
 */
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as CrashWorkload from "../../../test/scenarios/CrashWorkload.ts"
import * as JournalStorage from "../src/JournalStorage.ts"

/** The message bytes for `id` (see `CrashWorkload.bodyFor`). */
export const bodyFor = CrashWorkload.bodyFor

const main = (directory: string, segmentBytes: number | undefined) =>
  Effect.scoped(
    Effect.gen(function*() {
      const storage = yield* JournalStorage.make({ directory, segmentBytes })
      yield* CrashWorkload.run(
        storage,
        () => Envelope.newId((n) => randomBytes(n), Date.now()),
        (line) => process.stdout.write(`${line}\n`)
      )
    })
  )

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const segmentBytes = process.argv[3] === undefined ? undefined : Number(process.argv[3])
  Effect.runPromise(main(process.argv[2]!, segmentBytes)).catch((e) => {
    process.stderr.write(`writer failed: ${String(e)}\n`)
    process.exit(1)
  })
}
