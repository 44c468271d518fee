/**
 * `DiskStore`: the disk `QueueStorage` (the default), written once over the
 * few file operations an adapter gives (`FileSystem`): `@mailroom/node`'s
 * `DiskStorage` gives Node's callback API on plain descriptors, and
 * `@mailroom/deno`'s `DenoDisk` gives `Deno.open`, `FsFile.sync` and the
 * rest. One algorithm, so that either runtime opens a queue directory the
 * other wrote, and both can share one directory at once.
 *
 * It keeps the one promise: `write` resolves only once the message bytes,
 * its record and both directory entries are fsynced, so a `250` survives
 * `kill -9` and power loss (on a file system that honours fsync). The
 * layout is `DiskLayout`'s, version 1.
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
 * is created first.) No existence checks and no errors on the normal path.
 * Directory fsyncs are group-committed (`DiskLayout.GroupCommit`). Any
 * failure removes whatever the write created and fails with `Full`
 * (ENOSPC, EDQUOT) or `Io`.
 *
 * A metadata update takes the id's lock (an in-process queue, then
 * `lock/<id>.lock` created with O_EXCL and holding the pid, so several
 * processes can share the directory), reads the record, writes a new one
 * to `tmp/`, fsyncs it, renames it over the old one and fsyncs `meta/`.
 * Removal unlinks the record first and fsyncs `meta/`, then unlinks the
 * body (a body left by a power loss has no record, and recovery removes
 * it). `list` reads only the records that changed since the last listing
 * (`DiskLayout.RecordIndex`), and never bodies.
 *
 * ## Recovery at open
 *
 * Leftovers in `tmp/` and `lock/` of processes that are gone are removed; a
 * body without a record (never acknowledged) is removed; a record that does
 * not parse, or has no body, or whose body has the wrong size, is moved to
 * `corrupt/` with its body and logged (`Effect.logWarning`): never a crash
 * loop.
 *
 * What it deliberately does not do: any I/O of its own, or read a clock or
 * set a timer (the adapter's `FileSystem` does those), share a directory across hosts or PID namespaces
 * (liveness of other writers is checked by pid), or compress.
 *
 * @since 0.1.0
 */
import { Effect, Result } from "effect"
import type * as Envelope from "../envelope/Envelope.ts"
import * as DiskLayout from "./DiskLayout.ts"
import * as QueueStorage from "./QueueStorage.ts"

/** What `FileSystem.stat` tells of a file. */
export interface FileStat {
  readonly size: number
  /** Last modification, ms since the epoch (ages of leftovers and locks). */
  readonly mtimeMs: number
  /** Its version for `DiskLayout.RecordIndex`; `undefined` where the platform has no inode numbers or ctimes. */
  readonly version: DiskLayout.RecordVersion | undefined
}

/** A file just created (O_EXCL, mode 0600), open for writing. */
export interface NewFile {
  /**
   * Writes all of `data`, fsyncs it unless `durable` is false, and closes
   * the file; closes it on a failure too (and fails).
   */
  readonly fill: (data: Uint8Array | string, durable?: boolean) => Promise<void>
  /** Closes it without writing, ignoring any error. */
  readonly abandon: () => Promise<void>
}

/** The file operations the disk storage needs, as promises that reject with the runtime's own errors. */
export interface FileSystem {
  /** This process's pid (in lock files and tmp names). */
  readonly pid: number
  /** Whether another process is alive (a pid that cannot be checked counts as alive). */
  readonly pidAlive: (pid: number) => boolean
  /** An absolute path for the configured directory. */
  readonly resolve: (path: string) => string
  readonly join: (...parts: Array<string>) => string
  /** The error says the file does not exist. */
  readonly isMissing: (e: unknown) => boolean
  /** The error says the name is taken (an O_EXCL create, a link). */
  readonly isTaken: (e: unknown) => boolean
  /** Maps a thrown value to a `StorageError` (`DiskLayout.toError`: `Full` or `Io`). */
  readonly toError: (operation: string, id: string | undefined, e: unknown) => QueueStorage.StorageError
  readonly readText: (file: string) => Promise<string>
  readonly readBytes: (file: string) => Promise<Uint8Array>
  /** The names in a directory. */
  readonly readdir: (dir: string) => Promise<Array<string>>
  readonly stat: (file: string) => Promise<FileStat>
  /** Creates a file that must not exist yet, mode 0600. */
  readonly createNew: (file: string) => Promise<NewFile>
  readonly link: (from: string, to: string) => Promise<void>
  readonly rename: (from: string, to: string) => Promise<void>
  readonly unlink: (file: string) => Promise<void>
  /** Creates a directory and its parents; one that exists is fine. */
  readonly mkdirp: (dir: string) => Promise<void>
  /** Opens a directory and fsyncs it (its entries are durable then). */
  readonly fsyncDir: (dir: string) => Promise<void>
  /** The wall clock, ms since the epoch (the clock of the file times). */
  readonly now: () => number
  /** Resolves after `ms` milliseconds (the pause between two tries of a busy lock). */
  readonly sleep: (ms: number) => Promise<void>
}

/** Numbers the tmp files of this process (with the pid, their names are unique). */
let counter = 0

/**
 * Opens (creating it when missing) and recovers the queue directory, and
 * returns the storage. Fails with `Io` when the directory cannot be used and
 * `Corrupt` when it holds a layout of another version.
 */
export const make = (fs: FileSystem, options: DiskLayout.Options): Effect.Effect<QueueStorage.Service, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const root = fs.resolve(options.directory)
    const layout = DiskLayout.paths(root, fs.join)
    const dirs = layout.dirs
    const groupCommit = (dir: string) => new DiskLayout.GroupCommit(() => fs.fsyncDir(dir))
    const syncs = { messages: groupCommit(dirs.messages), meta: groupCommit(dirs.meta), corrupt: groupCommit(dirs.corrupt) }
    const staleMs = options.lockStaleMs ?? DiskLayout.defaultLockStaleMs
    const waitMs = options.lockWaitMs ?? DiskLayout.defaultLockWaitMs
    const bodyPath = layout.body
    const metaPath = layout.record
    const tmpPath = (id: string, ext: "eml" | "json") => layout.tmp(id, fs.pid, counter++, ext)
    const notFound = DiskLayout.notFound

    const io = <A>(operation: string, id: string | undefined, f: () => Promise<A>) =>
      Effect.uninterruptible(Effect.tryPromise({ try: f, catch: (e) => fs.toError(operation, id, e) }))

    /** Resolves `undefined` for a missing file, rejects on any other error. */
    const orMissing = <A>(p: Promise<A>): Promise<A | undefined> =>
      p.catch((e) => (fs.isMissing(e) ? undefined : Promise.reject(e)))
    const ignoreMissing = (p: Promise<unknown>): Promise<void> => orMissing(p).then(() => undefined)
    const unlinkQuietly = (file: string): Promise<void> => fs.unlink(file).then(() => undefined, () => undefined)
    const exists = (file: string): Promise<boolean> => orMissing(fs.stat(file)).then((s) => s !== undefined)
    const writeDurable = async (file: string, data: string): Promise<void> => (await fs.createNew(file)).fill(data)

    const decode = (operation: string, id: string, text: string, body?: Uint8Array): QueueStorage.Stored => {
      const r = DiskLayout.decodeRecord(operation, id, metaPath(id), text, body)
      if (Result.isFailure(r)) throw r.failure
      return r.success
    }

    const readRecord = async (operation: string, id: string): Promise<string> => {
      try {
        return await fs.readText(metaPath(id))
      } catch (e) {
        throw fs.isMissing(e) ? notFound(operation, id) : e
      }
    }

    /** Moves the record and the body of `id` (whichever exist) to `corrupt/`. */
    const quarantine = async (id: string): Promise<void> => {
      const stamp = fs.now()
      await ignoreMissing(fs.rename(metaPath(id), layout.quarantine(id, stamp, "json")))
      await ignoreMissing(fs.rename(bodyPath(id), layout.quarantine(id, stamp, "eml")))
      await Promise.all([syncs.corrupt.sync(), syncs.meta.sync(), syncs.messages.sync()])
    }

    // --- locks: in-process queue per id, then an O_EXCL lock file -------------

    const queues = new DiskLayout.KeyedQueue()
    const lockPath = layout.lock
    const pid = String(fs.pid)

    const acquireFile = async (operation: string, id: string): Promise<void> => {
      const file = lockPath(id)
      const deadline = fs.now() + waitMs
      for (let pause = 1;; pause = Math.min(pause * 2, 50)) {
        let lock: NewFile | undefined
        try {
          lock = await fs.createNew(file)
        } catch (e) {
          if (!fs.isTaken(e)) throw e
        }
        if (lock !== undefined) {
          // the pid helps others see a dead holder; an empty file (disk full) still locks
          await lock.fill(pid, false).catch(() => undefined)
          return
        }
        const [st, owner] = await Promise.all([fs.stat(file).catch(() => undefined), fs.readText(file).catch(() => "")])
        if (st !== undefined && DiskLayout.lockIsStale(fs.now() - st.mtimeMs, owner, staleMs, fs.pidAlive, false)) {
          await unlinkQuietly(file)
          continue
        }
        if (fs.now() > deadline) throw QueueStorage.error("Io", operation, id, `lock ${file} is busy`)
        await fs.sleep(pause)
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

    /** An O_EXCL create or a `link` that found the name taken: the id exists. */
    const orConflict = (id: string) => (e: unknown): never => {
      throw fs.isTaken(e) ? QueueStorage.error("Conflict", "write", id, "a message with this id exists") : e
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
        const metaFile = await fs.createNew(tmpMeta)
        let bodyCreated = false
        let linked = false
        try {
          const bodyFile = await fs.createNew(body).catch(async (e) => {
            await metaFile.abandon()
            return orConflict(id)(e)
          })
          bodyCreated = true
          const results = await Promise.allSettled([bodyFile.fill(envelope.message), metaFile.fill(text)])
          for (const r of results) if (r.status === "rejected") throw r.reason
          // the commit point: the body is complete and fsynced, the record appears
          await fs.link(tmpMeta, record).catch(orConflict(id))
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
          body = await fs.readBytes(bodyPath(id))
        } catch (e) {
          // removed between the two reads, or a record without a body
          if (!fs.isMissing(e)) throw e
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
      version: async (id) => (await orMissing(fs.stat(metaPath(id))))?.version,
      readText: (id) => orMissing(fs.readText(metaPath(id))),
      decode: (id, text) => decode("list", id, text).meta,
      quarantine
    }

    const list = () =>
      Effect.flatMap(
        io("list", undefined, async () => index.list(DiskLayout.idsOf(await fs.readdir(dirs.meta), "json"), fs.now(), listIo)),
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
            await fs.rename(tmp, metaPath(id))
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
            await fs.unlink(metaPath(id))
          } catch (e) {
            throw fs.isMissing(e) ? notFound("remove", id) : e
          }
          await syncs.meta.sync()
          // no fsync of messages/: a body whose unlink a power loss undoes has
          // no record, and recovery removes it
          await ignoreMissing(fs.unlink(bodyPath(id)))
        }))

    // --- open and recover ----------------------------------------------------

    const recover = async (): Promise<Array<string>> => {
      const warnings: Array<string> = []
      await fs.mkdirp(root)
      for (const d of Object.values(dirs)) await fs.mkdirp(d)
      const layoutText = await orMissing(fs.readText(layout.layoutFile))
      if (layoutText === undefined) {
        const tmp = layout.layoutTmp(fs.pid, counter++)
        await writeDurable(tmp, DiskLayout.layoutText)
        await fs.rename(tmp, layout.layoutFile)
      } else if (!DiskLayout.isLayout(layoutText)) {
        throw DiskLayout.layoutError(layout.layoutFile, layoutText)
      }
      await fs.fsyncDir(root)

      // bodies are listed before records: a body created after this listing has its record in tmp/
      const bodies = DiskLayout.idsOf(await fs.readdir(dirs.messages), "eml")
      const records = new Set(DiskLayout.idsOf(await fs.readdir(dirs.meta), "json"))
      const writing = new Set<string>() // ids with a record in tmp/ of a live writer
      const now = fs.now()
      for (const name of await fs.readdir(dirs.tmp)) {
        const file = fs.join(dirs.tmp, name)
        const st = await fs.stat(file).catch(() => undefined)
        if (st === undefined) continue
        const verdict = DiskLayout.classifyTmp(name, now - st.mtimeMs, fs.pidAlive)
        if (verdict._tag === "Keep") {
          if (verdict.writing !== undefined) writing.add(verdict.writing)
          continue
        }
        await unlinkQuietly(file)
      }
      // (a lock still empty is one whose holder died between creating it and
      // writing its pid, or, for an instant, one being taken right now)
      for (const name of await fs.readdir(dirs.lock)) {
        const file = fs.join(dirs.lock, name)
        const [st, owner] = await Promise.all([fs.stat(file).catch(() => undefined), fs.readText(file).catch(() => "")])
        if (st !== undefined && DiskLayout.lockIsStale(now - st.mtimeMs, owner, staleMs, fs.pidAlive, true)) await unlinkQuietly(file)
      }

      // a body without a record was never acknowledged; a live writer's record
      // is in tmp/ from before its body was created until its commit
      let removedBodies = false
      for (const id of DiskLayout.orphanCandidates(bodies, records, writing)) {
        if (await exists(metaPath(id)).catch(() => false)) continue
        await unlinkQuietly(bodyPath(id))
        removedBodies = true
      }
      if (removedBodies) await syncs.messages.sync()

      for (const id of records) {
        const text = await orMissing(fs.readText(metaPath(id)))
        if (text === undefined) continue
        const size = (await orMissing(fs.stat(bodyPath(id))))?.size
        const problem = DiskLayout.recordProblem(id, metaPath(id), text, bodyPath(id), size)
        if (problem !== undefined) {
          await quarantine(id)
          warnings.push(DiskLayout.recoveryWarning(problem, id, dirs.corrupt))
        }
      }
      return warnings
    }

    const warnings = yield* io("open", undefined, recover)
    yield* Effect.forEach(warnings, (w) => Effect.logWarning(w))

    return QueueStorage.make({ insert, read, meta, list, update, remove })
  })
