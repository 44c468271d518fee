/**
 * `DiskLayout`: the runtime-free rules of the disk queue directory, version 1,
 * shared by `@mailroom/node`'s `DiskStorage` and `@mailroom/deno`'s
 * `DenoDisk`, so both runtimes read and write one directory the same way:
 *
 * ```
 * <dir>/layout.json          {"format":"mailroom-queue","v":1}
 * <dir>/messages/<id>.eml    the raw message bytes, exactly as received
 * <dir>/meta/<id>.json       the record (QueueStorage.encodeRecord)
 * <dir>/tmp/<id>.<pid>.<n>.{eml,json}   writes in progress
 * <dir>/tmp/layout.<pid>.<n>.json       the layout file being created
 * <dir>/lock/<id>.lock       a short-lived lock around one metadata update
 * <dir>/corrupt/<id>.<ms>.{eml,json}    quarantined files, for a human
 * ```
 *
 * It holds the directory and file names (`paths`, built with the caller's
 * own `join`), the layout file's content and its check, the record's text
 * form (JSON around `QueueStorage.encodeRecord`/`decodeRecord`), the
 * decisions recovery takes on a listing (which files in `tmp/` and `lock/`
 * are left over, which bodies are orphans, which records are quarantined),
 * the mapping of an errno code to a `StorageError` reason, the storages'
 * common `Options`, and three in-process pieces over functions the adapter
 * supplies: `GroupCommit` (one directory fsync serves every caller that
 * arrived while the previous one ran), `KeyedQueue` (one update of an id at
 * a time within the process) and `RecordIndex` (a listing reads only the
 * records whose file changed). `DiskStore` builds the storage from them.
 *
 * What it deliberately does not do: any I/O. Reading, writing, fsync,
 * renames, directory listings, the clock and whether a pid is alive are the
 * adapters'; they pass plain values (names, ages in ms, a `pidAlive`
 * function, the fsync to group) in and act on the answers. No timers: the
 * lock file's wait loop stays in the adapters.
 *
 * @since 0.1.0
 */
import * as Result from "effect/Result"
import type * as Envelope from "../envelope/Envelope.ts"
import * as QueueStorage from "./QueueStorage.ts"

/** Options of the disk storages' `make` and `layer`. */
export interface Options {
  /** The queue directory; created when missing. */
  readonly directory: string
  /** A lock file older than this is taken as left over by a crash (default 30 000 ms). */
  readonly lockStaleMs?: number | undefined
  /** How long an update waits for a busy lock before failing with `Io` (default 10 000 ms). */
  readonly lockWaitMs?: number | undefined
}

/** Default of `Options.lockStaleMs`. */
export const defaultLockStaleMs = 30_000

/** Default of `Options.lockWaitMs`. */
export const defaultLockWaitMs = 10_000

/** The content of `layout.json` (as JSON). */
export const LAYOUT = { format: "mailroom-queue", v: 1 } as const

/** The exact text written to a new `layout.json`. */
export const layoutText: string = JSON.stringify(LAYOUT) + "\n"

/** The subdirectories of the queue directory, in creation order. */
export const directoryNames = ["messages", "meta", "tmp", "lock", "corrupt"] as const

/** The absolute directories of one queue directory. */
export interface Directories {
  readonly messages: string
  readonly meta: string
  readonly tmp: string
  readonly lock: string
  readonly corrupt: string
}

/** Every path of one queue directory, built with the runtime's `join`. */
export interface Paths {
  readonly root: string
  readonly dirs: Directories
  readonly layoutFile: string
  /** `messages/<id>.eml`. */
  readonly body: (id: string) => string
  /** `meta/<id>.json`. */
  readonly record: (id: string) => string
  /** `lock/<id>.lock`. */
  readonly lock: (id: string) => string
  /** `tmp/<id>.<pid>.<n>.<ext>`, `n` in base 36. */
  readonly tmp: (id: string, pid: number, n: number, ext: "eml" | "json") => string
  /** `tmp/layout.<pid>.<n>.json`. */
  readonly layoutTmp: (pid: number, n: number) => string
  /** `corrupt/<id>.<stamp>.<ext>`. */
  readonly quarantine: (id: string, stamp: number, ext: "eml" | "json") => string
}

/** The paths under `root` (already absolute), joined with `join`. */
export const paths = (root: string, join: (...parts: Array<string>) => string): Paths => {
  const dirs: Directories = {
    messages: join(root, "messages"),
    meta: join(root, "meta"),
    tmp: join(root, "tmp"),
    lock: join(root, "lock"),
    corrupt: join(root, "corrupt")
  }
  return {
    root,
    dirs,
    layoutFile: join(root, "layout.json"),
    body: (id) => join(dirs.messages, `${id}.eml`),
    record: (id) => join(dirs.meta, `${id}.json`),
    lock: (id) => join(dirs.lock, `${id}.lock`),
    tmp: (id, pid, n, ext) => join(dirs.tmp, `${id}.${pid}.${n.toString(36)}.${ext}`),
    layoutTmp: (pid, n) => join(dirs.tmp, `layout.${pid}.${n.toString(36)}.json`),
    quarantine: (id, stamp, ext) => join(dirs.corrupt, `${id}.${stamp}.${ext}`)
  }
}

const ID_FILE = /^([0-9A-Za-z_-]{1,128})\.(eml|json)$/
const TMP_FILE = /^([0-9A-Za-z_-]{1,128})\.(\d+)\.[0-9a-z]+\.(eml|json)$/
const LAYOUT_TMP_FILE = /^layout\.(\d+)\.[0-9a-z]+\.json$/

/** A file in `tmp/` older than this is left over whatever its pid (one day). */
export const TMP_MAX_AGE_MS = 24 * 3600 * 1000

/** The ids of the names in a listing that are `<id>.<ext>` (bodies: `eml`, records: `json`). */
export const idsOf = (names: Iterable<string>, ext: "eml" | "json"): Array<string> => {
  const ids: Array<string> = []
  for (const n of names) {
    const m = ID_FILE.exec(n)
    if (m !== null && m[2] === ext) ids.push(m[1]!)
  }
  return ids
}

/** `layout.json`'s text is a version 1 mailroom queue layout. */
export const isLayout = (text: string): boolean => {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return false
  }
  return typeof v === "object" && v !== null && (v as { v?: unknown }).v === 1 &&
    (v as { format?: unknown }).format === LAYOUT.format
}

/** The `Corrupt` error of a `layout.json` (at `file`) that is not `isLayout`. */
export const layoutError = (file: string, text: string): QueueStorage.StorageError =>
  QueueStorage.error("Corrupt", "open", undefined, `${file}: not a version 1 mailroom queue (${text.slice(0, 80)})`)

// --- records -------------------------------------------------------------------

/** The text of `meta/<id>.json` for an envelope and its metadata. */
export const encodeRecord = (envelope: Envelope.Envelope, meta: QueueStorage.Meta): string =>
  JSON.stringify(QueueStorage.encodeRecord(envelope, meta))

/**
 * Decodes the text of the record of `id` found at `file` (with the body when
 * given). Fails with `Corrupt` (naming `file`) when it is not JSON, not a
 * record, or the record of another id.
 */
export const decodeRecord = (
  operation: string,
  id: string,
  file: string,
  text: string,
  body?: Uint8Array
): Result.Result<QueueStorage.Stored, QueueStorage.StorageError> => {
  let u: unknown
  try {
    u = JSON.parse(text)
  } catch {
    return Result.fail(QueueStorage.error("Corrupt", operation, id, `${file}: not valid JSON`))
  }
  const r = QueueStorage.decodeRecord(u, body)
  if (Result.isFailure(r)) return Result.fail(QueueStorage.error("Corrupt", operation, id, `${file}: ${r.failure.detail}`))
  if (r.success.meta.id !== id) {
    return Result.fail(QueueStorage.error("Corrupt", operation, id, `${file}: holds id ${r.success.meta.id}`))
  }
  return r
}

/**
 * The envelope of a record's text, read without its body (for the queue
 * commands): `Corrupt` naming `file` when it is not JSON, else
 * `QueueStorage.decodeRecord`'s own failure.
 */
export const decodeEnvelope = (
  operation: string,
  id: string,
  file: string,
  text: string
): Result.Result<Envelope.Envelope, QueueStorage.StorageError> => {
  let u: unknown
  try {
    u = JSON.parse(text)
  } catch {
    return Result.fail(QueueStorage.error("Corrupt", operation, id, `${file}: not valid JSON`))
  }
  return Result.map(QueueStorage.decodeRecord(u), (s) => s.envelope)
}

// --- recovery decisions ------------------------------------------------------------

/** What recovery does with one file of `tmp/`. */
export type TmpVerdict =
  /** A live writer's file: left alone; `writing` is the id whose record it is, if it is one. */
  | { readonly _tag: "Keep"; readonly writing: string | undefined }
  /** Left over by a dead process, too old, or not ours: removed. */
  | { readonly _tag: "Remove" }

/**
 * Classifies a file of `tmp/` by its name and age: kept when it names a pid
 * that `pidAlive` says lives and it is younger than `TMP_MAX_AGE_MS`.
 */
export const classifyTmp = (name: string, ageMs: number, pidAlive: (pid: number) => boolean): TmpVerdict => {
  const m = TMP_FILE.exec(name)
  const l = m === null ? LAYOUT_TMP_FILE.exec(name) : null
  const pid = m !== null ? Number(m[2]) : l !== null ? Number(l[1]) : NaN
  if ((m !== null || l !== null) && pidAlive(pid) && ageMs < TMP_MAX_AGE_MS) {
    return { _tag: "Keep", writing: m !== null && m[3] === "json" ? m[1]! : undefined }
  }
  return { _tag: "Remove" }
}

/**
 * A lock file (of age `ageMs`, holding `owner`, the holder's pid as text) may
 * be broken. While taking a lock an empty file is a holder that has not yet
 * written its pid; at open (`atOpen`) it is one that died doing so.
 */
export const lockIsStale = (
  ageMs: number,
  owner: string,
  staleMs: number,
  pidAlive: (pid: number) => boolean,
  atOpen: boolean
): boolean => ageMs > staleMs || ((atOpen || owner !== "") && !pidAlive(Number(owner)))

/**
 * The bodies that may be orphans: those with no record in the listing of
 * `meta/` and no live writer's record in `tmp/`. (The adapter checks each
 * once more for a record renamed in after its listing before removing it.)
 */
export const orphanCandidates = (
  bodies: ReadonlyArray<string>,
  records: ReadonlySet<string>,
  writing: ReadonlySet<string>
): Array<string> => bodies.filter((id) => !records.has(id) && !writing.has(id))

/**
 * What is wrong with a record at open, if anything: it does not decode, its
 * body (`bodyFile`, of `size` bytes, `undefined` when missing) is missing or
 * has another size. `undefined` when it is sound.
 */
export const recordProblem = (
  id: string,
  recordFile: string,
  text: string,
  bodyFile: string,
  size: number | undefined
): string | undefined => {
  const r = decodeRecord("open", id, recordFile, text)
  if (Result.isFailure(r)) return r.failure.detail
  if (size === undefined) return `${bodyFile} is missing`
  if (size !== r.success.meta.size) return `${bodyFile} has ${size} bytes, the record says ${r.success.meta.size}`
  return undefined
}

/** The warning logged when recovery quarantines the message `id`. */
export const recoveryWarning = (problem: string, id: string, corruptDir: string): string =>
  `QueueStorage: ${problem}; moved message ${id} to ${corruptDir}`

/** The warning logged when `list` quarantines a record that failed with `error`. */
export const listWarning = (error: QueueStorage.StorageError, corruptDir: string): string =>
  `${error.message}; moved to ${corruptDir}`

// --- in-process coordination ---------------------------------------------------------

/**
 * Group commit of one directory's fsync: a caller that arrives while an
 * fsync runs (which may have started before the caller's rename) waits for
 * the next one, which serves every caller that arrived meanwhile.
 */
export class GroupCommit {
  private readonly fsync: () => Promise<void>
  private running = false
  private waiting: Array<{ resolve: () => void; reject: (e: unknown) => void }> = []
  /** `fsync` is the adapter's fsync of the directory. */
  constructor(fsync: () => Promise<void>) {
    this.fsync = fsync
  }
  /** Resolves once an fsync that started after this call has succeeded. */
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
    this.fsync().then(
      () => batch.forEach((w) => w.resolve()),
      (e) => batch.forEach((w) => w.reject(e))
    ).finally(() => {
      this.running = false
      if (this.waiting.length > 0) this.run()
    })
  }
}

/** Runs the functions given for one key one after another, in call order (other keys run freely). */
export class KeyedQueue {
  private readonly queues = new Map<string, Promise<void>>()
  /** Runs `f` once every earlier `run` of `key` has settled; settles as `f` does. */
  async run<A>(key: string, f: () => Promise<A>): Promise<A> {
    const previous = this.queues.get(key) ?? Promise.resolve()
    let done!: () => void
    const mine = previous.then(() => new Promise<void>((resolve) => (done = resolve)))
    this.queues.set(key, mine)
    await previous
    try {
      return await f()
    } finally {
      done()
      if (this.queues.get(key) === mine) this.queues.delete(key)
    }
  }
}

// --- errors ---------------------------------------------------------------------

/** The `code` property of a thrown value (`"ENOENT"`, …), if it has one. */
export const codeOf = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && typeof (e as { code?: unknown }).code === "string"
    ? (e as { code: string }).code
    : undefined

/**
 * The reason of a failed file operation: `Full` for ENOSPC and EDQUOT (and,
 * when `message` is given, for an error whose text says so: Deno's errors
 * may carry no code), `Io` for anything else.
 */
export const reasonOf = (code: string | undefined, message?: string): "Full" | "Io" =>
  code === "ENOSPC" || code === "EDQUOT" ||
    (message !== undefined && /No space left on device|Disk quota exceeded/i.test(message))
    ? "Full"
    : "Io"

/**
 * Maps a thrown value to a `StorageError`: a `StorageError` stays as it is;
 * anything else gets `reasonOf(code)` (with its message when `matchMessage`).
 */
export const toError = (
  operation: string,
  id: string | undefined,
  e: unknown,
  code: string | undefined,
  matchMessage = false
): QueueStorage.StorageError => {
  if (e instanceof QueueStorage.StorageError) return e
  const detail = e instanceof Error ? e.message : String(e)
  return QueueStorage.error(reasonOf(code, matchMessage ? detail : undefined), operation, id, detail, e)
}

/** The `NotFound` error of an operation on a message that does not exist. */
export const notFound = (operation: string, id: string): QueueStorage.StorageError =>
  QueueStorage.error("NotFound", operation, id, "no such message")

// --- listing the records -----------------------------------------------------------

/**
 * One version of a record file as `stat` reports it. Every change to a
 * record makes a new version: an update writes a new file and renames it
 * over the name (a new inode, a new ctime), an edit in place changes the
 * ctime, and so do `chmod`, `utimes` and a hard link. Adapters without
 * inode numbers or ctimes (not Linux or macOS) pass `undefined` instead,
 * and their records are read every time.
 */
export interface RecordVersion {
  readonly ino: number
  readonly size: number
  readonly mtimeMs: number
  readonly ctimeMs: number
}

const sameVersion = (a: RecordVersion, b: RecordVersion): boolean =>
  a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs

/** What `RecordIndex.list` asks of the adapter for each record. */
export interface ListIo {
  /** The record's version now; `undefined` when the file is gone or the platform has no such facts. */
  readonly version: (id: string) => Promise<RecordVersion | undefined>
  /** The record's text; `undefined` when the file is gone (removed meanwhile). */
  readonly readText: (id: string) => Promise<string | undefined>
  /** The record's metadata; throws a `StorageError` when the text is not a record of `id`. */
  readonly decode: (id: string, text: string) => QueueStorage.Meta
  /** Moves a corrupt record (and its body) aside. */
  readonly quarantine: (id: string) => Promise<void>
}

/** What one listing found: every record's metadata, sorted by id, and the error of each record quarantined. */
export interface Listing {
  readonly metas: ReadonlyArray<QueueStorage.Meta>
  readonly quarantined: ReadonlyArray<QueueStorage.StorageError>
}

/**
 * The records of `meta/` with what they said the last time they were read,
 * so that a listing reads only the records that changed since. A queue
 * re-lists its storage every few seconds (for what other processes did); a
 * record is a file of a few hundred bytes to decode, a `stat` is about a
 * quarter of the cost (measured on 11,500 records: 378 against 94 ms of
 * CPU), and most records of a large queue (deferred mail) do not change
 * between two listings.
 *
 * A record is taken from the index when its version (inode, size, mtime,
 * ctime) is the one it had when it was read. The version is taken before
 * the read, so a record that changed between the two is read again next
 * time, never kept with newer text than its version says. A version whose
 * ctime or mtime is less than `settleMs` older than the listing is not
 * indexed at all: a change within the same clock tick could leave those
 * times as they were (the "racily clean" case of git's index). Every later
 * change then has a later ctime than an indexed version, unless the clock
 * steps back by more than `settleMs` meanwhile. At most `maxEntries` records
 * are indexed; the rest are read every time.
 */
export class RecordIndex {
  private readonly entries = new Map<string, { readonly version: RecordVersion; readonly meta: QueueStorage.Meta }>()
  private readonly settleMs: number
  private readonly maxEntries: number
  constructor(options?: { readonly settleMs?: number; readonly maxEntries?: number }) {
    this.settleMs = options?.settleMs ?? 2_000
    this.maxEntries = options?.maxEntries ?? 100_000
  }

  /** How many records are indexed. */
  get size(): number {
    return this.entries.size
  }

  /**
   * Lists the records `ids` (the names found in `meta/`), 64 at a time, at
   * `now` (ms since the epoch, the wall clock of the file times). A record
   * gone meanwhile is skipped; a corrupt one is quarantined and its error
   * returned (for `listWarning`). Ids no longer listed leave the index.
   */
  async list(ids: ReadonlyArray<string>, now: number, io: ListIo): Promise<Listing> {
    const metas: Array<QueueStorage.Meta> = []
    const quarantined: Array<QueueStorage.StorageError> = []
    const settled = now - this.settleMs
    const one = async (id: string): Promise<void> => {
      const version = await io.version(id)
      const known = this.entries.get(id)
      if (version !== undefined && known !== undefined && sameVersion(known.version, version)) {
        metas.push(known.meta)
        return
      }
      this.entries.delete(id)
      const text = await io.readText(id)
      if (text === undefined) return // removed meanwhile
      let meta: QueueStorage.Meta
      try {
        meta = io.decode(id, text)
      } catch (e) {
        if (!(e instanceof QueueStorage.StorageError)) throw e
        await io.quarantine(id)
        quarantined.push(e)
        return
      }
      metas.push(meta)
      if (
        version !== undefined && version.ctimeMs < settled && version.mtimeMs < settled &&
        this.entries.size < this.maxEntries
      ) {
        this.entries.set(id, { version, meta })
      }
    }
    for (let i = 0; i < ids.length; i += 64) await Promise.all(ids.slice(i, i + 64).map(one))
    if (this.entries.size > 0) {
      const listed = new Set(ids)
      for (const id of this.entries.keys()) if (!listed.has(id)) this.entries.delete(id)
    }
    metas.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    return { metas, quarantined }
  }
}
