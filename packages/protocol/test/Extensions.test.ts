import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Extensions from "../src/smtp/Extensions.ts"
import * as Reply from "../src/smtp/Reply.ts"

const ehlo = (...lines: Array<string>) => Extensions.parseEhlo(Reply.make(250, undefined, lines))

describe("Extensions.build", () => {
  it("builds a multi-line 250 without an enhanced code", () => {
    const r = Extensions.build("mx.example Hello client.example", [
      ["PIPELINING", []],
      ["SIZE", ["10240000"]],
      ["AUTH", ["PLAIN", "LOGIN"]],
      ["8BITMIME", []]
    ])
    expect(r.code).toBe(250)
    expect(r.enhanced).toBeUndefined()
    expect(Reply.encodeString(r)).toBe(
      "250-mx.example Hello client.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
    )
  })

  it("builds a one-line reply without keywords", () => {
    expect(Reply.encodeString(Extensions.build("mx.example", []))).toBe("250 mx.example\r\n")
  })
})

describe("Extensions.parseEhlo", () => {
  it("reads the greeting and the keywords, upper-casing keywords only", () => {
    const { greeting, extensions } = ehlo("mx.example Hello", "pipelining", "Size 1000", "AUTH plain Login", "X-Thing a B")
    expect(greeting).toBe("mx.example Hello")
    expect([...extensions.keywords.entries()]).toStrictEqual([
      ["PIPELINING", []],
      ["SIZE", ["1000"]],
      ["AUTH", ["plain", "Login"]],
      ["X-THING", ["a", "B"]]
    ])
    expect(Extensions.has(extensions, "Pipelining")).toBe(true)
    expect(Extensions.has(extensions, "STARTTLS")).toBe(false)
    expect(Extensions.params(extensions, "x-thing")).toStrictEqual(["a", "B"])
    expect(Extensions.params(extensions, "CHUNKING")).toBeUndefined()
    expect(Extensions.authMechanisms(extensions)).toStrictEqual(["PLAIN", "LOGIN"])
  })

  it("a one-line reply has no extensions", () => {
    const { greeting, extensions } = ehlo("mx.example")
    expect(greeting).toBe("mx.example")
    expect(extensions.keywords.size).toBe(0)
    expect(Extensions.authMechanisms(extensions)).toStrictEqual([])
    expect(Extensions.sizeLimit(extensions)).toBeUndefined()
  })

  it("skips malformed lines and keeps the first of repeated keywords", () => {
    const { extensions } = ehlo("mx", "", "   ", "-BAD", "B@D x", "SIZE 10", "size 20", "  STARTTLS  ")
    expect([...extensions.keywords.entries()]).toStrictEqual([
      ["SIZE", ["10"]],
      ["STARTTLS", []]
    ])
  })

  it("merges the pre-standard AUTH=mech form into AUTH", () => {
    const { extensions } = ehlo("mx", "AUTH LOGIN PLAIN", "AUTH=LOGIN CRAM-MD5")
    expect(Extensions.authMechanisms(extensions)).toStrictEqual(["LOGIN", "PLAIN", "CRAM-MD5"])
    expect(Extensions.authMechanisms(ehlo("mx", "AUTH=PLAIN").extensions)).toStrictEqual(["PLAIN"])
  })

  it("sizeLimit reads SIZE n; 0, a missing or a bad number give undefined", () => {
    expect(Extensions.sizeLimit(ehlo("mx", "SIZE 52428800").extensions)).toBe(52428800)
    expect(Extensions.sizeLimit(ehlo("mx", "SIZE").extensions)).toBeUndefined()
    expect(Extensions.has(ehlo("mx", "SIZE").extensions, "SIZE")).toBe(true)
    expect(Extensions.sizeLimit(ehlo("mx", "SIZE 0").extensions)).toBeUndefined()
    expect(Extensions.sizeLimit(ehlo("mx", "SIZE -5").extensions)).toBeUndefined()
    expect(Extensions.sizeLimit(ehlo("mx", "SIZE 99999999999999999999").extensions)).toBeUndefined()
  })

  it("make and toEntries", () => {
    const e = Extensions.make([["chunking", []], ["SIZE", ["5"]], ["CHUNKING", ["x"]]])
    expect(Extensions.toEntries(e)).toStrictEqual([
      ["CHUNKING", []],
      ["SIZE", ["5"]]
    ])
    expect(Extensions.empty.keywords.size).toBe(0)
  })

  it("parseEhlo(build(g, k)) gives g and k back, and never throws on arbitrary lines (property)", () => {
    const word = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9-]{0,10}$/)
    const keywords = fc.uniqueArray(
      fc.tuple(word.map((w) => w.toUpperCase()), fc.array(fc.stringMatching(/^[!-~]{1,8}$/), { maxLength: 3 })),
      { selector: ([k]) => k, maxLength: 8 }
    )
    fc.assert(
      fc.property(fc.stringMatching(/^[!-~][ -~]{0,30}$/), keywords, (greeting, k) => {
        const parsed = Extensions.parseEhlo(Extensions.build(greeting, k))
        expect(parsed.greeting).toBe(greeting)
        expect(Extensions.toEntries(parsed.extensions)).toStrictEqual(k.filter(([kw]) => !kw.startsWith("AUTH=")))
      }),
      { numRuns: 500 }
    )
    fc.assert(
      fc.property(fc.array(fc.string({ unit: "binary" }), { minLength: 1, maxLength: 6 }), (lines) => {
        const { extensions } = Extensions.parseEhlo(Reply.make(250, undefined, lines))
        Extensions.sizeLimit(extensions)
        Extensions.authMechanisms(extensions)
      }),
      { numRuns: 500 }
    )
  })
})
