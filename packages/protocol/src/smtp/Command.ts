/**
 * SMTP commands: the closed `Command` union, a parser from one command line
 * (without its CRLF) and a printer back to the canonical wire form.
 *
 * The parser never throws. A line that is not a well-formed command gives the
 * exact reply to send:
 *
 * | fault | reply |
 * | --- | --- |
 * | empty line, unknown verb | `500 5.5.2` (`Reply.unknownCommand`) |
 * | EXPN, ETRN, TURN, ATRN, SEND, SOML, SAML | `502 5.5.1` (`Reply.notImplemented`) |
 * | bad syntax or arguments, argument to DATA/RSET/QUIT/STARTTLS, EHLO without a domain | `501 5.5.4` with a `Syntax: ...` text |
 * | bad MAIL parameters | `501 5.5.4` naming the parameter |
 * | bad sender address | `501 5.1.7` |
 * | bad recipient address | `501 5.1.3` |
 * | non-ASCII address when parsing with `utf8: false` | `553 5.6.7` (RFC 6531, X.6.7) |
 *
 * Verbs and the `FROM:` / `TO:` keywords are case-insensitive; trailing
 * spaces and extra spaces between arguments are tolerated, and so is a space
 * after `FROM:` / `TO:` (`MAIL FROM: <a@b>`). A path must be in angle
 * brackets. Control characters in any argument give 501.
 *
 * It deliberately does not check the command against the session (sequence,
 * advertised extensions, SMTPUTF8, size limits) nor decode AUTH's base64:
 * those belong to the server session and the SASL mechanisms.
 *
 * @since 0.1.0
 */
import * as Address from "./Address.ts"
import * as Params from "./Params.ts"
import * as Reply from "./Reply.ts"

/** One SMTP command. */
export type Command =
  | { readonly _tag: "Ehlo"; readonly domain: string }
  | { readonly _tag: "Helo"; readonly domain: string }
  | { readonly _tag: "Lhlo"; readonly domain: string }
  | { readonly _tag: "Mail"; readonly sender: Address.Mailbox | null; readonly params: Params.MailParams }
  | { readonly _tag: "Rcpt"; readonly recipient: Address.Mailbox; readonly params: Params.RcptParams }
  | { readonly _tag: "Data" }
  | { readonly _tag: "Bdat"; readonly size: number; readonly last: boolean }
  | { readonly _tag: "Rset" }
  | { readonly _tag: "Noop"; readonly text: string }
  | { readonly _tag: "Quit" }
  | { readonly _tag: "Vrfy"; readonly text: string }
  | { readonly _tag: "Help"; readonly text: string }
  | { readonly _tag: "StartTls" }
  | {
    readonly _tag: "Auth"
    /** Upper-cased SASL mechanism name. */
    readonly mechanism: string
    /** The initial response as sent (base64, or `"="` for an empty one); not decoded. */
    readonly initial: string | undefined
  }

/** The result of `parse`: a command, or the reply to send. */
export type ParseResult =
  | { readonly _tag: "Ok"; readonly command: Command }
  | { readonly _tag: "Error"; readonly reply: Reply.Reply }

/** Options of `parse`. */
export interface ParseOptions {
  /** Allow UTF-8 in addresses (default true; the session checks SMTPUTF8 itself). */
  readonly utf8?: boolean
}

const okCommand = (command: Command): ParseResult => ({ _tag: "Ok", command })
const fail = (reply: Reply.Reply): ParseResult => ({ _tag: "Error", reply })
const syntax = (text: string): ParseResult => fail(Reply.syntaxError(text))

/** `553 5.6.7` for a non-ASCII address without SMTPUTF8 (RFC 6531). */
export const nonAsciiAddress = Reply.make(553, "5.6.7", "Non-ASCII addresses require SMTPUTF8")

// Fixed commands, shared.
const DATA: Command = { _tag: "Data" }
const RSET: Command = { _tag: "Rset" }
const QUIT: Command = { _tag: "Quit" }
const STARTTLS: Command = { _tag: "StartTls" }

const NOT_IMPLEMENTED = new Set(["EXPN", "ETRN", "TURN", "ATRN", "SEND", "SOML", "SAML"])
const MECHANISM = /^[A-Z0-9_-]{1,20}$/
const BDAT_SIZE = /^[0-9]{1,20}$/

/** Splits arguments on runs of spaces. */
const words = (s: string): Array<string> => s.split(" ").filter((w) => w.length > 0)

/** Trims trailing spaces only (tabs and other controls are left for the checks). */
const trimEndSpaces = (s: string): string => {
  let end = s.length
  while (end > 0 && s.charCodeAt(end - 1) === 0x20) end--
  return end === s.length ? s : s.slice(0, end)
}

const hello = (tag: "Ehlo" | "Helo" | "Lhlo", verb: string, args: string): ParseResult => {
  const usage = `Syntax: ${verb} hostname`
  if (args.length === 0 || args.includes(" ")) return syntax(usage)
  const d = Address.parseDomain(args, { utf8: false, allowLiteral: true, allowUnderscore: true })
  return d._tag === "Ok" ? okCommand({ _tag: tag, domain: d.value }) : syntax(usage)
}

/**
 * Cuts `<path>` and the parameter tokens out of the MAIL/RCPT arguments after
 * the `FROM:` / `TO:` keyword; `undefined` when the framing is wrong.
 */
const pathAndParams = (
  args: string,
  keyword: string
): { readonly path: string; readonly tokens: ReadonlyArray<string> } | undefined => {
  if (args.length < keyword.length || !Address.equalsIgnoreCase(args.slice(0, keyword.length), keyword)) return undefined
  let i = keyword.length
  while (args.charCodeAt(i) === 0x20) i++
  const end = Address.pathEnd(args, i)
  if (end < 0) return undefined
  const rest = args.slice(end + 1)
  if (rest.length > 0 && rest.charCodeAt(0) !== 0x20) return undefined
  return { path: args.slice(i, end + 1), tokens: words(rest) }
}

const addressError = (base: Reply.Reply, message: string, utf8: boolean): ParseResult =>
  !utf8 && message === Address.NON_ASCII
    ? fail(nonAsciiAddress)
    : fail(Reply.withText(base, `${base.lines[0]}: ${message}`))

const mail = (args: string, utf8: boolean): ParseResult => {
  const parts = pathAndParams(args, "FROM:")
  if (parts === undefined) return syntax("Syntax: MAIL FROM:<address>")
  const sender = Address.parsePath(parts.path, { utf8, allowNull: true, allowPostmaster: false })
  if (sender._tag === "Error") return addressError(Reply.badSenderSyntax, sender.message, utf8)
  const params = Params.parseMail(parts.tokens)
  if (params._tag === "Error") return syntax(params.message)
  return okCommand({ _tag: "Mail", sender: sender.value, params: params.value })
}

const rcpt = (args: string, utf8: boolean): ParseResult => {
  const parts = pathAndParams(args, "TO:")
  if (parts === undefined) return syntax("Syntax: RCPT TO:<address>")
  const recipient = Address.parsePath(parts.path, { utf8, allowNull: false, allowPostmaster: true })
  if (recipient._tag === "Error") return addressError(Reply.badRecipientSyntax, recipient.message, utf8)
  if (recipient.value === null) return addressError(Reply.badRecipientSyntax, "null address not allowed", utf8)
  const params = Params.parseRcpt(parts.tokens)
  if (params._tag === "Error") return syntax(params.message)
  return okCommand({ _tag: "Rcpt", recipient: recipient.value, params: params.value })
}

const bdat = (args: string): ParseResult => {
  const usage = "Syntax: BDAT size [LAST]"
  const w = words(args)
  const size = w[0]
  if (size === undefined || w.length > 2 || !BDAT_SIZE.test(size)) return syntax(usage)
  const n = Number(size)
  if (!Number.isSafeInteger(n)) return syntax(usage)
  const last = w[1]
  if (last !== undefined && !Address.equalsIgnoreCase(last, "LAST")) return syntax(usage)
  return okCommand({ _tag: "Bdat", size: n, last: last !== undefined })
}

const auth = (args: string): ParseResult => {
  const usage = "Syntax: AUTH mechanism [initial-response]"
  const w = words(args)
  const mechanism = w[0]?.toUpperCase()
  if (mechanism === undefined || w.length > 2 || !MECHANISM.test(mechanism)) return syntax(usage)
  const initial = w[1]
  if (initial !== undefined && Address.checkCharacters(initial, false) !== undefined) return syntax(usage)
  return okCommand({ _tag: "Auth", mechanism, initial })
}

/** A command that takes no argument. */
const bare = (command: Command, verb: string, args: string): ParseResult =>
  args.length === 0 ? okCommand(command) : syntax(`Syntax: ${verb}`)

/** A command with free text (NOOP, HELP, VRFY): the text may not hold control characters. */
const text = (tag: "Noop" | "Help" | "Vrfy", usage: string, args: string, required: boolean): ParseResult => {
  if (required && args.length === 0) return syntax(usage)
  if (Address.checkCharacters(args, true) !== undefined) return syntax(usage)
  return okCommand({ _tag: tag, text: args })
}

/**
 * Parses one command line (without CRLF, already decoded from UTF-8). Never
 * throws; see the module header for the replies of malformed lines.
 *
 * @example
 * parse("MAIL FROM:<a@example.com> SIZE=10")
 * // { _tag: "Ok", command: { _tag: "Mail", sender: { local: "a", domain: "example.com" }, params: { ...size: 10 } } }
 */
export const parse = (line: string, options?: ParseOptions): ParseResult => {
  const utf8 = options?.utf8 ?? true
  const trimmed = trimEndSpaces(line)
  const sp = trimmed.indexOf(" ")
  const verb = (sp < 0 ? trimmed : trimmed.slice(0, sp)).toUpperCase()
  let a = sp < 0 ? trimmed.length : sp
  while (trimmed.charCodeAt(a) === 0x20) a++
  const args = trimmed.slice(a)
  switch (verb) {
    case "EHLO":
      return hello("Ehlo", verb, args)
    case "HELO":
      return hello("Helo", verb, args)
    case "LHLO":
      return hello("Lhlo", verb, args)
    case "MAIL":
      return mail(args, utf8)
    case "RCPT":
      return rcpt(args, utf8)
    case "DATA":
      return bare(DATA, verb, args)
    case "BDAT":
      return bdat(args)
    case "RSET":
      return bare(RSET, verb, args)
    case "NOOP":
      return text("Noop", "Syntax: NOOP [text]", args, false)
    case "QUIT":
      return bare(QUIT, verb, args)
    case "VRFY":
      return text("Vrfy", "Syntax: VRFY address", args, true)
    case "HELP":
      return text("Help", "Syntax: HELP [topic]", args, false)
    case "STARTTLS":
      return bare(STARTTLS, verb, args)
    case "AUTH":
      return auth(args)
    default:
      return fail(NOT_IMPLEMENTED.has(verb) ? Reply.notImplemented : Reply.unknownCommand)
  }
}

/**
 * Prints a command in its canonical form, without CRLF: `EHLO host`,
 * `MAIL FROM:<a@b> SIZE=10`, `RCPT TO:<x@y>`, `BDAT 100 LAST`,
 * `AUTH PLAIN dGVzdA==`, `NOOP`. `parse(print(c))` gives `c` back for every
 * well-formed command. It does not validate: check values that come from
 * untrusted sources (e.g. with `Address.validate`) before printing them.
 */
export const print = (c: Command): string => {
  switch (c._tag) {
    case "Ehlo":
      return `EHLO ${c.domain}`
    case "Helo":
      return `HELO ${c.domain}`
    case "Lhlo":
      return `LHLO ${c.domain}`
    case "Mail":
      return `MAIL FROM:${Address.printPath(c.sender)}${Params.printMail(c.params)}`
    case "Rcpt":
      return `RCPT TO:${Address.printPath(c.recipient)}${Params.printRcpt(c.params)}`
    case "Data":
      return "DATA"
    case "Bdat":
      return c.last ? `BDAT ${c.size} LAST` : `BDAT ${c.size}`
    case "Rset":
      return "RSET"
    case "Noop":
      return c.text.length > 0 ? `NOOP ${c.text}` : "NOOP"
    case "Quit":
      return "QUIT"
    case "Vrfy":
      return `VRFY ${c.text}`
    case "Help":
      return c.text.length > 0 ? `HELP ${c.text}` : "HELP"
    case "StartTls":
      return "STARTTLS"
    case "Auth":
      return c.initial !== undefined ? `AUTH ${c.mechanism} ${c.initial}` : `AUTH ${c.mechanism}`
  }
}
