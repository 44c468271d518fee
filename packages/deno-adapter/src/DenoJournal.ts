/**
 * `DenoJournal`: the journal `QueueStorage` on Deno's own file APIs — an
 * append-only journal of segment files owned by ONE process, with group
 * commit of the data: every entry that arrives while a write and its fsync
 * run is written by the next write and acknowledged by the next single
 * `syncData`. One fsync per message for a lone writer (no directory fsync),
 * a fraction of one under concurrency. The engine, the format and the crash
 * reasoning are in `@mailroom/protocol/queue/Journal` and `JournalFrame`;
 * this module is the `Journal.Adapter` over `Deno.*`, the twin of
 * `@mailroom/node`'s `JournalStorage`: the same options, the same directory
 * (either runtime opens a journal the other wrote, one at a time).
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
 * ## Deno specifics
 *
 * - Appends: the active segment is opened with `Deno.open({ createNew,
 *   write })` (not `append`: see the prefill) and the adapter keeps the
 *   position of the next batch (a `seek` there when the cursor is
 *   elsewhere); Deno has no writev, so the chunks of a batch are copied
 *   into runs of at most 1 MiB (a larger chunk is written as it is) and
 *   each run is written, looped on short writes; then one
 *   `FsFile.syncData` (Deno has no `O_DSYNC` open option, unlike Node's
 *   write-through). A batch of at most 512 KiB, zeros included, is written
 *   with `FsFile.writeSync` (a copy into the page cache, on the main
 *   thread), so it costs one thread-pool round trip, its `syncData`; a
 *   bigger one with `FsFile.write`. A failed batch is cut off with
 *   `FsFile.truncate`.
 * - Zero prefill, as Node's `JournalStorage`: a batch under 64 KiB
 *   (`PREFILL_BELOW`) that would end past the file's written region is
 *   written with zeros up to 256 KiB (`PREFILL_BYTES`) past its end, in the
 *   same write (never past `segmentBytes`); the following small batches
 *   overwrite zeros already on the disk, so their `syncData` has no file
 *   size or extent to commit (on ext4, ~0.21 ms instead of ~0.29 ms for a
 *   5,300-byte durable write). A larger batch crossing the end is written
 *   alone. A crash leaves zeros after the last batch, which replay takes
 *   for a clean end (`JournalReplay`); a graceful `close` cuts them off;
 *   zeros that do not fit (ENOSPC once the batch is written) only stop the
 *   prefill.
 * - Reads: Deno has no positional read, so each segment keeps a few
 *   read-only handles (at most 4, opened on demand); a read takes an idle
 *   one, `seek`s and `read`s in a loop, and gives it back. After a segment
 *   is unlinked its handles are closed once the reads using them are done.
 * - Directories are fsynced as `DenoDisk` does: opened read-only, `sync`ed.
 * - The checksum is Deno's `node:zlib` `crc32` (native), else the engine's
 *   JavaScript CRC-32.
 * - Ownership: `owner.lock` holds the pid; a temporary file holding it is
 *   hard-linked (`Deno.link`) to the lock, so the lock is never seen empty.
 *   Whether an owner is alive is read from `/proc/<pid>` on Linux, and
 *   asked with `kill(pid, 0)` (Deno's `node:process`) elsewhere. A lock of a
 *   dead pid, or of this pid left by an earlier process, is taken over; a
 *   live owner is refused with `Io` naming its pid; a directory this module
 *   already has open is refused as well. Taking over a stale lock is not
 *   atomic against a second process doing the same at the same instant:
 *   start one owner.
 *
 * What it deliberately does not do: share the directory with another
 * process (leases are in memory), hold bodies in memory after the write,
 * or read DenoDisk's layout (a `mailroom-queue` directory is refused).
 *
 * @since 0.1.0
 */
import process from "node:process"
import * as zlib from "node:zlib"
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import * as DiskLayout from "@mailroom/protocol/queue/DiskLayout"
import * as Journal from "@mailroom/protocol/queue/Journal"
import * as JournalFrame from "@mailroom/protocol/queue/JournalFrame"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"

/** Options of `make`, `open` and `layer` (the same as Node's `JournalStorage`). */
export interface Options extends Journal.Options {
  /** The journal directory; created when missing. */
  readonly directory: string
}

type StorageError = QueueStorage.StorageError

// --- small file-system helpers ----------------------------------------------

const codeOf = DiskLayout.codeOf

const isMissing = (e: unknown): boolean => e instanceof Deno.errors.NotFound || codeOf(e) === "ENOENT"
const isTaken = (e: unknown): boolean => e instanceof Deno.errors.AlreadyExists || codeOf(e) === "EEXIST"

/** ENOSPC/EDQUOT (by code or message: Deno's errors may carry no code) → `Full`, anything else → `Io`. */
const toError = (operation: string, e: unknown): StorageError => DiskLayout.toError(operation, undefined, e, codeOf(e), true)

const io = <A>(operation: string, f: () => Promise<A>): Effect.Effect<A, StorageError> =>
  Effect.tryPromise({ try: f, catch: (e) => toError(operation, e) })

const resolvePath = (p: string): string => (p.startsWith("/") ? p : `${Deno.cwd()}/${p}`).replace(/\/{2,}/g, "/").replace(/\/+$/, "") || "/"

const writeAll = async (fh: Deno.FsFile, data: Uint8Array): Promise<void> => {
  for (let offset = 0; offset < data.length;) {
    const n = await fh.write(data.subarray(offset))
    if (n <= 0) throw QueueStorage.error("Io", "write", undefined, "write wrote nothing")
    offset += n
  }
}

/** The zero-prefill rule, the same on Node and Deno (see `JournalFrame.zerosAfter`). */
export const { PREFILL_BELOW, PREFILL_BYTES, zerosAfter } = JournalFrame

const ZEROS = new Uint8Array(PREFILL_BYTES)

/** The largest run of chunks copied together into one `write`. */
const RUN_BYTES = 1024 * 1024

/** `chunks` as few buffers: consecutive chunks copied into runs of at most `RUN_BYTES`; a larger chunk stays alone. */
export const coalesce = (chunks: ReadonlyArray<Uint8Array>): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let run: Array<Uint8Array> = []
  let runBytes = 0
  const flush = () => {
    if (run.length === 1) out.push(run[0]!)
    else if (run.length > 1) {
      const joined = new Uint8Array(runBytes)
      let at = 0
      for (const c of run) {
        joined.set(c, at)
        at += c.length
      }
      out.push(joined)
    }
    run = []
    runBytes = 0
  }
  for (const c of chunks) {
    if (c.length === 0) continue
    if (runBytes + c.length > RUN_BYTES) flush()
    if (c.length >= RUN_BYTES) out.push(c)
    else {
      run.push(c)
      runBytes += c.length
    }
  }
  flush()
  return out
}

const fsyncDir = async (dir: string): Promise<void> => {
  const fh = await Deno.open(dir, { read: true })
  try {
    await fh.sync()
  } finally {
    fh.close()
  }
}

const pidAlive = (pid: number): boolean => {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  if (pid === Deno.pid) return true
  if (Deno.build.os === "linux") {
    try {
      Deno.statSync(`/proc/${pid}`)
      return true
    } catch {
      return false
    }
  }
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

/** Read handles of one segment. */
interface Reader {
  readonly file: string
  readonly idle: Array<Deno.FsFile>
  /** Handles open (idle and in use). */
  open: number
  readonly waiters: Array<(fh: Deno.FsFile) => void>
  unlinked: boolean
}

const MAX_READ_HANDLES = 4

const take = async (r: Reader): Promise<Deno.FsFile> => {
  const idle = r.idle.pop()
  if (idle !== undefined) return idle
  if (r.open >= MAX_READ_HANDLES) return new Promise((resolve) => r.waiters.push(resolve))
  r.open++
  try {
    return await Deno.open(r.file, { read: true })
  } catch (e) {
    r.open--
    throw e
  }
}

const give = (r: Reader, fh: Deno.FsFile): void => {
  const w = r.waiters.shift()
  if (w !== undefined) return w(fh)
  if (r.unlinked) {
    r.open--
    fh.close()
  } else r.idle.push(fh)
}

/** Closes the idle handles of an unlinked (or released) segment; the others close when given back. */
const retire = (r: Reader): void => {
  r.unlinked = true
  for (const fh of r.idle.splice(0)) {
    r.open--
    fh.close()
  }
}

/**
 * The `Journal.Adapter` over the directory `directory` (made absolute). Use
 * `make`/`open` unless you want to wrap it (tests inject failures this way).
 */
export const adapter = (directory: string): Journal.Adapter => {
  const root = resolvePath(directory)
  const file = (name: string) => (name === "" ? root : `${root}/${name}`)
  const lockFile = `${root}/owner.lock`
  const readers = new Map<string, Reader>()

  const acquire = async (): Promise<string> => {
    await Deno.mkdir(root, { recursive: true })
    for (const d of ["journal", "corrupt"]) await Deno.mkdir(file(d), { recursive: true })
    const key = await Deno.realPath(root)
    if (openHere.has(key)) {
      throw QueueStorage.error("Io", "open", undefined, `${root} is already open in this process: a journal has one owner`)
    }
    openHere.add(key)
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        const tmp = `${root}/owner.lock.${Deno.pid}.${(counter++).toString(36)}`
        await Deno.writeTextFile(tmp, `${Deno.pid}\n`, { createNew: true, mode: 0o600 })
        try {
          await Deno.link(tmp, lockFile)
          return key
        } catch (e) {
          if (!isTaken(e)) throw e
        } finally {
          await Deno.remove(tmp).catch(() => undefined)
        }
        let text: string
        try {
          text = await Deno.readTextFile(lockFile)
        } catch (e) {
          if (isMissing(e)) continue
          throw e
        }
        const owner = JournalFrame.ownerOf(text, Deno.pid, pidAlive)
        if (owner._tag === "Live") {
          throw QueueStorage.error(
            "Io",
            "open",
            undefined,
            `${lockFile} is held by pid ${owner.pid}, which is running: a journal has one owner process (stop it, or use another directory)`
          )
        }
        // a dead owner's lock (or ours from a previous life): take it over
        await Deno.remove(lockFile).catch((e) => (isMissing(e) ? undefined : Promise.reject(e)))
      }
      throw QueueStorage.error("Io", "open", undefined, `${lockFile}: could not take the lock`)
    } catch (e) {
      openHere.delete(key)
      throw e
    }
  }

  const releaseLock = (key: string) =>
    Effect.promise(async () => {
      for (const r of readers.values()) retire(r)
      readers.clear()
      const text = await Deno.readTextFile(lockFile).catch(() => "")
      if (text.trim() === String(Deno.pid)) await Deno.remove(lockFile).catch(() => undefined)
      openHere.delete(key)
    })

  const lock: Effect.Effect<void, StorageError, Scope.Scope> = Effect.asVoid(
    Effect.acquireRelease(io("open", acquire), releaseLock)
  )

  const readAt = (name: string, offset: number, length: number) =>
    io("read", async () => {
      let r = readers.get(name)
      if (r === undefined) {
        r = { file: file(name), idle: [], open: 0, waiters: [], unlinked: false }
        readers.set(name, r)
      }
      const buf = new Uint8Array(length)
      if (length === 0) return buf
      const fh = await take(r)
      try {
        await fh.seek(offset, Deno.SeekMode.Start)
        let got = 0
        while (got < length) {
          const n = await fh.read(buf.subarray(got))
          if (n === null || n === 0) break
          got += n
        }
        return got === length ? buf : buf.subarray(0, got)
      } finally {
        give(r, fh)
      }
    })

  /** Batches (zeros included) up to this size are written with `writeSync`. */
  const SYNC_WRITE_MAX = 512 * 1024

  const create = (name: string, limit?: number) =>
    io("write", async (): Promise<Journal.AppendHandle> => {
      const fh = await Deno.open(file(name), { write: true, createNew: true, mode: 0o600 })
      const cap = limit ?? Number.POSITIVE_INFINITY
      /** Where the next batch goes: the end of what was appended. */
      let position = 0
      /** The end of the file's written region (batches, then zeros). */
      let prefilled = 0
      /** Where the file's cursor is; -1 when unknown (after a failed write). */
      let cursor = 0
      let closed = false
      return {
        append: (chunks) =>
          io("write", async () => {
            let length = 0
            for (const c of chunks) length += c.length
            const zeros = zerosAfter(position, length, prefilled, cap)
            const start = position
            if (cursor !== start) {
              await fh.seek(start, Deno.SeekMode.Start)
              cursor = start
            }
            // bytes of this batch (data, then zeros) written so far
            let written = 0
            try {
              // a small batch is copied into the page cache at once (writeSync): one thread-pool
              // round trip per batch (its syncData) instead of two; a big one goes through the pool
              const small = length + zeros <= SYNC_WRITE_MAX
              for (const run of coalesce(zeros > 0 ? [...chunks, ZEROS.subarray(0, zeros)] : chunks)) {
                for (let offset = 0; offset < run.length;) {
                  const n = small ? fh.writeSync(run.subarray(offset)) : await fh.write(run.subarray(offset))
                  if (n <= 0) throw QueueStorage.error("Io", "write", undefined, `${file(name)}: write wrote nothing`)
                  offset += n
                  written += n
                }
              }
            } catch (e) {
              cursor = -1
              // the batch is written: failing to write zeros after it only stops the prefill
              if (written < length) throw e
            }
            if (cursor !== -1) cursor = start + written
            position = start + length
            prefilled = Math.max(prefilled, start + written)
          }),
        sync: io("write", () => fh.syncData()),
        truncate: (size) =>
          io("write", () => {
            position = size
            prefilled = size
            cursor = -1
            return fh.truncate(size)
          }),
        // a graceful close gives the zeros back: the file ends with its last batch, as without prefill
        close: Effect.promise(async () => {
          if (closed) return
          closed = true
          if (prefilled > position) await fh.truncate(position).catch(() => undefined)
          try {
            fh.close()
          } catch {
            // already closed
          }
        })
      }
    })

  const writeNew = (name: string, chunks: ReadonlyArray<Uint8Array>) =>
    io("open", async () => {
      let fh: Deno.FsFile
      try {
        fh = await Deno.open(file(name), { write: true, createNew: true, mode: 0o600 })
      } catch (e) {
        if (isTaken(e)) return false
        throw e
      }
      try {
        for (const run of coalesce(chunks)) await writeAll(fh, run)
        await fh.sync()
      } finally {
        fh.close()
      }
      return true
    })

  const unlink = (name: string) =>
    io("remove", async () => {
      await Deno.remove(file(name)).catch((e) => (isMissing(e) ? undefined : Promise.reject(e)))
      const r = readers.get(name)
      if (r !== undefined) {
        readers.delete(name)
        retire(r)
      }
    })

  const list = (dir: string) =>
    io("open", async () => {
      const names: Array<string> = []
      try {
        for await (const e of Deno.readDir(file(dir))) names.push(e.name)
      } catch (e) {
        if (!isMissing(e)) throw e
      }
      return names
    })

  return {
    root,
    lock,
    readText: (name) => io("open", () => Deno.readTextFile(file(name)).catch((e) => (isMissing(e) ? undefined : Promise.reject(e)))),
    writeNew,
    list,
    readAt,
    create,
    unlink,
    syncDir: (dir) => io("write", () => fsyncDir(file(dir))),
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
