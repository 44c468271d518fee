/**
 * The SPF record grammar of RFC 7208: picking the SPF record among a name's
 * TXT records (§4.5), parsing a record into directives and modifiers (§4.6,
 * §5, §6, Appendix A) and macro strings into parts (§7.1), with the whole
 * record checked before anything is evaluated (a syntax error anywhere is a
 * `permerror`, even after a matching mechanism).
 *
 * Strictness follows the RFC 7208 test suite: CIDR lengths without leading
 * zeros and within range, `ip4` networks as strict dotted quads, a
 * `domain-spec` that ends in a macro or in `.` plus a valid top label, no
 * `c`/`r`/`t` macros outside explanations, a nonzero digit transformer,
 * `redirect` and `exp` at most once each, modifier names that start with a
 * letter, and only printable ASCII (terms are separated by spaces only).
 *
 * What it deliberately does not do: DNS, macro expansion or evaluation
 * (`Spf` does those).
 *
 * @since 0.1.0
 */
import * as Ip from "./Ip.ts"

// ---------------------------------------------------------------------------
// Macro strings (RFC 7208 §7.1)
// ---------------------------------------------------------------------------

/** A macro letter, lower case. `c`, `r`, `t` are valid only in explanation strings. */
export type MacroLetter = "s" | "l" | "o" | "d" | "i" | "p" | "v" | "h" | "c" | "r" | "t"

/** One part of a macro string: literal text, or a `%{...}` expansion. */
export type MacroPart =
  | { readonly _tag: "Literal"; readonly text: string }
  | {
    readonly _tag: "Macro"
    readonly letter: MacroLetter
    /** Written in upper case: the value is URL-escaped after the transformers. */
    readonly escape: boolean
    /** Keep this many right-hand parts (after reversal); undefined keeps all. */
    readonly digits: number | undefined
    readonly reverse: boolean
    /** The characters the value is split on; `"."` when none were given. */
    readonly delimiters: string
  }

/** A parsed macro string. */
export interface MacroString {
  readonly parts: ReadonlyArray<MacroPart>
  /** The text as written in the record. */
  readonly source: string
}

/** Why a record is not valid. */
export class SyntaxError {
  readonly _tag = "SpfSyntaxError"
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

const DOMAIN_LETTERS = "slodipvh"
const EXP_LETTERS = "slodipvhcrt"
const DELIMITERS = ".-+,/_="

interface MacroScan {
  readonly parts: ReadonlyArray<MacroPart>
  /** The last token was a macro-expand (`%{..}`, `%%`, `%_`, `%-`). */
  readonly endsWithMacro: boolean
  /** Literal text after the last macro-expand. */
  readonly tail: string
}

const scanMacroString = (s: string, letters: string, spaces: boolean): MacroScan | SyntaxError => {
  const parts: Array<MacroPart> = []
  let literal = ""
  let tail = ""
  let endsWithMacro = false
  const flush = () => {
    if (literal.length > 0) parts.push({ _tag: "Literal", text: literal })
    literal = ""
  }
  for (let i = 0; i < s.length;) {
    const c = s.charCodeAt(i)
    if (c === 0x25) {
      const next = s[i + 1]
      if (next === "%" || next === "_" || next === "-") {
        literal += next === "%" ? "%" : next === "_" ? " " : "%20"
        tail = ""
        endsWithMacro = true
        i += 2
        continue
      }
      if (next !== "{") return new SyntaxError(`invalid macro at ${JSON.stringify(s.slice(i, i + 3))}`)
      const close = s.indexOf("}", i + 2)
      if (close < 0) return new SyntaxError("unterminated macro")
      const body = s.slice(i + 2, close)
      const m = /^([A-Za-z])(\d*)(r?)([.\-+,/_=]*)$/i.exec(body)
      if (!m) return new SyntaxError(`invalid macro %{${body}}`)
      const letter = m[1]!.toLowerCase()
      if (!letters.includes(letter)) return new SyntaxError(`macro letter ${m[1]} not allowed here`)
      let digits: number | undefined
      if (m[2]!.length > 0) {
        digits = Number(m[2])
        if (digits === 0 || m[2]!.length > 3) return new SyntaxError(`invalid digit transformer in %{${body}}`)
      }
      flush()
      parts.push({
        _tag: "Macro",
        letter: letter as MacroLetter,
        escape: m[1] !== letter,
        digits,
        reverse: m[3]!.length > 0,
        delimiters: m[4]!.length > 0 ? m[4]! : "."
      })
      tail = ""
      endsWithMacro = true
      i = close + 1
      continue
    }
    // macro-literal = %x21-24 / %x26-7E ; SP allowed in explanation strings
    if (!((c >= 0x21 && c <= 0x7e) || (spaces && c === 0x20))) {
      return new SyntaxError(`invalid character U+${c.toString(16).padStart(4, "0")} in ${JSON.stringify(s)}`)
    }
    literal += s[i]
    tail += s[i]
    endsWithMacro = false
    i++
  }
  flush()
  return { parts, endsWithMacro, tail }
}

const TOPLABEL = /^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])$/

/**
 * Parses a `domain-spec`: a macro string (letters `slodipvh`) that ends in a
 * macro or in `.` and a valid top label (optionally followed by one dot).
 */
export const parseDomainSpec = (s: string): MacroString | SyntaxError => {
  if (s.length === 0) return new SyntaxError("empty domain-spec")
  const scan = scanMacroString(s, DOMAIN_LETTERS, false)
  if (scan instanceof SyntaxError) return scan
  if (!scan.endsWithMacro) {
    const t = scan.tail.endsWith(".") ? scan.tail.slice(0, -1) : scan.tail
    const dot = t.lastIndexOf(".")
    if (dot < 0 || !TOPLABEL.test(t.slice(dot + 1))) {
      return new SyntaxError(`${JSON.stringify(s)} does not end in a valid top label`)
    }
  }
  return { parts: scan.parts, source: s }
}

/** Parses an explanation string (the TXT record an `exp=` names): macros incl. `c`, `r`, `t`, and spaces. */
export const parseExplanation = (s: string): MacroString | SyntaxError => {
  const scan = scanMacroString(s, EXP_LETTERS, true)
  return scan instanceof SyntaxError ? scan : { parts: scan.parts, source: s }
}

/** Checks the value of an unknown modifier (`name=macro-string`). */
const checkMacroString = (s: string): SyntaxError | undefined => {
  const scan = scanMacroString(s, EXP_LETTERS, false)
  return scan instanceof SyntaxError ? scan : undefined
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/** `+` pass, `-` fail, `~` softfail, `?` neutral. */
export type Qualifier = "+" | "-" | "~" | "?"

export type Mechanism =
  | { readonly _tag: "all" }
  | { readonly _tag: "include"; readonly domain: MacroString }
  | { readonly _tag: "a"; readonly domain: MacroString | undefined; readonly cidr4: number; readonly cidr6: number }
  | { readonly _tag: "mx"; readonly domain: MacroString | undefined; readonly cidr4: number; readonly cidr6: number }
  | { readonly _tag: "ptr"; readonly domain: MacroString | undefined }
  | { readonly _tag: "ip4"; readonly network: Uint8Array; readonly prefix: number }
  | { readonly _tag: "ip6"; readonly network: Uint8Array; readonly prefix: number }
  | { readonly _tag: "exists"; readonly domain: MacroString }

export interface Directive {
  readonly qualifier: Qualifier
  readonly mechanism: Mechanism
  /** The term as written, e.g. `-ip4:192.0.2.0/24`. */
  readonly text: string
}

/** A parsed record: directives in order, and the two modifiers RFC 7208 defines. */
export interface Record {
  readonly directives: ReadonlyArray<Directive>
  readonly redirect: MacroString | undefined
  readonly exp: MacroString | undefined
}

const VERSION = /^v=spf1(?: |$)/i

/** True when the text of a TXT record is an SPF version 1 record (`v=spf1` then a space or the end). */
export const isSpfRecord = (text: string): boolean => VERSION.test(text)

const CIDR4 = /^(?:0|[1-9]\d?)$/
const CIDR6 = /^(?:0|[1-9]\d{0,2})$/

const cidr = (digits: string, max: number, re: RegExp): number | SyntaxError => {
  if (!re.test(digits)) return new SyntaxError(`invalid CIDR length /${digits}`)
  const n = Number(digits)
  return n > max ? new SyntaxError(`CIDR length /${n} out of range`) : n
}

/** Splits `[":" domain-spec] [dual-cidr-length]` (the part after `a` or `mx`). */
const parseAddressMechanism = (
  tag: "a" | "mx",
  rest: string
): Mechanism | SyntaxError => {
  const m = /^(?::(.*?))?(?:\/(\d+))?(?:\/\/(\d+))?$/s.exec(rest)
  if (!m) return new SyntaxError(`invalid ${tag} mechanism`)
  let domain: MacroString | undefined
  if (m[1] !== undefined) {
    const d = parseDomainSpec(m[1])
    if (d instanceof SyntaxError) return d
    domain = d
  }
  let cidr4 = 32
  let cidr6 = 128
  if (m[2] !== undefined) {
    const c = cidr(m[2], 32, CIDR4)
    if (c instanceof SyntaxError) return c
    cidr4 = c
  }
  if (m[3] !== undefined) {
    const c = cidr(m[3], 128, CIDR6)
    if (c instanceof SyntaxError) return c
    cidr6 = c
  }
  return { _tag: tag, domain, cidr4, cidr6 }
}

const parseMechanism = (name: string, rest: string): Mechanism | SyntaxError => {
  switch (name) {
    case "all":
      return rest === "" ? { _tag: "all" } : new SyntaxError("all takes no argument")
    case "include":
    case "exists": {
      if (!rest.startsWith(":")) return new SyntaxError(`${name} needs a domain`)
      const d = parseDomainSpec(rest.slice(1))
      return d instanceof SyntaxError ? d : { _tag: name, domain: d }
    }
    case "a":
    case "mx":
      return parseAddressMechanism(name, rest)
    case "ptr": {
      if (rest === "") return { _tag: "ptr", domain: undefined }
      if (!rest.startsWith(":")) return new SyntaxError("invalid ptr mechanism")
      const d = parseDomainSpec(rest.slice(1))
      return d instanceof SyntaxError ? d : { _tag: "ptr", domain: d }
    }
    case "ip4":
    case "ip6": {
      if (!rest.startsWith(":")) return new SyntaxError(`${name} needs a network`)
      const body = rest.slice(1)
      const slash = body.indexOf("/")
      const net = slash < 0 ? body : body.slice(0, slash)
      const bytes = name === "ip4" ? Ip.parseIpv4(net) : Ip.parseIpv6(net)
      if (!bytes) return new SyntaxError(`invalid ${name} network ${JSON.stringify(net)}`)
      let prefix = name === "ip4" ? 32 : 128
      if (slash >= 0) {
        const c = name === "ip4" ? cidr(body.slice(slash + 1), 32, CIDR4) : cidr(body.slice(slash + 1), 128, CIDR6)
        if (c instanceof SyntaxError) return c
        prefix = c
      }
      return { _tag: name, network: bytes, prefix }
    }
    default:
      return new SyntaxError(`unknown mechanism ${JSON.stringify(name)}`)
  }
}

const MODIFIER = /^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$/s

/**
 * Parses the text of an SPF record (the TXT character strings joined). The
 * whole record is checked: any error anywhere gives a `SyntaxError`.
 */
export const parse = (text: string): Record | SyntaxError => {
  if (!isSpfRecord(text)) return new SyntaxError("not an SPF version 1 record")
  // printable ASCII and spaces only (RFC 7208 §3.1, §4.6.1)
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x20 || c > 0x7e) return new SyntaxError(`invalid character U+${c.toString(16).padStart(4, "0")} in record`)
  }
  const terms = text.slice(6).split(" ").filter((t) => t.length > 0)
  const directives: Array<Directive> = []
  let redirect: MacroString | undefined
  let exp: MacroString | undefined
  for (const term of terms) {
    const mod = MODIFIER.exec(term)
    if (mod) {
      const name = mod[1]!.toLowerCase()
      const value = mod[2]!
      if (name === "redirect" || name === "exp") {
        if ((name === "redirect" ? redirect : exp) !== undefined) return new SyntaxError(`${name}= given twice`)
        const d = parseDomainSpec(value)
        if (d instanceof SyntaxError) return d
        if (name === "redirect") redirect = d
        else exp = d
      } else {
        const bad = checkMacroString(value)
        if (bad) return bad
      }
      continue
    }
    let body = term
    let qualifier: Qualifier = "+"
    const q = body[0]
    if (q === "+" || q === "-" || q === "~" || q === "?") {
      qualifier = q
      body = body.slice(1)
    }
    const end = body.search(/[:/]/)
    const name = (end < 0 ? body : body.slice(0, end)).toLowerCase()
    const mech = parseMechanism(name, end < 0 ? "" : body.slice(end))
    if (mech instanceof SyntaxError) return mech
    directives.push({ qualifier, mechanism: mech, text: term })
  }
  return { directives, redirect, exp }
}
