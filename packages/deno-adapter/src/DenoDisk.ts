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
 * <dir>/tmp/<id>.<pid>.<n>.json       records being written
 * <dir>/lock/<id>.lock       a short-lived lock around one metadata update
 * <dir>/corrupt/<id>.<ms>.{eml,json}    quarantined files
 * ```
 *
 * A write creates `tmp/…json`, then the body `messages/<id>.eml` itself
 * (both new, mode 0600; an existing body is the id's `Conflict`), writes and
 * fsyncs both, links the record into `meta/` (the commit point; an existing
 * record is a `Conflict` too), fsyncs both directories at once, unlinks the
 * tmp name, and only then resolves: no existence checks, and no error on the
 * normal path. The tmp record is created first so that recovery by another
 * process never takes the body being written for an orphan. Directory fsyncs
 * are group-committed. A metadata update takes the id's lock (in-process
 * queue, then the lock file), rewrites the record through `tmp/` and fsyncs
 * `meta/`. Removal unlinks the record first and fsyncs `meta/`, then unlinks
 * the body (a body left by a power loss has no record; recovery removes it).
 * At open, leftovers of dead processes are removed, a body without a record
 * is dropped, and a bad record is quarantined with a warning.
 *
 * Whether a pid is alive is read from `/proc/<pid>` on Linux; elsewhere
 * other pids are assumed alive and only the lock age breaks a lock.
 *
 * What it deliberately does not do: share a directory across hosts or PID
 * namespaces, or compress. `list` reads only the records that changed since
 * the last listing (`DiskLayout.RecordIndex`), and never bodies.
 *
 * @since 0.1.0
 */
import { Effect, Layer, Result } from "effect"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as DiskLayout from "@mailroom/protocol/queue/DiskLayout"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"

/** Options of `make` and `layer` (see `DiskLayout.Options`). */
export type Options = DiskLayout.Options

// --- small file-system helpers ----------------------------------------------

const codeOf = DiskLayout.codeOf

const isMissing = (e: unknown): boolean => e instanceof Deno.errors.NotFound || codeOf(e) === "ENOENT"
const isTaken = (e: unknown): boolean => e instanceof Deno.errors.AlreadyExists || codeOf(e) === "EEXIST"

/** Maps a thrown value to a `StorageError`: ENOSPC/EDQUOT (by code or message) → `Full`, anything else → `Io`. */
const toError = (operation: string, id: string | undefined, e: unknown): QueueStorage.StorageError =>
  DiskLayout.toError(operation, id, e, codeOf(e), true)

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

/** Writes `data` to the open file, fsyncs and closes it (closing it on failure too). */
const fillDurable = async (fh: Deno.FsFile, data: Uint8Array | string): Promise<void> => {
  try {
    await writeAll(fh, typeof data === "string" ? encoder.encode(data) : data)
    await fh.sync()
  } finally {
    fh.close()
  }
}

const createNew = (file: string): Promise<Deno.FsFile> => Deno.open(file, { write: true, createNew: true, mode: 0o600 })

/** Creates `file` (it must not exist), writes `data`, fsyncs and closes it. */
const writeDurable = async (file: string, data: Uint8Array | string): Promise<void> => fillDurable(await createNew(file), data)

const fsyncDir = async (dir: string): Promise<void> => {
  const fh = await Deno.open(dir, { read: true })
  try {
    await fh.sync()
  } finally {
    fh.close()
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
    const layout = DiskLayout.paths(root, join)
    const dirs = layout.dirs
    const groupCommit = (dir: string) => new DiskLayout.GroupCommit(() => fsyncDir(dir))
    const syncs = { messages: groupCommit(dirs.messages), meta: groupCommit(dirs.meta), corrupt: groupCommit(dirs.corrupt) }
    const staleMs = options.lockStaleMs ?? DiskLayout.defaultLockStaleMs
    const waitMs = options.lockWaitMs ?? DiskLayout.defaultLockWaitMs
    const bodyPath = layout.body
    const metaPath = layout.record
    const tmpPath = (id: string, ext: "eml" | "json") => layout.tmp(id, Deno.pid, counter++, ext)

    const io = <A>(operation: string, id: string | undefined, f: () => Promise<A>) =>
      Effect.uninterruptible(Effect.tryPromise({ try: f, catch: (e) => toError(operation, id, e) }))

    const notFound = DiskLayout.notFound

    const decode = (operation: string, id: string, text: string, body?: Uint8Array): QueueStorage.Stored => {
      const r = DiskLayout.decodeRecord(operation, id, metaPath(id), text, body)
      if (Result.isFailure(r)) throw r.failure
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
      await ignoreMissing(Deno.rename(metaPath(id), layout.quarantine(id, stamp, "json")))
      await ignoreMissing(Deno.rename(bodyPath(id), layout.quarantine(id, stamp, "eml")))
      await Promise.all([syncs.corrupt.sync(), syncs.meta.sync(), syncs.messages.sync()])
    }

    // --- locks: in-process queue per id, then an O_EXCL lock file -------------

    const queues = new DiskLayout.KeyedQueue()
    const lockPath = layout.lock

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
        if (stat !== undefined && DiskLayout.lockIsStale(Date.now() - mtimeMs(stat), owner, staleMs, pidAlive, false)) {
          await unlinkQuietly(file)
          continue
        }
        if (Date.now() > deadline) throw QueueStorage.error("Io", operation, id, `lock ${file} is busy`)
        await sleep(pause)
      }
    }

    const withLock = <A>(operation: string, id: string, f: () => Promise<A>): Promise<A> =>
      queues.run(id, async () => {
        await acquireFile(operation, id)
        try {
          return await f()
        } finally {
          await unlinkQuietly(lockPath(id))
        }
      })

    // --- operations --------------------------------------------------------

    /** An O_EXCL create or a link that found the name taken: the id exists. */
    const orConflict = (id: string) => (e: unknown): never => {
      throw isTaken(e) ? QueueStorage.error("Conflict", "write", id, "a message with this id exists") : e
    }

    const insert = (envelope: Envelope.Envelope, meta: QueueStorage.Meta) =>
      io("write", envelope.id, async () => {
        const id = envelope.id
        const body = bodyPath(id)
        const record = metaPath(id)
        const tmpMeta = tmpPath(id, "json")
        const text = DiskLayout.encodeRecord(envelope, meta)
        // the record's tmp file first: while it exists, recovery by another
        // process sharing the directory leaves the body being written alone
        const metaFile = await createNew(tmpMeta)
        let bodyCreated = false
        let linked = false
        try {
          const bodyFile = await createNew(body).catch((e) => {
            metaFile.close()
            return orConflict(id)(e)
          })
          bodyCreated = true
          const results = await Promise.allSettled([fillDurable(bodyFile, envelope.message), fillDurable(metaFile, text)])
          for (const r of results) if (r.status === "rejected") throw r.reason
          // the commit point: the body is complete and fsynced, the record appears
          await Deno.link(tmpMeta, record).catch(orConflict(id))
          linked = true
          await Promise.all([syncs.messages.sync(), syncs.meta.sync(), unlinkQuietly(tmpMeta)])
        } catch (e) {
          // not acknowledged: leave nothing behind, the record first
          if (linked) await unlinkQuietly(record)
          if (bodyCreated) await unlinkQuietly(body)
          await unlinkQuietly(tmpMeta)
          if (linked || bodyCreated) await Promise.allSettled([syncs.meta.sync(), syncs.messages.sync()])
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

    /** What each record said when last read, so that a listing reads only the changed ones. */
    const index = new DiskLayout.RecordIndex()
    const listIo: DiskLayout.ListIo = {
      version: async (id) => {
        let st: Deno.FileInfo
        try {
          st = await Deno.stat(metaPath(id))
        } catch (e) {
          if (isMissing(e)) return undefined
          throw e
        }
        // without an inode number or a ctime (not Linux or macOS) the record is read every time
        if (st.ino === null || st.ctime === null || st.mtime === null) return undefined
        return { ino: st.ino, size: st.size, mtimeMs: st.mtime.getTime(), ctimeMs: st.ctime.getTime() }
      },
      readText: async (id) => {
        try {
          return await Deno.readTextFile(metaPath(id))
        } catch (e) {
          if (isMissing(e)) return undefined
          throw e
        }
      },
      decode: (id, text) => decode("list", id, text).meta,
      quarantine
    }

    const list = () =>
      Effect.flatMap(
        io("list", undefined, async () => index.list(DiskLayout.idsOf(await readDirNames(dirs.meta), "json"), Date.now(), listIo)),
        ({ metas, quarantined }) =>
          Effect.as(
            Effect.forEach(quarantined, (e) => Effect.logWarning(DiskLayout.listWarning(e, dirs.corrupt))),
            metas
          )
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
            await writeDurable(tmp, DiskLayout.encodeRecord(stored.envelope, next))
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
          // no fsync of messages/: a body whose unlink a power loss undoes has
          // no record, and recovery removes it
          await ignoreMissing(Deno.remove(bodyPath(id)))
        }))

    // --- open and recover ----------------------------------------------------

    const recover = async (): Promise<Array<Warning>> => {
      const warnings: Array<Warning> = []
      await Deno.mkdir(root, { recursive: true })
      for (const d of Object.values(dirs)) await Deno.mkdir(d, { recursive: true })
      let layoutText: string | undefined
      try {
        layoutText = await Deno.readTextFile(layout.layoutFile)
      } catch (e) {
        if (!isMissing(e)) throw e
      }
      if (layoutText === undefined) {
        const tmp = layout.layoutTmp(Deno.pid, counter++)
        await writeDurable(tmp, DiskLayout.layoutText)
        await Deno.rename(tmp, layout.layoutFile)
      } else if (!DiskLayout.isLayout(layoutText)) {
        throw DiskLayout.layoutError(layout.layoutFile, layoutText)
      }
      await fsyncDir(root)

      // bodies are listed before records: a body created after this listing has its record in tmp/
      const bodies = DiskLayout.idsOf(await readDirNames(dirs.messages), "eml")
      const records = new Set(DiskLayout.idsOf(await readDirNames(dirs.meta), "json"))
      const writing = new Set<string>() // ids with a record in tmp/ of a live writer
      const now = Date.now()
      for (const name of await readDirNames(dirs.tmp)) {
        const file = join(dirs.tmp, name)
        const stat = await statQuietly(file)
        if (stat === undefined) continue
        const verdict = DiskLayout.classifyTmp(name, now - mtimeMs(stat), pidAlive)
        if (verdict._tag === "Keep") {
          if (verdict.writing !== undefined) writing.add(verdict.writing)
          continue
        }
        await unlinkQuietly(file)
      }
      for (const name of await readDirNames(dirs.lock)) {
        const file = join(dirs.lock, name)
        const [stat, owner] = await Promise.all([statQuietly(file), Deno.readTextFile(file).catch(() => "")])
        if (stat !== undefined && DiskLayout.lockIsStale(now - mtimeMs(stat), owner, staleMs, pidAlive, true)) await unlinkQuietly(file)
      }

      let removedBodies = false
      for (const id of DiskLayout.orphanCandidates(bodies, records, writing)) {
        if (await exists(metaPath(id)).catch(() => false)) continue
        await unlinkQuietly(bodyPath(id))
        removedBodies = true
      }
      if (removedBodies) await syncs.messages.sync()

      for (const id of records) {
        const text = await Deno.readTextFile(metaPath(id)).catch((e) => (isMissing(e) ? undefined : Promise.reject(e)))
        if (text === undefined) continue
        const size = await Deno.stat(bodyPath(id)).then((s) => s.size, (e) => (isMissing(e) ? undefined : Promise.reject(e)))
        const problem = DiskLayout.recordProblem(id, metaPath(id), text, bodyPath(id), size)
        if (problem !== undefined) {
          await quarantine(id)
          warnings.push({ message: DiskLayout.recoveryWarning(problem, id, dirs.corrupt) })
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
