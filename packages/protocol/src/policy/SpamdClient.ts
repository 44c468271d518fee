/**
 * A client for SpamAssassin's spamd (the SPAMC/SPAMD protocol, version
 * 1.5) over the `Connector` service: one connection per message, the
 * `SYMBOLS` command (score, threshold and the names of the rules that hit),
 * a `Content-length` header, and a bounded, incremental response decoder.
 *
 * ```text
 * > SYMBOLS SPAMC/1.5\r\nContent-length: 1234\r\nUser: nobody\r\n\r\n<message>
 * < SPAMD/1.1 0 EX_OK\r\nContent-length: 20\r\nSpam: True ; 1001.1 / 5.0\r\n\r\nGTUBE,NO_RECEIVED
 * ```
 *
 * Every exchange has a time limit (connect, send and answer together); a
 * spamd that is down, refuses, answers garbage or is slow gives a
 * `SpamdError`, never a hang.
 *
 * What it deliberately does not do: `PROCESS`/`HEADERS` (Mailroom adds its
 * own headers), `TELL` (learning), compression, or TLS to spamd.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Transport from "../edge/Transport.ts"
import * as Bytes from "../wire/Bytes.ts"

/** What spamd said about a message. */
export interface Verdict {
  /** spamd's verdict: the score reached the threshold. */
  readonly spam: boolean
  readonly score: number
  /** The score at which spamd calls a message spam (`required_score`). */
  readonly threshold: number
  /** Names of the rules that hit, as spamd listed them. */
  readonly symbols: ReadonlyArray<string>
}

/** Why there is no verdict. */
export class SpamdError extends Data.TaggedError("SpamdError")<{
  readonly reason: "Connect" | "Timeout" | "Io" | "Protocol" | "Refused"
  readonly message: string
}> {}

export interface Options {
  /** Where spamd listens (TCP, or a Unix socket). */
  readonly endpoint: Transport.Endpoint
  /** The whole exchange, connect to last byte [10 s]. */
  readonly timeoutMs?: number | undefined
  /** The `User` header: whose preferences spamd uses (spamd needs `-u`/`-x` setups to honour it). */
  readonly user?: string | undefined
}

/** Longest response accepted; SYMBOLS answers are short. */
export const maxResponseBytes = 65536

/** The request bytes for `message`. */
export const encodeRequest = (message: Uint8Array, user?: string): Uint8Array => {
  const head = `SYMBOLS SPAMC/1.5\r\nContent-length: ${message.length}\r\n` +
    (user !== undefined && /^[\x21-\x7e]{1,128}$/.test(user) ? `User: ${user}\r\n` : "") + "\r\n"
  return Bytes.concat([Bytes.fromString(head), message])
}

/** The outcome of decoding what has arrived so far. */
export type Decoded =
  | { readonly _tag: "Incomplete" }
  | { readonly _tag: "Done"; readonly verdict: Verdict }
  | { readonly _tag: "Error"; readonly reason: "Protocol" | "Refused"; readonly message: string }

const INCOMPLETE: Decoded = { _tag: "Incomplete" }
const protocolError = (message: string): Decoded => ({ _tag: "Error", reason: "Protocol", message })

const headerEnd = (b: Uint8Array): number => {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 0x0d && b[i + 1] === 0x0a && b[i + 2] === 0x0d && b[i + 3] === 0x0a) return i
  }
  return -1
}

const SPAM = /^(true|false|yes|no)\s*;\s*(-?\d+(?:\.\d+)?)\s*\/\s*(-?\d+(?:\.\d+)?)\s*$/i

/**
 * Decodes a SYMBOLS response from all bytes received so far. `eof` says
 * the peer closed: a response that is still incomplete then is an error.
 * Never throws, whatever the bytes.
 */
export const decodeResponse = (received: Uint8Array, eof: boolean): Decoded => {
  if (received.length > maxResponseBytes) return protocolError("response too long")
  const end = headerEnd(received)
  if (end < 0) {
    // a status line that already says the request failed needs no more bytes
    const firstLine = Bytes.toLatin1(received, 0, Math.min(received.length, 200)).split("\r\n")
    if (firstLine.length > 1) {
      const status = /^SPAMD\/\d+\.\d+ (\d+) (.*)$/.exec(firstLine[0]!)
      if (!status) return protocolError("not a SPAMD response")
      if (status[1] !== "0") return { _tag: "Error", reason: "Refused", message: `spamd: ${status[1]} ${status[2]}` }
    } else if (received.length > 200) return protocolError("not a SPAMD response")
    return eof ? protocolError("connection closed before the response headers") : INCOMPLETE
  }
  const lines = Bytes.toLatin1(received, 0, end).split("\r\n")
  const status = /^SPAMD\/\d+\.\d+ (\d+) (.*)$/.exec(lines[0] ?? "")
  if (!status) return protocolError("not a SPAMD response")
  if (status[1] !== "0") return { _tag: "Error", reason: "Refused", message: `spamd: ${status[1]} ${status[2]}` }
  let spam: RegExpExecArray | undefined
  let length: number | undefined
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":")
    if (colon <= 0) return protocolError("malformed response header")
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (name === "spam") {
      const m = SPAM.exec(value)
      if (!m) return protocolError("malformed Spam header")
      spam = m
    } else if (name === "content-length") {
      if (!/^\d{1,9}$/.test(value)) return protocolError("malformed Content-length")
      length = Number(value)
    }
  }
  if (!spam) return protocolError("no Spam header")
  const bodyStart = end + 4
  const available = received.length - bodyStart
  if (length !== undefined && available < length) return eof ? protocolError("connection closed in the body") : INCOMPLETE
  if (length === undefined && !eof) return INCOMPLETE
  const body = Bytes.toLatin1(received, bodyStart, length === undefined ? received.length : bodyStart + length)
  const symbols = body.split(/[,\s]+/).map((s) => s.trim()).filter((s) => /^[\x21-\x7e]{1,128}$/.test(s))
  return {
    _tag: "Done",
    verdict: {
      spam: /^(true|yes)$/i.test(spam[1]!),
      score: Number(spam[2]),
      threshold: Number(spam[3]),
      symbols
    }
  }
}

const exchange = (message: Uint8Array, options: Options): Effect.Effect<Verdict, SpamdError, Transport.Connector> =>
  Effect.scoped(
    Effect.gen(function*() {
      const connector = yield* Transport.Connector
      const conn = yield* connector.connect({ endpoint: options.endpoint }).pipe(
        Effect.mapError((e) => new SpamdError({ reason: "Connect", message: e.message }))
      )
      const io = (e: Transport.TransportError) => new SpamdError({ reason: "Io", message: e.message })
      yield* conn.write(encodeRequest(message, options.user)).pipe(Effect.mapError(io))
      let received: Uint8Array = Bytes.empty
      for (;;) {
        const chunks = yield* conn.read.pipe(Effect.mapError(io))
        if (chunks !== null) received = Bytes.concat([received, ...chunks])
        const d = decodeResponse(received, chunks === null)
        if (d._tag === "Done") return d.verdict
        if (d._tag === "Error") return yield* new SpamdError({ reason: d.reason, message: d.message })
        if (chunks === null) return yield* new SpamdError({ reason: "Protocol", message: "connection closed early" })
      }
    })
  )

/**
 * Asks spamd about one message. Fails with `SpamdError` when spamd cannot be
 * reached, answers something else than a verdict, or takes longer than
 * `timeoutMs`.
 */
export const check = (message: Uint8Array, options: Options): Effect.Effect<Verdict, SpamdError, Transport.Connector> => {
  const ms = options.timeoutMs ?? 10_000
  return exchange(message, options).pipe(
    Effect.timeoutOption(ms),
    Effect.flatMap((o) =>
      o._tag === "Some"
        ? Effect.succeed(o.value)
        : Effect.fail(new SpamdError({ reason: "Timeout", message: `spamd did not answer within ${ms} ms` }))
    )
  )
}
