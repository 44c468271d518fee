/**
 * Unit tests of the MX relay's DNS decisions and host order, with an
 * in-memory resolver (`Dns.make`) and a connector that refuses every
 * connection but records where it was asked to go. The same relay against
 * dnsmasq and real SMTP servers is in test/interop/MxRelay.test.ts.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Dns from "effect/net/Dns"
import * as Host from "effect/net/Host"
import * as NetAddress from "effect/net/NetAddress"
import * as Random from "effect/Random"
import * as References from "effect/References"
import { describe, expect, it } from "vitest"
import * as Transport from "../src/edge/Transport.ts"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as MxRelay from "../src/relay/MxRelay.ts"
import * as Reply from "../src/smtp/Reply.ts"

type Zone = Record<string, ReadonlyArray<Dns.DnsRecord> | Dns.DnsErrorReason>

const mx = (priority: number, exchange: string) => Dns.makeRecordUnsafe("MX", { priority, exchange: Host.domainNameFromStringUnsafe(exchange) })
const a = (address: string) => Dns.makeRecordUnsafe("A", { address: NetAddress.ipFromStringUnsafe(address) as NetAddress.Ipv4Address })
const aaaa = (address: string) =>
  Dns.makeRecordUnsafe("AAAA", { address: NetAddress.ipFromStringUnsafe(address) as NetAddress.Ipv6Address })

/** A resolver over `zone`: `name TYPE` → records, or an error reason; anything else NotFound. */
const dnsOf = (zone: Zone): Dns.Dns["Service"] =>
  Dns.make({
    lookup: () => Effect.succeed([]),
    resolve: (name, type) => {
      const v = zone[`${name.replace(/\.$/, "")} ${type}`]
      if (typeof v === "string") return Effect.fail(new Dns.DnsError({ reason: v, method: "resolve", hostname: name, recordType: type }))
      return Effect.succeed(v ?? [])
    }
  })

/** Runs one attempt; every connection is refused and recorded. */
const attempt = async (zone: Zone, recipients: ReadonlyArray<string>, options: Partial<MxRelay.Options> = {}, seed = 1) => {
  const dialled: Array<string> = []
  const connector: Transport.Connector["Service"] = {
    connect: (o) =>
      Effect.suspend(() => {
        dialled.push(Transport.formatEndpoint(o.endpoint))
        return Effect.fail(new Transport.TransportError({ reason: "Connect", message: "connect ECONNREFUSED" }))
      })
  }
  const result = await Effect.runPromise(
    Effect.gen(function*() {
      const relay = yield* MxRelay.make({ ehlo: "relay.example.org", ...options })
      return yield* relay.attempt(Envelope.make({ sender: "s@example.org", recipients, message: new Uint8Array() }), 0)
    }).pipe(
      Effect.scoped,
      Random.withSeed(seed),
      Effect.provide(Layer.mergeAll(Layer.succeed(Transport.Connector)(connector), Layer.succeed(Dns.Dns)(dnsOf(zone)))),
      Effect.provideService(References.MinimumLogLevel, "Error")
    )
  )
  return { result, dialled, replies: result.recipients.map((r) => `${r.outcome} ${Reply.toString(r.reply)}`) }
}

describe("MxRelay (in-memory DNS)", () => {
  const zone: Zone = {
    "example.com MX": [mx(20, "mx2.example.com."), mx(10, "mx1.example.com."), mx(30, "mx3.example.com.")],
    "mx1.example.com A": [a("192.0.2.1")],
    "mx1.example.com AAAA": [aaaa("2001:db8::1")],
    "mx2.example.com A": [a("192.0.2.2"), a("192.0.2.22")],
    "mx3.example.com A": "Timeout",
    "servfail.example MX": "ServerFailure",
    "timeout.example MX": "Timeout",
    "refused.example MX": "Refused",
    "bad.example MX": "InvalidResponse",
    "nullmx.example MX": [mx(0, ".")],
    "mixed-null.example MX": [mx(0, "."), mx(10, "mx1.example.com.")],
    "implicit.example A": [a("192.0.2.9")],
    "v6only.example MX": [mx(10, "mx1.example.com.")]
  }

  it("tries every MX in preference order and every address of each, within one attempt", async () => {
    const r = await attempt(zone, ["u@example.com"])
    expect(r.dialled).toEqual(["192.0.2.1:25", "[2001:db8::1]:25", "192.0.2.2:25", "192.0.2.22:25"])
    // mx3's lookup timed out; the last transient failure is reported
    expect(r.replies).toEqual(["transient 451 4.4.3 DNS lookup failed for mx3.example.com: Timeout"])
  })

  it("stops after maxAddresses, prefers IPv6 when asked, and honours ipv6: false", async () => {
    expect((await attempt(zone, ["u@example.com"], { maxAddresses: 2 })).dialled).toEqual(["192.0.2.1:25", "[2001:db8::1]:25"])
    expect((await attempt(zone, ["u@example.com"], { maxAddresses: 2, preferIpv6: true })).dialled).toEqual([
      "[2001:db8::1]:25",
      "192.0.2.1:25"
    ])
    expect((await attempt(zone, ["u@example.com"], { maxAddresses: 2, ipv6: false })).dialled).toEqual(["192.0.2.1:25", "192.0.2.2:25"])
  })

  it("shuffles equal preferences with Effect's Random (both orders occur over seeds)", async () => {
    const equal: Zone = {
      "eq.example MX": [mx(10, "a.eq.example."), mx(10, "b.eq.example."), mx(5, "first.eq.example.")],
      "first.eq.example A": [a("192.0.2.100")],
      "a.eq.example A": [a("192.0.2.101")],
      "b.eq.example A": [a("192.0.2.102")]
    }
    const orders = new Set<string>()
    for (let seed = 0; seed < 16; seed++) {
      const r = await attempt(equal, ["u@eq.example"], {}, seed)
      expect(r.dialled[0]).toBe("192.0.2.100:25")
      orders.add(r.dialled.slice(1).join(" "))
    }
    expect([...orders].sort()).toEqual(["192.0.2.101:25 192.0.2.102:25", "192.0.2.102:25 192.0.2.101:25"])
  })

  it("classifies DNS answers: null MX, no domain, SERVFAIL/timeout/refused transient, never a bounce", async () => {
    const r = await attempt(zone, [
      "a@nullmx.example",
      "b@nx.example",
      "c@servfail.example",
      "d@timeout.example",
      "e@refused.example",
      "f@bad.example",
      "no-domain"
    ])
    expect(r.replies).toEqual([
      "permanent 556 5.1.10 Recipient address has null MX: nullmx.example",
      "permanent 550 5.1.2 Domain not found: nx.example",
      "transient 451 4.4.3 DNS lookup failed for servfail.example: ServerFailure",
      "transient 451 4.4.3 DNS lookup failed for timeout.example: Timeout",
      "transient 451 4.4.3 DNS lookup failed for refused.example: Refused",
      "transient 451 4.4.3 DNS lookup failed for bad.example: InvalidResponse",
      "permanent 550 5.1.3 Recipient address has no domain: no-domain"
    ])
    expect(r.dialled).toEqual([])
  })

  it("ignores a null MX listed beside real ones, and uses A records when there is no MX", async () => {
    expect((await attempt(zone, ["u@mixed-null.example"])).dialled).toEqual(["192.0.2.1:25", "[2001:db8::1]:25"])
    const implicit = await attempt(zone, ["u@implicit.example"])
    expect(implicit.dialled).toEqual(["192.0.2.9:25"])
    expect(implicit.replies).toEqual(["transient 451 4.4.1 Connection refused by 192.0.2.9:25"])
    expect(implicit.result.remote).toBe("dns; implicit.example")
  })

  it("forceMx and domain literals bypass DNS; an invalid forceMx is refused when the relay is made", async () => {
    const r = await attempt({}, ["a@forced.example", "b@[192.0.2.7]", "c@[IPv6:2001:db8::7]"], {
      forceMx: { "Forced.Example": "[2001:db8::5]:2525" }
    })
    expect(r.dialled.sort()).toEqual(["192.0.2.7:25", "[2001:db8::5]:2525", "[2001:db8::7]:25"])
    await expect(attempt({}, ["a@x.example"], { forceMx: { "x.example": "host:99999" } })).rejects.toThrow(
      "forceMx.x.example: expected host[:port]"
    )
  })

  it("parses host[:port] values", () => {
    expect(MxRelay.parseHostPort("smtp.example.net", 25)).toEqual({ host: "smtp.example.net", port: 25 })
    expect(MxRelay.parseHostPort("127.0.0.5:2525", 25)).toEqual({ host: "127.0.0.5", port: 2525 })
    expect(MxRelay.parseHostPort("[::1]:2525", 25)).toEqual({ host: "::1", port: 2525 })
    expect(MxRelay.parseHostPort("::1", 25)).toEqual({ host: "::1", port: 25 })
    expect(MxRelay.parseHostPort("a:b:c", 25)).toBeUndefined()
    expect(MxRelay.parseHostPort("host:0", 25)).toBeUndefined()
    expect(MxRelay.domainOf("User@Example.COM.")).toBe("example.com")
    expect(MxRelay.domainOf("nobody")).toBeUndefined()
  })
})
