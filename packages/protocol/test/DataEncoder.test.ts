import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Bytes from "../src/wire/Bytes.ts"
import * as DataDecoder from "../src/wire/DataDecoder.ts"
import * as DataEncoder from "../src/wire/DataEncoder.ts"

const b = (s: string): Uint8Array => Bytes.fromLatin1(s)
const s = (u: Uint8Array): string => Bytes.toLatin1(u)

const decodeAll = (wire: Uint8Array) =>
  DataDecoder.decode(DataDecoder.initial, wire, 0, { maxSize: 0, bareNewline: "reject" })

/** Any line end (CRLF, bare CR, bare LF) as CRLF, and a final CRLF ensured unless empty. */
const canonical = (m: string): string => {
  const t = m.replace(/\r\n|\r|\n/g, "\r\n")
  return t === "" || t.endsWith("\r\n") ? t : t + "\r\n"
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

const streamed = (chunks: ReadonlyArray<Uint8Array>): string => {
  let state = DataEncoder.initial
  const parts: Array<Uint8Array> = []
  for (const c of chunks) {
    const r = DataEncoder.encodeChunk(state, c)
    state = r.state
    parts.push(r.bytes)
  }
  parts.push(DataEncoder.end(state))
  return s(Bytes.concat(parts))
}

/** Messages with CRLF line ends only (lines of any other bytes, dots included). */
const crlfMessage = fc
  .array(
    fc.array(fc.oneof(fc.constantFrom(0x2e, 0x00, 0x20), fc.integer({ min: 0, max: 255 })), { maxLength: 20 })
      .map((a) => s(Uint8Array.from(a)).replace(/[\r\n]/g, ".")),
    { maxLength: 12 }
  )
  .chain((lines) => fc.boolean().map((endsWithCrlf) => lines.join("\r\n") + (endsWithCrlf && lines.length > 0 ? "\r\n" : "")))

describe("DataEncoder.encode", () => {
  it("appends the terminator, adding a CRLF when the text lacks one", () => {
    expect(s(DataEncoder.encode(b("hi\r\n")))).toBe("hi\r\n.\r\n")
    expect(s(DataEncoder.encode(b("hi")))).toBe("hi\r\n.\r\n")
    expect(s(DataEncoder.encode(b("")))).toBe(".\r\n")
    expect(s(DataEncoder.encode(b("\r\n")))).toBe("\r\n.\r\n")
  })

  it("dot-stuffs every line that starts with a dot, the first one included", () => {
    expect(s(DataEncoder.encode(b(".hi\r\nthere")))).toBe("..hi\r\nthere\r\n.\r\n")
    expect(s(DataEncoder.encode(b("a\r\n.\r\n..\r\nb.c\r\n")))).toBe("a\r\n..\r\n...\r\nb.c\r\n.\r\n")
    expect(s(DataEncoder.encode(b(".")))).toBe("..\r\n.\r\n")
  })

  it("writes every bare CR and bare LF as CRLF, so no smuggling sequence is ever sent", () => {
    expect(s(DataEncoder.encode(b("a\nb")))).toBe("a\r\nb\r\n.\r\n")
    expect(s(DataEncoder.encode(b("a\rb")))).toBe("a\r\nb\r\n.\r\n")
    expect(s(DataEncoder.encode(b("\r\r\n")))).toBe("\r\n\r\n.\r\n")
    expect(s(DataEncoder.encode(b("\n\r")))).toBe("\r\n\r\n.\r\n")
    expect(s(DataEncoder.encode(b("x\n.\r\nMAIL FROM:<a@b>\r\n")))).toBe("x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n")
    expect(s(DataEncoder.encode(b("x\r.\rMAIL")))).toBe("x\r\n..\r\nMAIL\r\n.\r\n")
    expect(s(DataEncoder.encode(b("x\r\n\x00.\r\n")))).toBe("x\r\n\x00.\r\n.\r\n")
  })

  it("property: round trip through DataDecoder for CRLF messages", () => {
    fc.assert(
      fc.property(crlfMessage, (m) => {
        const wire = DataEncoder.encode(b(m))
        const r = decodeAll(wire)
        expect(r.done).toBe(true)
        expect(r.consumed).toBe(wire.length)
        expect(s(DataDecoder.join(r.chunks))).toBe(canonical(m))
        expect(r.state.bareNewline).toBe(false)
      }),
      { numRuns: 500 }
    )
  })

  it("property: for any bytes, the output has no bare CR/LF and its only end of data is the last 5 (or 3) bytes", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constantFrom(0x0d, 0x0a, 0x2e), fc.integer({ min: 0, max: 255 })), { maxLength: 200 }),
        (arr) => {
          const m = Uint8Array.from(arr)
          const wire = DataEncoder.encode(m)
          const text = s(wire)
          expect(/\r(?!\n)|(?<!\r)\n/.test(text)).toBe(false)
          const r = decodeAll(wire)
          expect(r.done).toBe(true)
          expect(r.consumed).toBe(wire.length)
          expect(r.state.bareNewline).toBe(false)
          expect(s(DataDecoder.join(r.chunks))).toBe(canonical(s(m)))
        }
      ),
      { numRuns: 500 }
    )
  })
})

describe("DataEncoder.encodeChunk / end", () => {
  it("handles a CRLF and a stuffed dot split across chunks", () => {
    expect(streamed([b("a\r"), b("\n.b")])).toBe("a\r\n..b\r\n.\r\n")
    expect(streamed([b("a\r"), b("."), b("\n")])).toBe("a\r\n..\r\n.\r\n")
    expect(streamed([])).toBe(".\r\n")
    expect(streamed([b("x"), b("")])).toBe("x\r\n.\r\n")
  })

  it("property: any split gives the same bytes as encode", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constantFrom(0x0d, 0x0a, 0x2e), fc.integer({ min: 0, max: 255 })), { maxLength: 100 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (arr, cuts) => {
          const m = Uint8Array.from(arr)
          const whole = s(DataEncoder.encode(m))
          expect(streamed(splitAt(m, cuts))).toBe(whole)
          expect(streamed(Array.from(m, (x) => Uint8Array.of(x)))).toBe(whole)
        }
      ),
      { numRuns: 300 }
    )
  })
})
