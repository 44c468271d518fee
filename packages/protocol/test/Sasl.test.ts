import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Credentials from "../src/auth/Credentials.ts"
import * as Sasl from "../src/auth/Sasl.ts"
import * as Scram from "../src/auth/Scram.ts"
import * as Reply from "../src/smtp/Reply.ts"

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64")
const b64bytes = (b: Uint8Array | Array<number>) => Buffer.from(b).toString("base64")
const text = (data: Uint8Array) => Buffer.from(data).toString("utf8")
const zeros = { random: (n: number) => new Uint8Array(n), hostname: "mx.example" }

const failureText = (t: Sasl.Transition): string => {
  if (t.step._tag !== "Failure") throw new Error(`expected a Failure, got ${t.step._tag}`)
  expect(t.state._tag).toBe("Done")
  return Reply.encodeString(t.step.reply)
}
const challengeText = (t: Sasl.Transition): string => {
  if (t.step._tag !== "Challenge") throw new Error(`expected a Challenge, got ${t.step._tag}`)
  return text(t.step.data)
}
const request = (t: Sasl.Transition): Sasl.CredentialRequest => {
  if (t.step._tag !== "Ask") throw new Error(`expected an Ask, got ${t.step._tag}`)
  return t.step.request
}

const CANCELLED = "501 5.7.0 Authentication cancelled\r\n"
const BAD_BASE64 = "501 5.5.2 Error: malformed base64 in authentication exchange\r\n"
const MALFORMED = "501 5.5.2 Error: malformed authentication response\r\n"
const INVALID_CHARS = "501 5.5.2 Error: invalid characters in authentication data\r\n"
const BAD_CREDENTIALS = "535 5.7.8 Authentication credentials invalid\r\n"
const UNAVAILABLE = "454 4.7.0 Temporary authentication failure\r\n"

describe("Sasl contract", () => {
  it("names mechanisms and flags the plaintext ones", () => {
    expect(Sasl.parseMechanism("plain")).toBe("PLAIN")
    expect(Sasl.parseMechanism("Scram-Sha-256")).toBe("SCRAM-SHA-256")
    expect(Sasl.parseMechanism("SCRAM-SHA-1")).toBeUndefined()
    expect(Sasl.parseMechanism("")).toBeUndefined()
    expect(Sasl.mechanisms.filter(Sasl.isPlaintext)).toEqual(["PLAIN", "LOGIN"])
    expect(Sasl.mechanisms.filter(Sasl.isServerFirst)).toEqual(["CRAM-MD5"])
  })
})

describe("Sasl server: PLAIN", () => {
  it("takes RFC 4616's first example as an initial response", () => {
    const t = Sasl.start("PLAIN", "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", zeros)
    expect(request(t)).toEqual({ _tag: "VerifyPassword", authcid: "tim", authzid: undefined, password: "tanstaaftanstaaf" })
    const done = Sasl.answer(t.state, { _tag: "Verified", ok: true })
    expect(done.step).toEqual({ _tag: "Success", identity: { authcid: "tim", authzid: undefined }, final: undefined })
    expect(done.state._tag).toBe("Done")
  })

  it("passes an authzid different from the authcid through (RFC 4616's second example)", () => {
    const t = Sasl.start("PLAIN", b64("Ursel\u0000Kurt\u0000xipj3plmq"), zeros)
    expect(request(t)).toEqual({ _tag: "VerifyPassword", authcid: "Kurt", authzid: "Ursel", password: "xipj3plmq" })
    expect(Sasl.answer(t.state, { _tag: "Verified", ok: true }).step).toEqual({
      _tag: "Success",
      identity: { authcid: "Kurt", authzid: "Ursel" },
      final: undefined
    })
    // RFC 4954 §4's example
    expect(request(Sasl.start("PLAIN", "dGVzdAB0ZXN0ADEyMzQ=", zeros))).toEqual({
      _tag: "VerifyPassword",
      authcid: "test",
      authzid: "test",
      password: "1234"
    })
  })

  it("asks with an empty challenge when there is no initial response", () => {
    const t = Sasl.start("PLAIN", undefined, zeros)
    expect(t.step).toEqual({ _tag: "Challenge", data: new Uint8Array(0) })
    expect(request(Sasl.respond(t.state, b64("\u0000j\u00f6s\u00e9\u0000p\u00e4ss")))).toEqual({
      _tag: "VerifyPassword",
      authcid: "j\u00f6s\u00e9",
      authzid: undefined,
      password: "p\u00e4ss"
    })
  })

  it("answers a wrong password with 535 and a down service with 454", () => {
    const t = Sasl.start("PLAIN", b64("\u0000tim\u0000wrong"), zeros)
    expect(failureText(Sasl.answer(t.state, { _tag: "Verified", ok: false }))).toBe(BAD_CREDENTIALS)
    expect(failureText(Sasl.answer(t.state, { _tag: "Unavailable" }))).toBe(UNAVAILABLE)
  })

  it("cancels on * and refuses bad base64", () => {
    const t = Sasl.start("PLAIN", undefined, zeros)
    expect(failureText(Sasl.respond(t.state, "*"))).toBe(CANCELLED)
    for (const bad of ["=AAA", "AAA=BBBB", "AHRpbQB0YW5zdGFhZnRhbnN0YWFm ", "AHRpbQ", "=", " "]) {
      expect(failureText(Sasl.respond(t.state, bad)), bad).toBe(BAD_BASE64)
    }
    expect(failureText(Sasl.start("PLAIN", "=AAA", zeros))).toBe(BAD_BASE64)
    expect(failureText(Sasl.start("PLAIN", "*", zeros))).toBe(BAD_BASE64)
  })

  it("refuses control characters in any field before asking for credentials (identity injection)", () => {
    for (const payload of [
      "attacker\r\nReceived: evil\u0000user\u0000pass",
      "\u0000us\u001ber\u0000pass",
      "\u0000user\u0000pa\nss",
      "\u0000user\u0000pass\u0000extra",
      "\u0000user\u0000pass\u007f",
      "\u0000us\ter\u0000pass",
      "admin\r\u0000user\u0000pass"
    ]) {
      expect(failureText(Sasl.start("PLAIN", b64(payload), zeros)), JSON.stringify(payload)).toBe(INVALID_CHARS)
    }
  })

  it("refuses malformed messages and invalid UTF-8 with 501 5.5.2", () => {
    for (const payload of ["", "\u0000user", "user", "\u0000\u0000pass", "\u0000user\u0000"]) {
      expect(failureText(Sasl.start("PLAIN", payload === "" ? "=" : b64(payload), zeros)), JSON.stringify(payload)).toBe(MALFORMED)
    }
    expect(failureText(Sasl.start("PLAIN", b64bytes([0, 0xc3, 0x28, 0, 0x70]), zeros))).toBe(MALFORMED)
    expect(failureText(Sasl.start("PLAIN", b64bytes([0xff, 0, 0x61, 0, 0x70]), zeros))).toBe(MALFORMED)
  })
})

describe("Sasl server: LOGIN", () => {
  it("prompts Username: then Password:, base64-encoded", () => {
    const t0 = Sasl.start("LOGIN", undefined, zeros)
    expect(t0.step._tag === "Challenge" && b64bytes(t0.step.data)).toBe("VXNlcm5hbWU6")
    const t1 = Sasl.respond(t0.state, b64("tim"))
    expect(t1.step._tag === "Challenge" && b64bytes(t1.step.data)).toBe("UGFzc3dvcmQ6")
    const t2 = Sasl.respond(t1.state, b64("tanstaaftanstaaf"))
    expect(request(t2)).toEqual({ _tag: "VerifyPassword", authcid: "tim", authzid: undefined, password: "tanstaaftanstaaf" })
    expect(Sasl.answer(t2.state, { _tag: "Verified", ok: true }).step).toEqual({
      _tag: "Success",
      identity: { authcid: "tim", authzid: undefined },
      final: undefined
    })
  })

  it("takes an initial response as the user name", () => {
    const t = Sasl.start("LOGIN", b64("tim"), zeros)
    expect(challengeText(t)).toBe("Password:")
    expect(request(Sasl.respond(t.state, b64("pw")))).toMatchObject({ authcid: "tim", password: "pw" })
  })

  it("cancels, refuses bad base64, empty and control-character fields", () => {
    const t0 = Sasl.start("LOGIN", undefined, zeros)
    const t1 = Sasl.respond(t0.state, b64("tim"))
    expect(failureText(Sasl.respond(t0.state, "*"))).toBe(CANCELLED)
    expect(failureText(Sasl.respond(t1.state, "*"))).toBe(CANCELLED)
    expect(failureText(Sasl.respond(t1.state, "dGlt="))).toBe(BAD_BASE64)
    expect(failureText(Sasl.respond(t0.state, ""))).toBe(MALFORMED)
    expect(failureText(Sasl.respond(t1.state, ""))).toBe(MALFORMED)
    expect(failureText(Sasl.start("LOGIN", "=", zeros))).toBe(MALFORMED)
    expect(failureText(Sasl.respond(t0.state, b64("tim\r\nRCPT TO:<x@y>")))).toBe(INVALID_CHARS)
    expect(failureText(Sasl.respond(t1.state, b64("pass\u0000word")))).toBe(INVALID_CHARS)
  })

  it("answers a wrong password with 535", () => {
    const t = Sasl.respond(Sasl.start("LOGIN", b64("tim"), zeros).state, b64("nope"))
    expect(failureText(Sasl.answer(t.state, { _tag: "Verified", ok: false }))).toBe(BAD_CREDENTIALS)
  })
})

describe("Sasl server: CRAM-MD5", () => {
  // RFC 2195 §2: challenge <1896.697170952@postoffice.reston.mci.net>, from two big-endian 32-bit numbers
  const rfcRandom = { random: () => new Uint8Array([0x00, 0x00, 0x07, 0x68, 0x29, 0x8d, 0xfc, 0x08]), hostname: "postoffice.reston.mci.net" }

  it("reproduces RFC 2195's exchange", () => {
    const t0 = Sasl.start("CRAM-MD5", undefined, rfcRandom)
    expect(t0.step._tag === "Challenge" && b64bytes(t0.step.data)).toBe("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
    expect(challengeText(t0)).toBe("<1896.697170952@postoffice.reston.mci.net>")
    const t1 = Sasl.respond(t0.state, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
    expect(request(t1)).toEqual({ _tag: "LookupSecret", authcid: "tim" })
    expect(Sasl.answer(t1.state, { _tag: "Secret", password: "tanstaaftanstaaf" }).step).toEqual({
      _tag: "Success",
      identity: { authcid: "tim", authzid: undefined },
      final: undefined
    })
    expect(failureText(Sasl.answer(t1.state, { _tag: "Secret", password: "tanstaaf" }))).toBe(BAD_CREDENTIALS)
    expect(failureText(Sasl.answer(t1.state, { _tag: "Secret", password: undefined }))).toBe(BAD_CREDENTIALS)
    expect(failureText(Sasl.answer(t1.state, { _tag: "Unavailable" }))).toBe(UNAVAILABLE)
    // upper-case hex is the same digest
    const t2 = Sasl.respond(t0.state, b64("tim B913A602C7EDA7A495B4E6E7334D3890"))
    expect(Sasl.answer(t2.state, { _tag: "Secret", password: "tanstaaftanstaaf" }).step._tag).toBe("Success")
  })

  it("takes the challenge from the random option", () => {
    const t = Sasl.start("CRAM-MD5", undefined, { random: () => new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]), hostname: "mx.example" })
    expect(challengeText(t)).toBe("<4294967295.1@mx.example>")
  })

  it("refuses an initial response (server-first mechanism)", () => {
    const expected = "501 5.5.2 Error: initial response not allowed with this mechanism\r\n"
    expect(failureText(Sasl.start("CRAM-MD5", "=", zeros))).toBe(expected)
    expect(failureText(Sasl.start("CRAM-MD5", "dGlt", zeros))).toBe(expected)
  })

  it("refuses malformed responses, control characters, cancel", () => {
    const t0 = Sasl.start("CRAM-MD5", undefined, zeros)
    for (const r of ["", "tim", "timb913a602c7eda7a495b4e6e7334d3890", "tim b913a602c7eda7a495b4e6e7334d389", "tim b913a602c7eda7a495b4e6e7334d3890 ", " b913a602c7eda7a495b4e6e7334d3890", "tim g913a602c7eda7a495b4e6e7334d3890"]) {
      expect(failureText(Sasl.respond(t0.state, b64(r))), r).toBe(MALFORMED)
    }
    expect(failureText(Sasl.respond(t0.state, b64("ti\r\nm b913a602c7eda7a495b4e6e7334d3890")))).toBe(INVALID_CHARS)
    expect(failureText(Sasl.respond(t0.state, b64("tim\u0000 b913a602c7eda7a495b4e6e7334d3890")))).toBe(INVALID_CHARS)
    expect(failureText(Sasl.respond(t0.state, "*"))).toBe(CANCELLED)
    expect(failureText(Sasl.respond(t0.state, "dGlt=A=="))).toBe(BAD_BASE64)
    // a user name with a space is fine: the digest follows the last space
    expect(request(Sasl.respond(t0.state, b64("tim smith b913a602c7eda7a495b4e6e7334d3890")))).toEqual({ _tag: "LookupSecret", authcid: "tim smith" })
  })
})

describe("Sasl server: SCRAM-SHA-256", () => {
  const alphabetBytes = (s: string) => new Uint8Array([...s].map((c) => Scram.nonceAlphabet.indexOf(c)))
  const salt = Buffer.from("W22ZaJ0SNY7soEsUEjb6gQ==", "base64")
  const pencil = Credentials.scramCredentials("pencil", new Uint8Array(salt), 4096)
  const rfcOptions = { random: () => alphabetBytes("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"), hostname: "mx.example" }
  const clientFirst = b64("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
  const clientFinal = b64("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")

  const toServerFirst = (initial = clientFirst, options = rfcOptions) => {
    const t0 = Sasl.start("SCRAM-SHA-256", initial, options)
    expect(request(t0)).toEqual({ _tag: "LookupScram", authcid: "user" })
    return Sasl.answer(t0.state, { _tag: "Scram", credentials: pencil })
  }

  it("reproduces RFC 7677's server messages", () => {
    const t1 = toServerFirst()
    expect(challengeText(t1)).toBe("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    const t2 = Sasl.respond(t1.state, clientFinal)
    if (t2.step._tag !== "Success") throw new Error(t2.step._tag)
    expect(t2.step.identity).toEqual({ authcid: "user", authzid: undefined })
    expect(text(t2.step.final!)).toBe("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    expect(t2.state._tag).toBe("ExpectFinalAck")
    // RFC 4954: the final data goes in a 334; the client's empty line completes the exchange
    expect(Sasl.respond(t2.state, "").step).toEqual({ _tag: "Success", identity: { authcid: "user", authzid: undefined }, final: undefined })
    expect(failureText(Sasl.respond(t2.state, "*"))).toBe(CANCELLED)
    expect(failureText(Sasl.respond(t2.state, "AAAA"))).toBe(MALFORMED)
  })

  it("asks for the client-first message with an empty challenge when there is no initial response", () => {
    const t0 = Sasl.start("SCRAM-SHA-256", undefined, rfcOptions)
    expect(t0.step).toEqual({ _tag: "Challenge", data: new Uint8Array(0) })
    expect(request(Sasl.respond(t0.state, clientFirst))).toEqual({ _tag: "LookupScram", authcid: "user" })
  })

  it("refuses a wrong proof, a wrong nonce and a wrong channel-binding echo with 535", () => {
    const t1 = toServerFirst()
    const tamper = (s: string) => b64(s)
    expect(failureText(Sasl.respond(t1.state, tamper("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")))).toBe(BAD_CREDENTIALS)
    expect(failureText(Sasl.respond(t1.state, tamper("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")))).toBe(BAD_CREDENTIALS)
    expect(failureText(Sasl.respond(t1.state, tamper("c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")))).toBe(BAD_CREDENTIALS)
    expect(failureText(Sasl.respond(t1.state, tamper("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA")))).toBe(BAD_CREDENTIALS)
    expect(failureText(Sasl.respond(t1.state, tamper("c=biws,p=AAAA")))).toBe(MALFORMED)
    expect(failureText(Sasl.respond(t1.state, "*"))).toBe(CANCELLED)
    expect(failureText(Sasl.respond(t1.state, "biws="))).toBe(BAD_BASE64)
  })

  it("goes on with stable made-up credentials for an unknown user, then refuses", () => {
    const t0 = Sasl.start("SCRAM-SHA-256", clientFirst, rfcOptions)
    const a = Sasl.answer(t0.state, { _tag: "Scram", credentials: undefined })
    const b = Sasl.answer(Sasl.start("SCRAM-SHA-256", clientFirst, rfcOptions).state, { _tag: "Scram", credentials: undefined })
    const sf = challengeText(a)
    expect(sf).toBe(challengeText(b))
    expect(sf).toMatch(/^r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj\)hNlF\$k0,s=[A-Za-z0-9+/]{22}==,i=4096$/)
    // even a proof made with the right computation for those parameters fails
    const parsed = Scram.parseServerFirst(sf)
    if (!parsed.ok) throw new Error("bad server-first")
    const keys = Credentials.scramKeys(Credentials.saltedPassword("guess", parsed.value.salt, 4096))
    const wp = Scram.clientFinalWithoutProof("n,,", parsed.value.nonce)
    const proof = Scram.clientProof(keys.clientKey, keys.storedKey, Scram.authMessage("n=user,r=rOprNGfwEbeRWgbNEkqO", sf, wp))
    expect(failureText(Sasl.respond(a.state, b64(Scram.clientFinal(wp, proof))))).toBe(BAD_CREDENTIALS)
  })

  it("answers 454 when the service is down or returns broken credentials", () => {
    const t0 = Sasl.start("SCRAM-SHA-256", clientFirst, rfcOptions)
    expect(failureText(Sasl.answer(t0.state, { _tag: "Unavailable" }))).toBe(UNAVAILABLE)
    expect(failureText(Sasl.answer(t0.state, { _tag: "Scram", credentials: { ...pencil, storedKey: new Uint8Array(16) } }))).toBe(UNAVAILABLE)
    expect(failureText(Sasl.answer(t0.state, { _tag: "Scram", credentials: { ...pencil, iterations: 0 } }))).toBe(UNAVAILABLE)
    expect(failureText(Sasl.answer(t0.state, { _tag: "Scram", credentials: { ...pencil, salt: new Uint8Array(0) } }))).toBe(UNAVAILABLE)
  })

  it("refuses p= (channel binding required) and accepts y,, (client supports it, server does not advertise PLUS)", () => {
    expect(failureText(Sasl.start("SCRAM-SHA-256", b64("p=tls-server-end-point,,n=user,r=abc"), rfcOptions))).toBe(
      "535 5.7.8 Error: channel binding not supported\r\n"
    )
    const t0 = Sasl.start("SCRAM-SHA-256", b64("y,,n=user,r=rOprNGfwEbeRWgbNEkqO"), rfcOptions)
    const t1 = Sasl.answer(t0.state, { _tag: "Scram", credentials: pencil })
    const sf = challengeText(t1)
    const keys = Credentials.scramKeys(Credentials.saltedPassword("pencil", new Uint8Array(salt), 4096))
    const wp = Scram.clientFinalWithoutProof("y,,", "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    expect(wp.startsWith("c=eSws,")).toBe(true)
    const proof = Scram.clientProof(keys.clientKey, keys.storedKey, Scram.authMessage("n=user,r=rOprNGfwEbeRWgbNEkqO", sf, wp))
    expect(Sasl.respond(t1.state, b64(Scram.clientFinal(wp, proof))).step._tag).toBe("Success")
  })

  it("carries the authzid through and refuses control characters before the lookup", () => {
    const t0 = Sasl.start("SCRAM-SHA-256", b64("n,a=admin,n=user,r=abc"), rfcOptions)
    expect(request(t0)).toEqual({ _tag: "LookupScram", authcid: "user" })
    expect(failureText(Sasl.start("SCRAM-SHA-256", b64("n,,n=us\u0001er,r=abc"), rfcOptions))).toBe(INVALID_CHARS)
    expect(failureText(Sasl.start("SCRAM-SHA-256", b64("n,a=ad\r\nmin,n=user,r=abc"), rfcOptions))).toBe(INVALID_CHARS)
    expect(failureText(Sasl.start("SCRAM-SHA-256", b64("n,,n=user\u007f,r=abc"), rfcOptions))).toBe(INVALID_CHARS)
  })

  it("refuses malformed client-first messages, m= and invalid UTF-8", () => {
    expect(failureText(Sasl.start("SCRAM-SHA-256", "=", rfcOptions))).toBe(MALFORMED)
    expect(failureText(Sasl.start("SCRAM-SHA-256", b64("n,,n=user"), rfcOptions))).toBe(MALFORMED)
    expect(failureText(Sasl.start("SCRAM-SHA-256", b64("n,,m=x,n=user,r=abc"), rfcOptions))).toBe(
      "501 5.5.2 Error: unsupported SCRAM extension\r\n"
    )
    expect(failureText(Sasl.start("SCRAM-SHA-256", b64bytes([0x6e, 0x2c, 0x2c, 0x6e, 0x3d, 0xff, 0x2c, 0x72, 0x3d, 0x61]), rfcOptions))).toBe(MALFORMED)
    expect(failureText(Sasl.start("SCRAM-SHA-256", "bi ws", rfcOptions))).toBe(BAD_BASE64)
  })
})

describe("Sasl server: driver misuse", () => {
  it("throws UsageError for calls the state does not expect", () => {
    const asking = Sasl.start("PLAIN", b64("\u0000u\u0000p"), zeros)
    expect(() => Sasl.respond(asking.state, "")).toThrow(Sasl.UsageError)
    expect(() => Sasl.answer(asking.state, { _tag: "Secret", password: "x" })).toThrow(Sasl.UsageError)
    const done = Sasl.answer(asking.state, { _tag: "Verified", ok: true })
    expect(() => Sasl.respond(done.state, "")).toThrow(Sasl.UsageError)
    expect(() => Sasl.answer(done.state, { _tag: "Unavailable" })).toThrow(Sasl.UsageError)
    const waiting = Sasl.start("PLAIN", undefined, zeros)
    expect(() => Sasl.answer(waiting.state, { _tag: "Verified", ok: true })).toThrow(Sasl.UsageError)
    expect(Sasl.expectsLine(waiting.state)).toBe(true)
    expect(Sasl.expectsAnswer(asking.state)).toBe(true)
  })
})

describe("Sasl server: arbitrary input", () => {
  const mechanism = fc.constantFrom<Sasl.Mechanism>(...Sasl.mechanisms)
  const line = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.uint8Array({ maxLength: 60 }).map(b64bytes),
    fc.string({ maxLength: 60 }).map(b64),
    fc.constantFrom("*", "", "="),
    fc
      .tuple(fc.constantFrom("n,,", "y,,", "p=x,,", "n,a=z,", "n,a=,", "m,,"), fc.string({ maxLength: 30 }))
      .map(([h, rest]) => b64(h + rest)),
    fc.string({ maxLength: 40 }).map((s) => b64(`c=biws,r=${s},p=${b64bytes(new Uint8Array(32))}`))
  )
  const answerFor = (req: Sasl.CredentialRequest, pick: number): Sasl.CredentialAnswer => {
    if (pick % 4 === 0) return { _tag: "Unavailable" }
    switch (req._tag) {
      case "VerifyPassword":
        return { _tag: "Verified", ok: pick % 2 === 0 }
      case "LookupSecret":
        return { _tag: "Secret", password: pick % 3 === 0 ? undefined : "secret" }
      case "LookupScram":
        return { _tag: "Scram", credentials: pick % 3 === 0 ? undefined : { salt: new Uint8Array([1]), iterations: 1, storedKey: new Uint8Array(32), serverKey: new Uint8Array(32) } }
    }
  }

  it("property: any initial response and lines give a Challenge, Ask, Success or one of the documented replies, never an exception", () => {
    const allowed = new Set(["501 5.5.2", "501 5.7.0", "535 5.7.8", "454 4.7.0"])
    fc.assert(
      fc.property(mechanism, fc.option(line, { nil: undefined }), fc.array(line, { maxLength: 4 }), fc.array(fc.nat(), { minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 24, maxLength: 24 }), (m, initial, lines, picks, rnd) => {
        let t = Sasl.start(m, initial, { random: (n) => rnd.subarray(0, n), hostname: "mx.example" })
        let li = 0
        let ai = 0
        for (;;) {
          if (t.step._tag === "Failure") {
            expect(allowed.has(`${t.step.reply.code} ${t.step.reply.enhanced}`)).toBe(true)
            expect(t.state._tag).toBe("Done")
            return
          }
          if (t.step._tag === "Ask") t = Sasl.answer(t.state, answerFor(t.step.request, picks[ai++ % 4]!))
          else if (Sasl.expectsLine(t.state) && li < lines.length) t = Sasl.respond(t.state, lines[li++]!)
          else return
        }
      }),
      { numRuns: 3000 }
    )
  })
})
