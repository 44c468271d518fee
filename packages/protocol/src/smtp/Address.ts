/**
 * SMTP mailboxes and paths: the RFC 5321 §4.1.2 grammar (`Path`, `Mailbox`,
 * `Local-part`, `Domain`, `address-literal`) with the RFC 6531 (SMTPUTF8)
 * extensions, a parser that enforces the §4.5.3.1 size limits, and a
 * canonical printer.
 *
 * - Source routes (`<@a.example,@b.example:user@c.example>`) are recognised,
 *   checked and stripped (RFC 5321 §3.6.1, Appendix C).
 * - The local part is kept unquoted; `print` quotes it only when it is not a
 *   dot-atom, escaping `"` and `\` only, so `print` gives one canonical form.
 * - Domains keep the case they were given; address literals keep their
 *   brackets (`"[192.0.2.1]"`, `"[IPv6:2001:db8::1]"`).
 * - Control characters (0x00-0x1F, 0x7F) are refused everywhere, even inside
 *   quoted strings (security.md §2: log and header injection). Non-ASCII is
 *   accepted only when `utf8` is set, and then never the invisible or control
 *   code points of Unicode categories Cc, Cf, Cs, Co, Zl, Zp and the non-ASCII
 *   spaces (zero-width and bidi characters, lone surrogates, NBSP).
 *
 * It deliberately does not: lower-case or IDNA-convert domains, resolve
 * anything, decide what SMTPUTF8 requires of a session, or interpret the
 * local part (sub-addressing, case): a local part is data and is never
 * expanded or executed.
 *
 * @since 0.1.0
 */

/** A mailbox: `local@domain`. */
export interface Mailbox {
  /** The local part, unquoted (quoted-pairs resolved). */
  readonly local: string
  /**
   * A domain name, or an address literal with its brackets (`"[192.0.2.1]"`,
   * `"[IPv6:2001:db8::1]"`). `""` only for the bare `<Postmaster>` recipient.
   */
  readonly domain: string
}

/** The result of a grammar parser: a value, or an error message (fixed text, never echoing the input). */
export type ParseResult<A> =
  | { readonly _tag: "Ok"; readonly value: A }
  | { readonly _tag: "Error"; readonly message: string }

/** Options of `parsePath`. */
export interface PathOptions {
  /** Accept non-ASCII (RFC 6531 UTF-8) in the local part and the domain. */
  readonly utf8: boolean
  /** Accept `<>` (the null reverse-path), giving `null`. */
  readonly allowNull: boolean
  /** Accept `<Postmaster>` without a domain (RFC 5321 §4.1.1.3), case-insensitive. */
  readonly allowPostmaster: boolean
}

/** Octet limits of RFC 5321 §4.5.3.1. */
export const MAX_LOCAL_OCTETS = 64
export const MAX_DOMAIN_OCTETS = 255
export const MAX_PATH_OCTETS = 256
const MAX_LABEL_OCTETS = 63

/** Makes an `Ok` result. */
export const ok = <A>(value: A): ParseResult<A> => ({ _tag: "Ok", value })
/** Makes an `Error` result. */
export const error = <A = never>(message: string): ParseResult<A> => ({ _tag: "Error", message })

/** Makes a mailbox. */
export const make = (local: string, domain: string): Mailbox => ({ local, domain })

/** The local part. */
export const localOf = (m: Mailbox): string => m.local
/** The domain (or address literal, with brackets). */
export const domainOf = (m: Mailbox): string => m.domain

// ---------------------------------------------------------------------------
// Character classes
// ---------------------------------------------------------------------------

// RFC 5322 atext, ASCII part: ALPHA / DIGIT / "!#$%&'*+-/=?^_`{|}~"
const ATEXT = new Uint8Array(128)
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c)
  if (/[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]/.test(ch)) ATEXT[c] = 1
}

const isAtext = (c: number): boolean => (c < 128 ? ATEXT[c] === 1 : true)
const isLetDig = (c: number): boolean =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)

// Non-ASCII code points refused even under SMTPUTF8: controls, format
// characters (zero-width, bidi overrides), lone surrogates, private use,
// line/paragraph separators and non-ASCII spaces.
const FORBIDDEN_NON_ASCII = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Zl}\p{Zp}\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]/u
const ULABEL_CHAR = /^[\p{L}\p{M}\p{N}]$/u

/** True when every character of `s` is ASCII (< 0x80). */
export const isAsciiString = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return false
  return true
}

/** True when both parts of the mailbox are ASCII (no SMTPUTF8 needed). */
export const isAscii = (m: Mailbox): boolean => isAsciiString(m.local) && isAsciiString(m.domain)

/** The UTF-8 length of `s` in octets (a lone surrogate counts as the 3 octets of U+FFFD). */
export const utf8Length = (s: string): number => {
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) n += 1
    else if (c < 0x800) n += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4
        i++
      } else n += 3
    } else n += 3
  }
  return n
}

/**
 * Checks the characters of a protocol value: returns an error message when
 * `s` holds a control character (0x00-0x1F, 0x7F), non-ASCII while `utf8` is
 * false, or a forbidden non-ASCII code point (see the module header);
 * `undefined` when it is clean. Shared by the parameter and command parsers.
 */
export const checkCharacters = (s: string, utf8: boolean): string | undefined => {
  let nonAscii = false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return "control character not allowed"
    if (c >= 0x80) nonAscii = true
  }
  if (!nonAscii) return undefined
  if (!utf8) return NON_ASCII
  if (FORBIDDEN_NON_ASCII.test(s)) return "invisible or control character not allowed"
  return undefined
}

/** The message `parsePath` gives when the only fault is non-ASCII without `utf8`. */
export const NON_ASCII = "non-ASCII character requires SMTPUTF8"

/** ASCII case-insensitive equality (no Unicode case folding), e.g. for `postmaster`. */
export const equalsIgnoreCase = (a: string, b: string): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x >= 0x41 && x <= 0x5a) x += 0x20
    if (y >= 0x41 && y <= 0x5a) y += 0x20
    if (x !== y) return false
  }
  return true
}

/** True when the local part is `postmaster` in any ASCII case (with or without a domain). */
export const isPostmaster = (m: Mailbox): boolean => equalsIgnoreCase(m.local, "postmaster")

// ---------------------------------------------------------------------------
// Domains and address literals
// ---------------------------------------------------------------------------

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/
const LDH_STR = /^[A-Za-z0-9-]*[A-Za-z0-9]$/

/** True for an RFC 5321 IPv4-address-literal body (`Snum 3("." Snum)`, each 0-255). */
export const isIPv4 = (s: string): boolean => {
  const m = IPV4.exec(s)
  if (m === null) return false
  for (let i = 1; i <= 4; i++) if (Number(m[i]) > 255) return false
  return true
}

const hexGroups = (s: string): number => {
  if (s === "") return 0
  const parts = s.split(":")
  for (const p of parts) if (!HEX_GROUP.test(p)) return -1
  return parts.length
}

/**
 * True for an IPv6 address in text form (full, `::`-compressed, and with a
 * trailing dotted quad). `::` may stand for one or more zero groups (RFC 4291,
 * slightly more lenient than RFC 5321's "at least two").
 */
export const isIPv6 = (s: string): boolean => {
  let body = s
  let max = 8
  if (s.includes(".")) {
    const last = s.lastIndexOf(":")
    if (last < 0 || !isIPv4(s.slice(last + 1))) return false
    body = s.slice(0, last + 1)
    max = 6
  }
  const dbl = body.indexOf("::")
  if (dbl < 0) {
    if (max === 6) body = body.slice(0, -1)
    return hexGroups(body) === max
  }
  if (body.indexOf("::", dbl + 1) >= 0) return false
  const head = body.slice(0, dbl)
  let tail = body.slice(dbl + 2)
  if (max === 6 && tail !== "") {
    if (!tail.endsWith(":")) return false
    tail = tail.slice(0, -1)
  }
  const h = hexGroups(head)
  const t = hexGroups(tail)
  return h >= 0 && t >= 0 && h + t <= max - 1
}

/**
 * Checks an address literal including its brackets: IPv4, `IPv6:` (tag
 * case-insensitive) or a General-address-literal `tag:content` (RFC 5321
 * §4.1.3). Returns an error message or `undefined`.
 */
export const checkAddressLiteral = (s: string): string | undefined => {
  if (s.length < 3 || s[0] !== "[" || s[s.length - 1] !== "]") return "bad address literal"
  const body = s.slice(1, -1)
  const colon = body.indexOf(":")
  if (colon < 0) return isIPv4(body) ? undefined : "bad IPv4 address literal"
  const tag = body.slice(0, colon)
  const content = body.slice(colon + 1)
  if (equalsIgnoreCase(tag, "IPv6")) return isIPv6(content) ? undefined : "bad IPv6 address literal"
  if (!LDH_STR.test(tag) || content.length === 0) return "bad address literal"
  for (let i = 0; i < content.length; i++) {
    const c = content.charCodeAt(i)
    // dcontent = %d33-90 / %d94-126
    if (c < 33 || c > 126 || (c >= 91 && c <= 93)) return "bad address literal"
  }
  return undefined
}

/** Options of `parseDomain`. */
export interface DomainOptions {
  /** Accept U-labels (RFC 6531). */
  readonly utf8: boolean
  /** Accept an address literal (`[192.0.2.1]`). */
  readonly allowLiteral: boolean
  /** Accept `_` inside labels (lenient EHLO names of Windows hosts). */
  readonly allowUnderscore?: boolean
}

const checkLabel = (label: string, utf8: boolean, underscore: boolean): string | undefined => {
  const n = label.length
  if (n === 0) return "empty domain label"
  let ascii = true
  for (let i = 0; i < n; i++) {
    const c = label.charCodeAt(i)
    if (isLetDig(c)) continue
    if (c === 0x2d || (underscore && c === 0x5f)) {
      if (i === 0 || i === n - 1) return "domain label starts or ends with a hyphen"
      continue
    }
    if (c >= 0x80 && utf8) {
      ascii = false
      continue
    }
    return c >= 0x80 ? NON_ASCII : "bad character in domain"
  }
  if (ascii) return n > MAX_LABEL_OCTETS ? "domain label longer than 63 octets" : undefined
  for (const ch of label) {
    if (ch.charCodeAt(0) < 0x80) continue
    if (!ULABEL_CHAR.test(ch)) return "bad character in domain"
  }
  return undefined
}

/**
 * Checks a domain name (dot-separated labels of letters, digits and inner
 * hyphens; U-labels when `utf8`) or, when allowed, an address literal.
 * Limits: a label ≤ 63 octets (ASCII labels), the domain ≤ 255 octets.
 */
export const parseDomain = (s: string, options: DomainOptions): ParseResult<string> => {
  if (s.length === 0) return error("empty domain")
  const bad = checkCharacters(s, options.utf8)
  if (bad !== undefined) return error(bad)
  if (utf8Length(s) > MAX_DOMAIN_OCTETS) return error("domain longer than 255 octets")
  if (s.charCodeAt(0) === 0x5b) {
    if (!options.allowLiteral) return error("address literal not allowed")
    const e = checkAddressLiteral(s)
    return e === undefined ? ok(s) : error(e)
  }
  const underscore = options.allowUnderscore === true
  let start = 0
  for (;;) {
    const dot = s.indexOf(".", start)
    const e = checkLabel(dot < 0 ? s.slice(start) : s.slice(start, dot), options.utf8, underscore)
    if (e !== undefined) return error(e)
    if (dot < 0) return ok(s)
    start = dot + 1
  }
}

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/**
 * Finds the `>` that closes the path opening with `<` at `start`, skipping
 * quoted strings (with quoted-pairs) and address literals (`@[...]`). Returns its index,
 * or -1 when the path is not closed. Used to cut a path out of a command line.
 */
export const pathEnd = (text: string, start: number): number => {
  if (text.charCodeAt(start) !== 0x3c) return -1
  let quoted = false
  let literal = false
  for (let i = start + 1; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (quoted) {
      if (c === 0x5c) i++
      else if (c === 0x22) quoted = false
    } else if (literal) {
      if (c === 0x5d) literal = false
    } else if (c === 0x22) quoted = true
    else if (c === 0x5b && text.charCodeAt(i - 1) === 0x40) literal = true
    else if (c === 0x3e) return i
  }
  return -1
}

/** Parses `Local-part "@" (Domain / address-literal)` starting at `i` of `s` (the path's inside). */
const parseMailbox = (s: string, i: number, utf8: boolean): ParseResult<Mailbox> => {
  const n = s.length
  const start = i
  let local = ""
  if (s.charCodeAt(i) === 0x22) {
    // Quoted-string: qtextSMTP / quoted-pairSMTP (%d92 %d32-126), UTF-8 under RFC 6531.
    i++
    for (;;) {
      if (i >= n) return error("unterminated quoted string")
      const c = s.charCodeAt(i)
      if (c === 0x22) break
      if (c === 0x5c) {
        if (i + 1 >= n) return error("unterminated quoted string")
        const d = s.charCodeAt(i + 1)
        if (d < 0x20 || d > 0x7e) return error("bad quoted-pair in local part")
        local += s[i + 1]
        i += 2
        continue
      }
      local += s[i]
      i++
    }
    i++
  } else {
    // Dot-string: Atom *("." Atom)
    let atomStart = i
    for (; i < n; i++) {
      const c = s.charCodeAt(i)
      if (c === 0x2e) {
        if (i === atomStart) return error("bad dot in local part")
        atomStart = i + 1
      } else if (!isAtext(c)) break
    }
    if (i === start) return error(i < n && s.charCodeAt(i) === 0x40 ? "empty local part" : "bad character in local part")
    if (i === atomStart) return error("bad dot in local part")
    local = s.slice(start, i)
  }
  if (i >= n) return error("missing domain")
  if (s.charCodeAt(i) !== 0x40) return error("bad character in local part")
  if (utf8Length(s.slice(start, i)) > MAX_LOCAL_OCTETS) return error("local part longer than 64 octets")
  const domain = parseDomain(s.slice(i + 1), { utf8, allowLiteral: true })
  if (domain._tag === "Error") return domain
  return ok({ local, domain: domain.value })
}

/** Skips a source route `@d1,@d2:` at the start of `s`; returns the index after `:` or an error. */
const skipSourceRoute = (s: string, utf8: boolean): ParseResult<number> => {
  let i = 0
  for (;;) {
    if (s.charCodeAt(i) !== 0x40) return error("bad source route")
    let j = i + 1
    while (j < s.length && s[j] !== "," && s[j] !== ":") j++
    if (j >= s.length) return error("bad source route")
    const d = parseDomain(s.slice(i + 1, j), { utf8, allowLiteral: false })
    if (d._tag === "Error") return error("bad source route")
    if (s[j] === ":") return ok(j + 1)
    i = j + 1
  }
}

/**
 * Parses a path including its angle brackets: `<user@example.com>`,
 * `<"a b"@[192.0.2.1]>`, `<@relay.example:user@example.com>` (the route is
 * stripped), `<>` (when `allowNull`, giving `null`) or `<Postmaster>` (when
 * `allowPostmaster`, giving `{ local: "Postmaster", domain: "" }` with the
 * case as sent). Never throws.
 *
 * @example
 * parsePath("<@a.example:u@b.example>", { utf8: false, allowNull: false, allowPostmaster: false })
 * // { _tag: "Ok", value: { local: "u", domain: "b.example" } }
 */
export const parsePath = (text: string, options: PathOptions): ParseResult<Mailbox | null> => {
  const n = text.length
  if (n < 2 || text.charCodeAt(0) !== 0x3c || text.charCodeAt(n - 1) !== 0x3e) {
    return error("address must be enclosed in <>")
  }
  const bad = checkCharacters(text, options.utf8)
  if (bad !== undefined) return error(bad)
  if (utf8Length(text) > MAX_PATH_OCTETS) return error("path longer than 256 octets")
  const inner = text.slice(1, -1)
  if (inner.length === 0) return options.allowNull ? ok(null) : error("null address not allowed")
  if (options.allowPostmaster && equalsIgnoreCase(inner, "postmaster")) return ok({ local: inner, domain: "" })
  let i = 0
  if (inner.charCodeAt(0) === 0x40) {
    const r = skipSourceRoute(inner, options.utf8)
    if (r._tag === "Error") return r
    i = r.value
  }
  return parseMailbox(inner, i, options.utf8)
}

/**
 * Checks that a mailbox can be sent as a forward-path (`parsePath` of its
 * printed form gives it back): the client side uses it before putting an
 * address on the wire.
 */
export const validate = (m: Mailbox, utf8: boolean): ParseResult<Mailbox> => {
  const r = parsePath(printPath(m), { utf8, allowNull: false, allowPostmaster: m.domain === "" })
  if (r._tag === "Error") return r
  const v = r.value
  return v !== null && v.local === m.local && v.domain === m.domain ? ok(m) : error("mailbox does not round-trip")
}

// ---------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------

/** True when `local` is a dot-atom (atext atoms joined by single dots; non-ASCII counts as atext). */
export const isDotAtom = (local: string): boolean => {
  const n = local.length
  if (n === 0 || local.charCodeAt(0) === 0x2e || local.charCodeAt(n - 1) === 0x2e) return false
  for (let i = 0; i < n; i++) {
    const c = local.charCodeAt(i)
    if (c === 0x2e) {
      if (local.charCodeAt(i + 1) === 0x2e) return false
    } else if (!isAtext(c)) return false
  }
  return true
}

/** The local part as it goes on the wire: as is when a dot-atom, else quoted with `"` and `\` escaped. */
export const printLocal = (local: string): string =>
  isDotAtom(local) ? local : `"${local.replace(/["\\]/g, "\\$&")}"`

/** `user@example.com`, `"a b"@example.com`, `Postmaster` (no domain), `""` for `null`. */
export const print = (m: Mailbox | null): string =>
  m === null ? "" : m.domain === "" ? printLocal(m.local) : `${printLocal(m.local)}@${m.domain}`

/** `<user@example.com>`, or `<>` for `null`. */
export const printPath = (m: Mailbox | null): string => `<${print(m)}>`
