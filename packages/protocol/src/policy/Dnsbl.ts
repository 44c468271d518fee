/**
 * DNS blocklists (RFC 5782): is the client's address listed in one of the
 * configured zones? The query name is the address's labels reversed under
 * the zone (`2.0.0.127.zen.example` for 127.0.0.2, 32 reversed nibbles for
 * IPv6); a listing is an A record in 127.0.0.0/8 that is not in the zone's
 * `ignore` list (e.g. Spamhaus's 127.255.255.x "query refused" codes) and,
 * when `codes` are given, is one of them. The zone's TXT record at the same
 * name, when there is one, is the reason put into the reply:
 *
 * `554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.example; Listed since 2024`
 *
 * As validators it refuses at connect (the banner: the client gets the
 * reply and the connection closes), at MAIL or at each RCPT (the result is
 * remembered per session). A DNS failure or a slow zone never blocks: it
 * is logged and the client is accepted.
 *
 * What it deliberately does not do: domain-based lists (RHSBL), scoring
 * across zones, or caching beyond one session (the resolver caches).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Dns from "effect/net/Dns"
import * as NetAddress from "effect/net/NetAddress"
import type { Facts } from "../smtp/ServerModel.ts"
import * as Decision from "./Decision.ts"
import * as Ip from "./Ip.ts"
import * as ReplyTemplate from "./ReplyTemplate.ts"
import type * as Validators from "./Validators.ts"

/** One zone and how to read its answers. */
export interface ZoneOptions {
  /** e.g. `zen.spamhaus.org`. */
  readonly zone: string
  /** Answers that do not count as a listing: `"127.255.255.254"`, or a last octet `"254"` for 127.0.0.x. */
  readonly ignore?: ReadonlyArray<string> | undefined
  /** When given, only these answers count (same forms as `ignore`). */
  readonly codes?: ReadonlyArray<string> | undefined
}

/** A zone as configured: its name, or its options. */
export type ZoneInput = string | ZoneOptions

/** Why a client is refused. */
export interface Listing {
  readonly zone: string
  /** The client address, as text (IPv6 compressed). */
  readonly ip: string
  /** The 127.0.0.x answers that counted. */
  readonly codes: ReadonlyArray<string>
  /** The zone's TXT record, when it has one. */
  readonly reason: string | undefined
}

export interface Options {
  readonly zones: ReadonlyArray<ZoneInput>
  /** Where to refuse: the banner (default), MAIL or each RCPT. */
  readonly at?: "connect" | "mail" | "rcpt" | undefined
  /** The refusal; `{ip}`, `{zone}`, `{reason}` (the TXT text) and `{detail}` (`; ` + the TXT text, or nothing) are filled. */
  readonly reply?: string | ReplyTemplate.Template | undefined
  /** Time allowed for one zone's lookups; past it the zone is skipped [5 s]. */
  readonly timeoutMs?: number | undefined
  /** At MAIL/RCPT, leave authenticated clients alone [true]. */
  readonly skipAuthenticated?: boolean | undefined
}

/** The default refusal, after Postfix's `reject_rbl_client`. */
export const defaultReply = "554 5.7.1 Service unavailable; client [{ip}] blocked using {zone}{detail}"

const zoneOf = (z: ZoneInput): ZoneOptions => (typeof z === "string" ? { zone: z } : z)

const normalizeCode = (c: string): string => (/^\d{1,3}$/.test(c.trim()) ? `127.0.0.${c.trim()}` : c.trim())

/** The name to query for `ip` in `zone`: reversed octets or nibbles, then the zone. */
export const queryName = (ip: Ip.Ip, zone: string): string => {
  const z = zone.endsWith(".") ? zone.slice(0, -1) : zone
  return `${Ip.labels(ip).reverse().join(".")}.${z}`
}

type ZoneAnswer =
  | { readonly _tag: "Listed"; readonly listing: Listing }
  | { readonly _tag: "Clear" }
  | { readonly _tag: "Error"; readonly zone: string; readonly message: string }

const checkZone = (dns: Dns.Dns["Service"], ip: Ip.Ip, z: ZoneOptions, timeoutMs: number): Effect.Effect<ZoneAnswer> => {
  const name = queryName(ip, z.zone)
  const ignore = new Set((z.ignore ?? []).map(normalizeCode))
  const codes = z.codes ? new Set(z.codes.map(normalizeCode)) : undefined
  const run = Effect.gen(function*() {
    const answers = yield* dns.resolve(name, "A")
    const counted = answers
      .map((r) => NetAddress.formatIp(r.address))
      .filter((a) => a.startsWith("127.") && !ignore.has(a) && (codes === undefined || codes.has(a)))
    if (counted.length === 0) return { _tag: "Clear" } as ZoneAnswer
    const reason = yield* dns.resolve(name, "TXT").pipe(
      Effect.map((txt) => txt[0]!.chunks.join("")),
      Effect.orElseSucceed(() => undefined)
    )
    return { _tag: "Listed", listing: { zone: z.zone, ip: Ip.format(ip), codes: counted, reason } } as ZoneAnswer
  }).pipe(
    Effect.catch((e: Dns.DnsError) =>
      Effect.succeed<ZoneAnswer>(e.reason === "NotFound" ? { _tag: "Clear" } : { _tag: "Error", zone: z.zone, message: e.message })
    ),
    Effect.catchDefect((d) => Effect.succeed<ZoneAnswer>({ _tag: "Error", zone: z.zone, message: String(d) }))
  )
  return Effect.map(
    Effect.timeoutOption(run, timeoutMs),
    (o): ZoneAnswer => (o._tag === "Some" ? o.value : { _tag: "Error", zone: z.zone, message: `no answer within ${timeoutMs} ms` })
  )
}

/**
 * Looks `address` up in every zone at once; the first listing in zone order
 * wins. Zones that fail or time out are logged (warning) and skipped. An
 * address that is not an IP gives `undefined`.
 */
export const lookup = (
  address: string,
  zones: ReadonlyArray<ZoneInput>,
  options: { readonly timeoutMs?: number | undefined } = {}
): Effect.Effect<Listing | undefined, never, Dns.Dns> =>
  Effect.gen(function*() {
    const ip = Ip.parse(address)
    if (!ip || zones.length === 0) return undefined
    const dns = yield* Dns.Dns
    const answers = yield* Effect.forEach(zones, (z) => checkZone(dns, ip, zoneOf(z), options.timeoutMs ?? 5000), {
      concurrency: "unbounded"
    })
    for (const a of answers) {
      if (a._tag === "Error") {
        yield* Effect.logWarning("dnsbl lookup failed; not blocking").pipe(
          Effect.annotateLogs({ zone: a.zone, client: Ip.format(ip), error: a.message })
        )
      }
    }
    const listed = answers.find((a): a is Extract<ZoneAnswer, { _tag: "Listed" }> => a._tag === "Listed")
    return listed?.listing
  })

/** The template values of a listing. */
export const templateValues = (l: Listing): Record<string, string> => ({
  ip: l.ip,
  zone: l.zone,
  reason: l.reason ?? "",
  detail: l.reason !== undefined && l.reason.trim().length > 0 ? `; ${l.reason}` : "",
  codes: l.codes.join(",")
})

const sessionKey = (facts: Facts): string | undefined =>
  facts.remote._tag === "Inet" ? `${facts.remote.address}|${facts.remote.port}` : undefined

/**
 * Validators refusing listed clients at connect, MAIL or RCPT (see
 * `Options`). Clients on a Unix socket are never looked up.
 */
export const validators = (options: Options): Validators.Validators<Dns.Dns> => {
  const template = ReplyTemplate.from(options.reply ?? defaultReply)
  const at = options.at ?? "connect"
  const skipAuth = options.skipAuthenticated ?? true
  const remembered = new Map<string, Listing | null>()

  const decide = (facts: Facts, remember: boolean): Effect.Effect<Decision.Decision, never, Dns.Dns> =>
    Effect.gen(function*() {
      if (facts.remote._tag !== "Inet") return Decision.accept
      if (at !== "connect" && skipAuth && facts.auth !== undefined) return Decision.accept
      const key = sessionKey(facts)
      let listing: Listing | null | undefined = remember && key !== undefined ? remembered.get(key) : undefined
      if (listing === undefined) {
        listing = (yield* lookup(facts.remote.address, options.zones, { timeoutMs: options.timeoutMs })) ?? null
        if (remember && key !== undefined) {
          remembered.set(key, listing)
          if (remembered.size > 10_000) remembered.delete(remembered.keys().next().value!)
        }
      }
      if (listing === null) return Decision.accept
      yield* Effect.logInfo("dnsbl listed").pipe(
        Effect.annotateLogs({ client: listing.ip, zone: listing.zone, codes: listing.codes.join(","), reason: listing.reason })
      )
      return Decision.reject(ReplyTemplate.render(template, templateValues(listing)))
    })

  switch (at) {
    case "connect":
      return { connect: (facts) => decide(facts, false) }
    case "mail":
      return { mail: (facts) => decide(facts, false) }
    case "rcpt":
      return {
        rcpt: (facts) => decide(facts, true),
        close: (facts) =>
          Effect.sync(() => {
            const key = sessionKey(facts)
            if (key !== undefined) remembered.delete(key)
          })
      }
  }
}
