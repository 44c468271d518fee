/**
 * The MX relay (slimta's `MxSmtpRelay`): delivers each recipient to the mail
 * exchangers of its domain, found through the `Dns` service.
 *
 * - Recipients are grouped by domain (case-insensitively); each group is one
 *   delivery, groups run concurrently, and the results are merged back in
 *   the envelope's recipient order. (slimta used the first recipient's
 *   domain for the whole envelope.)
 * - MX records are sorted by preference, equal preferences in random order
 *   (RFC 5321 §5.1; Effect's `Random`, so tests can seed it). Every MX host
 *   and every address of it (A and AAAA, queried through the configured
 *   resolver) may be tried in one attempt: a host that cannot be reached or
 *   answers 421 gives way to the next (see `SmtpDelivery`).
 * - A domain without MX records gets its A/AAAA records as the implicit MX
 *   (RFC 5321 §5.1). A domain with neither (NXDOMAIN included) is permanent
 *   `550 5.1.2 Domain not found`; a null MX (RFC 7505, `MX 0 .`) is
 *   permanent `556 5.1.10 Recipient address has null MX`. A DNS timeout,
 *   SERVFAIL or refusal is transient `451 4.4.3`: never a bounce.
 * - `forceMx` sends a domain to a fixed `host[:port]` (no MX lookup), and
 *   domain literals (`user@[192.0.2.1]`, `user@[IPv6:2001:db8::1]`) go to that
 *   address.
 * - TLS: opportunistic STARTTLS by default with the certificate verdict
 *   recorded; `tlsPolicy` makes it `required` (or `verify`: required and the
 *   certificate must verify for the MX host name) or `none` per domain;
 *   REQUIRETLS envelopes always need verified TLS.
 *
 * What it deliberately does not do: cache DNS answers (the resolver does),
 * DANE or MTA-STS, rotate hosts across attempts (every attempt starts with
 * the most preferred MX, as RFC 5321 asks), or detect MX loops back to us.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Dns from "effect/net/Dns"
import * as NetAddress from "effect/net/NetAddress"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import type * as Scope from "effect/Scope"
import * as Transport from "../edge/Transport.ts"
import * as Envelope from "../envelope/Envelope.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Pool from "./Pool.ts"
import * as Relay from "./Relay.ts"
import type * as SmtpConnection from "./SmtpConnection.ts"
import * as SmtpDelivery from "./SmtpDelivery.ts"
import * as StaticRelay from "./StaticRelay.ts"

/** TLS policy for one destination domain; `verify` is `required` plus a verified certificate. */
export type DomainTls = "none" | "opportunistic" | "required" | "verify"

/** MX relay settings (no AUTH: MX hosts are not smarthosts). */
export interface Options extends Omit<StaticRelay.CommonOptions, "tls" | "auth" | "authRequireTls" | "timeouts"> {
  /** Port of every MX host (25; other values are for tests and private networks). */
  readonly port?: number | undefined
  /** Default TLS use: `opportunistic`. */
  readonly tls?: DomainTls | undefined
  /** Default false here: MX certificates rarely match; `verify` in `tlsPolicy` asks for it per domain. */
  readonly tlsVerify?: boolean | undefined
  /** Per recipient domain (lowercase): overrides `tls`. */
  readonly tlsPolicy?: Readonly<Record<string, DomainTls>> | undefined
  /** Per recipient domain (lowercase): `host`, `host:port`, `[IPv6]:port` instead of its MX. */
  readonly forceMx?: Readonly<Record<string, string>> | undefined
  readonly timeouts?: (StaticRelay.Timeouts & {
    /** Each DNS query. Default 30 000. */
    readonly dnsMs?: number | undefined
  }) | undefined
  /** Use AAAA records. Default true. */
  readonly ipv6?: boolean | undefined
  /** Try IPv6 addresses of a host before its IPv4 ones. Default false. */
  readonly preferIpv6?: boolean | undefined
  /** Domains delivered at once within an attempt. Default 4. */
  readonly concurrency?: number | undefined
}

/** `556 5.1.10 Recipient address has null MX` (RFC 7505 §3.2). */
export const nullMx = (domain: string): Reply.Reply => Reply.make(556, "5.1.10", `Recipient address has null MX: ${domain}`)
/** `550 5.1.2 Domain not found`. */
export const domainNotFound = (domain: string): Reply.Reply => Reply.make(550, "5.1.2", `Domain not found: ${domain}`)
/** `451 4.4.3 DNS lookup failed` (transient: timeout, SERVFAIL, refused). */
export const dnsFailed = (name: string, reason: string): Reply.Reply =>
  Reply.make(451, "4.4.3", `DNS lookup failed for ${name}: ${reason}`)
/** `550 5.1.3` for a recipient without a domain. */
export const noDomain = (address: string): Reply.Reply => Reply.make(550, "5.1.3", `Recipient address has no domain: ${address}`)

/** The recipient's domain, lowercase (a domain literal keeps its brackets), or undefined. */
export const domainOf = (address: string): string | undefined => {
  const at = address.lastIndexOf("@")
  if (at < 0 || at === address.length - 1) return undefined
  return address.slice(at + 1).toLowerCase().replace(/\.$/, "")
}

/** Parses a `forceMx` value: `host`, `host:port`, `[v6]:port`, `[v6]`, a bare IPv6 address. */
export const parseHostPort = (s: string, defaultPort: number): { readonly host: string; readonly port: number } | undefined => {
  const v = s.trim()
  const bracket = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(v)
  if (bracket !== null) return portOk(bracket[1]!, bracket[2], defaultPort)
  if ((v.match(/:/g) ?? []).length > 1) return StaticRelay.ipLiteral(v) !== undefined ? { host: v, port: defaultPort } : undefined
  const m = /^([^:\s]+)(?::(\d{1,5}))?$/.exec(v)
  return m === null ? undefined : portOk(m[1]!, m[2], defaultPort)
}

const portOk = (host: string, port: string | undefined, defaultPort: number) => {
  const p = port === undefined ? defaultPort : Number(port)
  return p >= 1 && p <= 65535 ? { host, port: p } : undefined
}

type Lookup<A> = Effect.Effect<A, Reply.Reply>

/**
 * An MX relay (see the module header); its connection pool lives in the
 * current scope. An invalid `forceMx` value throws `TypeError` here.
 */
export const make = (
  options: Options
): Effect.Effect<Relay.Relay["Service"], never, Scope.Scope | Transport.Connector | Dns.Dns> =>
  Effect.gen(function*() {
    const dns = yield* Dns.Dns
    const connector = yield* Transport.Connector
    const pool = yield* Pool.make<SmtpConnection.SmtpConnection>({ quitTimeoutMs: options.timeouts?.quitMs ?? 10_000, ...options.pool })
    const port = options.port ?? 25
    const dnsMs = options.timeouts?.dnsMs ?? 30_000
    const useIpv6 = options.ipv6 ?? true
    const preferIpv6 = options.preferIpv6 ?? false
    const session = StaticRelay.sessionConfig({ ...options, authRequireTls: true, tls: undefined }, "smtp")
    const forced = new Map<string, { host: string; port: number }>()
    for (const [domain, value] of Object.entries(options.forceMx ?? {})) {
      const hp = parseHostPort(value, port)
      if (hp === undefined) throw new TypeError(`forceMx.${domain}: expected host[:port], got ${JSON.stringify(value)}`)
      forced.set(domain.toLowerCase(), hp)
    }
    const policy = new Map(Object.entries(options.tlsPolicy ?? {}).map(([d, p]) => [d.toLowerCase(), p]))

    /** One DNS query with our time limit; `undefined` when there is no such record. */
    const query = <T extends Dns.RecordType>(name: string, type: T): Effect.Effect<ReadonlyArray<Dns.RecordFor<T>>, Dns.DnsError> =>
      dns.resolve(name, type).pipe(
        Effect.timeoutOption(dnsMs),
        Effect.flatMap(Option.match({
          onNone: () => Effect.fail(new Dns.DnsError({ reason: "Timeout", method: "resolve", hostname: name, recordType: type })),
          onSome: (records) => Effect.succeed(records as ReadonlyArray<Dns.RecordFor<T>>)
        })),
        Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed([]))
      )

    /** The addresses of a host name, IPv4 first unless `preferIpv6`; [] when it has none. */
    const addresses = (name: string): Effect.Effect<ReadonlyArray<string>, Dns.DnsError> =>
      Effect.gen(function*() {
        const [v4, v6] = yield* Effect.all([
          Effect.exit(query(name, "A")),
          useIpv6 ? Effect.exit(query(name, "AAAA")) : Effect.succeed(Exit.succeed([] as ReadonlyArray<Dns.Aaaa>))
        ], { concurrency: 2 })
        const a = Exit.isSuccess(v4) ? v4.value.map((r) => NetAddress.formatIp(r.address)) : []
        const aaaa = Exit.isSuccess(v6) ? v6.value.map((r) => NetAddress.formatIp(r.address)) : []
        if (a.length === 0 && aaaa.length === 0) {
          // a real failure wins over "no records"
          const e = Option.orElse(Exit.findErrorOption(v4), () => Exit.findErrorOption(v6))
          if (e._tag === "Some") return yield* Effect.fail(e.value)
        }
        return preferIpv6 ? [...aaaa, ...a] : [...a, ...aaaa]
      })

    const endpointsOf = (name: string, hostPort: number, what: string): Lookup<ReadonlyArray<Transport.Endpoint>> =>
      addresses(name).pipe(
        Effect.mapError((e) => dnsFailed(name, e.reason)),
        Effect.flatMap((list) =>
          list.length === 0
            ? Effect.fail(Reply.make(451, "4.4.4", `No address found for ${what} ${name}`))
            : Effect.succeed(list.map((address): Transport.Endpoint => ({ _tag: "Inet", address, port: hostPort })))
        )
      )

    const hostAt = (host: string, hostPort: number): SmtpDelivery.Host => {
      const literal = StaticRelay.ipLiteral(host)
      if (literal !== undefined) {
        return { name: undefined, endpoints: Effect.succeed([{ _tag: "Inet", address: literal, port: hostPort }]) }
      }
      const name = host.replace(/\.$/, "")
      return { name, endpoints: endpointsOf(name, hostPort, "host") }
    }

    /** The hosts to try for a domain, in order, or the reply every recipient of it gets. */
    const hostsFor = (domain: string): Lookup<ReadonlyArray<SmtpDelivery.Host>> =>
      Effect.gen(function*() {
        const force = forced.get(domain)
        if (force !== undefined) return [hostAt(force.host, force.port)]
        if (domain.startsWith("[")) {
          const literal = StaticRelay.ipLiteral(domain)
          if (literal === undefined) return yield* Effect.fail(Reply.make(550, "5.1.2", `Bad domain literal: ${domain}`))
          return [{ name: undefined, endpoints: Effect.succeed([{ _tag: "Inet", address: literal, port }]) }]
        }
        const mx = yield* Effect.exit(query(domain, "MX"))
        if (Exit.isFailure(mx)) {
          const e = Exit.findErrorOption(mx)
          const reason = e._tag === "Some" ? e.value.reason : "Unknown"
          return yield* Effect.fail(reason === "BadName" ? domainNotFound(domain) : dnsFailed(domain, reason))
        }
        const records = mx.value.filter((r) => r.exchange !== "." && r.exchange !== "")
        if (mx.value.length > 0 && records.length === 0) return yield* Effect.fail(nullMx(domain))
        if (records.length === 0) {
          // no MX: the domain itself is the implicit MX (RFC 5321 §5.1)
          const list = yield* addresses(domain).pipe(Effect.mapError((e) => dnsFailed(domain, e.reason)))
          if (list.length === 0) return yield* Effect.fail(domainNotFound(domain))
          return [{ name: domain, endpoints: Effect.succeed(list.map((address): Transport.Endpoint => ({ _tag: "Inet", address, port }))) }]
        }
        const sorted = yield* byPreference(records)
        return sorted.map((r): SmtpDelivery.Host => {
          const name = r.exchange.replace(/\.$/, "")
          return { name, endpoints: endpointsOf(name, port, "MX host") }
        })
      })

    const tlsOf = (domain: string): { mode: SmtpConnection.TlsMode; verify: boolean } => {
      const p = policy.get(domain) ?? options.tls ?? "opportunistic"
      return p === "verify" ? { mode: "required", verify: true } : { mode: p, verify: options.tlsVerify ?? false }
    }

    const deliverDomain = (envelope: Envelope.Envelope, domain: string): Effect.Effect<Relay.RelayResult> =>
      Effect.gen(function*() {
        const hosts = yield* Effect.exit(hostsFor(domain))
        if (Exit.isFailure(hosts)) {
          const e = Exit.findErrorOption(hosts)
          const reply = e._tag === "Some" ? e.value : dnsFailed(domain, "Unknown")
          return Relay.all(envelope, reply, `dns; ${domain}`)
        }
        const t = tlsOf(domain)
        return yield* SmtpDelivery.deliver(
          pool,
          hosts.value,
          {
            session,
            tls: StaticRelay.tlsFor(envelope, t.mode, t.verify, options.tlsFallback ?? false, options.ca),
            connectTimeoutMs: options.timeouts?.connectMs ?? 30_000,
            maxAddresses: options.maxAddresses,
            localAddress: options.localAddress
          },
          SmtpDelivery.toMessage(envelope)
        ).pipe(Effect.provideService(Transport.Connector, connector))
      })

    const attempt = (envelope: Envelope.Envelope): Effect.Effect<Relay.RelayResult> =>
      Effect.gen(function*() {
        const n = envelope.recipients.length
        const out: Array<Relay.RecipientResult | undefined> = new Array(n).fill(undefined)
        const groups = new Map<string, Array<number>>()
        envelope.recipients.forEach((r, i) => {
          const d = domainOf(r)
          if (d === undefined) {
            const reply = noDomain(r)
            out[i] = { outcome: "permanent", reply }
            return
          }
          const g = groups.get(d)
          if (g === undefined) groups.set(d, [i])
          else g.push(i)
        })
        const results = yield* Effect.forEach(
          [...groups],
          ([domain, indexes]) =>
            Effect.map(deliverDomain(Envelope.withRecipients(envelope, indexes), domain), (result) => ({ indexes, result })),
          { concurrency: Math.max(1, options.concurrency ?? 4) }
        )
        const remotes = new Set<string>()
        const tls = new Set<string>()
        for (const { indexes, result } of results) {
          indexes.forEach((index, j) => {
            out[index] = result.recipients[j]
          })
          if (result.remote !== undefined) remotes.add(result.remote)
          if (result.tls !== undefined) tls.add(result.tls)
        }
        const lost = Reply.make(451, "4.3.0", "No result for recipient")
        return {
          recipients: out.map((r) => r ?? { outcome: "transient" as const, reply: lost }),
          remote: remotes.size === 0 ? undefined : [...remotes].join(", "),
          tls: tls.size === 0 ? undefined : [...tls].join(", ")
        }
      })

    return { attempt: (envelope) => attempt(envelope) }
  })

/** MX records by preference, equal preferences shuffled (RFC 5321 §5.1). */
const byPreference = (records: ReadonlyArray<Dns.Mx>): Effect.Effect<ReadonlyArray<Dns.Mx>> =>
  Effect.gen(function*() {
    const keyed: Array<{ record: Dns.Mx; tie: number }> = []
    for (const record of records) keyed.push({ record, tie: yield* Random.next })
    keyed.sort((a, b) => a.record.priority - b.record.priority || a.tie - b.tie)
    return keyed.map((k) => k.record)
  })

/** `make` as a layer providing `Relay`. */
export const layer = (options: Options): Layer.Layer<Relay.Relay, never, Transport.Connector | Dns.Dns> =>
  Layer.effect(Relay.Relay, make(options))
