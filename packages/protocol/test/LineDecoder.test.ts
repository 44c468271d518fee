import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Bytes from "../src/wire/Bytes.ts"
import * as LineDecoder from "../src/wire/LineDecoder.ts"

const b = (s: string): Uint8Array => Bytes.fromLatin1(s)
const s = (u: Uint8Array): string => Bytes.toLatin1(u)

type Event = { readonly tag: "Line"; readonly line: string } | { readonly tag: "TooLong" } | { readonly tag: "BareNewline" }

/** Feeds `chunks` as a session would: keeps unconsumed bytes and presents them again with the next chunk. */
const drive = (chunks: ReadonlyArray<Uint8Array>, limit: number) => {
  let state = LineDecoder.initial
  let pending: Uint8Array = Bytes.empty
  const events: Array<Event> = []
  let maxPending = 0
  for (const chunk of chunks) {
    pending = Bytes.concat([pending, chunk])
    let off = 0
    while (true) {
      const r = LineDecoder.decode(state, pending, off, limit)
      state = r.state
      expect(r.result.consumed).toBeGreaterThanOrEqual(0)
      off += r.result.consumed
      expect(off).toBeLessThanOrEqual(pending.length)
      if (r.result._tag === "NeedMore") break
      if (r.result._tag === "Line") events.push({ tag: "Line", line: s(r.result.line) })
      else events.push({ tag: r.result._tag })
    }
    pending = pending.slice(off)
    maxPending = Math.max(maxPending, pending.length)
  }
  return { events, state, pending: s(pending), maxPending }
}

/** A reference model written from the RFC text: split on CRLF, judge each complete piece. */
const reference = (input: string, limit: number): Array<Event> => {
  const pieces = input.split("\r\n")
  pieces.pop() // the incomplete tail
  return pieces.map((p): Event =>
    p.length + 2 > limit ? { tag: "TooLong" } : /[\r\n]/.test(p) ? { tag: "BareNewline" } : { tag: "Line", line: p }
  )
}

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

/** Bytes drawn mostly from the characters that matter to framing. */
const framingBytes = fc
  .array(fc.oneof(fc.constantFrom(0x0d, 0x0a, 0x2e, 0x61, 0x20), fc.integer({ min: 0, max: 255 })), { maxLength: 300 })
  .map((a) => Uint8Array.from(a))

describe("LineDecoder.decode", () => {
  it("returns each CRLF-terminated line without its CRLF, with exact consumed counts", () => {
    const buf = b("EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n\r\nQU")
    let r = LineDecoder.decode(LineDecoder.initial, buf, 0, 512)
    expect(r.result).toMatchObject({ _tag: "Line", consumed: 21 })
    expect(r.result._tag === "Line" && s(r.result.line)).toBe("EHLO client.example")
    r = LineDecoder.decode(r.state, buf, 21, 512)
    expect(r.result._tag === "Line" && s(r.result.line)).toBe("MAIL FROM:<a@b.example>")
    expect(r.result.consumed).toBe(25)
    r = LineDecoder.decode(r.state, buf, 46, 512)
    expect(r.result._tag === "Line" && r.result.line.length).toBe(0)
    expect(r.result.consumed).toBe(2)
    r = LineDecoder.decode(r.state, buf, 48, 512)
    expect(r).toEqual({ state: { discarding: false }, result: { _tag: "NeedMore", consumed: 0 } })
  })

  it("returns the line as a view of the caller's buffer", () => {
    const buf = b("NOOP\r\n")
    const r = LineDecoder.decode(LineDecoder.initial, buf, 0, 512)
    expect(r.result._tag).toBe("Line")
    if (r.result._tag === "Line") {
      expect(r.result.line.buffer).toBe(buf.buffer)
      expect(r.result.line.byteOffset).toBe(0)
      expect(r.result.line.length).toBe(4)
    }
  })

  it("never consumes a trailing CR, and ends the line when the LF arrives", () => {
    expect(LineDecoder.decode(LineDecoder.initial, b("QUIT\r"), 0, 512).result).toEqual({ _tag: "NeedMore", consumed: 0 })
    const r = LineDecoder.decode(LineDecoder.initial, b("QUIT\r\n"), 0, 512)
    expect(r.result._tag === "Line" && s(r.result.line)).toBe("QUIT")
    expect(LineDecoder.decode(LineDecoder.initial, Bytes.empty, 0, 512).result).toEqual({ _tag: "NeedMore", consumed: 0 })
  })

  it("takes a bare LF or bare CR as part of the line and reports the whole line as BareNewline", () => {
    for (const input of ["NOOP\nRSET\r\n", "NOOP\rRSET\r\n", "\nQUIT\r\n", "QUIT\r\r\n", "DATA\n\r\n"]) {
      const r = LineDecoder.decode(LineDecoder.initial, b(input), 0, 512)
      expect(r.result).toEqual({ _tag: "BareNewline", consumed: input.length })
      expect(r.state.discarding).toBe(false)
    }
    // a bare LF is never a line end, even when nothing follows yet
    expect(LineDecoder.decode(LineDecoder.initial, b("RSET\nQUIT\n"), 0, 512).result).toEqual({ _tag: "NeedMore", consumed: 0 })
    // the line after it is decoded normally
    const buf = b("RSET\nX\r\nQUIT\r\n")
    const first = LineDecoder.decode(LineDecoder.initial, buf, 0, 512)
    expect(first.result).toEqual({ _tag: "BareNewline", consumed: 8 })
    const second = LineDecoder.decode(first.state, buf, 8, 512)
    expect(second.result._tag === "Line" && s(second.result.line)).toBe("QUIT")
  })

  it("accepts a line of exactly `limit` bytes including CRLF and refuses one byte more", () => {
    const ok = "A".repeat(510) + "\r\n"
    const r = LineDecoder.decode(LineDecoder.initial, b(ok), 0, 512)
    expect(r.result._tag).toBe("Line")
    expect(r.result.consumed).toBe(512)
    const long = "A".repeat(511) + "\r\n"
    expect(LineDecoder.decode(LineDecoder.initial, b(long), 0, 512)).toEqual({
      state: { discarding: false },
      result: { _tag: "TooLong", consumed: 513 }
    })
    // 511 bytes and a final CR: still undecided
    expect(LineDecoder.decode(LineDecoder.initial, b("A".repeat(510) + "\r"), 0, 512).result).toEqual({
      _tag: "NeedMore",
      consumed: 0
    })
  })

  it("discards an over-long line as it arrives and reports TooLong once at its CRLF", () => {
    const first = LineDecoder.decode(LineDecoder.initial, b("X".repeat(600)), 0, 512)
    expect(first).toEqual({ state: { discarding: true }, result: { _tag: "NeedMore", consumed: 600 } })
    const more = LineDecoder.decode(first.state, b("Y".repeat(100) + "\r"), 0, 512)
    expect(more).toEqual({ state: { discarding: true }, result: { _tag: "NeedMore", consumed: 100 } })
    const buf = b("\r\nQUIT\r\n")
    const end = LineDecoder.decode(more.state, buf, 0, 512)
    expect(end).toEqual({ state: { discarding: false }, result: { _tag: "TooLong", consumed: 2 } })
    const next = LineDecoder.decode(end.state, buf, 2, 512)
    expect(next.result._tag === "Line" && s(next.result.line)).toBe("QUIT")
  })

  it("enters discarding with exactly `limit` bytes and no CRLF", () => {
    expect(LineDecoder.decode(LineDecoder.initial, b("A".repeat(511)), 0, 512).result).toEqual({
      _tag: "NeedMore",
      consumed: 0
    })
    expect(LineDecoder.decode(LineDecoder.initial, b("A".repeat(512)), 0, 512)).toEqual({
      state: { discarding: true },
      result: { _tag: "NeedMore", consumed: 512 }
    })
    expect(LineDecoder.decode(LineDecoder.initial, b("A".repeat(511) + "\r"), 0, 512)).toEqual({
      state: { discarding: true },
      result: { _tag: "NeedMore", consumed: 511 }
    })
  })

  it("honours a larger limit for AUTH continuation lines", () => {
    const line = "Q".repeat(12286)
    const r = LineDecoder.decode(LineDecoder.initial, b(line + "\r\n"), 0, 12288)
    expect(r.result._tag === "Line" && r.result.line.length).toBe(12286)
    expect(LineDecoder.decode(LineDecoder.initial, b(line + "Q\r\n"), 0, 12288).result).toEqual({
      _tag: "TooLong",
      consumed: 12289
    })
  })

  it("reports TooLong (not BareNewline) for an over-long line holding a bare LF", () => {
    const input = "A\n" + "B".repeat(600) + "\r\n"
    expect(drive([b(input)], 512).events).toEqual([{ tag: "TooLong" }])
    expect(drive(oneByOne(b(input)), 512).events).toEqual([{ tag: "TooLong" }])
  })

  it("starts at `offset`", () => {
    const buf = b("garbageRSET\r\n")
    const r = LineDecoder.decode(LineDecoder.initial, buf, 7, 512)
    expect(r.result._tag === "Line" && s(r.result.line)).toBe("RSET")
    expect(r.result.consumed).toBe(6)
  })

  it("decodes a pipelined group the same whole, one byte at a time and in pieces", () => {
    const input = b(
      "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e\n@f>\r\n" + "Z".repeat(700) + "\r\nDATA\r\n"
    )
    const expected: Array<Event> = [
      { tag: "Line", line: "MAIL FROM:<a@b>" },
      { tag: "Line", line: "RCPT TO:<c@d>" },
      { tag: "BareNewline" },
      { tag: "TooLong" },
      { tag: "Line", line: "DATA" }
    ]
    expect(drive([input], 512).events).toEqual(expected)
    expect(drive(oneByOne(input), 512).events).toEqual(expected)
    expect(drive(splitAt(input, [3, 40, 41, 300, 701, 760]), 512).events).toEqual(expected)
  })

  it("property: whole, one byte at a time and arbitrary splits agree with the reference model", () => {
    fc.assert(
      fc.property(framingBytes, fc.array(fc.nat(), { maxLength: 12 }), fc.integer({ min: 2, max: 40 }), (input, cuts, limit) => {
        const expected = reference(s(input), limit)
        const whole = drive([input], limit)
        expect(whole.events).toEqual(expected)
        const single = drive(oneByOne(input), limit)
        expect(single.events).toEqual(expected)
        expect(single.state).toEqual(whole.state)
        expect(single.pending).toBe(whole.pending)
        const pieces = drive(splitAt(input, cuts), limit)
        expect(pieces.events).toEqual(expected)
        expect(pieces.state).toEqual(whole.state)
        expect(pieces.pending).toBe(whole.pending)
        // memory stays bounded: never more than `limit` bytes kept between calls
        expect(single.maxPending).toBeLessThanOrEqual(limit)
      }),
      { numRuns: 500 }
    )
  })

  it("property: arbitrary bytes, offsets and limits never throw and consume within bounds", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat(), fc.integer({ min: -5, max: 600 }), fc.boolean(), (buf, off, limit, discarding) => {
        const offset = buf.length === 0 ? 0 : off % (buf.length + 1)
        const r = LineDecoder.decode({ discarding }, buf, offset, limit)
        expect(r.result.consumed).toBeGreaterThanOrEqual(0)
        expect(offset + r.result.consumed).toBeLessThanOrEqual(buf.length)
      }),
      { numRuns: 500 }
    )
  })
})
