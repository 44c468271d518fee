/**
 * The HTTP relay: delivers an envelope by POSTing it to an HTTP endpoint that
 * speaks slimta's HTTP edge protocol (slimta's `HttpRelay`; Mailroom's own
 * HTTP edge is such an endpoint), through the web-standard `fetch`.
 *
 * The request: `POST <url>`, `Content-Type: message/rfc822`, the message as
 * the body (with its `Content-Length`), `X-Ehlo: <ehlo>`,
 * `X-Envelope-Sender: <base64 of the UTF-8 sender>` and one
 * `X-Envelope-Recipient: <base64>` per recipient. (`fetch` joins repeated
 * fields into one `a, b` line, as the Fetch standard says; slimta's edge and
 * Mailroom's split the value on commas, and base64 has none.)
 *
 * The response, the same for every recipient:
 * - 2xx: delivered; the reply is the `X-Smtp-Reply` one when it parses with a
 *   2xx code, else `250 2.0.0 Delivered (HTTP <status>)`;
 * - not 2xx, with a parsable `X-Smtp-Reply`: that reply decides (5xx
 *   permanent, 4xx transient; any other code is taken as transient `451
 *   4.3.0` with its text);
 * - not 2xx, without one: HTTP 4xx is permanent `550 5.0.0 HTTP <status>
 *   <reason>`, anything else transient `450 4.0.0 HTTP <status> <reason>`
 *   (slimta's rule);
 * - the request fails (refused, reset, DNS): transient `451 4.4.1`; it
 *   outlives `timeoutMs` (which covers the whole exchange): transient `421
 *   4.4.2 Connection timed out`.
 *
 * `X-Smtp-Reply` (`250; message="2.6.0 Message accepted"; command="DATA"`)
 * is parsed leniently and never throws: see `parseSmtpReply`.
 *
 * What this module deliberately does not do: connection pooling (the
 * runtime's `fetch` keeps connections alive), TLS settings (the runtime's
 * defaults verify certificates), authentication other than the extra
 * `headers` given, or retries (the queue retries).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Envelope from "../envelope/Envelope.ts"
import * as Base64 from "../auth/Base64.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Bytes from "../wire/Bytes.ts"
import { sanitizeText } from "./PipeRelay.ts"
import * as Relay from "./Relay.ts"

/** The `fetch` the relay uses: the web-standard signature. */
export type Fetch = (input: string | URL, init: RequestInit) => Promise<Response>

/** HTTP relay settings. */
export interface Options {
  /** The endpoint, `http:` or `https:`. */
  readonly url: string | URL
  /** Sent as `X-Ehlo` (CR, LF and other control characters removed). */
  readonly ehlo: string
  /** Limit for the whole exchange, ms. Default 60 000. */
  readonly timeoutMs?: number | undefined
  /** Default: the runtime's `globalThis.fetch`, looked up when an attempt runs. */
  readonly fetch?: Fetch | undefined
  /** Extra request headers (e.g. `Authorization`). */
  readonly headers?: Readonly<Record<string, string>> | undefined
}

// ---------------------------------------------------------------------------
// X-Smtp-Reply
// ---------------------------------------------------------------------------

/** The fields of an `X-Smtp-Reply` header value. */
export interface SmtpReplyHeader {
  readonly code: number
  readonly message: string | undefined
  readonly command: string | undefined
}

const CODE = /^\s*(\d{3})\s*(?:;|$)/
const PARAM = /(?:^|[\s;])(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"/g

/**
 * Parses an `X-Smtp-Reply` value: a three-digit code, then `;` and
 * `name="value"` parameters (`message`, `command`; `\"` and `\\` escapes
 * honoured). `undefined` when there is no code. Control characters (CR, LF
 * included) are removed from values. Never throws.
 */
export const parseSmtpReplyHeader = (value: string | null | undefined): SmtpReplyHeader | undefined => {
  if (typeof value !== "string") return undefined
  const m = CODE.exec(value)
  if (m === null) return undefined
  let message: string | undefined
  let command: string | undefined
  const rest = value.slice(m[0].length)
  for (const p of rest.matchAll(PARAM)) {
    const name = p[1]!.toLowerCase()
    const v = p[2]!.replace(/\\(.)/g, "$1")
    if (name === "message" && message === undefined) message = sanitizeText(v, 500)
    else if (name === "command" && command === undefined) command = sanitizeText(v, 64)
  }
  return { code: Number(m[1]), message, command }
}

/**
 * The reply an `X-Smtp-Reply` value stands for, or `undefined` when it does
 * not parse or its code is outside 200-599. A message starting with an
 * enhanced status code of the code's class (`2.6.0 ...`) gives the reply's
 * enhanced code. Never throws.
 */
export const parseSmtpReply = (value: string | null | undefined): Reply.Reply | undefined => {
  const h = parseSmtpReplyHeader(value)
  if (h === undefined || h.code < 200 || h.code > 599) return undefined
  const text = h.message ?? ""
  const m = /^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)/.exec(text)
  if (m !== null && m[1]![0] === String(h.code)[0]) return Reply.make(h.code, m[1], text.slice(m[0].length))
  return Reply.make(h.code, undefined, text)
}

/**
 * Formats a reply as an `X-Smtp-Reply` value, `250; message="2.6.0 text"`
 * (what slimta's edge sends), with an optional `command`. Quotes and
 * backslashes in the text are escaped; line breaks become spaces.
 */
export const formatSmtpReply = (reply: Reply.Reply, command?: string): string => {
  const quote = (s: string): string => `"${sanitizeText(s, 1000).replace(/["\\]/g, "\\$&")}"`
  const text = `${reply.enhanced !== undefined ? reply.enhanced + " " : ""}${reply.lines.join(" ")}`
  return `${reply.code}; message=${quote(text)}${command !== undefined ? `; command=${quote(command)}` : ""}`
}

// ---------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------

const statusText = (response: Response): string =>
  sanitizeText(`HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`)

/** The reply for an HTTP response (see the module header). */
export const classify = (response: Response): Reply.Reply => {
  const smtp = parseSmtpReply(response.headers.get("x-smtp-reply"))
  if (response.status >= 200 && response.status < 300) {
    return smtp !== undefined && smtp.code < 300 ? smtp : Reply.make(250, "2.0.0", `Delivered (${statusText(response)})`)
  }
  if (smtp !== undefined) {
    if (smtp.code >= 400) return smtp
    return Reply.make(451, "4.3.0", smtp.lines.join(" ") || statusText(response))
  }
  return response.status >= 400 && response.status < 500
    ? Reply.make(550, "5.0.0", statusText(response))
    : Reply.make(450, "4.0.0", statusText(response))
}

/** `421 4.4.2 Connection timed out`. */
export const timedOut = Reply.make(421, "4.4.2", "Connection timed out")

/** `451 4.4.1 Connection failed: <reason>` for a request that failed. */
export const connectionFailed = (cause: unknown): Reply.Reply => {
  // undici puts the errno (ECONNREFUSED, ...) on `cause.code`
  const field = (u: unknown, name: string): unknown =>
    typeof u === "object" && u !== null && name in u ? (u as Record<string, unknown>)[name] : undefined
  const text = (u: unknown): string | undefined => (typeof u === "string" && u !== "" ? u : undefined)
  const inner = field(cause, "cause")
  const what = text(field(inner, "code")) ?? text(field(inner, "message")) ?? text(field(cause, "code")) ??
    text(field(cause, "message")) ?? "network error"
  return Reply.make(451, "4.4.1", `Connection failed: ${sanitizeText(what, 100) || "network error"}`)
}

// ---------------------------------------------------------------------------
// The relay
// ---------------------------------------------------------------------------

const utf8Base64 = (s: string): string => Base64.encode(Bytes.fromString(s))

const cleanHeaderValue = (s: string): string => sanitizeText(s, 255)

/**
 * An HTTP relay. An unparsable `url` is a configuration error and throws
 * `TypeError` here, not at delivery time.
 */
export const make = (options: Options): Relay.Relay["Service"] => {
  const url = new URL(options.url)
  const timeoutMs = options.timeoutMs ?? 60_000
  const remote = `http; ${url.host}`
  const ehlo = cleanHeaderValue(options.ehlo)

  const post = (envelope: Envelope.Envelope): Effect.Effect<Reply.Reply> => {
    const headers = new Headers()
    for (const [k, v] of Object.entries(options.headers ?? {})) headers.set(k, cleanHeaderValue(v))
    headers.set("Content-Type", "message/rfc822")
    headers.set("X-Ehlo", ehlo)
    headers.set("X-Envelope-Sender", utf8Base64(envelope.sender))
    for (const r of envelope.recipients) headers.append("X-Envelope-Recipient", utf8Base64(r))
    const fetchFn: Fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init))
    const body = envelope.message as Uint8Array<ArrayBuffer>
    return Effect.tryPromise({
      try: async (signal) => {
        const response = await fetchFn(url, { method: "POST", headers, body, signal, redirect: "manual" })
        // the body is not needed, and an endpoint could send a huge one: drop it unread
        await response.body?.cancel().catch(() => undefined)
        return response
      },
      catch: (cause) => cause
    }).pipe(
      Effect.map(classify),
      Effect.timeoutOption(timeoutMs),
      Effect.map(Option.getOrElse(() => timedOut)),
      Effect.catch((cause) => Effect.succeed(connectionFailed(cause)))
    )
  }

  return {
    attempt: (envelope) =>
      envelope.recipients.length === 0
        ? Effect.succeed({ recipients: [], remote, tls: undefined })
        : Effect.map(post(envelope), (reply) => Relay.all(envelope, reply, remote))
  }
}

/** `make` as a layer providing `Relay`. */
export const layer = (options: Options): Layer.Layer<Relay.Relay> => Layer.succeed(Relay.Relay)(make(options))
