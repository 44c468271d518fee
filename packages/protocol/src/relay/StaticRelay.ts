/**
 * The static relay (smarthost, slimta's `StaticSmtpRelay`): every envelope
 * goes to one configured host, over SMTP (or LMTP, see `LmtpRelay`), with
 * pooled connections, STARTTLS or implicit TLS, and AUTH.
 *
 * - The host is an IP address or a name looked up with `Dns.lookup` (the
 *   system resolver, hosts file included) at every attempt; each address is
 *   tried in turn within the attempt (see `SmtpDelivery`). A lookup failure
 *   is transient (`451 4.4.3`): a smarthost that does not resolve is a local
 *   problem, never a reason to bounce.
 * - TLS: `opportunistic` (default) uses STARTTLS when offered and records
 *   the certificate verdict; `required` fails (transient `421 4.7.10`) when
 *   the server does not offer or refuses STARTTLS; `implicit` is TLS from
 *   the first byte (port 465); with `tlsVerify` (default true) required and
 *   implicit TLS also fail on a certificate that does not verify (chain and
 *   host name). `tlsFallback` retries an opportunistic STARTTLS whose
 *   handshake failed in clear. An envelope that asked for REQUIRETLS
 *   (RFC 8689) is always sent over verified TLS, or not at all.
 * - AUTH: PLAIN, LOGIN, CRAM-MD5 or SCRAM-SHA-256, the best offered unless
 *   `mechanism` forces one; plaintext mechanisms never go over an
 *   unencrypted connection unless `authRequireTls: false`.
 *
 * What it deliberately does not do: MX lookups (`MxRelay`), queueing or
 * retries (the queue), rewriting the message (except the 7-bit conversion of
 * `SmtpDelivery`).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Dns from "effect/net/Dns"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import type * as Sasl from "../auth/Sasl.ts"
import * as Transport from "../edge/Transport.ts"
import type * as Envelope from "../envelope/Envelope.ts"
import * as ClientSession from "../smtp/ClientSession.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Pool from "./Pool.ts"
import * as Relay from "./Relay.ts"
import * as SmtpConnection from "./SmtpConnection.ts"
import * as SmtpDelivery from "./SmtpDelivery.ts"

/** Time limits, ms. Defaults follow RFC 5321 §4.5.3.2. */
export interface Timeouts {
  /** Dial (and implicit TLS handshake). Default 30 000. */
  readonly connectMs?: number | undefined
  /** Banner, EHLO, STARTTLS, AUTH, MAIL, RCPT, RSET replies. Default 300 000. */
  readonly commandMs?: number | undefined
  /** The 354 to DATA. Default 120 000. */
  readonly dataInitMs?: number | undefined
  /** The final reply after the body. Default 600 000. */
  readonly dataMs?: number | undefined
  /** The 221 to QUIT. Default 10 000. */
  readonly quitMs?: number | undefined
}

/** SMTP AUTH credentials. */
export interface Auth {
  readonly username: string
  readonly password: string
  /** Force a mechanism; default: the best offered (SCRAM-SHA-256 > CRAM-MD5 > PLAIN > LOGIN). */
  readonly mechanism?: Sasl.Mechanism | undefined
  /** Authorization identity (PLAIN and SCRAM only), when different from `username`. */
  readonly authzid?: string | undefined
}

/** TLS use towards the host. */
export type TlsMode = "none" | "opportunistic" | "required" | "implicit"

/** Settings shared by the static and LMTP relays. */
export interface CommonOptions {
  /** Our name in EHLO/LHLO. */
  readonly ehlo: string
  readonly tls?: TlsMode | undefined
  /** Required and implicit TLS fail on a certificate that does not verify. Default true. */
  readonly tlsVerify?: boolean | undefined
  /** Retry an opportunistic STARTTLS whose handshake failed in clear. Default false. */
  readonly tlsFallback?: boolean | undefined
  /** Extra trusted CAs, PEM (e.g. a private CA of the smarthost). */
  readonly ca?: ReadonlyArray<string> | undefined
  readonly auth?: Auth | undefined
  /** Never send PLAIN/LOGIN without TLS. Default true. */
  readonly authRequireTls?: boolean | undefined
  readonly timeouts?: Timeouts | undefined
  readonly pool?: Pool.Options | undefined
  /** Send bodies with BDAT when the server offers CHUNKING. Default false. */
  readonly preferChunking?: boolean | undefined
  /** Addresses of the host tried per attempt. Default 5. */
  readonly maxAddresses?: number | undefined
  /** Local address to dial from. */
  readonly localAddress?: string | undefined
}

/** Static relay settings: the common ones plus the host. */
export interface Options extends CommonOptions {
  /** A host name, or an IPv4/IPv6 address (brackets optional). */
  readonly host: string
  /** Default 25. */
  readonly port?: number | undefined
  /** Speak LMTP (LHLO, one reply per recipient) instead of SMTP. Default false. */
  readonly lmtp?: boolean | undefined
}

/** Where a fixed relay sends to: a host and port, or a Unix socket. */
export type Target =
  | { readonly _tag: "Host"; readonly host: string; readonly port: number }
  | { readonly _tag: "Unix"; readonly path: string }

/** An IP address in `host` (brackets and an `IPv6:` tag allowed), or undefined for a name. */
export const ipLiteral = (host: string): string | undefined => {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1).replace(/^IPv6:/i, "") : host
  const ip = NetAddress.ipFromString(bare)
  return Result.isSuccess(ip) ? NetAddress.formatIp(ip.success) : undefined
}

/** `451 4.4.3` for a failed lookup of a host we must reach. */
export const lookupFailed = (name: string, error: Dns.DnsError): Reply.Reply =>
  Reply.make(451, "4.4.3", `DNS lookup of ${name} failed: ${error.reason}`)

/** The session configuration for the common options and a protocol. */
export const sessionConfig = (options: CommonOptions, mode: "smtp" | "lmtp"): ClientSession.Config => {
  const t = options.timeouts
  return ClientSession.config({
    hostname: options.ehlo,
    mode,
    auth: options.auth === undefined ? undefined : {
      authcid: options.auth.username,
      password: options.auth.password,
      mechanism: options.auth.mechanism,
      authzid: options.auth.authzid
    },
    authRequireTls: options.authRequireTls ?? true,
    commandTimeoutMs: t?.commandMs ?? 300_000,
    dataInitTimeoutMs: t?.dataInitMs ?? 120_000,
    dataTimeoutMs: t?.dataMs ?? 600_000,
    quitTimeoutMs: t?.quitMs ?? 10_000,
    preferChunking: options.preferChunking ?? false
  })
}

/** TLS settings for an envelope: REQUIRETLS (RFC 8689) forces verified TLS. */
export const tlsFor = (
  envelope: Envelope.Envelope,
  mode: TlsMode,
  verify: boolean,
  fallback: boolean,
  ca: ReadonlyArray<string> | undefined
): SmtpConnection.TlsOptions =>
  envelope.requireTls
    ? { mode: mode === "implicit" ? "implicit" : "required", verify: true, fallback: false, ca }
    : { mode, verify, fallback, ca }

/**
 * A relay to one fixed target over SMTP or LMTP (the shared core of
 * `StaticRelay.make` and `LmtpRelay.make`), with its connection pool in the
 * current scope.
 */
export const makeFixed = (
  target: Target,
  options: CommonOptions,
  mode: "smtp" | "lmtp"
): Effect.Effect<Relay.Relay["Service"], never, Scope.Scope | Transport.Connector | Dns.Dns> =>
  Effect.gen(function*() {
    const dns = yield* Dns.Dns
    const connector = yield* Transport.Connector
    const pool = yield* Pool.make<SmtpConnection.SmtpConnection>({ quitTimeoutMs: options.timeouts?.quitMs ?? 10_000, ...options.pool })
    const session = sessionConfig(options, mode)
    const tlsMode = options.tls ?? (target._tag === "Unix" ? "none" : "opportunistic")
    const verify = options.tlsVerify ?? true
    const fallback = options.tlsFallback ?? false

    const host: SmtpDelivery.Host = target._tag === "Unix"
      ? { name: undefined, endpoints: Effect.succeed([{ _tag: "Unix", path: target.path }]) }
      : (() => {
        const literal = ipLiteral(target.host)
        if (literal !== undefined) {
          return { name: undefined, endpoints: Effect.succeed([{ _tag: "Inet", address: literal, port: target.port }]) }
        }
        const name = target.host.replace(/\.$/, "")
        return {
          name,
          endpoints: Effect.gen(function*() {
            const found = yield* Effect.exit(dns.lookup(name))
            if (Exit.isFailure(found)) {
              const e = Exit.findErrorOption(found)
              return yield* Effect.fail(
                e._tag === "Some" ? lookupFailed(name, e.value) : Reply.make(451, "4.4.3", `DNS lookup of ${name} failed`)
              )
            }
            return found.value.map((a): Transport.Endpoint => ({ _tag: "Inet", address: NetAddress.formatIp(a), port: target.port }))
          })
        }
      })()

    const attempt = (envelope: Envelope.Envelope): Effect.Effect<Relay.RelayResult> =>
      SmtpDelivery.deliver(
        pool,
        [host],
        {
          session,
          tls: tlsFor(envelope, tlsMode, verify, fallback, options.ca),
          connectTimeoutMs: options.timeouts?.connectMs ?? 30_000,
          maxAddresses: options.maxAddresses,
          localAddress: options.localAddress
        },
        SmtpDelivery.toMessage(envelope)
      ).pipe(Effect.provideService(Transport.Connector, connector))

    return { attempt: (envelope) => attempt(envelope) }
  })

/**
 * A smarthost relay (see the module header). The connection pool lives in
 * the current scope: closing it QUITs the idle connections.
 */
export const make = (
  options: Options
): Effect.Effect<Relay.Relay["Service"], never, Scope.Scope | Transport.Connector | Dns.Dns> =>
  makeFixed({ _tag: "Host", host: options.host, port: options.port ?? 25 }, options, options.lmtp === true ? "lmtp" : "smtp")

/** `make` as a layer providing `Relay`. */
export const layer = (options: Options): Layer.Layer<Relay.Relay, never, Transport.Connector | Dns.Dns> =>
  Layer.effect(Relay.Relay, make(options))
