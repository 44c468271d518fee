/**
 * `DenoDisk`: the disk `QueueStorage` on Deno's own file APIs (`Deno.open`,
 * `FsFile.sync`, `Deno.rename`, a directory opened read-only and synced).
 * The algorithm (durable writes, locks, updates, recovery at open, the
 * listing) is `@mailroom/protocol`'s `DiskStore`, the same as Node's
 * `DiskStorage`, over the same layout (`DiskLayout`, version 1), so either
 * runtime can open a queue directory the other wrote, and both can share
 * one directory at once (lock files are created with O_EXCL and carry the
 * holder's pid). See `DiskStore` for how a write is made durable.
 *
 * Whether a pid is alive is read from `/proc/<pid>` on Linux; elsewhere
 * other pids are assumed alive and only the lock age breaks a lock. Without
 * inode numbers or ctimes (not Linux or macOS) a listing reads every record.
 *
 * @since 0.1.0
 */
import { type Effect, Layer } from "effect"
import * as DiskLayout from "@mailroom/protocol/queue/DiskLayout"
import * as DiskStore from "@mailroom/protocol/queue/DiskStore"
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

const writeAll = async (file: Deno.FsFile, data: Uint8Array): Promise<void> => {
  let offset = 0
  while (offset < data.length) offset += await file.write(data.subarray(offset))
}

const encoder = new TextEncoder()

/** Writes `data` to the open file, fsyncs it (when `durable`) and closes it (closing it on failure too). */
const fill = async (fh: Deno.FsFile, data: Uint8Array | string, durable: boolean): Promise<void> => {
  try {
    await writeAll(fh, typeof data === "string" ? encoder.encode(data) : data)
    if (durable) await fh.sync()
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

const readDirNames = async (dir: string): Promise<Array<string>> => {
  const names: Array<string> = []
  for await (const e of Deno.readDir(dir)) names.push(e.name)
  return names
}

/** Deno's file operations for `DiskStore`. */
const denoFs: DiskStore.FileSystem = {
  pid: Deno.pid,
  pidAlive,
  resolve: resolvePath,
  join,
  isMissing,
  isTaken,
  toError,
  readText: (file) => Deno.readTextFile(file),
  readBytes: (file) => Deno.readFile(file),
  readdir: readDirNames,
  stat: async (file) => {
    const st = await Deno.stat(file)
    const version = st.ino === null || st.ctime === null || st.mtime === null
      ? undefined
      : { ino: st.ino, size: st.size, mtimeMs: st.mtime.getTime(), ctimeMs: st.ctime.getTime() }
    return { size: st.size, mtimeMs: st.mtime?.getTime() ?? 0, version }
  },
  createNew: async (file) => {
    const fh = await Deno.open(file, { write: true, createNew: true, mode: 0o600 })
    return {
      fill: (data, durable = true) => fill(fh, data, durable),
      abandon: async () => {
        try {
          fh.close()
        } catch {
          // already closed
        }
      }
    }
  },
  link: (from, to) => Deno.link(from, to),
  rename: (from, to) => Deno.rename(from, to),
  unlink: (file) => Deno.remove(file),
  mkdirp: (dir) => Deno.mkdir(dir, { recursive: true }),
  fsyncDir,
  now: () => Date.now(),
  sleep: (ms) => new Promise<void>((resolve) => setTimeout(resolve, ms))
}

/**
 * Opens (creating it when missing) and recovers the queue directory, and
 * returns the storage. Fails with `Io` when the directory cannot be used and
 * `Corrupt` when it holds a layout of another version.
 */
export const make = (options: Options): Effect.Effect<QueueStorage.Service, QueueStorage.StorageError> =>
  DiskStore.make(denoFs, options)

/** A layer with the Deno disk storage over `options.directory` (see `make`); each build opens and recovers it. */
export const layer = (options: Options): Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> =>
  Layer.effect(QueueStorage.QueueStorage, make(options))
