/**
 * The child process of DiskStorage's crash test: opens the storage in the
 * directory given as the first argument and writes envelopes in a loop from
 * eight concurrent fibers. After a write resolves it prints `W <id>`; after
 * the following metadata update resolves it prints `R <id>`. The parent kills
 * it with SIGKILL at a random moment and checks that everything printed is
 * there. `bodyFor(id)` gives the message bytes of an id, for both sides.
 *
 * Run with `node DiskStorageCrashWriter.ts <directory>` (Node 24 strips types).
 */
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as DiskStorage from "../src/DiskStorage.ts"

/** The message bytes for `id`: 1-48 000 pseudo-random 8-bit bytes derived from the id. */
export const bodyFor = (id: string): Uint8Array => {
  let h = 0x811c9dc5
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193) >>> 0
  const out = new Uint8Array(1 + (h % 48_000))
  let x = h || 1
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

const main = (directory: string) =>
  Effect.gen(function*() {
    const storage = yield* DiskStorage.make({ directory })
    process.stdout.write("ready\n")
    const worker = Effect.forever(
      Effect.gen(function*() {
        const id = Envelope.newId((n) => randomBytes(n), Date.now())
        const env = Envelope.make({ id, sender: "crash@example.org", recipients: ["a@example.com", "b@example.com"], message: bodyFor(id) })
        yield* storage.write(env, { nextAttemptAt: 0 })
        process.stdout.write(`W ${id}\n`)
        yield* storage.reschedule(id, { attempts: 1, nextAttemptAt: 5 })
        process.stdout.write(`R ${id}\n`)
      })
    )
    yield* Effect.all(Array.from({ length: 8 }, () => worker), { concurrency: "unbounded" })
  })

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  Effect.runPromise(main(process.argv[2]!)).catch((e) => {
    process.stderr.write(`writer failed: ${String(e)}\n`)
    process.exit(1)
  })
}
