import { createHash, createHmac, pbkdf2Sync } from "node:crypto"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Base64 from "../src/auth/Base64.ts"
import * as Credentials from "../src/auth/Credentials.ts"

const salt = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])

describe("Credentials", () => {
  it("derives RFC 7677's SCRAM keys for pencil", () => {
    const c = Credentials.scramCredentials("pencil", Base64.decode("W22ZaJ0SNY7soEsUEjb6gQ==")!, 4096)
    // StoredKey and ServerKey recomputed independently with node:crypto
    const salted = pbkdf2Sync("pencil", Buffer.from("W22ZaJ0SNY7soEsUEjb6gQ==", "base64"), 4096, 32, "sha256")
    const clientKey = createHmac("sha256", salted).update("Client Key").digest()
    expect(Buffer.from(c.storedKey)).toEqual(createHash("sha256").update(clientKey).digest())
    expect(Buffer.from(c.serverKey)).toEqual(createHmac("sha256", salted).update("Server Key").digest())
    expect(c.iterations).toBe(4096)
  })

  it("hashes to pbkdf2-sha256$<i>$<salt>$<hash>, compatible with node:crypto", () => {
    const s = Credentials.hashPassword("s3cret", salt, 5000)
    const expected = pbkdf2Sync("s3cret", salt, 5000, 32, "sha256").toString("base64")
    expect(s).toBe(`pbkdf2-sha256$5000$${Buffer.from(salt).toString("base64")}$${expected}`)
    expect(Credentials.verifyPassword(s, "s3cret")).toBe(true)
    expect(Credentials.verifyPassword(s, "s3cret ")).toBe(false)
    expect(Credentials.verifyPassword(s, "")).toBe(false)
  })

  it("parses and formats the three stored formats", () => {
    const pb = Credentials.hashPassword("pw", salt, 4096)
    const parsed = Credentials.parseStored(pb)!
    expect(parsed._tag).toBe("Pbkdf2Sha256")
    expect(Credentials.formatStored(parsed)).toBe(pb)

    const scram = Credentials.formatStored({ _tag: "ScramSha256", credentials: Credentials.scramCredentials("pw", salt, 4096) })
    expect(scram.startsWith("{SCRAM-SHA-256}4096,AQIDBAUGBwgJCgsMDQ4PEA==,")).toBe(true)
    expect(Credentials.formatStored(Credentials.parseStored(scram)!)).toBe(scram)
    expect(Credentials.verifyPassword(scram, "pw")).toBe(true)
    expect(Credentials.verifyPassword(scram, "pW")).toBe(false)

    expect(Credentials.parseStored("{PLAIN}tanstaaftanstaaf")).toEqual({ _tag: "Plain", password: "tanstaaftanstaaf" })
    expect(Credentials.verifyPassword("{PLAIN}tanstaaftanstaaf", "tanstaaftanstaaf")).toBe(true)
    expect(Credentials.verifyPassword("{PLAIN}tanstaaftanstaaf", "tanstaaf")).toBe(false)
  })

  it("derives the same SCRAM credentials from a pbkdf2 hash as from the password", () => {
    const p = Credentials.parseStored(Credentials.hashPassword("pencil", salt, 4096))!
    expect(Credentials.scramFromStored(p)).toEqual(Credentials.scramCredentials("pencil", salt, 4096))
    expect(Credentials.scramFromStored({ _tag: "Plain", password: "x" })).toBeUndefined()
    expect(Credentials.clearPassword({ _tag: "Plain", password: "x" })).toBe("x")
    expect(Credentials.clearPassword(p)).toBeUndefined()
  })

  it("refuses malformed stored strings", () => {
    const h = Base64.encode(new Uint8Array(32))
    const s16 = Base64.encode(salt)
    for (const bad of [
      "",
      "pencil",
      `pbkdf2-sha256$4096$${s16}`,
      `pbkdf2-sha256$4096$${s16}$${h}$`,
      `pbkdf2-sha256$0$${s16}$${h}`,
      `pbkdf2-sha256$04096$${s16}$${h}`,
      `pbkdf2-sha256$99999999$${s16}$${h}`,
      `pbkdf2-sha256$4096$$${h}`,
      `pbkdf2-sha256$4096$${s16}$${Base64.encode(new Uint8Array(31))}`,
      `pbkdf2-sha256$4096$${s16.slice(0, -1)}$${h}`,
      `pbkdf2-sha256$4096$ ${s16}$${h}`,
      `{SCRAM-SHA-256}4096,${s16},${h}`,
      `{SCRAM-SHA-256}4096,${s16},${h},${Base64.encode(new Uint8Array(20))}`,
      "{PLAIN}",
      "{PLAIN}a\nb",
      "{plain}x"
    ]) {
      expect(Credentials.parseStored(bad), bad).toBeUndefined()
      expect(Credentials.verifyPassword(bad, "pencil")).toBe(false)
    }
  })

  it("applies SASLprep mapping and normalisation", () => {
    expect(Credentials.saslPrep("I\u00adX")).toBe("IX") // RFC 4013 §3 example 1
    expect(Credentials.saslPrep("user")).toBe("user")
    expect(Credentials.saslPrep("\u00aa")).toBe("a") // example 3 (NFKC)
    expect(Credentials.saslPrep("\u2168")).toBe("IX") // example 5
    expect(Credentials.saslPrep("a\u00a0b")).toBe("a b")
    expect(Credentials.saslPrep("\u0007")).toBeUndefined() // example 6
    expect(Credentials.saslPrep("a\ue000")).toBeUndefined()
    expect(Credentials.saslPrep("\ud800")).toBeUndefined()
    expect(Credentials.saslPrep("\ud83d\ude00")).toBe("\ud83d\ude00")
    // so that a password typed with a no-break space verifies against one stored with a space
    const stored = Credentials.hashPassword("correct horse", salt, 4096)
    expect(Credentials.verifyPassword(stored, "correct\u00a0horse")).toBe(true)
  })

  it("compares in constant time, by value", () => {
    expect(Credentials.constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true)
    expect(Credentials.constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false)
    expect(Credentials.constantTimeEqual(new Uint8Array([1]), new Uint8Array([1, 2]))).toBe(false)
    expect(Credentials.constantTimeEqualString("é", "é")).toBe(true)
  })

  it("refuses an invalid iteration count loudly when deriving", () => {
    expect(() => Credentials.saltedPassword("x", salt, 0)).toThrow(RangeError)
    expect(() => Credentials.saltedPassword("x", salt, 1.5)).toThrow(RangeError)
    expect(Credentials.isValidIterations(Credentials.maxIterations)).toBe(true)
    expect(Credentials.isValidIterations(Credentials.maxIterations + 1)).toBe(false)
  })

  it("property: parseStored never throws and formatted values round-trip", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 120 }), (s) => {
        const p = Credentials.parseStored(s)
        if (p !== undefined) expect(Credentials.formatStored(p)).toBe(s)
        Credentials.saslPrep(s)
      }),
      { numRuns: 2000 }
    )
    fc.assert(
      fc.property(fc.constantFrom("pbkdf2-sha256$", "{SCRAM-SHA-256}"), fc.string({ maxLength: 100 }), (prefix, s) => {
        const p = Credentials.parseStored(prefix + s)
        if (p !== undefined) expect(Credentials.formatStored(p)).toBe(prefix + s)
      }),
      { numRuns: 2000 }
    )
  })
})
