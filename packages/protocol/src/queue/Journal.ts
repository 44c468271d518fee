/**
 * `Journal`: a `QueueStorage` kept as an append-only journal of segment
 * files, owned by ONE process, with group commit of the data: every entry
 * that arrives while a write and its fsync run is written by the next
 * write, in one go, and acknowledged by the next single fsync. A lone
 * writer pays one fsync per message (no directory fsync); twenty
 * concurrent sessions pay a fraction of one.
 *
 * This module is the runtime-free engine, written against a small
 * `Adapter` of file operations that each runtime supplies (`JournalStorage`
 * on Node). The byte format is in `JournalFrame`, the replay and the
 * recovery at open in `JournalReplay`.
 *
 * ## The directory, version 1
 *
 * ```
 * <dir>/layout.json            {"format":"mailroom-journal","v":1}
 * <dir>/owner.lock             the owner's pid: one process owns a journal
 * <dir>/journal/<n>.seg        segments, n = 16 zero-padded digits, increasing
 * <dir>/corrupt/<n>.<offset>.{json,eml,meta,bin}   quarantined entries, for a human
 * ```
 *
 * A segment is frames back to back (see `JournalFrame`): INSERT (the
 * record of `QueueStorage.encodeRecord` and the raw message bytes), META
 * (the full new metadata of a message) and REMOVE (an id). The queue is
 * what replaying every segment in order gives.
 *
 * ## Durability
 *
 * - `write`, `recordResults`, `reschedule`, `setHeld` and `remove` resolve
 *   only after their entry is written and durable (`append` then `sync`:
 *   on Node one `O_DSYNC` writev, whose return means what an fdatasync
 *   after it would; on Deno a write and a `syncData`). One writer runs at a
 *   time; entries submitted while it runs are queued and then written with
 *   ONE `append` (a writev) and ONE `sync`, and all their callers resolve
 *   together. The in-memory index (metadata, and where each body is)
 *   changes only once an entry is durable, so nothing is ever seen that a
 *   crash could take back.
 * - A new segment is created exclusively, the journal directory is fsynced
 *   once, and only then is anything appended to it; after that appends
 *   need no directory fsync. A segment is closed for appends when it passes
 *   `segmentBytes`, after a failed write or fsync (its state is unknown
 *   then: never append after it), and at open (never append after a torn
 *   tail).
 * - A crash in the middle of a batch leaves a torn tail: replay stops at
 *   the first frame that is short, has a bad length or a bad checksum, and
 *   logs it. Nothing after it was acknowledged. The adapters keep zeros
 *   ahead of the appends of small batches (zero prefill: overwriting bytes
 *   already on the disk leaves the durable write no file size to commit);
 *   a segment whose bytes after its last good frame are all zeros ends
 *   cleanly there, no warning, and its size is that of its frames (either
 *   way nothing after that frame was acknowledged: only the warning and
 *   the size differ).
 * - A failed write or fsync (ENOSPC → `Full`, else `Io`) fails every caller
 *   of that batch and leaves the index as it was; the segment is truncated
 *   back to its last good batch (so a full disk gets its space back) and
 *   takes no more appends. Some of the batch may still reach the disk, so
 *   the next batch starts with compensating entries: a REMOVE for each
 *   failed insert, the current META for each failed update, and a failed
 *   remove's message is written again. (If no later batch succeeds before
 *   the process ends, the disk staying broken, a failed entry that did
 *   reach the disk may come back at the next open: a duplicate, never a
 *   loss of anything acknowledged.) On a full disk every append fails, a
 *   REMOVE too (DiskStorage could still unlink): deliveries succeed, their
 *   removal does not, and they are attempted again once there is room.
 * - Leases (`claim`/`release`: an update that changes only `meta.lease`)
 *   are kept in memory, as the only process that could see them is this
 *   one; their META rides along with the next batch without an fsync of
 *   its own, and graceful close (the scope's finalizer) writes and fsyncs
 *   what is left. After a crash a lost lease is the same as an expired
 *   one: the message is attempted again (delivery is at-least-once anyway).
 * - Segments are deleted oldest first only (deleting a middle one could
 *   resurrect a message whose REMOVE it held), one at a time with the
 *   directory fsynced between two deletions: a leading segment with no live
 *   INSERT is unlinked. When more than `maxSegments` exist, the oldest
 *   one's live messages are written again (re-INSERTed with their current
 *   metadata and body) into the active segment, durably, and it is
 *   unlinked — provided at most half of it is live or its live part is at
 *   most half a segment, and at most about one segment's worth is copied
 *   per maintenance pass (a pass runs after each rotation). That stops a
 *   queue that really holds more than the budget from copying itself
 *   forever: the journal then simply has more segments. A segment that
 *   received no acknowledged byte (its first batch failed, or a crash right
 *   after its creation) is unlinked wherever it is.
 *
 * ## Cost
 *
 * Per operation: one `JSON.stringify`, the record encoded straight into the
 * frame's header, the body handed to the writev without a copy, a native
 * CRC-32 when the runtime has one, and one `Effect.callback`; the index,
 * the per-id serialization and the group commit are plain callbacks. Per
 * batch: one append and one sync, whatever the number of entries (on
 * Node, one write-through writev: one thread-pool round trip).
 * `read` is one positional read of the record and the body; `list`, `meta`
 * and `changes` come from memory.

 * ## The adapter (what a runtime implements)
 *
 * Names are relative to the directory, with `/`: `layout.json`,
 * `journal/<n>.seg`, `corrupt/<name>`. Every failure is a `StorageError`
 * (`Full` for ENOSPC/EDQUOT, else `Io`; `DiskLayout.toError` does it).
 *
 * - `lock` (scoped): create the directory, `journal/` and `corrupt/`;
 *   refuse a directory this process already has open (a module-level set);
 *   take `owner.lock` (created exclusively, holding the pid; an existing one
 *   is judged with `JournalFrame.ownerOf` and taken over when stale,
 *   otherwise `Io` naming the owner's pid); release both with the scope.
 * - `readText(name)`: a file's text, `undefined` when missing.
 * - `writeNew(name, chunks)`: create exclusively, write, fsync, close;
 *   `false` when it exists.
 * - `list(dir)`: the names in a directory.
 * - `readAt(name, offset, length)`: a positional read, shorter only at the
 *   end of the file (keep a read handle per segment, closed after `unlink`
 *   once no read uses it).
 * - `create(name, limit)` → `{ append(chunks), sync, truncate(size), close }`:
 *   a new file (exclusive) for appending; `append` writes every chunk in
 *   order after the previous batch (one writev; loop on short writes), and
 *   may write zeros after it (never past `limit`, the segment size); `sync`
 *   makes it durable (an fdatasync, or nothing when the file is opened
 *   write-through); `truncate` cuts a failed batch off; `close` may cut off
 *   the zeros after the last batch.
 * - `unlink(name)` (a missing file is fine), `syncDir(dir)` (`""` is the
 *   directory itself), and optionally a native `crc32`.
 *
 * On Deno: `Deno.open({ createNew, write })`, `FsFile.seek`, and
 * `FsFile.writeSync` (batches up to 512 KiB) or `FsFile.write` in a loop,
 * `FsFile.syncData`, `FsFile.truncate`,
 * `Deno.readDir`, `Deno.remove`, and `Deno.link` (or `createNew`) for the
 * lock.
 *
 * What it deliberately does not do: share a journal between processes
 * (leases are in memory), hold message bodies in memory after the write
 * (`read` reads them back from their segment), or any I/O of its own.
 *
 * @since 0.1.0
 */
import { Effect, Fiber, Result } from "effect"
import type { Scope } from "effect"
import type * as Envelope from "../envelope/Envelope.ts"
import * as Frame from "./JournalFrame.ts"
import * as Replay from "./JournalReplay.ts"
import * as QueueStorage from "./QueueStorage.ts"

type StorageError = QueueStorage.StorageError
type Meta = QueueStorage.Meta

// --- the adapter -----------------------------------------------------------------

/** A segment open for appending. */
export interface AppendHandle {
  /** Writes every chunk, in order, right after what was appended before: all of them or a failure. */
  readonly append: (chunks: ReadonlyArray<Uint8Array>) => Effect.Effect<void, StorageError>
  /** Makes what was appended durable (an fdatasync; nothing when `append` writes through). */
  readonly sync: Effect.Effect<void, StorageError>
  /** Cuts the file back to `size` bytes, after a failed append or sync (gives the space of a failed batch back). */
  readonly truncate: (size: number) => Effect.Effect<void, StorageError>
  /** Closes the handle; never fails. */
  readonly close: Effect.Effect<void>
}

/** The file operations a runtime supplies (see the module header). */
export interface Adapter {
  /** The directory, for messages. */
  readonly root: string
  /** Creates the directories and takes ownership for the scope. */
  readonly lock: Effect.Effect<void, StorageError, Scope.Scope>
  readonly readText: (name: string) => Effect.Effect<string | undefined, StorageError>
  readonly writeNew: (name: string, chunks: ReadonlyArray<Uint8Array>) => Effect.Effect<boolean, StorageError>
  readonly list: (dir: string) => Effect.Effect<ReadonlyArray<string>, StorageError>
  readonly readAt: (name: string, offset: number, length: number) => Effect.Effect<Uint8Array, StorageError>
  /** A new segment for appending; `limit` is `segmentBytes` (no zeros are prefilled past it). */
  readonly create: (name: string, limit?: number) => Effect.Effect<AppendHandle, StorageError>
  readonly unlink: (name: string) => Effect.Effect<void, StorageError>
  readonly syncDir: (dir: string) => Effect.Effect<void, StorageError>
  readonly crc32?: Frame.Crc32 | undefined
}

/** Options of `make`. */
export interface Options {
  /** A segment is closed for appends once it passes this size (default 64 MiB). */
  readonly segmentBytes?: number | undefined
  /** Above this many segments the oldest is compacted (default 4, at least 2). */
  readonly maxSegments?: number | undefined
}

/** Default of `Options.segmentBytes`. */
export const defaultSegmentBytes = 64 * 1024 * 1024
/** Default of `Options.maxSegments`. */
export const defaultMaxSegments = 4

/** Counters since open. */
export interface Stats {
  /** Batches made durable (`sync` of a segment: an fdatasync, or a write-through write). */
  readonly syncs: number
  /** fsyncs of directories. */
  readonly dirSyncs: number
  readonly batches: number
  readonly entries: number
  readonly bytes: number
  /** Messages written again by compaction (or after a failed remove). */
  readonly moved: number
  readonly segments: number
  readonly messages: number
}

/** An open journal. */
export interface Journal {
  readonly storage: QueueStorage.Service
  readonly stats: () => Stats
  /** Runs a maintenance pass (delete dead segments, compact the oldest) now, and waits for it. */
  readonly maintain: Effect.Effect<void>
}

// --- engine state ----------------------------------------------------------------

interface Segment {
  readonly n: number
  readonly name: string
  /** Bytes in the file that belong to committed batches (or were read at open). */
  size: number
  /** Live INSERTs, and their bytes. */
  live: number
  liveBytes: number
  /** No acknowledged byte: may be unlinked wherever it is. */
  dead: boolean
}

interface Entry {
  meta: Meta
  segment: Segment
  location: Replay.Location
}

const K_INSERT = 0
const K_META = 1
const K_REMOVE = 2
const K_MOVE = 3

interface Pending {
  readonly kind: 0 | 1 | 2 | 3
  readonly id: string
  readonly chunks: ReadonlyArray<Uint8Array>
  readonly size: number
  readonly recordLength: number
  readonly bodyLength: number
  readonly meta: Meta | undefined
  readonly done: (error: StorageError | undefined) => void
}

type Compensation = { readonly remove: boolean; readonly id: string }

const frameBytes = (l: Replay.Location): number => Frame.RECORD_AT + l.recordLength + l.bodyLength

const rewrap = (e: StorageError, operation: string, id: string | undefined): StorageError =>
  QueueStorage.error(e.reason, operation, id, e.detail, e.cause ?? e)

const notFound = (operation: string, id: string): StorageError => QueueStorage.error("NotFound", operation, id, "no such message")

const leaseOnly = (a: Meta, b: Meta): boolean =>
  a.id === b.id && a.createdAt === b.createdAt && a.attempts === b.attempts && a.nextAttemptAt === b.nextAttemptAt &&
  a.held === b.held && a.delayWarned === b.delayWarned && a.recipients === b.recipients && a.size === b.size &&
  a.sender === b.sender

const sameLease = (a: QueueStorage.Lease | undefined, b: QueueStorage.Lease | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && a.owner === b.owner && a.until === b.until)

const byId = (a: Meta, b: Meta) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

const utf8 = new TextDecoder("utf-8", { fatal: true })

const decodeStored = (bytes: Uint8Array, recordLength: number): Result.Result<Envelope.Envelope, string> => {
  let u: unknown
  try {
    u = JSON.parse(utf8.decode(bytes.subarray(0, recordLength)))
  } catch {
    return Result.fail("the record is not valid JSON")
  }
  const r = QueueStorage.decodeRecord(u)
  if (Result.isFailure(r)) return Result.fail(r.failure.detail)
  return Result.succeed({ ...r.success.envelope, message: bytes.subarray(recordLength) })
}

// --- the engine ---------------------------------------------------------------------

/**
 * Opens the journal through `adapter`: checks `layout.json` (creating it
 * when missing), takes ownership, replays every segment, quarantines what
 * it cannot use, and starts the writer. Closing the scope writes pending
 * leases, fsyncs and gives ownership back. Fails with `Invalid` when the
 * directory holds something else, `Io` when another process owns it.
 */
export const make = (adapter: Adapter, options: Options = {}): Effect.Effect<Journal, StorageError, Scope.Scope> =>
  Effect.gen(function*() {
    const crc = adapter.crc32 ?? Frame.crc32
    const positive = (n: number | undefined, d: number) => (n !== undefined && Number.isFinite(n) && n > 0 ? Math.floor(n) : d)
    const segmentBytes = Math.max(1, positive(options.segmentBytes, defaultSegmentBytes))
    const maxSegments = Math.max(2, positive(options.maxSegments, defaultMaxSegments))
    const where = (name: string) => `${adapter.root}/${name}`

    // --- layout and ownership
    const checkLayout = (text: string) => {
      const problem = Frame.layoutProblem(text)
      return problem === undefined
        ? Effect.void
        : Effect.fail(QueueStorage.error("Invalid", "open", undefined, `${where("layout.json")}: not a version 1 mailroom journal (${problem})`))
    }
    const existing = yield* adapter.readText("layout.json")
    if (existing !== undefined) yield* checkLayout(existing)
    yield* adapter.lock
    if (existing === undefined) {
      const created = yield* adapter.writeNew("layout.json", [new TextEncoder().encode(Frame.layoutText)])
      if (!created) yield* checkLayout((yield* adapter.readText("layout.json")) ?? "")
      yield* adapter.syncDir("")
    }

    // --- replay
    const recovered = yield* Replay.recover(adapter, crc)
    const segments: Array<Segment> = recovered.segments.map((f) => ({ ...f, live: 0, liveBytes: 0, dead: f.size === 0 }))
    const segmentOf = new Map(segments.map((s) => [s.n, s]))
    const index = new Map<string, Entry>()
    for (const [id, l] of recovered.live) {
      const segment = segmentOf.get(l.location.segment)!
      segment.live++
      segment.liveBytes += frameBytes(l.location)
      index.set(id, { meta: l.meta, segment, location: l.location })
    }
    const compensations: Array<Compensation> = recovered.tombstones.map((id) => ({ remove: true, id }))

    // --- state
    let nextSegment = segments.length === 0 ? 1 : segments[segments.length - 1]!.n + 1
    let active: { readonly segment: Segment; readonly handle: AppendHandle } | undefined = undefined
    let mustRotate = false
    let pending: Array<Pending> = []
    const inserting = new Set<string>()
    const lazy = new Set<string>()
    const moveLater = new Set<string>()
    let closing = false // no new operations
    let stopWriter = false // write what is left, then stop
    let writerGone = false
    let dirDirty = false
    const stats = { syncs: 0, dirSyncs: 0, batches: 0, entries: 0, bytes: 0, moved: 0 }
    const closedError = (operation: string, id: string | undefined) =>
      QueueStorage.error("Io", operation, id, `the journal ${adapter.root} is closed`)

    // --- one operation per id at a time (plain callbacks, no fibers)
    const waiting = new Map<string, Array<() => void>>()
    const ready: Array<() => void> = []
    let draining = false
    const run = (f: () => void) => {
      ready.push(f)
      if (draining) return
      draining = true
      try {
        for (let i = 0; i < ready.length; i++) ready[i]!()
      } finally {
        ready.length = 0
        draining = false
      }
    }
    const acquire = (id: string, f: () => void) => {
      const q = waiting.get(id)
      if (q === undefined) {
        waiting.set(id, [])
        run(f)
      } else q.push(f)
    }
    const release = (id: string) => {
      const q = waiting.get(id)
      if (q === undefined) return
      const next = q.shift()
      if (next === undefined) waiting.delete(id)
      else run(next)
    }

    // --- the writer
    let wakeWriter: (() => void) | undefined
    const writerHasWork = () => pending.length > 0 || (stopWriter && (lazy.size > 0 || compensations.length > 0))
    const submit = (p: Pending) => {
      if (writerGone) return p.done(closedError("write", p.id))
      pending.push(p)
      const w = wakeWriter
      if (w !== undefined) {
        wakeWriter = undefined
        w()
      }
    }
    const waitForWork = Effect.callback<void>((resume) => {
      if (writerHasWork() || stopWriter) resume(Effect.void)
      else wakeWriter = () => resume(Effect.void)
    })

    let wakeMaintenance: (() => void) | undefined
    let maintenanceAsked = false
    const askMaintenance = () => {
      maintenanceAsked = true
      const w = wakeMaintenance
      if (w !== undefined) {
        wakeMaintenance = undefined
        w()
      }
    }

    const openSegment: Effect.Effect<{ readonly segment: Segment; readonly handle: AppendHandle }, StorageError> = Effect.suspend(() => {
      if (active !== undefined && !mustRotate && active.segment.size < segmentBytes) return Effect.succeed(active)
      const old = active
      active = undefined
      mustRotate = true
      const n = nextSegment++
      const name = `journal/${Frame.segmentName(n)}`
      return Effect.gen(function*() {
        if (old !== undefined) {
          yield* old.handle.close
          if (old.segment.size === 0) old.segment.dead = true
        }
        const handle = yield* adapter.create(name, segmentBytes)
        const synced = yield* Effect.result(adapter.syncDir("journal"))
        stats.dirSyncs++
        if (Result.isFailure(synced)) {
          yield* handle.close
          yield* Effect.ignore(adapter.unlink(name))
          return yield* Effect.fail(synced.failure)
        }
        const segment: Segment = { n, name, size: 0, live: 0, liveBytes: 0, dead: false }
        segments.push(segment)
        active = { segment, handle }
        mustRotate = false
        askMaintenance()
        return active
      })
    })

    const commit = (segment: Segment, items: ReadonlyArray<Pending>, at: ReadonlyArray<number>, size: number) => {
      segment.size += size
      stats.batches++
      stats.bytes += size
      for (let i = 0; i < items.length; i++) {
        const p = items[i]!
        const e = index.get(p.id)
        if (p.kind === K_META) {
          if (e !== undefined) e.meta = p.meta!
        } else if (p.kind === K_REMOVE) {
          if (e !== undefined) {
            index.delete(p.id)
            e.segment.live--
            e.segment.liveBytes -= frameBytes(e.location)
            lazy.delete(p.id)
          }
        } else {
          const location: Replay.Location = { segment: segment.n, recordAt: at[i]! + Frame.RECORD_AT, recordLength: p.recordLength, bodyLength: p.bodyLength }
          if (p.kind === K_INSERT) {
            inserting.delete(p.id)
            index.set(p.id, { meta: p.meta!, segment, location })
          } else if (e !== undefined) {
            stats.moved++
            e.segment.live--
            e.segment.liveBytes -= frameBytes(e.location)
            e.segment = segment
            e.location = location
          } else continue
          segment.live++
          segment.liveBytes += p.size
        }
      }
      for (const p of items) p.done(undefined)
      const first = segments[0]
      if (first !== undefined && first !== active?.segment && first.live === 0 && segments.length > 1) askMaintenance()
    }

    const fail = (items: ReadonlyArray<Pending>, comps: ReadonlyArray<Compensation>, lazyIds: ReadonlyArray<string>, e: StorageError) => {
      mustRotate = true
      for (const c of comps) compensations.push(c)
      for (const id of lazyIds) if (index.has(id)) lazy.add(id)
      for (const p of items) {
        if (p.kind === K_INSERT) {
          inserting.delete(p.id)
          compensations.push({ remove: true, id: p.id })
        } else if (p.kind === K_META) compensations.push({ remove: false, id: p.id })
        else if (p.kind === K_REMOVE) moveLater.add(p.id)
      }
      if (moveLater.size > 0) askMaintenance()
      for (const p of items) p.done(e)
    }

    const batch: Effect.Effect<boolean> = Effect.suspend(() => {
      const items = pending
      pending = []
      const comps = compensations.splice(0)
      const lazyIds = [...lazy]
      lazy.clear()
      let settled = false
      const failAll = (e: StorageError) =>
        Effect.sync(() => {
          if (settled) return false
          settled = true
          fail(items, comps, lazyIds, e)
          return false
        })
      const written = Effect.matchEffect(openSegment, {
        onFailure: failAll,
        onSuccess: ({ segment, handle }) => {
          const chunks: Array<Uint8Array> = []
          let size = 0
          const push = (b: Uint8Array) => {
            if (b.length > 0) chunks.push(b)
            size += b.length
          }
          for (const c of comps) {
            // (a message in the index is acknowledged: never written off, whatever happened before)
            if (c.remove) {
              if (!index.has(c.id)) push(Frame.encodeRemove(c.id, crc))
            } else {
              const e = index.get(c.id)
              if (e !== undefined) push(Frame.encodeMeta(e.meta, crc))
            }
          }
          // leases before the batch's own entries: a META in the batch is newer
          for (const id of lazyIds) {
            const e = index.get(id)
            if (e !== undefined) push(Frame.encodeMeta(e.meta, crc))
          }
          const at: Array<number> = []
          for (const p of items) {
            at.push(segment.size + size)
            for (const c of p.chunks) push(c)
          }
          if (size === 0) return Effect.succeed(true)
          stats.entries += comps.length + lazyIds.length + items.length
          return Effect.matchEffect(Effect.andThen(handle.append(chunks), Effect.suspend(() => (stats.syncs++, handle.sync))), {
            // give the space of the failed batch back (a full disk stays usable); the segment takes no more appends
            onFailure: (e) => Effect.andThen(Effect.ignore(handle.truncate(segment.size)), failAll(e)),
            onSuccess: () => Effect.sync(() => (settled = true, commit(segment, items, at, size), true))
          })
        }
      })
      // a defect (a bug) still answers every caller of the batch, once
      return Effect.catchCause(written, (cause) =>
        Effect.andThen(
          Effect.logError("JournalStorage: the writer failed", cause),
          failAll(QueueStorage.error("Io", "write", undefined, "the journal writer failed (see the log)"))
        ))
    })

    const writer: Effect.Effect<void> = Effect.gen(function*() {
      let failuresAtClose = 0
      for (;;) {
        yield* waitForWork
        if (!writerHasWork()) {
          if (stopWriter) break
          continue
        }
        const ok = yield* batch
        // at close, a failed batch is tried again (in a fresh segment), twice
        if (!ok && stopWriter && ++failuresAtClose > 2) {
          yield* Effect.logWarning(
            `JournalStorage: the last batch could not be written at close: ${lazy.size} leases are lost (they count as expired)` +
              (compensations.length > 0 ? `, and ${compensations.length} failed entries may reappear at the next open` : "")
          )
          break
        }
      }
      writerGone = true
      for (const p of pending.splice(0)) p.done(closedError("write", p.id))
    })

    // --- maintenance: dead segments, compaction, compensating moves
    const lockId = (id: string) => Effect.callback<void>((resume) => acquire(id, () => resume(Effect.void)))

    /** Writes message `id` again, with its current metadata, into the active segment. */
    const move = (id: string): Effect.Effect<void, StorageError> =>
      Effect.acquireUseRelease(
        lockId(id),
        () =>
          Effect.suspend(() => {
            const e = index.get(id)
            if (e === undefined) return Effect.void
            const l = e.location
            return Effect.flatMap(adapter.readAt(`journal/${Frame.segmentName(l.segment)}`, l.recordAt, l.recordLength + l.bodyLength), (bytes) => {
              const now = index.get(id)
              if (now === undefined) return Effect.void
              const stored = bytes.length === l.recordLength + l.bodyLength ? decodeStored(bytes, l.recordLength) : Result.fail("cut short")
              if (Result.isFailure(stored)) {
                return Effect.fail(QueueStorage.error("Corrupt", "compact", id, `${where(`journal/${Frame.segmentName(l.segment)}`)} at byte ${l.recordAt}: ${stored.failure}`))
              }
              const enc = Frame.encodeInsert(JSON.stringify(QueueStorage.encodeRecord(stored.success, now.meta)), stored.success.message, crc)!
              return Effect.callback<void, StorageError>((resume) =>
                submit({
                  kind: K_MOVE,
                  id,
                  chunks: [enc.head, enc.body],
                  size: enc.head.length + enc.body.length,
                  recordLength: enc.recordLength,
                  bodyLength: enc.body.length,
                  meta: now.meta,
                  done: (err) => resume(err === undefined ? Effect.void : Effect.fail(rewrap(err, "compact", id)))
                })
              )
            })
          }),
        () => Effect.sync(() => release(id))
      )

    const unlink = (s: Segment) =>
      Effect.gen(function*() {
        if (dirDirty) {
          stats.dirSyncs++
          yield* adapter.syncDir("journal")
          dirDirty = false
        }
        yield* adapter.unlink(s.name)
        const i = segments.indexOf(s)
        if (i >= 0) segments.splice(i, 1)
        dirDirty = true
      })

    const unlinkDead = Effect.gen(function*() {
      for (const s of segments.filter((s) => s.dead && s !== active?.segment && s.live === 0)) yield* unlink(s)
      for (;;) {
        const first = segments[0]
        if (first === undefined || segments.length < 2 || first === active?.segment || first.live > 0) break
        yield* unlink(first)
      }
    })

    /** Writes again the messages whose REMOVE failed (it may have reached the disk); a failed move is tried again later. */
    const movesAfterFailedRemoves = Effect.suspend(() => {
      const moves = [...moveLater]
      moveLater.clear()
      let failed: StorageError | undefined
      return Effect.flatMap(
        Effect.forEach(moves, (id) =>
          Effect.catch(move(id), (e) =>
            Effect.sync(() => {
              moveLater.add(id)
              failed = e
            })), { concurrency: 16, discard: true }),
        () => (failed === undefined ? Effect.void : Effect.fail(failed))
      )
    })

    /** The oldest segment is worth compacting: at most half of it is live, or its live part is at most half a segment. */
    const compactable = (s: Segment) => s !== active?.segment && s.liveBytes * 2 <= Math.max(s.size, segmentBytes)

    const pass = Effect.gen(function*() {
      yield* movesAfterFailedRemoves
      yield* unlinkDead
      // at most about one segment's worth of copying per pass
      let budget = segmentBytes
      for (;;) {
        const oldest = segments[0]
        if (segments.length <= maxSegments || oldest === undefined || budget <= 0 || !compactable(oldest)) break
        budget -= Math.max(1, oldest.liveBytes)
        const ids: Array<string> = []
        for (const [id, e] of index) if (e.segment === oldest) ids.push(id)
        yield* Effect.forEach(ids, move, { concurrency: 16, discard: true })
        yield* unlinkDead
        if (segments[0] === oldest) break
      }
    })

    let stopMaintenance = false
    let passWaiters: Array<() => void> = []
    const maintenance: Effect.Effect<void> = Effect.gen(function*() {
      for (;;) {
        yield* Effect.callback<void>((resume) => {
          if (maintenanceAsked || stopMaintenance) resume(Effect.void)
          else wakeMaintenance = () => resume(Effect.void)
        })
        if (stopMaintenance) break
        maintenanceAsked = false
        const waiters = passWaiters
        passWaiters = []
        yield* Effect.catchCause(pass, (cause) => Effect.logWarning("JournalStorage: maintenance failed; it is tried again later", cause))
        for (const w of waiters) w()
      }
      for (const w of passWaiters.splice(0)) w()
      // last chance at close
      yield* Effect.catchCause(movesAfterFailedRemoves, () =>
        Effect.logWarning(
          `JournalStorage: ${moveLater.size} messages whose removal failed could not be written again at close; they may be missing at the next open`
        ))
    })

    const writerFiber = yield* Effect.forkDetach(writer)
    const maintenanceFiber = yield* Effect.forkDetach(Effect.uninterruptible(maintenance))
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        stopMaintenance = true
        askMaintenance()
        yield* Fiber.join(maintenanceFiber)
        stopWriter = true
        const w = wakeWriter
        wakeWriter = undefined
        w?.()
        yield* Fiber.join(writerFiber)
        if (active !== undefined) yield* active.handle.close
        if (dirDirty) {
          stats.dirSyncs++
          yield* Effect.catch(adapter.syncDir("journal"), (e) => Effect.logWarning(`JournalStorage: ${e.message}`))
        }
      })
    )
    askMaintenance()

    // --- the operations
    const insert = (envelope: Envelope.Envelope, meta: Meta) =>
      Effect.callback<void, StorageError>((resume) => {
        const id = envelope.id
        if (closing) return resume(Effect.fail(closedError("write", id)))
        if (index.has(id) || inserting.has(id)) {
          return resume(Effect.fail(QueueStorage.error("Conflict", "write", id, "a message with this id exists")))
        }
        const enc = Frame.encodeInsert(JSON.stringify(QueueStorage.encodeRecord(envelope, meta)), envelope.message, crc)
        if (enc === undefined) return resume(Effect.fail(QueueStorage.error("Invalid", "write", id, "the message is too large for a journal entry")))
        inserting.add(id)
        submit({
          kind: K_INSERT,
          id,
          chunks: [enc.head, enc.body],
          size: enc.head.length + enc.body.length,
          recordLength: enc.recordLength,
          bodyLength: enc.body.length,
          meta,
          done: (e) => resume(e === undefined ? Effect.void : Effect.fail(rewrap(e, "write", id)))
        })
      })

    const update = <A>(id: string, operation: string, f: (meta: Meta) => QueueStorage.Update<A>) =>
      Effect.callback<A, StorageError>((resume) => {
        if (closing) return resume(Effect.fail(closedError(operation, id)))
        acquire(id, () => {
          const e = index.get(id)
          if (e === undefined) {
            release(id)
            return resume(Effect.fail(notFound(operation, id)))
          }
          let r: QueueStorage.Update<A>
          try {
            r = f(e.meta)
          } catch (defect) {
            release(id)
            return resume(Effect.die(defect))
          }
          if (Result.isFailure(r)) {
            release(id)
            return resume(Effect.fail(r.failure))
          }
          const [value, next] = r.success
          if (next === undefined || leaseOnly(e.meta, next)) {
            if (next !== undefined && !sameLease(e.meta.lease, next.lease)) {
              e.meta = next
              lazy.add(id)
            }
            release(id)
            return resume(Effect.succeed(value))
          }
          const frame = Frame.encodeMeta(next, crc)
          submit({
            kind: K_META,
            id,
            chunks: [frame],
            size: frame.length,
            recordLength: 0,
            bodyLength: 0,
            meta: next,
            done: (err) => {
              release(id)
              resume(err === undefined ? Effect.succeed(value) : Effect.fail(rewrap(err, operation, id)))
            }
          })
        })
      })

    const remove = (id: string) =>
      Effect.callback<void, StorageError>((resume) => {
        if (closing) return resume(Effect.fail(closedError("remove", id)))
        acquire(id, () => {
          if (!index.has(id)) {
            release(id)
            return resume(Effect.fail(notFound("remove", id)))
          }
          const frame = Frame.encodeRemove(id, crc)
          submit({
            kind: K_REMOVE,
            id,
            chunks: [frame],
            size: frame.length,
            recordLength: 0,
            bodyLength: 0,
            meta: undefined,
            done: (err) => {
              release(id)
              resume(err === undefined ? Effect.void : Effect.fail(rewrap(err, "remove", id)))
            }
          })
        })
      })

    const readFrom = (id: string, attempt: number): Effect.Effect<QueueStorage.Stored, StorageError> => {
      const e = index.get(id)
      if (e === undefined) return Effect.fail(notFound("read", id))
      const l = e.location
      const name = `journal/${Frame.segmentName(l.segment)}`
      const length = l.recordLength + l.bodyLength
      // a read that raced with compaction moving the message is tried again at its new place
      const again = (otherwise: () => StorageError) => {
        const now = index.get(id)
        if (now === undefined) return Effect.fail(notFound("read", id))
        if (now.location !== l && attempt < 3) return readFrom(id, attempt + 1)
        return Effect.fail(otherwise())
      }
      return Effect.matchEffect(adapter.readAt(name, l.recordAt, length), {
        onFailure: (err) => again(() => rewrap(err, "read", id)),
        onSuccess: (bytes) => {
          if (bytes.length !== length) {
            return again(() => QueueStorage.error("Corrupt", "read", id, `${where(name)} ends before the message at byte ${l.recordAt}`))
          }
          const now = index.get(id)
          if (now === undefined) return Effect.fail(notFound("read", id))
          const env = decodeStored(bytes, l.recordLength)
          if (Result.isFailure(env)) return Effect.fail(QueueStorage.error("Corrupt", "read", id, `${where(name)} at byte ${l.recordAt}: ${env.failure}`))
          return Effect.succeed({ envelope: env.success, meta: now.meta })
        }
      })
    }

    const storage = QueueStorage.make({
      insert,
      read: (id) => Effect.suspend(() => readFrom(id, 0)),
      meta: (id) =>
        Effect.suspend(() => {
          const e = index.get(id)
          return e === undefined ? Effect.fail(notFound("meta", id)) : Effect.succeed(e.meta)
        }),
      list: () =>
        Effect.sync(() => {
          const metas: Array<Meta> = []
          for (const e of index.values()) metas.push(e.meta)
          return metas.sort(byId)
        }),
      update,
      remove,
      changes: (known) =>
        Effect.sync(() => {
          const added: Array<Meta> = []
          for (const [id, e] of index) if (!known.has(id)) added.push(e.meta)
          const removed: Array<string> = []
          for (const id of known) if (!index.has(id)) removed.push(id)
          return { added, removed }
        })
    })

    return {
      storage,
      stats: () => ({ ...stats, segments: segments.length, messages: index.size }),
      maintain: Effect.callback<void>((resume) => {
        if (stopMaintenance) return resume(Effect.void)
        passWaiters.push(() => resume(Effect.void))
        askMaintenance()
      })
    }
  })
