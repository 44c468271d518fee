import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Bytes from "../src/wire/Bytes.ts"
import * as ProxyProtocol from "../src/wire/ProxyProtocol.ts"

const ascii = (s: string) => Bytes.fromLatin1(s)
const hex = (s: string) => new Uint8Array((s.replace(/\s+/g, "").match(/../g) ?? []).map((h) => parseInt(h, 16)))
const cat = (...parts: Array<Uint8Array>) => Bytes.concat(parts)
const SIG = "0d0a0d0a000d0a515549540a"

/** Reads the stream as an exact-reading adapter would: `atLeast - have` bytes at a time. */
const exactRead = (stream: Uint8Array, step: (have: number, atLeast: number) => number = (h, a) => a - h) => {
  let have = 0
  for (let guard = 0; guard < 2000; guard++) {
    const r = ProxyProtocol.decode(stream.subarray(0, have))
    if (r._tag !== "NeedMore") return { result: r, read: have }
    expect(r.atLeast).toBeGreaterThan(have)
    if (r.atLeast > stream.length) return { result: r, read: have }
    have = Math.min(have + Math.max(1, step(have, r.atLeast)), r.atLeast)
  }
  throw new Error("decoder did not converge")
}

const done = (buf: Uint8Array) => {
  const r = ProxyProtocol.decode(buf)
  if (r._tag !== "Done") throw new Error(`expected Done, got ${JSON.stringify(r)}`)
  return r
}
const invalid = (buf: Uint8Array) => {
  const r = ProxyProtocol.decode(buf)
  expect(r._tag, `${JSON.stringify(Bytes.toLatin1(buf))} -> ${JSON.stringify(r)}`).toBe("Invalid")
}

describe("ProxyProtocol v1", () => {
  it("decodes TCP4 and reports the exact header length", () => {
    const line = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\n"
    const r = done(ascii(line + "EHLO x\r\n"))
    expect(r.consumed).toBe(line.length)
    expect(r.header).toEqual({
      version: 1,
      source: { address: "192.0.2.1", port: 56324 },
      destination: { address: "198.51.100.7", port: 25 }
    })
  })

  it("decodes TCP6 into RFC 5952 form and IPv4-mapped addresses into IPv4", () => {
    const r = done(ascii("PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 ::FFFF:10.1.2.3 0 65535\r\n"))
    expect(r.header.source).toEqual({ address: "2001:db8::1", port: 0 })
    expect(r.header.destination).toEqual({ address: "10.1.2.3", port: 65535 })
    expect(done(ascii("PROXY TCP6 ::1 fe80:0:0:1:0:0:0:2 1 2\r\n")).header.destination?.address).toBe("fe80:0:0:1::2")
    expect(done(ascii("PROXY TCP6 1:0:0:2:0:0:0:3 1:2:3:4:5:6:7:8 1 2\r\n")).header.source?.address).toBe("1:0:0:2::3")
    expect(done(ascii("PROXY TCP6 1:0:0:2:2:0:0:3 :: 1 2\r\n")).header.source?.address).toBe("1::2:2:0:0:3")
    expect(done(ascii("PROXY TCP6 :: 1:0:0:0:1:0:0:0 1 2\r\n")).header.destination?.address).toBe("1::1:0:0:0")
  })

  it("decodes UNKNOWN with or without trailing text, with no addresses", () => {
    const short = done(ascii("PROXY UNKNOWN\r\nQUIT"))
    expect(short).toEqual({ _tag: "Done", header: { version: 1, source: undefined, destination: undefined }, consumed: 15 })
    const long = "PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n"
    expect(done(ascii(long)).consumed).toBe(long.length)
  })

  it("accepts exactly 107 bytes and refuses 108", () => {
    const at107 = "PROXY UNKNOWN " + "x".repeat(107 - 16) + "\r\n"
    expect(at107.length).toBe(107)
    expect(done(ascii(at107)).consumed).toBe(107)
    const at108 = "PROXY UNKNOWN " + "x".repeat(108 - 16) + "\r\n"
    invalid(ascii(at108))
    // Refused as soon as a CRLF can no longer fit in 107 bytes
    expect(ProxyProtocol.decode(ascii(at108.slice(0, 105)))).toEqual({ _tag: "NeedMore", atLeast: 107 })
    invalid(ascii(at108.slice(0, 106)))
    expect(ProxyProtocol.decode(ascii(at107.slice(0, 106)))).toEqual({ _tag: "NeedMore", atLeast: 107 })
    // 1 MB without CRLF is refused after at most 107 bytes
    invalid(ascii("PROXY UNKNOWN " + "y".repeat(1_000_000)))
  })

  const malformed: Array<[string, string]> = [
    ["lower-case keyword", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"],
    ["no space after PROXY", "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"],
    ["double space", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"],
    ["trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"],
    ["tab separator", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"],
    ["missing field", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"],
    ["extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"],
    ["unknown protocol", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"],
    ["UNKNOWN glued to text", "PROXY UNKNOWNX\r\n"],
    ["empty protocol", "PROXY \r\n"],
    ["leading zero in octet", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"],
    ["octal-looking octet", "PROXY TCP4 1.2.3.010 5.6.7.8 1 2\r\n"],
    ["octet over 255", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"],
    ["three octets", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"],
    ["five octets", "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"],
    ["hex octet", "PROXY TCP4 0x7f.0.0.1 5.6.7.8 1 2\r\n"],
    ["integer address", "PROXY TCP4 2130706433 5.6.7.8 1 2\r\n"],
    ["empty octet", "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n"],
    ["IPv6 under TCP4", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n"],
    ["IPv4 under TCP6", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n"],
    ["two ::", "PROXY TCP6 1::2::3 ::1 1 2\r\n"],
    ["five hex digits", "PROXY TCP6 12345::1 ::1 1 2\r\n"],
    ["nine groups", "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"],
    ["seven groups", "PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"],
    ["eight groups and ::", "PROXY TCP6 1:2:3:4::5:6:7:8 ::1 1 2\r\n"],
    ["zone id", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"],
    ["brackets", "PROXY TCP6 [::1] ::1 1 2\r\n"],
    ["leading colon", "PROXY TCP6 :1:2:3:4:5:6:7 ::1 1 2\r\n"],
    ["port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n"],
    ["port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"],
    ["negative port", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"],
    ["plus port", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"],
    ["six-digit port", "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n"],
    ["empty port", "PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n"],
    ["bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"],
    ["CR not followed by LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n"],
    ["LF CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r"],
    ["NUL inside", "PROXY TCP4 1.2.3.4\u00005.6.7.8 1 2\r\n"],
    ["8-bit byte", "PROXY UNKNOWN \u00e9\r\n"],
    ["not PROXY at all", "EHLO client.example\r\n"],
    ["TLS ClientHello", "\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003"]
  ]
  for (const [name, text] of malformed) {
    it(`refuses ${name}`, () => {
      const bytes = ascii(text)
      invalid(bytes)
      // an exact reader reaches the same verdict, whatever follows
      expect(exactRead(cat(bytes, ascii("A".repeat(200)))).result._tag).toBe("Invalid")
    })
  }

  it("refuses garbage early, before 15 bytes", () => {
    invalid(ascii("G"))
    invalid(ascii("PROXX"))
    invalid(ascii("PR\r\n"))
    expect(ProxyProtocol.decode(ascii("PROX"))).toEqual({ _tag: "NeedMore", atLeast: 15 })
  })
})

describe("ProxyProtocol v2", () => {
  const inet = hex(SIG + "21 11 000c c0000201 c6336407 dc04 0019")

  it("decodes INET PROXY", () => {
    const r = done(cat(inet, ascii("EHLO")))
    expect(r.consumed).toBe(28)
    expect(r.header).toEqual({
      version: 2,
      source: { address: "192.0.2.1", port: 56324 },
      destination: { address: "198.51.100.7", port: 25 }
    })
  })

  it("decodes INET6 PROXY, mapped addresses as IPv4", () => {
    const r = done(hex(
      SIG + "21 21 0024" +
        "20010db8000000000000000000000001" +
        "00000000000000000000ffff0a010203" +
        "0001 ffff"
    ))
    expect(r.consumed).toBe(52)
    expect(r.header.source).toEqual({ address: "2001:db8::1", port: 1 })
    expect(r.header.destination).toEqual({ address: "10.1.2.3", port: 65535 })
  })

  it("LOCAL uses the real endpoints, whatever the family and block", () => {
    const local = hex(SIG + "20 00 0000")
    expect(done(local)).toEqual({ _tag: "Done", header: { version: 2, source: undefined, destination: undefined }, consumed: 16 })
    // haproxy health checks: LOCAL with an address block, skipped
    expect(done(hex(SIG + "20 11 000c c0000201 c6336407 dc04 0019")).header.source).toBeUndefined()
    // LOCAL with an unknown family is still LOCAL
    expect(done(hex(SIG + "20 f1 0000")).consumed).toBe(16)
  })

  it("PROXY with UNSPEC or UNIX reports no source", () => {
    expect(done(hex(SIG + "21 00 0000")).header.source).toBeUndefined()
    const unix = cat(hex(SIG + "21 31 00d8"), new Uint8Array(216).fill(0x41))
    const r = done(unix)
    expect(r.consumed).toBe(232)
    expect(r.header.source).toBeUndefined()
  })

  it("skips TLVs and stops exactly at the end of the block", () => {
    const tlvs = hex("01 0002 6832 04 0003 000000")
    const header = ProxyProtocol.encodeV2({
      source: { address: "203.0.113.9", port: 4000 },
      destination: { address: "203.0.113.10", port: 587 }
    }, { tlvs })
    expect(header.length).toBe(16 + 12 + tlvs.length)
    const r = done(cat(header, hex("16030100")))
    expect(r.consumed).toBe(header.length)
    expect(r.header.source).toEqual({ address: "203.0.113.9", port: 4000 })
  })

  const malformed: Array<[string, Uint8Array]> = [
    ["a broken signature", hex("0d0a0d0a000d0a515549540b 21 11 000c c0000201 c6336407 dc04 0019")],
    ["version 1", hex(SIG + "11 11 000c c0000201 c6336407 dc04 0019")],
    ["version 3", hex(SIG + "31 11 000c c0000201 c6336407 dc04 0019")],
    ["command 2", hex(SIG + "22 11 000c c0000201 c6336407 dc04 0019")],
    ["command 15", hex(SIG + "2f 11 000c c0000201 c6336407 dc04 0019")],
    ["family 4", hex(SIG + "21 41 000c c0000201 c6336407 dc04 0019")],
    ["DGRAM", hex(SIG + "21 12 000c c0000201 c6336407 dc04 0019")],
    ["UNSPEC transport", hex(SIG + "21 10 000c c0000201 c6336407 dc04 0019")],
    ["INET block too short", hex(SIG + "21 11 000b c0000201 c6336407 dc04 00")],
    ["INET6 block too short", cat(hex(SIG + "21 21 000c"), new Uint8Array(12))],
    ["UNIX block too short", cat(hex(SIG + "21 31 0010"), new Uint8Array(16))],
    ["a block over 1024 bytes", cat(hex(SIG + "21 11 0401"), new Uint8Array(1025))]
  ]
  for (const [name, bytes] of malformed) {
    it(`refuses ${name}`, () => {
      invalid(bytes)
      expect(exactRead(cat(bytes, new Uint8Array(200))).result._tag).toBe("Invalid")
    })
  }

  it("refuses an oversized block from the fixed part alone, before reading it", () => {
    expect(ProxyProtocol.decode(hex(SIG + "21 11 ffff"))._tag).toBe("Invalid")
    expect(ProxyProtocol.decode(hex(SIG + "21 11 0400"))).toEqual({ _tag: "NeedMore", atLeast: 16 + 1024 })
    expect(ProxyProtocol.decode(hex(SIG + "21 11 0100"), { maxV2Length: 128 })._tag).toBe("Invalid")
  })

  it("asks for 15, then 16, then 16 + length", () => {
    expect(ProxyProtocol.decode(new Uint8Array(0))).toEqual({ _tag: "NeedMore", atLeast: 15 })
    expect(ProxyProtocol.decode(inet.subarray(0, 1))).toEqual({ _tag: "NeedMore", atLeast: 16 })
    expect(ProxyProtocol.decode(inet.subarray(0, 15))).toEqual({ _tag: "NeedMore", atLeast: 16 })
    expect(ProxyProtocol.decode(inet.subarray(0, 16))).toEqual({ _tag: "NeedMore", atLeast: 28 })
    expect(ProxyProtocol.decode(inet.subarray(0, 27))).toEqual({ _tag: "NeedMore", atLeast: 28 })
    invalid(hex("0d0a0d0a00"  + "ff"))
  })
})

describe("ProxyProtocol encoders", () => {
  it("encode the documented bytes", () => {
    const facts = { source: { address: "192.0.2.1", port: 56324 }, destination: { address: "198.51.100.7", port: 25 } }
    expect(Bytes.toLatin1(ProxyProtocol.encodeV1(facts))).toBe("PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\n")
    expect(ProxyProtocol.encodeV2(facts)).toEqual(hex(SIG + "21 11 000c c0000201 c6336407 dc04 0019"))
    expect(Bytes.toLatin1(ProxyProtocol.encodeV1({ source: undefined, destination: undefined }))).toBe("PROXY UNKNOWN\r\n")
    expect(ProxyProtocol.encodeV2({ source: undefined, destination: undefined })).toEqual(hex(SIG + "20 00 0000"))
    expect(Bytes.toLatin1(ProxyProtocol.encodeV1({
      source: { address: "2001:DB8::1", port: 1 },
      destination: { address: "192.0.2.1", port: 2 }
    }))).toBe("PROXY TCP6 2001:db8::1 ::ffff:c000:201 1 2\r\n")
    expect(() => ProxyProtocol.encodeV1({ ...facts, source: { address: "1.2.3.999", port: 1 } })).toThrow(RangeError)
    expect(() => ProxyProtocol.encodeV2({ ...facts, source: { address: "1.2.3.4", port: 70000 } })).toThrow(RangeError)
  })
})

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join("."))
const ipv6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(":"))
const port = fc.nat(65535)
const facts = fc.oneof(
  fc.record({ source: fc.record({ address: ipv4, port }), destination: fc.record({ address: ipv4, port }) }),
  fc.record({ source: fc.record({ address: ipv6, port }), destination: fc.record({ address: ipv6, port }) }),
  fc.constant({ source: undefined, destination: undefined })
)
const header = fc.tuple(facts, fc.boolean(), fc.uint8Array({ maxLength: 40 })).map(([f, v1, tlvs]) => ({
  facts: f,
  bytes: v1 ? ProxyProtocol.encodeV1(f) : ProxyProtocol.encodeV2(f, { tlvs })
}))
const trailing = fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.constant(ascii("EHLO client\r\n")), fc.constant(hex("160301")))

describe("ProxyProtocol properties", () => {
  it("round-trips encoded headers, whole, byte at a time and at arbitrary split points", () => {
    fc.assert(fc.property(header, trailing, fc.array(fc.nat(200)), ({ bytes, facts: f }, rest, cuts) => {
      const stream = cat(bytes, rest)
      const whole = done(stream)
      expect(whole.consumed).toBe(bytes.length)
      const norm = (p: { address: string; port: number } | undefined) =>
        p && { address: ProxyProtocol.normalizeAddress(p.address), port: p.port }
      expect(whole.header.source).toEqual(norm(f.source))
      expect(whole.header.destination).toEqual(norm(f.destination))
      // one byte at a time: every proper prefix asks for more, never past the header
      for (let k = 0; k < bytes.length; k++) {
        const r = ProxyProtocol.decode(stream.subarray(0, k))
        expect(r._tag).toBe("NeedMore")
        if (r._tag === "NeedMore") {
          expect(r.atLeast).toBeGreaterThan(k)
          expect(r.atLeast).toBeLessThanOrEqual(bytes.length)
        }
      }
      // exact reads stop at the end of the header, never into the next layer
      const exact = exactRead(stream)
      expect(exact.read).toBe(bytes.length)
      expect(exact.result).toEqual(whole)
      // arbitrary split points (any chunking that does not read past atLeast)
      let i = 0
      const split = exactRead(stream, (h, a) => cuts.length === 0 ? a - h : 1 + (cuts[i++ % cuts.length]! % (a - h)))
      expect(split.read).toBe(bytes.length)
      expect(split.result).toEqual(whole)
    }))
  })

  it("never throws on arbitrary bytes, and answers one of the three results", () => {
    const prefixed = fc.tuple(
      fc.constantFrom(new Uint8Array(0), ascii("PROXY "), ascii("PROXY TCP4 "), ascii("PROXY TCP6 "), hex(SIG), hex(SIG + "21")),
      fc.uint8Array({ maxLength: 300 })
    ).map(([a, b]) => cat(a, b))
    const textual = fc.string({ unit: fc.constantFrom(..."PROXY TCP46UNKNOW0123456789abcdef:. \r\n"), maxLength: 120 })
      .map((s) => ascii("PROXY " + s))
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), prefixed, textual), (buf) => {
      const r = ProxyProtocol.decode(buf)
      expect(["NeedMore", "Done", "Invalid"]).toContain(r._tag)
      if (r._tag === "NeedMore") expect(r.atLeast).toBeGreaterThan(buf.length)
      if (r._tag === "Done") expect(r.consumed).toBeLessThanOrEqual(buf.length)
      // a verdict never changes once enough bytes are in
      if (r._tag === "Done") expect(ProxyProtocol.decode(buf.subarray(0, r.consumed))).toEqual(r)
    }), { numRuns: 3000 })
  })
})

describe("ProxyProtocol.isTrusted", () => {
  it("matches single addresses and IPv4 CIDR blocks", () => {
    expect(ProxyProtocol.isTrusted("127.0.0.1", ["127.0.0.1"])).toBe(true)
    expect(ProxyProtocol.isTrusted("127.0.0.2", ["127.0.0.1"])).toBe(false)
    expect(ProxyProtocol.isTrusted("10.200.3.4", ["192.168.0.0/16", "10.0.0.0/8"])).toBe(true)
    expect(ProxyProtocol.isTrusted("11.0.0.1", ["10.0.0.0/8"])).toBe(false)
    expect(ProxyProtocol.isTrusted("192.0.2.31", ["192.0.2.0/27"])).toBe(true)
    expect(ProxyProtocol.isTrusted("192.0.2.32", ["192.0.2.0/27"])).toBe(false)
    expect(ProxyProtocol.isTrusted("203.0.113.5", ["0.0.0.0/0"])).toBe(true)
    expect(ProxyProtocol.isTrusted("2001:db8::1", ["0.0.0.0/0"])).toBe(false)
  })

  it("matches IPv6 addresses and blocks", () => {
    expect(ProxyProtocol.isTrusted("::1", ["::1"])).toBe(true)
    expect(ProxyProtocol.isTrusted("0:0:0:0:0:0:0:1", ["::1"])).toBe(true)
    expect(ProxyProtocol.isTrusted("2001:db8:ffff::1", ["2001:db8::/32"])).toBe(true)
    expect(ProxyProtocol.isTrusted("2001:db9::1", ["2001:db8::/32"])).toBe(false)
    expect(ProxyProtocol.isTrusted("2001:db8::7f", ["2001:db8::/121"])).toBe(true)
    expect(ProxyProtocol.isTrusted("2001:db8::80", ["2001:db8::/121"])).toBe(false)
    expect(ProxyProtocol.isTrusted("fe80::1%eth0", ["fe80::/10"])).toBe(true)
    expect(ProxyProtocol.isTrusted("1.2.3.4", ["::/0"])).toBe(true)
  })

  it("treats IPv4-mapped IPv6 as IPv4, both ways", () => {
    expect(ProxyProtocol.isTrusted("::ffff:127.0.0.1", ["127.0.0.1"])).toBe(true)
    expect(ProxyProtocol.isTrusted("::ffff:7f00:1", ["127.0.0.0/8"])).toBe(true)
    expect(ProxyProtocol.isTrusted("127.0.0.1", ["::ffff:127.0.0.1"])).toBe(true)
    expect(ProxyProtocol.isTrusted("::ffff:10.0.0.1", ["127.0.0.0/8"])).toBe(false)
  })

  it("never trusts invalid addresses and ignores invalid entries", () => {
    expect(ProxyProtocol.isTrusted("", ["0.0.0.0/0", "::/0"])).toBe(false)
    expect(ProxyProtocol.isTrusted("127.1", ["127.0.0.0/8"])).toBe(false)
    expect(ProxyProtocol.isTrusted("localhost", ["127.0.0.0/8"])).toBe(false)
    expect(ProxyProtocol.isTrusted("127.0.0.1", ["127.0.0.0/33", "127.0.0.0/08", "bogus", "127.0.0.1/"])).toBe(false)
    expect(ProxyProtocol.isTrusted("127.0.0.1", [])).toBe(false)
    expect(ProxyProtocol.isValidTrustEntry("10.0.0.0/8")).toBe(true)
    expect(ProxyProtocol.isValidTrustEntry("2001:db8::/129")).toBe(false)
  })

  it("normalizeAddress gives the decoder's form", () => {
    expect(ProxyProtocol.normalizeAddress("::FFFF:192.0.2.1")).toBe("192.0.2.1")
    expect(ProxyProtocol.normalizeAddress("2001:0db8:0:0:1:0:0:1")).toBe("2001:db8::1:0:0:1")
    expect(ProxyProtocol.normalizeAddress("fe80::1%lo")).toBe("fe80::1")
    expect(ProxyProtocol.normalizeAddress("1.2.3")).toBeUndefined()
  })
})
