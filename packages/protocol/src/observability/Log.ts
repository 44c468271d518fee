/**
 * Structured logs: one record per event (a session, a message, a delivery
 * attempt), written as one line of logfmt or JSON, and an Effect `Logger`
 * that turns `Effect.log*` calls and their annotations into such lines.
 *
 * ```text
 * ts=2025-01-02T03:04:05.000Z level=info event=message client=192.0.2.1 ehlo="mx .example" tls=TLSv1.3 sender=a@example.com recipients=b@example.net size=1234 queue_id=01J... reply="250 2.6.0 Ok: queued as 01J..."
 * ```
 *
 * Every value that came from the network (EHLO names, addresses, reverse DNS
 * names, reply texts, Message-IDs) may carry CR, LF or other control
 * characters meant to forge a second log line. Both formats escape them, so
 * a record is always exactly one line (`\n`, `\r`, `\t`, `\"`, `\\`, and
 * `\uXXXX` for other C0/C1 controls, DEL, U+2028/U+2029 line separators and
 * bidirectional overrides). Long values are cut at `maxValueLength`.
 *
 * logfmt rules: a value is written bare when it is printable ASCII without
 * space, `"`, `=` or `\`; otherwise it is double-quoted with the escapes
 * above. Keys are reduced to `[A-Za-z0-9_.-]`. `undefined` and `null` fields
 * are left out. Arrays of simple values are joined with `,`; other objects
 * are written as JSON. Dates are ISO 8601. An SMTP `Reply` prints as
 * `250 2.0.0 Ok`.
 *
 * What this module deliberately does not do: write anywhere (a `sink`
 * function receives each line; `NodeLog` in the Node adapter writes to
 * stdout/stderr), buffer, rotate, or read the clock (Effect's logger passes
 * the time).
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as LogLevel from "effect/LogLevel"
import * as Redacted from "effect/Redacted"
import * as References from "effect/References"

/** Mailroom's log levels (the config file's `log.level`). */
export type Level = "debug" | "info" | "warning" | "error"

/** Output format (the config file's `log.format`). */
export type Format = "logfmt" | "json"

/** One structured record. `fields` keep their order. */
export interface LogRecord {
  readonly ts: Date
  readonly level: Level
  readonly event: string
  readonly fields: ReadonlyArray<readonly [string, unknown]>
}

/** Formatting options. */
export interface FormatOptions {
  /** Longest value kept, in UTF-16 code units; longer values are cut and marked `...`. Default 1024. */
  readonly maxValueLength?: number | undefined
}

const DEFAULT_MAX = 1024

// ---------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------

// C0, DEL, C1, line/paragraph separators, bidi embeddings/overrides/isolates, BOM, lone surrogates.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

const hex4 = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`

const escapeChar = (c: string): string => {
  switch (c) {
    case "\n":
      return "\\n"
    case "\r":
      return "\\r"
    case "\t":
      return "\\t"
    default:
      return hex4(c)
  }
}

/** Escapes a string for use inside double quotes: `\`, `"`, and every unsafe character. */
export const escape = (s: string): string => s.replace(/[\\"]/g, (c) => `\\${c}`).replace(UNSAFE, escapeChar)

const BARE = /^[\x21\x23-\x3c\x3e-\x5b\x5d-\x7e]+$/

const truncate = (s: string, max: number): string => {
  if (s.length <= max) return s
  // Do not split a surrogate pair.
  const cut = /[\ud800-\udbff]/.test(s[max - 1] ?? "") ? max - 1 : max
  return `${s.slice(0, cut)}...`
}

/** Writes one logfmt value: bare when safe, otherwise quoted and escaped. */
export const logfmtValue = (s: string): string => BARE.test(s) ? s : `"${escape(s)}"`

const KEY_SAFE = /^[A-Za-z0-9_.-]+$/

/** Reduces a key to the characters logfmt readers accept. */
export const logfmtKey = (key: string): string => {
  if (KEY_SAFE.test(key)) return key
  const k = key.replace(/[^A-Za-z0-9_.-]/g, "_")
  return k === "" ? "_" : k
}

const isReply = (u: object): u is { code: number; enhanced: string | undefined; lines: ReadonlyArray<string> } =>
  typeof (u as { code?: unknown }).code === "number" && Array.isArray((u as { lines?: unknown }).lines)

const jsonSafe = (u: unknown): string => {
  try {
    return JSON.stringify(u, (_k, v: unknown) => typeof v === "bigint" ? String(v) : Redacted.isRedacted(v) ? "<redacted>" : v) ??
      String(u)
  } catch {
    return String(u)
  }
}

/**
 * Renders a field value as text (before quoting), or `undefined` to leave the
 * field out: strings as they are, numbers and booleans with `String`, dates in
 * ISO 8601, replies as `code enhanced text`, arrays of simple values joined
 * with `,`, errors as their message, other objects as JSON.
 */
export const valueText = (u: unknown): string | undefined => {
  switch (typeof u) {
    case "undefined":
      return undefined
    case "string":
      return u
    case "number":
    case "boolean":
    case "bigint":
      return String(u)
    case "symbol":
    case "function":
      return String(u)
    case "object": {
      if (u === null) return undefined
      if (Redacted.isRedacted(u)) return "<redacted>"
      if (u instanceof Date) return Number.isNaN(u.getTime()) ? "Invalid Date" : u.toISOString()
      if (u instanceof Error) return u.message === "" ? u.name : `${u.name}: ${u.message}`
      if (isReply(u)) return `${u.code}${u.enhanced ? " " + u.enhanced : ""} ${u.lines.join(" ")}`.trimEnd()
      if (Array.isArray(u) && u.every((x) => x === null || typeof x !== "object")) {
        return u.map((x) => valueText(x) ?? "").join(",")
      }
      return jsonSafe(u)
    }
  }
}

const RESERVED = new Set(["ts", "level", "event"])

/** One logfmt line (no trailing newline): `ts=... level=... event=... key=value ...`. */
export const logfmt = (r: LogRecord, options?: FormatOptions): string => {
  const max = options?.maxValueLength ?? DEFAULT_MAX
  let line = `ts=${r.ts.toISOString()} level=${r.level} event=${logfmtValue(truncate(r.event, max))}`
  for (const [key, value] of r.fields) {
    const text = valueText(value)
    if (text === undefined) continue
    line += ` ${logfmtKey(RESERVED.has(key) ? `${key}_` : key)}=${logfmtValue(truncate(text, max))}`
  }
  return line
}

// JSON.stringify already escapes C0 controls, quotes and lone surrogates; add the rest.
const JSON_EXTRA = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/g

/**
 * One JSON line (no trailing newline): `{"ts":...,"level":...,"event":...,...}`.
 * Field values are the same texts as in logfmt, except that numbers and
 * booleans stay JSON numbers and booleans.
 */
export const json = (r: LogRecord, options?: FormatOptions): string => {
  const max = options?.maxValueLength ?? DEFAULT_MAX
  const obj: Record<string, unknown> = { ts: r.ts.toISOString(), level: r.level, event: truncate(r.event, max) }
  for (const [key, value] of r.fields) {
    const k = RESERVED.has(key) ? `${key}_` : key
    if (typeof value === "number" && Number.isFinite(value)) obj[k] = value
    else if (typeof value === "boolean") obj[k] = value
    else {
      const text = valueText(value)
      if (text !== undefined) obj[k] = truncate(text, max)
    }
  }
  return JSON.stringify(obj).replace(JSON_EXTRA, hex4)
}

/** The formatter for a format. */
export const formatter = (format: Format): (r: LogRecord, options?: FormatOptions) => string =>
  format === "json" ? json : logfmt

// ---------------------------------------------------------------------------
// Effect Logger
// ---------------------------------------------------------------------------

/** Maps Effect's log levels to Mailroom's (Trace → debug, Fatal → error). */
export const fromEffectLevel = (level: LogLevel.LogLevel): Level => {
  switch (level) {
    case "Trace":
    case "Debug":
    case "All":
      return "debug"
    case "Info":
      return "info"
    case "Warn":
      return "warning"
    default:
      return "error"
  }
}

/** Maps Mailroom's log levels to Effect's minimum log level. */
export const toEffectLevel = (level: Level): LogLevel.LogLevel =>
  level === "debug" ? "Debug" : level === "info" ? "Info" : level === "warning" ? "Warn" : "Error"

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u) && Object.getPrototypeOf(u) === Object.prototype

const causeText = (cause: Cause.Cause<unknown>): string => {
  const e = Cause.squash(cause)
  if (e instanceof Error) {
    const tag = (e as { _tag?: unknown })._tag
    return `${typeof tag === "string" && tag !== e.name ? tag + " " : ""}${e.name}: ${e.message}`
  }
  return valueText(e) ?? "unknown error"
}

/**
 * Builds a record from what Effect passes a logger: the first string of the
 * message is the `event`; plain objects in the message add fields; other
 * parts go to `detail`; the fiber's log annotations come next; a failure
 * cause adds `error`.
 */
export const fromLoggerOptions = (options: Logger.Options<unknown>): LogRecord => {
  const parts: ReadonlyArray<unknown> = Array.isArray(options.message) ? options.message : [options.message]
  let event: string | undefined
  const fields: Array<readonly [string, unknown]> = []
  const detail: Array<string> = []
  for (const part of parts) {
    if (event === undefined && typeof part === "string") event = part
    else if (isPlainObject(part)) for (const [k, v] of Object.entries(part)) fields.push([k, v])
    else {
      const text = valueText(part)
      if (text !== undefined) detail.push(text)
    }
  }
  const annotations = options.fiber.getRef(References.CurrentLogAnnotations)
  for (const [k, v] of Object.entries(annotations)) fields.push([k, v])
  if (detail.length > 0) fields.push(["detail", detail.join(" ")])
  if (options.cause.reasons.length > 0) fields.push(["error", causeText(options.cause)])
  return { ts: options.date, level: fromEffectLevel(options.logLevel), event: event ?? "log", fields }
}

/** Where lines go: one call per record, with its level (e.g. to pick stdout or stderr). */
export type Sink = (line: string, level: Level) => void

/** An Effect `Logger` writing one formatted line per log call to `sink`. */
export const logger = (format: Format, sink: Sink, options?: FormatOptions): Logger.Logger<unknown, void> => {
  const fmt = formatter(format)
  return Logger.make((o) => {
    const record = fromLoggerOptions(o)
    sink(fmt(record, options), record.level)
  })
}

/**
 * A layer that replaces the default loggers with `logger(format, sink)` and
 * sets the minimum level, so `Effect.log*` calls below `level` are dropped.
 */
export const layer = (options: {
  readonly format: Format
  readonly level: Level
  readonly sink: Sink
  readonly maxValueLength?: number | undefined
  /** Fields every line starts with (a worker process's `worker=2`). */
  readonly annotations?: Readonly<Record<string, unknown>> | undefined
}): Layer.Layer<never> =>
  Layer.mergeAll(
    Logger.layer([logger(options.format, options.sink, options)]),
    Layer.succeed(References.MinimumLogLevel, toEffectLevel(options.level)),
    options.annotations === undefined ? Layer.empty : Layer.succeed(References.CurrentLogAnnotations, options.annotations)
  )

// ---------------------------------------------------------------------------
// The standard records
// ---------------------------------------------------------------------------

/** Facts about a client connection, shared by session and message records. */
export interface ClientFacts {
  /** Client IP address (after PROXY protocol, if any). */
  readonly client: string
  readonly client_port?: number | undefined
  /** Reverse DNS name, if looked up. */
  readonly rdns?: string | undefined
  readonly ehlo?: string | undefined
  /** Negotiated TLS protocol, e.g. `TLSv1.3`. */
  readonly tls?: string | undefined
  /** Authenticated identity. */
  readonly auth?: string | undefined
}

/** One line per message accepted or refused at the end of DATA/BDAT. */
export interface MessageFacts extends ClientFacts {
  readonly sender: string
  readonly recipients: ReadonlyArray<string>
  readonly size: number
  readonly queue_id?: string | undefined
  /** The final reply (a `Reply` value or its text). */
  readonly reply: unknown
}

/** One line per session, when it ends. */
export interface SessionFacts extends ClientFacts {
  /** Messages accepted during the session. */
  readonly messages: number
  /** The last reply sent (a `Reply` value or its text). */
  readonly reply?: unknown
  readonly duration_ms?: number | undefined
  /** Why it ended: `quit`, `timeout`, `too_many_errors`, `closed`, `shutdown`... */
  readonly end?: string | undefined
}

const clientFields = (f: ClientFacts): Record<string, unknown> => ({
  client: f.client,
  client_port: f.client_port,
  rdns: f.rdns,
  ehlo: f.ehlo,
  tls: f.tls,
  auth: f.auth
})

/** The `event=message` record's fields, in their standard order. */
export const messageFields = (f: MessageFacts): Record<string, unknown> => ({
  ...clientFields(f),
  sender: f.sender === "" ? "<>" : f.sender,
  recipients: f.recipients,
  nrcpt: f.recipients.length,
  size: f.size,
  queue_id: f.queue_id,
  reply: f.reply
})

/** The `event=session` record's fields, in their standard order. */
export const sessionFields = (f: SessionFacts): Record<string, unknown> => ({
  ...clientFields(f),
  messages: f.messages,
  end: f.end,
  duration_ms: f.duration_ms,
  reply: f.reply
})

/** Logs `event=message` at info level (warning when the reply is 4xx/5xx). */
export const message = (f: MessageFacts): Effect.Effect<void> => {
  const code = typeof f.reply === "object" && f.reply !== null ? (f.reply as { code?: unknown }).code : undefined
  return typeof code === "number" && code >= 400
    ? Effect.logWarning("message", messageFields(f))
    : Effect.logInfo("message", messageFields(f))
}

/** Logs `event=session` at info level. */
export const session = (f: SessionFacts): Effect.Effect<void> => Effect.logInfo("session", sessionFields(f))
