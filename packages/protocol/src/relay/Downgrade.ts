/**
 * 8-bit to 7-bit conversion of a message for a server that does not offer
 * 8BITMIME (RFC 6152 §3: a client that cannot send 8-bit data as it is must
 * convert it to 7 bits or return it undelivered).
 *
 * The conversion walks the MIME tree of the message and re-encodes only the
 * leaf bodies that carry 8-bit bytes:
 * - a `text/*` body (transfer encoding `7bit`, `8bit`, `binary` or none) is
 *   re-encoded as quoted-printable (RFC 2045 §6.7), line ends kept as hard
 *   line breaks, lines soft-broken to at most 76 characters;
 * - any other discrete type with such an encoding is re-encoded as base64 in
 *   76-character lines;
 * - `multipart/*` is walked part by part (its delimiters found by its
 *   `boundary`), and `message/rfc822` is walked as the message it holds; a
 *   composite entity declared `8bit`/`binary` is relabelled `7bit`.
 *
 * The entity's `Content-Transfer-Encoding` field is replaced (or added at the
 * end of its header block); every other byte of the message is left exactly
 * as it was, charset parameters included, so decoding the converted message
 * gives back the same octets.
 *
 * The conversion refuses (`Unsafe`, which relays answer with a permanent
 * `554 5.6.3`) whenever it could not be done correctly: a message without
 * `MIME-Version`, 8-bit bytes in a header block (that needs SMTPUTF8 or
 * RFC 2047 encoding, which changes the text), in a multipart preamble or
 * epilogue, in a body already declared base64 or quoted-printable, a
 * multipart without a boundary, or another `message/*` type that carries
 * 8-bit data.
 *
 * What this module deliberately does not do: RFC 2047 header encoding,
 * charset conversion, BINARYMIME (bodies with bare CR/LF) or any change to a
 * message that is already 7-bit.
 *
 * @since 0.1.0
 */
import * as Base64 from "../auth/Base64.ts"
import * as Headers from "../envelope/Headers.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Bytes from "../wire/Bytes.ts"

/** The outcome of `toSevenBit`. */
export type Result =
  /** The message has no 8-bit byte: send it as it is. */
  | { readonly _tag: "Unchanged" }
  /** The converted message: 7-bit only. */
  | { readonly _tag: "Converted"; readonly message: Uint8Array }
  /** It cannot be converted correctly; `reason` says why. */
  | { readonly _tag: "Unsafe"; readonly reason: string }

/** `554 5.6.3 Conversion required but not supported` (RFC 3463: conversion required and prohibited). */
export const conversionFailed = (reason?: string): Reply.Reply =>
  Reply.make(554, "5.6.3", `Conversion required but not supported${reason !== undefined ? `: ${reason}` : ""}`)

/** True when any byte in `bytes[start, end)` is 0x80 or above. */
export const has8Bit = (bytes: Uint8Array, start = 0, end = bytes.length): boolean => {
  for (let i = start; i < end; i++) if (bytes[i]! >= 0x80) return true
  return false
}

// ---------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------

const HEX = "0123456789ABCDEF"
const EQ = 0x3d
const SP = 0x20
const HT = 0x09
const MAX_QP_LINE = 76

/**
 * Quoted-printable (RFC 2045 §6.7) of a text body whose line ends are CRLF:
 * each CRLF stays a hard line break, a bare CR or LF is encoded (`=0D`,
 * `=0A`) so that decoding gives back the same bytes, trailing spaces and tabs
 * are encoded, and lines are soft-broken (`=` CRLF) to at most 76 characters.
 */
export const encodeQuotedPrintable = (body: Uint8Array): Uint8Array => {
  let out = ""
  let line = ""
  const push = (token: string): void => {
    if (line.length + token.length > MAX_QP_LINE - 1) {
      out += `${line}=\r\n`
      line = ""
    }
    line += token
  }
  const n = body.length
  for (let i = 0; i < n; i++) {
    const c = body[i]!
    if (c === Bytes.CR && body[i + 1] === Bytes.LF) {
      out += `${line}\r\n`
      line = ""
      i++
      continue
    }
    const atLineEnd = i + 1 === n || (body[i + 1] === Bytes.CR && body[i + 2] === Bytes.LF)
    const literal = (c >= 33 && c <= 126 && c !== EQ) || ((c === SP || c === HT) && !atLineEnd)
    push(literal ? String.fromCharCode(c) : `=${HEX[c >> 4]}${HEX[c & 15]}`)
  }
  out += line
  return Bytes.fromString(out)
}

/** Base64 of `body` in lines of 76 characters, each ended by CRLF (RFC 2045 §6.8). */
export const encodeBase64Lines = (body: Uint8Array): Uint8Array => {
  const text = Base64.encode(body)
  let out = ""
  for (let i = 0; i < text.length; i += 76) out += `${text.slice(i, i + 76)}\r\n`
  return Bytes.fromString(out)
}

// ---------------------------------------------------------------------------
// Content-Type
// ---------------------------------------------------------------------------

/** A parsed `Content-Type`: lowercase type and subtype, parameters by lowercase name. */
export interface ContentType {
  readonly type: string
  readonly subtype: string
  readonly params: ReadonlyMap<string, string>
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/

/** Removes RFC 5322 comments (nested parentheses, with `\` escapes) outside quoted strings. */
const stripComments = (s: string): string => {
  let out = ""
  let depth = 0
  let quoted = false
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!
    if (c === "\\" && (quoted || depth > 0)) {
      if (depth === 0) out += c + (s[i + 1] ?? "")
      i++
    } else if (quoted) {
      out += c
      if (c === "\"") quoted = false
    } else if (c === "(") depth++
    else if (c === ")" && depth > 0) depth--
    else if (depth === 0) {
      if (c === "\"") quoted = true
      out += c
    }
  }
  return out
}

/**
 * Parses a `Content-Type` value (`type/subtype; name=value; name="quoted"`),
 * or `undefined` when the type is not `token/token`. Unparsable parameters
 * are skipped. Never throws.
 */
export const parseContentType = (value: string): ContentType | undefined => {
  let s = stripComments(value).trim()
  const t = TOKEN.exec(s)
  if (t === null) return undefined
  s = s.slice(t[0].length).trimStart()
  if (s[0] !== "/") return undefined
  s = s.slice(1).trimStart()
  const st = TOKEN.exec(s)
  if (st === null) return undefined
  s = s.slice(st[0].length)
  const params = new Map<string, string>()
  for (;;) {
    const semi = s.indexOf(";")
    if (semi < 0) break
    s = s.slice(semi + 1).trimStart()
    const name = TOKEN.exec(s)
    if (name === null) continue
    let rest = s.slice(name[0].length).trimStart()
    if (rest[0] !== "=") {
      s = rest
      continue
    }
    rest = rest.slice(1).trimStart()
    let v: string | undefined
    if (rest[0] === "\"") {
      let i = 1
      let acc = ""
      for (; i < rest.length && rest[i] !== "\""; i++) {
        if (rest[i] === "\\" && i + 1 < rest.length) i++
        acc += rest[i]
      }
      if (i < rest.length) v = acc
      rest = rest.slice(Math.min(rest.length, i + 1))
    } else {
      const tok = TOKEN.exec(rest)
      if (tok !== null) {
        v = tok[0]
        rest = rest.slice(tok[0].length)
      }
    }
    const key = name[0].toLowerCase()
    if (v !== undefined && !params.has(key)) params.set(key, v)
    s = rest
  }
  return { type: t[0].toLowerCase(), subtype: st[0].toLowerCase(), params }
}

// ---------------------------------------------------------------------------
// The MIME walk
// ---------------------------------------------------------------------------

/** Bytes to put in place of `message[start, end)`. */
interface Edit {
  readonly start: number
  readonly end: number
  readonly bytes: Uint8Array
}

class UnsafeError {
  readonly reason: string
  constructor(reason: string) {
    this.reason = reason
  }
}

const unsafe = (reason: string): never => {
  throw new UnsafeError(reason)
}

const MAX_DEPTH = 50

const TEXT_PLAIN: ContentType = { type: "text", subtype: "plain", params: new Map() }
const MESSAGE_RFC822: ContentType = { type: "message", subtype: "rfc822", params: new Map() }

/** Where the empty line that ends the header block of `m[start, end)` starts, and where the body starts. */
const splitEntity = (m: Uint8Array, start: number, end: number): { readonly blank: number; readonly body: number } => {
  if (m[start] === Bytes.CR && m[start + 1] === Bytes.LF && start + 2 <= end) return { blank: start, body: start + 2 }
  if (m[start] === Bytes.LF && start < end) return { blank: start, body: start + 1 }
  let p = m.indexOf(Bytes.LF, start)
  while (p !== -1 && p + 1 < end) {
    const c = m[p + 1]
    if (c === Bytes.LF) return { blank: p + 1, body: p + 2 }
    if (c === Bytes.CR && m[p + 2] === Bytes.LF && p + 3 <= end) return { blank: p + 1, body: p + 3 }
    p = m.indexOf(Bytes.LF, p + 1)
  }
  return { blank: end, body: end }
}

interface HeaderInfo {
  readonly contentType: ContentType | undefined
  readonly cte: string | undefined
  readonly cteFields: ReadonlyArray<{ readonly start: number; readonly end: number }>
  readonly mimeVersion: boolean
}

const readHeaders = (m: Uint8Array, start: number, blank: number): HeaderInfo => {
  const block = m.subarray(start, blank)
  // `fields` needs an empty line to stop at; the block alone is whole fields
  const withEnd = Bytes.concat([block, Bytes.fromString("\r\n\r\n")])
  let contentType: ContentType | undefined
  let cte: string | undefined
  let mimeVersion = false
  const cteFields: Array<{ start: number; end: number }> = []
  for (const f of Headers.fields(withEnd)) {
    const name = f.name.toLowerCase()
    const fieldEnd = Math.min(f.end, block.length)
    if (name === "content-type" && contentType === undefined) {
      contentType = parseContentType(Headers.fieldValue(withEnd, f))
    } else if (name === "content-transfer-encoding") {
      if (cte === undefined) cte = stripComments(Headers.fieldValue(withEnd, f)).trim().toLowerCase()
      cteFields.push({ start: start + f.start, end: start + fieldEnd })
    } else if (name === "mime-version") {
      mimeVersion = true
    }
  }
  return { contentType, cte, cteFields, mimeVersion }
}

/** The edits that set the entity's transfer encoding to `value`. */
const setCte = (m: Uint8Array, info: HeaderInfo, blank: number, value: string): ReadonlyArray<Edit> => {
  const field = Bytes.fromString(`Content-Transfer-Encoding: ${value}\r\n`)
  const [first, ...others] = info.cteFields
  // a new field goes just before the empty line (there is one: the body has bytes)
  if (first === undefined) return [{ start: blank, end: blank, bytes: field }]
  const lastLineEnd = m[first.end - 1] === Bytes.LF
  return [
    { start: first.start, end: first.end, bytes: lastLineEnd ? field : field.subarray(0, field.length - 2) },
    ...others.map((o) => ({ start: o.start, end: o.end, bytes: Bytes.empty }))
  ]
}

const IDENTITY = new Set(["7bit", "8bit", "binary"])

/** The edits that make the entity `m[start, end)` 7-bit, or throws `UnsafeError`. */
const walk = (
  m: Uint8Array,
  start: number,
  end: number,
  defaultType: ContentType,
  topLevel: boolean,
  depth: number
): ReadonlyArray<Edit> => {
  if (!has8Bit(m, start, end)) return []
  if (depth > MAX_DEPTH) return unsafe("MIME structure nested too deeply")
  const { blank, body } = splitEntity(m, start, end)
  if (has8Bit(m, start, blank)) return unsafe("8-bit characters in a header block")
  const info = readHeaders(m, start, blank)
  if (topLevel && !info.mimeVersion) return unsafe("not a MIME message")
  const ct = info.contentType ?? defaultType
  const cte = info.cte ?? "7bit"
  if (!IDENTITY.has(cte)) return unsafe(`8-bit data in a body declared ${cte}`)
  if (ct.type === "multipart") {
    const boundary = ct.params.get("boundary")
    if (boundary === undefined || boundary.length === 0 || boundary.length > 200) return unsafe("multipart without a valid boundary")
    const digest = ct.subtype === "digest"
    const edits = walkMultipart(m, body, end, boundary, digest ? MESSAGE_RFC822 : TEXT_PLAIN, depth)
    return cte === "7bit" ? edits : [...setCte(m, info, blank, "7bit"), ...edits]
  }
  if (ct.type === "message") {
    if (ct.subtype !== "rfc822") return unsafe(`8-bit data in message/${ct.subtype}`)
    const edits = walk(m, body, end, TEXT_PLAIN, true, depth + 1)
    return cte === "7bit" ? edits : [...setCte(m, info, blank, "7bit"), ...edits]
  }
  if (!has8Bit(m, body, end)) return []
  const content = m.subarray(body, end)
  const text = ct.type === "text"
  const encoded = text ? encodeQuotedPrintable(content) : encodeBase64Lines(content)
  // base64 lines end with CRLF; keep the body's own ending (before a boundary there is none)
  const bytes = !text && !(content[content.length - 1] === Bytes.LF) ? encoded.subarray(0, encoded.length - 2) : encoded
  return [...setCte(m, info, blank, text ? "quoted-printable" : "base64"), { start: body, end, bytes }]
}

const DASH = 0x2d

/** Whether the line at `p` is the delimiter `--boundary` (close: `--boundary--`), and where it ends. */
const delimiterAt = (
  m: Uint8Array,
  p: number,
  end: number,
  b: Uint8Array
): { readonly close: boolean; readonly next: number } | undefined => {
  if (p + 2 + b.length > end || m[p] !== DASH || m[p + 1] !== DASH) return undefined
  for (let i = 0; i < b.length; i++) if (m[p + 2 + i] !== b[i]) return undefined
  let q = p + 2 + b.length
  let close = false
  if (m[q] === DASH && m[q + 1] === DASH && q + 2 <= end) {
    close = true
    q += 2
  }
  while (q < end && (m[q] === SP || m[q] === HT)) q++
  if (q === end) return { close, next: end }
  if (m[q] === Bytes.CR && m[q + 1] === Bytes.LF && q + 2 <= end) return { close, next: q + 2 }
  if (m[q] === Bytes.LF) return { close, next: q + 1 }
  return undefined
}

const walkMultipart = (
  m: Uint8Array,
  start: number,
  end: number,
  boundary: string,
  partDefault: ContentType,
  depth: number
): ReadonlyArray<Edit> => {
  const b = Bytes.fromLatin1(boundary)
  const edits: Array<Edit> = []
  /** Where the current part's content starts; undefined in the preamble. */
  let partStart: number | undefined
  let closed = false
  let p = start
  while (p < end) {
    const d = delimiterAt(m, p, end, b)
    if (d !== undefined) {
      // the line end before a delimiter belongs to the delimiter
      const contentEnd = p === start ? p : m[p - 2] === Bytes.CR ? p - 2 : p - 1
      if (partStart === undefined) {
        if (has8Bit(m, start, contentEnd)) return unsafe("8-bit characters in a multipart preamble")
      } else {
        edits.push(...walk(m, partStart, Math.max(partStart, contentEnd), partDefault, false, depth + 1))
      }
      if (d.close) {
        closed = true
        if (has8Bit(m, d.next, end)) return unsafe("8-bit characters in a multipart epilogue")
        break
      }
      partStart = d.next
      p = d.next
      continue
    }
    const lf = m.indexOf(Bytes.LF, p)
    p = lf === -1 || lf >= end ? end : lf + 1
  }
  if (!closed) {
    // no close delimiter: the last part runs to the end (lenient, as readers are)
    if (partStart === undefined) return unsafe("multipart without any delimiter")
    edits.push(...walk(m, partStart, end, partDefault, false, depth + 1))
  }
  return edits
}

const apply = (m: Uint8Array, edits: ReadonlyArray<Edit>): Uint8Array => {
  const sorted = [...edits].sort((a, b) => a.start - b.start || a.end - b.end)
  const parts: Array<Uint8Array> = []
  let at = 0
  for (const e of sorted) {
    parts.push(m.subarray(at, e.start), e.bytes)
    at = e.end
  }
  parts.push(m.subarray(at))
  return Bytes.concat(parts)
}

/**
 * Converts a message to 7 bits for a server without 8BITMIME (see the module
 * header). Pure and total: never throws.
 */
export const toSevenBit = (message: Uint8Array): Result => {
  if (!has8Bit(message)) return { _tag: "Unchanged" }
  try {
    const edits = walk(message, 0, message.length, TEXT_PLAIN, true, 0)
    const out = apply(message, edits)
    if (has8Bit(out)) return { _tag: "Unsafe", reason: "8-bit characters left after conversion" }
    return { _tag: "Converted", message: out }
  } catch (e) {
    if (e instanceof UnsafeError) return { _tag: "Unsafe", reason: e.reason }
    return { _tag: "Unsafe", reason: "unexpected MIME structure" }
  }
}
