/**
 * The workload of the disk storages' crash tests, runtime-neutral: the child
 * process (`DiskStorageCrashWriter.ts` on Node, `DenoDiskCrashWriter.ts` on
 * Deno) opens its storage and runs `run`, which writes envelopes in a loop
 * from eight concurrent fibers, saying `W <id>` once a write resolved and
 * `R <id>` once the following metadata update resolved. The parent kills it
 * with SIGKILL at a random moment and checks, with `bodyFor`, that everything
 * said is there.
 *
 * What it deliberately does not do: open the storage, make ids from the
 * clock and the runtime's randomness, or print (the writers pass those in).
 */
import { Effect } from "effect"
import * as Envelope from "../../packages/protocol/src/envelope/Envelope.ts"
import type * as QueueStorage from "../../packages/protocol/src/queue/QueueStorage.ts"

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

/**
 * Says `ready`, then writes and reschedules envelopes from eight fibers until
 * killed: `newId()` gives each id, `say` prints one line.
 */
export const run = (
  storage: QueueStorage.Service,
  newId: () => string,
  say: (line: string) => void
): Effect.Effect<void, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    say("ready")
    const worker = Effect.forever(
      Effect.gen(function*() {
        const id = newId()
        const env = Envelope.make({ id, sender: "crash@example.org", recipients: ["a@example.com", "b@example.com"], message: bodyFor(id) })
        yield* storage.write(env, { nextAttemptAt: 0 })
        say(`W ${id}`)
        yield* storage.reschedule(id, { attempts: 1, nextAttemptAt: 5 })
        say(`R ${id}`)
      })
    )
    yield* Effect.all(Array.from({ length: 8 }, () => worker), { concurrency: "unbounded" })
  })
