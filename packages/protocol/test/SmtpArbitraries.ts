/**
 * fast-check generators for the SMTP grammar: valid mailboxes (dot-atoms,
 * quoted local parts, address literals, UTF-8), ESMTP parameters (xtext
 * values with special characters) and whole commands. Shared by the
 * Address, Params and Command tests.
 */
import fc from "fast-check"
import * as Address from "../src/smtp/Address.ts"
import type * as Command from "../src/smtp/Command.ts"
import * as Params from "../src/smtp/Params.ts"

const ASCII_ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
const LETTERS = "äöüßéñøåçłžšдждяσπλ中文日本語한국ÅÉ"
const LET_DIG = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

/** `fc.record` with a plain prototype (fc's records have a null prototype, which `toStrictEqual` tells apart). */
const rec = <T extends object>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> =>
  fc.record<T>(model).map((r) => ({ ...r }))

const chars = (s: string): fc.Arbitrary<string> => fc.constantFrom(...Array.from(s))
const join = (a: fc.Arbitrary<ReadonlyArray<string>>, sep = ""): fc.Arbitrary<string> => a.map((x) => x.join(sep))

/** Printable ASCII and space (0x20-0x7E). */
export const printableAscii: fc.Arbitrary<string> = fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c))

const atextChar = (utf8: boolean): fc.Arbitrary<string> =>
  utf8 ? fc.oneof({ weight: 4, arbitrary: chars(ASCII_ATEXT) }, { weight: 1, arbitrary: fc.oneof(chars(LETTERS), fc.constant("😀")) }) : chars(ASCII_ATEXT)

/** A dot-atom local part. */
export const dotAtom = (utf8: boolean): fc.Arbitrary<string> =>
  join(fc.array(join(fc.array(atextChar(utf8), { minLength: 1, maxLength: 8 })), { minLength: 1, maxLength: 3 }), ".")

/** Any content of a quoted local part (printed quoted when it is not a dot-atom). */
export const quotedContent = (utf8: boolean): fc.Arbitrary<string> =>
  join(fc.array(utf8 ? fc.oneof({ weight: 5, arbitrary: printableAscii }, { weight: 1, arbitrary: chars(LETTERS) }) : printableAscii, { maxLength: 20 }))

/** A local part, kept to 64 octets once printed. */
export const localPart = (utf8: boolean): fc.Arbitrary<string> =>
  fc.oneof(dotAtom(utf8), quotedContent(utf8)).filter((l) => Address.utf8Length(Address.printLocal(l)) <= 64)

const asciiLabel: fc.Arbitrary<string> = fc
  .tuple(chars(LET_DIG), join(fc.array(fc.oneof(chars(LET_DIG), fc.constant("-")), { maxLength: 10 })), chars(LET_DIG))
  .map(([a, m, z]) => (m.length === 0 ? a : a + m + z))

const uLabel: fc.Arbitrary<string> = join(fc.array(fc.oneof(chars(LETTERS), chars(LET_DIG)), { minLength: 1, maxLength: 8 }))

/** A domain name (U-labels when `utf8`). */
export const domainName = (utf8: boolean): fc.Arbitrary<string> =>
  join(fc.array(utf8 ? fc.oneof(asciiLabel, uLabel) : asciiLabel, { minLength: 1, maxLength: 4 }), ".")

const octet = fc.integer({ min: 0, max: 255 })
const ipv4 = fc.tuple(octet, octet, octet, octet).map((a) => a.join("."))
const hexGroup = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16))

/** An IPv6 address in full, compressed or IPv4-suffixed form. */
export const ipv6: fc.Arbitrary<string> = fc.oneof(
  fc.array(hexGroup, { minLength: 8, maxLength: 8 }).map((g) => g.join(":")),
  fc
    .tuple(fc.array(hexGroup, { maxLength: 7 }), fc.array(hexGroup, { maxLength: 7 }))
    .filter(([h, t]) => h.length + t.length <= 7)
    .map(([h, t]) => `${h.join(":")}::${t.join(":")}`),
  fc.tuple(fc.array(hexGroup, { minLength: 6, maxLength: 6 }), ipv4).map(([g, v4]) => `${g.join(":")}:${v4}`),
  fc
    .tuple(fc.array(hexGroup, { maxLength: 5 }), fc.array(hexGroup, { maxLength: 5 }), ipv4)
    .filter(([h, t]) => h.length + t.length <= 5)
    .map(([h, t, v4]) => `${h.join(":")}::${t.length > 0 ? t.join(":") + ":" : ""}${v4}`)
)

const DCONTENT = Array.from({ length: 126 - 33 + 1 }, (_, i) => String.fromCharCode(33 + i)).filter((c) => !"[\\]".includes(c)).join("")

/** An address literal with brackets: IPv4, IPv6 or General-address-literal. */
export const addressLiteral: fc.Arbitrary<string> = fc.oneof(
  ipv4.map((a) => `[${a}]`),
  fc.tuple(fc.constantFrom("IPv6", "ipv6", "IPV6"), ipv6).map(([t, a]) => `[${t}:${a}]`),
  fc
    .tuple(asciiLabel.filter((t) => t.toLowerCase() !== "ipv6"), join(fc.array(chars(DCONTENT), { minLength: 1, maxLength: 12 })))
    .map(([t, c]) => `[${t}:${c}]`)
)

/** A domain or an address literal. */
export const domain = (utf8: boolean): fc.Arbitrary<string> =>
  fc.oneof({ weight: 3, arbitrary: domainName(utf8) }, { weight: 1, arbitrary: addressLiteral })

/** A valid mailbox whose printed path fits in 256 octets. */
export const mailbox = (utf8: boolean): fc.Arbitrary<Address.Mailbox> =>
  rec<Address.Mailbox>({ local: localPart(utf8), domain: domain(utf8) })
    .filter((m) => Address.utf8Length(Address.printPath(m)) <= 256)

/** The bare postmaster recipient in some case. */
export const postmaster: fc.Arbitrary<Address.Mailbox> = fc
  .constantFrom("Postmaster", "postmaster", "POSTMASTER", "PostMaster")
  .map((local) => ({ local, domain: "" }))

/** A protocol value: no control or invisible characters (what `checkCharacters` accepts). */
export const cleanText = (opts: { readonly minLength?: number; readonly maxLength?: number } = {}): fc.Arbitrary<string> =>
  fc
    .string({ unit: fc.oneof({ weight: 6, arbitrary: printableAscii }, { weight: 1, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }) }), ...opts })
    .filter((s) => Address.checkCharacters(s, true) === undefined)

/** A string with the characters xtext must encode: `+`, `=`, space, non-ASCII. */
export const xtextValue: fc.Arbitrary<string> = fc.oneof(
  cleanText({ minLength: 1, maxLength: 30 }),
  join(fc.array(fc.constantFrom("+", "=", " ", "a", "Z", "<", ">", "ü", "😀", "\\", ";", "@"), { minLength: 1, maxLength: 20 }))
)

const KNOWN = new Set(["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "REQUIRETLS", "NOTIFY", "ORCPT"])
const keyword = fc
  .tuple(chars(LET_DIG.slice(26)), join(fc.array(fc.oneof(chars(LET_DIG.slice(26)), fc.constant("-")), { maxLength: 8 })))
  .map(([a, b]) => (a + b).toUpperCase())
  .filter((k) => !KNOWN.has(k))
const ESMTP_VALUE = Array.from({ length: 126 - 33 + 1 }, (_, i) => String.fromCharCode(33 + i)).filter((c) => c !== "=").join("")
const esmtpValue = join(fc.array(fc.oneof(chars(ESMTP_VALUE), chars("ü中")), { minLength: 1, maxLength: 12 }))

/** Unknown parameters: distinct upper-case keywords, raw values. */
export const unknownParams: fc.Arbitrary<ReadonlyArray<readonly [string, string | undefined]>> = fc.uniqueArray(
  fc.tuple(keyword, fc.option(esmtpValue, { nil: undefined })),
  { maxLength: 3, selector: ([k]) => k }
)

/** MAIL parameters, every field present. */
export const mailParams: fc.Arbitrary<Params.MailParams> = rec({
  size: fc.option(fc.maxSafeNat(), { nil: undefined }),
  body: fc.option(fc.constantFrom<Params.Body>("7BIT", "8BITMIME", "BINARYMIME"), { nil: undefined }),
  smtputf8: fc.boolean(),
  ret: fc.option(fc.constantFrom<"FULL" | "HDRS">("FULL", "HDRS"), { nil: undefined }),
  envid: fc.option(xtextValue.filter((v) => Address.utf8Length(v) <= Params.MAX_ENVID), { nil: undefined }),
  auth: fc.option(fc.oneof(fc.constant("<>"), xtextValue), { nil: undefined }),
  requireTls: fc.boolean(),
  unknown: unknownParams
})

const notify: fc.Arbitrary<ReadonlyArray<Params.Notify>> = fc.oneof(
  fc.constant<ReadonlyArray<Params.Notify>>(["NEVER"]),
  fc.shuffledSubarray<Params.Notify>(["SUCCESS", "FAILURE", "DELAY"], { minLength: 1 })
)

/** RCPT parameters, every field present. */
export const rcptParams: fc.Arbitrary<Params.RcptParams> = rec({
  notify: fc.option(notify, { nil: undefined }),
  orcpt: fc.option(rec({ addrType: fc.constantFrom("rfc822", "utf-8", "RFC822", "x400"), address: xtextValue }), {
    nil: undefined
  }),
  unknown: unknownParams
})

const ehloDomain: fc.Arbitrary<string> = fc.oneof({ weight: 3, arbitrary: domainName(false) }, { weight: 1, arbitrary: addressLiteral })
const text = cleanText({ maxLength: 30 }).map((s) => s.trim()).filter((s) => Address.checkCharacters(s, true) === undefined)
const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

/** Every command, with arguments that print and parse back. */
export const command: fc.Arbitrary<Command.Command> = fc.oneof(
  ehloDomain.map((domain) => ({ _tag: "Ehlo" as const, domain })),
  ehloDomain.map((domain) => ({ _tag: "Helo" as const, domain })),
  ehloDomain.map((domain) => ({ _tag: "Lhlo" as const, domain })),
  rec({ _tag: fc.constant("Mail" as const), sender: fc.option(mailbox(true), { nil: null }), params: mailParams }),
  rec({ _tag: fc.constant("Rcpt" as const), recipient: fc.oneof(mailbox(true), postmaster), params: rcptParams }),
  fc.constant({ _tag: "Data" as const }),
  rec({ _tag: fc.constant("Bdat" as const), size: fc.maxSafeNat(), last: fc.boolean() }),
  fc.constant({ _tag: "Rset" as const }),
  text.map((t) => ({ _tag: "Noop" as const, text: t })),
  fc.constant({ _tag: "Quit" as const }),
  text.filter((t) => t.length > 0).map((t) => ({ _tag: "Vrfy" as const, text: t })),
  text.map((t) => ({ _tag: "Help" as const, text: t })),
  fc.constant({ _tag: "StartTls" as const }),
  rec({
    _tag: fc.constant("Auth" as const),
    mechanism: join(fc.array(chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"), { minLength: 1, maxLength: 20 })),
    initial: fc.option(fc.oneof(fc.constant("="), join(fc.array(chars(BASE64), { minLength: 1, maxLength: 40 }))), { nil: undefined })
  })
)
