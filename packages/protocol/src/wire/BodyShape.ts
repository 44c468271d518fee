/**
 * What sending a text message over SMTP takes, read from its bytes in one
 * pass (`of`): whether it has 8-bit content (8BITMIME), its RFC 1870 SIZE,
 * whether it is already in canonical form (every line end CRLF, ending with
 * one), and whether it is "clean" (canonical, and no line starts with "."),
 * so that its DATA payload is the bytes themselves plus `.\r\n`. `canonical`
 * gives the canonical form of a message that is not (the BDAT payload).
 *
 * `ClientSession` asks `of` while it prepares a transaction and again when it
 * writes the body, so results are cached per byte array (a `WeakMap`).
 *
 * What it deliberately does not do: dot-stuff or encode (`DataEncoder`), or
 * look at headers, MIME or line lengths.
 *
 * @since 0.1.0
 */
import * as Bytes from "./Bytes.ts"

/** What sending a text message takes, from one pass over its bytes. */
export interface BodyShape {
  /** A byte is 0x80 or above. */
  readonly eightBit: boolean
  /** The RFC 1870 SIZE: the message with every line end CRLF and a final CRLF. */
  readonly size: number
  /** Every line end is CRLF and it ends with one (or is empty): it is its own canonical form. */
  readonly canonical: boolean
  /** Canonical, and no line starts with ".": the DATA payload is the message plus `.\r\n`. */
  readonly clean: boolean
}

/** Shapes already computed, per message bytes (a session asks twice about the same bytes). */
const shapes = new WeakMap<Uint8Array, BodyShape>()

const ONES = 0x01010101
const HIGH = 0x80808080
const LFS = 0x0a0a0a0a
const CRS = 0x0d0d0d0d

/**
 * The shape of a message, in one pass that reads four bytes at a time: a
 * word is looked at byte by byte only when it holds a CR or an LF (the
 * "has a zero byte" test on the word XOR the repeated CR or LF), so a
 * message costs about a quarter of a loop over every byte. The rare message
 * with a bare CR or LF is sized by `canonicalInto`.
 */
export const of = (data: Uint8Array): BodyShape => {
  const known = shapes.get(data)
  if (known !== undefined) return known
  const n = data.length
  let crlf = true
  let stuffed = n > 0 && data[0] === Bytes.DOT
  let high = 0
  /** Checks the line ends among bytes [from, to). */
  const ends = (from: number, to: number): void => {
    for (let i = from; i < to; i++) {
      const c = data[i]!
      if (c === Bytes.LF) {
        if (i === 0 || data[i - 1] !== Bytes.CR) crlf = false
        else if (data[i + 1] === Bytes.DOT) stuffed = true
      } else if (c === Bytes.CR && data[i + 1] !== Bytes.LF) crlf = false
    }
  }
  const head = Math.min(n, (4 - (data.byteOffset & 3)) & 3)
  for (let i = 0; i < head; i++) high |= data[i]!
  ends(0, head)
  const words = (n - head) >>> 2
  if (words > 0) {
    const w = new Uint32Array(data.buffer, data.byteOffset + head, words)
    for (let k = 0; k < words; k++) {
      const x = w[k]!
      high |= x
      const lf = x ^ LFS
      const cr = x ^ CRS
      if ((((lf - ONES) & ~lf) | ((cr - ONES) & ~cr)) & HIGH) ends(head + (k << 2), head + (k << 2) + 4)
    }
  }
  const tail = head + (words << 2)
  for (let i = tail; i < n; i++) high |= data[i]!
  ends(tail, n)
  const endsWithCrlf = n === 0 || (n >= 2 && data[n - 1] === Bytes.LF && data[n - 2] === Bytes.CR)
  const canonicalForm = crlf && endsWithCrlf
  const shape: BodyShape = {
    eightBit: (high & HIGH) !== 0,
    size: canonicalForm ? n : crlf ? n + 2 : canonicalInto(data, undefined),
    canonical: canonicalForm,
    clean: canonicalForm && !stuffed
  }
  shapes.set(data, shape)
  return shape
}

/**
 * The message with every line end CRLF (a bare CR or LF becomes CRLF) and a
 * final CRLF: writes it into `out` when given, returns its length. This is
 * the RFC 1870 SIZE of a text message (no dot-stuffing) and the BDAT payload.
 */
const canonicalInto = (data: Uint8Array, out: Uint8Array | undefined): number => {
  let o = 0
  let afterCr = false
  let lineStart = true
  for (let i = 0; i < data.length; i++) {
    const c = data[i]!
    if (c === Bytes.LF && afterCr) {
      afterCr = false
      continue
    }
    if (c === Bytes.LF || c === Bytes.CR) {
      if (out) {
        out[o] = Bytes.CR
        out[o + 1] = Bytes.LF
      }
      o += 2
      afterCr = c === Bytes.CR
      lineStart = true
    } else {
      if (out) out[o] = c
      o++
      afterCr = false
      lineStart = false
    }
  }
  if (!lineStart) {
    if (out) {
      out[o] = Bytes.CR
      out[o + 1] = Bytes.LF
    }
    o += 2
  }
  return o
}

/** The message with every line end CRLF and a final CRLF, as new bytes (the BDAT payload of a text message). */
export const canonical = (data: Uint8Array): Uint8Array => {
  const out = new Uint8Array(canonicalInto(data, undefined))
  canonicalInto(data, out)
  return out
}
