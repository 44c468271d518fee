/**
 * `DenoDisk`: the disk `QueueStorage` on Deno's own file APIs (`Deno.open`,
 * `FsFile.sync`, `Deno.rename`, a directory opened read-only and synced).
 * It keeps the same layout, version 1, and the same guarantees as
 * `@mailroom/node`'s `DiskStorage`, so either runtime can open a queue
 * directory the other wrote, and both can share one directory at once
 * (lock files are created with O_EXCL and carry the holder's pid):
 *
 * ```
 * <dir>/layout.json          {"format":"mailroom-queue","v":1}
 * <dir>/messages/<id>.eml    the raw message bytes
 * <dir>/meta/<id>.json       the record (QueueStorage.encodeRecord)
 * <dir>/tmp/<id>.<pid>.<n>.{eml,json}   writes in progress
 * <dir>/lock/<id>.lock       a short-lived lock around one metadata update
 * <dir>/corrupt/<id>.<ms>.{eml,json}    quarantined files
 * ```
 *
 * A write makes `tmp/…eml` and `tmp/…json` (created new, mode 0600), fsyncs
 * each, renames the body into `messages/` and fsyncs the directory, renames
 * the record into `meta/` (the commit point) and fsyncs that directory, and
 * only then resolves. Directory fsyncs are group-committed. A metadata update
 * takes the id's lock (in-process queue, then the lock file), rewrites the
 * record through `tmp/` and fsyncs `meta/`. Removal unlinks the record first.
 * At open, leftovers of dead processes are removed, a body without a record
 * is dropped, and a bad record is quarantined with a warning.
 *
 * Whether a pid is alive is read from `/proc/<pid>` on Linux; elsewhere
 * other pids are assumed alive and only the lock age breaks a lock.
 *
 * What it deliberately does not do: share a directory across hosts or PID
 * namespaces, compress, or index (`list` reads every record, never bodies).
 *
 * @since 0.1.0
 */
import { Effect, Layer, Result } from "effect"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"

/** Options of `make` and `layer`. */
export interface Options {
  /** The queue directory; created when missing. */
  readonly directory: string
  /** A lock file older than this is taken as left over by a crash (default 30 000 ms). */
  readonly lockStaleMs?: number | undefined
  /** How long an update waits for a busy lock before failing with `Io` (default 10 000 ms). */
  readonly lockWaitMs?: number | undefined
}

const LAYOUT = { format: "mailroom-queue", v: 1 } as const

// --- small file-system helpers ----------------------------------------------

const codeOf = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && typeof (e as { code?: unknown }).code === "string" ? (e as { code: string }).code : undefined

const isMissing = (e: unknown): boolean => e instanceof Deno.errors.NotFound || codeOf(e) === "ENOENT"
const isTaken = (e: unknown): boolean => e instanceof Deno.errors.AlreadyExists || codeOf(e) === "EEXIST"

/** Maps a thrown value to a `StorageError`: ENOSPC/EDQUOT → `Full`, anything else → `Io`. */
const toError = (operation: string, id: string | undefined, e: unknown): QueueStorage.StorageError => {
  if (e instanceof QueueStorage.StorageError) return e
  const code = codeOf(e)
  const detail = e instanceof Error ? e.message : String(e)
  const full = code === "ENOSPC" || code === "EDQUOT" || /No space left on device|Disk quota exceeded/i.test(detail)
  return QueueStorage.error(full ? "Full" : "Io", operation, id, detail, e)
}

const join = (...parts: ReadonlyArray<string>): string => parts.join("/").replace(/\/{2,}/g, "/")

const resolvePath = (p: string): string => (p.startsWith("/") ? p : join(Deno.cwd(), p)).replace(/\/+$/, "") || "/"

const ignoreMissing = (p: Promise<unknown>): Promise<void> =>
  p.then(() => undefined, (e) => {
    if (!isMissing(e)) throw e
  })

const unlinkQuietly = (file: string): Promise<void> => Deno.remove(file).then(() => undefined, () => undefined)

const exists = (file: string): Promise<boolean> => Deno.stat(file).then(() => true, (e) => (isMissing(e) ? false : Promise.reject(e)))

const writeAll = async (file: Deno.FsFile, data: Uint8Array): Promise<void> => {
  let offset = 0
  while (offset < data.length) offset += await file.write(data.subarray(offset))
}

const encoder = new TextEncoder()

/** Creates `file` (it must not exist), writes `data`, fsyncs and closes it. */
const writeDurable = async (file: string, data: Uint8Array | string): Promise<void> => {
  const fh = await Deno.open(file, { write: true, createNew: true, mode: 0o600 })
  try {
    await writeAll(fh, typeof data === "string" ? encoder.encode(data) : data)
    await fh.sync()
  } finally {
    fh.close()
  }
}

const fsyncDir = async (dir: string): Promise<void> => {
  const fh = await Deno.open(dir, { read: true })
  try {
    await fh.sync()
  } finally {
    fh.close()
  }
}

/** Group commit of one directory's fsync (see `DiskStorage`): late callers wait for the next fsync. */
class DirSync {
  readonly dir: string
  private running = false
  private waiting: Array<{ resolve: () => void; reject: (e: unknown) => void }> = []
  constructor(dir: string) {
    this.dir = dir
  }
  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject })
      if (!this.running) this.run()
    })
  }
  private run(): void {
    const batch = this.waiting
    this.waiting = []
    this.running = true
    fsyncDir(this.dir).then(
      () => batch.forEach((w) => w.resolve()),
      (e) => batch.forEach((w) => w.reject(e))
    ).finally(() => {
      this.running = false
      if (this.waiting.length > 0) this.run()
    })
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const pidAlive = (pid: number): boolean => {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  if (pid === Deno.pid) return true
  if (Deno.build.os !== "linux") return true
  try {
    Deno.statSync(`/proc/${pid}`)
    return true
  } catch {
    return false
  }
}

const ID_FILE = /^([0-9A-Za-z_-]{1,128})\.(eml|json)$/
const TMP_FILE = /^([0-9A-Za-z_-]{1,128})\.(\d+)\.[0-9a-z]+\.(eml|json)$/
const DAY = 24 * 3600 * 1000

let counter = 0

const readDirNames = async (dir: string): Promise<Array<string>> => {
  const names: Array<string> = []
  for await (const e of Deno.readDir(dir)) names.push(e.name)
  return names
}

const mtimeMs = (st: Deno.FileInfo): number => st.mtime?.getTime() ?? 0

const statQuietly = (file: string): Promise<Deno.FileInfo | undefined> => Deno.stat(file).catch(() => undefined)

interface Warning {
  readonly message: string
}

/**
 * Opens (creating it when missing) and recovers the queue directory, and
 * returns the storage. Fails with `Io` when the directory cannot be used and
 * `Corrupt` when it holds a layout of another version.
 */
export const make = (options: Options): Effect.Effect<QueueStorage.Service, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const root = resolvePath(options.directory)
    const dirs = {
      messages: join(root, "messages"),
      meta: join(root, "meta"),
      tmp: join(root, "tmp"),
      lock: join(root, "lock"),
      corrupt: join(root, "corrupt")
    }
    const syncs = { messages: new DirSync(dirs.messages), meta: new DirSync(dirs.meta), corrupt: new DirSync(dirs.corrupt) }
    const staleMs = options.lockStaleMs ?? 30_000
    const waitMs = options.lockWaitMs ?? 10_000
    const bodyPath = (id: string) => join(dirs.messages, `${id}.eml`)
    const metaPath = (id: string) => join(dirs.meta, `${id}.json`)
    const tmpPath = (id: string, ext: "eml" | "json") => join(dirs.tmp, `${id}.${Deno.pid}.${(counter++).toString(36)}.${ext}`)

    const io = <A>(operation: string, id: string | undefined, f: () => Promise<A>) =>
      Effect.uninterruptible(Effect.tryPromise({ try: f, catch: (e) => toError(operation, id, e) }))

    const notFound = (operation: string, id: string) => QueueStorage.error("NotFound", operation, id, "no such message")

    const decode = (operation: string, id: string, text: string, body?: Uint8Array): QueueStorage.Stored => {
      let u: unknown
      try {
        u = JSON.parse(text)
      } catch {
        throw QueueStorage.error("Corrupt", operation, id, `${metaPath(id)}: not valid JSON`)
      }
      const r = QueueStorage.decodeRecord(u, body)
      if (Result.isFailure(r)) throw QueueStorage.error("Corrupt", operation, id, `${metaPath(id)}: ${r.failure.detail}`)
      if (r.success.meta.id !== id) throw QueueStorage.error("Corrupt", operation, id, `${metaPath(id)}: holds id ${r.success.meta.id}`)
      return r.success
    }

    const readRecord = async (operation: string, id: string): Promise<string> => {
      try {
        return await Deno.readTextFile(metaPath(id))
      } catch (e) {
        throw isMissing(e) ? notFound(operation, id) : e
      }
    }

    /** Moves the record and the body of `id` (whichever exist) to `corrupt/`. */
    const quarantine = async (id: string): Promise<void> => {
      const stamp = Date.now()
      await ignoreMissing(Deno.rename(metaPath(id), join(dirs.corrupt, `${id}.${stamp}.json`)))
      await ignoreMissing(Deno.rename(bodyPath(id), join(dirs.corrupt, `${id}.${stamp}.eml`)))
      await Promise.all([syncs.corrupt.sync(), syncs.meta.sync(), syncs.messages.sync()])
    }

    // --- locks: in-process queue per id, then an O_EXCL lock file -------------

    const queues = new Map<string, Promise<void>>()
    const lockPath = (id: string) => join(dirs.lock, `${id}.lock`)

    const acquireFile = async (operation: string, id: string): Promise<void> => {
      const file = lockPath(id)
      const deadline = Date.now() + waitMs
      for (let pause = 1;; pause = Math.min(pause * 2, 50)) {
        try {
          const fh = await Deno.open(file, { write: true, createNew: true, mode: 0o600 })
          // the pid helps others see a dead holder; an empty file (disk full) still locks
          await writeAll(fh, encoder.encode(String(Deno.pid))).catch(() => undefined)
          fh.close()
          return
        } catch (e) {
          if (!isTaken(e)) throw e
        }
        const [stat, owner] = await Promise.all([statQuietly(file), Deno.readTextFile(file).catch(() => "")])
        if (stat !== undefined && (Date.now() - mtimeMs(stat) > staleMs || (owner !== "" && !pidAlive(Number(owner))))) {
          await unlinkQuietly(file)
          continue
        }
        if (Date.now() > deadline) throw QueueStorage.error("Io", operation, id, `lock ${file} is busy`)
        await sleep(pause)
      }
    }

    const withLock = async <A>(operation: string, id: string, f: () => Promise<A>): Promise<A> => {
      const previous = queues.get(id) ?? Promise.resolve()
      let done!: () => void
      const mine = previous.then(() => new Promise<void>((resolve) => (done = resolve)))
      queues.set(id, mine)
      await previous
      try {
        await acquireFile(operation, id)
        try {
          return await f()
        } finally {
          await unlinkQuietly(lockPath(id))
        }
      } finally {
        done()
        if (queues.get(id) === mine) queues.delete(id)
      }
    }

    // --- operations --------------------------------------------------------

    const insert = (envelope: Envelope.Envelope, meta: QueueStorage.Meta) =>
      io("write", envelope.id, async () => {
        const id = envelope.id
        if ((await exists(metaPath(id))) || (await exists(bodyPath(id)))) {
          throw QueueStorage.error("Conflict", "write", id, "a message with this id exists")
        }
        const tmpBody = tmpPath(id, "eml")
        const tmpMeta = tmpPath(id, "json")
        let bodyPlaced = false
        let metaPlaced = false
        try {
          const results = await Promise.allSettled([
            writeDurable(tmpBody, envelope.message),
            writeDurable(tmpMeta, JSON.stringify(QueueStorage.encodeRecord(envelope, meta)))
          ])
          for (const r of results) if (r.status === "rejected") throw r.reason
          await Deno.rename(tmpBody, bodyPath(id))
          bodyPlaced = true
          await syncs.messages.sync()
          await Deno.rename(tmpMeta, metaPath(id))
          metaPlaced = true
          await syncs.meta.sync()
        } catch (e) {
          // not acknowledged: leave nothing behind, the record first
          if (metaPlaced) await unlinkQuietly(metaPath(id))
          if (bodyPlaced) await unlinkQuietly(bodyPath(id))
          await Promise.all([unlinkQuietly(tmpBody), unlinkQuietly(tmpMeta)])
          if (metaPlaced || bodyPlaced) await Promise.allSettled([syncs.meta.sync(), syncs.messages.sync()])
          throw e
        }
      })

    const read = (id: string) =>
      io("read", id, async () => {
        const text = await readRecord("read", id)
        let body: Uint8Array
        try {
          body = await Deno.readFile(bodyPath(id))
        } catch (e) {
          if (!isMissing(e)) throw e
          if (await exists(metaPath(id)).catch(() => false)) {
            throw QueueStorage.error("Corrupt", "read", id, `${bodyPath(id)} is missing`)
          }
          throw notFound("read", id)
        }
        return decode("read", id, text, body)
      })

    const meta = (id: string) => io("meta", id, async () => decode("meta", id, await readRecord("meta", id)).meta)

    const list = () =>
      Effect.flatMap(
        io("list", undefined, async () => {
          const ids = (await readDirNames(dirs.meta)).flatMap((n) => {
            const m = ID_FILE.exec(n)
            return m !== null && m[2] === "json" ? [m[1]!] : []
          })
          const metas: Array<QueueStorage.Meta> = []
          const warnings: Array<Warning> = []
          for (let i = 0; i < ids.length; i += 64) {
            await Promise.all(ids.slice(i, i + 64).map(async (id) => {
              let text: string
              try {
                text = await Deno.readTextFile(metaPath(id))
              } catch (e) {
                if (isMissing(e)) return // removed meanwhile
                throw e
              }
              try {
                metas.push(decode("list", id, text).meta)
              } catch (e) {
                if (!(e instanceof QueueStorage.StorageError)) throw e
                await quarantine(id)
                warnings.push({ message: `${e.message}; moved to ${dirs.corrupt}` })
              }
            }))
          }
          metas.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
          return { metas, warnings }
        }),
        ({ metas, warnings }) =>
          Effect.as(Effect.forEach(warnings, (w) => Effect.logWarning(w.message)), metas as ReadonlyArray<QueueStorage.Meta>)
      )

    const update = <A>(id: string, operation: string, f: (meta: QueueStorage.Meta) => QueueStorage.Update<A>) =>
      io(operation, id, () =>
        withLock(operation, id, async () => {
          const stored = decode(operation, id, await readRecord(operation, id))
          const r = f(stored.meta)
          if (Result.isFailure(r)) throw r.failure
          const [value, next] = r.success
          if (next === undefined) return value
          const tmp = tmpPath(id, "json")
          try {
            await writeDurable(tmp, JSON.stringify(QueueStorage.encodeRecord(stored.envelope, next)))
            await Deno.rename(tmp, metaPath(id))
          } catch (e) {
            await unlinkQuietly(tmp)
            throw e
          }
          await syncs.meta.sync()
          return value
        }))

    const remove = (id: string) =>
      io("remove", id, () =>
        withLock("remove", id, async () => {
          try {
            await Deno.remove(metaPath(id))
          } catch (e) {
            throw isMissing(e) ? notFound("remove", id) : e
          }
          await syncs.meta.sync()
          await ignoreMissing(Deno.remove(bodyPath(id)))
          await syncs.messages.sync()
        }))

    // --- open and recover ----------------------------------------------------

    const recover = async (): Promise<Array<Warning>> => {
      const warnings: Array<Warning> = []
      await Deno.mkdir(root, { recursive: true })
      for (const d of Object.values(dirs)) await Deno.mkdir(d, { recursive: true })
      const layoutFile = join(root, "layout.json")
      let layout: string | undefined
      try {
        layout = await Deno.readTextFile(layoutFile)
      } catch (e) {
        if (!isMissing(e)) throw e
      }
      if (layout === undefined) {
        const tmp = join(dirs.tmp, `layout.${Deno.pid}.${(counter++).toString(36)}.json`)
        await writeDurable(tmp, JSON.stringify(LAYOUT) + "\n")
        await Deno.rename(tmp, layoutFile)
      } else {
        let v: unknown
        try {
          v = JSON.parse(layout)
        } catch {
          v = undefined
        }
        if (typeof v !== "object" || v === null || (v as { v?: unknown }).v !== 1 || (v as { format?: unknown }).format !== LAYOUT.format) {
          throw QueueStorage.error("Corrupt", "open", undefined, `${layoutFile}: not a version 1 mailroom queue (${layout.slice(0, 80)})`)
        }
      }
      await fsyncDir(root)

      // bodies are listed before records: a body renamed in after this listing has its record in tmp/
      const bodies = (await readDirNames(dirs.messages)).flatMap((n) => {
        const m = ID_FILE.exec(n)
        return m !== null && m[2] === "eml" ? [m[1]!] : []
      })
      const records = new Set((await readDirNames(dirs.meta)).flatMap((n) => {
        const m = ID_FILE.exec(n)
        return m !== null && m[2] === "json" ? [m[1]!] : []
      }))
      const writing = new Set<string>() // ids with a record in tmp/ of a live writer
      const now = Date.now()
      for (const name of await readDirNames(dirs.tmp)) {
        const file = join(dirs.tmp, name)
        const m = TMP_FILE.exec(name) ?? /^layout\.(\d+)\.[0-9a-z]+\.json$/.exec(name)
        const pid = m === null ? NaN : Number(m[m.length === 4 ? 2 : 1])
        const stat = await statQuietly(file)
        if (stat === undefined) continue
        if (m !== null && pidAlive(pid) && now - mtimeMs(stat) < DAY) {
          if (m.length === 4 && m[3] === "json") writing.add(m[1]!)
          continue
        }
        await unlinkQuietly(file)
      }
      for (const name of await readDirNames(dirs.lock)) {
        const file = join(dirs.lock, name)
        const [stat, owner] = await Promise.all([statQuietly(file), Deno.readTextFile(file).catch(() => "")])
        if (stat !== undefined && (now - mtimeMs(stat) > staleMs || !pidAlive(Number(owner)))) await unlinkQuietly(file)
      }

      let removedBodies = false
      for (const id of bodies) {
        if (records.has(id) || writing.has(id)) continue
        if (await exists(metaPath(id)).catch(() => false)) continue
        await unlinkQuietly(bodyPath(id))
        removedBodies = true
      }
      if (removedBodies) await syncs.messages.sync()

      for (const id of records) {
        const text = await Deno.readTextFile(metaPath(id)).catch((e) => (isMissing(e) ? undefined : Promise.reject(e)))
        if (text === undefined) continue
        const size = await Deno.stat(bodyPath(id)).then((s) => s.size, (e) => (isMissing(e) ? undefined : Promise.reject(e)))
        let problem: string | undefined
        try {
          const stored = decode("open", id, text)
          if (size === undefined) problem = `${bodyPath(id)} is missing`
          else if (size !== stored.meta.size) problem = `${bodyPath(id)} has ${size} bytes, the record says ${stored.meta.size}`
        } catch (e) {
          if (!(e instanceof QueueStorage.StorageError)) throw e
          problem = e.detail
        }
        if (problem !== undefined) {
          await quarantine(id)
          warnings.push({ message: `QueueStorage: ${problem}; moved message ${id} to ${dirs.corrupt}` })
        }
      }
      return warnings
    }

    const warnings = yield* io("open", undefined, recover)
    yield* Effect.forEach(warnings, (w) => Effect.logWarning(w.message))

    return QueueStorage.make({ insert, read, meta, list, update, remove })
  })

/** A layer with the Deno disk storage over `options.directory` (see `make`); each build opens and recovers it. */
export const layer = (options: Options): Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> =>
  Layer.effect(QueueStorage.QueueStorage, make(options))
