/**
 * `DiskStorage`: the default `QueueStorage` on Node, a directory of plain
 * files that keeps the one promise: `write` resolves only once the message
 * bytes, its record and both directory entries are fsynced, so a `250`
 * survives `kill -9` and power loss (on a file system that honours fsync).
 *
 * The algorithm (durable writes, locks, updates, recovery at open, the
 * listing) is `@mailroom/protocol`'s `DiskStore`, shared with Deno's
 * `DenoDisk`; the layout is `DiskLayout`'s, version 1:
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
 * This module gives `DiskStore` its file operations: Node's callback API on
 * plain descriptors (no `FileHandle` objects), small files read with one
 * `readFile`, a pid checked with signal 0.
 *
 * @since 0.1.0
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { type Effect, Layer } from "effect"
import * as DiskLayout from "@mailroom/protocol/queue/DiskLayout"
import * as DiskStore from "@mailroom/protocol/queue/DiskStore"
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

/** Writes `data` to the open descriptor, fsyncs it (when `durable`) and closes it (closing it on failure too). */
const fill = async (fd: number, data: Uint8Array | string, durable: boolean): Promise<void> => {
  let failed = true
  try {
    await writeFd(fd, data)
    if (durable) await fsyncFd(fd)
    failed = false
  } finally {
    // a close error after a successful sync still fails the write
    if (failed) await closeFd(fd).catch(() => undefined)
    else await closeFd(fd)
  }
}

const fsyncDir = async (dir: string): Promise<void> => {
  const fd = await openFd(dir, "r")
  try {
    await fsyncFd(fd)
  } finally {
    await closeFd(fd)
  }
}

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

/** A `Uint8Array` view of what `readFile` returned (a `Buffer`), without copying. */
const bytes = (b: Uint8Array): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength)

/** Node's file operations for `DiskStore`. */
const nodeFs: DiskStore.FileSystem = {
  pid: process.pid,
  pidAlive,
  resolve: (p) => path.resolve(p),
  join: (...parts) => path.join(...parts),
  isMissing,
  isTaken: (e) => codeOf(e) === "EEXIST",
  toError,
  readText,
  readBytes: async (file) => bytes(await readBytes(file)),
  readdir,
  stat: async (file) => {
    const st = await stat(file)
    return { size: st.size, mtimeMs: st.mtimeMs, version: { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs } }
  },
  createNew: async (file) => {
    const fd = await openFd(file, "wx", 0o600)
    return { fill: (data, durable = true) => fill(fd, data, durable), abandon: () => closeFd(fd).catch(() => undefined) }
  },
  link,
  rename,
  unlink,
  mkdirp,
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
  DiskStore.make(nodeFs, options)

/** A layer with the disk storage over `options.directory` (see `make`); each build opens and recovers it. */
export const layer = (options: Options): Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> =>
  Layer.effect(QueueStorage.QueueStorage, make(options))
