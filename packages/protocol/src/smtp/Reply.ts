/**
 * SMTP replies: a `Reply` value (three-digit code, optional RFC 3463 enhanced
 * status code, one or more text lines), its wire encoding, and a catalogue of
 * the standard replies Mailroom sends.
 *
 * Decoding replies from bytes (the client side) lives in `wire/ReplyDecoder`.
 *
 * @since 0.1.0
 */
import * as Bytes from "../wire/Bytes.ts"

/**
 * An RFC 3463 enhanced status code, `class.subject.detail`, e.g. `"5.1.1"`.
 * The class is 2, 4 or 5 and agrees with the first digit of the reply code.
 */
export type EnhancedStatus = string

/** A reply, immutable. `lines` has at least one element (possibly `""`). */
export interface Reply {
  readonly code: number
  readonly enhanced: EnhancedStatus | undefined
  readonly lines: ReadonlyArray<string>
}

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}$/

/** True when `s` is a syntactically valid enhanced status code. */
export const isEnhancedStatus = (s: string): boolean => ENHANCED.test(s)

/**
 * Makes a reply. `text` may be one string (split on `\n`) or several lines.
 * A code outside 200-599 or an enhanced code whose class disagrees with the
 * code is a programming error and throws.
 */
export const make = (code: number, enhanced: EnhancedStatus | undefined, text: string | ReadonlyArray<string>): Reply => {
  if (!Number.isInteger(code) || code < 200 || code > 599) throw new RangeError(`invalid reply code ${code}`)
  if (enhanced !== undefined && (!ENHANCED.test(enhanced) || enhanced[0] !== String(code)[0])) {
    throw new RangeError(`enhanced status ${enhanced} does not fit reply code ${code}`)
  }
  const lines = typeof text === "string" ? text.split("\n") : text.length === 0 ? [""] : [...text]
  return { code, enhanced, lines }
}

/** The reply's class: 2 (positive), 3 (intermediate), 4 (transient) or 5 (permanent). */
export const klass = (r: Reply): 2 | 3 | 4 | 5 => Math.floor(r.code / 100) as 2 | 3 | 4 | 5
export const isPositive = (r: Reply): boolean => r.code >= 200 && r.code < 400
export const isTransient = (r: Reply): boolean => r.code >= 400 && r.code < 500
export const isPermanent = (r: Reply): boolean => r.code >= 500

/** The reply as one human-readable string: `550 5.1.1 No such user`. Lines joined by a space. */
export const toString = (r: Reply): string =>
  `${r.code}${r.enhanced ? " " + r.enhanced : ""} ${r.lines.join(" ")}`.trimEnd()

/** Replaces the text, keeping code and enhanced status. */
export const withText = (r: Reply, text: string | ReadonlyArray<string>): Reply => make(r.code, r.enhanced, text)

/**
 * Encodes a reply for the wire: every line but the last as `code-`, the last
 * as `code `, the enhanced code repeated on every line (RFC 2034), CRLF after
 * each. CR, LF and NUL inside a line are replaced by spaces so that a policy's
 * text can never forge a second reply.
 */
export const encodeString = (r: Reply): string => {
  let out = ""
  const n = r.lines.length
  for (let i = 0; i < n; i++) {
    const text = r.lines[i]!.replace(/[\r\n\0]/g, " ")
    const sep = i === n - 1 ? " " : "-"
    const body = r.enhanced ? (text.length > 0 ? `${r.enhanced} ${text}` : r.enhanced) : text
    out += body.length > 0 ? `${r.code}${sep}${body}\r\n` : `${r.code}${sep === " " ? "" : "-"}\r\n`
  }
  return out
}

/** Encodes a reply as UTF-8 bytes (see `encodeString`). */
export const encode = (r: Reply): Uint8Array => Bytes.fromString(encodeString(r))

// ---------------------------------------------------------------------------
// The catalogue. Texts follow Postfix and slimta where they are well known.
// ---------------------------------------------------------------------------

/** `220 <host> ESMTP <text>`: the banner. No enhanced code (RFC 2034 §4). */
export const banner = (hostname: string, text = "ESMTP Mailroom"): Reply => make(220, undefined, `${hostname} ${text}`)
/** `221 2.0.0 Bye`. */
export const bye = make(221, "2.0.0", "Bye")
/** `250 2.0.0 Ok`. */
export const ok = make(250, "2.0.0", "Ok")
/** `250 2.1.0 Sender ok`. */
export const senderOk = make(250, "2.1.0", "Sender ok")
/** `250 2.1.5 Recipient ok`. */
export const recipientOk = make(250, "2.1.5", "Recipient ok")
/** `354 End data with <CR><LF>.<CR><LF>`. */
export const startData = make(354, undefined, "End data with <CR><LF>.<CR><LF>")
/** `250 2.6.0 Message accepted for delivery`. */
export const accepted = make(250, "2.6.0", "Message accepted for delivery")
/** `250 2.6.0 Ok: queued as <id>`. */
export const queuedAs = (id: string): Reply => make(250, "2.6.0", `Ok: queued as ${id}`)
/** `250 2.0.0 <n> octets received` (BDAT chunk accepted). */
export const chunkOk = (n: number): Reply => make(250, "2.0.0", `${n} octets received`)
/** `220 2.0.0 Ready to start TLS`. */
export const readyToStartTls = make(220, "2.0.0", "Ready to start TLS")
/** `235 2.7.0 Authentication successful`. */
export const authSuccessful = make(235, "2.7.0", "Authentication successful")
/** `252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery`. */
export const cannotVrfy = make(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
/** `214 2.0.0 ...` help text. */
export const help = make(214, "2.0.0", "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)")

/** `421 4.3.0 <host> Service not available, closing transmission channel` (shutdown). */
export const serviceNotAvailable = (hostname: string): Reply =>
  make(421, "4.3.0", `${hostname} Service not available, closing transmission channel`)
/** `421 4.4.2 <host> Error: timeout exceeded`. */
export const timeout = (hostname: string): Reply => make(421, "4.4.2", `${hostname} Error: timeout exceeded`)
/** `421 4.7.0 <host> Error: too many errors`. */
export const tooManyErrors = (hostname: string): Reply => make(421, "4.7.0", `${hostname} Error: too many errors`)
/** `421 4.7.0 Too many connections`. */
export const tooManyConnections = make(421, "4.7.0", "Too many connections, try again later")
/** `421 4.3.0 Unhandled system error`. */
export const unhandledError = make(421, "4.3.0", "Unhandled system error")
/** `451 4.3.0 Error: queue file write error` (the queue failed). */
export const queueError = make(451, "4.3.0", "Error: queue file write error")
/** `452 4.3.1 Insufficient system storage`. */
export const insufficientStorage = make(452, "4.3.1", "Insufficient system storage")
/** `452 4.5.3 Error: too many recipients`. */
export const tooManyRecipients = make(452, "4.5.3", "Error: too many recipients")
/** `454 4.7.0 TLS not available due to local problem`. */
export const tlsNotAvailable = make(454, "4.7.0", "TLS not available due to local problem")
/** `454 4.7.0 Temporary authentication failure`. */
export const authTemporaryFailure = make(454, "4.7.0", "Temporary authentication failure")

/** `500 5.5.2 Error: command not recognized`. */
export const unknownCommand = make(500, "5.5.2", "Error: command not recognized")
/** `500 5.5.6 Error: line too long`. */
export const lineTooLong = make(500, "5.5.6", "Error: line too long")
/** `500 5.5.2 Error: bare <LF> received`. */
export const bareLineFeed = make(500, "5.5.2", "Error: bare <CR> or <LF> received")
/** `501 5.5.4 Syntax error in parameters or arguments`. */
export const syntaxError = (detail = "Syntax error in parameters or arguments"): Reply => make(501, "5.5.4", detail)
/** `501 5.5.2 Syntax error` for malformed base64 in AUTH. */
export const badBase64 = make(501, "5.5.2", "Error: malformed base64 in authentication exchange")
/** `501 5.7.0 Authentication cancelled`. */
export const authCancelled = make(501, "5.7.0", "Authentication cancelled")
/** `501 5.1.3 Bad recipient address syntax`. */
export const badRecipientSyntax = make(501, "5.1.3", "Bad recipient address syntax")
/** `501 5.1.7 Bad sender address syntax`. */
export const badSenderSyntax = make(501, "5.1.7", "Bad sender address syntax")
/** `502 5.5.1 Error: command not implemented`. */
export const notImplemented = make(502, "5.5.1", "Error: command not implemented")
/** `503 5.5.1 Error: bad sequence of commands` with a detail. */
export const badSequence = (detail = "Error: bad sequence of commands"): Reply => make(503, "5.5.1", detail)
/** `504 5.5.4 Unrecognized authentication type`. */
export const unknownAuthMechanism = make(504, "5.5.4", "Unrecognized authentication type")
/** `530 5.7.0 Must issue a STARTTLS command first`. */
export const mustStartTls = make(530, "5.7.0", "Must issue a STARTTLS command first")
/** `530 5.7.0 Authentication required`. */
export const authRequired = make(530, "5.7.0", "Authentication required")
/** `534 5.7.9 Authentication mechanism is too weak` (plaintext mechanism without TLS). */
export const mechanismTooWeak = make(534, "5.7.9", "Authentication mechanism is too weak")
/** `535 5.7.8 Authentication credentials invalid`. */
export const invalidCredentials = make(535, "5.7.8", "Authentication credentials invalid")
/** `550 5.7.1 Relaying denied`. */
export const relayDenied = make(550, "5.7.1", "Relaying denied")
/** `552 5.3.4 Message size exceeds fixed limit`. */
export const messageTooBig = make(552, "5.3.4", "Error: message size exceeds fixed limit")
/** `554 5.3.4 Message too big for system` at MAIL with SIZE=. */
export const declaredSizeTooBig = make(552, "5.3.4", "Error: message size exceeds fixed limit")
/** `554 5.5.0 Error: SMTP protocol synchronization`. */
export const syncError = make(554, "5.5.0", "Error: SMTP protocol synchronization")
/** `554 5.7.1 Rejected`. */
export const rejected = make(554, "5.7.1", "Rejected")
/** `555 5.5.4 Unsupported option: <param>`. */
export const unsupportedParameter = (name: string): Reply => make(555, "5.5.4", `Unsupported option: ${name}`)
/** `554 5.4.6 Routing loop detected` (too many Received headers). */
export const loopDetected = make(554, "5.4.6", "Too many hops")
