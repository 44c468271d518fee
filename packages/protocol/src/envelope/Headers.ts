/**
 * Header reading and header edits on the raw bytes of a message (RFC 5322).
 *
 * Everything here works on the message as a `Uint8Array` and never re-folds,
 * re-encodes or reorders existing header fields: an edit inserts new bytes
 * and leaves every existing byte as it was, so DKIM signatures over existing
 * fields survive. Header names are compared as plain data (arrays and string
 * comparison, never object keys), so a field named `__proto__` is just a
 * field.
 *
 * It builds the trace and identification fields an MTA adds: `Received`
 * (RFC 5321 §4.4, with TLS and, on request, authentication comments in the
 * Postfix style), `Date` (RFC 5322 §3.3) and `Message-Id` (RFC 5322 §3.6.4).
 * Time and randomness are always parameters: nothing here reads a clock or a
 * random source.
 *
 * What it deliberately does not do: MIME parsing, RFC 2047 decoding of
 * encoded words, address parsing inside header values, removing or rewriting
 * existing fields. The header block ends at the first empty line (CRLF or,
 * leniently, a bare LF); a line of only spaces does not end it.
 *
 * @since 0.1.0
 */
import * as Reply from "../smtp/Reply.ts"
import * as Bytes from "../wire/Bytes.ts"
import type { ClientFacts } from "./Envelope.ts"

const SP = 0x20
const HT = 0x09
const COLON = 0x3a
const CRLF = Bytes.fromString("\r\n")
const encoder = new TextEncoder()

// ---------------------------------------------------------------------------
// The header block
// ---------------------------------------------------------------------------

/**
 * The index where the empty line that ends the header block starts, or -1
 * when there is none.
 */
const blankLineStart = (message: Uint8Array): number => {
  const n = message.length
  if (n === 0) return -1
  if (message[0] === Bytes.LF || (message[0] === Bytes.CR && message[1] === Bytes.LF)) return 0
  let p = message.indexOf(Bytes.LF)
  while (p !== -1 && p + 1 < n) {
    const c = message[p + 1]
    if (c === Bytes.LF || (c === Bytes.CR && message[p + 2] === Bytes.LF)) return p + 1
    p = message.indexOf(Bytes.LF, p + 1)
  }
  return -1
}

/**
 * The index just after the empty line that ends the header block, or
 * `message.length` when there is no empty line (a message of headers only).
 * An empty line is CRLF or, leniently, a bare LF; a message that starts with
 * an empty line has an empty header block (the answer is 1 or 2).
 */
export const headerBlockEnd = (message: Uint8Array): number => {
  const b = blankLineStart(message)
  return b < 0 ? message.length : b + (message[b] === Bytes.CR ? 2 : 1)
}

/** True when the message has an empty line, i.e. a header block and a (possibly empty) body. */
export const hasBody = (message: Uint8Array): boolean => blankLineStart(message) >= 0

/** The size in bytes of the header block, including the empty line that ends it. */
export const headerBlockSize = (message: Uint8Array): number => headerBlockEnd(message)

/** One header field as found in the header block: byte offsets into the message. */
export interface FieldSpan {
  /** The field name as written (ASCII), e.g. `"Received"`. */
  readonly name: string
  /** Index of the first byte of the field (the name). */
  readonly start: number
  /** Index of the colon. */
  readonly colon: number
  /** Index just after the line end of the field's last line. */
  readonly end: number
}

const isFtext = (c: number): boolean => c >= 33 && c <= 126 && c !== COLON

/**
 * Every well-formed header field of the header block, in order. A line that
 * is not `name: value` (no colon, or a name with characters outside RFC 5322
 * ftext) is skipped together with its continuation lines; so is a
 * continuation line at the very top. Whitespace between name and colon (the
 * obsolete `Subject : x` form) is tolerated and not part of the name.
 */
export const fields = (message: Uint8Array): ReadonlyArray<FieldSpan> => {
  const limit = headerBlockEnd(message)
  const out: Array<FieldSpan> = []
  // the field being read; undefined while skipping a malformed line and its continuations
  let current: { name: string; start: number; colon: number } | undefined
  let i = 0
  while (i < limit) {
    let lf = message.indexOf(Bytes.LF, i)
    if (lf === -1 || lf >= limit) lf = limit - 1
    const next = lf + 1
    const first = message[i]!
    const blank = first === Bytes.LF || (first === Bytes.CR && i + 1 === lf && message[lf] === Bytes.LF)
    if (blank) break
    if (first === SP || first === HT) {
      // continuation of the current field (or of a skipped malformed line)
      i = next
      continue
    }
    if (current !== undefined) out.push({ ...current, end: i })
    current = undefined
    let j = i
    while (j < next && isFtext(message[j]!)) j++
    let k = j
    while (k < next && (message[k] === SP || message[k] === HT)) k++
    if (j > i && k < next && message[k] === COLON) {
      current = { name: Bytes.toLatin1(message, i, j), start: i, colon: k }
    }
    i = next
  }
  if (current !== undefined) out.push({ ...current, end: i })
  return out
}

const sameName = (a: string, b: string): boolean => a.length === b.length && a.toLowerCase() === b.toLowerCase()

/**
 * Decodes the value of a field: unfolded (every line break followed by a
 * space or tab removed), the line end dropped, leading and trailing spaces
 * and tabs trimmed. Bytes are decoded as UTF-8 when valid, else as latin1.
 */
export const fieldValue = (message: Uint8Array, field: FieldSpan): string => {
  const parts: Array<Uint8Array> = []
  let s = field.colon + 1
  for (let i = s; i < field.end; i++) {
    const c = message[i]
    if (c === Bytes.LF) {
      const cut = i > s && message[i - 1] === Bytes.CR ? i - 1 : i
      parts.push(message.subarray(s, cut))
      s = i + 1
    }
  }
  if (s < field.end) parts.push(message.subarray(s, field.end))
  const bytes = Bytes.concat(parts)
  const text = Bytes.decodeUtf8(bytes) ?? Bytes.toLatin1(bytes)
  return text.replace(/^[ \t]+|[ \t]+$/g, "")
}

/** The values of every field called `name` (case-insensitive), in order, unfolded (see `fieldValue`). */
export const findHeaders = (message: Uint8Array, name: string): ReadonlyArray<string> =>
  fields(message).filter((f) => sameName(f.name, name)).map((f) => fieldValue(message, f))

/** True when the header block holds at least one field called `name` (case-insensitive). */
export const hasHeader = (message: Uint8Array, name: string): boolean =>
  fields(message).some((f) => sameName(f.name, name))

/**
 * How many fields called `name` the header block holds. With `"Received"`
 * this is the hop count for loop detection (RFC 5321 §6.3; Postfix stops at
 * 50, qmail at 100).
 */
export const countHeaders = (message: Uint8Array, name: string): number => {
  let n = 0
  for (const f of fields(message)) if (sameName(f.name, name)) n++
  return n
}

// ---------------------------------------------------------------------------
// Size limits for the edge
// ---------------------------------------------------------------------------

/** Bounds on the header block, checked by the edge at the end of DATA. */
export interface HeaderLimits {
  /** Bytes in the whole header block (Exim's `header_maxsize` is 1 MiB). */
  readonly maxBlockBytes: number
  /** Bytes in one field with all its continuation lines (Postfix's `header_size_limit` is 102400). */
  readonly maxFieldBytes: number
}

/** 1 MiB for the block, 100 KiB for one field. */
export const defaultLimits: HeaderLimits = { maxBlockBytes: 1024 * 1024, maxFieldBytes: 102400 }

/** Why a header block is refused. */
export type HeaderProblem =
  | { readonly _tag: "BlockTooLarge"; readonly size: number; readonly limit: number }
  | { readonly _tag: "FieldTooLarge"; readonly name: string; readonly size: number; readonly limit: number }

/**
 * Checks the header block against `limits`; `undefined` when it is within
 * them. Bounds one field with thousands of continuation lines (the class of
 * CVE-2020-28020) as well as the block as a whole. Linear in the size of the
 * header block.
 */
export const checkHeaderBlock = (message: Uint8Array, limits: HeaderLimits = defaultLimits): HeaderProblem | undefined => {
  const size = headerBlockEnd(message)
  if (size > limits.maxBlockBytes) return { _tag: "BlockTooLarge", size, limit: limits.maxBlockBytes }
  // also measures malformed lines and their continuations, which `fields` skips
  let start = 0
  let i = 0
  while (i < size) {
    let lf = message.indexOf(Bytes.LF, i)
    if (lf === -1 || lf >= size) lf = size - 1
    const c = message[i]
    if (c !== SP && c !== HT) start = i
    if (lf + 1 - start > limits.maxFieldBytes) {
      let j = start
      while (j < lf && isFtext(message[j]!) && j - start < 64) j++
      return { _tag: "FieldTooLarge", name: Bytes.toLatin1(message, start, j), size: lf + 1 - start, limit: limits.maxFieldBytes }
    }
    i = lf + 1
  }
  return undefined
}

/** True when the header block is within `limits` (see `checkHeaderBlock`). */
export const isHeaderBlockSane = (message: Uint8Array, limits: HeaderLimits = defaultLimits): boolean =>
  checkHeaderBlock(message, limits) === undefined

/**
 * The reply for a refused header block: `552 5.3.4 Message header too large`,
 * or `552 5.3.4 Message header field too long`.
 */
export const problemReply = (problem: HeaderProblem): Reply.Reply =>
  Reply.make(552, "5.3.4", problem._tag === "BlockTooLarge" ? "Message header too large" : "Message header field too long")

// ---------------------------------------------------------------------------
// Writing fields
// ---------------------------------------------------------------------------

/** True when `name` is a valid field name: 1-76 characters of RFC 5322 ftext (printable ASCII but colon). */
export const isFieldName = (name: string): boolean => {
  if (name.length === 0 || name.length > 76) return false
  for (let i = 0; i < name.length; i++) if (!isFtext(name.charCodeAt(i))) return false
  return true
}

/**
 * Makes a value safe to write: every control character but tab (CR, LF, NUL
 * included) becomes a space, so no value can end its field or start another;
 * leading and trailing spaces and tabs are trimmed.
 */
export const sanitizeValue = (value: string): string =>
  value.replace(/[\u0000-\u0008\u000a-\u001f\u007f]/g, " ").replace(/^[ \t]+|[ \t]+$/g, "")

/** Columns after which `formatField` folds. */
export const foldWidth = 78

/**
 * Formats one field, `Name: value` and CRLF, the value sanitized (see
 * `sanitizeValue`) and folded before whitespace so that lines stay within
 * `foldWidth` characters where the words allow. Folding only inserts CRLF
 * before existing whitespace, so unfolding gives back the value exactly; a
 * word longer than a line is left whole. Throws `RangeError` on an invalid
 * name (a programming error).
 */
export const formatField = (name: string, value: string): string => {
  if (!isFieldName(name)) throw new RangeError(`invalid header field name ${JSON.stringify(name)}`)
  const v = sanitizeValue(value)
  if (v.length === 0) return `${name}:\r\n`
  const segments = v.match(/[ \t]*[^ \t]+/g) ?? []
  let line = `${name}:`
  let out = ""
  let onlyName = true
  for (let i = 0; i < segments.length; i++) {
    const seg = i === 0 ? " " + segments[0]! : segments[i]!
    if (!onlyName && line.length + seg.length > foldWidth) {
      out += line + "\r\n"
      line = seg
    } else {
      line += seg
    }
    onlyName = false
  }
  return out + line + "\r\n"
}

/**
 * Prepends a field to the message (where trace fields go). The existing
 * bytes follow unchanged. When the message starts with a space or tab, its
 * first line would read as a continuation of the new field, so an empty line
 * is inserted after the field (as Postfix does): that content becomes body.
 */
export const prepend = (message: Uint8Array, name: string, value: string): Uint8Array => {
  const text = formatField(name, value)
  const first = message[0]
  const gap = first === SP || first === HT ? CRLF.length : 0
  // One copy: an ASCII field (the usual case) is encoded straight into the result.
  const out = new Uint8Array(text.length + gap + message.length)
  const done = encoder.encodeInto(text, out.subarray(0, text.length))
  // every UTF-16 unit read into as many bytes: all of them were ASCII
  if (done.read !== text.length || done.written !== text.length) {
    const field = Bytes.fromString(text)
    return gap > 0 ? Bytes.concat([field, CRLF, message]) : Bytes.concat([field, message])
  }
  if (gap > 0) out.set(CRLF, text.length)
  out.set(message, text.length + gap)
  return out
}

/**
 * Appends a field at the end of the header block, before the empty line
 * (where Postfix's cleanup adds a missing Date or Message-Id). Existing bytes
 * are unchanged; a last header line without a line end gets a CRLF first.
 */
export const append = (message: Uint8Array, name: string, value: string): Uint8Array => {
  const field = Bytes.fromString(formatField(name, value))
  const b = blankLineStart(message)
  if (b >= 0) return Bytes.concat([message.subarray(0, b), field, message.subarray(b)])
  const n = message.length
  if (n > 0 && message[n - 1] !== Bytes.LF) return Bytes.concat([message, CRLF, field])
  return Bytes.concat([message, field])
}

// ---------------------------------------------------------------------------
// Date (RFC 5322 §3.3)
// ---------------------------------------------------------------------------

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"] as const
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"] as const
const pad = (n: number, width: number): string => String(n).padStart(width, "0")

/**
 * Formats a time as an RFC 5322 date-time, `Sun, 22 Nov 2026 05:10:32 +0000`.
 * `ms` is milliseconds since the epoch (the fraction of a second is dropped);
 * `offsetMinutes` is the zone to show (east positive, e.g. 60 for +0100).
 * Pure: the time is a parameter. Throws `RangeError` for a non-finite time,
 * a year outside 0000-9999 or an offset beyond ±99:59.
 */
export const date = (ms: number, offsetMinutes = 0): string => {
  if (!Number.isFinite(ms)) throw new RangeError(`invalid time ${ms}`)
  if (!Number.isInteger(offsetMinutes) || Math.abs(offsetMinutes) > 99 * 60 + 59) {
    throw new RangeError(`invalid zone offset ${offsetMinutes}`)
  }
  const d = new Date(Math.floor(ms / 1000) * 1000 + offsetMinutes * 60_000)
  const year = d.getUTCFullYear()
  if (!(year >= 0 && year <= 9999)) throw new RangeError(`year out of range for time ${ms}`)
  const abs = Math.abs(offsetMinutes)
  const zone = `${offsetMinutes < 0 ? "-" : "+"}${pad(Math.floor(abs / 60), 2)}${pad(abs % 60, 2)}`
  return `${DAYS[d.getUTCDay()]}, ${pad(d.getUTCDate(), 2)} ${MONTHS[d.getUTCMonth()]} ${pad(year, 4)} ` +
    `${pad(d.getUTCHours(), 2)}:${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)} ${zone}`
}

// ---------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------

const CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
const MAX_TIME = 2 ** 48 - 1

/**
 * A sortable unique id: a lowercase ULID. Ten base32 characters of the time
 * in milliseconds (48 bits) and sixteen of randomness (80 bits, from
 * `random(10)`), Crockford's alphabet in lowercase, so ids sort by time as
 * plain strings and are safe as file names on case-insensitive file
 * systems: 26 characters of `[0-9a-z]`. Throws `RangeError` when `now` is
 * outside 0..2^48-1 or `random` returns fewer than 10 bytes.
 */
export const sortableId = (random: (n: number) => Uint8Array, now: number): string => {
  if (!Number.isFinite(now) || now < 0 || now > MAX_TIME) throw new RangeError(`invalid time ${now}`)
  const bytes = random(10)
  if (bytes.length < 10) throw new RangeError(`random(10) returned ${bytes.length} bytes`)
  let t = Math.floor(now)
  let time = ""
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32]! + time
    t = Math.floor(t / 32)
  }
  let rnd = ""
  for (let g = 0; g < 10; g += 5) {
    // 40 bits fit exactly in a double
    let n = bytes[g]! * 2 ** 32 + ((bytes[g + 1]! << 24) >>> 0) + (bytes[g + 2]! << 16) + (bytes[g + 3]! << 8) + bytes[g + 4]!
    let chunk = ""
    for (let i = 0; i < 8; i++) {
      chunk = CROCKFORD[n % 32]! + chunk
      n = Math.floor(n / 32)
    }
    rnd += chunk
  }
  return time + rnd
}

/** Keeps the characters allowed in a hostname-like token: letters, digits, `.`, `-`, `_`. */
const hostToken = (s: string): string => s.replace(/[^0-9A-Za-z._-]/g, "").slice(0, 255)

/**
 * A new Message-Id, `<sortable-id@hostname>` (see `sortableId`). The
 * hostname is reduced to letters, digits, `.`, `-` and `_`; an empty result
 * becomes `localhost`.
 */
export const messageId = (random: (n: number) => Uint8Array, now: number, hostname: string): string =>
  `<${sortableId(random, now)}@${hostToken(hostname) || "localhost"}>`

/** Appends `Date: <date(now)>` when the header block has no Date field; else returns `message` itself. */
export const ensureDate = (message: Uint8Array, now: number, offsetMinutes = 0): Uint8Array =>
  hasHeader(message, "Date") ? message : append(message, "Date", date(now, offsetMinutes))

/** Appends a `Message-Id` (see `messageId`) when the header block has none; else returns `message` itself. */
export const ensureMessageId = (
  message: Uint8Array,
  random: (n: number) => Uint8Array,
  now: number,
  hostname: string
): Uint8Array => (hasHeader(message, "Message-Id") ? message : append(message, "Message-Id", messageId(random, now, hostname)))

// ---------------------------------------------------------------------------
// Received (RFC 5321 §4.4)
// ---------------------------------------------------------------------------

/** What a `Received` field records. */
export interface ReceivedFacts {
  readonly client: ClientFacts
  /** Our hostname, the `by` clause. */
  readonly receiver: string
  /** The envelope recipients; a `for <x>` clause is written only when there is exactly one. */
  readonly recipients?: ReadonlyArray<string> | undefined
  /** The queue id, the `id` clause. */
  readonly id: string
  /** When the message was received, ms since the epoch. */
  readonly timestamp: number
  /** The `via` clause (a link type), rarely used. */
  readonly via?: string | undefined
  /** Writes `(Authenticated sender: x)` when the client authenticated. Off by default, as Postfix's `smtpd_sasl_authenticated_header`. */
  readonly showAuth?: boolean | undefined
  /** The zone of the date, minutes east of UTC; 0 by default. */
  readonly offsetMinutes?: number | undefined
}

/**
 * Reduces a network-supplied word (EHLO name, PTR name, protocol, id) to
 * printable ASCII without spaces and without the characters that would end
 * or open a comment or a clause: `( ) \ ; " < > ,`.
 */
export const sanitizeToken = (s: string, max = 255): string => s.replace(/[^\x21-\x7e]|[()\\;"<>,]/g, "").slice(0, max)

/** Makes text safe inside a comment: printable ASCII only, `(`, `)` and `\` escaped with a backslash. */
export const sanitizeComment = (s: string, max = 255): string =>
  s.replace(/[^\x20-\x7e]/g, "").slice(0, max).replace(/[()\\]/g, (c) => "\\" + c)

const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/

/** True when `s` is an IPv4 address in dotted-quad form or an IPv6 address (RFC 4291 text, optional `%zone`). */
export const isIpAddress = (s: string): boolean => {
  if (IPV4.test(s)) return true
  let a = s
  const pct = a.indexOf("%")
  if (pct >= 0) {
    if (!/^[0-9A-Za-z._-]{1,32}$/.test(a.slice(pct + 1))) return false
    a = a.slice(0, pct)
  }
  if (a.length > 45 || !a.includes(":")) return false
  const halves = a.split("::")
  if (halves.length > 2) return false
  const groups = (h: string): Array<string> => (h === "" ? [] : h.split(":"))
  const all = [...groups(halves[0]!), ...(halves.length === 2 ? groups(halves[1]!) : [])]
  let count = 0
  for (let i = 0; i < all.length; i++) {
    const g = all[i]!
    if (i === all.length - 1 && !a.endsWith(":") && IPV4.test(g)) count += 2
    else if (/^[0-9A-Fa-f]{1,4}$/.test(g)) count += 1
    else return false
  }
  return halves.length === 2 ? count <= 7 : count === 8
}

/**
 * The address literal for a client IP, without brackets: `192.0.2.1` or
 * `IPv6:2001:db8::1`. An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as a
 * dual-stack socket reports it) is written as IPv4; a zone id is dropped.
 * `undefined` when `address` is not an IP address.
 */
export const addressLiteral = (address: string): string | undefined => {
  if (!isIpAddress(address)) return undefined
  const pct = address.indexOf("%")
  const a = pct >= 0 ? address.slice(0, pct) : address
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(a)
  if (mapped !== null) return mapped[1]!
  return a.includes(":") ? `IPv6:${a}` : a
}

const forClause = (recipients: ReadonlyArray<string> | undefined): string | undefined => {
  if (recipients === undefined || recipients.length !== 1) return undefined
  const r = recipients[0]!
  // an address that is not printable ASCII is left out rather than mangled
  return r.length > 0 && r.length <= 320 && /^[\x21-\x7e]+$/.test(r) && !/[<>()\\]/.test(r) ? `for <${r}>` : undefined
}

/**
 * The value of a `Received` field (RFC 5321 §4.4), e.g.
 *
 * `from mail.example.org (mail.example.org [192.0.2.1]) (using TLSv1.3 with
 * cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) by mx.example.com (Mailroom)
 * with ESMTPS id 01k… for <bob@example.com>; Sun, 22 Nov 2026 05:10:32 +0000`
 *
 * Every interpolated value is sanitized (see `sanitizeToken`,
 * `sanitizeComment`): EHLO and PTR names come from the network. A missing
 * EHLO or PTR name is written `unknown`; IPv6 as `[IPv6:…]`. Fold it with
 * `prepend`.
 */
export const received = (facts: ReceivedFacts): string => {
  const c = facts.client
  const parts: Array<string> = []
  parts.push(`from ${sanitizeToken(c.ehlo ?? "") || "unknown"}`)
  const literal = c.address === undefined ? undefined : addressLiteral(c.address)
  const rn = sanitizeToken(c.reverseName ?? "") || "unknown"
  if (literal !== undefined) parts.push(`(${rn} [${literal}])`)
  else if (c.reverseName !== undefined) parts.push(`(${rn})`)
  if (c.tls !== undefined) {
    const bits = c.tls.bits !== undefined && Number.isInteger(c.tls.bits) && c.tls.bits >= 0 ? ` (${c.tls.bits}/${c.tls.bits} bits)` : ""
    parts.push(`(using ${sanitizeComment(c.tls.version, 32)} with cipher ${sanitizeComment(c.tls.cipher, 96)}${bits})`)
  }
  if (facts.showAuth === true && c.auth !== undefined && c.auth.length > 0) {
    parts.push(`(Authenticated sender: ${sanitizeComment(c.auth)})`)
  }
  parts.push(`by ${sanitizeToken(facts.receiver) || "localhost"} (Mailroom)`)
  if (facts.via !== undefined && sanitizeToken(facts.via, 32).length > 0) parts.push(`via ${sanitizeToken(facts.via, 32)}`)
  parts.push(`with ${sanitizeToken(c.protocol, 32) || "SMTP"}`)
  const id = sanitizeToken(facts.id, 128)
  if (id.length > 0) parts.push(`id ${id}`)
  const rcpt = forClause(facts.recipients)
  if (rcpt !== undefined) parts.push(rcpt)
  return `${parts.join(" ")}; ${date(facts.timestamp, facts.offsetMinutes ?? 0)}`
}
