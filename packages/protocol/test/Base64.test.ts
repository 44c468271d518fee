import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Base64 from "../src/auth/Base64.ts"

const bytes = (...xs: Array<number>) => new Uint8Array(xs)
const ascii = (s: string) => new TextEncoder().encode(s)
/** The canonical-form oracle: Node's lenient decoder, re-encoded. */
const nodeCanonical = (s: string): boolean => Buffer.from(s, "base64").toString("base64") === s

describe("Base64", () => {
  it("encodes and decodes the RFC 4648 §10 test vectors", () => {
    const vectors: Array<[string, string]> = [
      ["", ""],
      ["f", "Zg=="],
      ["fo", "Zm8="],
      ["foo", "Zm9v"],
      ["foob", "Zm9vYg=="],
      ["fooba", "Zm9vYmE="],
      ["foobar", "Zm9vYmFy"]
    ]
    for (const [plain, encoded] of vectors) {
      expect(Base64.encode(ascii(plain))).toBe(encoded)
      expect(Base64.decode(encoded)).toEqual(ascii(plain))
    }
  })

  it("uses the standard alphabet with + and /", () => {
    expect(Base64.encode(bytes(0xfb, 0xff, 0xbf))).toBe("+/+/")
    expect(Base64.decode("+/+/")).toEqual(bytes(0xfb, 0xff, 0xbf))
    expect(Base64.decode("-_-_")).toBeUndefined()
  })

  it("rejects misplaced padding (RFC 4954 examples and variants)", () => {
    for (const bad of ["=AAA", "AAA=BBBB", "AA=A", "A===", "====", "A=AA", "AAAA====", "Zg==Zg==", "Zm8=Zm8="]) {
      expect(Base64.decode(bad), bad).toBeUndefined()
    }
  })

  it("rejects missing padding, bad lengths, whitespace and non-ASCII", () => {
    for (const bad of ["Zg", "Zm8", "Zm9vY", "Z", "Zm9v\r\n", "Zm9 v", " Zm9v", "Zm9v\n", "Zm\u00e99", "Zm9v\u0000", "Zg=\u0000"]) {
      expect(Base64.decode(bad), JSON.stringify(bad)).toBeUndefined()
    }
    expect(Base64.isValid("Zm9v")).toBe(true)
    expect(Base64.isValid("Zm9")).toBe(false)
  })

  it("rejects non-zero pad bits (non-canonical encodings)", () => {
    expect(Base64.decode("Zh==")).toBeUndefined()
    expect(Base64.decode("Zm9=")).toBeUndefined()
    expect(Base64.decode("Zg==")).toEqual(ascii("f"))
    expect(Base64.decode("Zm8=")).toEqual(ascii("fo"))
  })

  it("handles large inputs", () => {
    const big = new Uint8Array(100_003).map((_, i) => (i * 31) & 0xff)
    const s = Base64.encode(big)
    expect(s).toBe(Buffer.from(big).toString("base64"))
    expect(Base64.decode(s)).toEqual(big)
  })

  it("property: encode agrees with Node and decode inverts it", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
        const s = Base64.encode(b)
        expect(s).toBe(Buffer.from(b).toString("base64"))
        expect(Base64.decode(s)).toEqual(b)
      }),
      { numRuns: 500 }
    )
  })

  it("property: decode accepts exactly the canonical encodings and never throws", () => {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \r\n\u0000\u00e9"
    const nearBase64 = fc
      .array(fc.integer({ min: 0, max: alphabet.length - 1 }), { maxLength: 24 })
      .map((is) => is.map((i) => alphabet[i]).join(""))
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: "binary", maxLength: 40 }), nearBase64), (s) => {
        const d = Base64.decode(s)
        expect(d !== undefined).toBe(nodeCanonical(s))
        if (d !== undefined) {
          expect(Base64.encode(d)).toBe(s)
          expect(d).toEqual(new Uint8Array(Buffer.from(s, "base64")))
        }
      }),
      { numRuns: 3000 }
    )
  })

  it("property: a valid encoding with one character changed to a non-alphabet one is refused", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 60 }),
        fc.nat(),
        fc.constantFrom(" ", "\n", "-", "_", "*", ".", "\u0000", "\u00ff"),
        (b, at, c) => {
          const s = Base64.encode(b)
          const i = at % s.length
          expect(Base64.decode(s.slice(0, i) + c + s.slice(i + 1))).toBeUndefined()
        }
      )
    )
  })
})
