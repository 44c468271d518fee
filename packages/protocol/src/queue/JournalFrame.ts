/**
 * `JournalFrame`: the bytes of the journal queue storage (see `Journal`),
 * version 1, and the replay that turns them back into the queue.
 *
 * ## A frame
 *
 * ```
 * offset 0  u32 BE  n, the length of what follows the checksum: 1 .. 2^30
 * offset 4  u32 BE  CRC-32 (IEEE) of bytes 0-3 followed by bytes 8 .. 8+n
 * offset 8  u8      the entry type
 * offset 9  n-1 bytes of payload
 * ```
 *
 * | type | entry | payload |
 * | --- | --- | --- |
 * | 1 | INSERT | u32 BE record length, the record (UTF-8 JSON of `QueueStorage.encodeRecord`), then the raw message bytes, unchanged |
 * | 2 | META | UTF-8 JSON of the full new `Meta` (the `meta` member of the record) |
 * | 3 | REMOVE | the message id (ASCII) |
 *
 * A segment file is frames back to back, nothing else. The checksum covers
 * the length, so a torn or zeroed tail (an unacknowledged batch cut short
 * by a crash) shows up as a short frame, a bad length (0 or over 2^30) or a
 * bad checksum; `FrameDecoder` stops there and says where and why.
 *
 * It also holds `crc32`, a plain JavaScript CRC-32 for runtimes without a
 * native one (Node's `zlib.crc32` gives the same values), the segment file
 * names, the text of `layout.json` and the owner-lock decision.
 *
 * What it deliberately does not do: any I/O, the meaning of a sequence of
 * entries (that is `JournalReplay`), group commit or indexing (`Journal`).
 *
 * @since 0.1.0
 */
import * as QueueStorage from "./QueueStorage.ts"

// --- CRC-32 ----------------------------------------------------------------------

/** A CRC-32 (IEEE) continued from `previous` (0 to start), like `zlib.crc32(data, previous)`. */
export type Crc32 = (data: Uint8Array, previous: number) => number

const TABLE = ((): Uint32Array => {
  const t = new Uint32Array(256 * 4)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    t[n] = c >>> 0
  }
  // slice-by-4 tables
  for (let n = 0; n < 256; n++) {
    let c = t[n]!
    for (let k = 1; k < 4; k++) {
      c = t[c & 0xff]! ^ (c >>> 8)
      t[k * 256 + n] = c >>> 0
    }
  }
  return t
})()

/** CRC-32 (IEEE 802.3, reflected, as zlib and PNG) in plain JavaScript, continued from `previous`. */
export const crc32: Crc32 = (data, previous) => {
  const t = TABLE
  let c = ~previous
  let i = 0
  const n = data.length
  const end4 = n - (n & 3)
  for (; i < end4; i += 4) {
    c ^= data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24)
    c = t[768 + (c & 0xff)]! ^ t[512 + ((c >>> 8) & 0xff)]! ^ t[256 + ((c >>> 16) & 0xff)]! ^ t[c >>> 24]!
  }
  for (; i < n; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}

// --- layout and ownership -----------------------------------------------------------

/** The content of `layout.json` (as JSON). */
export const LAYOUT = { format: "mailroom-journal", v: 1 } as const

/** The exact text written to a new `layout.json`. */
export const layoutText: string = JSON.stringify(LAYOUT) + "\n"

/**
 * What is wrong with `layout.json`'s text: `undefined` when it is a version
 * 1 journal, else what it is instead (for the error message).
 */
export const layoutProblem = (text: string): string | undefined => {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return "not JSON"
  }
  if (typeof v !== "object" || v === null) return "not a layout object"
  const { format, v: version } = v as { format?: unknown; v?: unknown }
  if (format === LAYOUT.format && version === LAYOUT.v) return undefined
  if (format === LAYOUT.format) return `version ${JSON.stringify(version ?? null)}`
  if (format === "mailroom-queue") return "it is a disk queue directory, format mailroom-queue"
  return `format ${JSON.stringify(format ?? null)}`
}

/** Who holds `owner.lock`, judged from its text. */
export type Owner =
  /** A live process other than this one: refuse to open. */
  | { readonly _tag: "Live"; readonly pid: number }
  /** No usable pid, a dead process, or this very pid from a previous life: take it over. */
  | { readonly _tag: "Stale" }

/**
 * Judges the text of an existing `owner.lock`. The caller has already
 * checked that this process does not hold the journal open itself, so a
 * lock naming `ownPid` is left over by an earlier process that had the
 * same pid (a container restarting as pid 1).
 */
export const ownerOf = (text: string, ownPid: number, pidAlive: (pid: number) => boolean): Owner => {
  const t = text.trim()
  if (!/^[0-9]{1,10}$/.test(t)) return { _tag: "Stale" }
  const pid = Number(t)
  if (pid <= 0 || pid === ownPid || !pidAlive(pid)) return { _tag: "Stale" }
  return { _tag: "Live", pid }
}

// --- segment names ---------------------------------------------------------------------

const SEGMENT = /^([0-9]{16})\.seg$/

/** The file name of segment `n` in `journal/`: 16 zero-padded digits and `.seg`. */
export const segmentName = (n: number): string => `${String(n).padStart(16, "0")}.seg`

/** The number of a segment file name, `undefined` for any other name. */
export const segmentNumber = (name: string): number | undefined => {
  const m = SEGMENT.exec(name)
  if (m === null) return undefined
  const n = Number(m[1])
  return Number.isSafeInteger(n) ? n : undefined
}

// --- encoding --------------------------------------------------------------------------

/** The bytes before a frame's type: length and checksum. */
export const HEADER = 8
/** The largest `n` (type + payload) a frame may have. */
export const MAX_FRAME = 1 << 30
/** Entry types. */
export const INSERT = 1
export const META = 2
export const REMOVE = 3
/** Where an INSERT's record starts, from the start of its frame. */
export const RECORD_AT = HEADER + 1 + 4

const encoder = new TextEncoder()

const putU32 = (b: Uint8Array, at: number, v: number): void => {
  b[at] = v >>> 24
  b[at + 1] = (v >>> 16) & 0xff
  b[at + 2] = (v >>> 8) & 0xff
  b[at + 3] = v & 0xff
}

/** Reads a big-endian u32 at `at`. */
export const readU32 = (b: Uint8Array, at: number): number => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0

/** An encoded INSERT: `head` (header, type, record length, record) and the message bytes, written as is. */
export interface EncodedInsert {
  readonly head: Uint8Array
  readonly body: Uint8Array
  readonly recordLength: number
}

/**
 * Encodes an INSERT of `record` (the record's JSON text) and `body` (not
 * copied), or `undefined` when the frame would exceed `MAX_FRAME`.
 */
export const encodeInsert = (record: string, body: Uint8Array, crc: Crc32): EncodedInsert | undefined => {
  const buf = new Uint8Array(RECORD_AT + record.length * 3)
  const { written } = encoder.encodeInto(record, buf.subarray(RECORD_AT))
  const n = 1 + 4 + written + body.length
  if (n > MAX_FRAME) return undefined
  const head = buf.subarray(0, RECORD_AT + written)
  putU32(head, 0, n)
  head[HEADER] = INSERT
  putU32(head, HEADER + 1, written)
  const c = crc(body, crc(head.subarray(HEADER), crc(head.subarray(0, 4), 0)))
  putU32(head, 4, c)
  return { head, body, recordLength: written }
}

const encodeText = (type: number, text: string, crc: Crc32): Uint8Array => {
  const buf = new Uint8Array(HEADER + 1 + text.length * 3)
  const { written } = encoder.encodeInto(text, buf.subarray(HEADER + 1))
  const frame = buf.subarray(0, HEADER + 1 + written)
  putU32(frame, 0, 1 + written)
  frame[HEADER] = type
  putU32(frame, 4, crc(frame.subarray(HEADER), crc(frame.subarray(0, 4), 0)))
  return frame
}

/** The JSON form of `meta`: exactly the `meta` member of `QueueStorage.encodeRecord`. */
export const metaJson = (meta: QueueStorage.Meta): QueueStorage.RecordJson["meta"] => ({
  id: meta.id,
  createdAt: meta.createdAt,
  attempts: meta.attempts,
  nextAttemptAt: meta.nextAttemptAt,
  held: meta.held,
  delayWarned: meta.delayWarned,
  recipients: meta.recipients.map((r) => ({ status: r.status, reply: r.reply ?? null, remoteMta: r.remoteMta ?? null, at: r.at ?? null })),
  lease: meta.lease === undefined ? null : { owner: meta.lease.owner, until: meta.lease.until },
  size: meta.size,
  sender: meta.sender
})

/** Encodes a META frame carrying the full `meta`. */
export const encodeMeta = (meta: QueueStorage.Meta, crc: Crc32): Uint8Array => encodeText(META, JSON.stringify(metaJson(meta)), crc)

/** Encodes a REMOVE frame of `id` (a valid id: ASCII). */
export const encodeRemove = (id: string, crc: Crc32): Uint8Array => encodeText(REMOVE, id, crc)

// --- decoding ----------------------------------------------------------------------

/** One checked frame. `payload` is a view into the decoder's input: copy what you keep. */
export interface Frame {
  /** Where the frame starts in its segment. */
  readonly offset: number
  readonly type: number
  readonly payload: Uint8Array
}

/** Why a segment's frames stop before its end. */
export type StopReason = "short" | "length" | "checksum"

/** Where the readable part of a segment ends, and why. */
export interface Stop {
  readonly offset: number
  readonly reason: StopReason
}

/** The human form of a `Stop`, for the warning. */
export const describeStop = (stop: Stop): string =>
  stop.reason === "short"
    ? `a frame cut short at byte ${stop.offset}`
    : stop.reason === "length"
    ? `a bad frame length at byte ${stop.offset}`
    : `a bad checksum at byte ${stop.offset}`

/**
 * A streaming frame decoder: `push` the bytes of a segment in chunks of any
 * size, in order, and get every complete, checked frame; `end` says whether
 * the segment ended cleanly or where its readable part stops. After the
 * first bad frame it ignores everything. Never throws.
 */
export class FrameDecoder {
  private readonly crc: Crc32
  private chunks: Array<Uint8Array> = []
  private buffered = 0
  private position = 0
  private stopped: Stop | undefined = undefined

  constructor(crc: Crc32) {
    this.crc = crc
  }

  /** The frames completed by `chunk`. */
  push(chunk: Uint8Array): Array<Frame> {
    const frames: Array<Frame> = []
    if (this.stopped !== undefined || chunk.length === 0) return frames
    this.chunks.push(chunk)
    this.buffered += chunk.length
    while (this.buffered >= HEADER) {
      const n = this.peekU32(0)
      if (n < 1 || n > MAX_FRAME) {
        this.stop("length")
        break
      }
      if (this.buffered < HEADER + n) break
      const bytes = this.take(HEADER + n)
      const c = this.crc(bytes.subarray(HEADER), this.crc(bytes.subarray(0, 4), 0))
      if (c !== readU32(bytes, 4)) {
        this.stop("checksum")
        break
      }
      frames.push({ offset: this.position, type: bytes[HEADER]!, payload: bytes.subarray(HEADER + 1) })
      this.position += HEADER + n
    }
    return frames
  }

  /** `undefined` when the input ended on a frame boundary with no bad frame, else where and why it stops. */
  end(): Stop | undefined {
    if (this.stopped !== undefined) return this.stopped
    if (this.buffered > 0) return { offset: this.position, reason: "short" }
    return undefined
  }

  private stop(reason: StopReason): void {
    this.stopped = { offset: this.position, reason }
    this.chunks = []
    this.buffered = 0
  }

  private peekU32(at: number): number {
    const first = this.chunks[0]!
    if (first.length >= at + 4) return readU32(first, at)
    let v = 0
    let need = at
    let got = 0
    for (const c of this.chunks) {
      for (let i = 0; i < c.length && got < 4; i++) {
        if (need > 0) {
          need--
          continue
        }
        v = (v << 8) | c[i]!
        got++
      }
      if (got === 4) break
    }
    return v >>> 0
  }

  /** Removes and returns the next `n` buffered bytes (a view when they lie in one chunk). */
  private take(n: number): Uint8Array {
    const first = this.chunks[0]!
    this.buffered -= n
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    const out = new Uint8Array(n)
    let o = 0
    while (o < n) {
      const c = this.chunks[0]!
      const k = Math.min(c.length, n - o)
      out.set(c.subarray(0, k), o)
      o += k
      if (k === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(k)
    }
    return out
  }
}

// ---------------------------------------------------------------------------
// Zero prefill (both adapters)
// ---------------------------------------------------------------------------

/** A batch smaller than this extends a segment's zero-filled region ahead of it; a larger one is written alone. */
export const PREFILL_BELOW = 64 * 1024
/** How far ahead of a small batch's end the zero-filled region is extended. */
export const PREFILL_BYTES = 256 * 1024

/**
 * How many zero bytes an adapter writes right after a batch of `length`
 * bytes at `position`, when the segment's written region ends at
 * `prefilled` and the segment takes no appends past `limit`: none while the
 * batch fits in the region or is `PREFILL_BELOW` or larger, else up to
 * `PREFILL_BYTES` past its end (never past `limit`). Small batches then land
 * in blocks already on the disk, so their durable write commits no new file
 * size; big ones are not written twice.
 */
export const zerosAfter = (position: number, length: number, prefilled: number, limit: number): number => {
  const end = position + length
  if (end <= prefilled || length >= PREFILL_BELOW) return 0
  return Math.max(0, Math.min(end + PREFILL_BYTES, limit) - end)
}
