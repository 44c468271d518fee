/**
 * The sending side of DATA (RFC 5321 §4.5.2): dot-stuffs the message text,
 * makes every line end a CRLF and appends the terminator `.\r\n` (after a
 * CRLF when the text does not end with one).
 *
 * Any bare CR or bare LF in the message is written as CRLF (a CR followed by
 * LF stays one CRLF), so Mailroom never emits a stray newline that a
 * receiving server could read as the end of data (SMTP smuggling, outbound
 * side; see reference/security.md §2). Together with stuffing every "." that
 * starts a line, the only `CRLF . CRLF` in the output is the terminator.
 *
 * Round trip: for a message whose line ends are CRLF,
 * `DataDecoder.decode(initial, encode(m))` gives back `m` (with a trailing
 * CRLF added when it lacked one), `done` and every byte consumed. The empty
 * message encodes as `.\r\n` and decodes as empty.
 *
 * `encode` works on a whole message; `encodeChunk` / `end` do the same over a
 * stream of chunks with a small immutable state. The module does not touch
 * headers, line lengths (RFC 5322's 998) or 8-bit content; it assumes the
 * DATA command's own CRLF precedes the text, so the text starts at a line
 * start.
 *
 * @since 0.1.0
 */
import { CR, DOT, LF } from "./Bytes.ts"

/** The streaming state. */
export interface EncoderState {
  /** The next byte starts a line: a "." there is stuffed. */
  readonly atLineStart: boolean
  /** The last input byte was a CR, already written as CRLF: an LF right after it is dropped. */
  readonly afterCr: boolean
}

/** The state at the start of the message text. */
export const initial: EncoderState = { atLineStart: true, afterCr: false }

/**
 * Runs the encoder over `bytes`; counts only when `out` is undefined. Returns
 * the output length. Unchanged runs are copied whole; `indexOf` finds the next
 * CR or LF, so a clean CRLF message costs little more than a copy.
 */
const run = (
  state: EncoderState,
  bytes: Uint8Array,
  out: Uint8Array | undefined
): { readonly length: number; readonly state: EncoderState } => {
  const n = bytes.length
  let ls = state.atLineStart
  let afterCr = state.afterCr
  let o = 0
  let i = 0
  let seg = 0 // start of the pending run of input copied unchanged
  const copy = (to: number): void => {
    if (out !== undefined) out.set(bytes.subarray(seg, to), o)
    o += to - seg
  }
  const put = (byte: number): void => {
    if (out !== undefined) out[o] = byte
    o++
  }
  if (afterCr && n > 0) {
    // the CR ending the previous chunk was already written as CRLF
    if (bytes[0] === LF) i = seg = 1
    afterCr = false
  }
  let cr = -2 // cached index of the next CR at or after i (-1: none)
  let lf = -2 // cached index of the next LF at or after i (-1: none)
  while (i < n) {
    if (ls) {
      ls = false
      if (bytes[i] === DOT) {
        copy(i)
        put(DOT) // the stuffed dot; the original one stays in the run
        seg = i
      }
    }
    if (cr !== -1 && cr < i) cr = bytes.indexOf(CR, i)
    if (lf !== -1 && lf < i) lf = bytes.indexOf(LF, i)
    const j = cr === -1 ? lf : lf === -1 ? cr : cr < lf ? cr : lf
    if (j === -1) break
    ls = true
    if (j === cr) {
      if (j + 1 < n && bytes[j + 1] === LF) {
        i = j + 2 // a CRLF: copied as it is
        continue
      }
      copy(j + 1)
      put(LF) // a bare CR becomes CRLF
      seg = i = j + 1
      if (i === n) afterCr = true // an LF starting the next chunk belongs to this CR
      continue
    }
    // a bare LF becomes CRLF
    copy(j)
    put(CR)
    seg = j
    i = j + 1
  }
  copy(n)
  return { length: o, state: { atLineStart: ls, afterCr } }
}

/**
 * Encodes the next piece of a message being streamed. The output can be
 * written as soon as it is returned; nothing is held back.
 */
export const encodeChunk = (
  state: EncoderState,
  bytes: Uint8Array
): { readonly state: EncoderState; readonly bytes: Uint8Array } => {
  const counted = run(state, bytes, undefined)
  const out = new Uint8Array(counted.length)
  run(state, bytes, out)
  return { state: counted.state, bytes: out }
}

const terminator = (atLineStart: boolean): Uint8Array =>
  atLineStart ? new Uint8Array([DOT, CR, LF]) : new Uint8Array([CR, LF, DOT, CR, LF])

/** Ends a streamed message: `.\r\n`, preceded by CRLF when the text did not end with a line end. */
export const end = (state: EncoderState): Uint8Array => terminator(state.atLineStart)

/**
 * Encodes a whole message for sending after the `354` reply: dot-stuffed,
 * bare CR and bare LF written as CRLF, a CRLF added if missing, then `.\r\n`.
 *
 * @example
 * ```ts
 * DataEncoder.encode(Bytes.fromString(".hi\r\nthere")) // "..hi\r\nthere\r\n.\r\n"
 * ```
 */
export const encode = (message: Uint8Array): Uint8Array => {
  const counted = run(initial, message, undefined)
  const tail = terminator(counted.state.atLineStart)
  const out = new Uint8Array(counted.length + tail.length)
  run(initial, message, out)
  out.set(tail, counted.length)
  return out
}
