/**
 * A small MIME builder (RFC 2045-2047, RFC 2183, RFC 2231, RFC 5322) for
 * messages composed from parts, as the HTTP edge's JSON endpoint needs:
 * a text and/or HTML body (`multipart/alternative` when both), attachments
 * (`multipart/mixed`, base64 in 76-column lines), quoted-printable bodies,
 * RFC 2047 encoded-words for non-ASCII subjects and display names, RFC 2231
 * for non-ASCII file names, and the `Date` and `Message-ID` fields.
 *
 * Output has CRLF line ends, lines of at most 78 characters in the header
 * (folded with `Headers.formatField`) and 76 in encoded bodies, and only
 * 7-bit bytes unless an address itself is non-ASCII (SMTPUTF8).
 *
 * What it deliberately does not do: parse MIME, inline images
 * (`multipart/related`), or pick charsets other than UTF-8.
 *
 * @since 0.1.0
 */
import * as Base64 from "../auth/Base64.ts"
import * as Bytes from "../wire/Bytes.ts"
import * as Headers from "./Headers.ts"

const encoder = new TextEncoder()

// ---------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------

/** True when `s` is printable ASCII (space through tilde). */
const isPrintableAscii = (s: string): boolean => /^[\x20-\x7e]*$/.test(s)

/**
 * RFC 2047 encoded-words (`=?UTF-8?B?...?=`) for `text`, each at most 75
 * characters, split on character boundaries, joined by spaces (so a
 * folding writer may break between them). ASCII printable text is returned
 * as it is.
 */
export const encodeWords = (text: string): string => {
  if (isPrintableAscii(text) && !/=\?/.test(text)) return text
  const words: Array<string> = []
  // 75 - "=?UTF-8?B?" (10) - "?=" (2) = 63 base64 chars -> 45 bytes (multiple of 3 keeps words independent)
  let chunk: Array<number> = []
  const flush = () => {
    if (chunk.length > 0) words.push(`=?UTF-8?B?${Base64.encode(Uint8Array.from(chunk))}?=`)
    chunk = []
  }
  for (const ch of text) {
    const b = encoder.encode(ch)
    if (chunk.length + b.length > 45) flush()
    chunk.push(...b)
  }
  flush()
  return words.join(" ")
}

/** Base64 of `bytes` in lines of 76 characters, each ended by CRLF. */
export const base64Lines = (bytes: Uint8Array): string => {
  const all = Base64.encode(bytes)
  let out = ""
  for (let i = 0; i < all.length; i += 76) out += all.slice(i, i + 76) + "\r\n"
  return out
}

const HEX = "0123456789ABCDEF"

/**
 * Quoted-printable (RFC 2045 §6.7) of UTF-8 text: line breaks (any of CRLF,
 * LF, CR) become CRLF hard breaks, lines are soft-broken at 76 characters,
 * `=`, controls, non-ASCII bytes and whitespace before a line end are
 * encoded. Ends with CRLF.
 */
export const quotedPrintable = (text: string): string => {
  const lines = text.split(/\r\n|\n|\r/)
  const out: Array<string> = []
  for (const line of lines) {
    const bytes = encoder.encode(line)
    let current = ""
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!
      const last = i === bytes.length - 1
      const plain = (b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last)
      const piece = plain ? String.fromCharCode(b) : "=" + HEX[b >> 4] + HEX[b & 15]
      if (current.length + piece.length > 75) {
        out.push(current + "=")
        current = ""
      }
      current += piece
    }
    out.push(current)
  }
  return out.join("\r\n") + "\r\n"
}

/** True when the text can go as 7bit: ASCII, no controls but tab, lines of at most 998 octets. */
const is7bit = (text: string): boolean =>
  /^[\x09\x20-\x7e\r\n]*$/.test(text) && text.split(/\r\n|\n|\r/).every((l) => l.length <= 998)

/** A body part for text: 7bit when it can be, quoted-printable otherwise. */
const textPart = (subtype: "plain" | "html", text: string): { headers: Array<readonly [string, string]>; body: string } => {
  if (is7bit(text)) {
    const body = text.split(/\r\n|\n|\r/).join("\r\n")
    return {
      headers: [["Content-Type", `text/${subtype}; charset=utf-8`], ["Content-Transfer-Encoding", "7bit"]],
      body: body.endsWith("\r\n") ? body : body + "\r\n"
    }
  }
  return {
    headers: [["Content-Type", `text/${subtype}; charset=utf-8`], ["Content-Transfer-Encoding", "quoted-printable"]],
    body: quotedPrintable(text)
  }
}

// ---------------------------------------------------------------------------
// Addresses and parameters
// ---------------------------------------------------------------------------

/** A mailbox for a header: an address and an optional display name. */
export interface Mailbox {
  readonly name?: string | undefined
  readonly address: string
}

const ATOM_PHRASE = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+$/

/** `Name <address>` with the name as atoms, a quoted string, or encoded-words. */
export const formatMailbox = (m: Mailbox): string => {
  const name = m.name?.trim()
  if (name === undefined || name.length === 0) return m.address
  let phrase: string
  if (!isPrintableAscii(name)) phrase = encodeWords(name)
  else if (ATOM_PHRASE.test(name) && !/=\?/.test(name)) phrase = name
  else phrase = `"${name.replace(/[\\"]/g, (c) => "\\" + c)}"`
  return `${phrase} <${m.address}>`
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** A MIME parameter: `name=value`, quoted when needed, RFC 2231 `name*=UTF-8''...` when not ASCII. */
export const parameter = (name: string, value: string): string => {
  if (isPrintableAscii(value)) return TOKEN.test(value) ? `${name}=${value}` : `${name}="${value.replace(/[\\"]/g, (c) => "\\" + c)}"`
  let pct = ""
  for (const b of encoder.encode(value)) {
    const c = String.fromCharCode(b)
    pct += /[A-Za-z0-9!#$&+\-.^_`|~]/.test(c) ? c : "%" + HEX[b >> 4] + HEX[b & 15]
  }
  return `${name}*=UTF-8''${pct}`
}

// ---------------------------------------------------------------------------
// Composing
// ---------------------------------------------------------------------------

export interface Attachment {
  readonly filename: string
  /** e.g. `application/pdf` [application/octet-stream]. */
  readonly contentType?: string | undefined
  readonly content: Uint8Array
}

export interface Message {
  readonly from: Mailbox
  readonly to: ReadonlyArray<Mailbox>
  readonly cc?: ReadonlyArray<Mailbox> | undefined
  readonly replyTo?: Mailbox | undefined
  readonly subject: string
  readonly text?: string | undefined
  readonly html?: string | undefined
  readonly attachments?: ReadonlyArray<Attachment> | undefined
  /** The `Date` field value (see `Headers.date`). */
  readonly date: string
  /** The `Message-ID` field value, with angle brackets (see `Headers.messageId`). */
  readonly messageId: string
  /** Random bytes for the MIME boundaries. */
  readonly random: (n: number) => Uint8Array
}

/** Why a message cannot be composed. */
export class ComposeError {
  readonly _tag = "ComposeError"
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

const CONTENT_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/

const boundary = (random: (n: number) => Uint8Array): string =>
  "=_mailroom_" + Array.from(random(12), (b) => b.toString(16).padStart(2, "0")).join("")

interface Part {
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: string
}

const renderPart = (p: Part): string => p.headers.map(([n, v]) => Headers.formatField(n, v)).join("") + "\r\n" + p.body

const multipart = (subtype: "mixed" | "alternative", parts: ReadonlyArray<Part>, random: (n: number) => Uint8Array): Part => {
  const b = boundary(random)
  let body = "This is a multi-part message in MIME format.\r\n"
  for (const p of parts) body += `\r\n--${b}\r\n` + renderPart(p)
  body += `\r\n--${b}--\r\n`
  return { headers: [["Content-Type", `multipart/${subtype}; boundary="${b}"`]], body }
}

const hasLineBreak = (s: string): boolean => /[\r\n\0]/.test(s)

/**
 * Composes a message. Fails (`ComposeError`) on a header value with CR, LF
 * or NUL, or an attachment content type that is not `type/subtype`.
 */
export const compose = (m: Message): Uint8Array | ComposeError => {
  const mailboxes = [m.from, ...m.to, ...(m.cc ?? []), ...(m.replyTo ? [m.replyTo] : [])]
  for (const mb of mailboxes) {
    if (hasLineBreak(mb.address) || (mb.name !== undefined && hasLineBreak(mb.name))) {
      return new ComposeError("an address or name holds a line break")
    }
  }
  if (hasLineBreak(m.subject)) return new ComposeError("the subject holds a line break")
  const parts: Array<Part> = []
  if (m.text !== undefined) parts.push(textPart("plain", m.text))
  if (m.html !== undefined) parts.push(textPart("html", m.html))
  let body: Part = parts.length === 0
    ? textPart("plain", "")
    : parts.length === 1
    ? parts[0]!
    : multipart("alternative", parts, m.random)
  const attachments = m.attachments ?? []
  if (attachments.length > 0) {
    const files: Array<Part> = []
    for (const a of attachments) {
      const type = a.contentType ?? "application/octet-stream"
      if (!CONTENT_TYPE.test(type)) return new ComposeError(`invalid content type ${JSON.stringify(type)}`)
      if (hasLineBreak(a.filename)) return new ComposeError("a file name holds a line break")
      files.push({
        headers: [
          ["Content-Type", `${type.toLowerCase()}; ${parameter("name", a.filename)}`],
          ["Content-Disposition", `attachment; ${parameter("filename", a.filename)}`],
          ["Content-Transfer-Encoding", "base64"]
        ],
        body: base64Lines(a.content)
      })
    }
    body = multipart("mixed", [body, ...files], m.random)
  }
  const head: Array<readonly [string, string]> = [
    ["From", formatMailbox(m.from)],
    ...(m.to.length > 0 ? [["To", m.to.map(formatMailbox).join(", ")] as const] : []),
    ...(m.cc && m.cc.length > 0 ? [["Cc", m.cc.map(formatMailbox).join(", ")] as const] : []),
    ...(m.replyTo ? [["Reply-To", formatMailbox(m.replyTo)] as const] : []),
    ["Subject", encodeWords(m.subject)],
    ["Date", m.date],
    ["Message-ID", m.messageId],
    ["MIME-Version", "1.0"],
    ...body.headers
  ]
  return Bytes.fromString(head.map(([n, v]) => Headers.formatField(n, v)).join("") + "\r\n" + body.body)
}
