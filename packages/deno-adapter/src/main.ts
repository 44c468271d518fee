/**
 * The `mailroom` command on Deno:
 *
 * ```sh
 * deno run --allow-all packages/deno-adapter/src/main.ts serve --config mailroom.yaml
 * ```
 *
 * The command table, argument parsing, config loading and validation
 * (`Config.parse`, errors that name the key) and the `check-config`,
 * `queue`, `hash-password` commands are the runtime-neutral `Cli.run` of
 * `@mailroom/node`'s CLI (it needs only `node:util`'s `parseArgs`, which
 * Deno provides); this file hands it Deno's standard streams, files, host
 * name and random bytes, opens queues with `DenoDisk`, `DenoJournal` or
 * `DenoKvStorage`, and runs `serve` with Deno's layers (`./serve.ts`),
 * loaded only when `serve` runs.
 *
 * A journal queue has one owner process: while a server runs on it the
 * queue commands are refused (`queue.storage: …/owner.lock is held by pid
 * N, which is running: …`); a command that opened it closes it (pending
 * leases written, ownership given back) before the process exits.
 *
 * Needs `--allow-all` (net for listeners, read/write for the queue, run for
 * the pipe relay, env for the minimal child environment, sys for the host
 * name) and `--unstable-kv` only when Deno KV is used.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as DiskLayout from "@mailroom/protocol/queue/DiskLayout"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import type * as Config from "@mailroom/protocol/config/Config"
import * as Cli from "@mailroom/node/cli/Cli"
import * as ScopedQueue from "@mailroom/node/cli/ScopedQueue"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const writeAll = (stream: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void => {
  for (let o = 0; o < bytes.length;) o += stream.writeSync(bytes.subarray(o))
}

const absolute = (p: string): string => (p.startsWith("/") ? p : `${Deno.cwd()}/${p}`).replace(/\/+$/, "") || "/"

/** Opens an existing disk queue (never creates one), like the Node command does. */
const openDisk = (directory: string): Effect.Effect<Cli.QueueHandle, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const dir = absolute(directory)
    const missing = (detail: string) => QueueStorage.error("NotFound", "open", undefined, `no queue in ${dir}: ${detail}`)
    const stat = yield* Effect.promise(() => Deno.stat(dir).catch(() => undefined))
    if (stat === undefined) return yield* Effect.fail(missing("the directory does not exist (a server creates it on its first start)"))
    if (!stat.isDirectory) return yield* Effect.fail(missing("not a directory"))
    const layout = yield* Effect.promise(() => Deno.stat(`${dir}/layout.json`).then(() => true, () => false))
    if (!layout) return yield* Effect.fail(missing("it has no layout.json (a server creates it on its first start)"))
    const DenoDisk = yield* Effect.promise(() => import("./DenoDisk.ts"))
    const storage = yield* DenoDisk.make({ directory: dir })
    const envelope = (id: string): Effect.Effect<Envelope.Envelope, QueueStorage.StorageError> =>
      Effect.gen(function*() {
        if (!QueueStorage.isValidId(id)) return yield* Effect.fail(QueueStorage.error("NotFound", "envelope", id, "not a valid message id"))
        const file = `${dir}/meta/${id}.json`
        const text = yield* Effect.tryPromise({
          try: () => Deno.readTextFile(file),
          catch: (e) => QueueStorage.error(e instanceof Deno.errors.NotFound ? "NotFound" : "Io", "envelope", id, String(e), e)
        })
        const r = DiskLayout.decodeEnvelope("envelope", id, file, text)
        return Result.isFailure(r) ? yield* Effect.fail(r.failure) : r.success
      })
    return { location: dir, storage, envelope }
  })

/**
 * Opens an existing Deno KV queue (never creates one). The KV stays open
 * until the command's process exits.
 */
const openKv = (file: string): Effect.Effect<Cli.QueueHandle, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const path = absolute(file)
    const stat = yield* Effect.promise(() => Deno.stat(path).catch(() => undefined))
    if (stat === undefined || !stat.isFile) {
      return yield* Effect.fail(
        QueueStorage.error("NotFound", "open", undefined, `no queue in ${path}: no Deno KV file there (a server creates it on its first start)`)
      )
    }
    const DenoKvStorage = yield* Effect.promise(() => import("./DenoKvStorage.ts"))
    const storage = yield* DenoKvStorage.make({ path }).pipe(Scope.provide(Effect.runSync(Scope.make())))
    return { location: path, storage, envelope: ScopedQueue.storageEnvelope(storage) }
  })

/**
 * Closes the queues the commands opened (a journal writes its pending
 * leases and gives its ownership back). `main` calls it before the process
 * exits; an embedder that runs `Cli.run` with `io` calls it after.
 */
export const closeQueues: () => Promise<void> = ScopedQueue.closeAll

/**
 * Opens an existing journal queue (never creates one) for this command, until
 * `closeQueues`. Fails with the engine's `Io` error naming the owner's pid
 * while a server owns it, prefixed with the config key.
 */
const openJournal = (directory: string): Effect.Effect<Cli.QueueHandle, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const dir = absolute(directory)
    const missing = (detail: string) => QueueStorage.error("NotFound", "open", undefined, `no queue in ${dir}: ${detail}`)
    const stat = yield* Effect.promise(() => Deno.stat(dir).catch(() => undefined))
    if (stat === undefined) return yield* Effect.fail(missing("the directory does not exist (a server creates it on its first start)"))
    if (!stat.isDirectory) return yield* Effect.fail(missing("not a directory"))
    const layout = yield* Effect.promise(() => Deno.stat(`${dir}/layout.json`).then(() => true, () => false))
    if (!layout) return yield* Effect.fail(missing("it has no layout.json (a server creates it on its first start)"))
    const DenoJournal = yield* Effect.promise(() => import("./DenoJournal.ts"))
    return yield* ScopedQueue.open(dir, DenoJournal.make({ directory: dir }))
  })

const openQueue = (settings: Config.StorageSettings): Effect.Effect<Cli.QueueHandle, QueueStorage.StorageError> => {
  switch (settings.type) {
    case "disk":
      return openDisk(settings.path)
    case "journal":
      return openJournal(settings.path)
    case "kv":
      return openKv(settings.path)
    case "redis":
      return Effect.fail(QueueStorage.error("Io", "open", undefined, "queue.storage.type: redis storage is not available on Deno"))
    case "memory":
      return Effect.fail(QueueStorage.error("Invalid", "open", undefined, "queue commands need persistent storage (queue.storage.type: memory)"))
  }
}

const readStdinLine = async (prompt: string): Promise<string | undefined> => {
  if (Deno.stdin.isTerminal()) writeAll(Deno.stderr, encoder.encode(prompt))
  let buffer = ""
  const chunk = new Uint8Array(4096)
  for (;;) {
    const n = await Deno.stdin.read(chunk)
    if (n === null) return buffer === "" ? undefined : buffer.replace(/\r$/, "")
    buffer += decoder.decode(chunk.subarray(0, n), { stream: true })
    const lf = buffer.indexOf("\n")
    if (lf >= 0) return buffer.slice(0, lf).replace(/\r$/, "")
  }
}

/** The CLI's view of the Deno process. */
export const io: Cli.Io = {
  stdout: (text) => writeAll(Deno.stdout, encoder.encode(text)),
  stderr: (text) => writeAll(Deno.stderr, encoder.encode(text)),
  readFile: (path) => Deno.readTextFile(path),
  hostname: () => Deno.hostname(),
  version: () =>
    (JSON.parse(Deno.readTextFileSync(new URL("../package.json", import.meta.url))) as { version: string }).version,
  serve: async (config, configFile) => {
    const { run } = await import("./serve.ts")
    return run(config, configFile)
  },
  openQueue,
  stdoutBytes: (bytes) => {
    try {
      writeAll(Deno.stdout, bytes)
    } catch (e) {
      // `mailroom queue show ID | head`: a reader that goes away ends the command quietly
      if (!(e instanceof Deno.errors.BrokenPipe)) throw e
    }
  },
  readStdinLine,
  randomBytes: (n) => crypto.getRandomValues(new Uint8Array(n)),
  now: () => Date.now()
}

if (import.meta.main) {
  Cli.run(Deno.args, io).then(
    async (code) => {
      await closeQueues()
      Deno.exit(code)
    },
    async (e: unknown) => {
      io.stderr(`mailroom: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
      await closeQueues().catch(() => undefined)
      Deno.exit(1)
    }
  )
}
