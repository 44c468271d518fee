/**
 * Run by Node (type-stripped) from DenoJournal.deno.ts, to check that
 * `@mailroom/node`'s JournalStorage and `DenoJournal` read each other's
 * journals (one process at a time: a journal has one owner):
 *
 * - `read-and-hold <dir> <id>`: reads the message, prints its bytes,
 *   recipients and metadata as JSON, then holds it;
 * - `write <dir>`: writes a message and prints its id;
 * - `crash-write <dir>`: writes a message, prints its id and exits at once,
 *   without closing the journal (as a crash would: the segment keeps the
 *   zeros prefilled after its last frame, and the lock stays behind);
 * - `list <dir>`: prints the ids and what replay logged at `Warn` or above,
 *   as JSON;
 * - `hold <dir>`: opens the journal, prints `ready`, and keeps it open
 *   until its standard input ends (the ownership test).
 */
import { randomBytes } from "node:crypto"
import { Effect, Logger } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as JournalStorage from "@mailroom/node/JournalStorage"

const [command, directory, id] = process.argv.slice(2)
const warnings: Array<string> = []
const collector = Logger.make((o) => {
  if (o.logLevel === "Warn" || o.logLevel === "Error" || o.logLevel === "Fatal") {
    warnings.push(`${o.logLevel}: ${Array.isArray(o.message) ? o.message.join(" ") : String(o.message)}`)
  }
})

const program = Effect.scoped(Effect.gen(function*() {
  const s = yield* JournalStorage.make({ directory: directory! })
  if (command === "read-and-hold") {
    const { envelope, meta } = yield* s.read(id!)
    yield* s.setHeld(id!, true)
    return JSON.stringify({ message: Array.from(envelope.message), recipients: envelope.recipients, meta })
  }
  if (command === "list") {
    const ids = (yield* s.list()).map((m) => m.id)
    return JSON.stringify({ ids, warnings })
  }
  if (command === "hold") {
    process.stdout.write(`ready ${process.pid}\n`)
    yield* Effect.promise(() => new Promise<void>((resolve) => process.stdin.on("end", resolve).on("close", resolve).resume()))
    return "released"
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
  if (command === "crash-write") {
    process.stdout.write(`${newId}\n`, () => process.exit(0))
    return yield* Effect.never
  }
  return newId
}))

// `list` keeps what is logged out of its JSON; the other commands log as usual
Effect.runPromise(command === "list" ? Effect.provide(program, Logger.layer([collector])) : program).then(
  (out) => process.stdout.write(`${out}\n`),
  (e: unknown) => {
    process.stderr.write(`${String(e)}\n`)
    process.exitCode = 1
  }
)
