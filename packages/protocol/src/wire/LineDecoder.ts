/**
 * Command-line framing for the server side (RFC 5321 §2.3.8, §4.5.3.1.4):
 * splits received bytes into lines that end with CRLF, and nothing else.
 *
 * - CRLF is the only line end. A bare LF or a bare CR is never a line end:
 *   the line runs on to the next CRLF and is then reported as `BareNewline`,
 *   so the session answers `500 5.5.2` and the line is never executed (the
 *   SMTP smuggling class, see reference/security.md §2).
 * - `limit` is the longest acceptable line INCLUDING its CRLF (512 for
 *   commands, RFC 5321 §4.5.3.1.4; 12288 is enough for AUTH continuation
 *   lines, RFC 4954 §4). Bytes of an over-long line are consumed as they
 *   arrive (never buffered) while the state is `discarding`; when the line's
 *   CRLF arrives the result is `TooLong`, once.
 *
 * The decoder is a pure function of an immutable state and the bytes. It
 * deliberately keeps no partial match: the caller keeps the bytes that were
 * not consumed and presents them again, followed by new bytes, on the next
 * call. It does not parse commands (see `smtp/Command`) and does not decode
 * text; a `Line` is a view into the caller's buffer.
 *
 * @since 0.1.0
 */
import { CR, LF } from "./Bytes.ts"

/** The framing state: `discarding` while the rest of an over-long line is skipped. */
export interface LineState {
  readonly discarding: boolean
}

/** The state at the start of a connection (and after every complete line). */
export const initial: LineState = { discarding: false }

const discardingState: LineState = { discarding: true }

/** What one call found. `consumed` counts bytes from `offset`. */
export type LineResult =
  | {
    readonly _tag: "Line"
    /** The line without its CRLF: a subarray view of the caller's buffer. */
    readonly line: Uint8Array
    readonly consumed: number
  }
  /** An over-long line ended (its CRLF consumed): answer `500 5.5.6` once. */
  | { readonly _tag: "TooLong"; readonly consumed: number }
  /** A line holding a bare CR or bare LF ended at CRLF: answer `500 5.5.2`; the line is discarded. */
  | { readonly _tag: "BareNewline"; readonly consumed: number }
  /** No complete line yet; `consumed > 0` only while discarding an over-long line. */
  | { readonly _tag: "NeedMore"; readonly consumed: number }

/** The result of one call: the next state and what was found. */
export interface LineDecoded {
  readonly state: LineState
  readonly result: LineResult
}

const needMoreNothing: LineDecoded = { state: initial, result: { _tag: "NeedMore", consumed: 0 } }

const tooLong = (consumed: number): LineDecoded => ({ state: initial, result: { _tag: "TooLong", consumed } })

/** Consumes everything but a trailing CR (which may be the CR of the CRLF still to come). */
const discardAll = (buf: Uint8Array, offset: number): LineDecoded => {
  const end = buf.length
  const keep = end > offset && buf[end - 1] === CR ? 1 : 0
  return { state: discardingState, result: { _tag: "NeedMore", consumed: end - offset - keep } }
}

/** Index of the CR of the first CRLF at or after `from`, or -1. */
const findCrlf = (buf: Uint8Array, from: number): number => {
  let i = buf.indexOf(LF, from)
  while (i !== -1) {
    if (i > from && buf[i - 1] === CR) return i - 1
    i = buf.indexOf(LF, i + 1)
  }
  return -1
}

/**
 * Finds the next complete line in `buf` from `offset`.
 *
 * Returns at most one line per call; call again from `offset + consumed`
 * while the result is not `NeedMore`. On `NeedMore`, drop the `consumed`
 * bytes, keep the rest, and call again once more bytes arrived. A CR at the
 * very end of `buf` is never consumed (it may be the CR of a CRLF).
 *
 * @example
 * ```ts
 * const { result } = LineDecoder.decode(LineDecoder.initial, bytes, 0, 512)
 * if (result._tag === "Line") handle(result.line)
 * ```
 */
export const decode = (state: LineState, buf: Uint8Array, offset: number, limit: number): LineDecoded => {
  const end = buf.length
  if (offset >= end) return state.discarding ? { state, result: { _tag: "NeedMore", consumed: 0 } } : needMoreNothing

  if (state.discarding) {
    const cr = findCrlf(buf, offset)
    return cr === -1 ? discardAll(buf, offset) : tooLong(cr + 2 - offset)
  }

  // The LF of an acceptable line sits before `max`.
  const max = offset + limit
  let bare = false
  for (let i = offset; i < end; i++) {
    const b = buf[i]
    if (b === CR) {
      if (i + 1 >= end) break // a trailing CR: wait for the next byte
      if (buf[i + 1] === LF) {
        const consumed = i + 2 - offset
        if (i + 2 > max) return tooLong(consumed)
        if (bare) return { state: initial, result: { _tag: "BareNewline", consumed } }
        return { state: initial, result: { _tag: "Line", line: buf.subarray(offset, i), consumed } }
      }
      bare = true
    } else if (b === LF) {
      bare = true
    }
  }
  // no CRLF in the buffer
  if (end - offset >= limit) return discardAll(buf, offset)
  return needMoreNothing
}
