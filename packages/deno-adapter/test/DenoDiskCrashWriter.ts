/**
 * The child process of DenoDisk's crash test: opens the storage in the
 * directory given as the first argument and writes envelopes in a loop from
 * eight concurrent fibers, printing `W <id>` once a write resolved and
 * `R <id>` once the following metadata update resolved. The parent kills it
 * with SIGKILL at a random moment and checks that everything printed is
 * there. `bodyFor(id)` gives the message bytes of an id, for both sides.
 *
 * Run with `deno run --allow-all DenoDiskCrashWriter.ts <directory>`.
 */
import { Effect } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as DenoDisk from "../src/DenoDisk.ts"

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

const encoder = new TextEncoder()
const say = (line: string) => Deno.stdout.writeSync(encoder.encode(`${line}\n`))

const main = (directory: string) =>
  Effect.gen(function*() {
    const storage = yield* DenoDisk.make({ directory })
    say("ready")
    const worker = Effect.forever(
      Effect.gen(function*() {
        const id = Envelope.newId((n) => crypto.getRandomValues(new Uint8Array(n)), Date.now())
        const env = Envelope.make({ id, sender: "crash@example.org", recipients: ["a@example.com", "b@example.com"], message: bodyFor(id) })
        yield* storage.write(env, { nextAttemptAt: 0 })
        say(`W ${id}`)
        yield* storage.reschedule(id, { attempts: 1, nextAttemptAt: 5 })
        say(`R ${id}`)
      })
    )
    yield* Effect.all(Array.from({ length: 8 }, () => worker), { concurrency: "unbounded" })
  })

if (import.meta.main) {
  Effect.runPromise(main(Deno.args[0]!)).catch((e) => {
    Deno.stderr.writeSync(encoder.encode(`writer failed: ${String(e)}\n`))
    Deno.exit(1)
  })
}
