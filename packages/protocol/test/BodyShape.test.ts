import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as BodyShape from "../src/wire/BodyShape.ts"
import * as Bytes from "../src/wire/Bytes.ts"
import * as DataEncoder from "../src/wire/DataEncoder.ts"

// A byte-by-byte reference of the canonical form: every CR, LF or CRLF becomes CRLF; a final CRLF is added.
const reference = (data: Uint8Array): Uint8Array => {
  const out: Array<number> = []
  for (let i = 0; i < data.length; i++) {
    const c = data[i]!
    if (c === Bytes.CR && data[i + 1] === Bytes.LF) continue
    if (c === Bytes.CR || c === Bytes.LF) out.push(Bytes.CR, Bytes.LF)
    else out.push(c)
  }
  const n = out.length
  if (n > 0 && !(out[n - 2] === Bytes.CR && out[n - 1] === Bytes.LF)) out.push(Bytes.CR, Bytes.LF)
  return new Uint8Array(out)
}

const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i])

// bytes rich in CR, LF, "." and 8-bit values, at any offset of a larger buffer (the word loop's alignment)
const body = fc.tuple(
  fc.array(fc.oneof(fc.constantFrom(Bytes.CR, Bytes.LF, Bytes.DOT, 0x41, 0xc3), fc.integer({ min: 0, max: 255 })), { maxLength: 200 }),
  fc.integer({ min: 0, max: 7 })
).map(([xs, offset]) => {
  const buf = new Uint8Array(xs.length + offset)
  buf.set(xs, offset)
  return buf.subarray(offset)
})

describe("BodyShape", () => {
  it("examples: clean, stuffed, bare LF, no final CRLF, 8-bit, empty", () => {
    const t = (s: string) => BodyShape.of(Bytes.fromString(s))
    expect(t("a\r\nb\r\n")).toEqual({ eightBit: false, size: 6, canonical: true, clean: true })
    expect(t("a\r\n.b\r\n")).toEqual({ eightBit: false, size: 7, canonical: true, clean: false })
    expect(t("a\nb\r\n")).toEqual({ eightBit: false, size: 6, canonical: false, clean: false })
    expect(t("a\r\nb")).toEqual({ eightBit: false, size: 6, canonical: false, clean: false })
    expect(t("é\r\n")).toEqual({ eightBit: true, size: 4, canonical: true, clean: true })
    expect(t("")).toEqual({ eightBit: false, size: 0, canonical: true, clean: true })
    expect(new TextDecoder().decode(BodyShape.canonical(Bytes.fromString("a\rb\nc")))).toBe("a\r\nb\r\nc\r\n")
  })

  it("agrees with a byte-by-byte reference, at every alignment", () => {
    fc.assert(
      fc.property(body, (data) => {
        const shape = BodyShape.of(data)
        const canon = reference(data)
        expect(BodyShape.canonical(data)).toEqual(canon)
        expect(shape.size).toBe(canon.length)
        expect(shape.canonical).toBe(equal(canon, data))
        expect(shape.eightBit).toBe(data.some((b) => b >= 0x80))
        // clean: the DATA payload is the bytes plus ".\r\n", exactly what the encoder makes
        const plain = Bytes.concat([data, Bytes.fromString(".\r\n")])
        if (shape.clean) expect(DataEncoder.encode(data)).toEqual(plain)
        else if (shape.canonical) expect(equal(DataEncoder.encode(data), plain)).toBe(false)
      }),
      { numRuns: 2000 }
    )
  })
})
