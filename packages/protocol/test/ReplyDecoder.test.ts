import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Reply from "../src/smtp/Reply.ts"
import * as Bytes from "../src/wire/Bytes.ts"
import * as ReplyDecoder from "../src/wire/ReplyDecoder.ts"

const b = (s: string): Uint8Array => Bytes.fromLatin1(s)
const u = (s: string): Uint8Array => Bytes.fromString(s)

const splitAt = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => (bytes.length === 0 ? 0 : c % (bytes.length + 1))))].sort((x, y) => x - y)
  const out: Array<Uint8Array> = []
  let prev = 0
  for (const p of points) {
    out.push(bytes.subarray(prev, p))
    prev = p
  }
  out.push(bytes.subarray(prev))
  return out
}
const oneByOne = (bytes: Uint8Array): Array<Uint8Array> => Array.from(bytes, (x) => Uint8Array.of(x))

/** Feeds chunks as a client would: append, retry on NeedMore. Returns the first decision. */
const drive = (chunks: ReadonlyArray<Uint8Array>, options?: ReplyDecoder.ReplyOptions): ReplyDecoder.ReplyResult => {
  let pending: Uint8Array = Bytes.empty
  for (const chunk of chunks) {
    pending = Bytes.concat([pending, chunk])
    const r = ReplyDecoder.decode(pending, 0, options)
    if (r._tag !== "NeedMore") return r
  }
  return { _tag: "NeedMore" }
}

/** Decodes every reply of a stream in turn. */
const decodeAll = (buf: Uint8Array): Array<ReplyDecoder.ReplyResult> => {
  const out: Array<ReplyDecoder.ReplyResult> = []
  let off = 0
  while (true) {
    const r = ReplyDecoder.decode(buf, off)
    out.push(r)
    if (r._tag !== "Reply") return out
    off += r.consumed
  }
}

const reply = (code: number, enhanced: string | undefined, lines: Array<string>): Reply.Reply => ({ code, enhanced, lines })

describe("ReplyDecoder.decode", () => {
  it("decodes a one-line reply with an enhanced status code", () => {
    expect(ReplyDecoder.decode(b("250 2.0.0 Ok\r\n"), 0)).toEqual({
      _tag: "Reply",
      reply: reply(250, "2.0.0", ["Ok"]),
      consumed: 14
    })
  })

  it("decodes a multi-line EHLO reply without enhanced codes", () => {
    const input = b("250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 ENHANCEDSTATUSCODES\r\n")
    expect(ReplyDecoder.decode(input, 0)).toEqual({
      _tag: "Reply",
      reply: reply(250, undefined, ["mx.example.com Hello", "PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES"]),
      consumed: input.length
    })
  })

  it("splits the enhanced code only when every line carries the same one of the code's class", () => {
    const dec = (x: string) => {
      const r = ReplyDecoder.decode(b(x), 0)
      return r._tag === "Reply" ? r.reply : r
    }
    expect(dec("550-5.1.1 No such\r\n550 5.1.1 user\r\n")).toEqual(reply(550, "5.1.1", ["No such", "user"]))
    expect(dec("550-5.1.1 a\r\n550 b\r\n")).toEqual(reply(550, undefined, ["5.1.1 a", "b"]))
    expect(dec("550-5.1.1 a\r\n550 5.1.2 b\r\n")).toEqual(reply(550, undefined, ["5.1.1 a", "5.1.2 b"]))
    expect(dec("250 5.1.1 class mismatch\r\n")).toEqual(reply(250, undefined, ["5.1.1 class mismatch"]))
    expect(dec("354 3.0.0 no class 3\r\n")).toEqual(reply(354, undefined, ["3.0.0 no class 3"]))
    expect(dec("250 2.0.0x\r\n")).toEqual(reply(250, undefined, ["2.0.0x"]))
    expect(dec("250 2.0.1000 big\r\n")).toEqual(reply(250, undefined, ["2.0.1000 big"]))
    expect(dec("250 2.0.0\r\n")).toEqual(reply(250, "2.0.0", [""]))
    expect(dec("250-2.0.0\r\n250 2.0.0 Ok\r\n")).toEqual(reply(250, "2.0.0", ["", "Ok"]))
    expect(dec("250 2.0.0  two spaces \r\n")).toEqual(reply(250, "2.0.0", [" two spaces "]))
  })

  it("reads `250` and `250 ` as an empty line, and `250-` as an empty continuation", () => {
    expect(ReplyDecoder.decode(b("250\r\n"), 0)).toEqual({ _tag: "Reply", reply: reply(250, undefined, [""]), consumed: 5 })
    expect(ReplyDecoder.decode(b("250 \r\n"), 0)).toEqual({ _tag: "Reply", reply: reply(250, undefined, [""]), consumed: 6 })
    expect(ReplyDecoder.decode(b("250-\r\n250 x\r\n"), 0)).toEqual({
      _tag: "Reply",
      reply: reply(250, undefined, ["", "x"]),
      consumed: 13
    })
  })

  it("tolerates a bare LF line end from the peer", () => {
    expect(ReplyDecoder.decode(b("220-mx ESMTP\n220 ready\r\n"), 0)).toEqual({
      _tag: "Reply",
      reply: reply(220, undefined, ["mx ESMTP", "ready"]),
      consumed: 24
    })
  })

  it("decodes UTF-8 text, with U+FFFD for invalid bytes", () => {
    const r = ReplyDecoder.decode(Bytes.concat([u("250 2.0.0 caf\u00e9 \u2713 "), Uint8Array.of(0xff), b("\r\n")]), 0)
    expect(r._tag === "Reply" && r.reply.lines).toEqual(["caf\u00e9 \u2713 \ufffd"])
  })

  it("needs more until the last line is complete", () => {
    for (const x of ["", "2", "250", "250 Ok", "250 Ok\r", "250-a\r\n", "250-a\r\n250 b"]) {
      expect(ReplyDecoder.decode(b(x), 0)).toEqual({ _tag: "NeedMore" })
    }
  })

  it("decodes pipelined replies one after the other from `offset`", () => {
    const input = b("250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n550 5")
    expect(decodeAll(input)).toEqual([
      { _tag: "Reply", reply: reply(250, "2.1.0", ["Sender ok"]), consumed: 21 },
      { _tag: "Reply", reply: reply(250, "2.1.5", ["Recipient ok"]), consumed: 24 },
      { _tag: "Reply", reply: reply(354, undefined, ["End data with <CR><LF>.<CR><LF>"]), consumed: 37 },
      { _tag: "NeedMore" }
    ])
  })

  it("refuses malformed lines, consuming through the offending line", () => {
    const cases: Array<[string, number]> = [
      ["abc def\r\n", 9],
      ["25\r\n", 4],
      ["\r\n", 2],
      ["199 too low\r\n", 13],
      ["600 too high\r\n", 14],
      ["099 x\r\n", 7],
      ["250x\r\n", 6],
      ["250_Ok\r\n", 8],
      ["25a Ok\r\n", 8],
      ["250-a\r\n251 b\r\n", 14],
      ["250-a\r\n25\r\n", 11]
    ]
    for (const [input, consumed] of cases) {
      const r = ReplyDecoder.decode(b(input), 0)
      expect([input, r._tag, r._tag === "Malformed" ? r.consumed : -1]).toEqual([input, "Malformed", consumed])
    }
    const mixed = ReplyDecoder.decode(b("250-a\r\n251 b\r\n"), 0)
    expect(mixed._tag === "Malformed" && mixed.reason).toBe("reply code 251 differs from 250 in a multiline reply")
  })

  it("refuses an over-long line as soon as maxLineLength bytes hold no line end", () => {
    const opts = { maxLineLength: 16 }
    expect(ReplyDecoder.decode(b("250 " + "x".repeat(10) + "\r\n"), 0, opts)._tag).toBe("Reply") // 16 bytes
    expect(ReplyDecoder.decode(b("250 " + "x".repeat(11)), 0, opts)).toEqual({ _tag: "NeedMore" }) // 15 bytes
    const long = ReplyDecoder.decode(b("250 " + "x".repeat(11) + "\r\n"), 0, opts) // 17 bytes
    expect(long).toEqual({ _tag: "Malformed", reason: "reply line longer than 16 bytes", consumed: 16 })
    expect(ReplyDecoder.decode(b("250 " + "x".repeat(12)), 0, opts)).toEqual(long)
    // the default is 2048
    expect(ReplyDecoder.decode(b("250 " + "y".repeat(2044)), 0)).toMatchObject({ _tag: "Malformed", consumed: 2048 })
  })

  it("refuses a reply of more than maxLines lines", () => {
    const three = b("250-a\r\n250-b\r\n250 c\r\n")
    expect(ReplyDecoder.decode(three, 0, { maxLines: 3 })._tag).toBe("Reply")
    expect(ReplyDecoder.decode(three, 0, { maxLines: 2 })).toEqual({
      _tag: "Malformed",
      reason: "reply of more than 2 lines",
      consumed: 14
    })
    const many = b("250-x\r\n".repeat(128))
    expect(ReplyDecoder.decode(many, 0)).toMatchObject({ _tag: "Malformed", consumed: 128 * 7 })
    expect(ReplyDecoder.decode(many.subarray(0, 127 * 7), 0)).toEqual({ _tag: "NeedMore" })
  })

  it("decodes the catalogue's replies back to themselves", () => {
    for (const r of [Reply.ok, Reply.startData, Reply.banner("mx.example"), Reply.lineTooLong, Reply.make(250, undefined, ["a", "", "b"])]) {
      expect(ReplyDecoder.decode(Reply.encode(r), 0)).toEqual({ _tag: "Reply", reply: r, consumed: Reply.encode(r).length })
    }
  })

  // --- properties -----------------------------------------------------------

  const enhancedFor = (code: number) => {
    const klass = Math.floor(code / 100)
    return klass === 3
      ? fc.constant(undefined)
      : fc.option(fc.tuple(fc.nat({ max: 999 }), fc.nat({ max: 999 })).map(([a, c]) => `${klass}.${a}.${c}`), { nil: undefined })
  }
  const lineText = fc.oneof(
    fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 40 }),
    fc.string({ unit: "grapheme", maxLength: 10 })
  ).filter((t) => !/[\r\n\0]/.test(t))
  /** Replies Reply.encode -> decode maps to themselves (see the module header for the exclusion). */
  const arbReply = fc
    .integer({ min: 200, max: 599 })
    .chain((code) =>
      fc.record({ code: fc.constant(code), enhanced: enhancedFor(code), lines: fc.array(lineText, { minLength: 1, maxLength: 6 }) })
    )
    .map(({ code, enhanced, lines }) => Reply.make(code, enhanced, lines))
    .filter((r) => {
      if (r.enhanced !== undefined) return true
      // text that itself starts with a matching enhanced code on every line would be read as one
      const m = /^(\d\.\d{1,3}\.\d{1,3})(?: |$)/.exec(r.lines[0]!)
      return !(m && Reply.isEnhancedStatus(m[1]!) && m[1]![0] === String(r.code)[0] &&
        r.lines.every((l) => l === m[1] || l.startsWith(m[1]! + " ")))
    })

  it("property: decode(Reply.encode(r)) is r, whole, one byte at a time and at arbitrary splits", () => {
    fc.assert(
      fc.property(arbReply, fc.array(fc.nat(), { maxLength: 8 }), (r, cuts) => {
        const wire = Bytes.concat([Reply.encode(r), b("221 2.0.0 Bye\r\n")])
        const expected = { _tag: "Reply", reply: r, consumed: Reply.encode(r).length }
        expect(ReplyDecoder.decode(wire, 0)).toEqual(expected)
        expect(drive(oneByOne(wire))).toEqual(expected)
        expect(drive(splitAt(wire, cuts))).toEqual(expected)
      }),
      { numRuns: 500 }
    )
  })

  it("property: text that looks like an enhanced code survives when the reply has one", () => {
    fc.assert(
      fc.property(fc.constantFrom("2.0.0", "2.1.5 x", "5.1.1"), (t) => {
        const r = Reply.make(250, "2.0.0", [t])
        expect(ReplyDecoder.decode(Reply.encode(r), 0)).toMatchObject({ _tag: "Reply", reply: r })
      })
    )
  })

  it("property: arbitrary bytes never throw and decide the same whatever the split", () => {
    const replyish = fc
      .array(
        fc.oneof(
          fc.constantFrom("250", "250-", "250 ", "550 5.1.1 ", "2.0.0 ", "\r\n", "\n", "\r", "x", "1", " "),
          fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c))
        ),
        { maxLength: 40 }
      )
      .map((parts) => b(parts.join("")))
    fc.assert(
      fc.property(
        fc.oneof(replyish, fc.uint8Array({ maxLength: 200 })),
        fc.array(fc.nat(), { maxLength: 8 }),
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 1, max: 6 }),
        (input, cuts, maxLineLength, maxLines) => {
          const options = { maxLineLength, maxLines }
          const whole = ReplyDecoder.decode(input, 0, options)
          if (whole._tag !== "NeedMore") {
            expect(whole.consumed).toBeGreaterThan(0)
            expect(whole.consumed).toBeLessThanOrEqual(input.length)
          }
          expect(drive(oneByOne(input), options)).toEqual(whole)
          expect(drive(splitAt(input, cuts), options)).toEqual(whole)
        }
      ),
      { numRuns: 500 }
    )
  })
})
