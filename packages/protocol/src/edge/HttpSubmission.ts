/**
 * What an HTTP request asks the HTTP edge to send, parsed and checked: the
 * envelope headers of slimta's protocol (base64 of UTF-8 addresses), and
 * the JSON bodies of `POST /send` (a raw message, or parts composed into a
 * MIME message with `Mime`), into a `Submission` of sender, recipients and
 * message bytes. Every problem is a `Problem` whose message says which
 * field is wrong; the edge answers it with 400.
 *
 * What it deliberately does not do: HTTP (statuses, headers, bodies) or
 * policies; `HttpEdge` does those.
 *
 * @since 0.1.0
 */
import * as Base64 from "../auth/Base64.ts"
import * as Mime from "../envelope/Mime.ts"
import * as Address from "../smtp/Address.ts"
import * as Bytes from "../wire/Bytes.ts"

/** A bad request: what is wrong, naming the field. */
export class Problem {
  readonly _tag = "Problem"
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

/** Strict UTF-8 decoding: `undefined` for invalid bytes. */
export const decodeUtf8 = (bytes: Uint8Array): string | undefined => {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes)
  } catch {
    return undefined
  }
}

/** Decodes a header value: strict base64 of UTF-8 text. */
export const base64Text = (value: string, what: string): string | Problem => {
  const bytes = Base64.decode(value.trim())
  if (bytes === undefined) return new Problem(`${what}: malformed base64`)
  const text = decodeUtf8(bytes)
  return text === undefined ? new Problem(`${what}: not UTF-8`) : text
}

/** Parses an address given without angle brackets; `""` is the null sender when `allowNull`. */
export const parseAddress = (text: string, allowNull: boolean, what: string): Address.Mailbox | null | Problem => {
  if (hasControl(text)) return new Problem(`${what}: control characters`)
  const r = Address.parsePath(`<${text.trim()}>`, { utf8: true, allowNull, allowPostmaster: !allowNull })
  return r._tag === "Ok" ? r.value : new Problem(`${what}: ${r.message}`)
}

/** True when `s` holds CR, LF or NUL. */
export const hasControl = (s: string): boolean => /[\r\n\0]/.test(s)

/** Bare LF and bare CR become CRLF; the message ends with CRLF. */
export const normalizeLineEnds = (b: Uint8Array): Uint8Array => {
  let extra = 0
  for (let i = 0; i < b.length; i++) {
    const c = b[i]
    if (c === 0x0a && (i === 0 || b[i - 1] !== 0x0d)) extra++
    else if (c === 0x0d && b[i + 1] !== 0x0a) extra++
  }
  const endsWell = b.length >= 2 && b[b.length - 2] === 0x0d && b[b.length - 1] === 0x0a
  const endsBare = b.length >= 1 && (b[b.length - 1] === 0x0a || b[b.length - 1] === 0x0d)
  const tail = b.length === 0 || endsWell || endsBare ? 0 : 2
  if (extra === 0 && tail === 0) return b
  const out = new Uint8Array(b.length + extra + tail)
  let j = 0
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!
    if (c === 0x0a && (i === 0 || b[i - 1] !== 0x0d)) {
      out[j++] = 0x0d
      out[j++] = 0x0a
    } else if (c === 0x0d && b[i + 1] !== 0x0a) {
      out[j++] = 0x0d
      out[j++] = 0x0a
    } else out[j++] = c
  }
  if (tail) {
    out[j++] = 0x0d
    out[j++] = 0x0a
  }
  return out
}

/** What a request asks to send, before policies. */
export interface Submission {
  readonly sender: Address.Mailbox | null
  readonly recipients: ReadonlyArray<Address.Mailbox>
  readonly message: Uint8Array
}

type JsonMailbox = string | { readonly name?: unknown; readonly address?: unknown }

const parseJsonMailbox = (v: unknown, what: string): Mime.Mailbox | Problem => {
  if (typeof v === "string") {
    if (hasControl(v)) return new Problem(`${what}: control characters`)
    const m = /^\s*(.*?)\s*<([^<>]*)>\s*$/s.exec(v)
    if (!m) return { address: v.trim() }
    const name = m[1]!.replace(/^"(.*)"$/s, "$1").replace(/\\(.)/g, "$1")
    return name.length > 0 ? { name, address: m[2]!.trim() } : { address: m[2]!.trim() }
  }
  if (typeof v === "object" && v !== null && typeof (v as { address?: unknown }).address === "string") {
    const o = v as { name?: unknown; address: string }
    if (o.name !== undefined && typeof o.name !== "string") return new Problem(`${what}: name must be a string`)
    if (hasControl(o.address) || (typeof o.name === "string" && hasControl(o.name))) {
      return new Problem(`${what}: control characters`)
    }
    return typeof o.name === "string" && o.name.length > 0 ? { name: o.name, address: o.address } : { address: o.address }
  }
  return new Problem(`${what}: expected an address`)
}

const list = (v: unknown): ReadonlyArray<JsonMailbox> | undefined =>
  v === undefined ? [] : Array.isArray(v) ? v : typeof v === "string" || (typeof v === "object" && v !== null) ? [v as JsonMailbox] : undefined

const checkMailbox = (m: Mime.Mailbox, what: string): Address.Mailbox | Problem => {
  const a = parseAddress(m.address, false, what)
  if (a instanceof Problem) return a
  return a!
}

const ALLOWED_JSON_KEYS = new Set([
  "sender", "recipients", "raw", "encoding", "from", "to", "cc", "bcc", "replyTo", "subject", "text", "html", "attachments"
])

/**
 * Reads a parsed JSON body into a submission: `{ sender, recipients, raw, encoding? }`,
 * or parts that `compose` turns into a MIME message (`sender` defaults to `from`;
 * recipients are `to`, `cc` and `bcc`, and `bcc` is not written).
 */
export const fromJson = (
  value: unknown,
  compose: (m: Omit<Mime.Message, "date" | "messageId" | "random">) => Uint8Array | Mime.ComposeError
): Submission | Problem => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return new Problem("expected a JSON object")
  const o = value as Record<string, unknown>
  for (const k of Object.keys(o)) if (!ALLOWED_JSON_KEYS.has(k)) return new Problem(`unknown field ${JSON.stringify(k)}`)
  if (o["raw"] !== undefined) {
    if (typeof o["raw"] !== "string") return new Problem("raw: expected a string")
    if (typeof o["sender"] !== "string") return new Problem("sender: expected a string")
    const sender = parseAddress(o["sender"], true, "sender")
    if (sender instanceof Problem) return sender
    const rcpts = o["recipients"]
    if (!Array.isArray(rcpts) || rcpts.some((r) => typeof r !== "string")) {
      return new Problem("recipients: expected an array of strings")
    }
    const recipients: Array<Address.Mailbox> = []
    for (const r of rcpts as Array<string>) {
      const a = parseAddress(r, false, "recipient")
      if (a instanceof Problem) return a
      recipients.push(a!)
    }
    let message: Uint8Array
    if (o["encoding"] === "base64") {
      const b = Base64.decode(o["raw"].replace(/\s+/g, ""))
      if (b === undefined) return new Problem("raw: malformed base64")
      message = b
    } else if (o["encoding"] === undefined || o["encoding"] === "utf8") {
      message = Bytes.fromString(o["raw"])
    } else return new Problem("encoding: expected \"base64\" or \"utf8\"")
    return { sender, recipients, message }
  }
  const from = parseJsonMailbox(o["from"], "from")
  if (from instanceof Problem) return from
  const fromAddr = checkMailbox(from, "from")
  if (fromAddr instanceof Problem) return fromAddr
  const groups: Record<"to" | "cc" | "bcc", Array<Mime.Mailbox>> = { to: [], cc: [], bcc: [] }
  const recipients: Array<Address.Mailbox> = []
  for (const key of ["to", "cc", "bcc"] as const) {
    const l = list(o[key])
    if (!l) return new Problem(`${key}: expected an address or a list of addresses`)
    for (const item of l) {
      const m = parseJsonMailbox(item, key)
      if (m instanceof Problem) return m
      const a = checkMailbox(m, key)
      if (a instanceof Problem) return a
      groups[key].push(m)
      recipients.push(a)
    }
  }
  let replyTo: Mime.Mailbox | undefined
  if (o["replyTo"] !== undefined) {
    const m = parseJsonMailbox(o["replyTo"], "replyTo")
    if (m instanceof Problem) return m
    const a = checkMailbox(m, "replyTo")
    if (a instanceof Problem) return a
    replyTo = m
  }
  if (typeof o["subject"] !== "string") return new Problem("subject: expected a string")
  for (const k of ["text", "html"] as const) {
    if (o[k] !== undefined && typeof o[k] !== "string") return new Problem(`${k}: expected a string`)
  }
  const attachments: Array<Mime.Attachment> = []
  if (o["attachments"] !== undefined) {
    if (!Array.isArray(o["attachments"])) return new Problem("attachments: expected an array")
    for (const [i, a] of (o["attachments"] as Array<unknown>).entries()) {
      const at = a as { filename?: unknown; contentType?: unknown; content?: unknown } | null
      if (typeof at !== "object" || at === null || typeof at.filename !== "string" || typeof at.content !== "string") {
        return new Problem(`attachments[${i}]: expected { filename, contentType?, content }`)
      }
      if (at.contentType !== undefined && typeof at.contentType !== "string") {
        return new Problem(`attachments[${i}].contentType: expected a string`)
      }
      const content = Base64.decode(at.content.replace(/\s+/g, ""))
      if (content === undefined) return new Problem(`attachments[${i}].content: malformed base64`)
      attachments.push({ filename: at.filename, contentType: at.contentType as string | undefined, content })
    }
  }
  let sender: Address.Mailbox | null = fromAddr
  if (o["sender"] !== undefined) {
    if (typeof o["sender"] !== "string") return new Problem("sender: expected a string")
    const s = parseAddress(o["sender"], true, "sender")
    if (s instanceof Problem) return s
    sender = s
  }
  const message = compose({
    from,
    to: groups.to,
    cc: groups.cc,
    replyTo,
    subject: o["subject"],
    text: o["text"] as string | undefined,
    html: o["html"] as string | undefined,
    attachments
  })
  if (message instanceof Mime.ComposeError) return new Problem(message.message)
  return { sender, recipients, message }
}
