/**
 * The child process of DiskStorage's crash test: opens the storage in the
 * directory given as the first argument and runs the shared crash workload
 * (`test/scenarios/CrashWorkload.ts`): eight concurrent fibers write
 * envelopes in a loop; after a write resolves it prints `W <id>`; after the
 * following metadata update resolves it prints `R <id>`. The parent kills it
 * with SIGKILL at a random moment and checks that everything printed is
 * there. `bodyFor(id)` gives the message bytes of an id, for both sides.
 *
 * Run with `node DiskStorageCrashWriter.ts <directory>` (Node 24 strips types).
 */
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as CrashWorkload from "../../../test/scenarios/CrashWorkload.ts"
import * as DiskStorage from "../src/DiskStorage.ts"

/** The message bytes for `id` (see `CrashWorkload.bodyFor`). */
export const bodyFor = CrashWorkload.bodyFor

const main = (directory: string) =>
  Effect.gen(function*() {
    const storage = yield* DiskStorage.make({ directory })
    yield* CrashWorkload.run(
      storage,
      () => Envelope.newId((n) => randomBytes(n), Date.now()),
      (line) => process.stdout.write(`${line}\n`)
    )
  })

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  Effect.runPromise(main(process.argv[2]!)).catch((e) => {
    process.stderr.write(`writer failed: ${String(e)}\n`)
    process.exit(1)
  })
}
