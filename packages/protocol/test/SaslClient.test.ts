import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Client from "../src/auth/Client.ts"
import * as Credentials from "../src/auth/Credentials.ts"
import * as Sasl from "../src/auth/Sasl.ts"
import * as Scram from "../src/auth/Scram.ts"
import * as Reply from "../src/smtp/Reply.ts"

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64")
const b64bytes = (b: Uint8Array) => Buffer.from(b).toString("base64")
const alphabetBytes = (s: string) => new Uint8Array([...s].map((c) => Scram.nonceAlphabet.indexOf(c)))
const zeros = (n: number) => new Uint8Array(n)
const challenge = (data: string) => Reply.make(334, undefined, data)

// ---------------------------------------------------------------------------
// An in-memory pair: the client machine talks to the server machine, and a
// credentials map answers the server's Ask requests.
// ---------------------------------------------------------------------------

const fixedSalt = new Uint8Array(16).fill(7)

/** Users as stored strings (Credentials formats). `down` makes every request Unavailable. */
const service =
  (users: ReadonlyMap<string, string>, options: { down?: boolean; iterations?: number } = {}) =>
  (req: Sasl.CredentialRequest): Sasl.CredentialAnswer => {
    if (options.down) return { _tag: "Unavailable" }
    const raw = users.get(req.authcid)
    const stored = raw === undefined ? undefined : Credentials.parseStored(raw)
    switch (req._tag) {
      case "VerifyPassword":
        return { _tag: "Verified", ok: stored !== undefined && Credentials.verifyPassword(stored, req.password) }
      case "LookupSecret":
        return { _tag: "Secret", password: stored === undefined ? undefined : Credentials.clearPassword(stored) }
      case "LookupScram": {
        if (stored === undefined) return { _tag: "Scram", credentials: undefined }
        const clear = Credentials.clearPassword(stored)
        return {
          _tag: "Scram",
          credentials: clear !== undefined
            ? Credentials.scramCredentials(clear, fixedSalt, options.iterations ?? 4096)
            : Credentials.scramFromStored(stored)
        }
      }
    }
  }

interface PairResult {
  readonly transcript: ReadonlyArray<string>
  readonly client: Client.ClientStep
  readonly server: Sasl.ServerStep | undefined
}

const pair = (
  mechanism: Sasl.Mechanism,
  credentials: Client.ClientCredentials,
  answer: (req: Sasl.CredentialRequest) => Sasl.CredentialAnswer,
  serverOptions: Sasl.ServerOptions = { random: zeros, hostname: "mx.example" },
  clientOptions: Client.ClientOptions = {}
): PairResult => {
  const transcript: Array<string> = []
  let c = Client.start(mechanism, credentials, clientOptions)
  if (c.step._tag !== "Send") return { transcript, client: c.step, server: undefined }
  transcript.push(`C: ${c.step.line}`)
  const [verb, mech, initial, ...rest] = c.step.line.split(" ")
  expect(verb).toBe("AUTH")
  expect(rest).toEqual([])
  let s = Sasl.start(Sasl.parseMechanism(mech!)!, initial, serverOptions)
  for (let round = 0; round < 10; round++) {
    while (s.step._tag === "Ask") s = Sasl.answer(s.state, answer(s.step.request))
    let reply: Reply.Reply
    let wire: string
    switch (s.step._tag) {
      case "Challenge":
        wire = `334 ${b64bytes(s.step.data)}`
        reply = challenge(b64bytes(s.step.data))
        break
      case "Success":
        if (s.step.final !== undefined) {
          wire = `334 ${b64bytes(s.step.final)}`
          reply = challenge(b64bytes(s.step.final))
        } else {
          reply = Reply.authSuccessful
          wire = Reply.encodeString(reply).trimEnd()
        }
        break
      case "Failure":
        reply = s.step.reply
        wire = Reply.encodeString(reply).trimEnd()
        break
    }
    transcript.push(`S: ${wire}`)
    c = Client.receive(c.state, reply)
    if (c.step._tag !== "Send") return { transcript, client: c.step, server: s.step }
    transcript.push(`C: ${c.step.line}`)
    s = Sasl.respond(s.state, c.step.line)
  }
  throw new Error("exchange did not end")
}

const users = new Map([
  ["tim", "{PLAIN}tanstaaftanstaaf"],
  ["Kurt", Credentials.hashPassword("xipj3plmq", fixedSalt, 4096)],
  ["user", Credentials.formatStored({ _tag: "ScramSha256", credentials: Credentials.scramCredentials("pencil", new Uint8Array(Buffer.from("W22ZaJ0SNY7soEsUEjb6gQ==", "base64")), 4096) })]
])
const tim = { authcid: "tim", password: "tanstaaftanstaaf", random: zeros }
const OK = "S: 235 2.7.0 Authentication successful"
const BAD = "S: 535 5.7.8 Authentication credentials invalid"

describe("SASL end to end (client machine <-> server machine)", () => {
  it("PLAIN with an initial response", () => {
    const r = pair("PLAIN", tim, service(users))
    expect(r.transcript).toEqual(["C: AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm", OK])
    expect(r.client).toEqual({ _tag: "Success" })
    expect(r.server).toEqual({ _tag: "Success", identity: { authcid: "tim", authzid: undefined }, final: undefined })
  })

  it("PLAIN without an initial response, and with an authzid against a pbkdf2 hash", () => {
    expect(pair("PLAIN", tim, service(users), undefined, { initialResponse: false }).transcript).toEqual([
      "C: AUTH PLAIN",
      "S: 334 ",
      "C: AHRpbQB0YW5zdGFhZnRhbnN0YWFm",
      OK
    ])
    const r = pair("PLAIN", { authcid: "Kurt", authzid: "Ursel", password: "xipj3plmq", random: zeros }, service(users))
    expect(r.transcript).toEqual(["C: AUTH PLAIN VXJzZWwAS3VydAB4aXBqM3BsbXE=", OK])
    expect(r.server).toMatchObject({ identity: { authcid: "Kurt", authzid: "Ursel" } })
  })

  it("PLAIN falls back to a 334 round when the initial response would pass 512 octets", () => {
    const r = pair("PLAIN", { authcid: "tim", password: "x".repeat(400), random: zeros }, service(new Map([["tim", `{PLAIN}${"x".repeat(400)}`]])))
    expect(r.transcript[0]).toBe("C: AUTH PLAIN")
    expect(r.transcript[1]).toBe("S: 334 ")
    expect(r.client._tag).toBe("Success")
    const short = Client.start("PLAIN", tim, { maxLineLength: 20 })
    expect(short.step).toEqual({ _tag: "Send", line: "AUTH PLAIN" })
  })

  it("LOGIN", () => {
    const r = pair("LOGIN", tim, service(users))
    expect(r.transcript).toEqual([
      "C: AUTH LOGIN",
      "S: 334 VXNlcm5hbWU6",
      "C: dGlt",
      "S: 334 UGFzc3dvcmQ6",
      "C: dGFuc3RhYWZ0YW5zdGFhZg==",
      OK
    ])
    expect(r.client._tag).toBe("Success")
  })

  it("CRAM-MD5 reproduces RFC 2195", () => {
    const server = { random: () => new Uint8Array([0, 0, 0x07, 0x68, 0x29, 0x8d, 0xfc, 0x08]), hostname: "postoffice.reston.mci.net" }
    const r = pair("CRAM-MD5", tim, service(users), server)
    expect(r.transcript).toEqual([
      "C: AUTH CRAM-MD5",
      "S: 334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+",
      "C: dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw",
      OK
    ])
  })

  it("SCRAM-SHA-256 reproduces RFC 7677 message for message", () => {
    const client = { authcid: "user", password: "pencil", random: () => alphabetBytes("rOprNGfwEbeRWgbNEkqO") }
    const server = { random: () => alphabetBytes("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"), hostname: "mx.example" }
    const r = pair("SCRAM-SHA-256", client, service(users), server)
    expect(r.transcript).toEqual([
      `C: AUTH SCRAM-SHA-256 ${b64("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")}`,
      `S: 334 ${b64("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")}`,
      `C: ${b64("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")}`,
      `S: 334 ${b64("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")}`,
      "C: ",
      OK
    ])
    expect(r.client).toEqual({ _tag: "Success" })
    expect(r.server).toEqual({ _tag: "Success", identity: { authcid: "user", authzid: undefined }, final: undefined })
  })

  it("SCRAM-SHA-256 without an initial response, with an authzid, against a pbkdf2 hash", () => {
    const r = pair("SCRAM-SHA-256", { authcid: "Kurt", authzid: "Ur,sel", password: "xipj3plmq", random: zeros }, service(users), undefined, { initialResponse: false })
    expect(r.transcript.slice(0, 3)).toEqual(["C: AUTH SCRAM-SHA-256", "S: 334 ", `C: ${b64(`n,a=Ur=2Csel,n=Kurt,r=${"!".repeat(24)}`)}`])
    expect(r.transcript.at(-1)).toBe(OK)
    expect(r.server).toMatchObject({ _tag: "Success", identity: { authcid: "Kurt", authzid: "Ur,sel" } })
  })

  it("wrong password: 535, permanent, for every mechanism", () => {
    for (const m of Sasl.mechanisms) {
      const who = m === "SCRAM-SHA-256" ? "user" : m === "CRAM-MD5" ? "tim" : "Kurt"
      const r = pair(m, { authcid: who, password: "wrong", random: zeros }, service(users))
      expect(r.transcript.at(-1), m).toBe(BAD)
      expect(r.client, m).toMatchObject({ _tag: "Failure", transient: false, reply: Reply.invalidCredentials })
    }
  })

  it("unknown user: 535 for every mechanism (SCRAM after a full exchange)", () => {
    for (const m of Sasl.mechanisms) {
      const r = pair(m, { authcid: "nobody", password: "pw", random: zeros }, service(users))
      expect(r.transcript.at(-1), m).toBe(BAD)
      expect(r.client, m).toMatchObject({ _tag: "Failure", transient: false })
    }
    expect(pair("SCRAM-SHA-256", { authcid: "nobody", password: "pw", random: zeros }, service(users)).transcript).toHaveLength(4)
  })

  it("CRAM-MD5 for a user stored with a hash is an unknown user (no clear secret)", () => {
    expect(pair("CRAM-MD5", { authcid: "Kurt", password: "xipj3plmq", random: zeros }, service(users)).transcript.at(-1)).toBe(BAD)
  })

  it("unavailable service: 454, transient, for every mechanism", () => {
    for (const m of Sasl.mechanisms) {
      const r = pair(m, tim, service(users, { down: true }))
      expect(r.transcript.at(-1), m).toBe("S: 454 4.7.0 Temporary authentication failure")
      expect(r.client, m).toMatchObject({ _tag: "Failure", transient: true, reply: Reply.authTemporaryFailure })
    }
  })

  it("property: any user name and password without control characters authenticates, and a different password does not", () => {
    const field = fc.string({ minLength: 1, maxLength: 16 }).filter((s) => !/[\u0000-\u001f\u007f]/.test(s))
    fc.assert(
      fc.property(fc.constantFrom<Sasl.Mechanism>(...Sasl.mechanisms), field, field, field, (m, user, password, other) => {
        const db = new Map([[user, `{PLAIN}${password}`]])
        const creds = { authcid: user, password, random: zeros }
        const ok = pair(m, creds, service(db, { iterations: 16 }), undefined, { minIterations: 1 })
        expect(ok.client).toEqual({ _tag: "Success" })
        expect(ok.server).toMatchObject({ _tag: "Success", identity: { authcid: user } })
        if (Credentials.normalizePassword(other) !== Credentials.normalizePassword(password) && other !== password) {
          const bad = pair(m, { ...creds, password: other }, service(db, { iterations: 16 }), undefined, { minIterations: 1 })
          expect(bad.client).toMatchObject({ _tag: "Failure", reply: Reply.invalidCredentials })
        }
      }),
      { numRuns: 200 }
    )
  })
})

describe("Client machine", () => {
  it("refuses credentials it cannot send, without sending anything", () => {
    const local = (m: Sasl.Mechanism, c: Partial<Client.ClientCredentials>) => Client.start(m, { ...tim, ...c }).step
    expect(local("PLAIN", { password: "a\u0000b" })).toMatchObject({ _tag: "Failure", transient: false, reply: undefined })
    expect(local("PLAIN", { authcid: "tim\r\nMAIL FROM:<x>" })).toMatchObject({ _tag: "Failure", transient: false })
    expect(local("SCRAM-SHA-256", { authzid: "a\nb" })).toMatchObject({ _tag: "Failure" })
    expect(local("PLAIN", { password: "" })).toMatchObject({ _tag: "Failure" })
    expect(local("LOGIN", { authzid: "other" })).toMatchObject({ _tag: "Failure", reason: "LOGIN cannot carry an authorization identity" })
    expect(local("CRAM-MD5", { authzid: "other" })).toMatchObject({ _tag: "Failure" })
    expect(local("CRAM-MD5", { authzid: "tim" })).toEqual({ _tag: "Send", line: "AUTH CRAM-MD5" })
  })

  it("chooses the strongest advertised mechanism, plaintext only when allowed", () => {
    expect(Client.choose(["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"], { plaintextAllowed: true })).toBe("SCRAM-SHA-256")
    expect(Client.choose(["login", "plain"], { plaintextAllowed: true })).toBe("PLAIN")
    expect(Client.choose(["LOGIN", "PLAIN", "CRAM-MD5"], { plaintextAllowed: false })).toBe("CRAM-MD5")
    expect(Client.choose(["LOGIN", "PLAIN"], { plaintextAllowed: false })).toBeUndefined()
    expect(Client.choose(["GSSAPI", "XOAUTH2"], { plaintextAllowed: true })).toBeUndefined()
  })

  it("LOGIN answers prompts by their text, else by order, and cancels a third prompt", () => {
    let t = Client.start("LOGIN", tim)
    t = Client.receive(t.state, challenge(b64("Password:")))
    expect(t.step).toEqual({ _tag: "Send", line: b64("tanstaaftanstaaf") })
    t = Client.receive(t.state, challenge(b64("User Name")))
    expect(t.step).toEqual({ _tag: "Send", line: b64("tim") })
    t = Client.receive(t.state, challenge(b64("Username:")))
    expect(t.step).toEqual({ _tag: "Send", line: "*" })
    t = Client.receive(t.state, Reply.authCancelled)
    expect(t.step).toMatchObject({ _tag: "Failure", reason: "unexpected LOGIN prompt", transient: true, reply: Reply.authCancelled })

    let u = Client.start("LOGIN", tim)
    u = Client.receive(u.state, challenge(b64("?")))
    expect(u.step).toEqual({ _tag: "Send", line: b64("tim") })
    u = Client.receive(u.state, challenge(""))
    expect(u.step).toEqual({ _tag: "Send", line: b64("tanstaaftanstaaf") })
  })

  it("cancels a challenge that is not base64, or an empty CRAM-MD5 challenge", () => {
    const t = Client.start("CRAM-MD5", tim)
    const bad = Client.receive(t.state, challenge("PDE4=OTY"))
    expect(bad.step).toEqual({ _tag: "Send", line: "*" })
    expect(Client.receive(bad.state, Reply.authCancelled).step).toMatchObject({ _tag: "Failure", reason: "server challenge is not valid base64" })
    expect(Client.receive(t.state, challenge("")).step).toEqual({ _tag: "Send", line: "*" })
  })

  describe("SCRAM-SHA-256 server checks", () => {
    const rfcClient = { authcid: "user", password: "pencil", random: () => alphabetBytes("rOprNGfwEbeRWgbNEkqO") }
    const serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    const afterServerFirst = () => {
      const t = Client.receive(Client.start("SCRAM-SHA-256", rfcClient).state, challenge(b64(serverFirst)))
      expect(t.step).toEqual({
        _tag: "Send",
        line: b64("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
      })
      return t.state
    }

    it("a bad server signature is a transient failure (possible impostor)", () => {
      const t = Client.receive(afterServerFirst(), challenge(b64("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")))
      expect(t.step).toEqual({ _tag: "Send", line: "*" })
      expect(Client.receive(t.state, Reply.authCancelled).step).toEqual({
        _tag: "Failure",
        reason: "SCRAM server signature does not match",
        transient: true,
        reply: Reply.authCancelled
      })
    })

    it("a 235 without the server signature is a transient failure; one carrying it in its text succeeds", () => {
      expect(Client.receive(afterServerFirst(), Reply.authSuccessful).step).toMatchObject({ _tag: "Failure", transient: true })
      const withFinal = Reply.make(235, "2.7.0", b64("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="))
      expect(Client.receive(afterServerFirst(), withFinal).step).toEqual({ _tag: "Success" })
      const withBad = Reply.make(235, "2.7.0", b64("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="))
      expect(Client.receive(afterServerFirst(), withBad).step).toMatchObject({ _tag: "Failure", transient: true })
      // a 235 before the server-first message is no proof either
      expect(Client.receive(Client.start("SCRAM-SHA-256", rfcClient).state, Reply.authSuccessful).step).toMatchObject({ _tag: "Failure", transient: true })
    })

    it("a server error e= is a permanent failure", () => {
      const t = Client.receive(afterServerFirst(), challenge(b64("e=invalid-proof")))
      expect(t.step).toEqual({ _tag: "Send", line: "*" })
      expect(Client.receive(t.state, Reply.authCancelled).step).toMatchObject({ transient: false, reason: "SCRAM server error: invalid-proof" })
    })

    it("cancels a nonce that does not extend its own, a weak or huge iteration count, a malformed message", () => {
      const start = Client.start("SCRAM-SHA-256", rfcClient).state
      const cases: Array<[string, string]> = [
        ["r=XOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "SCRAM server nonce does not extend the client nonce"],
        ["r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "SCRAM server nonce does not extend the client nonce"],
        ["r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095", "SCRAM iteration count 4095 outside 4096..1000000"],
        ["r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=2000000000", "SCRAM iteration count 2000000000 outside 4096..1000000"],
        ["r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096", "malformed SCRAM server-first-message"],
        ["m=1,r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "malformed SCRAM server-first-message"]
      ]
      for (const [sf, reason] of cases) {
        const t = Client.receive(start, challenge(b64(sf)))
        expect(t.step, sf).toEqual({ _tag: "Send", line: "*" })
        expect(Client.receive(t.state, Reply.authCancelled).step, sf).toMatchObject({ _tag: "Failure", reason, transient: true })
      }
    })
  })

  it("maps server replies: 4xx transient, 5xx permanent, other codes transient", () => {
    const t = Client.start("PLAIN", tim, { initialResponse: false })
    expect(Client.receive(t.state, Reply.authTemporaryFailure).step).toMatchObject({ transient: true })
    expect(Client.receive(t.state, Reply.mechanismTooWeak).step).toMatchObject({ transient: false, reply: Reply.mechanismTooWeak })
    expect(Client.receive(t.state, Reply.ok).step).toMatchObject({ _tag: "Failure", transient: true, reason: "unexpected reply 250 during authentication" })
  })

  it("throws UsageError when used after the end", () => {
    const done = Client.receive(Client.start("PLAIN", tim).state, Reply.authSuccessful)
    expect(done.step).toEqual({ _tag: "Success" })
    expect(() => Client.receive(done.state, Reply.authSuccessful)).toThrow(Sasl.UsageError)
  })

  it("property: arbitrary server replies never make the client throw, and it always ends", () => {
    const reply = fc.oneof(
      fc.tuple(fc.constantFrom(334, 235, 250, 454, 501, 535, 554), fc.string({ maxLength: 40 })).map(([code, text]) => Reply.make(code, undefined, text)),
      fc.string({ maxLength: 60 }).map((s) => challenge(b64(s))),
      fc.uint8Array({ maxLength: 60 }).map((b) => challenge(b64bytes(b))),
      fc.string({ maxLength: 30 }).map((s) => challenge(b64(`r=!!!!!!!!!!!!!!!!!!!!!!!!${s},s=QUJD,i=1`)))
    )
    fc.assert(
      fc.property(fc.constantFrom<Sasl.Mechanism>(...Sasl.mechanisms), fc.array(reply, { minLength: 8, maxLength: 8 }), (m, replies) => {
        let t = Client.start(m, { ...tim, random: zeros }, { minIterations: 1, maxIterations: 4 })
        for (const r of replies) {
          if (t.step._tag !== "Send") return
          t = Client.receive(t.state, r)
        }
        // every 334 round of a mechanism is bounded: 8 replies always end the exchange
        expect(t.step._tag).not.toBe("Send")
      }),
      { numRuns: 2000 }
    )
  })
})
