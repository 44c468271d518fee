/**
 * Run by Node (type-stripped) from Storage.deno.ts, to check that
 * `@mailroom/node`'s DiskStorage and `DenoDisk` read each other's queues:
 *
 * - `read-and-hold <dir> <id>`: reads the message, prints its bytes,
 *   recipients and metadata as JSON, then holds it;
 * - `write <dir>`: writes a message and prints its id.
 */
import { randomBytes } from "node:crypto"
import { Effect } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as DiskStorage from "@mailroom/node/DiskStorage"

const [command, directory, id] = process.argv.slice(2)

const program = Effect.gen(function*() {
  const s = yield* DiskStorage.make({ directory: directory! })
  if (command === "read-and-hold") {
    const { envelope, meta } = yield* s.read(id!)
    yield* s.setHeld(id!, true)
    return JSON.stringify({ message: Array.from(envelope.message), recipients: envelope.recipients, meta })
  }
  const newId = Envelope.newId((n) => randomBytes(n), Date.now())
  yield* s.write(
    Envelope.make({
      id: newId,
      sender: "node@example.org",
      recipients: ["a@example.com", "b@example.com"],
      message: new TextEncoder().encode("Subject: from node\r\n\r\ncaf\u00e9\r\n")
    }),
    { nextAttemptAt: 0 }
  )
  return newId
})

Effect.runPromise(program).then(
  (out) => process.stdout.write(`${out}\n`),
  (e: unknown) => {
    process.stderr.write(`${String(e)}\n`)
    process.exitCode = 1
  }
)
