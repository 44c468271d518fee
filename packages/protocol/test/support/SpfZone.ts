/**
 * A `Dns` service built from the zone data of the OpenSPF / RFC 7208 test
 * suite (shared/conformance/spf), with the driver semantics its README
 * describes: SPF records are also served as TXT unless the name has TXT
 * records of its own (or `TXT: NONE`), a bare `TIMEOUT` entry times out
 * every type not listed before it, a per-type `TIMEOUT` value only that
 * type, missing names are NXDOMAIN except `error.*` (timeout), a label over
 * 63 octets times out, CNAMEs are followed one level, and a TXT value given
 * as a list is one record of several character strings.
 *
 * Names are not validated the way `Dns.make` would (the suite queries
 * names such as `foo:bar/baz.example.com`); records whose data `Dns.makeRecord`
 * refuses (such MX targets) are built as plain values of the same shape.
 */
import * as Effect from "effect/Effect"
import * as Dns from "effect/net/Dns"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"

type Entry =
  | { readonly _tag: "Timeout" }
  | { readonly _tag: "TypeTimeout"; readonly type: string }
  | { readonly _tag: "Record"; readonly type: string; readonly value: unknown }

export type Zone = ReadonlyMap<string, ReadonlyArray<Entry>>

const norm = (name: string): string => {
  const labels = name.split(".").filter((l) => l.length > 0)
  return labels.join(".").toLowerCase()
}

/** Builds the zone of one scenario from its parsed `zonedata`. */
export const fromZonedata = (zonedata: Record<string, ReadonlyArray<unknown>>): Zone => {
  const zone = new Map<string, Array<Entry>>()
  for (const [name, rrs] of Object.entries(zonedata)) {
    const entries: Array<Entry> = []
    const generated: Array<Entry> = []
    let hasTxt = false
    for (const rr of rrs ?? []) {
      if (rr === "TIMEOUT") {
        entries.push({ _tag: "Timeout" })
        continue
      }
      for (const [type, value] of Object.entries(rr as Record<string, unknown>)) {
        if (type === "TXT") hasTxt = true
        if (value === "TIMEOUT") {
          entries.push({ _tag: "TypeTimeout", type })
          continue
        }
        if (type === "SPF") generated.push({ _tag: "Record", type: "TXT", value })
        if (value === "NONE") continue
        entries.push({ _tag: "Record", type, value })
      }
    }
    if (!hasTxt) entries.push(...generated)
    zone.set(norm(name), entries)
  }
  return zone
}

// YAML "\xNN" escapes become U+00NN; the suite's driver encodes TXT strings as
// UTF-8 on the wire, and a resolver decodes them back as UTF-8.
const txtChunks = (value: unknown): Array<string> => {
  const list = Array.isArray(value) ? value.map(String) : [String(value)]
  return list.length === 0 ? [""] : list
}

const recordOf = (type: string, value: unknown): Dns.DnsRecord | undefined => {
  switch (type) {
    case "A":
    case "AAAA": {
      const ip = NetAddress.ipFromString(String(value))
      if (Result.isFailure(ip)) return undefined
      const address = ip.success
      if (type === "A" && !NetAddress.isIpv4Address(address)) return undefined
      if (type === "AAAA" && !NetAddress.isIpv6Address(address)) return undefined
      return type === "A"
        ? Dns.makeRecordUnsafe("A", { address: address as NetAddress.Ipv4Address })
        : Dns.makeRecordUnsafe("AAAA", { address: address as NetAddress.Ipv6Address })
    }
    case "TXT":
      return Dns.makeRecordUnsafe("TXT", { chunks: txtChunks(value) as unknown as readonly [string, ...Array<string>] })
    case "MX": {
      const [priority, host] = value as [number, string]
      const exchange = host === "" ? "." : String(host).toLowerCase()
      const made = Dns.makeRecord("MX", { priority, exchange: exchange as never })
      return Result.isSuccess(made) ? made.success : ({ _tag: "MX", priority, exchange } as unknown as Dns.Mx)
    }
    case "PTR":
      return Dns.makeRecordUnsafe("PTR", { host: String(value) })
    case "CNAME":
      return { _tag: "CNAME", target: String(value) } as unknown as Dns.Cname
    default:
      return undefined
  }
}

const timeout = (name: string, type: Dns.RecordType) =>
  Effect.fail(new Dns.DnsError({ reason: "Timeout", method: "resolve", hostname: name, recordType: type }))
const notFound = (name: string, type: Dns.RecordType) =>
  Effect.fail(new Dns.DnsError({ reason: "NotFound", method: "resolve", hostname: name, recordType: type }))

const lookupIn = (
  zone: Zone,
  raw: string,
  type: Dns.RecordType,
  depth: number
): Effect.Effect<ReadonlyArray<Dns.DnsRecord>, Dns.DnsError> => {
  if (raw.split(".").some((l) => l.length > 63)) return timeout(raw, type)
  const name = norm(raw)
  const entries = zone.get(name)
  if (entries === undefined) return name.startsWith("error.") ? timeout(name, type) : notFound(name, type)
  const out: Array<Dns.DnsRecord> = []
  let cname: string | undefined
  let seenType = false
  for (const e of entries) {
    if (e._tag === "Timeout") {
      if (!seenType) return timeout(name, type)
      break
    }
    if (e._tag === "TypeTimeout") {
      if (e.type === type) return timeout(name, type)
      continue
    }
    if (e.type === type) seenType = true
    if (e.type === "CNAME" && type !== "CNAME") cname = String(e.value)
    if (e.type !== type) continue
    const r = recordOf(e.type, e.value)
    if (r) out.push(r)
  }
  if (out.length === 0 && cname !== undefined && depth === 0) return lookupIn(zone, cname, type, 1)
  return out.length > 0 ? Effect.succeed(out) : notFound(name, type)
}

/** A `Dns` service answering from a suite zone (resolve only; `lookup` and `reverse` are not used by SPF). */
export const service = (zone: Zone): Dns.Dns["Service"] =>
  Dns.Dns.of({
    lookup: ((host: string) =>
      Effect.fail(new Dns.DnsError({ reason: "Unsupported", method: "lookup", hostname: String(host) }))) as never,
    resolve: ((name: string, type: Dns.RecordType) => lookupIn(zone, String(name), type, 0)) as never,
    reverse: ((address: unknown) =>
      Effect.fail(new Dns.DnsError({ reason: "Unsupported", method: "reverse", hostname: String(address) }))) as never
  })
