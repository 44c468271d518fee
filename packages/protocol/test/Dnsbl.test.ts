import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Dns from "effect/net/Dns"
import * as NetAddress from "effect/net/NetAddress"
import { describe, expect, it } from "vitest"
import * as Dnsbl from "../src/policy/Dnsbl.ts"
import * as Ip from "../src/policy/Ip.ts"
import * as Validators from "../src/policy/Validators.ts"
import * as Params from "../src/smtp/Params.ts"
import * as Reply from "../src/smtp/Reply.ts"
import type { Facts } from "../src/smtp/ServerModel.ts"

const a = (ip: string) => Dns.makeRecordUnsafe("A", { address: NetAddress.ipFromStringUnsafe(ip) as NetAddress.Ipv4Address })
const txt = (s: string) => Dns.makeRecordUnsafe("TXT", { chunks: [s] })

const V6 = "2001:db8::1"
const V6_NAME = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"

const ZONE: Dns.StaticZone = {
  records: {
    "2.2.0.192.bl.example": [a("127.0.0.2"), a("127.0.0.4")],
    "2.2.0.192.other.example": [a("127.0.0.10")],
    "3.2.0.192.bl.example": [a("127.0.0.2")],
    "3.2.0.192.bl.example.": [txt("Listed: see https://bl.example/q?192.0.2.3")],
    "4.2.0.192.bl.example": [a("127.255.255.254")],
    "5.2.0.192.bl.example": [a("192.0.2.99")],
    [`${V6_NAME}.bl.example`]: [a("127.0.0.3")]
  }
}

const run = <A>(e: Effect.Effect<A, never, Dns.Dns>, layer: Layer.Layer<Dns.Dns, unknown> = Dns.layerStatic(ZONE)) =>
  Effect.runPromise(Effect.provide(e, layer) as Effect.Effect<A>)

const facts = (address: string, over: Partial<Facts> = {}): Facts => ({
  remote: { _tag: "Inet", address, port: 50000 },
  local: { _tag: "Inet", address: "192.0.2.25", port: 25 },
  proxied: undefined,
  hello: undefined,
  tls: undefined,
  auth: undefined,
  protocol: "SMTP",
  sender: undefined,
  mailParams: undefined,
  recipients: [],
  ...over
})

describe("Dnsbl.queryName", () => {
  it("reverses octets for IPv4 and nibbles for IPv6", () => {
    expect(Dnsbl.queryName(Ip.parse("192.0.2.1")!, "zen.example.")).toBe("1.2.0.192.zen.example")
    expect(Dnsbl.queryName(Ip.parse(V6)!, "bl.example")).toBe(`${V6_NAME}.bl.example`)
    expect(Dnsbl.queryName(Ip.parse("::ffff:192.0.2.1")!, "bl.example")).toBe("1.2.0.192.bl.example")
  })
})

describe("Dnsbl.lookup", () => {
  it("finds listings with their codes and TXT reason, in zone order", async () => {
    const l = await run(Dnsbl.lookup("192.0.2.3", ["other.example", "bl.example"]))
    expect(l).toEqual({ zone: "bl.example", ip: "192.0.2.3", codes: ["127.0.0.2"], reason: "Listed: see https://bl.example/q?192.0.2.3" })
    const both = await run(Dnsbl.lookup("192.0.2.2", ["other.example", "bl.example"]))
    expect(both).toEqual({ zone: "other.example", ip: "192.0.2.2", codes: ["127.0.0.10"], reason: undefined })
    expect(await run(Dnsbl.lookup(V6, ["bl.example"]))).toMatchObject({ zone: "bl.example", ip: V6, codes: ["127.0.0.3"] })
    expect(await run(Dnsbl.lookup("192.0.2.200", ["bl.example"]))).toBeUndefined()
  })

  it("applies ignore lists and match codes, and never counts answers outside 127/8", async () => {
    expect(await run(Dnsbl.lookup("192.0.2.4", [{ zone: "bl.example", ignore: ["127.255.255.254"] }]))).toBeUndefined()
    expect(await run(Dnsbl.lookup("192.0.2.4", ["bl.example"]))).toMatchObject({ codes: ["127.255.255.254"] })
    expect(await run(Dnsbl.lookup("192.0.2.5", ["bl.example"]))).toBeUndefined()
    expect(await run(Dnsbl.lookup("192.0.2.2", [{ zone: "bl.example", codes: ["4"] }]))).toMatchObject({ codes: ["127.0.0.4"] })
    expect(await run(Dnsbl.lookup("192.0.2.3", [{ zone: "bl.example", codes: ["127.0.0.4"] }]))).toBeUndefined()
  })

  it("logs and accepts when a zone fails or does not answer in time", async () => {
    const lines: Array<string> = []
    const logger = Logger.make(({ message }) => {
      lines.push(String(Array.isArray(message) ? message.join(" ") : message))
    })
    const broken = Layer.succeed(Dns.Dns)(Dns.Dns.of({
      lookup: (() => Effect.never) as never,
      reverse: (() => Effect.never) as never,
      resolve: ((name: string, type: Dns.RecordType) =>
        name.endsWith("slow.example")
          ? Effect.never
          : Effect.fail(new Dns.DnsError({ reason: "ServerFailure", method: "resolve", hostname: name, recordType: type }))) as never
    }))
    const program = Dnsbl.lookup("192.0.2.2", ["bad.example", "slow.example"], { timeoutMs: 20 }).pipe(
      Effect.provide(Logger.layer([logger]))
    )
    expect(await run(program, broken)).toBeUndefined()
    expect(lines).toEqual(["dnsbl lookup failed; not blocking", "dnsbl lookup failed; not blocking"])
  })
})

describe("Dnsbl.validators", () => {
  it("refuses at the banner with 554 and the TXT reason", async () => {
    const v = Dnsbl.validators({ zones: ["bl.example"] })
    expect(Validators.askHooks(v).connect).toBe(true)
    const d = await run(v.connect!(facts("192.0.2.3")))
    expect(Reply.encodeString(d.reply!)).toBe(
      "554 5.7.1 Service unavailable; client [192.0.2.3] blocked using bl.example; Listed: see https://bl.example/q?192.0.2.3\r\n"
    )
    const noTxt = await run(Dnsbl.validators({ zones: ["other.example"] }).connect!(facts("192.0.2.2")))
    expect(Reply.toString(noTxt.reply!)).toBe("554 5.7.1 Service unavailable; client [192.0.2.2] blocked using other.example")
    expect(await run(v.connect!(facts("192.0.2.9")))).toEqual({ _tag: "Accept", reply: undefined })
    expect(await run(v.connect!({ ...facts("x"), remote: { _tag: "Unix", path: "/s" } }))).toEqual({ _tag: "Accept", reply: undefined })
  })

  it("can refuse at MAIL with a custom reply, leaving authenticated clients alone", async () => {
    const v = Dnsbl.validators({ zones: ["bl.example"], at: "mail", reply: "550 5.7.1 {ip} is on {zone} ({codes})" })
    expect(v.connect).toBeUndefined()
    const d = await run(v.mail!(facts("192.0.2.2"), null, Params.emptyMail))
    expect(Reply.toString(d.reply!)).toBe("550 5.7.1 192.0.2.2 is on bl.example (127.0.0.2,127.0.0.4)")
    const authed = facts("192.0.2.2", { auth: { authcid: "u", authzid: undefined } })
    expect((await run(v.mail!(authed, null, Params.emptyMail)))._tag).toBe("Accept")
  })

  it("at RCPT looks up once per session", async () => {
    let queries = 0
    const inner = Effect.runSync(Effect.fromResult(Dns.makeStatic(ZONE)))
    const counting = Layer.succeed(Dns.Dns)(Dns.Dns.of({
      ...inner,
      resolve: ((name: string, type: Dns.RecordType) => {
        queries++
        return inner.resolve(name, type)
      }) as Dns.Dns["Service"]["resolve"]
    }))
    const v = Dnsbl.validators({ zones: ["bl.example"], at: "rcpt" })
    const f = facts("192.0.2.200")
    const bob = { local: "bob", domain: "example.com" }
    await run(v.rcpt!(f, bob, Params.emptyRcpt), counting)
    await run(v.rcpt!(f, bob, Params.emptyRcpt), counting)
    expect(queries).toBe(1)
    await run(v.close!(f), counting)
    await run(v.rcpt!(f, bob, Params.emptyRcpt), counting)
    expect(queries).toBe(2)
  })
})
