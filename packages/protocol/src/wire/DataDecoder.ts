/**
 * The DATA reader (RFC 5321 §4.1.1.4, §4.5.2): finds the end of the message
 * text, removes dot-stuffing, counts the size against a cap and applies the
 * bare CR / bare LF policy.
 *
 * End of data is ONLY `CRLF . CRLF`, where the first CRLF may be the one that
 * ended the DATA command line (the state starts "at line start"). None of
 * `\n.\n`, `\r.\r`, `\r.\n`, `\n.\r`, `\r.\r\n`, `\r\n.\r`, `\r\n.\n`,
 * `\n.\r\n`, `\r\n\x00.\r\n`, nor any other variant ends the data: this closes
 * SMTP smuggling (CVE-2023-51764/51765/51766) by construction.
 *
 * - Dot-unstuffing: a "." that starts a line (after a real CRLF) is removed.
 *   A line that starts after a bare CR or bare LF is not at a real line start:
 *   it is neither unstuffed nor ever taken as the end of data.
 * - Bare newlines: under `"normalize"` each bare CR and each bare LF is written
 *   out as CRLF; under `"reject"` the bytes pass through unchanged and the
 *   message is read to its end with `bareNewline` set, for the caller to
 *   refuse (`550 5.5.2`). Both policies set `bareNewline`.
 * - Size: `size` counts the bytes of message content (after unstuffing and
 *   normalisation) as they arrive. Once `size > maxSize`, `exceeded` is set and
 *   no more content is emitted; the reader keeps scanning for the terminator,
 *   so memory stays bounded. The content emitted in all is exactly the first
 *   `maxSize` bytes, whatever the split of the input.
 *
 * Like `LineDecoder`, this is a pure function over an immutable state that
 * keeps no partial match: an incomplete tail that may start a CRLF or the
 * terminator (a trailing CR, or a "." / ".\r" at a line start) is left
 * unconsumed for the caller to present again with more bytes. It deliberately
 * does not look inside the message (headers, MIME, line lengths).
 *
 * Chunks are subarray views of the caller's buffer when no transformation was
 * needed: the caller must not overwrite that buffer while it keeps the chunks.
 *
 * @since 0.1.0
 */
import { concat, CR, DOT, LF } from "./Bytes.ts"

/** What to do with a bare CR or bare LF inside the message text. */
export type BareNewlinePolicy = "normalize" | "reject"

/** The reader's state between calls. */
export interface DataState {
  /** The next byte starts a line (it follows a real CRLF, or the DATA command line). */
  readonly atLineStart: boolean
  /** Bytes of message content so far (after unstuffing and normalisation). */
  readonly size: number
  /** `size` went over `maxSize`: content is no longer emitted. */
  readonly exceeded: boolean
  /** A bare CR or bare LF was seen. */
  readonly bareNewline: boolean
}

/** The state right after the `354` reply to DATA. */
export const initial: DataState = { atLineStart: true, size: 0, exceeded: false, bareNewline: false }

/** Options of `decode`. */
export interface DataOptions {
  /** The size cap in bytes; `0` or `Infinity` means no cap. */
  readonly maxSize: number
  readonly bareNewline: BareNewlinePolicy
}

/** The result of one call. */
export interface DataResult {
  readonly state: DataState
  /**
   * Message content decoded by this call: unstuffed, with CRLF line ends; the
   * CRLF before the final "." belongs to the message. Empty once exceeded.
   */
  readonly chunks: ReadonlyArray<Uint8Array>
  /** Bytes consumed from `offset`. */
  readonly consumed: number
  /** The terminating CRLF.CRLF was consumed; bytes after it are not. */
  readonly done: boolean
}

const CRLF: Uint8Array = new Uint8Array([CR, LF])
const noChunks: ReadonlyArray<Uint8Array> = []

/**
 * Reads message text from `buf` at `offset`, up to the end of data or the end
 * of `buf`.
 *
 * Call it with each batch of received bytes after the `354` reply; keep the
 * bytes it did not consume and present them again, followed by new bytes, on
 * the next call. When `done` is true, the bytes after `offset + consumed`
 * belong to the next command (pipelining).
 *
 * @example
 * ```ts
 * let st = DataDecoder.initial
 * const r = DataDecoder.decode(st, bytes, 0, { maxSize: 10_000_000, bareNewline: "normalize" })
 * st = r.state; parts.push(...r.chunks)
 * if (r.done) { reply(st.exceeded ? Reply.messageTooBig : ...) }
 * ```
 */
export const decode = (state: DataState, buf: Uint8Array, offset: number, options: DataOptions): DataResult => {
  const end = buf.length
  const normalize = options.bareNewline === "normalize"
  const cap = options.maxSize > 0 ? options.maxSize : Infinity

  let size = state.size
  let exceeded = state.exceeded
  let bare = state.bareNewline
  let ls = state.atLineStart
  let done = false
  let out: Array<Uint8Array> | undefined

  const emit = (part: Uint8Array): void => {
    const n = part.length
    if (n === 0) return
    if (!exceeded) {
      if (size + n > cap) {
        const room = cap - size
        if (room > 0) (out ??= []).push(part.subarray(0, room))
        exceeded = true
      } else {
        ;(out ??= []).push(part)
      }
    }
    size += n
  }

  let i = offset
  let segStart = offset // start of the pending unchanged run of content
  let cr = -2 // cached index of the next CR at or after i (-1: none)
  let lf = -2 // cached index of the next LF at or after i (-1: none)

  while (i < end) {
    if (ls) {
      if (buf[i] === DOT) {
        if (i + 1 >= end) break // "." at the end: may be the terminator
        if (buf[i + 1] === CR) {
          if (i + 2 >= end) break // ".\r" at the end: may be the terminator
          if (buf[i + 2] === LF) {
            emit(buf.subarray(segStart, i))
            i += 3
            segStart = i
            done = true
            break
          }
        }
        // a stuffed dot: drop it
        emit(buf.subarray(segStart, i))
        i += 1
        segStart = i
      }
      ls = false
      continue
    }
    if (cr !== -1 && cr < i) cr = buf.indexOf(CR, i)
    if (lf !== -1 && lf < i) lf = buf.indexOf(LF, i)
    const j = cr === -1 ? lf : lf === -1 ? cr : cr < lf ? cr : lf
    if (j === -1) {
      i = end
      break
    }
    if (j === cr) {
      if (j + 1 >= end) {
        i = j // a trailing CR: may be the CR of a CRLF
        break
      }
      if (buf[j + 1] === LF) {
        i = j + 2
        ls = true
        continue
      }
    }
    // a bare CR, or a bare LF (an LF after a CR was taken with it above)
    bare = true
    if (normalize) {
      emit(buf.subarray(segStart, j))
      emit(CRLF)
      segStart = j + 1
    }
    i = j + 1
  }
  if (!done) emit(buf.subarray(segStart, i))

  // one chunk per call; never hand out the shared CRLF constant itself
  const chunks = out === undefined
    ? noChunks
    : out.length > 1
    ? [concat(out)]
    : out[0]!.buffer === CRLF.buffer
    ? [out[0]!.slice()]
    : out
  return {
    state: { atLineStart: ls, size, exceeded, bareNewline: bare },
    chunks,
    consumed: i - offset,
    done
  }
}

/** Concatenates the chunks of one or more results (a convenience for tests and small messages). */
export const join = (chunks: ReadonlyArray<Uint8Array>): Uint8Array => (chunks.length === 0 ? new Uint8Array(0) : concat(chunks))
