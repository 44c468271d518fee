/**
 * Strict base64 (RFC 4648 §4, the standard alphabet) for SASL exchanges.
 *
 * RFC 4954 §4 wants undecodable AUTH data answered with `501 5.5.2`, and the
 * Exim/Cyrus AUTH bugs were fed by lenient decoders, so `decode` accepts only
 * the canonical encoding: the standard alphabet, a length that is a multiple
 * of four, `=` padding only as the last one or two characters, zero pad bits,
 * no whitespace or line breaks, no URL-safe alphabet. In other words a string
 * decodes exactly when `encode(decode(s)) === s`.
 *
 * Deliberately not here: streaming, MIME line wrapping, the URL-safe
 * alphabet, and the AUTH convention that a lone `=` is an empty initial
 * response (that lives in `Sasl`, because `=` is not valid base64).
 *
 * @since 0.1.0
 */

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
const PAD = 0x3d // "="

/** Char code → 6-bit value, or -1 for anything outside the alphabet. */
const DECODE: Int8Array = (() => {
  const t = new Int8Array(128).fill(-1)
  for (let i = 0; i < ALPHABET.length; i++) t[ALPHABET.charCodeAt(i)] = i
  return t
})()

const ENCODE: Uint8Array = (() => {
  const t = new Uint8Array(64)
  for (let i = 0; i < 64; i++) t[i] = ALPHABET.charCodeAt(i)
  return t
})()

const value = (s: string, i: number): number => {
  const c = s.charCodeAt(i)
  return c < 128 ? DECODE[c]! : -1
}

/**
 * Decodes strict, canonical base64, or returns `undefined` for anything else
 * (never throws). The empty string decodes to the empty array.
 *
 * @example
 * decode("Zm9v")  // Uint8Array [0x66, 0x6f, 0x6f]
 * decode("=AAA")  // undefined: padding at the start
 * decode("Zg=")   // undefined: length not a multiple of 4
 * decode("Zh==")  // undefined: non-zero pad bits (canonical form is "Zg==")
 */
export const decode = (s: string): Uint8Array | undefined => {
  const n = s.length
  if (n % 4 !== 0) return undefined
  if (n === 0) return new Uint8Array(0)
  let pad = 0
  if (s.charCodeAt(n - 1) === PAD) pad = s.charCodeAt(n - 2) === PAD ? 2 : 1
  const out = new Uint8Array((n / 4) * 3 - pad)
  const full = pad === 0 ? n : n - 4 // characters in complete, unpadded quads
  let o = 0
  for (let i = 0; i < full; i += 4) {
    const a = value(s, i)
    const b = value(s, i + 1)
    const c = value(s, i + 2)
    const d = value(s, i + 3)
    if ((a | b | c | d) < 0) return undefined
    out[o++] = (a << 2) | (b >> 4)
    out[o++] = ((b & 0x0f) << 4) | (c >> 2)
    out[o++] = ((c & 0x03) << 6) | d
  }
  if (pad > 0) {
    const a = value(s, full)
    const b = value(s, full + 1)
    if ((a | b) < 0) return undefined
    out[o++] = (a << 2) | (b >> 4)
    if (pad === 1) {
      const c = value(s, full + 2)
      if (c < 0 || (c & 0x03) !== 0) return undefined
      out[o++] = ((b & 0x0f) << 4) | (c >> 2)
    } else if ((b & 0x0f) !== 0) {
      return undefined
    }
  }
  return out
}

/** Encodes bytes as padded standard base64 (RFC 4648 §4). */
export const encode = (bytes: Uint8Array): string => {
  const n = bytes.length
  const out = new Uint8Array(Math.ceil(n / 3) * 4)
  let o = 0
  let i = 0
  for (; i + 2 < n; i += 3) {
    const x = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!
    out[o++] = ENCODE[x >> 18]!
    out[o++] = ENCODE[(x >> 12) & 0x3f]!
    out[o++] = ENCODE[(x >> 6) & 0x3f]!
    out[o++] = ENCODE[x & 0x3f]!
  }
  if (i < n) {
    const x = (bytes[i]! << 16) | (i + 1 < n ? bytes[i + 1]! << 8 : 0)
    out[o++] = ENCODE[x >> 18]!
    out[o++] = ENCODE[(x >> 12) & 0x3f]!
    out[o++] = i + 1 < n ? ENCODE[(x >> 6) & 0x3f]! : PAD
    out[o++] = PAD
  }
  let s = ""
  for (let k = 0; k < out.length; k += 4096) {
    s += String.fromCharCode.apply(null, out.subarray(k, Math.min(out.length, k + 4096)) as unknown as Array<number>)
  }
  return s
}

/** True when `s` is strict, canonical base64 (see `decode`). */
export const isValid = (s: string): boolean => decode(s) !== undefined
