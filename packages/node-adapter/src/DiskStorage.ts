/**
 * `DiskStorage`: the default `QueueStorage`, a directory of plain files that
 * keeps the one promise — `write` resolves only once the message bytes, its
 * record and both directory entries are fsynced, so a `250` survives
 * `kill -9` and power loss (on a file system that honours fsync).
 *
 * ## Layout, version 1
 *
 * ```
 * <dir>/layout.json          {"format":"mailroom-queue","v":1}
 * <dir>/messages/<id>.eml    the raw message bytes, exactly as received
 * <dir>/meta/<id>.json       the record: {"v":1,"envelope":{…},"meta":{…}}
 *                            (QueueStorage.encodeRecord: the envelope's JSON
 *                            form without the message, plus attempts, the
 *                            next attempt time, per-recipient progress, the
 *                            hold flag and the lease)
 * <dir>/tmp/<id>.<pid>.<n>.json       records being written
 * <dir>/lock/<id>.lock       a short-lived lock around one metadata update
 * <dir>/corrupt/<id>.<ms>.{eml,json}    quarantined files, for a human
 * ```
 *
 * Other tools may read it: a message exists exactly when `meta/<id>.json`
 * exists; its bytes are in `messages/<id>.eml`.
 *
 * ## How a write is made durable
 *
 * Create `tmp/…json` (O_EXCL), then the body `messages/<id>.eml` itself
 * (O_EXCL: an existing body is the id's `Conflict`); write and fsync both;
 * link the record into `meta/` (the commit point, and `link` fails with
 * EEXIST on an existing record: `Conflict` again; a reader never sees a
 * record without its body, which was complete and fsynced before); fsync
 * both directories at once and unlink the tmp name; only then resolve.
 * (A power loss before that may leave a record whose body's directory entry
 * was lost; it was never acknowledged, and recovery quarantines it. A body
 * without a record is a write that never committed: recovery removes it,
 * except while a live writer's record is in `tmp/`, which is why that file
 * is created first.) No `access` checks and no errors on the normal path.
 * Directory fsyncs are group-committed: the fsyncs asked for while one runs
 * are served together by the next one. Any failure removes whatever the
 * write created and fails with `Full` (ENOSPC, EDQUOT) or `Io`.
 *
 * File operations use Node's callback API on plain descriptors (no
 * `FileHandle` objects), and small files are read with one `readFile`.
 *
 * A metadata update takes
 * the id's lock (an in-process queue, then `lock/<id>.lock` created with
 * O_EXCL, so several processes can share the directory), reads the record,
 * writes a new one to `tmp/`, fsyncs it, renames it over the old one and
 * fsyncs `meta/`. Removal unlinks the record first and fsyncs `meta/`,
 * then unlinks the body (a body left by a power loss has no record, and
 * recovery removes it).
 *
 * ## Recovery at open
 *
 * Leftovers in `tmp/` and `lock/` of processes that are gone are removed; a
 * body without a record (a crash between the two renames: never
 * acknowledged) is removed; a record that does not parse, or has no body, or
 * whose body has the wrong size, is moved to `corrupt/` with its body and
 * logged (`Effect.logWarning`) — never a crash loop.
 *
 * What it deliberately does not do: share a directory across hosts or PID
 * namespaces (liveness of other writers is checked by pid), or compress.
 * `list` reads only the records that changed since the last listing (it
 * `stat`s the others: `DiskLayout.RecordIndex`), and never bodies.
 *
 * @since 0.1.0
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Layer, Result } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as DiskLayout from "@mailroom/protocol/queue/DiskLayout"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"

/** Options of `make` and `layer` (see `DiskLayout.Options`). */
export type Options = DiskLayout.Options

// --- small file-system helpers ----------------------------------------------

const codeOf = DiskLayout.codeOf

const isMissing = (e: unknown) => codeOf(e) === "ENOENT"

/** Maps a thrown value to a `StorageError`: ENOSPC/EDQUOT → `Full`, anything else → `Io`. */
const toError = (operation: string, id: string | undefined, e: unknown): QueueStorage.StorageError =>
  DiskLayout.toError(operation, id, e, codeOf(e))

// --- Node's callback API as promises: plain descriptors, no FileHandle ---------

type Callback<A> = (e: NodeJS.ErrnoException | null, a: A) => void
const call = <A>(f: (cb: Callback<A>) => void): Promise<A> =>
  new Promise((resolve, reject) => f((e, a) => (e ? reject(e) : resolve(a))))
const done = (resolve: () => void, reject: (e: unknown) => void) => (e: NodeJS.ErrnoException | null) =>
  e ? reject(e) : resolve()
const callVoid = (f: (cb: (e: NodeJS.ErrnoException | null) => void) => void): Promise<void> =>
  new Promise((resolve, reject) => f(done(resolve, reject)))

const openFd = (file: string, flags: string, mode?: number): Promise<number> => call((cb) => fs.open(file, flags, mode, cb))
const closeFd = (fd: number): Promise<void> => callVoid((cb) => fs.close(fd, cb))
const fsyncFd = (fd: number): Promise<void> => callVoid((cb) => fs.fsync(fd, cb))
/** Writes all of `data` at the descriptor's position. */
const writeFd = (fd: number, data: Uint8Array | string): Promise<void> => callVoid((cb) => fs.writeFile(fd, data, cb))
const readText = (file: string): Promise<string> => call((cb) => fs.readFile(file, "utf8", cb))
const readBytes = (file: string): Promise<Uint8Array> => call((cb) => fs.readFile(file, cb))
const rename = (from: string, to: string): Promise<void> => callVoid((cb) => fs.rename(from, to, cb))
const link = (from: string, to: string): Promise<void> => callVoid((cb) => fs.link(from, to, cb))
const unlink = (file: string): Promise<void> => callVoid((cb) => fs.unlink(file, cb))
const readdir = (dir: string): Promise<Array<string>> => call((cb) => fs.readdir(dir, cb))
const stat = (file: string): Promise<fs.Stats> => call((cb) => fs.stat(file, cb))
const mkdirp = (dir: string): Promise<void> => callVoid((cb) => fs.mkdir(dir, { recursive: true }, (e) => cb(e)))
const exists = (file: string): Promise<boolean> =>
  new Promise((resolve, reject) => fs.access(file, (e) => (e === null ? resolve(true) : isMissing(e) ? resolve(false) : reject(e))))

const ignoreMissing = (p: Promise<unknown>): Promise<void> =>
  p.then(() => undefined, (e) => {
    if (!isMissing(e)) throw e
  })

const unlinkQuietly = (file: string): Promise<void> => unlink(file).then(() => undefined, () => undefined)

/** Writes `data` to the open descriptor, fsyncs and closes it (closing it on failure too). */
const fillDurable = async (fd: number, data: Uint8Array | string): Promise<void> => {
  let failed = true
  try {
    await writeFd(fd, data)
    await fsyncFd(fd)
    failed = false
  } finally {
    // a close error after a successful sync still fails the write
    if (failed) await closeFd(fd).catch(() => undefined)
    else await closeFd(fd)
  }
}

/** Creates `file` (it must not exist), writes `data`, fsyncs and closes it. */
const writeDurable = async (file: string, data: Uint8Array | string): Promise<void> =>
  fillDurable(await openFd(file, "wx", 0o600), data)

const fsyncDir = async (dir: string): Promise<void> => {
  const fd = await openFd(dir, "r")
  try {
    await fsyncFd(fd)
  } finally {
    await closeFd(fd)
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const pidAlive = (pid: number): boolean => {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  if (pid === process.pid) return true
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return codeOf(e) === "EPERM"
  }
}

let counter = 0

/** A `Uint8Array` view of what `readFile` returned (a `Buffer`), without copying. */
const bytes = (b: Uint8Array): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength)

// --- the storage -----------------------------------------------------------------

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
    const root = path.resolve(options.directory)
    const layout = DiskLayout.paths(root, path.join)
    const dirs = layout.dirs
    const groupCommit = (dir: string) => new DiskLayout.GroupCommit(() => fsyncDir(dir))
    const syncs = { messages: groupCommit(dirs.messages), meta: groupCommit(dirs.meta), corrupt: groupCommit(dirs.corrupt) }
    const staleMs = options.lockStaleMs ?? DiskLayout.defaultLockStaleMs
    const waitMs = options.lockWaitMs ?? DiskLayout.defaultLockWaitMs
    const bodyPath = layout.body
    const metaPath = layout.record
    const tmpPath = (id: string, ext: "eml" | "json") => layout.tmp(id, process.pid, counter++, ext)

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
        return await readText(metaPath(id))
      } catch (e) {
        throw isMissing(e) ? notFound(operation, id) : e
      }
    }

    /** Moves the record and the body of `id` (whichever exist) to `corrupt/`. */
    const quarantine = async (id: string): Promise<void> => {
      const stamp = Date.now()
      await ignoreMissing(rename(metaPath(id), layout.quarantine(id, stamp, "json")))
      await ignoreMissing(rename(bodyPath(id), layout.quarantine(id, stamp, "eml")))
      await Promise.all([syncs.corrupt.sync(), syncs.meta.sync(), syncs.messages.sync()])
    }

    // --- locks: in-process queue per id, then an O_EXCL lock file -------------

    const queues = new DiskLayout.KeyedQueue()
    const lockPath = layout.lock
    const pid = String(process.pid)

    const acquireFile = async (operation: string, id: string): Promise<void> => {
      const file = lockPath(id)
      const deadline = Date.now() + waitMs
      for (let pause = 1;; pause = Math.min(pause * 2, 50)) {
        let fd: number | undefined
        try {
          fd = await openFd(file, "wx", 0o600)
        } catch (e) {
          if (codeOf(e) !== "EEXIST") throw e
        }
        if (fd !== undefined) {
          // the pid helps others see a dead holder; an empty file (disk full) still locks
          await writeFd(fd, pid).catch(() => undefined)
          await closeFd(fd)
          return
        }
        const [st, owner] = await Promise.all([
          stat(file).catch(() => undefined),
          readText(file).catch(() => "")
        ])
        if (st !== undefined && DiskLayout.lockIsStale(Date.now() - st.mtimeMs, owner, staleMs, pidAlive, false)) {
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

    const conflict = (id: string) => QueueStorage.error("Conflict", "write", id, "a message with this id exists")
    /** An O_EXCL create or a `link` that found the name taken: the id exists. */
    const orConflict = (id: string) => (e: unknown): never => {
      throw codeOf(e) === "EEXIST" ? conflict(id) : e
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
        const metaFd = await openFd(tmpMeta, "wx", 0o600)
        let bodyCreated = false
        let linked = false
        try {
          const bodyFd = await openFd(body, "wx", 0o600).catch(async (e) => {
            await closeFd(metaFd).catch(() => undefined)
            return orConflict(id)(e)
          })
          bodyCreated = true
          const results = await Promise.allSettled([fillDurable(bodyFd, envelope.message), fillDurable(metaFd, text)])
          for (const r of results) if (r.status === "rejected") throw r.reason
          // the commit point: the body is complete and fsynced, the record appears
          await link(tmpMeta, record).catch(orConflict(id))
          linked = true
          // both directories fsynced together (one journal commit on ext4, not two)
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
          body = bytes(await readBytes(bodyPath(id)))
        } catch (e) {
          // removed between the two reads, or a record without a body
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
        try {
          const st = await stat(metaPath(id))
          return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs }
        } catch (e) {
          if (isMissing(e)) return undefined
          throw e
        }
      },
      readText: async (id) => {
        try {
          return await readText(metaPath(id))
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
        io("list", undefined, async () => index.list(DiskLayout.idsOf(await readdir(dirs.meta), "json"), Date.now(), listIo)),
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
            await rename(tmp, metaPath(id))
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
            await unlink(metaPath(id))
          } catch (e) {
            throw isMissing(e) ? notFound("remove", id) : e
          }
          await syncs.meta.sync()
          // no fsync of messages/: a body whose unlink a power loss undoes has
          // no record, and recovery removes it
          await ignoreMissing(unlink(bodyPath(id)))
        }))

    // --- open and recover ----------------------------------------------------

    const recover = async (): Promise<Array<Warning>> => {
      const warnings: Array<Warning> = []
      await mkdirp(root)
      for (const d of Object.values(dirs)) await mkdirp(d)
      let layoutText: string | undefined
      try {
        layoutText = await readText(layout.layoutFile)
      } catch (e) {
        if (!isMissing(e)) throw e
      }
      if (layoutText === undefined) {
        const tmp = layout.layoutTmp(process.pid, counter++)
        await writeDurable(tmp, DiskLayout.layoutText)
        await rename(tmp, layout.layoutFile)
      } else if (!DiskLayout.isLayout(layoutText)) {
        throw DiskLayout.layoutError(layout.layoutFile, layoutText)
      }
      await fsyncDir(root)

      // the order of these listings matters, see the orphan check below
      const bodies = DiskLayout.idsOf(await readdir(dirs.messages), "eml")
      const records = new Set(DiskLayout.idsOf(await readdir(dirs.meta), "json"))
      const writing = new Set<string>() // ids with a record in tmp/ of a live writer
      const now = Date.now()
      for (const name of await readdir(dirs.tmp)) {
        const file = path.join(dirs.tmp, name)
        const st = await stat(file).catch(() => undefined)
        if (st === undefined) continue
        const verdict = DiskLayout.classifyTmp(name, now - st.mtimeMs, pidAlive)
        if (verdict._tag === "Keep") {
          if (verdict.writing !== undefined) writing.add(verdict.writing)
          continue
        }
        await unlinkQuietly(file)
      }
      // (a lock still empty is one whose holder died between creating it and
      // writing its pid, or, for an instant, one being taken right now)
      for (const name of await readdir(dirs.lock)) {
        const file = path.join(dirs.lock, name)
        const [st, owner] = await Promise.all([stat(file).catch(() => undefined), readText(file).catch(() => "")])
        if (st !== undefined && DiskLayout.lockIsStale(now - st.mtimeMs, owner, staleMs, pidAlive, true)) await unlinkQuietly(file)
      }

      // a body without a record was never acknowledged; a live writer's record
      // is in tmp/ from before its body rename until its commit
      let removedBodies = false
      for (const id of DiskLayout.orphanCandidates(bodies, records, writing)) {
        if (await exists(metaPath(id)).catch(() => false)) continue
        await unlinkQuietly(bodyPath(id))
        removedBodies = true
      }
      if (removedBodies) await syncs.messages.sync()

      for (const id of records) {
        const text = await readText(metaPath(id)).catch((e) => (isMissing(e) ? undefined : Promise.reject(e)))
        if (text === undefined) continue
        const size = await stat(bodyPath(id)).then((s) => s.size, (e) => (isMissing(e) ? undefined : Promise.reject(e)))
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

/** A layer with the disk storage over `options.directory` (see `make`); each build opens and recovers it. */
export const layer = (options: Options): Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> =>
  Layer.effect(QueueStorage.QueueStorage, make(options))
