/**
 * The child process of DenoDisk's crash test: opens the storage in the
 * directory given as the first argument and runs the shared crash workload
 * (`test/scenarios/CrashWorkload.ts`): eight concurrent fibers write
 * envelopes in a loop, printing `W <id>` once a write resolved and `R <id>`
 * once the following metadata update resolved. The parent kills it with
 * SIGKILL at a random moment and checks that everything printed is there.
 * `bodyFor(id)` gives the message bytes of an id, for both sides.
 *
 * Run with `deno run --allow-all DenoDiskCrashWriter.ts <directory>`.
 */
import { Effect } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as CrashWorkload from "../../../test/scenarios/CrashWorkload.ts"
import * as DenoDisk from "../src/DenoDisk.ts"

/** The message bytes for `id` (see `CrashWorkload.bodyFor`). */
export const bodyFor = CrashWorkload.bodyFor

const encoder = new TextEncoder()
const say = (line: string) => Deno.stdout.writeSync(encoder.encode(`${line}\n`))

const main = (directory: string) =>
  Effect.gen(function*() {
    const storage = yield* DenoDisk.make({ directory })
    yield* CrashWorkload.run(storage, () => Envelope.newId((n) => crypto.getRandomValues(new Uint8Array(n)), Date.now()), say)
  })

if (import.meta.main) {
  Effect.runPromise(main(Deno.args[0]!)).catch((e) => {
    Deno.stderr.writeSync(encoder.encode(`writer failed: ${String(e)}\n`))
    Deno.exit(1)
  })
}
