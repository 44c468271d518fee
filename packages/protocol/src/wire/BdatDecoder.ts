/**
 * BDAT chunk bodies (RFC 3030 CHUNKING): after `BDAT <n> [LAST]` exactly `n`
 * octets of message text follow, with no dot-stuffing and no terminator.
 *
 * `decode` takes up to the remaining count of octets from the received bytes.
 * The bare-newline helpers let the session apply the same policy as for DATA
 * (`DataDecoder.BareNewlinePolicy`) to BDAT content, which RFC 3030 §3
 * requires to be canonical CRLF text: a bare CR or bare LF is either detected
 * (`hasBareNewline`, for "reject") or rewritten to CRLF (`normalize`, for
 * "normalize"). A CRLF may be split across two BDAT chunks, so every helper
 * takes `prevEndedWithCr`: whether the previous content byte (from an earlier
 * chunk) was a CR whose fate is still open. A trailing CR of a chunk is left
 * open and settled by the next chunk, or by `endOfMessage` after the LAST one.
 *
 * This module does not parse the BDAT command (see `smtp/Command`), count
 * the message size or decide replies; it keeps no state between calls.
 *
 * @since 0.1.0
 */
import { CR, LF } from "./Bytes.ts"

/** The result of one `decode` call. */
export interface BdatResult {
  /** Chunk content from this call: a subarray view of the caller's buffer. */
  readonly chunk: Uint8Array
  /** Bytes consumed from `offset` (equal to `chunk.length`). */
  readonly consumed: number
  /** Octets of this BDAT chunk still to come. */
  readonly remaining: number
}

/**
 * Takes up to `remaining` octets of chunk content from `buf` at `offset`.
 * When the result's `remaining` is 0 the chunk is complete and the bytes
 * after `offset + consumed` are the next command.
 */
export const decode = (remaining: number, buf: Uint8Array, offset: number): BdatResult => {
  const available = buf.length > offset ? buf.length - offset : 0
  const want = remaining > 0 ? remaining : 0
  const take = available < want ? available : want
  return { chunk: buf.subarray(offset, offset + take), consumed: take, remaining: want - take }
}

/**
 * True when the last content byte seen so far is a CR whose LF may still come:
 * pass the result as `prevEndedWithCr` with the next chunk. An empty chunk
 * keeps the previous value.
 */
export const endsWithCr = (bytes: Uint8Array, prevEndedWithCr: boolean): boolean =>
  bytes.length === 0 ? prevEndedWithCr : bytes[bytes.length - 1] === CR

/**
 * True when `bytes` show a bare CR or bare LF: an LF not preceded by CR, a CR
 * followed by anything but LF, or (with `prevEndedWithCr`) a first byte other
 * than LF. A trailing CR is not judged here (see `endsWithCr`,
 * `endOfMessage`).
 */
export const hasBareNewline = (bytes: Uint8Array, prevEndedWithCr: boolean): boolean => {
  const n = bytes.length
  if (n === 0) return false
  if (prevEndedWithCr && bytes[0] !== LF) return true
  if (!prevEndedWithCr && bytes[0] === LF) return true
  let i = bytes.indexOf(LF, 1)
  while (i !== -1) {
    if (bytes[i - 1] !== CR) return true
    i = bytes.indexOf(LF, i + 1)
  }
  let c = bytes.indexOf(CR)
  while (c !== -1 && c < n - 1) {
    if (bytes[c + 1] !== LF) return true
    c = bytes.indexOf(CR, c + 1)
  }
  return false
}

/**
 * Rewrites every bare CR and bare LF of `bytes` to CRLF. With
 * `prevEndedWithCr` and a first byte other than LF, an LF is written first
 * (completing the previous chunk's CR). A trailing CR is written as is and
 * completed by the next call or by `endOfMessage`. Returns `bytes` itself
 * when nothing changes.
 */
export const normalize = (bytes: Uint8Array, prevEndedWithCr: boolean): Uint8Array => {
  if (!hasBareNewline(bytes, prevEndedWithCr)) return bytes
  const n = bytes.length
  // count the output first
  let extra = prevEndedWithCr && bytes[0] !== LF ? 1 : 0
  for (let i = 0; i < n; i++) {
    const b = bytes[i]
    if (b === CR) {
      if (i + 1 < n && bytes[i + 1] !== LF) extra++
    } else if (b === LF) {
      if (i === 0 ? !prevEndedWithCr : bytes[i - 1] !== CR) extra++
    }
  }
  const out = new Uint8Array(n + extra)
  let o = 0
  if (prevEndedWithCr && bytes[0] !== LF) out[o++] = LF
  for (let i = 0; i < n; i++) {
    const b = bytes[i]!
    if (b === CR) {
      out[o++] = CR
      if (i + 1 < n && bytes[i + 1] !== LF) out[o++] = LF
    } else if (b === LF) {
      if (i === 0 ? !prevEndedWithCr : bytes[i - 1] !== CR) out[o++] = CR
      out[o++] = LF
    } else {
      out[o++] = b
    }
  }
  return out
}

/**
 * Settles a CR left open by the last chunk of a message: it was bare. Returns
 * the bytes to append under "normalize" (an LF, or nothing); the same
 * condition (`prevEndedWithCr`) is the bare-newline verdict under "reject".
 */
export const endOfMessage = (prevEndedWithCr: boolean): Uint8Array => (prevEndedWithCr ? new Uint8Array([LF]) : new Uint8Array(0))
