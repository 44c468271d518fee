/**
 * The child process of DenoJournal's crash test: opens the journal in the
 * directory given as the first argument (optionally with a segment size as
 * the second, so that the test also crosses rotations and compaction) and
 * runs the shared crash workload (`test/scenarios/CrashWorkload.ts`): eight
 * concurrent fibers write envelopes in a loop, printing `W <id>` once a
 * write resolved and `R <id>` once the following reschedule resolved. The
 * parent kills it with SIGKILL at a random moment and checks that
 * everything printed is there. `bodyFor(id)` gives the message bytes of an
 * id, for both sides.
 *
 * Run with `deno run --allow-all DenoJournalCrashWriter.ts <directory> [segmentBytes]`.
 */
import { Effect } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as CrashWorkload from "../../../test/scenarios/CrashWorkload.ts"
import * as DenoJournal from "../src/DenoJournal.ts"

/** The message bytes for `id` (see `CrashWorkload.bodyFor`). */
export const bodyFor = CrashWorkload.bodyFor

const encoder = new TextEncoder()
const say = (line: string) => {
  const bytes = encoder.encode(`${line}\n`)
  for (let o = 0; o < bytes.length;) o += Deno.stdout.writeSync(bytes.subarray(o))
}

const main = (directory: string, segmentBytes: number | undefined) =>
  Effect.scoped(
    Effect.gen(function*() {
      const storage = yield* DenoJournal.make({ directory, segmentBytes })
      yield* CrashWorkload.run(storage, () => Envelope.newId((n) => crypto.getRandomValues(new Uint8Array(n)), Date.now()), say)
    })
  )

if (import.meta.main) {
  const segmentBytes = Deno.args[1] === undefined ? undefined : Number(Deno.args[1])
  Effect.runPromise(main(Deno.args[0]!, segmentBytes)).catch((e) => {
    Deno.stderr.writeSync(encoder.encode(`writer failed: ${String(e)}\n`))
    Deno.exit(1)
  })
}
