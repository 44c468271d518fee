/**
 * Delivery status notifications (RFC 3464): the bounce, delay warning or
 * success report the queue sends back to a message's sender, as a new
 * envelope ready to enqueue.
 *
 * `build` honours the DSN parameters of RFC 3461 that the client gave with
 * the original message: NOTIFY per recipient (which events are reported at
 * all), RET (whole message or headers only), ENVID and ORCPT (echoed so the
 * sender can match the report to what it sent). It never reports on a
 * message with the null sender (RFC 5321 §6.1: a bounce is never bounced).
 *
 * The report is a `multipart/report; report-type=delivery-status` (RFC 6522)
 * with three parts: a human-readable text in Postfix's wording, the
 * machine-readable `message/delivery-status`, and the original message
 * (`message/rfc822`) or its header block (`text/rfc822-headers`). When an
 * address in the report is not ASCII, or the original was sent with
 * SMTPUTF8 and has UTF-8 in its header block, the RFC 6533 types are used instead (`message/global-delivery-status`,
 * `message/global`, `message/global-headers`) and the report itself needs
 * SMTPUTF8.
 *
 * Every value that came from the network (recipients, reply texts, remote
 * host names, ENVID, ORCPT) is sanitized before it is written: no control
 * character survives, so nothing can end a field or a line early, and the
 * MIME boundary is checked against the whole content and regenerated until
 * it occurs nowhere in it.
 *
 * Pure: time and randomness are parameters.
 *
 * What it deliberately does not do: decide when to bounce (the queue does),
 * convert an 8-bit original to 7 bits, translate texts, or report the
 * `relayed` and `expanded` actions.
 *
 * @since 0.1.0
 */
import * as Envelope from "../envelope/Envelope.ts"
import * as Headers from "../envelope/Headers.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Bytes from "../wire/Bytes.ts"

/** One recipient to report on. */
export interface FailedRecipient {
  /** The address as it was in the envelope. */
  readonly recipient: string
  /** Its index in the original envelope's recipients (for its NOTIFY and ORCPT). */
  readonly index: number
  /** The reply that explains the outcome: the remote server's, or one of our own. */
  readonly reply: Reply.Reply
  /** The host that gave the reply, e.g. `"mx.example.com"`, when it was a remote one. */
  readonly remote?: string | undefined
  readonly action: "failed" | "delayed" | "delivered"
}

/** What kind of report to make; it sets the subject and the text. */
export type Kind = "failure" | "delay" | "success"

export interface Options {
  /** Our host name: `Reporting-MTA`, the `From` domain, the `Message-Id` domain. */
  readonly hostname: string
  /** The time of the report, ms since the epoch. */
  readonly now: number
  /** `random(n)` returns `n` random bytes (ids and the MIME boundary). */
  readonly random: (n: number) => Uint8Array
  readonly kind: Kind
  /** For delay warnings: how long the message has waited, ms (in the text). */
  readonly delayedFor?: number | undefined
  /** For delay warnings: until when it will be retried, ms since the epoch (`Will-Retry-Until`). */
  readonly willRetryUntil?: number | undefined
  /** A message larger than this is returned as headers only, even with RET=FULL. 10 MiB by default. */
  readonly maxReturnBytes?: number | undefined
}

/** 10 MiB: the default of `Options.maxReturnBytes`. */
export const defaultMaxReturnBytes = 10 * 1024 * 1024

/** The subject of each kind of report. */
export const subjects: { readonly [K in Kind]: string } = {
  failure: "Undelivered Mail Returned to Sender",
  delay: "Delayed Mail (still being retried)",
  success: "Successful Mail Delivery Report"
}

const keywordOf = (action: FailedRecipient["action"]): Envelope.NotifyKeyword =>
  action === "failed" ? "FAILURE" : action === "delayed" ? "DELAY" : "SUCCESS"

/**
 * True when a recipient's NOTIFY parameter asks for a report of `action`.
 * Without NOTIFY, failures and delays are reported and successes are not
 * (RFC 3461 §4.1 leaves DELAY to the implementation; Postfix reports it).
 * `NEVER` asks for nothing.
 */
export const notifies = (
  notify: ReadonlyArray<Envelope.NotifyKeyword> | undefined,
  action: FailedRecipient["action"]
): boolean => {
  const keyword = keywordOf(action)
  if (notify === undefined) return keyword !== "SUCCESS"
  return notify.includes(keyword)
}

// ---------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------

const NON_ASCII = /[^\x00-\x7f]/

/** Control characters (CR, LF, NUL, tab, DEL, C1) become spaces; runs of spaces stay. */
const clean = (s: string, max = 1000): string =>
  s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, " ").trim().slice(0, max)

/** A `Final-Recipient`-style value: `rfc822; a@b`, or `utf-8; …` for a non-ASCII address (RFC 6533). */
const typedAddress = (address: string): string => `${NON_ASCII.test(address) ? "utf-8" : "rfc822"}; ${clean(address)}`

/** A host name for `dns;` fields: printable ASCII (or UTF-8 letters) without spaces or specials. */
const hostText = (host: string): string => Headers.sanitizeToken(host, 255) || "localhost"

/**
 * Wraps one logical line of text at `width` columns before whitespace, the
 * continuation lines indented by four spaces (as Postfix's bounce texts); a
 * word longer than 900 characters is cut, so no line passes RFC 5322's 998.
 */
const wrap = (line: string, width = 76): ReadonlyArray<string> => {
  const words = line.split(" ").flatMap((w) => {
    const parts: Array<string> = []
    for (let i = 0; i < w.length; i += 900) parts.push(w.slice(i, i + 900))
    return parts.length === 0 ? [""] : parts
  })
  const out: Array<string> = []
  let cur = ""
  for (const w of words) {
    if (w === "") continue
    const indent = out.length === 0 ? "" : "    "
    if (cur !== "" && indent.length + cur.length + 1 + w.length > width) {
      out.push(indent + cur)
      cur = w
    } else {
      cur = cur === "" ? w : `${cur} ${w}`
    }
  }
  out.push((out.length === 0 ? "" : "    ") + cur)
  return out
}

/**
 * Formats a field of the report (`Name: value` CRLF), sanitized and folded
 * (see `Headers.formatField`); a physical line still longer than 998 octets
 * (one huge word) is folded hard.
 */
const field = (name: string, value: string): string =>
  Headers.formatField(name, value).split("\r\n").flatMap((l) => {
    if (l.length <= 900) return [l]
    const parts: Array<string> = []
    for (let i = 0; i < l.length; i += 900) parts.push(i === 0 ? l.slice(0, 900) : " " + l.slice(i, i + 900))
    return parts
  }).join("\r\n")

/** The status to report: the reply's enhanced code when it fits, else `X.0.0` from the reply (or action) class. */
export const statusOf = (r: FailedRecipient): string => {
  const cls = Math.floor(r.reply.code / 100)
  if (r.reply.enhanced !== undefined && Reply.isEnhancedStatus(r.reply.enhanced) && r.reply.enhanced[0] === String(cls)) {
    return r.reply.enhanced
  }
  if (cls === 2 || cls === 4 || cls === 5) return `${cls}.0.0`
  return r.action === "failed" ? "5.0.0" : r.action === "delayed" ? "4.0.0" : "2.0.0"
}

/** The diagnostic, `550 5.1.1 No such user`, sanitized, at most 1000 characters. */
const diagnostic = (reply: Reply.Reply): string => clean(Reply.toString(reply))

const duration = (ms: number): string => {
  const hours = ms / 3_600_000
  if (hours < 1) {
    const minutes = Math.max(0, Math.round(ms / 60_000))
    return `${minutes} minute${minutes === 1 ? "" : "s"}`
  }
  if (hours < 48) return `${hours.toFixed(1)} hours`
  return `${(hours / 24).toFixed(1)} days`
}

// ---------------------------------------------------------------------------
// The parts
// ---------------------------------------------------------------------------

const humanText = (original: Envelope.Envelope, listed: ReadonlyArray<FailedRecipient>, options: Options): string => {
  const host = hostText(options.hostname)
  const lines: Array<string> = [`This is the mail system at host ${host}.`, ""]
  switch (options.kind) {
    case "failure":
      lines.push(
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below."
      )
      break
    case "delay": {
      lines.push(
        "####################################################################",
        "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
        "####################################################################",
        ""
      )
      if (options.delayedFor !== undefined && Number.isFinite(options.delayedFor)) {
        lines.push(`Your message could not be delivered for ${duration(options.delayedFor)}.`)
      } else {
        lines.push("Your message could not be delivered yet.")
      }
      if (options.willRetryUntil !== undefined && Number.isFinite(options.willRetryUntil)) {
        lines.push(`It will be retried until it is ${duration(options.willRetryUntil - original.timestamp)} old.`)
      }
      break
    }
    case "success":
      lines.push(
        "Your message was successfully delivered to the destination(s)",
        "listed below. If the message was delivered to mailbox you will",
        "receive no further notifications. Otherwise you may still receive",
        "notifications of mail delivery errors from other systems."
      )
      break
  }
  if (options.kind !== "success") {
    lines.push(
      "",
      "For further assistance, please send mail to postmaster.",
      "",
      "If you do so, please include this problem report. You can",
      "delete your own text from the attached returned message."
    )
  }
  lines.push("", "                   The mail system", "")
  for (const r of listed) {
    const who = `<${clean(r.recipient)}>:`
    const remote = r.remote === undefined ? undefined : hostText(r.remote)
    const what = r.action === "delivered"
      ? remote === undefined ? `delivered: ${diagnostic(r.reply)}` : `delivery via ${remote}: ${diagnostic(r.reply)}`
      : remote === undefined ? diagnostic(r.reply) : `host ${remote} said: ${diagnostic(r.reply)}`
    lines.push(...wrap(`${who} ${what}`), "")
  }
  return lines.join("\r\n")
}

const deliveryStatus = (
  original: Envelope.Envelope,
  listed: ReadonlyArray<FailedRecipient>,
  options: Options
): string => {
  let out = field("Reporting-MTA", `dns; ${hostText(options.hostname)}`)
  if (original.id !== "") out += field("X-Mailroom-Queue-ID", Headers.sanitizeToken(original.id, 128))
  if (original.dsn.envid !== undefined) out += field("Original-Envelope-Id", clean(original.dsn.envid, 100))
  const c = original.client
  if (c.ehlo !== undefined || c.address !== undefined) {
    const name = Headers.sanitizeToken(c.ehlo ?? "") || "unknown"
    const literal = c.address === undefined ? undefined : Headers.addressLiteral(c.address)
    out += field("Received-From-MTA", literal === undefined ? `dns; ${name}` : `dns; ${name} ([${literal}])`)
  }
  out += field("Arrival-Date", Headers.date(original.timestamp))
  for (const r of listed) {
    out += "\r\n"
    const orcpt = original.dsn.orcpt[r.index]
    if (orcpt !== undefined) {
      out += field("Original-Recipient", `${Headers.sanitizeToken(orcpt.addrType, 64) || "rfc822"}; ${clean(orcpt.address)}`)
    }
    out += field("Final-Recipient", typedAddress(r.recipient))
    out += field("Action", r.action)
    out += field("Status", statusOf(r))
    if (r.remote !== undefined) out += field("Remote-MTA", `dns; ${hostText(r.remote)}`)
    out += field("Diagnostic-Code", `smtp; ${diagnostic(r.reply)}`)
    out += field("Last-Attempt-Date", Headers.date(options.now))
    if (r.action === "delayed" && options.willRetryUntil !== undefined && Number.isFinite(options.willRetryUntil)) {
      out += field("Will-Retry-Until", Headers.date(options.willRetryUntil))
    }
  }
  return out
}

// ---------------------------------------------------------------------------
// Assembly
// ---------------------------------------------------------------------------

const HEX = "0123456789abcdef"

const hex = (bytes: Uint8Array): string => {
  let s = ""
  for (const b of bytes) s += HEX[b >> 4]! + HEX[b & 15]!
  return s
}

/** True when `needle` occurs in `hay` (bytes). */
const containsBytes = (hay: Uint8Array, needle: Uint8Array): boolean => {
  const first = needle[0]!
  const last = hay.length - needle.length
  let i = hay.indexOf(first)
  while (i !== -1 && i <= last) {
    let j = 1
    while (j < needle.length && hay[i + j] === needle[j]) j++
    if (j === needle.length) return true
    i = hay.indexOf(first, i + 1)
  }
  return false
}

/**
 * A MIME boundary that occurs nowhere in `parts` (RFC 2046 §5.1.1): 24 hex
 * digits from `random`. When it occurs (a hostile original, or a random
 * source that repeats itself), another is made; after eight tries a counter
 * is added, so the search ends whatever `random` returns.
 */
const chooseBoundary = (parts: ReadonlyArray<Uint8Array>, random: (n: number) => Uint8Array): string => {
  for (let attempt = 0;; attempt++) {
    const b = `=_mailroom_${hex(random(12).subarray(0, 12))}${attempt >= 8 ? `_${attempt}` : ""}`
    const needle = Bytes.fromString(b)
    if (!parts.some((p) => containsBytes(p, needle))) return b
  }
}

/**
 * Builds the delivery status notification for `recipients` of `original`,
 * as an envelope from the null sender to the original sender, or
 * `undefined` when no report may be sent: the original sender is the null
 * sender `<>`, or no recipient's NOTIFY asks for a report of its action
 * (see `notifies`). Only the recipients whose NOTIFY asks are listed.
 *
 * The whole original message is returned in a failure report unless the
 * client gave RET=HDRS or the message is larger than `maxReturnBytes`; delay
 * warnings and success reports return the header block only (RFC 3461 §4.3
 * makes RET about failed DSNs; Postfix does the same).
 *
 * The report's envelope: a new id (`Envelope.newId`), client facts of a
 * local submission (no address, protocol `LOCAL`), `receiver` and timestamp
 * from the options, BODY=8BITMIME when the returned content has 8-bit bytes
 * (BINARYMIME when the original was BINARYMIME and is returned whole),
 * SMTPUTF8 when an address is not ASCII or the original's header block
 * is (under SMTPUTF8), and
 * REQUIRETLS when the original asked for it (RFC 8689: the report carries
 * its content). `index` out of range of the original's recipients is a
 * programming error (`RangeError`).
 */
export const build = (
  original: Envelope.Envelope,
  recipients: ReadonlyArray<FailedRecipient>,
  options: Options
): Envelope.Envelope | undefined => {
  if (original.sender === "") return undefined
  for (const r of recipients) {
    if (!Number.isInteger(r.index) || r.index < 0 || r.index >= original.recipients.length) {
      throw new RangeError(`recipient index ${r.index} out of range 0..${original.recipients.length - 1}`)
    }
  }
  const listed = recipients.filter((r) => notifies(original.dsn.notify[r.index], r.action))
  if (listed.length === 0) return undefined

  // RFC 6533: UTF-8 addresses, or UTF-8 in the header block of an SMTPUTF8 original
  const global = NON_ASCII.test(original.sender) ||
    listed.some((r) => NON_ASCII.test(r.recipient) || NON_ASCII.test(original.dsn.orcpt[r.index]?.address ?? "")) ||
    (original.smtputf8 && Envelope.has8Bit(original.message.subarray(0, Headers.headerBlockEnd(original.message))))

  // the parts' contents
  const text = humanText(original, listed, options)
  const textBytes = Bytes.fromString(text)
  const textIs8Bit = NON_ASCII.test(text)
  const status = Bytes.fromString(deliveryStatus(original, listed, options))
  const maxReturn = options.maxReturnBytes ?? defaultMaxReturnBytes
  const whole = options.kind === "failure" && original.dsn.ret !== "HDRS" && original.message.length <= maxReturn
  const returned = whole ? original.message : original.message.subarray(0, Headers.headerBlockEnd(original.message))
  const returnedIs8Bit = Envelope.has8Bit(returned)
  const binary = whole && original.body === "BINARYMIME"
  const statusIs8Bit = Envelope.has8Bit(status)

  const boundary = chooseBoundary([textBytes, status, returned], options.random)
  const returnedType = whole
    ? global ? "message/global" : "message/rfc822"
    : global ? "message/global-headers" : "text/rfc822-headers"
  const returnedCte = binary ? "binary" : returnedIs8Bit ? "8bit" : "7bit"
  const topCte = binary ? "binary" : returnedIs8Bit || textIs8Bit || statusIs8Bit ? "8bit" : "7bit"

  const host = hostText(options.hostname)
  const sender = clean(original.sender)
  let head = ""
  head += field("From", `Mail Delivery System <MAILER-DAEMON@${host}>`)
  head += field("To", `<${sender}>`)
  head += field("Subject", subjects[options.kind])
  head += field("Date", Headers.date(options.now))
  head += field("Message-Id", Headers.messageId(options.random, options.now, host))
  head += field("Auto-Submitted", "auto-replied")
  head += field("MIME-Version", "1.0")
  head += field("Content-Type", `multipart/report; report-type=delivery-status; boundary="${boundary}"`)
  head += field("Content-Transfer-Encoding", topCte)
  head += "\r\nThis is a MIME-encapsulated message.\r\n\r\n"

  const part1 = `--${boundary}\r\n` +
    field("Content-Description", "Notification") +
    field("Content-Type", `text/plain; charset=${textIs8Bit ? "utf-8" : "us-ascii"}`) +
    (textIs8Bit ? field("Content-Transfer-Encoding", "8bit") : "") +
    "\r\n"
  const part2 = `\r\n--${boundary}\r\n` +
    field("Content-Description", "Delivery report") +
    field("Content-Type", global ? "message/global-delivery-status" : "message/delivery-status") +
    (statusIs8Bit ? field("Content-Transfer-Encoding", "8bit") : "") +
    "\r\n"
  const description = whole
    ? options.kind === "failure" ? "Undelivered Message" : "Message"
    : options.kind === "failure" ? "Undelivered Message Headers" : "Message Headers"
  const part3 = `\r\n--${boundary}\r\n` +
    field("Content-Description", description) +
    field("Content-Type", returnedType) +
    field("Content-Transfer-Encoding", returnedCte) +
    "\r\n"
  const end = `\r\n--${boundary}--\r\n`

  const message = Bytes.concat([
    Bytes.fromString(head + part1),
    textBytes,
    Bytes.fromString(part2),
    status,
    Bytes.fromString(part3),
    returned,
    Bytes.fromString(end)
  ])

  return Envelope.make({
    id: Envelope.newId(options.random, options.now),
    sender: "",
    recipients: [original.sender],
    message,
    client: { ...Envelope.unknownClient, protocol: "LOCAL" },
    receiver: host,
    timestamp: options.now,
    body: binary ? "BINARYMIME" : Envelope.has8Bit(message) ? "8BITMIME" : undefined,
    smtputf8: global,
    requireTls: original.requireTls
  })
}
