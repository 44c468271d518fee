/**
 * The `Envelope`: one message in flight — the SMTP envelope (sender,
 * recipients, DSN and body parameters), the message bytes, and the facts
 * about the client that handed it over. Edges build it, queue policies
 * rewrite or split it, storages persist it, relays deliver it.
 *
 * An envelope is an immutable plain value. The message is the whole message
 * (header block and body) as bytes with CRLF line ends, and is never decoded
 * to a string; header edits go through `Headers` and leave existing bytes as
 * they are.
 *
 * ## Storage format, version 1
 *
 * `toJSON` / `fromJSON` define the stable JSON form that storages persist.
 * Every key is always present; `null` stands for "not known".
 *
 * ```json
 * { "v": 1,
 *   "id": "01k…",                     // "" or 1-128 of [0-9A-Za-z_-]
 *   "sender": "a@example.org",        // "" is the null sender <>
 *   "recipients": ["b@example.com"],
 *   "client": { "address": "192.0.2.1" | null, "port": 25 | null,
 *               "reverseName": string | null, "ehlo": string | null,
 *               "protocol": "ESMTPS",
 *               "tls": { "version": "TLSv1.3", "cipher": "…", "bits": 256 (optional) } | null,
 *               "auth": string | null },
 *   "receiver": "mx.example.com" | null,
 *   "timestamp": 1795324232000,       // ms since the epoch, integer >= 0
 *   "dsn": { "ret": "FULL" | "HDRS" | null, "envid": string | null,
 *            "notify": [ ["SUCCESS", "FAILURE"] | ["NEVER"] | null, … ],  // one per recipient
 *            "orcpt":  [ { "addrType": "rfc822", "address": "…" } | null, … ] },
 *   "body": "7BIT" | "8BITMIME" | "BINARYMIME" | null,
 *   "smtputf8": false,
 *   "requireTls": false,              // REQUIRETLS (RFC 8689) was given on MAIL
 *   "message": "UmVjZWl2ZWQ6IC4uLg==" }  // the message bytes, standard base64 with padding
 * ```
 *
 * `fromJSON` checks every field and refuses unknown keys and any other `v`;
 * a change to the format bumps `v`. Text fields refuse control characters and
 * unpaired surrogates.
 *
 * What it deliberately does not do: parse or validate addresses (the
 * command grammar does that at the edge), MIME, or 8-bit to 7-bit
 * conversion.
 *
 * @since 0.1.0
 */
import { Data, Result } from "effect"
import { Base64 } from "effect/encoding"
import * as Headers from "./Headers.ts"

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/** What the edge knows about the client that handed the message over. */
export interface ClientFacts {
  /** IP as text, e.g. `"192.0.2.1"` or `"2001:db8::1"` (from the socket, or the PROXY header). */
  readonly address: string | undefined
  readonly port: number | undefined
  /** The validated PTR name. */
  readonly reverseName: string | undefined
  /** The EHLO/HELO/LHLO argument. */
  readonly ehlo: string | undefined
  /**
   * The RFC 3848 / RFC 6531 with-protocol name: `SMTP`, `ESMTP`, `ESMTPS`,
   * `ESMTPA`, `ESMTPSA`, `LMTP…`, `UTF8SMTP…`, or `HTTP`, `HTTPS`.
   */
  readonly protocol: string
  readonly tls: { readonly version: string; readonly cipher: string; readonly bits?: number } | undefined
  /** The authenticated identity (SASL authcid). */
  readonly auth: string | undefined
}

/** An RFC 3461 NOTIFY keyword. `NEVER` stands alone. */
export type NotifyKeyword = "NEVER" | "SUCCESS" | "FAILURE" | "DELAY"

/** An RFC 3461 ORCPT value, xtext already decoded. */
export interface OriginalRecipient {
  readonly addrType: string
  readonly address: string
}

/** RFC 3461 DSN parameters. `notify` and `orcpt` are indexed like the recipients. */
export interface DsnParams {
  readonly ret: "FULL" | "HDRS" | undefined
  readonly envid: string | undefined
  readonly notify: ReadonlyArray<ReadonlyArray<NotifyKeyword> | undefined>
  readonly orcpt: ReadonlyArray<OriginalRecipient | undefined>
}

/** The BODY parameter of MAIL (RFC 6152, RFC 3030). */
export type BodyType = "7BIT" | "8BITMIME" | "BINARYMIME"

/** One message in flight. */
export interface Envelope {
  readonly id: string
  /** `""` is the null sender `<>`. */
  readonly sender: string
  readonly recipients: ReadonlyArray<string>
  /** The whole message, header block and body, CRLF line ends, never decoded to a string. */
  readonly message: Uint8Array
  readonly client: ClientFacts
  /** Our hostname. */
  readonly receiver: string | undefined
  /** When it was received, ms since the epoch. */
  readonly timestamp: number
  readonly dsn: DsnParams
  readonly body: BodyType | undefined
  readonly smtputf8: boolean
  /** MAIL carried REQUIRETLS (RFC 8689): relay only over verified TLS, or bounce. */
  readonly requireTls: boolean
}

/** Client facts when nothing is known: protocol `SMTP`, everything else `undefined`. */
export const unknownClient: ClientFacts = {
  address: undefined,
  port: undefined,
  reverseName: undefined,
  ehlo: undefined,
  protocol: "SMTP",
  tls: undefined,
  auth: undefined
}

const pad = <A>(xs: ReadonlyArray<A | undefined> | undefined, n: number, what: string): ReadonlyArray<A | undefined> => {
  const src = xs ?? []
  if (src.length > n) throw new RangeError(`dsn.${what} has ${src.length} entries for ${n} recipients`)
  const out: Array<A | undefined> = [...src]
  while (out.length < n) out.push(undefined)
  return out
}

/**
 * Makes an envelope. Omitted fields default to: id `""` (assign one with
 * `newId`), `unknownClient`, receiver `undefined`, timestamp 0, no DSN
 * parameters, body `undefined`, smtputf8 and requireTls `false`. `dsn.notify` and
 * `dsn.orcpt` are padded with `undefined` to one entry per recipient; more
 * entries than recipients is a programming error (`RangeError`).
 */
export const make = (
  fields: Partial<Envelope> & {
    readonly sender: string
    readonly recipients: ReadonlyArray<string>
    readonly message: Uint8Array
  }
): Envelope => {
  const n = fields.recipients.length
  return {
    id: fields.id ?? "",
    sender: fields.sender,
    recipients: [...fields.recipients],
    message: fields.message,
    client: fields.client ?? unknownClient,
    receiver: fields.receiver,
    timestamp: fields.timestamp ?? 0,
    dsn: {
      ret: fields.dsn?.ret,
      envid: fields.dsn?.envid,
      notify: pad(fields.dsn?.notify, n, "notify"),
      orcpt: pad(fields.dsn?.orcpt, n, "orcpt")
    },
    body: fields.body,
    smtputf8: fields.smtputf8 ?? false,
    requireTls: fields.requireTls ?? false
  }
}

/**
 * A copy keeping only the recipients at `indexes`, in that order, with their
 * DSN parameters: how split policies and partial retries make envelopes.
 * The message bytes are shared, not copied. An index out of range is a
 * programming error (`RangeError`).
 */
export const withRecipients = (env: Envelope, indexes: ReadonlyArray<number>): Envelope => {
  const n = env.recipients.length
  for (const i of indexes) {
    if (!Number.isInteger(i) || i < 0 || i >= n) throw new RangeError(`recipient index ${i} out of range 0..${n - 1}`)
  }
  return {
    ...env,
    recipients: indexes.map((i) => env.recipients[i]!),
    dsn: { ...env.dsn, notify: indexes.map((i) => env.dsn.notify[i]), orcpt: indexes.map((i) => env.dsn.orcpt[i]) }
  }
}

/** A copy with other message bytes. */
export const withMessage = (env: Envelope, message: Uint8Array): Envelope => ({ ...env, message })

/** A copy with the field `name: value` prepended to the message (see `Headers.prepend`). */
export const prependHeader = (env: Envelope, name: string, value: string): Envelope =>
  withMessage(env, Headers.prepend(env.message, name, value))

/** A copy with the field `name: value` appended to the header block (see `Headers.append`). */
export const appendHeader = (env: Envelope, name: string, value: string): Envelope =>
  withMessage(env, Headers.append(env.message, name, value))

/** The index just after the empty line that ends the header block (see `Headers.headerBlockEnd`). */
export const headerBlockEnd: (message: Uint8Array) => number = Headers.headerBlockEnd

/**
 * A new envelope id: a lowercase ULID, 26 characters of `[0-9a-z]` that sort
 * by receive time as plain strings and are safe as file names (see
 * `Headers.sortableId`). `random(n)` must return `n` random bytes.
 */
export const newId: (random: (n: number) => Uint8Array, now: number) => string = Headers.sortableId

/** True when any byte of `bytes` is 0x80 or above. */
export const has8Bit = (bytes: Uint8Array): boolean => {
  for (let i = 0; i < bytes.length; i++) if (bytes[i]! >= 0x80) return true
  return false
}

/** True when the message has a byte 0x80 or above (needs 8BITMIME, or conversion, to relay). */
export const needs8Bit = (env: Envelope): boolean => has8Bit(env.message)

// ---------------------------------------------------------------------------
// JSON, version 1
// ---------------------------------------------------------------------------

/** The stable JSON form of an envelope (see the module header). */
export interface EnvelopeJson {
  readonly v: 1
  readonly id: string
  readonly sender: string
  readonly recipients: ReadonlyArray<string>
  readonly client: {
    readonly address: string | null
    readonly port: number | null
    readonly reverseName: string | null
    readonly ehlo: string | null
    readonly protocol: string
    readonly tls: { readonly version: string; readonly cipher: string; readonly bits?: number } | null
    readonly auth: string | null
  }
  readonly receiver: string | null
  readonly timestamp: number
  readonly dsn: {
    readonly ret: "FULL" | "HDRS" | null
    readonly envid: string | null
    readonly notify: ReadonlyArray<ReadonlyArray<NotifyKeyword> | null>
    readonly orcpt: ReadonlyArray<{ readonly addrType: string; readonly address: string } | null>
  }
  readonly body: BodyType | null
  readonly smtputf8: boolean
  readonly requireTls: boolean
  readonly message: string
}

/** `fromJSON` refused its input. `field` is a path such as `client.port` or `dsn.notify[1][0]`. */
export class EnvelopeJsonError extends Data.TaggedError("EnvelopeJsonError")<{
  readonly field: string
  readonly message: string
}> {}

const nullable = <A>(a: A | undefined): A | null => (a === undefined ? null : a)

/** The JSON form of an envelope (version 1, see the module header); `JSON.stringify` it to store. */
export const toJSON = (env: Envelope): EnvelopeJson => {
  const c = env.client
  const tls = c.tls === undefined
    ? null
    : c.tls.bits === undefined
    ? { version: c.tls.version, cipher: c.tls.cipher }
    : { version: c.tls.version, cipher: c.tls.cipher, bits: c.tls.bits }
  return {
    v: 1,
    id: env.id,
    sender: env.sender,
    recipients: [...env.recipients],
    client: {
      address: nullable(c.address),
      port: nullable(c.port),
      reverseName: nullable(c.reverseName),
      ehlo: nullable(c.ehlo),
      protocol: c.protocol,
      tls,
      auth: nullable(c.auth)
    },
    receiver: nullable(env.receiver),
    timestamp: env.timestamp,
    dsn: {
      ret: nullable(env.dsn.ret),
      envid: nullable(env.dsn.envid),
      notify: env.dsn.notify.map((x) => (x === undefined ? null : [...x])),
      orcpt: env.dsn.orcpt.map((x) => (x === undefined ? null : { addrType: x.addrType, address: x.address }))
    },
    body: nullable(env.body),
    smtputf8: env.smtputf8,
    requireTls: env.requireTls,
    message: Base64.encode(env.message)
  }
}

/** `JSON.stringify(toJSON(env))`. */
export const toJSONString = (env: Envelope): string => JSON.stringify(toJSON(env))

// --- the validator ---------------------------------------------------------

class Bad {
  readonly field: string
  readonly message: string
  constructor(field: string, message: string) {
    this.field = field
    this.message = message
  }
}

const describe = (u: unknown): string => {
  if (u === null) return "null"
  if (u === undefined) return "nothing"
  if (Array.isArray(u)) return "an array"
  switch (typeof u) {
    case "string":
      return JSON.stringify(u.length > 40 ? u.slice(0, 40) + "…" : u)
    case "number":
    case "boolean":
      return String(u)
    case "object":
      return "an object"
    default:
      return `a ${typeof u}`
  }
}

const bad = (field: string, expected: string, got: unknown): never => {
  throw new Bad(field, `${field}: expected ${expected}, got ${describe(got)}`)
}

type Obj = { readonly [k: string]: unknown }

const isObject = (u: unknown): u is Obj => typeof u === "object" && u !== null && !Array.isArray(u)

/** Checks that `u` is an object with exactly `keys` (own, enumerable), and returns a reader for them. */
const object = (field: string, u: unknown, keys: ReadonlyArray<string>, optional: ReadonlyArray<string> = []): (k: string) => unknown => {
  if (!isObject(u)) return bad(field || "(root)", "an object", u)
  for (const k of Object.keys(u)) {
    if (!keys.includes(k) && !optional.includes(k)) {
      throw new Bad(join(field, k), `${join(field, k)}: unknown key`)
    }
  }
  for (const k of keys) {
    if (!Object.prototype.hasOwnProperty.call(u, k)) throw new Bad(join(field, k), `${join(field, k)}: missing`)
  }
  return (k) => (Object.prototype.hasOwnProperty.call(u, k) ? u[k] : undefined)
}

const join = (field: string, k: string): string => (field === "" ? k : `${field}.${k}`)

// control characters (C0 and DEL) or an unpaired surrogate
const UNSAFE_TEXT = /[\u0000-\u001f\u007f]|\p{Cs}/u

const text = (field: string, u: unknown, max: number, min = 0): string => {
  if (typeof u !== "string" || u.length > max || u.length < min || UNSAFE_TEXT.test(u)) {
    return bad(field, `a string of ${min}-${max} characters without control characters`, u)
  }
  return u
}

const optText = (field: string, u: unknown, max: number): string | undefined =>
  u === null ? undefined : text(field, u, max)

const matching = (field: string, u: unknown, re: RegExp, expected: string): string => {
  if (typeof u !== "string" || !re.test(u)) return bad(field, expected, u)
  return u
}

const oneOf = <A extends string>(field: string, u: unknown, values: ReadonlyArray<A>): A => {
  if (typeof u !== "string" || !(values as ReadonlyArray<string>).includes(u)) {
    return bad(field, `one of ${values.join(", ")}`, u)
  }
  return u as A
}

const array = (field: string, u: unknown): ReadonlyArray<unknown> => {
  if (!Array.isArray(u)) return bad(field, "an array", u)
  return u
}

/** True when `s` is an IPv4 dotted quad or an IPv6 address, optionally with a `%zone` (see `Headers.isIpAddress`). */
export const isIpAddress: (s: string) => boolean = Headers.isIpAddress

const ID = /^[0-9A-Za-z_-]{0,128}$/
const PROTOCOL = /^[A-Za-z0-9]{1,32}$/
const ATOM = /^[A-Za-z0-9!#$%&'*+\/=?^_`{|}~-]{1,64}$/
const HOSTNAME = /^[\x21-\x7e]{1,255}$/
const NOTIFY: ReadonlyArray<NotifyKeyword> = ["NEVER", "SUCCESS", "FAILURE", "DELAY"]
const TEXT_MAX = 1000

const decodeClient = (u: unknown): ClientFacts => {
  const get = object("client", u, ["address", "port", "reverseName", "ehlo", "protocol", "tls", "auth"])
  const address = get("address")
  if (address !== null && (typeof address !== "string" || !isIpAddress(address))) {
    bad("client.address", "an IP address or null", address)
  }
  const port = get("port")
  if (port !== null && (typeof port !== "number" || !Number.isInteger(port) || port < 0 || port > 65535)) {
    bad("client.port", "an integer 0-65535 or null", port)
  }
  const rn = get("reverseName")
  const tlsU = get("tls")
  let tls: ClientFacts["tls"] = undefined
  if (tlsU !== null) {
    const t = object("client.tls", tlsU, ["version", "cipher"], ["bits"])
    const version = matching("client.tls.version", t("version"), /^[\x20-\x7e]{1,64}$/, "printable ASCII, 1-64 characters")
    const cipher = matching("client.tls.cipher", t("cipher"), /^[\x20-\x7e]{1,128}$/, "printable ASCII, 1-128 characters")
    const bits = t("bits")
    if (bits === undefined) tls = { version, cipher }
    else if (typeof bits === "number" && Number.isInteger(bits) && bits >= 0 && bits <= 65535) tls = { version, cipher, bits }
    else bad("client.tls.bits", "an integer 0-65535 or no key", bits)
  }
  return {
    address: address === null ? undefined : (address as string),
    port: port === null ? undefined : (port as number),
    reverseName: rn === null ? undefined : matching("client.reverseName", rn, HOSTNAME, "a host name (printable ASCII, no spaces, 1-255) or null"),
    ehlo: optText("client.ehlo", get("ehlo"), TEXT_MAX),
    protocol: matching("client.protocol", get("protocol"), PROTOCOL, "a protocol name such as ESMTPS"),
    tls,
    auth: optText("client.auth", get("auth"), TEXT_MAX)
  }
}

const decodeNotify = (field: string, u: unknown): ReadonlyArray<NotifyKeyword> | undefined => {
  if (u === null) return undefined
  const xs = array(field, u)
  if (xs.length === 0) bad(field, "a non-empty array of NOTIFY keywords or null", u)
  const out: Array<NotifyKeyword> = []
  xs.forEach((x, i) => {
    const k = oneOf(`${field}[${i}]`, x, NOTIFY)
    if (out.includes(k)) throw new Bad(`${field}[${i}]`, `${field}[${i}]: ${k} repeated`)
    out.push(k)
  })
  if (out.includes("NEVER") && out.length > 1) throw new Bad(field, `${field}: NEVER must stand alone`)
  return out
}

const decodeOrcpt = (field: string, u: unknown): OriginalRecipient | undefined => {
  if (u === null) return undefined
  const get = object(field, u, ["addrType", "address"])
  return {
    addrType: matching(`${field}.addrType`, get("addrType"), ATOM, "an address type such as rfc822"),
    address: text(`${field}.address`, get("address"), TEXT_MAX, 1)
  }
}

const decodeDsn = (u: unknown, n: number): DsnParams => {
  const get = object("dsn", u, ["ret", "envid", "notify", "orcpt"])
  const ret = get("ret")
  const notify = array("dsn.notify", get("notify"))
  const orcpt = array("dsn.orcpt", get("orcpt"))
  if (notify.length !== n) throw new Bad("dsn.notify", `dsn.notify: expected ${n} entries (one per recipient), got ${notify.length}`)
  if (orcpt.length !== n) throw new Bad("dsn.orcpt", `dsn.orcpt: expected ${n} entries (one per recipient), got ${orcpt.length}`)
  return {
    ret: ret === null ? undefined : oneOf("dsn.ret", ret, ["FULL", "HDRS"] as const),
    envid: optText("dsn.envid", get("envid"), 100),
    notify: notify.map((x, i) => decodeNotify(`dsn.notify[${i}]`, x)),
    orcpt: orcpt.map((x, i) => decodeOrcpt(`dsn.orcpt[${i}]`, x))
  }
}

const KEYS = ["v", "id", "sender", "recipients", "client", "receiver", "timestamp", "dsn", "body", "smtputf8", "requireTls", "message"]

const decode = (u: unknown): Envelope => {
  if (!isObject(u)) return bad("(root)", "an object", u)
  const v = Object.prototype.hasOwnProperty.call(u, "v") ? u["v"] : undefined
  if (v !== 1) throw new Bad("v", `v: unsupported version ${describe(v)}, this build reads version 1`)
  const get = object("", u, KEYS)
  // fields are checked in the order of the format, so the first bad one is reported
  const id = matching("id", get("id"), ID, "an id of 0-128 characters [0-9A-Za-z_-]")
  const sender = text("sender", get("sender"), TEXT_MAX)
  const recipients = array("recipients", get("recipients")).map((r, i) => text(`recipients[${i}]`, r, TEXT_MAX, 1))
  const client = decodeClient(get("client"))
  const receiver = get("receiver")
  const host = "a host name (printable ASCII, no spaces, 1-255) or null"
  const receiverValue = receiver === null ? undefined : matching("receiver", receiver, HOSTNAME, host)
  const timestamp = get("timestamp")
  if (typeof timestamp !== "number" || !Number.isSafeInteger(timestamp) || timestamp < 0) {
    bad("timestamp", "an integer number of ms since the epoch, >= 0", timestamp)
  }
  const dsn = decodeDsn(get("dsn"), recipients.length)
  const body = get("body")
  const bodyValue = body === null ? undefined : oneOf("body", body, ["7BIT", "8BITMIME", "BINARYMIME"] as const)
  const smtputf8 = get("smtputf8")
  if (typeof smtputf8 !== "boolean") bad("smtputf8", "true or false", smtputf8)
  const requireTls = get("requireTls")
  if (typeof requireTls !== "boolean") bad("requireTls", "true or false", requireTls)
  const m = get("message")
  if (typeof m !== "string") bad("message", "a base64 string", m)
  const message = Base64.decode(m as string)
  if (Result.isFailure(message)) throw new Bad("message", `message: not valid base64 (${message.failure.message})`)
  return {
    id,
    sender,
    recipients,
    message: message.success,
    client,
    receiver: receiverValue,
    timestamp: timestamp as number,
    dsn,
    body: bodyValue,
    smtputf8: smtputf8 as boolean,
    requireTls: requireTls as boolean
  }
}

/**
 * Reads the JSON form (version 1) back, checking every field. Never throws:
 * bad input gives an `EnvelopeJsonError` whose `field` names the first bad
 * field and whose `message` says what was expected.
 */
export const fromJSON = (u: unknown): Result.Result<Envelope, EnvelopeJsonError> => {
  try {
    return Result.succeed(decode(u))
  } catch (e) {
    if (e instanceof Bad) return Result.fail(new EnvelopeJsonError({ field: e.field, message: e.message }))
    return Result.fail(new EnvelopeJsonError({ field: "(root)", message: `(root): ${String(e)}` }))
  }
}

/** Parses a JSON string and reads it with `fromJSON`; text that is not JSON fails on `(root)`. */
export const fromJSONString = (s: string): Result.Result<Envelope, EnvelopeJsonError> => {
  let u: unknown
  try {
    u = JSON.parse(s)
  } catch {
    return Result.fail(new EnvelopeJsonError({ field: "(root)", message: "(root): not valid JSON" }))
  }
  return fromJSON(u)
}
