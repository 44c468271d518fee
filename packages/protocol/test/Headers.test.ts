import fc from "fast-check"
import { describe, expect, it } from "vitest"
import type { ClientFacts } from "../src/envelope/Envelope.ts"
import * as Headers from "../src/envelope/Headers.ts"
import * as Bytes from "../src/wire/Bytes.ts"

const b = (s: string): Uint8Array => Bytes.fromLatin1(s)
const s = (u: Uint8Array): string => Bytes.toLatin1(u)

/** 2026-11-22T05:10:32.789Z, a Sunday. */
const T = Date.UTC(2026, 10, 22, 5, 10, 32, 789)
const ones = (n: number): Uint8Array => new Uint8Array(n).fill(0xff)
const counting = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => i)

/** An independent ULID encoder (BigInt), lowercase Crockford. */
const ulidRef = (now: number, rnd: Uint8Array): string => {
  const A = "0123456789abcdefghjkmnpqrstvwxyz"
  const enc = (v: bigint, chars: number): string => {
    let out = ""
    for (let i = 0; i < chars; i++) {
      out = A[Number(v & 31n)] + out
      v >>= 5n
    }
    return out
  }
  let r = 0n
  for (const x of rnd.subarray(0, 10)) r = (r << 8n) | BigInt(x)
  return enc(BigInt(now), 10) + enc(r, 16)
}

const tlsClient: ClientFacts = {
  address: "192.0.2.1",
  port: 54321,
  reverseName: "mail.example.org",
  ehlo: "mail.example.org",
  protocol: "ESMTPS",
  tls: { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256 },
  auth: undefined
}

describe("Headers.headerBlockEnd", () => {
  const cases: ReadonlyArray<[string, string, number]> = [
    ["CRLF blank line then body", "a: b\r\nc: d\r\n\r\nbody\r\n", 14],
    ["headers only, terminated", "a: b\r\n", 6],
    ["headers only, blank line at the very end", "a: b\r\n\r\n", 8],
    ["headers only, no final line end", "a: b", 4],
    ["bare LF blank line (lenient)", "a: b\n\nbody", 6],
    ["CRLF line then bare LF blank line", "a: b\r\n\nbody", 7],
    ["bare LF line then CRLF blank line", "a: b\n\r\nbody", 7],
    ["empty header block, CRLF", "\r\nbody", 2],
    ["empty header block, LF", "\nbody", 1],
    ["empty message", "", 0],
    ["a line of spaces does not end the block", "a: b\r\n \r\nbody", 13],
    ["CR CR LF is not a blank line", "a: b\r\r\nc", 8],
    ["only the first blank line counts", "a: b\r\n\r\nx\r\n\r\ny", 8]
  ]
  for (const [name, input, end] of cases) {
    it(name, () => {
      expect(Headers.headerBlockEnd(b(input))).toBe(end)
      expect(Headers.headerBlockSize(b(input))).toBe(end)
    })
  }

  it("hasBody tells a blank line apart from the end of the message", () => {
    expect(Headers.hasBody(b("a: b\r\n\r\n"))).toBe(true)
    expect(Headers.hasBody(b("a: b\r\n"))).toBe(false)
    expect(Headers.hasBody(b(""))).toBe(false)
  })

  const reference = (m: Uint8Array): number => {
    const r = /(?:^|\n)(\r?\n)/.exec(s(m))
    return r === null ? m.length : r.index + r[0].length
  }
  const messageBytes = fc.array(fc.constantFrom(..."\r\n\r\n\n: aZ\t\x80\xff".split("").map((c) => c.charCodeAt(0))), {
    maxLength: 60
  }).map((xs) => Uint8Array.from(xs))

  it("agrees with a regex reference on arbitrary bytes", () => {
    fc.assert(fc.property(messageBytes, (m) => {
      expect(Headers.headerBlockEnd(m)).toBe(reference(m))
    }), { numRuns: 2000 })
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (m) => {
      expect(Headers.headerBlockEnd(m)).toBe(reference(m))
    }))
  })

  it("gives the same answer on every prefix that already holds the blank line (byte at a time, any split)", () => {
    const m = b("Received: x\r\n y\r\nSubject: hi\r\n\r\nbody\r\n\r\nmore")
    const full = Headers.headerBlockEnd(m)
    for (let i = 0; i <= m.length; i++) {
      const prefix = m.subarray(0, i)
      if (Headers.hasBody(prefix)) expect(Headers.headerBlockEnd(prefix)).toBe(full)
      else expect(i).toBeLessThan(full)
    }
    fc.assert(
      fc.property(messageBytes, fc.nat(), (m2, cut) => {
        const prefix = m2.subarray(0, cut % (m2.length + 1))
        if (Headers.hasBody(prefix)) expect(Headers.headerBlockEnd(prefix)).toBe(Headers.headerBlockEnd(m2))
      }),
      { numRuns: 1000 }
    )
  })
})

describe("Headers reading", () => {
  const msg = b(
    "Received: from a\r\n\tby b; Sun, 22 Nov 2026 05:10:32 +0000\r\n" +
      "X-Received: not counted\r\n" +
      "received: from c by d; Mon, 23 Nov 2026 00:00:00 +0000\r\n" +
      "Subject : obsolete spacing\r\n" +
      "not a header line\r\n" +
      " continuation of the bad line\r\n" +
      "Bad Name: spaces are not ftext\r\n" +
      "Subject: second\r\n" +
      "RECEIVED:x\r\n" +
      "\r\n" +
      "Received: in the body\r\n"
  )

  it("finds values case-insensitively, unfolded, in order, and skips malformed lines", () => {
    expect(Headers.findHeaders(msg, "received")).toEqual([
      "from a\tby b; Sun, 22 Nov 2026 05:10:32 +0000",
      "from c by d; Mon, 23 Nov 2026 00:00:00 +0000",
      "x"
    ])
    expect(Headers.findHeaders(msg, "SUBJECT")).toEqual(["obsolete spacing", "second"])
    expect(Headers.findHeaders(msg, "Bad Name")).toEqual([])
    expect(Headers.findHeaders(msg, "not a header line")).toEqual([])
    expect(Headers.fields(msg).map((f) => f.name)).toEqual(["Received", "X-Received", "received", "Subject", "Subject", "RECEIVED"])
  })

  it("gives byte offsets of each field", () => {
    const f = Headers.fields(msg)[0]!
    expect([f.start, f.colon]).toEqual([0, 8])
    expect(s(msg.subarray(f.start, f.end))).toBe("Received: from a\r\n\tby b; Sun, 22 Nov 2026 05:10:32 +0000\r\n")
  })

  it("counts Received fields for loop detection, not X-Received nor the body", () => {
    expect(Headers.countHeaders(msg, "Received")).toBe(3)
    expect(Headers.hasHeader(msg, "x-received")).toBe(true)
    expect(Headers.hasHeader(msg, "Date")).toBe(false)
  })

  it("reads bare-LF messages and a last field without a line end", () => {
    const m = b("A: 1\n  folded\nB: 2")
    expect(Headers.findHeaders(m, "a")).toEqual(["1  folded"])
    expect(Headers.findHeaders(m, "b")).toEqual(["2"])
  })

  it("decodes UTF-8 values, and latin1 when the bytes are not UTF-8", () => {
    const utf8 = Bytes.concat([b("Subject: "), Bytes.fromString("Grüße €"), b("\r\n\r\n")])
    expect(Headers.findHeaders(utf8, "subject")).toEqual(["Grüße €"])
    expect(Headers.findHeaders(b("Subject: caf\xe9\r\n\r\n"), "subject")).toEqual(["café"])
  })

  it("ignores a continuation line at the top and an empty value is empty", () => {
    const m = b(" orphan\r\nA:\r\nB:   \r\n\r\n")
    expect(Headers.findHeaders(m, "A")).toEqual([""])
    expect(Headers.findHeaders(m, "B")).toEqual([""])
    expect(Headers.fields(m).map((f) => f.name)).toEqual(["A", "B"])
  })

  it("treats __proto__ and other Object.prototype names as plain data", () => {
    const m = b("__proto__: x\r\nconstructor: y\r\n__proto__: z\r\n\r\n")
    expect(Headers.findHeaders(m, "__proto__")).toEqual(["x", "z"])
    expect(Headers.countHeaders(m, "__PROTO__")).toBe(2)
    expect(Headers.findHeaders(m, "constructor")).toEqual(["y"])
    expect(Headers.hasHeader(m, "toString")).toBe(false)
    expect(Headers.hasHeader(m, "hasOwnProperty")).toBe(false)
    const m2 = Headers.prepend(m, "__proto__", "w")
    expect(Headers.findHeaders(m2, "__proto__")).toEqual(["w", "x", "z"])
    expect(({} as Record<string, unknown>)["x"]).toBeUndefined()
    expect(Object.getPrototypeOf({})).toBe(Object.prototype)
  })

  it("never throws on arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.constantFrom("Received", "__proto__", "a", ""), (m, name) => {
        Headers.fields(m)
        Headers.findHeaders(m, name)
        Headers.countHeaders(m, name)
        Headers.checkHeaderBlock(m, { maxBlockBytes: 100, maxFieldBytes: 20 })
        Headers.ensureDate(m, T)
        const out = Headers.prepend(m, "X-Test", "v")
        expect(Headers.findHeaders(out, "X-Test")[0]).toBe("v")
      }),
      { numRuns: 1000 }
    )
  })
})

describe("Headers.prepend and append", () => {
  const original = b("Subject: hi\r\nDKIM-Signature: v=1;\r\n\tb=abc\r\n\r\nbody\r\n")

  it("prepends ASCII and non-ASCII (UTF-8) fields alike, before a message that starts with a space or not", () => {
    for (const value of ["plain", "caf\u00e9 \u{1F600} \u4e2d"]) {
      const field = new TextEncoder().encode(`X-V: ${value}\r\n`)
      const out = Headers.prepend(original, "X-V", value)
      expect(Array.from(out)).toEqual([...field, ...original])
      const folded = b(" starts with a space\r\n\r\nbody\r\n")
      expect(Array.from(Headers.prepend(folded, "X-V", value))).toEqual([...field, 0x0d, 0x0a, ...folded])
    }
    expect(s(Headers.prepend(Bytes.empty, "X-V", "v"))).toBe("X-V: v\r\n")
  })

  it("prepends one field and keeps every existing byte identical", () => {
    const out = Headers.prepend(original, "X-Spam-Status", "NO")
    expect(s(out)).toBe("X-Spam-Status: NO\r\n" + s(original))
    expect(Bytes.equals(out.subarray(out.length - original.length), original)).toBe(true)
  })

  it("replaces CR, LF, NUL and other controls so a value cannot add a field", () => {
    const out = Headers.prepend(original, "X-Test", "a\r\nBcc: evil@example.com\0\x1b[31m\tz ")
    expect(s(out).split("\r\n")[0]).toBe("X-Test: a  Bcc: evil@example.com  [31m\tz")
    expect(Headers.countHeaders(out, "Bcc")).toBe(0)
    expect(Headers.fields(out).length).toBe(3)
  })

  it("folds before whitespace at 78 columns, and unfolding gives the value back", () => {
    const words = Array.from({ length: 30 }, (_, i) => `word${i}`).join(" ")
    const out = s(Headers.prepend(Bytes.empty, "X-Long", words))
    expect(out).toBe(
      "X-Long: word0 word1 word2 word3 word4 word5 word6 word7 word8 word9 word10\r\n" +
        " word11 word12 word13 word14 word15 word16 word17 word18 word19 word20 word21\r\n" +
        " word22 word23 word24 word25 word26 word27 word28 word29\r\n"
    )
    for (const line of out.split("\r\n")) expect(line.length).toBeLessThanOrEqual(78)
    expect(Headers.findHeaders(b(out), "x-long")).toEqual([words])
  })

  it("never folds right after the colon and leaves a word longer than a line whole", () => {
    const long = "x".repeat(100)
    expect(s(Headers.prepend(Bytes.empty, "X-A", long))).toBe(`X-A: ${long}\r\n`)
    expect(s(Headers.prepend(Bytes.empty, "X-A", `a ${long} b`))).toBe(`X-A: a\r\n ${long}\r\n b\r\n`)
  })

  it("writes an empty value as `Name:`", () => {
    expect(s(Headers.prepend(b("A: 1\r\n\r\n"), "X-Empty", " \r\n "))).toBe("X-Empty:\r\nA: 1\r\n\r\n")
  })

  it("inserts an empty line when the message starts with whitespace (no accidental continuation)", () => {
    const m = b(" injected text\r\nMore: x\r\n")
    const out = Headers.prepend(m, "Received", "from x by y; Sun, 22 Nov 2026 05:10:32 +0000")
    expect(s(out)).toBe("Received: from x by y; Sun, 22 Nov 2026 05:10:32 +0000\r\n\r\n injected text\r\nMore: x\r\n")
    expect(Headers.findHeaders(out, "Received")).toEqual(["from x by y; Sun, 22 Nov 2026 05:10:32 +0000"])
    expect(Headers.hasHeader(out, "More")).toBe(false)
  })

  it("refuses an invalid field name", () => {
    for (const name of ["", "Bad Name", "a:b", "x\r\ny", "é", "x".repeat(77)]) {
      expect(() => Headers.prepend(original, name, "v")).toThrow(RangeError)
    }
  })

  it("appends at the end of the header block, before the blank line", () => {
    expect(s(Headers.append(original, "Date", "x"))).toBe(
      "Subject: hi\r\nDKIM-Signature: v=1;\r\n\tb=abc\r\nDate: x\r\n\r\nbody\r\n"
    )
    expect(s(Headers.append(b("A: 1\n\nbody"), "B", "2"))).toBe("A: 1\nB: 2\r\n\nbody")
    expect(s(Headers.append(b("A: 1\r\n"), "B", "2"))).toBe("A: 1\r\nB: 2\r\n")
    expect(s(Headers.append(b("A: 1"), "B", "2"))).toBe("A: 1\r\nB: 2\r\n")
    expect(s(Headers.append(b(""), "B", "2"))).toBe("B: 2\r\n")
    expect(s(Headers.append(b("\r\nbody"), "B", "2"))).toBe("B: 2\r\n\r\nbody")
    expect(s(Headers.append(b("A: 1\r\n\r\n"), "B", "2"))).toBe("A: 1\r\nB: 2\r\n\r\n")
  })

  const valueChars = fc.constantFrom("a", "Z", " ", " ", "\t", "\r", "\n", "\0", "é", "€", "😀", ";", "(", ":")
  const values = fc.array(valueChars, { maxLength: 300 }).map((xs) => xs.join(""))

  it("property: the field round-trips, lines stay short, existing bytes follow unchanged", () => {
    fc.assert(
      fc.property(values, fc.uint8Array({ maxLength: 80 }), (v, m) => {
        const out = Headers.prepend(m, "X-P", v)
        const field = Bytes.fromString(Headers.formatField("X-P", v))
        const gap = m[0] === 0x20 || m[0] === 0x09 ? 2 : 0
        expect(out.length).toBe(field.length + gap + m.length)
        expect(Bytes.equals(out.subarray(field.length + gap), m)).toBe(true)
        expect(Headers.findHeaders(out, "x-p")[0]).toBe(Headers.sanitizeValue(v))
        const text = new TextDecoder().decode(field)
        expect(text.endsWith("\r\n")).toBe(true)
        const lines = text.slice(0, -2).split("\r\n")
        for (const [i, line] of lines.entries()) {
          expect(line).not.toMatch(/[\r\n\0]/)
          if (i > 0) expect(line).toMatch(/^[ \t]+[^ \t]/)
          if (line.length > 78) expect(line.trim()).not.toMatch(/[ \t]/)
        }
      }),
      { numRuns: 1000 }
    )
  })
})

describe("Headers.date", () => {
  it("formats RFC 5322 dates in UTC by default, dropping the milliseconds", () => {
    expect(Headers.date(T)).toBe("Sun, 22 Nov 2026 05:10:32 +0000")
    expect(Headers.date(0)).toBe("Thu, 01 Jan 1970 00:00:00 +0000")
    expect(Headers.date(Date.UTC(2024, 1, 29, 23, 59, 59, 999))).toBe("Thu, 29 Feb 2024 23:59:59 +0000")
  })

  it("shows other zones", () => {
    expect(Headers.date(T, 90)).toBe("Sun, 22 Nov 2026 06:40:32 +0130")
    expect(Headers.date(T, -480)).toBe("Sat, 21 Nov 2026 21:10:32 -0800")
    expect(Headers.date(T, 5999)).toBe("Thu, 26 Nov 2026 09:09:32 +9959")
  })

  it("refuses times and offsets it cannot write", () => {
    expect(() => Headers.date(Number.NaN)).toThrow(RangeError)
    expect(() => Headers.date(Infinity)).toThrow(RangeError)
    expect(() => Headers.date(T, 6000)).toThrow(RangeError)
    expect(() => Headers.date(T, 1.5)).toThrow(RangeError)
    expect(() => Headers.date(Date.UTC(10000, 0, 1))).toThrow(RangeError)
  })

  it("property: parses back to the same second", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Date.UTC(9999, 11, 30) }), fc.integer({ min: -1439, max: 1439 }), (ms, off) => {
        const d = Headers.date(ms, off)
        expect(d).toMatch(/^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}$/)
        expect(Date.parse(d)).toBe(Math.floor(ms / 1000) * 1000)
      })
    )
  })
})

describe("Headers ids", () => {
  it("makes lowercase ULIDs: the ULID spec's time vector, then 80 random bits", () => {
    expect(Headers.sortableId(ones, 1469918176385)).toBe("01aryz6s41zzzzzzzzzzzzzzzz")
    expect(Headers.sortableId(() => new Uint8Array(10), 0)).toBe("0".repeat(26))
    expect(Headers.sortableId(counting, T)).toBe(ulidRef(T, counting(10)))
    expect(Headers.sortableId(ones, 2 ** 48 - 1)).toBe("7zzzzzzzzz" + "z".repeat(16))
  })

  it("property: 26 chars of [0-9a-z], matches the reference, sorts by time", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.uint8Array({ minLength: 10, maxLength: 10 }), fc.uint8Array({ minLength: 10, maxLength: 10 }), (t1, t2, r1, r2) => {
        const a = Headers.sortableId(() => r1, t1)
        const c = Headers.sortableId(() => r2, t2)
        expect(a).toMatch(/^[0-9a-z]{26}$/)
        expect(a).toBe(ulidRef(t1, r1))
        if (t1 < t2) expect(a < c).toBe(true)
      })
    )
  })

  it("refuses a bad time or a short random source", () => {
    expect(() => Headers.sortableId(ones, -1)).toThrow(RangeError)
    expect(() => Headers.sortableId(ones, 2 ** 48)).toThrow(RangeError)
    expect(() => Headers.sortableId(ones, Number.NaN)).toThrow(RangeError)
    expect(() => Headers.sortableId(() => new Uint8Array(9), 0)).toThrow(RangeError)
  })

  it("makes Message-Ids with a sanitized hostname", () => {
    expect(Headers.messageId(ones, 1469918176385, "mx.example.com")).toBe("<01aryz6s41zzzzzzzzzzzzzzzz@mx.example.com>")
    expect(Headers.messageId(ones, 1469918176385, "evil>\r\nBcc: x@y")).toBe("<01aryz6s41zzzzzzzzzzzzzzzz@evilBccxy>")
    expect(Headers.messageId(ones, 1469918176385, "")).toBe("<01aryz6s41zzzzzzzzzzzzzzzz@localhost>")
  })
})

describe("Headers.ensureDate and ensureMessageId", () => {
  it("return the message itself when the field is present (any case)", () => {
    const m = b("date: Sun, 22 Nov 2026 05:10:32 +0000\r\nMESSAGE-ID: <a@b>\r\n\r\nbody")
    expect(Headers.ensureDate(m, T)).toBe(m)
    expect(Headers.ensureMessageId(m, ones, T, "mx.example.com")).toBe(m)
  })

  it("append the field when it is missing", () => {
    const m = b("Subject: hi\r\n\r\nbody")
    expect(s(Headers.ensureDate(m, T))).toBe("Subject: hi\r\nDate: Sun, 22 Nov 2026 05:10:32 +0000\r\n\r\nbody")
    expect(s(Headers.ensureDate(m, T, 60))).toBe("Subject: hi\r\nDate: Sun, 22 Nov 2026 06:10:32 +0100\r\n\r\nbody")
    expect(s(Headers.ensureMessageId(m, ones, 1469918176385, "mx.example.com"))).toBe(
      "Subject: hi\r\nMessage-Id: <01aryz6s41zzzzzzzzzzzzzzzz@mx.example.com>\r\n\r\nbody"
    )
  })

  it("do not count a Date in the body", () => {
    const m = b("Subject: hi\r\n\r\nDate: not a header\r\n")
    expect(Headers.ensureDate(m, 0)).not.toBe(m)
  })
})

describe("Headers.received", () => {
  const base = { receiver: "mx.example.com", id: "01kaq8x2r0abcdefghjkmnpqrs", timestamp: T }

  it("writes the RFC 5321 §4.4 form with TLS facts and a single recipient", () => {
    const v = Headers.received({ ...base, client: tlsClient, recipients: ["bob@example.com"] })
    expect(v).toBe(
      "from mail.example.org (mail.example.org [192.0.2.1]) (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) " +
        "by mx.example.com (Mailroom) with ESMTPS id 01kaq8x2r0abcdefghjkmnpqrs for <bob@example.com>; Sun, 22 Nov 2026 05:10:32 +0000"
    )
    expect(s(Headers.prepend(b("Subject: x\r\n\r\n"), "Received", v))).toBe(
      "Received: from mail.example.org (mail.example.org [192.0.2.1]) (using TLSv1.3\r\n" +
        " with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) by mx.example.com\r\n" +
        " (Mailroom) with ESMTPS id 01kaq8x2r0abcdefghjkmnpqrs for <bob@example.com>;\r\n" +
        " Sun, 22 Nov 2026 05:10:32 +0000\r\n" +
        "Subject: x\r\n\r\n"
    )
  })

  it("leaves the for clause out unless there is exactly one recipient", () => {
    const client: ClientFacts = { ...tlsClient, tls: undefined, protocol: "ESMTP" }
    const many = Headers.received({ ...base, client, recipients: ["a@x", "b@x"] })
    expect(many).toBe("from mail.example.org (mail.example.org [192.0.2.1]) by mx.example.com (Mailroom) with ESMTP id 01kaq8x2r0abcdefghjkmnpqrs; Sun, 22 Nov 2026 05:10:32 +0000")
    expect(Headers.received({ ...base, client })).toBe(many)
    expect(Headers.received({ ...base, client, recipients: ["jöe@example.com"] })).toBe(many)
    expect(Headers.received({ ...base, client, recipients: ["a>b@x"] })).toBe(many)
  })

  it("writes IPv6 as an IPv6 literal and IPv4-mapped addresses as IPv4", () => {
    const c6: ClientFacts = { ...tlsClient, tls: undefined, address: "2001:db8::1", reverseName: undefined, ehlo: "[IPv6:2001:db8::1]", protocol: "SMTP" }
    expect(Headers.received({ ...base, client: c6, id: "" })).toBe(
      "from [IPv6:2001:db8::1] (unknown [IPv6:2001:db8::1]) by mx.example.com (Mailroom) with SMTP; Sun, 22 Nov 2026 05:10:32 +0000"
    )
    const mapped: ClientFacts = { ...c6, address: "::ffff:198.51.100.7", ehlo: "client" }
    expect(Headers.received({ ...base, client: mapped, id: "q1" })).toBe(
      "from client (unknown [198.51.100.7]) by mx.example.com (Mailroom) with SMTP id q1; Sun, 22 Nov 2026 05:10:32 +0000"
    )
    const zoned: ClientFacts = { ...c6, address: "fe80::1%eth0", ehlo: "client" }
    expect(Headers.received({ ...base, client: zoned, id: "q1" })).toContain("(unknown [IPv6:fe80::1])")
  })

  it("writes unknown for a missing EHLO and omits the address comment when nothing is known", () => {
    expect(Headers.received({ ...base, client: { ...tlsClient, ehlo: undefined, address: undefined, reverseName: undefined, tls: undefined, protocol: "HTTP" }, id: "h1" })).toBe(
      "from unknown by mx.example.com (Mailroom) with HTTP id h1; Sun, 22 Nov 2026 05:10:32 +0000"
    )
  })

  it("adds the authenticated sender only when asked, and the via clause", () => {
    const client: ClientFacts = { ...tlsClient, protocol: "ESMTPSA", auth: "alice", tls: { version: "TLSv1.2", cipher: "ECDHE-RSA-AES128-GCM-SHA256" } }
    const quiet = Headers.received({ ...base, client, id: "q" })
    expect(quiet).not.toContain("alice")
    expect(Headers.received({ ...base, client, id: "q", showAuth: true, via: "TCP" })).toBe(
      "from mail.example.org (mail.example.org [192.0.2.1]) (using TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256) " +
        "(Authenticated sender: alice) by mx.example.com (Mailroom) via TCP with ESMTPSA id q; Sun, 22 Nov 2026 05:10:32 +0000"
    )
  })

  it("sanitizes every value that came from the network", () => {
    const evil: ClientFacts = {
      address: "192.0.2.1]) by forged\r\n",
      port: 25,
      reverseName: "ptr.example (forged) \\",
      ehlo: "evil\r\nX-Injected: 1 (x); ",
      protocol: "ESMTP\r\nX: y",
      tls: { version: "TLS)v1", cipher: "a\\b(c\r\n" },
      auth: "a)b\\c\r\nBcc: x"
    }
    const v = Headers.received({ ...base, client: evil, receiver: "mx (spoof)", id: "id;1", via: "v\r\n", recipients: ["r@x"], showAuth: true })
    expect(v).toBe(
      "from evilX-Injected:1x (ptr.exampleforged) (using TLS\\)v1 with cipher a\\\\b\\(c) " +
        "(Authenticated sender: a\\)b\\\\cBcc: x) by mxspoof (Mailroom) via v with ESMTPX:y id id1 for <r@x>; Sun, 22 Nov 2026 05:10:32 +0000"
    )
    expect(v).not.toMatch(/[\r\n]/)
    const out = Headers.prepend(Bytes.empty, "Received", v)
    expect(Headers.fields(out).length).toBe(1)
  })
})

describe("Headers.isIpAddress and addressLiteral", () => {
  it("accepts IPv4 and IPv6 text forms", () => {
    for (const ok of ["192.0.2.1", "0.0.0.0", "255.255.255.255", "::", "::1", "2001:db8::1", "1:2:3:4:5:6:7:8", "1::", "::ffff:192.0.2.1", "1:2:3:4:5:6:1.2.3.4", "fe80::1%eth0"]) {
      expect(Headers.isIpAddress(ok)).toBe(true)
    }
  })
  it("refuses everything else", () => {
    for (const bad of ["", "256.0.0.1", "1.2.3", "01.2.3.4", "1.2.3.4 ", "1:2:3:4:5:6:7:8:9", "1::2::3", ":1:2:3:4:5:6:7", "1.2.3.4::", "12345::", "g::1", "::1%", "::1%a b", "localhost", "[::1]"]) {
      expect(Headers.isIpAddress(bad)).toBe(false)
    }
  })
  it("writes address literals", () => {
    expect(Headers.addressLiteral("192.0.2.1")).toBe("192.0.2.1")
    expect(Headers.addressLiteral("2001:DB8::1")).toBe("IPv6:2001:DB8::1")
    expect(Headers.addressLiteral("::FFFF:192.0.2.1")).toBe("192.0.2.1")
    expect(Headers.addressLiteral("fe80::1%eth0")).toBe("IPv6:fe80::1")
    expect(Headers.addressLiteral("192.0.2.1]) x")).toBeUndefined()
  })
})

describe("Headers.checkHeaderBlock", () => {
  it("accepts an ordinary header block", () => {
    expect(Headers.checkHeaderBlock(b("Subject: hi\r\n\r\nbody"))).toBeUndefined()
    expect(Headers.isHeaderBlockSane(b("Subject: hi\r\n\r\nbody"))).toBe(true)
  })

  it("refuses one field with thousands of continuation lines", () => {
    const m = b("Subject: ok\r\nX-Bomb: a\r\n" + " b\r\n".repeat(30000) + "\r\nbody")
    expect(Headers.checkHeaderBlock(m)).toEqual({ _tag: "FieldTooLarge", name: "X-Bomb", size: 102403, limit: 102400 })
    expect(Headers.isHeaderBlockSane(m)).toBe(false)
  })

  it("refuses a header block over the block limit, and measures malformed lines too", () => {
    const m = b("A: 1\r\nB: 2\r\n\r\n")
    expect(Headers.checkHeaderBlock(m, { maxBlockBytes: 13, maxFieldBytes: 100 })).toEqual({ _tag: "BlockTooLarge", size: 14, limit: 13 })
    expect(Headers.checkHeaderBlock(m, { maxBlockBytes: 14, maxFieldBytes: 100 })).toBeUndefined()
    expect(Headers.checkHeaderBlock(b("no colon here at all\r\n more\r\n\r\n"), { maxBlockBytes: 100, maxFieldBytes: 25 })).toEqual({
      _tag: "FieldTooLarge",
      name: "no",
      size: 29,
      limit: 25
    })
  })

  it("does not count the body", () => {
    expect(Headers.checkHeaderBlock(b("A: 1\r\n\r\n" + "x".repeat(200)), { maxBlockBytes: 10, maxFieldBytes: 10 })).toBeUndefined()
  })

  it("maps problems to 552 5.3.4", () => {
    expect(Headers.problemReply({ _tag: "BlockTooLarge", size: 2, limit: 1 })).toEqual({ code: 552, enhanced: "5.3.4", lines: ["Message header too large"] })
    expect(Headers.problemReply({ _tag: "FieldTooLarge", name: "X", size: 2, limit: 1 }).lines).toEqual(["Message header field too long"])
  })
})
