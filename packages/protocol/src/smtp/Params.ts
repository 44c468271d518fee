/**
 * ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2 `esmtp-param`): a parser
 * from the space-separated tokens after the path into typed records, a
 * printer back to the wire, and the xtext codec of RFC 3461 §4.
 *
 * Known MAIL parameters: SIZE (RFC 1870), BODY=7BIT/8BITMIME (RFC 6152) and
 * BINARYMIME (RFC 3030), SMTPUTF8 (RFC 6531), RET and ENVID (RFC 3461),
 * AUTH= (RFC 4954 §5), REQUIRETLS (RFC 8689). Known RCPT parameters: NOTIFY
 * and ORCPT (RFC 3461). Keywords are case-insensitive; anything else is kept
 * in `unknown` (keyword upper-cased, value raw) for the session to answer 555.
 *
 * It deliberately does not decide whether a parameter is allowed in this
 * session (SIZE over the limit, BODY=BINARYMIME without CHUNKING, SMTPUTF8
 * not advertised): that is the server session's job. It does not decode the
 * RFC 6533 `\x{...}` escapes of `utf-8` ORCPT addresses; they stay as text.
 *
 * @since 0.1.0
 */
import * as Bytes from "../wire/Bytes.ts"
import * as Address from "./Address.ts"

/** The BODY parameter's values. */
export type Body = "7BIT" | "8BITMIME" | "BINARYMIME"
/** The NOTIFY parameter's values. */
export type Notify = "NEVER" | "SUCCESS" | "FAILURE" | "DELAY"

/** The parameters of a MAIL command. */
export interface MailParams {
  readonly size: number | undefined
  readonly body: Body | undefined
  readonly smtputf8: boolean
  readonly ret: "FULL" | "HDRS" | undefined
  /** xtext-decoded. */
  readonly envid: string | undefined
  /** xtext-decoded; `"<>"` when the client declares no authenticated submitter. */
  readonly auth: string | undefined
  readonly requireTls: boolean
  /** Other parameters in order: keyword upper-cased, raw value or `undefined`. */
  readonly unknown: ReadonlyArray<readonly [string, string | undefined]>
}

/** The parameters of a RCPT command. */
export interface RcptParams {
  /** In the order given, upper-cased; `["NEVER"]` alone or a set of the others. */
  readonly notify: ReadonlyArray<Notify> | undefined
  /** `addrType` as sent (e.g. `rfc822`), `address` xtext-decoded. */
  readonly orcpt: { readonly addrType: string; readonly address: string } | undefined
  readonly unknown: ReadonlyArray<readonly [string, string | undefined]>
}

/** MAIL without parameters. */
export const emptyMail: MailParams = {
  size: undefined,
  body: undefined,
  smtputf8: false,
  ret: undefined,
  envid: undefined,
  auth: undefined,
  requireTls: false,
  unknown: []
}

/** RCPT without parameters. */
export const emptyRcpt: RcptParams = { notify: undefined, orcpt: undefined, unknown: [] }

/** RFC 3461 §4.4: an ENVID is at most 100 characters (checked on the decoded UTF-8 octets). */
export const MAX_ENVID = 100
/** RFC 3461 §4.2: an ORCPT address is at most 500 characters (checked on the decoded UTF-8 octets). */
export const MAX_ORCPT = 500

// ---------------------------------------------------------------------------
// xtext (RFC 3461 §4)
// ---------------------------------------------------------------------------

const HEX = "0123456789ABCDEF"
const encoder = new TextEncoder()

/**
 * Encodes a string as xtext: the UTF-8 octets 0x21-0x7E except `+` and `=`
 * as themselves, every other octet (space, controls, `+`, `=`, non-ASCII) as
 * `+XX` with upper-case hex. The result is printable ASCII without spaces.
 */
export const xtextEncode = (s: string): string => {
  let out = ""
  let plain = true
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x21 || c > 0x7e || c === 0x2b || c === 0x3d) {
      plain = false
      break
    }
  }
  if (plain) return s
  for (const b of encoder.encode(s)) {
    if (b >= 0x21 && b <= 0x7e && b !== 0x2b && b !== 0x3d) out += String.fromCharCode(b)
    else out += "+" + HEX[b >> 4] + HEX[b & 15]
  }
  return out
}

const hexValue = (c: number): number =>
  c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 0x37 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1

/**
 * Decodes xtext: `+XX` (hex, either case) gives the octet XX, xchars
 * (0x21-0x7E except `+` and `=`) and, as RFC 6531 allows in parameter values,
 * literal non-ASCII characters stand for themselves. The octets must form
 * valid UTF-8. Control characters are not refused here (callers check).
 */
export const xtextDecode = (s: string): Address.ParseResult<string> => {
  if (s.indexOf("+") < 0) {
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i)
      if (c < 0x21 || c === 0x3d || c === 0x7f) return Address.error("bad xtext")
    }
    return Address.checkCharacters(s, true) === undefined ? Address.ok(s) : Address.error("bad xtext")
  }
  const bytes: Array<number> = []
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x2b) {
      const hi = hexValue(s.charCodeAt(i + 1))
      const lo = hexValue(s.charCodeAt(i + 2))
      if (hi < 0 || lo < 0) return Address.error("bad xtext")
      bytes.push(hi * 16 + lo)
      i += 2
    } else if (c >= 0x21 && c <= 0x7e && c !== 0x3d) {
      bytes.push(c)
    } else if (c >= 0x80) {
      const cp = s.codePointAt(i)!
      const ch = String.fromCodePoint(cp)
      if (Address.checkCharacters(ch, true) !== undefined) return Address.error("bad xtext")
      for (const b of encoder.encode(ch)) bytes.push(b)
      i += ch.length - 1
    } else return Address.error("bad xtext")
  }
  const decoded = Bytes.decodeUtf8(Uint8Array.from(bytes))
  return decoded === undefined ? Address.error("xtext is not valid UTF-8") : Address.ok(decoded)
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/
const DIGITS = /^[0-9]{1,20}$/
const ADDR_TYPE = /^[A-Za-z0-9][A-Za-z0-9-]*$/
const NOTIFY_VALUES: ReadonlyArray<Notify> = ["NEVER", "SUCCESS", "FAILURE", "DELAY"]

type Param = readonly [keyword: string, value: string | undefined]

/** Splits and checks `keyword[=value]` tokens; keywords upper-cased, duplicates refused. */
const splitParams = (tokens: ReadonlyArray<string>): Address.ParseResult<ReadonlyArray<Param>> => {
  const out: Array<Param> = []
  const seen = new Set<string>()
  for (const token of tokens) {
    const eq = token.indexOf("=")
    const key = eq < 0 ? token : token.slice(0, eq)
    if (!KEYWORD.test(key)) return Address.error("Bad parameter keyword syntax")
    const keyword = key.toUpperCase()
    if (seen.has(keyword)) return Address.error(`Duplicate ${keyword} parameter`)
    seen.add(keyword)
    if (eq < 0) {
      out.push([keyword, undefined])
      continue
    }
    const value = token.slice(eq + 1)
    // esmtp-value = 1*(%d33-60 / %d62-126 / UTF8-non-ascii)
    if (value.length === 0 || value.includes("=") || value.includes(" ")) {
      return Address.error(`Bad ${keyword} parameter value syntax`)
    }
    if (Address.checkCharacters(value, true) !== undefined) return Address.error(`Bad ${keyword} parameter value syntax`)
    out.push([keyword, value])
  }
  return Address.ok(out)
}

/** Decodes an xtext value and refuses control characters in the result. */
const decodeValue = (keyword: string, value: string): Address.ParseResult<string> => {
  const r = xtextDecode(value)
  if (r._tag === "Error" || Address.checkCharacters(r.value, true) !== undefined) {
    return Address.error(`Bad ${keyword} parameter xtext`)
  }
  return r
}

/**
 * Parses the parameters of MAIL (the tokens after `FROM:<path>`, split on
 * spaces). Errors: bad keyword or value syntax, duplicates, SIZE not 1-20
 * digits or above `Number.MAX_SAFE_INTEGER`, unknown BODY or RET values,
 * values on SMTPUTF8/REQUIRETLS, bad xtext, control characters (raw or
 * xtext-decoded), an ENVID over 100 octets decoded.
 */
export const parseMail = (tokens: ReadonlyArray<string>): Address.ParseResult<MailParams> => {
  if (tokens.length === 0) return Address.ok(emptyMail)
  const split = splitParams(tokens)
  if (split._tag === "Error") return split
  let size: number | undefined
  let body: Body | undefined
  let smtputf8 = false
  let ret: "FULL" | "HDRS" | undefined
  let envid: string | undefined
  let auth: string | undefined
  let requireTls = false
  const unknown: Array<Param> = []
  for (const [keyword, value] of split.value) {
    switch (keyword) {
      case "SIZE": {
        if (value === undefined || !DIGITS.test(value)) return Address.error("Bad SIZE parameter syntax")
        const n = Number(value)
        if (!Number.isSafeInteger(n)) return Address.error("Bad SIZE parameter syntax")
        size = n
        break
      }
      case "BODY": {
        const v = value?.toUpperCase()
        if (v !== "7BIT" && v !== "8BITMIME" && v !== "BINARYMIME") return Address.error("Bad BODY parameter syntax")
        body = v
        break
      }
      case "SMTPUTF8":
        if (value !== undefined) return Address.error("SMTPUTF8 parameter takes no value")
        smtputf8 = true
        break
      case "REQUIRETLS":
        if (value !== undefined) return Address.error("REQUIRETLS parameter takes no value")
        requireTls = true
        break
      case "RET": {
        const v = value?.toUpperCase()
        if (v !== "FULL" && v !== "HDRS") return Address.error("Bad RET parameter syntax")
        ret = v
        break
      }
      case "ENVID": {
        if (value === undefined) return Address.error("Bad ENVID parameter syntax")
        const r = decodeValue(keyword, value)
        if (r._tag === "Error") return r
        if (Address.utf8Length(r.value) > MAX_ENVID) return Address.error("ENVID parameter longer than 100 octets")
        envid = r.value
        break
      }
      case "AUTH": {
        if (value === undefined) return Address.error("Bad AUTH parameter syntax")
        const r = decodeValue(keyword, value)
        if (r._tag === "Error") return r
        auth = r.value
        break
      }
      default:
        unknown.push([keyword, value])
    }
  }
  return Address.ok({ size, body, smtputf8, ret, envid, auth, requireTls, unknown })
}

const parseNotify = (value: string | undefined): ReadonlyArray<Notify> | undefined => {
  if (value === undefined) return undefined
  const out: Array<Notify> = []
  for (const part of value.toUpperCase().split(",")) {
    const v = NOTIFY_VALUES.find((n) => n === part)
    if (v === undefined || out.includes(v)) return undefined
    out.push(v)
  }
  if (out.includes("NEVER") && out.length > 1) return undefined
  return out
}

/**
 * Parses the parameters of RCPT (the tokens after `TO:<path>`). Errors: bad
 * syntax, duplicates, NOTIFY values other than NEVER (alone) or a set of
 * SUCCESS/FAILURE/DELAY, ORCPT not `addr-type;xtext` or over 500 octets decoded.
 */
export const parseRcpt = (tokens: ReadonlyArray<string>): Address.ParseResult<RcptParams> => {
  if (tokens.length === 0) return Address.ok(emptyRcpt)
  const split = splitParams(tokens)
  if (split._tag === "Error") return split
  let notify: ReadonlyArray<Notify> | undefined
  let orcpt: { readonly addrType: string; readonly address: string } | undefined
  const unknown: Array<Param> = []
  for (const [keyword, value] of split.value) {
    switch (keyword) {
      case "NOTIFY": {
        notify = parseNotify(value)
        if (notify === undefined) return Address.error("Bad NOTIFY parameter syntax")
        break
      }
      case "ORCPT": {
        const semi = value === undefined ? -1 : value.indexOf(";")
        if (value === undefined || semi < 0) return Address.error("Bad ORCPT parameter syntax")
        const addrType = value.slice(0, semi)
        const encoded = value.slice(semi + 1)
        if (!ADDR_TYPE.test(addrType) || encoded.length === 0) return Address.error("Bad ORCPT parameter syntax")
        const r = decodeValue(keyword, encoded)
        if (r._tag === "Error") return r
        if (Address.utf8Length(r.value) > MAX_ORCPT) return Address.error("ORCPT parameter longer than 500 octets")
        orcpt = { addrType, address: r.value }
        break
      }
      default:
        unknown.push([keyword, value])
    }
  }
  return Address.ok({ notify, orcpt, unknown })
}

// ---------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------

const printUnknown = (unknown: ReadonlyArray<readonly [string, string | undefined]>): string => {
  let out = ""
  for (const [k, v] of unknown) out += v === undefined ? ` ${k}` : ` ${k}=${v}`
  return out
}

/**
 * The MAIL parameters as they follow the path: `" SIZE=123 BODY=8BITMIME"`
 * (a leading space per parameter, `""` when there are none), ENVID and AUTH
 * xtext-encoded. Unknown parameters are printed raw: a client must not put
 * unchecked values there.
 */
export const printMail = (p: MailParams): string => {
  let out = ""
  if (p.size !== undefined) out += ` SIZE=${p.size}`
  if (p.body !== undefined) out += ` BODY=${p.body}`
  if (p.smtputf8) out += " SMTPUTF8"
  if (p.ret !== undefined) out += ` RET=${p.ret}`
  if (p.envid !== undefined) out += ` ENVID=${xtextEncode(p.envid)}`
  if (p.auth !== undefined) out += ` AUTH=${xtextEncode(p.auth)}`
  if (p.requireTls) out += " REQUIRETLS"
  return out + printUnknown(p.unknown)
}

/** The RCPT parameters: `" NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@example.com"`, or `""`. */
export const printRcpt = (p: RcptParams): string => {
  let out = ""
  if (p.notify !== undefined) out += ` NOTIFY=${p.notify.join(",")}`
  if (p.orcpt !== undefined) out += ` ORCPT=${p.orcpt.addrType};${xtextEncode(p.orcpt.address)}`
  return out + printUnknown(p.unknown)
}
