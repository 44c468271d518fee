/**
 * The `mailroom` process: wires `Cli.run` to the real process (argv, standard
 * streams, files, the OS host name, this package's version, the clock,
 * randomness, and the queue storage a config names) and sets the exit code.
 * `serve.ts` is imported only when `serve` runs and `DiskStorage.ts` or
 * `JournalStorage.ts` only when a `queue` command opens the queue, so
 * `--help`, `--version` and `check-config` load nothing of the server.
 *
 * A journal queue has one owner process: while a server runs on it, the
 * queue commands fail, naming the owner's pid (stop the server, or use a
 * disk queue to steer a live queue).
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Config from "@mailroom/protocol/config/Config"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as DiskLayout from "@mailroom/protocol/queue/DiskLayout"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import * as Cli from "./Cli.ts"
import * as ScopedQueue from "./ScopedQueue.ts"

/**
 * Opens an existing disk queue (never creates one: a mistyped `--config`
 * must not leave an empty queue behind). Opening runs `DiskStorage`'s
 * recovery, which only removes leftovers of processes that are gone, so it
 * is safe while a server runs on the same directory.
 */
const openDisk = (directory: string): Effect.Effect<Cli.QueueHandle, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const dir = path.resolve(directory)
    const missing = (detail: string) => QueueStorage.error("NotFound", "open", undefined, `no queue in ${dir}: ${detail}`)
    const stat = yield* Effect.promise(() => fs.stat(dir).catch(() => undefined))
    if (stat === undefined) return yield* Effect.fail(missing("the directory does not exist (a server creates it on its first start)"))
    if (!stat.isDirectory()) return yield* Effect.fail(missing("not a directory"))
    const layout = yield* Effect.promise(() => fs.access(path.join(dir, "layout.json")).then(() => true, () => false))
    if (!layout) return yield* Effect.fail(missing("it has no layout.json (a server creates it on its first start)"))
    const DiskStorage = yield* Effect.promise(() => import("../DiskStorage.ts"))
    const storage = yield* DiskStorage.make({ directory: dir })
    const envelope = (id: string): Effect.Effect<Envelope.Envelope, QueueStorage.StorageError> =>
      Effect.gen(function*() {
        if (!QueueStorage.isValidId(id)) return yield* Effect.fail(QueueStorage.error("NotFound", "envelope", id, "not a valid message id"))
        // DiskStorage's layout: the record of a message is meta/<id>.json (see DiskLayout).
        const file = DiskLayout.paths(dir, path.join).record(id)
        const text = yield* Effect.tryPromise({
          try: () => fs.readFile(file, "utf8"),
          catch: (e) =>
            QueueStorage.error((e as { code?: unknown }).code === "ENOENT" ? "NotFound" : "Io", "envelope", id, String(e), e)
        })
        const r = DiskLayout.decodeEnvelope("envelope", id, file, text)
        return Result.isFailure(r) ? yield* Effect.fail(r.failure) : r.success
      })
    return { location: dir, storage, envelope }
  })

/**
 * Opens an existing journal queue (never creates one) until
 * `ScopedQueue.closeAll`. Fails with the journal's `Io` error naming the
 * owner's pid while a server owns it.
 */
const openJournal = (directory: string): Effect.Effect<Cli.QueueHandle, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const dir = path.resolve(directory)
    const missing = (detail: string) => QueueStorage.error("NotFound", "open", undefined, `no queue in ${dir}: ${detail}`)
    const stat = yield* Effect.promise(() => fs.stat(dir).catch(() => undefined))
    if (stat === undefined) return yield* Effect.fail(missing("the directory does not exist (a server creates it on its first start)"))
    if (!stat.isDirectory()) return yield* Effect.fail(missing("not a directory"))
    const layout = yield* Effect.promise(() => fs.access(path.join(dir, "layout.json")).then(() => true, () => false))
    if (!layout) return yield* Effect.fail(missing("it has no layout.json (a server creates it on its first start)"))
    const JournalStorage = yield* Effect.promise(() => import("../JournalStorage.ts"))
    return yield* ScopedQueue.open(dir, JournalStorage.make({ directory: dir }))
  })

const openQueue = (settings: Config.StorageSettings): Effect.Effect<Cli.QueueHandle, QueueStorage.StorageError> => {
  switch (settings.type) {
    case "disk":
      return openDisk(settings.path)
    case "journal":
      return openJournal(settings.path)
    case "redis":
      return Effect.fail(
        QueueStorage.error("Io", "open", undefined, "queue.storage.type: redis storage is not available yet in this version")
      )
    case "memory":
      return Effect.fail(QueueStorage.error("Invalid", "open", undefined, "queue commands need persistent storage (queue.storage.type: memory)"))
    case "kv":
      return Effect.fail(QueueStorage.error("Io", "open", undefined, "queue.storage.type: kv (Deno KV) storage runs on Deno only; run the queue commands with the Deno entry point"))
  }
}

const readStdinLine = (prompt: string): Promise<string | undefined> =>
  new Promise((resolve, reject) => {
    const stdin = process.stdin
    if (stdin.isTTY) process.stderr.write(prompt)
    let buffer = ""
    const finish = (line: string | undefined) => {
      stdin.off("data", onData).off("end", onEnd).off("error", reject)
      stdin.pause()
      stdin.destroy()
      resolve(line)
    }
    const onData = (chunk: string) => {
      buffer += chunk
      const lf = buffer.indexOf("\n")
      if (lf >= 0) finish(buffer.slice(0, lf).replace(/\r$/, ""))
    }
    const onEnd = () => finish(buffer === "" ? undefined : buffer.replace(/\r$/, ""))
    stdin.setEncoding("utf8")
    stdin.on("data", onData).on("end", onEnd).on("error", reject)
  })

const io: Cli.Io = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
  readFile: (file) => fs.readFile(file, "utf8"),
  hostname: () => os.hostname(),
  version: () =>
    (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version,
  serve: async (config, configFile) => {
    const { run } = await import("../serve.ts")
    return run(config, configFile)
  },
  openQueue,
  stdoutBytes: (bytes) => void process.stdout.write(bytes),
  readStdinLine,
  randomBytes: (n) => new Uint8Array(randomBytes(n)),
  now: () => Date.now()
}

// `mailroom queue list | head`: a reader that goes away ends the command quietly.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code !== "EPIPE") throw e
  process.exit(process.exitCode ?? 0)
})

Cli.run(process.argv.slice(2), io).then(
  async (code) => {
    await ScopedQueue.closeAll()
    process.exitCode = code
  },
  async (e: unknown) => {
    await ScopedQueue.closeAll().catch(() => undefined)
    process.stderr.write(`mailroom: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    process.exitCode = 1
  }
)
