/**
 * `JournalStorage`: the journal `QueueStorage` on Node — an append-only
 * journal of segment files owned by ONE process, with group commit of the
 * data: every entry that arrives while a write runs is written by the next
 * single write, which returns once it is durable. One durable write per
 * message for a lone writer (no directory fsync), a fraction of one under
 * concurrency. The engine, the format and the crash reasoning are in
 * `@mailroom/protocol/queue/Journal` and `JournalFrame`; this module is the
 * `Journal.Adapter` over `node:fs`.
 *
 * ## Layout, version 1
 *
 * ```
 * <dir>/layout.json            {"format":"mailroom-journal","v":1}
 * <dir>/owner.lock             the owner's pid
 * <dir>/journal/<n>.seg        segments: frames of INSERT, META, REMOVE
 * <dir>/corrupt/…              quarantined entries, for a human
 * ```
 *
 * ## Node specifics
 *
 * - Appends: the active segment is opened `O_WRONLY|O_CREAT|O_EXCL|O_DSYNC`
 *   (write-through: a write returns only once its data, and the file size
 *   it needs, are durable, the guarantee of an fdatasync after it), and a
 *   batch is ONE positional `fs.writev` at the end of what was appended
 *   (the adapter keeps that position; looped on a short write), so `sync`
 *   has nothing left to do. That is one libuv thread-pool round trip per
 *   batch instead of two (writev, then fdatasync): ~0.29 ms instead of
 *   ~0.37 ms for a 5,300-byte write on ext4. Where `O_DSYNC` does not exist
 *   (Windows) the file is opened without it and `sync` is an `fdatasync`.
 *   The callback API is used (no FileHandle, no promise per call).
 * - Zero prefill: the file's written region is kept ahead of the appends.
 *   A batch under 64 KiB (`PREFILL_BELOW`) that would end past it is
 *   written with zeros up to 256 KiB (`PREFILL_BYTES`) past its end, in the
 *   same writev (one shared zero buffer; never past `segmentBytes`); the
 *   following small batches overwrite zeros that are already on the disk,
 *   so their durable write has no file size or extent to commit (~0.21 ms
 *   instead of ~0.29 ms). A larger batch that crosses the region's end is
 *   written alone: its data dominates, and its bytes are not doubled. A
 *   crash leaves zeros after the last batch, which replay takes for a clean
 *   end (`JournalReplay`); a graceful `close` cuts them off, and
 *   `truncate` (after a failed batch) ends the region there. Zeros that do
 *   not fit (ENOSPC after the batch itself is written) only stop the
 *   prefill.
 * - Reads: one read-only fd per segment, opened on first use, positional
 *   `fs.read`; after a segment is unlinked its fd is closed once the last
 *   read using it is done (closing earlier could let a read land in a file
 *   that reused the fd number).
 * - The checksum is `zlib.crc32` (Node 22.2+, 20.15+), else the engine's
 *   JavaScript CRC-32.
 * - Ownership: `owner.lock` holds the pid and is created exclusively (a
 *   temporary file holding the pid is hard-linked to it, so the lock is never
 *   seen empty). A lock of a dead pid, or of this pid left over by an earlier
 *   process, is taken over; a live owner is refused with `Io` naming its
 *   pid. A directory this process already has open is refused as well (a
 *   module-level set). Like DiskStorage's lock files, taking over a stale
 *   lock is not atomic against a second process doing the same at the same
 *   instant: start one owner.
 *
 * What it deliberately does not do: share the directory with another
 * process (leases are in memory), hold bodies in memory after the write,
 * or read DiskStorage's layout (a `mailroom-queue` directory is refused).
 *
 * @since 0.1.0
 */
import * as fs from "node:fs"
import * as fsp from "node:fs/promises"
import * as path from "node:path"
import * as zlib from "node:zlib"
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import * as DiskLayout from "@mailroom/protocol/queue/DiskLayout"
import * as Journal from "@mailroom/protocol/queue/Journal"
import * as JournalFrame from "@mailroom/protocol/queue/JournalFrame"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"

/** Options of `make`, `open` and `layer`. */
export interface Options extends Journal.Options {
  /** The journal directory; created when missing. */
  readonly directory: string
}

type StorageError = QueueStorage.StorageError

const codeOf = DiskLayout.codeOf

const toError = (operation: string, e: unknown): StorageError => DiskLayout.toError(operation, undefined, e, codeOf(e))

const tryPromise = <A>(operation: string, f: () => Promise<A>): Effect.Effect<A, StorageError> =>
  Effect.tryPromise({ try: f, catch: (e) => toError(operation, e) })

const pidAlive = (pid: number): boolean => {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return codeOf(e) === "EPERM"
  }
}

/** The directories (real paths) open in this process: a journal has one owner. */
const openHere = new Set<string>()

let counter = 0

const nativeCrc32: JournalFrame.Crc32 | undefined = typeof zlib.crc32 === "function"
  ? (data, previous) => zlib.crc32(data, previous)
  : undefined

/** `O_DSYNC` where the platform has it (not on Windows): each write returns once its data is durable. */
const WRITE_THROUGH = typeof fs.constants.O_DSYNC === "number"

const CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | (WRITE_THROUGH ? fs.constants.O_DSYNC : 0)

/** The zero-prefill rule, the same on Node and Deno (see `JournalFrame.zerosAfter`). */
export const { PREFILL_BELOW, PREFILL_BYTES, zerosAfter } = JournalFrame

const ZEROS = new Uint8Array(PREFILL_BYTES)

/** The chunks left once `written` bytes of `chunks` are written. */
const rest = (chunks: ReadonlyArray<Uint8Array>, written: number): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (const c of chunks) {
    if (written >= c.length) {
      written -= c.length
      continue
    }
    out.push(written > 0 ? c.subarray(written) : c)
    written = 0
  }
  return out
}

interface Reader {
  readonly fd: number
  refs: number
  unlinked: boolean
}

/**
 * The `Journal.Adapter` over the directory `directory` (made absolute). Use
 * `make`/`open` unless you want to wrap it (tests inject failures this way).
 */
export const adapter = (directory: string): Journal.Adapter => {
  const root = path.resolve(directory)
  const file = (name: string) => path.join(root, ...name.split("/"))
  const lockFile = path.join(root, "owner.lock")
  const readers = new Map<string, Reader>()

  const closeReader = (r: Reader) => fs.close(r.fd, () => undefined)

  const acquire = async (): Promise<string> => {
    await fsp.mkdir(root, { recursive: true })
    for (const d of ["journal", "corrupt"]) await fsp.mkdir(path.join(root, d), { recursive: true })
    const key = await fsp.realpath(root)
    if (openHere.has(key)) {
      throw QueueStorage.error("Io", "open", undefined, `${root} is already open in this process: a journal has one owner`)
    }
    openHere.add(key)
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        const tmp = path.join(root, `owner.lock.${process.pid}.${(counter++).toString(36)}`)
        await fsp.writeFile(tmp, `${process.pid}\n`, { flag: "wx", mode: 0o600 })
        try {
          await fsp.link(tmp, lockFile)
          return key
        } catch (e) {
          if (codeOf(e) !== "EEXIST") throw e
        } finally {
          await fsp.unlink(tmp).catch(() => undefined)
        }
        let text: string
        try {
          text = await fsp.readFile(lockFile, "utf8")
        } catch (e) {
          if (codeOf(e) === "ENOENT") continue
          throw e
        }
        const owner = JournalFrame.ownerOf(text, process.pid, pidAlive)
        if (owner._tag === "Live") {
          throw QueueStorage.error(
            "Io",
            "open",
            undefined,
            `${lockFile} is held by pid ${owner.pid}, which is running: a journal has one owner process (stop it, or use another directory)`
          )
        }
        // a dead owner's lock (or ours from a previous life): take it over
        await fsp.unlink(lockFile).catch((e) => (codeOf(e) === "ENOENT" ? undefined : Promise.reject(e)))
      }
      throw QueueStorage.error("Io", "open", undefined, `${lockFile}: could not take the lock`)
    } catch (e) {
      openHere.delete(key)
      throw e
    }
  }

  const releaseLock = (key: string) =>
    Effect.promise(async () => {
      for (const r of readers.values()) {
        r.unlinked = true
        if (r.refs === 0) closeReader(r)
      }
      readers.clear()
      const text = await fsp.readFile(lockFile, "utf8").catch(() => "")
      if (text.trim() === String(process.pid)) await fsp.unlink(lockFile).catch(() => undefined)
      openHere.delete(key)
    })

  const lock: Effect.Effect<void, StorageError, Scope.Scope> = Effect.asVoid(
    Effect.acquireRelease(
      Effect.tryPromise({ try: acquire, catch: (e) => (e instanceof QueueStorage.StorageError ? e : toError("open", e)) }),
      releaseLock
    )
  )

  const readAt = (name: string, offset: number, length: number) =>
    Effect.callback<Uint8Array, StorageError>((resume) => {
      let r = readers.get(name)
      if (r === undefined) {
        try {
          r = { fd: fs.openSync(file(name), "r"), refs: 0, unlinked: false }
        } catch (e) {
          return resume(Effect.fail(toError("read", e)))
        }
        readers.set(name, r)
      }
      const reader = r
      reader.refs++
      const buf = new Uint8Array(length)
      let got = 0
      const finish = (result: Effect.Effect<Uint8Array, StorageError>) => {
        reader.refs--
        if (reader.unlinked && reader.refs === 0) closeReader(reader)
        resume(result)
      }
      const step = () =>
        fs.read(reader.fd, buf, got, length - got, offset + got, (err, n) => {
          if (err !== null) return finish(Effect.fail(toError("read", err)))
          got += n
          if (n === 0 || got === length) return finish(Effect.succeed(got === length ? buf : buf.subarray(0, got)))
          step()
        })
      if (length === 0) finish(Effect.succeed(buf))
      else step()
    })

  const create = (name: string, limit?: number) =>
    Effect.callback<Journal.AppendHandle, StorageError>((resume) => {
      fs.open(file(name), CREATE, 0o600, (err, fd) => {
        if (err !== null) return resume(Effect.fail(toError("write", err)))
        const cap = limit ?? Number.POSITIVE_INFINITY
        /** Where the next batch goes: the end of what was appended. */
        let position = 0
        /** The end of the file's written region (batches, then zeros). */
        let prefilled = 0
        const append = (chunks: ReadonlyArray<Uint8Array>) =>
          Effect.callback<void, StorageError>((done) => {
            let length = 0
            for (const c of chunks) length += c.length
            const zeros = zerosAfter(position, length, prefilled, cap)
            const all = zeros > 0 ? [...chunks, ZEROS.subarray(0, zeros)] : chunks
            const start = position
            // bytes of this batch (data, then zeros) written so far
            let written = 0
            const finish = () => {
              position = start + length
              prefilled = Math.max(prefilled, start + written)
              done(Effect.void)
            }
            const step = (bufs: ReadonlyArray<Uint8Array>) => {
              if (bufs.length === 0) return finish()
              let total = 0
              for (const b of bufs) total += b.length
              fs.writev(fd, bufs, start + written, (e, n) => {
                // the batch is written (and, write-through, durable): failing to write zeros after it only stops the prefill
                if (e !== null) return written >= length ? finish() : done(Effect.fail(toError("write", e)))
                written += n
                if (n === total) return finish()
                if (n === 0) {
                  return written >= length
                    ? finish()
                    : done(Effect.fail(QueueStorage.error("Io", "write", undefined, `${file(name)}: writev wrote nothing`)))
                }
                step(rest(bufs, n))
              })
            }
            step(all)
          })
        const sync = WRITE_THROUGH ? Effect.void : Effect.callback<void, StorageError>((done) => {
          fs.fdatasync(fd, (e) => done(e === null ? Effect.void : Effect.fail(toError("write", e))))
        })
        const truncate = (size: number) =>
          Effect.callback<void, StorageError>((done) => {
            position = size
            prefilled = size
            fs.ftruncate(fd, size, (e) => done(e === null ? Effect.void : Effect.fail(toError("write", e))))
          })
        // a graceful close gives the zeros back: the file ends with its last batch, as without prefill
        const close = Effect.callback<void>((done) => {
          const end = () => fs.close(fd, () => done(Effect.void))
          if (prefilled > position) fs.ftruncate(fd, position, end)
          else end()
        })
        resume(Effect.succeed({ append, sync, truncate, close }))
      })
    })

  const writeNew = (name: string, chunks: ReadonlyArray<Uint8Array>) =>
    tryPromise("open", async () => {
      let fh: fsp.FileHandle
      try {
        fh = await fsp.open(file(name), "wx", 0o600)
      } catch (e) {
        if (codeOf(e) === "EEXIST") return false
        throw e
      }
      try {
        await fh.writev(chunks as Array<Uint8Array>)
        await fh.sync()
      } finally {
        await fh.close()
      }
      return true
    })

  const unlink = (name: string) =>
    tryPromise("remove", async () => {
      await fsp.unlink(file(name)).catch((e) => (codeOf(e) === "ENOENT" ? undefined : Promise.reject(e)))
      const r = readers.get(name)
      if (r !== undefined) {
        readers.delete(name)
        r.unlinked = true
        if (r.refs === 0) closeReader(r)
      }
    })

  const syncDir = (dir: string) =>
    tryPromise("write", async () => {
      const fh = await fsp.open(dir === "" ? root : file(dir), "r")
      try {
        await fh.sync()
      } finally {
        await fh.close()
      }
    })

  return {
    root,
    lock,
    readText: (name) =>
      tryPromise("open", () => fsp.readFile(file(name), "utf8").catch((e) => (codeOf(e) === "ENOENT" ? undefined : Promise.reject(e)))),
    writeNew,
    list: (dir) =>
      tryPromise("open", () => fsp.readdir(file(dir)).catch((e) => (codeOf(e) === "ENOENT" ? [] : Promise.reject(e)))),
    readAt,
    create,
    unlink,
    syncDir,
    crc32: nativeCrc32
  }
}

/**
 * Opens the journal in `options.directory` (see `Journal.make`) and returns
 * it with its counters and maintenance hook. Scoped: closing the scope
 * writes pending leases, fsyncs and releases ownership.
 */
export const open = (options: Options): Effect.Effect<Journal.Journal, StorageError, Scope.Scope> =>
  Journal.make(adapter(options.directory), options)

/** The journal storage over `options.directory` (see `open`). */
export const make = (options: Options): Effect.Effect<QueueStorage.Service, StorageError, Scope.Scope> =>
  Effect.map(open(options), (j) => j.storage)

/** A layer with the journal storage over `options.directory`; each build opens and replays it, and owns it until released. */
export const layer = (options: Options): Layer.Layer<QueueStorage.QueueStorage, StorageError> =>
  Layer.effect(QueueStorage.QueueStorage, make(options))
