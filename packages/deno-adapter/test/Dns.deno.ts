/**
 * Deno: `DenoDns` against a real DNS server, dnsmasq on a loopback port,
 * serving MX, A, AAAA, TXT (SPF), PTR, SRV and CNAME records.
 */
import * as Effect from "effect/Effect"
import * as NetAddress from "effect/net/NetAddress"
import * as Assert from "../../../test/scenarios/Assert.ts"
import * as DenoDns from "../src/DenoDns.ts"
import { freePort } from "./DenoServeSupport.ts"

const DNSMASQ = Deno.env.get("DNSMASQ_BIN") ?? "/usr/sbin/dnsmasq"

const startDnsmasq = async () => {
  const port = freePort()
  const child = new Deno.Command(DNSMASQ, {
    args: [
      "-k", "-p", String(port), "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
      "-C", "/dev/null", "--pid-file=", "--log-facility=-",
      "--mx-host=example.test,mx1.example.test,10",
      "--mx-host=example.test,mx2.example.test,20",
      "--host-record=mx1.example.test,192.0.2.10,2001:db8::10",
      "--host-record=mx2.example.test,192.0.2.20",
      "--txt-record=example.test,v=spf1 ip4:192.0.2.0/24 -all",
      "--txt-record=multi.example.test,part one,part two",
      "--ptr-record=10.2.0.192.in-addr.arpa,mx1.example.test",
      "--srv-host=_submission._tcp.example.test,mx1.example.test,587,0,5",
      "--cname=alias.example.test,mx1.example.test"
    ],
    stdout: "null",
    stderr: "piped"
  }).spawn()
  const dns = DenoDns.make({ nameServer: { ipAddr: "127.0.0.1", port }, timeoutMs: 2_000 })
  // wait until it answers
  for (let i = 0; i < 100; i++) {
    const r = await Effect.runPromise(Effect.result(dns.resolve("mx1.example.test", "A")))
    if (r._tag === "Success") break
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    dns,
    stop: async () => {
      child.kill("SIGTERM")
      await child.status
      await child.stderr.cancel()
    }
  }
}

Deno.test({
  name: "DenoDns resolves MX, A, AAAA, TXT, PTR, SRV and CNAME from a real server, and looks up hosts",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { dns, stop } = await startDnsmasq()
    try {
      const run = <A, E>(e: Effect.Effect<A, E>) => Effect.runPromise(e)
      const mx = await run(dns.resolve("example.test", "MX"))
      Assert.equal(mx.map((r) => [r.priority, r.exchange]).sort(), [[10, "mx1.example.test."], [20, "mx2.example.test."]])
      Assert.equal((await run(dns.resolve("mx1.example.test", "A"))).map((r) => NetAddress.formatIp(r.address)), ["192.0.2.10"])
      Assert.equal((await run(dns.resolve("mx1.example.test", "AAAA"))).map((r) => NetAddress.formatIp(r.address)), ["2001:db8::10"])
      Assert.equal((await run(dns.resolve("example.test", "TXT"))).map((r) => r.chunks.join("")), ["v=spf1 ip4:192.0.2.0/24 -all"])
      Assert.equal((await run(dns.resolve("multi.example.test", "TXT")))[0]!.chunks, ["part one", "part two"])
      Assert.equal((await run(dns.reverse("192.0.2.10"))), ["mx1.example.test."])
      const srv = (await run(dns.resolve("_submission._tcp.example.test", "SRV")))[0]!
      Assert.equal([srv.target, srv.port, srv.priority, srv.weight], ["mx1.example.test.", 587, 0, 5])
      Assert.equal((await run(dns.resolve("alias.example.test", "CNAME")))[0]!.target, "mx1.example.test.")
      const addresses = (await run(dns.lookup("mx1.example.test"))).map(NetAddress.formatIp).sort()
      Assert.equal(addresses, ["192.0.2.10", "2001:db8::10"])
      Assert.equal((await run(dns.lookup("mx1.example.test", { family: "IPv4" }))).map(NetAddress.formatIp), ["192.0.2.10"])
      // failures carry effect's reasons
      const missing = await run(Effect.flip(dns.resolve("nothere.example.test", "A")))
      Assert.equal(missing.reason, "NotFound")
      const noMx = await run(Effect.flip(dns.resolve("mx1.example.test", "MX")))
      Assert.equal(noMx.reason, "NotFound")
      Assert.equal((await run(Effect.flip(dns.resolve("bad..name", "A")))).reason, "BadName")
      Assert.equal((await run(Effect.flip(dns.resolve("example.test", "TLSA")))).reason, "Unsupported")
    } finally {
      await stop()
    }
  }
})

Deno.test({
  name: "DenoDns: a silent name server times out with reason Timeout, within the limit",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // a UDP port nobody answers on (nothing listens; ICMP may also refuse): never NotFound
    const dns = DenoDns.make({ nameServer: { ipAddr: "192.0.2.1", port: 53 }, timeoutMs: 300 })
    const started = Date.now()
    const e = await Effect.runPromise(Effect.flip(dns.resolve("example.test", "MX")))
    Assert.ok(e.reason === "Timeout" || e.reason === "Refused", `reason ${e.reason}`)
    Assert.atMost(Date.now() - started, 3_000)
  }
})
