/**
 * Byte helpers shared by the wire codec. Everything on the wire is a
 * `Uint8Array`; text is only ever produced for command lines and replies,
 * which RFC 5321 keeps to ASCII (UTF-8 under SMTPUTF8). Message bodies are
 * never decoded.
 *
 * @since 0.1.0
 */

/** Carriage return, 0x0D. */
export const CR = 0x0d
/** Line feed, 0x0A. */
export const LF = 0x0a
/** Full stop, 0x2E. */
export const DOT = 0x2e
/** NUL, 0x00. */
export const NUL = 0x00

const encoder = new TextEncoder()
const strictDecoder = new TextDecoder("utf-8", { fatal: true })

/** The empty byte array, shared. */
export const empty: Uint8Array = new Uint8Array(0)

/** Encodes a string as UTF-8 bytes. */
export const fromString = (s: string): Uint8Array => encoder.encode(s)

/**
 * Decodes bytes as one-byte-per-char latin1. Never fails; used for command
 * lines so that the parser sees every byte, including 8-bit ones.
 */
export const toLatin1 = (bytes: Uint8Array, start = 0, end = bytes.length): string => {
  let s = ""
  // chunked to keep the argument list of fromCharCode bounded
  for (let i = start; i < end; i += 4096) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, Math.min(end, i + 4096)) as unknown as Array<number>)
  }
  return s
}

/** Encodes a latin1 string (each char code < 256) as bytes. */
export const fromLatin1 = (s: string): Uint8Array => {
  const out = new Uint8Array(s.length)
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff
  return out
}

/** Decodes strict UTF-8, or `undefined` when the bytes are not valid UTF-8. */
export const decodeUtf8 = (bytes: Uint8Array): string | undefined => {
  try {
    return strictDecoder.decode(bytes)
  } catch {
    return undefined
  }
}

/** Concatenates byte arrays into one new array (returns the only element as is). */
export const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  if (parts.length === 1) return parts[0]!
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

/** Byte-wise equality. */
export const equals = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** True when the string holds only printable ASCII and spaces (0x20-0x7E). */
export const isPrintableAscii = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c > 0x7e) return false
  }
  return true
}

/** True when the string contains CR, LF or NUL: never allowed in a value put on the wire. */
export const hasLineBreakOrNul = (s: string): boolean => /[\r\n\0]/.test(s)
