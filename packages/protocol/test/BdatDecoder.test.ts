import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as BdatDecoder from "../src/wire/BdatDecoder.ts"
import * as Bytes from "../src/wire/Bytes.ts"

const b = (s: string): Uint8Array => Bytes.fromLatin1(s)
const s = (u: Uint8Array): string => Bytes.toLatin1(u)

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

/** Feeds a BDAT body of `size` octets followed by whatever comes next, as the session would. */
const drive = (size: number, chunks: ReadonlyArray<Uint8Array>) => {
  let remaining = size
  let pending: Uint8Array = Bytes.empty
  const parts: Array<Uint8Array> = []
  let k = 0
  for (; k < chunks.length && remaining > 0; k++) {
    pending = Bytes.concat([pending, chunks[k]!])
    const r = BdatDecoder.decode(remaining, pending, 0)
    expect(r.consumed).toBe(r.chunk.length)
    parts.push(r.chunk)
    remaining = r.remaining
    pending = pending.slice(r.consumed)
    expect(remaining === 0 || pending.length === 0).toBe(true)
  }
  return { body: s(Bytes.concat(parts)), remaining, rest: s(Bytes.concat([pending, ...chunks.slice(k)])) }
}

const refBare = (m: string): boolean => /\r(?!\n)|(?<!\r)\n/.test(m)
const refNormalize = (m: string): string => m.replace(/\r\n|\r|\n/g, "\r\n")

const newlineBytes = fc
  .array(fc.oneof(fc.constantFrom(0x0d, 0x0a), fc.integer({ min: 0, max: 255 })), { maxLength: 120 })
  .map((a) => Uint8Array.from(a))

describe("BdatDecoder.decode", () => {
  it("takes exactly the announced octets and leaves the next command", () => {
    const buf = b("Hello\r\n.\r\nQUIT\r\n")
    const r = BdatDecoder.decode(10, buf, 0)
    expect(s(r.chunk)).toBe("Hello\r\n.\r\n")
    expect(r).toMatchObject({ consumed: 10, remaining: 0 })
    expect(r.chunk.buffer).toBe(buf.buffer)
  })

  it("takes what is there when the chunk is not complete", () => {
    expect(BdatDecoder.decode(10, b("abc"), 0)).toEqual({ chunk: b("abc"), consumed: 3, remaining: 7 })
    expect(BdatDecoder.decode(10, b("xxabc"), 2)).toEqual({ chunk: b("abc"), consumed: 3, remaining: 7 })
    expect(BdatDecoder.decode(10, b("abc"), 3)).toEqual({ chunk: b(""), consumed: 0, remaining: 10 })
  })

  it("consumes nothing for a zero-length chunk (BDAT 0 LAST)", () => {
    expect(BdatDecoder.decode(0, b("QUIT\r\n"), 0)).toEqual({ chunk: b(""), consumed: 0, remaining: 0 })
  })

  it("reads the same body whole, one byte at a time and in pieces", () => {
    const input = b("Subject: x\r\n\r\nbody\r\nRSET\r\n")
    const expected = { body: "Subject: x\r\n\r\nbody\r\n", remaining: 0, rest: "RSET\r\n" }
    expect(drive(20, [input])).toEqual(expected)
    expect(drive(20, oneByOne(input))).toEqual(expected)
    expect(drive(20, splitAt(input, [1, 7, 19, 20, 21]))).toEqual(expected)
  })

  it("property: any split reads exactly `size` octets", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat({ max: 250 }), fc.array(fc.nat(), { maxLength: 8 }), (input, size, cuts) => {
        const whole = drive(size, [input])
        const take = Math.min(size, input.length)
        expect(whole.body).toBe(s(input.subarray(0, take)))
        expect(whole.remaining).toBe(size - take)
        expect(drive(size, splitAt(input, cuts))).toEqual(whole)
        expect(drive(size, oneByOne(input))).toEqual(whole)
      }),
      { numRuns: 300 }
    )
  })

  it("property: arbitrary arguments never throw", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 50 }), fc.integer({ min: -5, max: 100 }), fc.integer({ min: 0, max: 60 }), (buf, remaining, offset) => {
        const r = BdatDecoder.decode(remaining, buf, offset)
        expect(r.consumed).toBeGreaterThanOrEqual(0)
        expect(r.remaining).toBeGreaterThanOrEqual(0)
      })
    )
  })
})

describe("BdatDecoder bare newlines", () => {
  it("hasBareNewline finds bare CR and bare LF but not CRLF", () => {
    expect(BdatDecoder.hasBareNewline(b("a\r\nb\r\n"), false)).toBe(false)
    expect(BdatDecoder.hasBareNewline(b("a\nb"), false)).toBe(true)
    expect(BdatDecoder.hasBareNewline(b("a\rb"), false)).toBe(true)
    expect(BdatDecoder.hasBareNewline(b("\n.\r\n"), false)).toBe(true)
    expect(BdatDecoder.hasBareNewline(b(""), false)).toBe(false)
  })

  it("judges a CRLF split across chunks with prevEndedWithCr, and leaves a trailing CR open", () => {
    expect(BdatDecoder.hasBareNewline(b("abc\r"), false)).toBe(false)
    expect(BdatDecoder.endsWithCr(b("abc\r"), false)).toBe(true)
    expect(BdatDecoder.hasBareNewline(b("\nxyz"), true)).toBe(false)
    expect(BdatDecoder.hasBareNewline(b("xyz"), true)).toBe(true)
    expect(BdatDecoder.hasBareNewline(b("\nxyz"), false)).toBe(true)
    expect(BdatDecoder.endsWithCr(b(""), true)).toBe(true)
    expect(BdatDecoder.endsWithCr(b("x"), true)).toBe(false)
  })

  it("normalize writes bare CR and bare LF as CRLF and returns the input itself when clean", () => {
    const clean = b("a\r\nb")
    expect(BdatDecoder.normalize(clean, false)).toBe(clean)
    expect(s(BdatDecoder.normalize(b("a\nb\rc\r\r\nd"), false))).toBe("a\r\nb\r\nc\r\n\r\nd")
    expect(s(BdatDecoder.normalize(b("\n.\n"), false))).toBe("\r\n.\r\n")
    // the previous chunk's CR: completed by this chunk's LF, or made CRLF when none comes
    expect(s(BdatDecoder.normalize(b("\nx"), true))).toBe("\nx")
    expect(s(BdatDecoder.normalize(b("x\n"), true))).toBe("\nx\r\n")
    // a trailing CR is left for the next chunk / endOfMessage
    expect(s(BdatDecoder.normalize(b("x\ny\r"), false))).toBe("x\r\ny\r")
    expect(s(BdatDecoder.endOfMessage(true))).toBe("\n")
    expect(BdatDecoder.endOfMessage(false).length).toBe(0)
  })

  it("property: over any chunking, normalize and hasBareNewline agree with the whole-message reference", () => {
    fc.assert(
      fc.property(newlineBytes, fc.array(fc.nat(), { maxLength: 10 }), (m, cuts) => {
        let prev = false
        let bare = false
        const out: Array<Uint8Array> = []
        for (const chunk of splitAt(m, cuts)) {
          bare ||= BdatDecoder.hasBareNewline(chunk, prev)
          out.push(BdatDecoder.normalize(chunk, prev))
          prev = BdatDecoder.endsWithCr(chunk, prev)
        }
        bare ||= prev
        out.push(BdatDecoder.endOfMessage(prev))
        expect(s(Bytes.concat(out))).toBe(refNormalize(s(m)))
        expect(bare).toBe(refBare(s(m)))
      }),
      { numRuns: 500 }
    )
  })
})
