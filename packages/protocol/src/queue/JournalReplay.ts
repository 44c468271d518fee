/**
 * `JournalReplay`: what the segments of a journal (see `Journal`) mean, and
 * the recovery at open that reads them.
 *
 * `Replay` applies the frames of every segment, oldest segment first: an
 * INSERT sets the message (a second INSERT of an id replaces it, which is
 * how compaction moves a message forward), a META replaces the metadata of
 * a message it knows, a REMOVE deletes one; entries about unknown ids are
 * ignored. An INSERT whose record does not decode (`decodeRecord`), and a
 * frame of an unknown type, are handed back for quarantine and skipped. A
 * META is decoded once, at the end, and only the last one of each message
 * (superseded ones cost a `JSON.parse` and nothing else); a bad last META
 * quarantines its message.
 *
 * `recover` runs it over the adapter at open: reads each segment in 4 MiB
 * chunks through `JournalFrame.FrameDecoder` (replay of a segment stops at
 * its first short, mis-sized or mis-checksummed frame: a torn tail of an
 * unacknowledged batch, logged with `Effect.logWarning`; but when every
 * byte from there to the end of the file is zero, that is the zero prefill
 * the adapters keep ahead of their appends, a clean end: no warning, and
 * the segment's size is the end of its last frame), writes what it
 * could not use to `corrupt/` (never a crash loop: the entry is skipped),
 * and says which quarantined messages the engine must REMOVE from the
 * journal so that they are not quarantined again at every open.
 *
 * What it deliberately does not do: keep message bodies (replay remembers
 * where each body is, never its bytes), append anything, or decide about
 * segments (that is `Journal`'s engine).
 *
 * @since 0.1.0
 */
import { Effect, Result } from "effect"
import type * as Journal from "./Journal.ts"
import * as Frame from "./JournalFrame.ts"
import * as QueueStorage from "./QueueStorage.ts"

/** Where a message's INSERT keeps its record and body. */
export interface Location {
  readonly segment: number
  /** The offset of the record in the segment; the body follows it. */
  readonly recordAt: number
  readonly recordLength: number
  readonly bodyLength: number
}

/** A message as replay leaves it. */
export interface Live {
  readonly meta: QueueStorage.Meta
  readonly location: Location
}

/** Something replay could not use, to be written to `corrupt/` as `<name>.<ext>` files. */
export interface Quarantine {
  readonly name: string
  readonly files: ReadonlyArray<{ readonly ext: string; readonly data: Uint8Array }>
  readonly problem: string
}

/** A message whose last META does not decode: the engine reads it back, quarantines and removes it. */
export interface BadMeta {
  readonly id: string
  readonly location: Location
  /** Where the bad META frame is: `<segment>.<offset>`. */
  readonly name: string
  readonly text: string
  readonly problem: string
}

/** What replay found. */
export interface Replayed {
  /** The messages, in insertion order. */
  readonly live: Map<string, Live>
  readonly quarantine: ReadonlyArray<Quarantine>
  readonly badMeta: ReadonlyArray<BadMeta>
}

interface Replaying {
  meta: QueueStorage.Meta
  location: Location
  /** The envelope JSON of the INSERT, kept to decode the last META. */
  envelope: unknown
  lastMeta: { readonly text: string; readonly u: unknown; readonly name: string } | undefined
}

const utf8 = new TextDecoder("utf-8", { fatal: true })
const decodeText = (b: Uint8Array): string | undefined => {
  try {
    return utf8.decode(b)
  } catch {
    return undefined
  }
}

const parseJson = (text: string): { readonly ok: true; readonly u: unknown } | { readonly ok: false } => {
  try {
    return { ok: true, u: JSON.parse(text) as unknown }
  } catch {
    return { ok: false }
  }
}

const isObject = (u: unknown): u is { readonly [k: string]: unknown } => typeof u === "object" && u !== null && !Array.isArray(u)

/** The name of a thing found at `offset` of segment `segment` (used in `corrupt/`): `<16 digits>.<offset>`. */
export const placeName = (segment: number, offset: number): string => `${Frame.segmentName(segment).slice(0, -4)}.${offset}`

/**
 * The replay reducer: `apply` every frame of every segment in order, then
 * `finish` once. Mutable and single-use, for speed at open. Never throws.
 */
export class Replay {
  private readonly live = new Map<string, Replaying>()
  private readonly quarantine: Array<Quarantine> = []

  /** Applies one frame of segment `segment`. */
  apply(segment: number, frame: Frame.Frame): void {
    const p = frame.payload
    const name = () => placeName(segment, frame.offset)
    switch (frame.type) {
      case Frame.INSERT: {
        if (p.length < 4 || Frame.readU32(p, 0) > p.length - 4) {
          this.quarantine.push({ name: name(), files: [{ ext: "bin", data: p.slice() }], problem: "an INSERT with a bad record length" })
          return
        }
        const recordLength = Frame.readU32(p, 0)
        const record = p.subarray(4, 4 + recordLength)
        const bodyLength = p.length - 4 - recordLength
        const bad = (problem: string): void => {
          this.quarantine.push({
            name: name(),
            files: [{ ext: "json", data: record.slice() }, { ext: "eml", data: p.slice(4 + recordLength) }],
            problem
          })
        }
        const text = decodeText(record)
        if (text === undefined) return bad("a record that is not UTF-8")
        const json = parseJson(text)
        if (!json.ok) return bad("a record that is not valid JSON")
        const r = QueueStorage.decodeRecord(json.u)
        if (Result.isFailure(r)) return bad(r.failure.detail)
        const meta = r.success.meta
        if (meta.size !== bodyLength) return bad(`the message has ${bodyLength} bytes, the record says ${meta.size}`)
        // a re-INSERT (compaction) replaces the message: delete first so the order is the new one
        this.live.delete(meta.id)
        this.live.set(meta.id, {
          meta,
          location: { segment, recordAt: frame.offset + Frame.RECORD_AT, recordLength, bodyLength },
          envelope: (json.u as { readonly envelope: unknown }).envelope,
          lastMeta: undefined
        })
        return
      }
      case Frame.META: {
        const text = decodeText(p)
        const json = text === undefined ? { ok: false as const } : parseJson(text)
        if (text === undefined || !json.ok || !isObject(json.u) || typeof json.u["id"] !== "string") {
          this.quarantine.push({ name: name(), files: [{ ext: "meta", data: p.slice() }], problem: "a META that is not a JSON object with an id" })
          return
        }
        const m = this.live.get(json.u["id"])
        if (m !== undefined) m.lastMeta = { text, u: json.u, name: name() }
        return
      }
      case Frame.REMOVE: {
        const id = decodeText(p)
        if (id !== undefined) this.live.delete(id)
        return
      }
      default:
        this.quarantine.push({ name: name(), files: [{ ext: "bin", data: p.slice() }], problem: `an entry of unknown type ${frame.type}` })
    }
  }

  /** Decodes the last META of each message and returns the result. */
  finish(): Replayed {
    const live = new Map<string, Live>()
    const badMeta: Array<BadMeta> = []
    for (const [id, m] of this.live) {
      if (m.lastMeta === undefined) {
        live.set(id, { meta: m.meta, location: m.location })
        continue
      }
      const r = QueueStorage.decodeRecord({ v: 1, envelope: m.envelope, meta: m.lastMeta.u })
      const problem = Result.isFailure(r)
        ? r.failure.detail
        : r.success.meta.size !== m.meta.size || r.success.meta.createdAt !== m.meta.createdAt
        ? "a META whose size or creation time differ from the message's"
        : undefined
      if (problem === undefined && Result.isSuccess(r)) live.set(id, { meta: r.success.meta, location: m.location })
      else badMeta.push({ id, location: m.location, name: m.lastMeta.name, text: m.lastMeta.text, problem: problem ?? "" })
    }
    this.live.clear()
    return { live, quarantine: this.quarantine, badMeta }
  }
}

// --- recovery at open ----------------------------------------------------------------

/** A segment file found at open. */
export interface FoundSegment {
  readonly n: number
  /** `journal/<n>.seg`. */
  readonly name: string
  /**
   * Its size in bytes: the end of its last frame when only zeros follow
   * (a prefilled tail), else the file's size (a torn tail included).
   */
  readonly size: number
}

/** What `recover` found. */
export interface Recovered {
  /** The segments, oldest first. */
  readonly segments: ReadonlyArray<FoundSegment>
  /** The messages. */
  readonly live: Map<string, Live>
  /** Quarantined messages to REMOVE from the journal. */
  readonly tombstones: ReadonlyArray<string>
}

const READ_CHUNK = 4 * 1024 * 1024

/** Whether every byte of `b` is zero. */
export const isZero = (b: Uint8Array): boolean => {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false
  return true
}

/** Whether bytes `from` .. `to` of segment `name` are all zeros (and there). */
const zerosUpTo = (adapter: Journal.Adapter, name: string, from: number, to: number): Effect.Effect<boolean, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    for (let at = from; at < to;) {
      const chunk = yield* adapter.readAt(name, at, Math.min(READ_CHUNK, to - at))
      if (chunk.length === 0 || !isZero(chunk)) return false
      at += chunk.length
    }
    return true
  })

/**
 * Reads every segment of `journal/` through `adapter`, oldest first, and
 * replays it; logs torn tails (not a tail of zeros: the zero prefill, a
 * clean end); quarantines to `corrupt/` what it cannot
 * use (each file written once: a second open finds it there).
 */
export const recover = (adapter: Journal.Adapter, crc: Frame.Crc32): Effect.Effect<Recovered, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const where = (name: string) => `${adapter.root}/${name}`
    const numbers = (yield* adapter.list("journal")).flatMap((name) => {
      const n = Frame.segmentNumber(name)
      return n === undefined ? [] : [n]
    }).sort((a, b) => a - b)
    const segments: Array<FoundSegment> = []
    const replay = new Replay()
    for (const n of numbers) {
      const name = `journal/${Frame.segmentName(n)}`
      const decoder = new Frame.FrameDecoder(crc)
      let offset = 0
      let last: Uint8Array = new Uint8Array(0)
      for (;;) {
        const chunk = yield* adapter.readAt(name, offset, READ_CHUNK)
        for (const f of decoder.push(chunk)) replay.apply(n, f)
        offset += chunk.length
        last = chunk
        if (chunk.length < READ_CHUNK) break
      }
      const stop = decoder.end()
      let size = offset
      if (stop !== undefined) {
        // the last chunk read usually holds the whole tail; else it is read again
        const lastAt = offset - last.length
        const zeros = stop.offset >= lastAt ? isZero(last.subarray(stop.offset - lastAt)) : yield* zerosUpTo(adapter, name, stop.offset, offset)
        if (zeros) size = stop.offset
        else {
          yield* Effect.logWarning(
            `JournalStorage: ${where(name)} ends with ${Frame.describeStop(stop)} (a batch a crash cut short, never acknowledged); replay of this segment stops there`
          )
        }
      }
      segments.push({ n, name, size })
    }
    const replayed = replay.finish()

    const encoder = new TextEncoder()
    const tombstones: Array<string> = []
    for (const q of replayed.quarantine) {
      for (const f of q.files) yield* adapter.writeNew(`corrupt/${q.name}.${f.ext}`, [f.data])
      yield* Effect.logWarning(`JournalStorage: ${q.problem} at ${q.name}; skipped, copied to ${where("corrupt")}/${q.name}.*`)
    }
    for (const b of replayed.badMeta) {
      const l = b.location
      const bytes = yield* adapter.readAt(`journal/${Frame.segmentName(l.segment)}`, l.recordAt, l.recordLength + l.bodyLength)
      yield* adapter.writeNew(`corrupt/${b.name}.json`, [bytes.subarray(0, l.recordLength)])
      yield* adapter.writeNew(`corrupt/${b.name}.eml`, [bytes.subarray(l.recordLength)])
      yield* adapter.writeNew(`corrupt/${b.name}.meta`, [encoder.encode(b.text)])
      tombstones.push(b.id)
      yield* Effect.logWarning(
        `JournalStorage: the last META of message ${b.id} does not decode (${b.problem}); moved message ${b.id} to ${where("corrupt")}/${b.name}.*`
      )
    }
    if (replayed.quarantine.length > 0 || replayed.badMeta.length > 0) yield* adapter.syncDir("corrupt")
    return { segments, live: replayed.live, tombstones }
  })
