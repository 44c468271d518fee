/**
 * SPF and DNSBL over the real network path: a private dnsmasq on a loopback
 * port serves the test zone, and Node's `Dns` service (`@effect/platform-node`
 * `NodeDns`, pointed at it) answers `Spf.check` and `Dnsbl.lookup`.
 */
import * as NodeDns from "@effect/platform-node/NodeDns"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Dns from "effect/net/Dns"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Dnsbl from "@mailroom/protocol/policy/Dnsbl"
import * as Spf from "@mailroom/protocol/policy/Spf"
import * as Params from "@mailroom/protocol/smtp/Params"
import * as Reply from "@mailroom/protocol/smtp/Reply"
import type { Facts } from "@mailroom/protocol/smtp/ServerModel"
import { type Dnsmasq, hasDnsmasq, startDnsmasq } from "../support/dnsmasq.ts"

const RECORDS = [
  // example.test: its MX, a relay by name, a partner by include, softfail for the rest
  `--txt-record=example.test,v=spf1 mx a:relay.example.test include:_spf.partner.test ~all`,
  "--mx-host=example.test,mx.example.test,10",
  "--host-record=mx.example.test,192.0.2.10",
  "--host-record=relay.example.test,192.0.2.20,2001:db8::20",
  `--txt-record=_spf.partner.test,v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:5::/48 -all`,
  // strict.test: hard fail with an exp= explanation split over two character strings
  `--txt-record=strict.test,v=spf1 ip4:192.0.2.0/24 -all exp=why.strict.test`,
  `--txt-record=why.strict.test,%{i} is not allowed to send ,for %{d}`,
  // a TXT record that is not SPF beside the SPF one
  `--txt-record=other.test,google-site-verification=abc`,
  `--txt-record=other.test,v=spf1 -all`,
  // a blocklist: 192.0.2.99 and 2001:db8::99 listed, 192.0.2.98 with an ignored code
  "--host-record=99.2.0.192.bl.test,127.0.0.2",
  `--txt-record=99.2.0.192.bl.test,Listed by bl.test; see https://bl.test/lookup?192.0.2.99`,
  "--host-record=9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test,127.0.0.4",
  "--host-record=98.2.0.192.bl.test,127.255.255.254"
]

let dnsmasq: Dnsmasq
let layer: Layer.Layer<Dns.Dns>

beforeAll(async () => {
  if (!hasDnsmasq()) throw new Error("dnsmasq is not installed (/usr/sbin/dnsmasq); .ci/run installs it")
  dnsmasq = await startDnsmasq(["test"], RECORDS)
  layer = Layer.effect(Dns.Dns, NodeDns.make({ nameServers: [dnsmasq.server], timeout: "2 seconds", tries: 1 })).pipe(
    Layer.orDie
  )
})

afterAll(async () => {
  await dnsmasq?.stop()
})

const run = <A>(e: Effect.Effect<A, never, Dns.Dns>): Promise<A> =>
  Effect.runPromise(e.pipe(Effect.provide(layer), Effect.provide(Logger.layer([]))))

const check = (ip: string, sender: string) => run(Spf.check({ ip, sender, helo: "client.test", receiver: "mx.local.test" }))

describe("Spf over dnsmasq", () => {
  it("passes an MX host, a named relay (IPv4 and IPv6) and an included partner", async () => {
    expect(await check("192.0.2.10", "alice@example.test")).toEqual({
      result: "pass",
      identity: "mailfrom",
      domain: "example.test",
      mechanism: "mx"
    })
    expect(await check("192.0.2.20", "alice@example.test")).toMatchObject({ result: "pass", mechanism: "a:relay.example.test" })
    expect(await check("2001:db8::20", "alice@example.test")).toMatchObject({ result: "pass", mechanism: "a:relay.example.test" })
    expect(await check("198.51.100.77", "alice@example.test")).toMatchObject({
      result: "pass",
      mechanism: "include:_spf.partner.test"
    })
  })

  it("softfails the rest of example.test", async () => {
    expect(await check("203.0.113.5", "alice@example.test")).toEqual({
      result: "softfail",
      identity: "mailfrom",
      domain: "example.test",
      mechanism: "~all"
    })
  })

  it("fails strict.test with its explanation, joined from two character strings", async () => {
    expect(await check("203.0.113.5", "bob@strict.test")).toEqual({
      result: "fail",
      identity: "mailfrom",
      domain: "strict.test",
      mechanism: "-all",
      explanation: "203.0.113.5 is not allowed to send for strict.test"
    })
  })

  it("picks the SPF record among other TXT records, and gives none for a domain without one", async () => {
    expect((await check("192.0.2.1", "x@other.test")).result).toBe("fail")
    expect(await check("192.0.2.1", "x@nothing.test")).toEqual({ result: "none", identity: "mailfrom", domain: "nothing.test" })
  })

  it("refuses MAIL through the enforcing validator", async () => {
    const v = Spf.enforce({ receiver: "mx.local.test", actions: { fail: { reply: "550 5.7.23 {reason}" } } })
    const facts: Facts = {
      remote: { _tag: "Inet", address: "203.0.113.5", port: 4000 },
      local: { _tag: "Inet", address: "127.0.0.1", port: 25 },
      proxied: undefined,
      hello: { verb: "EHLO", domain: "client.test" },
      tls: undefined,
      auth: undefined,
      protocol: "ESMTP",
      sender: undefined,
      mailParams: undefined,
      recipients: []
    }
    const d = await run(v.mail!(facts, { local: "bob", domain: "strict.test" }, Params.emptyMail))
    expect(Reply.encodeString(d.reply!)).toBe("550 5.7.23 203.0.113.5 is not allowed to send for strict.test\r\n")
  })
})

describe("Dnsbl over dnsmasq", () => {
  it("finds IPv4 and IPv6 listings with their TXT reason, honours ignore, and passes clean clients", async () => {
    expect(await run(Dnsbl.lookup("192.0.2.99", ["bl.test"]))).toEqual({
      zone: "bl.test",
      ip: "192.0.2.99",
      codes: ["127.0.0.2"],
      reason: "Listed by bl.test; see https://bl.test/lookup?192.0.2.99"
    })
    expect(await run(Dnsbl.lookup("2001:db8::99", ["bl.test"]))).toEqual({
      zone: "bl.test",
      ip: "2001:db8::99",
      codes: ["127.0.0.4"],
      reason: undefined
    })
    expect(await run(Dnsbl.lookup("192.0.2.98", [{ zone: "bl.test", ignore: ["127.255.255.254"] }]))).toBeUndefined()
    expect(await run(Dnsbl.lookup("192.0.2.1", ["bl.test"]))).toBeUndefined()
  })

  it("refuses a listed client at the banner", async () => {
    const v = Dnsbl.validators({ zones: ["bl.test"] })
    const facts: Facts = {
      remote: { _tag: "Inet", address: "192.0.2.99", port: 4001 },
      local: { _tag: "Inet", address: "127.0.0.1", port: 25 },
      proxied: undefined,
      hello: undefined,
      tls: undefined,
      auth: undefined,
      protocol: "SMTP",
      sender: undefined,
      mailParams: undefined,
      recipients: []
    }
    const d = await run(v.connect!(facts))
    expect(Reply.encodeString(d.reply!)).toBe(
      "554 5.7.1 Service unavailable; client [192.0.2.99] blocked using bl.test; Listed by bl.test; see https://bl.test/lookup?192.0.2.99\r\n"
    )
  })
})
