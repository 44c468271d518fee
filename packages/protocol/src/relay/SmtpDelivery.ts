/**
 * One delivery attempt of an envelope over SMTP or LMTP, shared by the
 * static (smarthost), LMTP and MX relays: try the candidate hosts in order,
 * each of their addresses in order, through the pool, until one of them
 * takes the transaction.
 *
 * - Failover within the attempt: a host that cannot be reached, times out,
 *   greets with 421 (or 5xx), fails TLS or does not offer TLS when it is
 *   required is skipped for the next address or host (RFC 5321 §5.1), up to
 *   `maxAddresses` addresses. Once a server has taken part in a transaction
 *   its answers are final for this attempt. An AUTH refusal or a local
 *   configuration error is final too (every host would refuse it alike), and
 *   transient: a refused AUTH is `454 4.7.0`, never a bounce.
 *   When every address failed, the recipients get the last transient
 *   failure (permanent only when every failure was permanent).
 * - A pooled connection that turns out stale when reused (the server closed
 *   it, or answered 421, before any data was sent) is retried once on a new
 *   connection.
 * - The message is adapted to what the server offers: an 8-bit message for
 *   a server without 8BITMIME is converted to 7 bits (`Downgrade`), or
 *   refused with `554 5.6.3 Conversion required but not supported`; a
 *   message that needs SMTPUTF8 is refused by the session with `553 5.6.7`
 *   when the server lacks it. Raw 8-bit data never reaches a 7-bit server.
 * - Results are per recipient, in envelope order, with the server's reply
 *   (or a local one), who answered (`dns; <name>`) and the TLS verdict.
 *
 * What it deliberately does not do: DNS (callers give the hosts, with lazy
 * address lookups), retries across attempts (the queue), bounces.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Envelope from "../envelope/Envelope.ts"
import * as Transport from "../edge/Transport.ts"
import * as Address from "../smtp/Address.ts"
import * as ClientSession from "../smtp/ClientSession.ts"
import * as Extensions from "../smtp/Extensions.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Downgrade from "./Downgrade.ts"
import * as Pool from "./Pool.ts"
import * as Relay from "./Relay.ts"
import * as SmtpConnection from "./SmtpConnection.ts"

/** A candidate host: its name (for TLS and `remote`) and its addresses, looked up when it is tried. */
export interface Host {
  /** Host name without the final dot; undefined for an address given as such. */
  readonly name: string | undefined
  /** The endpoints to try, in order; a failure reply when the name does not resolve. */
  readonly endpoints: Effect.Effect<ReadonlyArray<Transport.Endpoint>, Reply.Reply>
}

/** How to talk to the hosts. */
export interface Settings {
  readonly session: ClientSession.Config
  readonly tls: SmtpConnection.TlsOptions
  readonly connectTimeoutMs: number
  /** Addresses tried per attempt, over all hosts (Postfix `smtp_mx_address_limit`). Default 5. */
  readonly maxAddresses?: number | undefined
  readonly localAddress?: string | undefined
}

/** The pool the SMTP relays share their connections in. */
export type ConnectionPool = Pool.Pool<SmtpConnection.SmtpConnection>

/** `451 4.3.0 Relay is shutting down`: the relay's scope closed during the attempt. */
export const shuttingDown = Reply.make(451, "4.3.0", "Relay is shutting down")

/** The client session's `Message` for an envelope (DSN parameters per recipient). */
export const toMessage = (envelope: Envelope.Envelope): ClientSession.Message => ({
  sender: envelope.sender,
  recipients: envelope.recipients.map((address, i) => ({
    address,
    notify: envelope.dsn.notify[i],
    orcpt: envelope.dsn.orcpt[i]
  })),
  data: envelope.message,
  ret: envelope.dsn.ret,
  envid: envelope.dsn.envid,
  body: envelope.body,
  smtputf8: envelope.smtputf8
})

/** The `remote` of a result: `dns; mx.example.com`, `dns; [192.0.2.1]`, `unix; /path`. */
export const remoteOf = (name: string | undefined, endpoint: Transport.Endpoint): string =>
  endpoint._tag === "Unix"
    ? `unix; ${endpoint.path}`
    : name !== undefined
    ? `dns; ${name}`
    : `dns; [${endpoint.address}]`

/** The pool key: what makes two connections interchangeable. */
const keyOf = (endpoint: Transport.Endpoint, name: string | undefined, settings: Settings): string =>
  [
    Transport.formatEndpoint(endpoint),
    name ?? "",
    settings.tls.mode,
    settings.tls.verify ? "verify" : "",
    settings.tls.fallback ? "fallback" : "",
    settings.session.mode,
    settings.session.hostname
  ].join("|")

const needsUtf8 = (m: ClientSession.Message): boolean =>
  m.smtputf8 === true || !Address.isAsciiString(m.sender) || m.recipients.some((r) => !Address.isAsciiString(r.address))

/**
 * The message as this server can take it: converted to 7 bits when it is
 * 8-bit and the server lacks 8BITMIME, or a reply refusing it.
 */
export const adapt = (
  message: ClientSession.Message,
  extensions: Extensions.Extensions
): ClientSession.Message | Reply.Reply => {
  if (message.body === "BINARYMIME" || Extensions.has(extensions, "8BITMIME")) return message
  // without SMTPUTF8 the session refuses a UTF-8 message itself (553 5.6.7)
  if (needsUtf8(message) && !Extensions.has(extensions, "SMTPUTF8")) return message
  const converted = Downgrade.toSevenBit(message.data)
  switch (converted._tag) {
    case "Unchanged":
      return message.body === "8BITMIME" ? { ...message, body: "7BIT" } : message
    case "Converted":
      return { ...message, data: converted.message, body: "7BIT" }
    case "Unsafe":
      return Downgrade.conversionFailed(converted.reason)
  }
}

type OnHost =
  /** A server took part in the transaction (or the message was refused before it): final. */
  | { readonly _tag: "Done"; readonly result: Relay.RelayResult }
  /** A reused connection was stale: try again on a new one. */
  | { readonly _tag: "Stale" }

type Attempt =
  | OnHost
  /** This address could not be used: try the next. */
  | { readonly _tag: "Next"; readonly reply: Reply.Reply; readonly remote: string; readonly tls: string }

const everyone = (
  message: ClientSession.Message,
  reply: Reply.Reply,
  remote: string | undefined,
  tls: string | undefined
): Relay.RelayResult => ({
  recipients: message.recipients.map(() => ({ outcome: Relay.outcomeOf(reply), reply })),
  remote,
  tls
})

/** `454 4.7.0 Authentication failed: <the server's reply>`: a refused AUTH is a transient failure. */
const softened = (reply: Reply.Reply): Reply.Reply =>
  Reply.make(454, "4.7.0", `Authentication failed: ${Reply.toString(reply)}`)

/** Reasons a connection failure moves on to the next address. */
const skippable = new Set<SmtpConnection.OpenFailureReason>([
  "connect",
  "connect-timeout",
  "server-closed",
  "connection-lost",
  "timeout",
  "malformed",
  "tls-failed",
  "tls-unavailable",
  "rejected",
  "stale"
])

/** Reasons a reused connection's failure before any data went out is retried on a new connection. */
const staleReasons = new Set<ClientSession.FailureReason>(["server-closed", "connection-lost", "stale", "malformed"])

const sendOn = (
  conn: SmtpConnection.SmtpConnection,
  reused: boolean,
  message: ClientSession.Message,
  remote: string
): Effect.Effect<OnHost> =>
  Effect.gen(function*() {
    const adapted = adapt(message, conn.extensions())
    if (!("sender" in adapted)) return { _tag: "Done", result: everyone(message, adapted, remote, conn.tls()) }
    const { result, failure } = yield* conn.send(adapted)
    if (reused && failure !== undefined && !result.dataSent && staleReasons.has(failure.reason)) return { _tag: "Stale" }
    return {
      _tag: "Done",
      result: {
        recipients: result.recipients.map((r) => ({ outcome: r.outcome, reply: r.reply })),
        remote,
        tls: conn.tls()
      }
    }
  })

const onEndpoint = (
  pool: ConnectionPool,
  endpoint: Transport.Endpoint,
  name: string | undefined,
  settings: Settings,
  message: ClientSession.Message
): Effect.Effect<Attempt, never, Transport.Connector> =>
  Effect.gen(function*() {
    const connector = yield* Transport.Connector
    const remote = remoteOf(name, endpoint)
    const open = SmtpConnection.open({
      endpoint,
      servername: name ?? (endpoint._tag === "Inet" ? endpoint.address : undefined),
      tls: settings.tls,
      session: settings.session,
      connectTimeoutMs: settings.connectTimeoutMs,
      localAddress: settings.localAddress
    }).pipe(Effect.provideService(Transport.Connector, connector))
    const key = keyOf(endpoint, name, settings)
    for (let round = 0; round < 2; round++) {
      const exit = yield* Effect.exit(
        pool.use(key, open, (conn, reused) => sendOn(conn, reused, message, remote), { fresh: round > 0 })
      )
      if (Exit.isSuccess(exit)) {
        if (exit.value._tag === "Stale") continue
        return exit.value
      }
      const error = Exit.findErrorOption(exit)
      if (error._tag === "None") return { _tag: "Done", result: everyone(message, shuttingDown, remote, undefined) }
      const e = error.value
      if (e._tag === "PoolClosed") return { _tag: "Done", result: everyone(message, shuttingDown, remote, undefined) }
      if (skippable.has(e.reason)) return { _tag: "Next", reply: e.reply, remote, tls: e.tls }
      // our credentials or configuration are wrong: retry later, never bounce for it (Postfix's
      // smtp_sasl_auth_soft_bounce)
      const reply = e.reply.code >= 500 ? softened(e.reply) : e.reply
      return { _tag: "Done", result: everyone(message, reply, remote, e.tls) }
    }
    return { _tag: "Next", reply: Reply.make(451, "4.4.2", "Connection lost repeatedly"), remote, tls: "none" }
  })

/**
 * Delivers `message` to the first of `hosts` that takes it (see the module
 * header). Never fails.
 */
export const deliver = (
  pool: ConnectionPool,
  hosts: ReadonlyArray<Host>,
  settings: Settings,
  message: ClientSession.Message
): Effect.Effect<Relay.RelayResult, never, Transport.Connector> =>
  Effect.gen(function*() {
    if (message.recipients.length === 0) return { recipients: [], remote: undefined, tls: undefined }
    const maxAddresses = Math.max(1, settings.maxAddresses ?? 5)
    let tried = 0
    let lastTransient: { reply: Reply.Reply; remote: string | undefined; tls: string | undefined } | undefined
    let lastAny: typeof lastTransient
    const note = (reply: Reply.Reply, remote: string | undefined, tls: string | undefined): void => {
      lastAny = { reply, remote, tls }
      if (reply.code < 500) lastTransient = lastAny
    }
    for (const host of hosts) {
      if (tried >= maxAddresses) break
      const endpoints = yield* Effect.exit(host.endpoints)
      if (Exit.isFailure(endpoints)) {
        const e = Exit.findErrorOption(endpoints)
        const reply = e._tag === "Some" ? e.value : Reply.make(451, "4.4.3", "DNS lookup failed")
        note(reply, host.name !== undefined ? `dns; ${host.name}` : undefined, undefined)
        continue
      }
      for (const endpoint of endpoints.value) {
        if (tried >= maxAddresses) break
        tried++
        const r = yield* onEndpoint(pool, endpoint, host.name, settings, message)
        if (r._tag === "Done") return r.result
        if (r._tag === "Next") {
          note(r.reply, r.remote, r.tls)
          yield* Effect.logDebug("relay: trying the next address").pipe(
            Effect.annotateLogs({ remote: r.remote, reply: Reply.toString(r.reply) })
          )
        }
      }
    }
    const last = lastTransient ?? lastAny
    if (last === undefined) return everyone(message, Reply.make(451, "4.4.4", "No host to deliver to"), undefined, undefined)
    return everyone(message, last.reply, last.remote, last.tls)
  })
