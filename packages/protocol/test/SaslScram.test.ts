import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Base64 from "../src/auth/Base64.ts"
import * as Credentials from "../src/auth/Credentials.ts"
import * as Scram from "../src/auth/Scram.ts"

const utf8 = (s: string) => new TextEncoder().encode(s)
const b64 = (s: string) => Buffer.from(s, "base64")

// RFC 7677 §3
const RFC = {
  user: "user",
  password: "pencil",
  clientNonce: "rOprNGfwEbeRWgbNEkqO",
  nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
  salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
  clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
  serverFirst: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
  clientFinal:
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
  serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
}

describe("Scram messages", () => {
  it("reproduces the RFC 7677 exchange from its inputs", () => {
    const gs2 = Scram.gs2Header(undefined)
    const bare = Scram.clientFirstBare(RFC.user, RFC.clientNonce)
    expect(gs2 + bare).toBe(RFC.clientFirst)
    const salt = Base64.decode(RFC.salt)!
    const serverFirst = Scram.serverFirst(RFC.nonce, salt, 4096)
    expect(serverFirst).toBe(RFC.serverFirst)

    const keys = Credentials.scramKeys(Credentials.saltedPassword(RFC.password, salt, 4096))
    const withoutProof = Scram.clientFinalWithoutProof(gs2, RFC.nonce)
    const message = Scram.authMessage(bare, serverFirst, withoutProof)
    const proof = Scram.clientProof(keys.clientKey, keys.storedKey, message)
    expect(Scram.clientFinal(withoutProof, proof)).toBe(RFC.clientFinal)
    expect(Scram.serverFinal(Scram.serverSignature(keys.serverKey, message))).toBe(RFC.serverFinal)

    // and the server's side of the check, from stored credentials only
    const stored = Credentials.scramCredentials(RFC.password, salt, 4096)
    expect(stored.storedKey).toEqual(keys.storedKey)
    expect(Scram.verifyClientProof(stored.storedKey, message, proof)).toBe(true)
    const tampered = proof.slice()
    tampered[0]! ^= 1
    expect(Scram.verifyClientProof(stored.storedKey, message, tampered)).toBe(false)
    expect(Scram.verifyClientProof(stored.storedKey, message, proof.subarray(0, 31))).toBe(false)
  })

  it("parses the RFC 7677 messages", () => {
    const first = Scram.parseClientFirst(RFC.clientFirst)
    expect(first).toEqual({
      ok: true,
      value: { gs2Header: "n,,", cbindFlag: "n", authzid: undefined, username: "user", nonce: RFC.clientNonce, bare: "n=user,r=rOprNGfwEbeRWgbNEkqO" }
    })
    const sf = Scram.parseServerFirst(RFC.serverFirst)
    expect(sf.ok && sf.value.nonce).toBe(RFC.nonce)
    expect(sf.ok && sf.value.iterations).toBe(4096)
    expect(sf.ok && sf.value.salt).toEqual(new Uint8Array(b64(RFC.salt)))
    const cf = Scram.parseClientFinal(RFC.clientFinal)
    expect(cf.ok && cf.value.withoutProof).toBe("c=biws,r=" + RFC.nonce)
    expect(cf.ok && cf.value.channelBinding).toEqual(utf8("n,,"))
    expect(cf.ok && cf.value.proof).toEqual(new Uint8Array(b64("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")))
    const fin = Scram.parseServerFinal(RFC.serverFinal)
    expect(fin).toEqual({ ok: true, value: { _tag: "Verifier", signature: new Uint8Array(b64("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")) } })
    expect(Scram.parseServerFinal("e=invalid-proof")).toEqual({ ok: true, value: { _tag: "Error", error: "invalid-proof" } })
  })

  it("escapes and unescapes saslnames", () => {
    expect(Scram.escapeName("a=b,c")).toBe("a=3Db=2Cc")
    expect(Scram.unescapeName("a=3Db=2Cc")).toBe("a=b,c")
    expect(Scram.unescapeName("a=2c")).toBeUndefined()
    expect(Scram.unescapeName("a=")).toBeUndefined()
    expect(Scram.unescapeName("")).toBeUndefined()
    const p = Scram.parseClientFirst("y,a=ad=3Dmin,n=u=2Cser,r=abc,x=ext")
    expect(p).toEqual({
      ok: true,
      value: { gs2Header: "y,a=ad=3Dmin,", cbindFlag: "y", authzid: "ad=min", username: "u,ser", nonce: "abc", bare: "n=u=2Cser,r=abc,x=ext" }
    })
  })

  it("reports channel binding, mandatory extensions and malformed client-first messages", () => {
    expect(Scram.parseClientFirst("p=tls-unique,,n=user,r=abc")).toEqual({ ok: false, error: "channel-binding" })
    expect(Scram.parseClientFirst("n,,m=x,n=user,r=abc")).toEqual({ ok: false, error: "extension" })
    for (const bad of [
      "",
      "n,,n=user",
      "x,,n=user,r=abc",
      "n,b=x,n=user,r=abc",
      "n,,r=abc,n=user",
      "n,,n=,r=abc",
      "n,,n=user,r=",
      "n,,n=user,r=a b",
      "n,,n=us=er,r=abc",
      "n,,n=user,r=abc,",
      "n,,n=user,r=abc,1=x",
      "n,a=,n=user,r=abc"
    ]) {
      expect(Scram.parseClientFirst(bad), bad).toEqual({ ok: false, error: "malformed" })
    }
  })

  it("refuses malformed server-first, client-final and server-final messages", () => {
    for (const bad of ["r=abc,s=QUJD,i=0", "r=abc,s=,i=4096", "r=abc,s=QUJD", "r=abc,s=QUJD=,i=1", "r=abc,s=QUJD,i=04096", "r=abc,s=QUJD,i=4294967296", "s=QUJD,r=abc,i=1"]) {
      expect(Scram.parseServerFirst(bad).ok, bad).toBe(false)
    }
    expect(Scram.parseServerFirst("m=x,r=abc,s=QUJD,i=1")).toEqual({ ok: false, error: "extension" })
    for (const bad of ["c=biws,r=abc", "c=biws,r=abc,p=@@@@", "c=bi,r=abc,p=QUJD", "r=abc,c=biws,p=QUJD", "c=biws,r=abc,p=QUJD,x=1"]) {
      expect(Scram.parseClientFinal(bad).ok, bad).toBe(false)
    }
    expect(Scram.parseClientFinal("c=biws,r=abc,x=1,p=QUJD").ok).toBe(true)
    for (const bad of ["", "v=", "v=@@", "e=", "x=1", "v=QUJD,"]) {
      expect(Scram.parseServerFinal(bad).ok, bad).toBe(false)
    }
  })

  it("makes nonces of printable characters without commas", () => {
    expect(Scram.nonceAlphabet).toHaveLength(93)
    const all = new Uint8Array(256).map((_, i) => i)
    const nonce = Scram.makeNonce(all)
    expect(nonce).toHaveLength(256)
    expect(Scram.isNonce(nonce)).toBe(true)
  })

  it("property: the parsers never throw", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (s) => {
        Scram.parseClientFirst(s)
        Scram.parseServerFirst(s)
        Scram.parseClientFinal(s)
        Scram.parseServerFinal(s)
        Scram.unescapeName(s)
      }),
      { numRuns: 2000 }
    )
  })

  it("property: printed names and client-first messages parse back", () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 20 }), fc.option(fc.string({ minLength: 1, maxLength: 20 }), { nil: undefined }), fc.uint8Array({ minLength: 1, maxLength: 30 }), (user, authzid, rnd) => {
        const nonce = Scram.makeNonce(rnd)
        const msg = Scram.gs2Header(authzid) + Scram.clientFirstBare(user, nonce)
        const p = Scram.parseClientFirst(msg)
        expect(p.ok).toBe(true)
        if (p.ok) {
          expect(p.value.username).toBe(user)
          expect(p.value.authzid).toBe(authzid)
          expect(p.value.nonce).toBe(nonce)
        }
      })
    )
  })
})
