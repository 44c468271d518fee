/**
 * effect's `Dns` service (`effect/net/Dns`) on Deno, over `Deno.resolveDns`,
 * with a configurable name server (`{ ipAddr, port }`): the resolver the MX
 * relay and SPF use. Record answers are converted to effect's record values
 * (names fully qualified with a trailing dot, TXT and CAA text decoded as
 * UTF-8, escaped bytes in PTR and SOA names decoded), and every query is
 * bounded by `timeoutMs`.
 *
 * `lookup` (host name → addresses) queries A and AAAA records through the
 * same resolver, so it does not read the hosts file: an MTA resolving MX
 * hosts wants DNS. IP literals and `localhost` are answered directly.
 * TLSA is not offered by `Deno.resolveDns` and fails with `Unsupported`.
 *
 * Needs `--allow-net` (for the name server).
 *
 * What it deliberately does not do: cache (put a caching resolver such as
 * unbound next to the MTA), or DNSSEC validation.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Dns from "effect/net/Dns"
import * as Host from "effect/net/Host"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"

/** Options of the Deno resolver. */
export interface Options {
  /** The name server to ask; the system's (`/etc/resolv.conf`) when omitted. */
  readonly nameServer?: { readonly ipAddr: string; readonly port?: number | undefined } | undefined
  /** Time limit of one query, ms. Default 5 000. */
  readonly timeoutMs?: number | undefined
}

type DenoRecordType = Deno.RecordType

const decoder = new TextDecoder()

/** Adds the root dot unless the name ends with an unescaped one. */
const absoluteName = (name: string): string => {
  if (name.endsWith(".")) {
    let backslashes = 0
    for (let i = name.length - 2; i >= 0 && name[i] === "\\"; i--) backslashes++
    if (backslashes % 2 === 0) return name
  }
  return `${name}.`
}

const domainName = (name: string): Host.DomainName => Host.domainNameFromStringUnsafe(absoluteName(name))

/**
 * The text of a name as `Deno.resolveDns` writes it: bytes as `\DDD` octal
 * escapes, other specials as `\x`; keeps only the `\.` and `\\` escapes.
 */
const nameText = (name: string): string => {
  if (!name.includes("\\")) return absoluteName(name)
  const bytes: Array<number> = []
  const encoder = new TextEncoder()
  for (const [part, digits, escaped] of name.matchAll(/\\(\d{3})|\\(.)|[^\\]+|\\/gsu)) {
    if (digits !== undefined) {
      const byte = Number.parseInt(digits, 8)
      if (byte === 46 || byte === 92) bytes.push(92)
      bytes.push(byte)
    } else if (escaped !== undefined) {
      if (escaped === "." || escaped === "\\") bytes.push(92)
      bytes.push(...encoder.encode(escaped))
    } else {
      bytes.push(...encoder.encode(part))
    }
  }
  return absoluteName(decoder.decode(Uint8Array.from(bytes)))
}

/** Deno decodes TXT and CAA strings one byte per character; read them as UTF-8. */
const utf8FromLatin1 = (value: string): string =>
  // deno-lint-ignore no-control-regex
  /[^\x00-\x7f]/.test(value) ? decoder.decode(Uint8Array.from(value, (c) => c.charCodeAt(0))) : value

const errorOf = (cause: unknown, method: Dns.DnsError["method"], hostname: string, recordType?: Dns.RecordType): Dns.DnsError => {
  const message = cause instanceof Error ? cause.message : String(cause)
  const reason: Dns.DnsErrorReason = cause instanceof Deno.errors.NotFound || /no records found|NXDomain/i.test(message)
    ? "NotFound"
    : cause instanceof Deno.errors.TimedOut || (cause instanceof DOMException && cause.name === "TimeoutError") || /timed? ?out/i.test(message)
    ? "Timeout"
    : cause instanceof Deno.errors.ConnectionRefused || /refused/i.test(message)
    ? "Refused"
    : /SERVFAIL|server failure/i.test(message)
    ? "ServerFailure"
    : "Unknown"
  return new Dns.DnsError({ reason, method, hostname, recordType, cause })
}

/** Converts entries, skipping those that are not representable; all skipped → `InvalidResponse`. */
const convert = <A>(name: string, type: Dns.RecordType, entries: ReadonlyArray<A>, make: (a: A) => Dns.DnsRecord): Effect.Effect<Array<Dns.DnsRecord>, Dns.DnsError> => {
  const out: Array<Dns.DnsRecord> = []
  let first: unknown = undefined
  for (const e of entries) {
    const r = Result.try(() => make(e))
    if (Result.isSuccess(r)) out.push(r.success)
    else first ??= r.failure
  }
  return out.length === 0 && entries.length > 0
    ? Effect.fail(new Dns.DnsError({ reason: "InvalidResponse", method: "resolve", hostname: name, recordType: type, cause: first }))
    : Effect.succeed(out)
}

/** Makes the `Dns` service over `Deno.resolveDns` (see the module header). */
export const make = (options: Options = {}): Dns.Dns["Service"] => {
  const timeoutMs = options.timeoutMs ?? 5_000
  const nameServer = options.nameServer === undefined
    ? undefined
    : { ipAddr: options.nameServer.ipAddr, port: options.nameServer.port ?? 53 }

  const query = <T extends DenoRecordType>(name: string, type: T, method: Dns.DnsError["method"], recordType: Dns.RecordType) =>
    Effect.tryPromise({
      try: (signal) =>
        Deno.resolveDns(name, type as "A", {
          signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
          ...(nameServer !== undefined ? { nameServer } : {})
        }) as Promise<unknown> as Promise<ReadonlyArray<unknown>>,
      catch: (cause) => errorOf(cause, method, name, recordType)
    })

  const resolve = (name: Host.DomainName, type: Dns.RecordType): Effect.Effect<ReadonlyArray<Dns.DnsRecord>, Dns.DnsError> => {
    switch (type) {
      case "A":
      case "AAAA":
        return Effect.flatMap(query(name, type, "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<string>, (a) => Dns.makeRecordUnsafe(type, { address: NetAddress.ipFromStringUnsafe(a) as never })))
      case "CNAME":
        return Effect.flatMap(query(name, "CNAME", "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<string>, (t) => Dns.makeRecordUnsafe("CNAME", { target: domainName(t) })))
      case "NS":
        return Effect.flatMap(query(name, "NS", "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<string>, (h) => Dns.makeRecordUnsafe("NS", { host: domainName(h) })))
      case "PTR":
        return Effect.flatMap(query(name, "PTR", "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<string>, (h) => Dns.makeRecordUnsafe("PTR", { host: nameText(h) })))
      case "MX":
        return Effect.flatMap(query(name, "MX", "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<Deno.MxRecord>, (mx) =>
            Dns.makeRecordUnsafe("MX", { exchange: domainName(mx.exchange), priority: mx.preference })))
      case "TXT":
        return Effect.flatMap(query(name, "TXT", "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<ReadonlyArray<string>>, (chunks) =>
            Dns.makeRecordUnsafe("TXT", { chunks: chunks.map(utf8FromLatin1) as unknown as readonly [string, ...Array<string>] })))
      case "SRV":
        return Effect.flatMap(query(name, "SRV", "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<Deno.SrvRecord>, (srv) =>
            Dns.makeRecordUnsafe("SRV", { target: domainName(srv.target), port: srv.port, priority: srv.priority, weight: srv.weight })))
      case "CAA":
        return Effect.flatMap(query(name, "CAA", "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<Deno.CaaRecord>, (caa) =>
            Dns.makeRecordUnsafe("CAA", { critical: caa.critical, tag: caa.tag, value: utf8FromLatin1(caa.value) })))
      case "NAPTR":
        return Effect.flatMap(query(name, "NAPTR", "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<Deno.NaptrRecord>, (n) =>
            Dns.makeRecordUnsafe("NAPTR", {
              order: n.order,
              preference: n.preference,
              flags: n.flags,
              service: n.services,
              regexp: n.regexp,
              replacement: domainName(n.replacement)
            })))
      case "SOA":
        return Effect.flatMap(query(name, "SOA", "resolve", type), (xs) =>
          convert(name, type, xs as ReadonlyArray<Deno.SoaRecord>, (soa) =>
            Dns.makeRecordUnsafe("SOA", {
              primary: domainName(soa.mname),
              admin: nameText(soa.rname),
              serial: soa.serial >>> 0,
              refresh: Duration.seconds(soa.refresh >>> 0),
              retry: Duration.seconds(soa.retry >>> 0),
              expire: Duration.seconds(soa.expire >>> 0),
              minimum: Duration.seconds(soa.minimum >>> 0)
            })))
      case "TLSA":
        return Effect.fail(new Dns.DnsError({ reason: "Unsupported", method: "resolve", hostname: name, recordType: "TLSA" }))
    }
  }

  const lookup = (host: Host.DomainName, family: NetAddress.IpFamily | undefined): Effect.Effect<ReadonlyArray<NetAddress.IpAddress>, Dns.DnsError> => {
    const bare = host.endsWith(".") ? host.slice(0, -1) : host
    if (bare === "localhost") {
      return Effect.succeed([NetAddress.ipFromStringUnsafe("127.0.0.1"), NetAddress.ipFromStringUnsafe("::1")])
    }
    const ask = (type: "A" | "AAAA") =>
      Effect.map(
        Effect.catch(query(host, type, "lookup", type), (e) => (e.reason === "NotFound" ? Effect.succeed([]) : Effect.fail(e))),
        (xs) => (xs as ReadonlyArray<string>).flatMap((a) => Result.isSuccess(NetAddress.ipFromString(a)) ? [NetAddress.ipFromStringUnsafe(a)] : [])
      )
    const families: ReadonlyArray<"A" | "AAAA"> = family === "IPv4" ? ["A"] : family === "IPv6" ? ["AAAA"] : ["AAAA", "A"]
    return Effect.map(Effect.all(families.map(ask), { concurrency: "unbounded" }), (lists) => lists.flat())
  }

  return Dns.make({ lookup, resolve })
}

/** A layer with the Deno resolver (see `make`). */
export const layer = (options: Options = {}): Layer.Layer<Dns.Dns> => Layer.succeed(Dns.Dns)(make(options))
