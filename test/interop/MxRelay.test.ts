/**
 * The MX relay against a real DNS server (dnsmasq on a loopback port, with
 * Node's `Dns` service pointed at it) and real SMTP servers (smtp-sink) on
 * several 127.0.0.x addresses and ::1, all on one port: MX preference,
 * failover to the next MX within one attempt (host down, 421 greeting, no
 * address), shuffled equal preferences, the A fallback, null MX, NXDOMAIN,
 * REFUSED and timeouts, forceMx, domain literals, IPv6, TLS policy, and an
 * envelope spanning several domains.
 */
import * as dgram from "node:dgram"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as MxRelay from "@mailroom/protocol/relay/MxRelay"
import type * as Relay from "@mailroom/protocol/relay/Relay"
import { type Dnsmasq, startDnsmasq } from "../support/dnsmasq.ts"
import { freePort, hasIPv6Loopback, isBound } from "../support/ports.ts"
import { dumpArgs, type SmtpSink, startSmtpSink } from "../support/smtpSink.ts"
import { dnsLayer, envelope, replyText, runRelay, summary, textMessage } from "./RelayHarness.ts"

const EHLO = "relay.example.org"

let port = 0
let dns: Dnsmasq
let ipv6 = false
const sinks: Record<string, SmtpSink> = {}

/** The dumps of `sink` whose subject is `subject`. */
const arrived = (sink: SmtpSink | undefined, subject: string): ReadonlyArray<string> =>
  (sink?.messages() ?? []).filter((d) => d.includes(`\nSubject: ${subject}\n`))

beforeAll(async () => {
  ipv6 = await hasIPv6Loopback()
  const hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.6", "127.0.0.9", ...(ipv6 ? ["::1"] : [])]
  // one port free on every address used
  for (let tries = 0; port === 0 && tries < 20; tries++) {
    const p = await freePort("127.0.0.2")
    const taken = await Promise.all(hosts.map((h) => isBound(h, p)))
    if (!taken.some(Boolean)) port = p
  }
  sinks["mx1"] = await startSmtpSink({ host: "127.0.0.2", port })
  sinks["mx2"] = await startSmtpSink({ host: "127.0.0.3", port })
  sinks["fallback"] = await startSmtpSink({ host: "127.0.0.4", port })
  sinks["busy"] = await startSmtpSink({ host: "127.0.0.6", port, args: ["-Q", "CONNECT"] })
  if (ipv6) sinks["v6"] = await startSmtpSink({ host: "::1", port })
  dns = await startDnsmasq(["test"], [
    "--mx-host=good.test,mx1.good.test,10",
    "--mx-host=good.test,mx2.good.test,20",
    "--mx-host=failover.test,down.good.test,10",
    "--mx-host=failover.test,mx1.good.test,20",
    "--mx-host=busy.test,busy.good.test,10",
    "--mx-host=busy.test,mx2.good.test,20",
    "--mx-host=nohost.test,ghost.good.test,5",
    "--mx-host=nohost.test,mx2.good.test,50",
    "--mx-host=equal.test,mx1.good.test,10",
    "--mx-host=equal.test,mx2.good.test,10",
    "--mx-host=alldown.test,down.good.test,10",
    "--mx-host=v6.test,mx6.good.test,10",
    "--host-record=mx1.good.test,127.0.0.2",
    "--host-record=mx2.good.test,127.0.0.3",
    "--host-record=down.good.test,127.0.0.9",
    "--host-record=busy.good.test,127.0.0.6",
    "--host-record=afallback.test,127.0.0.4",
    "--host-record=mx6.good.test,::1",
    // RFC 7505 null MX: preference 0, the root name
    "--dns-rr=nullmx.test,15,000000"
  ])
}, 60_000)

afterAll(async () => {
  for (const s of Object.values(sinks)) await s.stop()
  await dns?.stop()
})

/** One attempt of a fresh MX relay resolving through dnsmasq (pool closed when it returns). */
const attempt = (
  recipients: ReadonlyArray<string>,
  subject: string,
  options: Partial<MxRelay.Options> = {},
  dnsServer?: string
): Promise<Relay.RelayResult> =>
  runRelay(
    Effect.gen(function*() {
      const relay = yield* MxRelay.make({ ehlo: EHLO, port, timeouts: { commandMs: 5_000, quitMs: 2_000 }, ...options })
      return yield* relay.attempt(envelope("sender@example.org", recipients, textMessage(subject)), 0)
    }),
    dnsLayer(dnsServer ?? dns.server, 1_000)
  )

describe("MxRelay over dnsmasq", () => {
  it("delivers to the most preferred MX", async () => {
    const r = await attempt(["a@good.test", "b@GOOD.test"], "preferred")
    expect(summary(r)).toEqual(["delivered 250 2.0.0", "delivered 250 2.0.0"])
    expect(r.remote).toBe("dns; mx1.good.test")
    expect(r.tls).toBe("none")
    const dumps = arrived(sinks["mx1"], "preferred")
    expect(dumps).toHaveLength(1)
    expect(dumpArgs(dumps[0]!, "X-Rcpt-Args")).toEqual(["<a@good.test>", "<b@GOOD.test>"])
    expect(arrived(sinks["mx2"], "preferred")).toEqual([])
  })

  it("fails over to the next MX within one attempt when the first is down", async () => {
    const r = await attempt(["a@failover.test"], "failover")
    expect(summary(r)).toEqual(["delivered 250 2.0.0"])
    expect(r.remote).toBe("dns; mx1.good.test")
    expect(arrived(sinks["mx1"], "failover")).toHaveLength(1)
  })

  it("fails over when the first MX greets with 421", async () => {
    const r = await attempt(["a@busy.test"], "busy")
    expect(summary(r)).toEqual(["delivered 250 2.0.0"])
    expect(r.remote).toBe("dns; mx2.good.test")
    expect(arrived(sinks["mx2"], "busy")).toHaveLength(1)
    expect(arrived(sinks["busy"], "busy")).toEqual([])
  })

  it("skips an MX host that has no address", async () => {
    const r = await attempt(["a@nohost.test"], "nohost")
    expect(summary(r)).toEqual(["delivered 250 2.0.0"])
    expect(arrived(sinks["mx2"], "nohost")).toHaveLength(1)
  })

  it("shuffles MX hosts of equal preference (Effect's Random, seeded)", async () => {
    const remotes = new Set<string | undefined>()
    for (let seed = 0; seed < 12; seed++) {
      const r = await runRelay(
        Effect.gen(function*() {
          const relay = yield* MxRelay.make({ ehlo: EHLO, port, pool: { idleTimeoutMs: 0 } })
          return yield* relay.attempt(envelope("s@example.org", ["a@equal.test"], textMessage(`equal ${seed}`)), 0)
        }).pipe(Random.withSeed(seed)),
        dnsLayer(dns.server)
      )
      expect(summary(r)).toEqual(["delivered 250 2.0.0"])
      remotes.add(r.remote)
    }
    expect([...remotes].sort()).toEqual(["dns; mx1.good.test", "dns; mx2.good.test"])
  })

  it("falls back to the A record of a domain without MX", async () => {
    const r = await attempt(["a@afallback.test"], "a fallback")
    expect(summary(r)).toEqual(["delivered 250 2.0.0"])
    expect(r.remote).toBe("dns; afallback.test")
    expect(arrived(sinks["fallback"], "a fallback")).toHaveLength(1)
  })

  it("bounces a domain with a null MX (RFC 7505) without connecting anywhere", async () => {
    const r = await attempt(["a@nullmx.test"], "null mx")
    expect(summary(r)).toEqual(["permanent 556 5.1.10"])
    expect(replyText(r)).toBe("556 5.1.10 Recipient address has null MX: nullmx.test")
  })

  it("bounces a domain that does not exist (NXDOMAIN)", async () => {
    const r = await attempt(["a@nx.test"], "nxdomain")
    expect(summary(r)).toEqual(["permanent 550 5.1.2"])
    expect(replyText(r)).toBe("550 5.1.2 Domain not found: nx.test")
  })

  it("defers (never bounces) when the DNS server refuses the query", async () => {
    const r = await attempt(["a@refused.example"], "refused")
    expect(summary(r)).toEqual(["transient 451 4.4.3"])
    expect(replyText(r)).toBe("451 4.4.3 DNS lookup failed for refused.example: Refused")
  })

  it("defers when the DNS server does not answer (timeout)", async () => {
    const silent = dgram.createSocket("udp4")
    await new Promise<void>((resolve) => silent.bind(0, "127.0.0.1", () => resolve()))
    try {
      const started = Date.now()
      const r = await attempt(["a@good.test"], "dns timeout", {}, `127.0.0.1:${silent.address().port}`)
      expect(summary(r)).toEqual(["transient 451 4.4.3"])
      expect(replyText(r)).toBe("451 4.4.3 DNS lookup failed for good.test: Timeout")
      expect(Date.now() - started).toBeLessThan(5_000)
    } finally {
      silent.close()
    }
  })

  it("defers when every MX is down", async () => {
    const r = await attempt(["a@alldown.test"], "all down")
    expect(summary(r)).toEqual(["transient 451 4.4.1"])
    expect(replyText(r)).toBe(`451 4.4.1 Connection refused by 127.0.0.9:${port}`)
    expect(r.remote).toBe("dns; down.good.test")
  })

  it("forceMx sends a domain to a fixed host:port without any lookup", async () => {
    const r = await attempt(["a@forced.test"], "forced", { forceMx: { "forced.test": `127.0.0.3:${port}` } })
    expect(summary(r)).toEqual(["delivered 250 2.0.0"])
    expect(r.remote).toBe("dns; [127.0.0.3]")
    expect(arrived(sinks["mx2"], "forced")).toHaveLength(1)
  })

  it("delivers to a domain literal", async () => {
    const r = await attempt(["postmaster@[127.0.0.3]"], "literal")
    expect(summary(r)).toEqual(["delivered 250 2.0.0"])
    expect(arrived(sinks["mx2"], "literal")).toHaveLength(1)
  })

  it("delivers over IPv6 (AAAA record)", async () => {
    if (!ipv6) throw new Error("no IPv6 loopback on this machine")
    const r = await attempt(["a@v6.test"], "ipv6")
    expect(summary(r)).toEqual(["delivered 250 2.0.0"])
    expect(r.remote).toBe("dns; mx6.good.test")
    const [dump] = arrived(sinks["v6"], "ipv6")
    expect(dump).toContain("X-Client-Addr: ipv6:::1\n")
  })

  it("required TLS per domain: no MX offers STARTTLS, so nothing is sent", async () => {
    const r = await attempt(["a@good.test"], "tls policy", { tlsPolicy: { "good.test": "required" } })
    expect(summary(r)).toEqual(["transient 421 4.7.10"])
    expect(replyText(r)).toBe("421 4.7.10 TLS required but not offered by smtp-sink")
    expect(arrived(sinks["mx1"], "tls policy")).toEqual([])
    expect(arrived(sinks["mx2"], "tls policy")).toEqual([])
  })

  it("splits an envelope by domain and merges the results back in recipient order", async () => {
    const r = await attempt(
      ["a@good.test", "b@nullmx.test", "c@nx.test", "d@afallback.test", "e@good.test", "nodomain"],
      "mixed"
    )
    expect(summary(r)).toEqual([
      "delivered 250 2.0.0",
      "permanent 556 5.1.10",
      "permanent 550 5.1.2",
      "delivered 250 2.0.0",
      "delivered 250 2.0.0",
      "permanent 550 5.1.3"
    ])
    const [toGood] = arrived(sinks["mx1"], "mixed")
    expect(dumpArgs(toGood!, "X-Rcpt-Args")).toEqual(["<a@good.test>", "<e@good.test>"])
    expect(dumpArgs(arrived(sinks["fallback"], "mixed")[0]!, "X-Rcpt-Args")).toEqual(["<d@afallback.test>"])
    expect(r.remote?.split(", ").sort()).toEqual(["dns; afallback.test", "dns; mx1.good.test", "dns; nullmx.test", "dns; nx.test"])
  })
})
