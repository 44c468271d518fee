import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Dns from "effect/net/Dns"
import * as NetAddress from "effect/net/NetAddress"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as Ip from "../src/policy/Ip.ts"
import * as ReplyTemplate from "../src/policy/ReplyTemplate.ts"
import * as Spf from "../src/policy/Spf.ts"
import * as SpfRecord from "../src/policy/SpfRecord.ts"
import * as Validators from "../src/policy/Validators.ts"
import * as Params from "../src/smtp/Params.ts"
import * as Reply from "../src/smtp/Reply.ts"
import type { Facts } from "../src/smtp/ServerModel.ts"

const txt = (...chunks: [string, ...Array<string>]) => Dns.makeRecordUnsafe("TXT", { chunks })
const a = (ip: string) => Dns.makeRecordUnsafe("A", { address: NetAddress.ipFromStringUnsafe(ip) as NetAddress.Ipv4Address })

const ZONE: Dns.StaticZone = {
  records: {
    "example.org": [txt("v=spf1 ip4:192.0.2.0/24 ~ip4:198.51.100.0/24 include:_spf.example.org -all exp=why.example.org")],
    "_spf.example.org": [txt("v=spf1 ip6:2001:db8::/32 -all")],
    "why.example.org": [txt("%{i} may not send for %{d} ", "(sender %{S})")],
    "broken.example": [txt("v=spf1 ip4:999.0.0.1 -all")],
    "neutral.example": [txt("v=spf1 ?all")],
    "mail.example.org": [txt("v=spf1 a -all"), a("203.0.113.5")]
  }
}

/** A Dns service over the static zone that counts its queries. */
const counting = (zone: Dns.StaticZone) => {
  const inner = Effect.runSync(Effect.fromResult(Dns.makeStatic(zone)))
  const seen: Array<string> = []
  const service = Dns.Dns.of({
    lookup: inner.lookup,
    reverse: inner.reverse,
    resolve: ((name: string, type: Dns.RecordType) => {
      seen.push(`${type} ${name}`)
      return inner.resolve(name, type)
    }) as Dns.Dns["Service"]["resolve"]
  })
  return { layer: Layer.succeed(Dns.Dns)(service), seen }
}

const runWith = <A>(e: Effect.Effect<A, never, Dns.Dns>, layer = Dns.layerStatic(ZONE)): Promise<A> =>
  Effect.runPromise(Effect.provide(e, layer) as Effect.Effect<A>)

const facts = (over: Partial<Facts> = {}): Facts => ({
  remote: { _tag: "Inet", address: "198.51.100.7", port: 40001 },
  local: { _tag: "Inet", address: "192.0.2.25", port: 25 },
  proxied: undefined,
  hello: { verb: "EHLO", domain: "client.example.org" },
  tls: undefined,
  auth: undefined,
  protocol: "ESMTP",
  sender: undefined,
  mailParams: undefined,
  recipients: [],
  ...over
})

const alice = { local: "alice", domain: "example.org" }

describe("Spf.check", () => {
  it("passes, softfails and fails with the exp= explanation (chunks joined, macros expanded)", async () => {
    const pass = await runWith(Spf.check({ ip: "192.0.2.10", sender: "alice@example.org", helo: "h.example" }))
    expect(pass).toEqual({ result: "pass", identity: "mailfrom", domain: "example.org", mechanism: "ip4:192.0.2.0/24" })
    const soft = await runWith(Spf.check({ ip: "198.51.100.7", sender: "alice@example.org", helo: "h.example" }))
    expect(soft.result).toBe("softfail")
    expect(soft.mechanism).toBe("~ip4:198.51.100.0/24")
    const viaInclude = await runWith(Spf.check({ ip: "2001:db8::25", sender: "alice@example.org", helo: "h.example" }))
    expect(viaInclude).toMatchObject({ result: "pass", mechanism: "include:_spf.example.org" })
    const fail = await runWith(Spf.check({ ip: "203.0.113.9", sender: "Alice@example.org", helo: "h.example" }))
    expect(fail).toEqual({
      result: "fail",
      identity: "mailfrom",
      domain: "example.org",
      mechanism: "-all",
      explanation: "203.0.113.9 may not send for example.org (sender Alice%40example.org)"
    })
  })

  it("checks the HELO name for the null sender, with postmaster as local part", async () => {
    const o = await runWith(Spf.check({ ip: "203.0.113.5", sender: "", helo: "mail.example.org" }))
    expect(o).toEqual({ result: "pass", identity: "helo", domain: "mail.example.org", mechanism: "a" })
  })

  it("gives none without a record, permerror for a broken record, neutral for ?all", async () => {
    expect((await runWith(Spf.check({ ip: "192.0.2.1", sender: "a@nothing.example", helo: "x.example" }))).result).toBe("none")
    const broken = await runWith(Spf.check({ ip: "192.0.2.1", sender: "a@broken.example", helo: "x.example" }))
    expect(broken.result).toBe("permerror")
    expect(broken.problem).toContain("invalid ip4 network")
    expect((await runWith(Spf.check({ ip: "192.0.2.1", sender: "a@neutral.example", helo: "x.example" }))).result).toBe("neutral")
    const bad = await runWith(Spf.check({ ip: "not-an-ip", sender: "a@example.org", helo: "x.example" }))
    expect(bad).toMatchObject({ result: "none", problem: 'invalid client address "not-an-ip"' })
  })

  it("turns a resolver that never answers into temperror at the time limit", async () => {
    const stuck = Layer.succeed(Dns.Dns)(Dns.Dns.of({
      lookup: (() => Effect.never) as never,
      resolve: (() => Effect.never) as never,
      reverse: (() => Effect.never) as never
    }))
    const o = await runWith(Spf.check({ ip: "192.0.2.1", sender: "a@example.org", helo: "x" }, { timeoutMs: 30 }), stuck)
    expect(o).toEqual({ result: "temperror", identity: "mailfrom", domain: "example.org", problem: "time limit exceeded" })
  })

  it("maps resolver failures: SERVFAIL is temperror", async () => {
    const failing = Layer.succeed(Dns.Dns)(Dns.Dns.of({
      lookup: (() => Effect.never) as never,
      resolve: ((name: string, type: Dns.RecordType) =>
        Effect.fail(new Dns.DnsError({ reason: "ServerFailure", method: "resolve", hostname: name, recordType: type }))) as never,
      reverse: (() => Effect.never) as never
    }))
    const o = await runWith(Spf.check({ ip: "192.0.2.1", sender: "a@example.org", helo: "x" }), failing)
    expect(o).toMatchObject({ result: "temperror", problem: "ServerFailure looking up TXT example.org" })
  })

  it("expands %{t} from the clock and %{r} from the receiver in explanations", async () => {
    const zone: Dns.StaticZone = {
      records: {
        "t.example": [txt("v=spf1 -all exp=e.t.example")],
        "e.t.example": [txt("at %{t} by %{r} for %{l} (%{v}, %{c})")]
      }
    }
    const before = Math.floor(Date.now() / 1000)
    const o = await runWith(
      Spf.check({ ip: "::ffff:192.0.2.1", sender: "bob@t.example", helo: "x", receiver: "mx.example.com" }),
      Dns.layerStatic(zone)
    )
    const m = /^at (\d+) by mx\.example\.com for bob \(in-addr, 192\.0\.2\.1\)$/.exec(o.explanation ?? "")
    expect(m, o.explanation).not.toBeNull()
    expect(Number(m![1])).toBeGreaterThanOrEqual(before)
  })
})

describe("SpfRecord", () => {
  it("parses directives, qualifiers, dual CIDR and modifiers", () => {
    const r = SpfRecord.parse("v=spf1 -a:mail.%{d2}/24//64 ~mx ?ptr ip6:2001:DB8::/32 exists:%{ir}.x.example redirect=x.example")
    if (r instanceof SpfRecord.SyntaxError) throw new Error(r.message)
    expect(r.directives.map((d) => [d.qualifier, d.mechanism._tag])).toEqual([
      ["-", "a"], ["~", "mx"], ["?", "ptr"], ["+", "ip6"], ["+", "exists"]
    ])
    expect(r.directives[0]!.mechanism).toMatchObject({ cidr4: 24, cidr6: 64 })
    expect(r.redirect?.source).toBe("x.example")
    expect(r.exp).toBeUndefined()
  })

  it("refuses what the grammar refuses", () => {
    for (const bad of [
      "v=spf1 a:example.com:8080", "v=spf1 ip4:1.2.3.4/032", "v=spf1 a/33", "v=spf1 a//129", "v=spf1 -all.",
      "v=spf1 exp=a.example exp=b.example", "v=spf1 1up=foo", "v=spf1 exists:%{ir", "v=spf1 a:%{c}.example.com",
      "v=spf1 a:%{d0}.example.com", "v=spf1 include", "v=spf1 ptr:", "v=spf1 a:museum", "v=spf1 ip6::CAFE::BABE",
      "v=spf1 a\u0000", "v=spf1 a:\u00e9.example.com"
    ]) {
      expect(SpfRecord.parse(bad), bad).toBeInstanceOf(SpfRecord.SyntaxError)
    }
  })

  it("never throws on arbitrary text", () => {
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (s) => {
      const r = SpfRecord.parse("v=spf1 " + s)
      expect(r === undefined).toBe(false)
      SpfRecord.parseExplanation(s)
      SpfRecord.parseDomainSpec(s)
    }), { numRuns: 2000 })
  })
})

describe("Ip", () => {
  it("parses strictly, unmaps IPv4-mapped addresses and formats RFC 5952", () => {
    expect(Ip.parse("::FFFF:1.2.3.4")).toEqual({ family: 4, bytes: Uint8Array.from([1, 2, 3, 4]) })
    expect(Ip.format(Ip.parse("2001:DB8:0:0:1:0:0:1")!)).toBe("2001:db8::1:0:0:1")
    expect(Ip.format(Ip.parse("2001:db8:0:1:1:1:1:1")!)).toBe("2001:db8:0:1:1:1:1:1")
    expect(Ip.parse("01.2.3.4")).toBeUndefined()
    expect(Ip.parse("1.2.3")).toBeUndefined()
    expect(Ip.parse("1::2::3")).toBeUndefined()
    expect(Ip.reverseName(Ip.parse("192.0.2.1")!)).toBe("1.2.0.192.in-addr.arpa")
    expect(Ip.reverseName(Ip.parse("2001:db8::1")!)).toBe(
      "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    )
  })

  it("round-trips every IPv6 address through format and parse", () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
      const ip: Ip.Ip = { family: 6, bytes }
      const back = Ip.parse(Ip.format(ip))!
      const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff
      expect(back.bytes).toEqual(mapped ? bytes.slice(12) : bytes)
    }), { numRuns: 2000 })
  })
})

describe("Received-SPF", () => {
  it("writes the result, a comment and quoted key-value pairs", () => {
    const input = { ip: "192.0.2.10", sender: "alice@example.org", helo: "h.example", receiver: "mx.example.com" }
    const value = Spf.receivedSpf(
      { result: "pass", identity: "mailfrom", domain: "example.org", mechanism: "ip4:192.0.2.0/24" },
      input
    )
    expect(value).toBe(
      "pass (mx.example.com: domain of alice@example.org designates 192.0.2.10 as permitted sender) " +
        "client-ip=192.0.2.10; envelope-from=\"alice@example.org\"; helo=h.example; receiver=mx.example.com; " +
        "identity=mailfrom; mechanism=\"ip4:192.0.2.0/24\""
    )
    const hostile = Spf.receivedSpf(
      { result: "permerror", identity: "helo", domain: "x", problem: "bad \"record\"\r\nX-Evil: 1" },
      { ip: "2001:db8::1", sender: "", helo: "evil (x)\r\n", receiver: "mx" }
    )
    expect(hostile).not.toMatch(/[\r\n]/)
    expect(hostile).toContain("client-ip=\"2001:db8::1\"")
    expect(hostile).toContain("problem=\"bad \\\"record\\\"  X-Evil: 1\"")
    expect(hostile).toContain("\\(x\\)")
  })
})

describe("Spf.enforce", () => {
  const options: Spf.EnforceOptions = {
    receiver: "mx.example.com",
    actions: {
      fail: { reply: "550 5.7.23 SPF check failed: {reason}" },
      temperror: { reply: "451 4.4.3 SPF temporary error: {reason}" },
      permerror: { reply: "550 5.7.24 SPF record of {domain} is broken" }
    }
  }

  it("refuses MAIL on fail with the explanation, accepts softfail, and names only the hooks it uses", async () => {
    const v = Spf.enforce(options)
    expect(Validators.askHooks(v)).toEqual({ connect: false, ehlo: false, mail: true, rcpt: false, data: false })
    const failing = facts({ remote: { _tag: "Inet", address: "203.0.113.9", port: 1 } })
    const d = await runWith(v.mail!(failing, alice, Params.emptyMail))
    expect(d._tag).toBe("Reject")
    expect(Reply.toString(d.reply!)).toBe(
      "550 5.7.23 SPF check failed: 203.0.113.9 may not send for example.org (sender alice%40example.org)"
    )
    const soft = await runWith(v.mail!(facts(), alice, Params.emptyMail))
    expect(soft).toEqual({ _tag: "Accept", reply: undefined })
    const perm = await runWith(v.mail!(failing, { local: "x", domain: "broken.example" }, Params.emptyMail))
    expect(Reply.toString(perm.reply!)).toBe("550 5.7.24 SPF record of broken.example is broken")
  })

  it("adds Received-SPF from the result found at MAIL without asking DNS again", async () => {
    const { layer, seen } = counting(ZONE)
    const v = Spf.enforce(options)
    const f = facts()
    await runWith(v.mail!(f, alice, Params.emptyMail), layer)
    const queries = seen.length
    expect(queries).toBeGreaterThan(0)
    const env = Envelope.make({ sender: "alice@example.org", recipients: ["bob@example.com"], message: new Uint8Array() })
    const m = await runWith(v.message!(f, env), layer)
    expect(seen.length).toBe(queries)
    expect(m).toEqual({
      _tag: "Accept",
      reply: undefined,
      headers: [[
        "Received-SPF",
        "softfail (mx.example.com: domain of transitioning alice@example.org does not designate 198.51.100.7 as permitted sender) " +
          "client-ip=198.51.100.7; envelope-from=\"alice@example.org\"; helo=client.example.org; receiver=mx.example.com; " +
          "identity=mailfrom; mechanism=\"~ip4:198.51.100.0/24\""
      ]]
    })
    // after close the session is forgotten: the message hook checks again
    await runWith(v.close!(f), layer)
    await runWith(v.message!(f, env), layer)
    expect(seen.length).toBeGreaterThan(queries)
  })

  it("can refuse at RCPT instead, and skips authenticated and Unix-socket clients", async () => {
    const v = Spf.enforce({ ...options, at: "rcpt", header: false })
    expect(v.mail).toBeUndefined()
    expect(v.message).toBeUndefined()
    const failing = facts({ remote: { _tag: "Inet", address: "203.0.113.9", port: 2 }, sender: alice })
    const d = await runWith(v.rcpt!(failing, { local: "bob", domain: "example.com" }, Params.emptyRcpt))
    expect(d.reply?.code).toBe(550)
    const authed = { ...failing, auth: { authcid: "alice", authzid: undefined } }
    expect((await runWith(v.rcpt!(authed, { local: "bob", domain: "example.com" }, Params.emptyRcpt)))._tag).toBe("Accept")
    const unix = facts({ remote: { _tag: "Unix", path: "/run/x.sock" }, sender: alice })
    expect((await runWith(v.rcpt!(unix, { local: "bob", domain: "example.com" }, Params.emptyRcpt)))._tag).toBe("Accept")
  })

  it("answers temperror with the configured 451 when DNS fails", async () => {
    const failing = Layer.succeed(Dns.Dns)(Dns.Dns.of({
      lookup: (() => Effect.never) as never,
      resolve: ((name: string) =>
        Effect.fail(new Dns.DnsError({ reason: "Timeout", method: "resolve", hostname: name }))) as never,
      reverse: (() => Effect.never) as never
    }))
    const d = await runWith(Spf.enforce(options).mail!(facts(), alice, Params.emptyMail), failing)
    expect(Reply.toString(d.reply!)).toBe(
      "451 4.4.3 SPF temporary error: temporary error in processing during lookup of alice@example.org: Timeout looking up TXT example.org"
    )
  })

  it("checks reply templates up front", () => {
    expect(() => Spf.enforce({ actions: { fail: { reply: "250 5.7.1 nope" } } })).toThrow(RangeError)
    expect(ReplyTemplate.parse("99 x")).toMatch(/expected/)
    expect(Reply.toString(ReplyTemplate.render(ReplyTemplate.make("550 5.7.1 {a} {b}"), { a: "x\r\ny" }))).toBe(
      "550 5.7.1 x y {b}"
    )
  })
})
