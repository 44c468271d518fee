import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Base64 from "../src/auth/Base64.ts"
import * as Credentials from "../src/auth/Credentials.ts"
import * as Sasl from "../src/auth/Sasl.ts"
import * as ClientSession from "../src/smtp/ClientSession.ts"
import * as Reply from "../src/smtp/Reply.ts"
import * as Chunking from "../src/testing/Chunking.ts"
import * as Bytes from "../src/wire/Bytes.ts"
import * as DataEncoder from "../src/wire/DataEncoder.ts"

const enc = (s: string): Uint8Array => Bytes.fromLatin1(s)
const txt = (u: Uint8Array): string => Bytes.toLatin1(u)

const tls = { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256, servername: "mx.test", authorized: true, authorizationError: undefined }

const cfg = (over: Partial<ClientSession.Config> = {}): ClientSession.Config =>
  ClientSession.config({ hostname: "relay.test", random: (n) => new Uint8Array(n).fill(1), ...over })

/** A scripted-server driver: feeds reply bytes, records what the client writes as text. */
class Client {
  state: ClientSession.State
  now = 0
  sent = ""
  writes: Array<string> = []
  outputs: Array<ClientSession.Output> = []
  results: Array<ClientSession.Result> = []
  failures: Array<ClientSession.Failure> = []
  events: Array<ClientSession.Event> = []
  closed: ClientSession.CloseReason | undefined
  startTls = 0
  ready = 0
  constructor(config: ClientSession.Config = cfg(), options?: { tls?: typeof tls }) {
    this.state = ClientSession.initial(config, options)
    this.apply(ClientSession.start(this.state, this.now))
  }
  apply(step: ClientSession.Step): this {
    this.state = step.state
    step.outputs.forEach((o, i) => {
      this.outputs.push(o)
      switch (o._tag) {
        case "Send":
          expect(i).toBe(0) // one Send per step, always first
          this.sent += txt(o.bytes)
          this.writes.push(txt(o.bytes))
          break
        case "Result":
          this.results.push(o.result)
          break
        case "Failed":
          this.failures.push(o.failure)
          break
        case "Close":
          expect(i).toBe(step.outputs.length - 1)
          this.closed = o.reason
          break
        case "StartTls":
          expect(i).toBe(step.outputs.length - 1)
          this.startTls++
          break
        case "Ready":
          this.ready++
          break
        case "Event":
          this.events.push(o.event)
          break
      }
    })
    return this
  }
  input(input: ClientSession.Input): this {
    return this.apply(ClientSession.step(this.state, input, this.now))
  }
  recv(...chunks: Array<string | Uint8Array>): this {
    for (const c of chunks) this.input({ _tag: "Received", bytes: typeof c === "string" ? enc(c) : c })
    return this
  }
  send(message: ClientSession.Message): this {
    return this.input({ _tag: "Send", message })
  }
  take(): string {
    const s = this.sent
    this.sent = ""
    return s
  }
  get phase(): string {
    return this.state.phase._tag
  }
}

const ehlo = (...keywords: Array<string>): string =>
  ["mx.test Hello", ...keywords].map((l, i, a) => `250${i === a.length - 1 ? " " : "-"}${l}\r\n`).join("")

const FULL = ["PIPELINING", "SIZE 10000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN"]

/** A client past the handshake with the given EHLO keywords (no STARTTLS, no AUTH). */
const ready = (keywords: ReadonlyArray<string> = FULL, config: ClientSession.Config = cfg({ tls: "none" })): Client => {
  const c = new Client(config)
  c.recv("220 mx.test ESMTP\r\n")
  expect(c.take()).toBe(config.mode === "lmtp" ? "LHLO relay.test\r\n" : "EHLO relay.test\r\n")
  c.recv(ehlo(...keywords))
  expect(c.phase).toBe("Ready")
  c.take()
  c.writes = []
  return c
}

const message = (over: Partial<ClientSession.Message> = {}): ClientSession.Message => ({
  sender: "alice@example.org",
  recipients: [{ address: "bob@example.net" }],
  data: enc("Subject: hi\r\n\r\nhello\r\n"),
  ...over
})

const outcomes = (r: ClientSession.Result | undefined) => r?.recipients.map((x) => [x.address, x.outcome, Reply.toString(x.reply)])

describe("handshake", () => {
  it("waits for the banner with the command deadline, then EHLO and Ready", () => {
    const c = new Client(cfg({ tls: "none" }))
    expect(c.sent).toBe("")
    expect(ClientSession.deadline(c.state)).toEqual({ name: "command", at: 300_000 })
    c.recv("220-mx.test ESMTP\r\n220 welcome\r\n")
    expect(c.take()).toBe("EHLO relay.test\r\n")
    c.recv(ehlo("PIPELINING", "SIZE 1000"))
    expect(c.ready).toBe(1)
    expect(ClientSession.isReady(c.state)).toBe(true)
    expect(ClientSession.deadline(c.state)).toBeUndefined()
    expect(ClientSession.extensions(c.state).keywords.get("SIZE")).toEqual(["1000"])
  })

  it("falls back to HELO after 502 and 500 and uses no extensions", () => {
    for (const refusal of ["502 5.5.1 Not implemented\r\n", "500 5.5.2 What?\r\n"]) {
      const c = new Client(cfg({ tls: "none" }))
      c.recv("220 mx.test\r\n")
      c.take()
      c.recv(refusal)
      expect(c.take()).toBe("HELO relay.test\r\n")
      expect(c.events[0]).toMatchObject({ _tag: "HeloFallback" })
      c.recv("250 mx.test\r\n")
      expect(c.phase).toBe("Ready")
      c.send(message({ data: enc("hi\r\n") }))
      expect(c.take()).toBe("MAIL FROM:<alice@example.org>\r\n") // no SIZE, not pipelined
    }
  })

  it("does not fall back on other refusals: QUIT and fail", () => {
    const c = new Client(cfg({ tls: "none" }))
    c.recv("220 mx.test\r\n")
    c.take()
    c.recv("550 5.7.1 Go away\r\n")
    expect(c.failures).toEqual([{ reason: "rejected", reply: Reply.make(550, "5.7.1", "Go away") }])
    expect(c.take()).toBe("QUIT\r\n")
    expect(c.closed).toBeUndefined()
    c.recv("221 2.0.0 Bye\r\n")
    expect(c.closed).toBe("rejected")
  })

  it("a 554 banner is a failure carrying it, followed by QUIT; a 421 banner closes at once", () => {
    const c = new Client(cfg())
    c.recv("554 5.7.1 No SMTP service here\r\n")
    expect(c.failures).toEqual([{ reason: "rejected", reply: Reply.make(554, "5.7.1", "No SMTP service here") }])
    expect(c.take()).toBe("QUIT\r\n")
    c.input({ _tag: "Eof" })
    expect(c.closed).toBe("rejected")

    const d = new Client(cfg())
    d.recv("421 4.3.2 Busy\r\n")
    expect(d.sent).toBe("")
    expect(d.failures[0]?.reason).toBe("server-closed")
    expect(d.closed).toBe("server-closed")
  })

  it("LMTP uses LHLO and never falls back", () => {
    const c = new Client(cfg({ mode: "lmtp", tls: "none" }))
    c.recv("220 lmtp.test LMTP\r\n")
    expect(c.take()).toBe("LHLO relay.test\r\n")
    c.recv("500 5.5.1 Unknown\r\n")
    expect(c.take()).toBe("QUIT\r\n")
    expect(c.failures[0]?.reason).toBe("rejected")
  })

  it("queues a message given before Ready and starts it after the handshake", () => {
    const c = new Client(cfg({ tls: "none" }))
    c.send(message())
    expect(c.sent).toBe("")
    c.recv("220 mx.test\r\n")
    c.take()
    c.recv(ehlo("PIPELINING"))
    expect(c.ready).toBe(0)
    expect(c.take()).toBe("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
  })
})

describe("STARTTLS", () => {
  it("opportunistic: STARTTLS when offered, EHLO again after the handshake", () => {
    const c = new Client(cfg())
    c.recv("220 mx.test\r\n")
    c.take()
    c.recv(ehlo("PIPELINING", "STARTTLS"))
    expect(c.take()).toBe("STARTTLS\r\n")
    c.recv("220 2.0.0 Ready to start TLS\r\n")
    expect(c.startTls).toBe(1)
    expect(c.phase).toBe("TlsHandshake")
    c.input({ _tag: "TlsEstablished", tls })
    expect(c.take()).toBe("EHLO relay.test\r\n")
    c.recv(ehlo("PIPELINING"))
    expect(c.phase).toBe("Ready")
    expect(c.state.tls).toEqual(tls)
    expect(c.events.map((e) => e._tag)).toEqual(["TlsStarted"])
    c.send(message())
    c.recv("250 ok\r\n250 ok\r\n354 go\r\n")
    c.recv("250 queued\r\n")
    expect(c.results[0]?.tls).toEqual(tls)
  })

  it("discards plaintext injected after the 220 (STARTTLS response injection)", () => {
    const c = new Client(cfg())
    c.recv("220 mx.test\r\n")
    c.take()
    c.recv(ehlo("STARTTLS"))
    c.take()
    // A man in the middle appends a fake EHLO reply to the 220; it must never be read as the post-TLS reply.
    c.recv("220 go ahead\r\n250-evil\r\n250 AUTH PLAIN\r\n")
    c.recv("250 more junk\r\n")
    c.input({ _tag: "TlsEstablished", tls })
    expect(c.take()).toBe("EHLO relay.test\r\n")
    expect(c.phase).toBe("Hello")
    c.recv(ehlo("SIZE 5"))
    expect(ClientSession.extensions(c.state).keywords.has("AUTH")).toBe(false)
    expect(c.phase).toBe("Ready")
  })

  it("opportunistic: goes on in plaintext when STARTTLS is not offered or refused", () => {
    const c = new Client(cfg())
    c.recv("220 mx.test\r\n", ehlo("PIPELINING"))
    expect(c.phase).toBe("Ready")
    expect(c.events).toEqual([{ _tag: "TlsSkipped", reply: undefined }])

    const d = new Client(cfg())
    d.recv("220 mx.test\r\n", ehlo("STARTTLS"))
    d.take()
    d.recv("454 4.7.0 TLS not available\r\n")
    expect(d.phase).toBe("Ready")
    expect(d.events).toEqual([{ _tag: "TlsSkipped", reply: Reply.make(454, "4.7.0", "TLS not available") }])
  })

  it("required: fails with 421 4.7.10 when not offered or refused, and QUITs", () => {
    const c = new Client(cfg({ tls: "required" }))
    c.recv("220 mx.test\r\n", ehlo("PIPELINING"))
    expect(c.failures).toEqual([
      { reason: "tls-unavailable", reply: Reply.make(421, "4.7.10", "TLS required but not offered by mx.test") }
    ])
    expect(c.take()).toBe("EHLO relay.test\r\nQUIT\r\n")
    c.recv("221 bye\r\n")
    expect(c.closed).toBe("tls-unavailable")

    const d = new Client(cfg({ tls: "required" }))
    d.send(message())
    d.recv("220 mx.test\r\n", ehlo("STARTTLS"))
    d.take()
    d.recv("454 4.7.0 TLS not available\r\n")
    expect(d.failures[0]?.reply).toEqual(
      Reply.make(421, "4.7.10", "TLS required but mx.test refused STARTTLS: 454 4.7.0 TLS not available")
    )
    expect(outcomes(d.results[0])).toEqual([
      ["bob@example.net", "transient", "421 4.7.10 TLS required but mx.test refused STARTTLS: 454 4.7.0 TLS not available"]
    ])
    expect(d.results[0]?.local).toBe(true)
    expect(d.take()).toBe("QUIT\r\n")
  })

  it("none: never sends STARTTLS; implicit TLS: never sends it either", () => {
    const c = new Client(cfg({ tls: "none" }))
    c.recv("220 mx.test\r\n", ehlo("STARTTLS"))
    expect(c.take()).toBe("EHLO relay.test\r\n")
    expect(c.phase).toBe("Ready")
    const d = new Client(cfg({ tls: "required", implicitTls: true }), { tls })
    d.recv("220 mx.test\r\n", ehlo("STARTTLS"))
    expect(d.take()).toBe("EHLO relay.test\r\n")
    expect(d.phase).toBe("Ready")
    expect(d.state.tls).toEqual(tls)
  })

  it("a failed handshake fails the session and closes", () => {
    const c = new Client(cfg())
    c.send(message())
    c.recv("220 mx.test\r\n", ehlo("STARTTLS"), "220 go\r\n")
    c.take()
    c.input({ _tag: "TlsFailed", reason: "certificate has expired" })
    expect(c.failures).toEqual([{ reason: "tls-failed", reply: Reply.make(421, "4.7.0", "TLS handshake failed: certificate has expired") }])
    expect(c.results[0]?.recipients[0]?.outcome).toBe("transient")
    expect(c.sent).toBe("")
    expect(c.closed).toBe("tls-failed")
  })
})

describe("AUTH", () => {
  const auth = { authcid: "tim", password: "tanstaaftanstaaf" }
  const overTls = (keywords: string, config: Partial<ClientSession.Config> = {}): Client => {
    const c = new Client(cfg({ tls: "none", implicitTls: true, auth, ...config }), { tls })
    c.recv("220 mx.test\r\n")
    c.take()
    c.recv(ehlo("PIPELINING", keywords))
    return c
  }

  it("PLAIN with an initial response", () => {
    const c = overTls("AUTH PLAIN")
    expect(c.take()).toBe("AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n")
    c.recv("235 2.7.0 Authentication successful\r\n")
    expect(c.phase).toBe("Ready")
    expect(c.events).toContainEqual({ _tag: "Authenticated", mechanism: "PLAIN" })
    c.send(message())
    c.recv("250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
    expect(c.results[0]?.auth).toBe("tim")
  })

  it("LOGIN answers the prompts", () => {
    const c = overTls("AUTH LOGIN")
    expect(c.take()).toBe("AUTH LOGIN\r\n")
    c.recv("334 VXNlcm5hbWU6\r\n")
    expect(c.take()).toBe("dGlt\r\n")
    c.recv("334 UGFzc3dvcmQ6\r\n")
    expect(c.take()).toBe("dGFuc3RhYWZ0YW5zdGFhZg==\r\n")
    c.recv("235 2.7.0 ok\r\n")
    expect(c.phase).toBe("Ready")
  })

  it("CRAM-MD5 answers the RFC 2195 example", () => {
    const c = overTls("AUTH CRAM-MD5")
    expect(c.take()).toBe("AUTH CRAM-MD5\r\n")
    c.recv("334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n")
    expect(c.take()).toBe("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n")
    c.recv("235 2.7.0 ok\r\n")
    expect(c.phase).toBe("Ready")
  })

  it("SCRAM-SHA-256 against the server machine, checking the server signature", () => {
    const c = overTls("AUTH SCRAM-SHA-256 PLAIN")
    const first = c.take()
    expect(first.startsWith("AUTH SCRAM-SHA-256 ")).toBe(true)
    const creds = Credentials.scramCredentials(auth.password, new Uint8Array(16).fill(3), 4096)
    let t = Sasl.start("SCRAM-SHA-256", first.slice(19, -2), { random: (n) => new Uint8Array(n).fill(9), hostname: "mx.test" })
    t = Sasl.answer(t.state, { _tag: "Scram", credentials: creds })
    expect(t.step._tag).toBe("Challenge")
    if (t.step._tag !== "Challenge") return
    c.recv(`334 ${Base64.encode(t.step.data)}\r\n`)
    t = Sasl.respond(t.state, c.take().slice(0, -2))
    expect(t.step._tag).toBe("Success")
    if (t.step._tag !== "Success" || t.step.final === undefined) return
    c.recv(`334 ${Base64.encode(t.step.final)}\r\n`)
    expect(c.take()).toBe("\r\n")
    c.recv("235 2.7.0 ok\r\n")
    expect(c.phase).toBe("Ready")
    expect(c.events).toContainEqual({ _tag: "Authenticated", mechanism: "SCRAM-SHA-256" })
  })

  it("SCRAM-SHA-256: a wrong server signature cancels and fails", () => {
    const c = overTls("AUTH SCRAM-SHA-256")
    const first = c.take()
    const creds = Credentials.scramCredentials("another password", new Uint8Array(16).fill(3), 4096)
    let t = Sasl.start("SCRAM-SHA-256", first.slice(19, -2), { random: (n) => new Uint8Array(n).fill(9), hostname: "mx.test" })
    t = Sasl.answer(t.state, { _tag: "Scram", credentials: creds })
    if (t.step._tag !== "Challenge") throw new Error("expected a challenge")
    c.recv(`334 ${Base64.encode(t.step.data)}\r\n`)
    c.take()
    c.recv(`334 ${Base64.encode(Bytes.fromString("v=" + Base64.encode(new Uint8Array(32))))}\r\n`)
    expect(c.take()).toBe("*\r\n")
    c.recv("501 5.7.0 Authentication cancelled\r\n")
    expect(c.failures[0]?.reason).toBe("auth")
    expect(c.failures[0]?.reply.code).toBe(501)
    expect(c.take()).toBe("QUIT\r\n")
  })

  it("prefers SCRAM-SHA-256 > CRAM-MD5 > PLAIN > LOGIN, or the configured mechanism", () => {
    expect(overTls("AUTH LOGIN PLAIN CRAM-MD5 SCRAM-SHA-256").take()).toMatch(/^AUTH SCRAM-SHA-256 /)
    expect(overTls("AUTH LOGIN PLAIN CRAM-MD5").take()).toBe("AUTH CRAM-MD5\r\n")
    expect(overTls("AUTH LOGIN PLAIN").take()).toMatch(/^AUTH PLAIN /)
    expect(overTls("AUTH LOGIN").take()).toBe("AUTH LOGIN\r\n")
    expect(overTls("AUTH PLAIN LOGIN", { auth: { ...auth, mechanism: "LOGIN" } }).take()).toBe("AUTH LOGIN\r\n")
    const c = overTls("AUTH PLAIN", { auth: { ...auth, mechanism: "CRAM-MD5" } })
    expect(c.failures[0]?.reply).toEqual(Reply.make(421, "4.7.0", "AUTH CRAM-MD5 not offered by mx.test"))
    expect(c.take()).toBe("QUIT\r\n")
  })

  it("never sends PLAIN or LOGIN over plaintext unless allowed", () => {
    const c = new Client(cfg({ tls: "none", auth }))
    c.recv("220 mx.test\r\n", ehlo("AUTH PLAIN LOGIN"))
    expect(c.take()).toBe("EHLO relay.test\r\nQUIT\r\n")
    expect(c.failures[0]).toEqual({
      reason: "auth",
      reply: Reply.make(421, "4.7.0", "No usable AUTH mechanism offered by mx.test without TLS: PLAIN LOGIN")
    })
    const forced = new Client(cfg({ tls: "none", auth: { ...auth, mechanism: "PLAIN" } }))
    forced.recv("220 mx.test\r\n", ehlo("AUTH PLAIN"))
    expect(forced.failures[0]?.reply).toEqual(Reply.make(421, "4.7.11", "Refusing AUTH PLAIN without TLS to mx.test"))
    const allowed = new Client(cfg({ tls: "none", auth, authRequireTls: false }))
    allowed.recv("220 mx.test\r\n", ehlo("AUTH PLAIN LOGIN"))
    expect(allowed.take()).toBe("EHLO relay.test\r\nAUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n")
    const cram = new Client(cfg({ tls: "none", auth }))
    cram.recv("220 mx.test\r\n", ehlo("AUTH PLAIN CRAM-MD5"))
    expect(cram.take()).toBe("EHLO relay.test\r\nAUTH CRAM-MD5\r\n")
  })

  it("a refused AUTH fails the session with the server's reply; AUTH not offered fails too", () => {
    const c = overTls("AUTH PLAIN")
    c.send(message())
    c.take()
    c.recv("535 5.7.8 Authentication credentials invalid\r\n")
    expect(c.failures).toEqual([{ reason: "auth", reply: Reply.make(535, "5.7.8", "Authentication credentials invalid") }])
    expect(outcomes(c.results[0])).toEqual([["bob@example.net", "transient", "535 5.7.8 Authentication credentials invalid"]])
    expect(c.take()).toBe("QUIT\r\n")
    const d = overTls("SIZE 100")
    expect(d.failures[0]?.reply).toEqual(Reply.make(421, "4.7.0", "Authentication configured but mx.test does not offer AUTH"))
  })

  it("an authorization identity excludes LOGIN and CRAM-MD5", () => {
    expect(overTls("AUTH CRAM-MD5 PLAIN", { auth: { ...auth, authzid: "boss" } }).take()).toBe(
      `AUTH PLAIN ${Base64.encode(Bytes.fromString("boss\0tim\0tanstaaftanstaaf"))}\r\n`
    )
  })
})

describe("transactions", () => {
  it("pipelines MAIL, RCPTs and DATA in one write, then sends the dot-stuffed body", () => {
    const c = ready()
    c.send(message({ recipients: [{ address: "bob@example.net" }, { address: "carol@example.net" }], data: enc(".a\nb\rc\r\n.\r\n") }))
    expect(c.writes.at(-1)).toBe(
      "MAIL FROM:<alice@example.org> SIZE=13\r\nRCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n"
    )
    c.take()
    expect(ClientSession.deadline(c.state)).toEqual({ name: "command", at: 300_000 })
    c.recv("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n")
    expect(ClientSession.deadline(c.state)).toEqual({ name: "data-init", at: 120_000 })
    c.recv("354 go\r\n")
    expect(c.take()).toBe("..a\r\nb\r\nc\r\n..\r\n.\r\n")
    expect(ClientSession.deadline(c.state)).toEqual({ name: "data", at: 600_000 })
    c.recv("250 2.6.0 queued as X\r\n")
    expect(outcomes(c.results[0])).toEqual([
      ["bob@example.net", "delivered", "250 2.6.0 queued as X"],
      ["carol@example.net", "delivered", "250 2.6.0 queued as X"]
    ])
    expect(c.results[0]).toMatchObject({ dataSent: true, local: false, tls: undefined, auth: undefined })
    expect(c.sent).toBe("") // success: no RSET
    expect(c.phase).toBe("Ready")
    expect(c.ready).toBe(2)
  })

  it("without PIPELINING sends one command per reply", () => {
    const c = ready(["SIZE 0"])
    c.send(message({ recipients: [{ address: "bob@example.net" }, { address: "carol@example.net" }] }))
    expect(c.take()).toBe("MAIL FROM:<alice@example.org> SIZE=22\r\n")
    c.recv("250 ok\r\n")
    expect(c.take()).toBe("RCPT TO:<bob@example.net>\r\n")
    c.recv("550 5.1.1 no such user\r\n")
    expect(c.take()).toBe("RCPT TO:<carol@example.net>\r\n")
    c.recv("250 ok\r\n")
    expect(c.take()).toBe("DATA\r\n")
    c.recv("354 go\r\n")
    expect(c.take()).toBe("Subject: hi\r\n\r\nhello\r\n.\r\n")
    c.recv("250 ok\r\n")
    expect(outcomes(c.results[0])).toEqual([
      ["bob@example.net", "permanent", "550 5.1.1 no such user"],
      ["carol@example.net", "delivered", "250 ok"]
    ])
    expect(c.sent).toBe("")
  })

  it("mixed RCPT results: accepted ones get the final reply, refused ones their own", () => {
    const c = ready()
    c.send(message({ recipients: [{ address: "a@x.test" }, { address: "b@x.test" }, { address: "c@x.test" }] }))
    c.take()
    c.recv("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n450 4.2.1 try later\r\n354 go\r\n")
    c.take()
    c.recv("554 5.6.0 content rejected\r\n")
    expect(outcomes(c.results[0])).toEqual([
      ["a@x.test", "permanent", "554 5.6.0 content rejected"],
      ["b@x.test", "permanent", "550 5.1.1 unknown"],
      ["c@x.test", "transient", "450 4.2.1 try later"]
    ])
    expect(c.sent).toBe("") // the server closed the transaction itself
    expect(c.phase).toBe("Ready")
  })

  it("every RCPT refused (pipelined): no body; after a 354 a lone dot; then RSET", () => {
    const c = ready()
    c.send(message({ recipients: [{ address: "a@x.test" }, { address: "b@x.test" }] }))
    c.take()
    c.recv("250 ok\r\n550 5.1.1 unknown\r\n551 5.1.6 moved\r\n554 5.5.1 no valid recipients\r\n")
    expect(c.take()).toBe("RSET\r\n")
    expect(outcomes(c.results[0])).toEqual([
      ["a@x.test", "permanent", "550 5.1.1 unknown"],
      ["b@x.test", "permanent", "551 5.1.6 moved"]
    ])
    expect(c.results[0]?.dataSent).toBe(false)
    expect(c.ready).toBe(1)
    c.recv("250 2.0.0 ok\r\n")
    expect(c.ready).toBe(2)

    const d = ready()
    d.send(message())
    d.take()
    d.recv("250 ok\r\n550 5.1.1 unknown\r\n354 go ahead anyway\r\n")
    expect(d.take()).toBe(".\r\n") // RFC 2920: the client must send the lone dot
    d.recv("554 5.5.1 no valid recipients\r\n")
    expect(d.take()).toBe("RSET\r\n")
    expect(outcomes(d.results[0])).toEqual([["bob@example.net", "permanent", "550 5.1.1 unknown"]])
    d.recv("250 ok\r\n")
    expect(d.phase).toBe("Ready")
  })

  it("every RCPT refused (not pipelined): no DATA, RSET", () => {
    const c = ready([])
    c.send(message())
    expect(c.take()).toBe("MAIL FROM:<alice@example.org>\r\n")
    c.recv("250 ok\r\n")
    expect(c.take()).toBe("RCPT TO:<bob@example.net>\r\n")
    c.recv("450 4.7.1 greylisted\r\n")
    expect(c.take()).toBe("RSET\r\n")
    expect(outcomes(c.results[0])).toEqual([["bob@example.net", "transient", "450 4.7.1 greylisted"]])
  })

  it("a refused MAIL applies to every recipient; pipelined replies are read and ignored", () => {
    const c = ready()
    c.send(message({ recipients: [{ address: "a@x.test" }, { address: "b@x.test" }] }))
    c.take()
    c.recv("553 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n")
    expect(outcomes(c.results[0])).toEqual([
      ["a@x.test", "permanent", "553 5.7.1 sender refused"],
      ["b@x.test", "permanent", "553 5.7.1 sender refused"]
    ])
    expect(c.take()).toBe("RSET\r\n")
    const d = ready([])
    d.send(message())
    d.take()
    d.recv("451 4.3.0 try later\r\n")
    expect(d.take()).toBe("RSET\r\n")
    expect(outcomes(d.results[0])).toEqual([["bob@example.net", "transient", "451 4.3.0 try later"]])
  })

  it("a refused DATA applies to the accepted recipients", () => {
    const c = ready()
    c.send(message())
    c.take()
    c.recv("250 ok\r\n250 ok\r\n451 4.3.0 not now\r\n")
    expect(outcomes(c.results[0])).toEqual([["bob@example.net", "transient", "451 4.3.0 not now"]])
    expect(c.take()).toBe("RSET\r\n")
  })

  it("LMTP reads one final reply per accepted recipient, in RCPT order", () => {
    const c = ready(["PIPELINING", "ENHANCEDSTATUSCODES"], cfg({ mode: "lmtp", tls: "none" }))
    c.send(message({ recipients: [{ address: "a@x.test" }, { address: "b@x.test" }, { address: "c@x.test" }] }))
    expect(c.take()).toBe("MAIL FROM:<alice@example.org>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n")
    c.recv("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n354 go\r\n")
    c.take()
    c.recv("250 2.0.0 a delivered\r\n")
    expect(c.results).toHaveLength(0)
    expect(ClientSession.deadline(c.state)?.name).toBe("data")
    c.recv("452 4.2.2 c over quota\r\n")
    expect(outcomes(c.results[0])).toEqual([
      ["a@x.test", "delivered", "250 2.0.0 a delivered"],
      ["b@x.test", "permanent", "550 5.1.1 unknown"],
      ["c@x.test", "transient", "452 4.2.2 c over quota"]
    ])
    expect(c.sent).toBe("")
    expect(c.phase).toBe("Ready")
  })

  it("BDAT LAST for BINARYMIME (bytes as they are) and for preferChunking (CRLF normalised)", () => {
    const c = ready()
    const data = new Uint8Array([0x00, 0xff, 0x0a, 0x2e, 0x0d, 0x0a, 0x2e])
    c.send(message({ body: "BINARYMIME", data, recipients: [{ address: "a@x.test" }, { address: "b@x.test" }] }))
    expect(c.take()).toBe("MAIL FROM:<alice@example.org> SIZE=7 BODY=BINARYMIME\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n")
    c.recv("250 ok\r\n250 ok\r\n550 no\r\n")
    expect(c.take()).toBe("BDAT 7 LAST\r\n" + txt(data))
    c.recv("250 2.0.0 ok\r\n")
    expect(outcomes(c.results[0])).toEqual([["a@x.test", "delivered", "250 2.0.0 ok"], ["b@x.test", "permanent", "550 no"]])

    const d = ready(FULL, cfg({ tls: "none", preferChunking: true }))
    d.send(message({ data: enc("a\nb") }))
    expect(d.take()).toBe("MAIL FROM:<alice@example.org> SIZE=6\r\nRCPT TO:<bob@example.net>\r\n")
    d.recv("250 ok\r\n250 ok\r\n")
    expect(d.take()).toBe("BDAT 6 LAST\r\na\r\nb\r\n")
  })

  it("BDAT after all RCPTs refused is never sent", () => {
    const c = ready(FULL, cfg({ tls: "none", preferChunking: true }))
    c.send(message())
    c.take()
    c.recv("250 ok\r\n550 no\r\n")
    expect(c.take()).toBe("RSET\r\n")
  })

  it("BODY=8BITMIME, SMTPUTF8 and DSN parameters when offered", () => {
    const c = ready()
    c.send({
      sender: "jörg@exämple.org",
      recipients: [{ address: "bob@example.net", notify: ["SUCCESS", "FAILURE"], orcpt: { addrType: "rfc822", address: "bob+x@example.net" } }],
      data: Bytes.fromString("Subject: grüße\r\n\r\n"),
      ret: "HDRS",
      envid: "id=1"
    })
    expect(c.take()).toBe(
      txt(Bytes.fromString(
        "MAIL FROM:<jörg@exämple.org> SIZE=20 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+3D1\r\n" +
          "RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@example.net\r\nDATA\r\n"
      ))
    )
    const d = ready(["PIPELINING", "8BITMIME"])
    d.send(message({ ret: "FULL", envid: "e", recipients: [{ address: "b@x.test", notify: ["NEVER"] }], body: "8BITMIME" }))
    expect(d.take()).toBe("MAIL FROM:<alice@example.org> BODY=8BITMIME\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
  })

  it("refuses, without sending, what needs 8BITMIME, SMTPUTF8, BINARYMIME or exceeds SIZE", () => {
    const cases: Array<[ReadonlyArray<string>, Partial<ClientSession.Message>, string]> = [
      [["PIPELINING"], { data: new Uint8Array([0x68, 0xe9, 0x0d, 0x0a]) }, "554 5.6.3 Message has 8-bit content and mx.test does not offer 8BITMIME"],
      [["PIPELINING", "8BITMIME"], { recipients: [{ address: "bøb@example.net" }] }, "553 5.6.7 Message needs SMTPUTF8, which mx.test does not offer"],
      [["PIPELINING", "8BITMIME"], { smtputf8: true }, "553 5.6.7 Message needs SMTPUTF8, which mx.test does not offer"],
      [["PIPELINING", "CHUNKING"], { body: "BINARYMIME" }, "554 5.6.1 Message needs BINARYMIME and CHUNKING, which mx.test does not offer"],
      [["SIZE 10"], {}, "552 5.3.4 Message size 22 exceeds the fixed limit 10 of mx.test"]
    ]
    for (const [keywords, over, reply] of cases) {
      const c = ready(keywords)
      c.send(message(over))
      expect(c.sent).toBe("")
      expect(outcomes(c.results[0])).toEqual([[over.recipients?.[0]?.address ?? "bob@example.net", "permanent", reply]])
      expect(c.results[0]?.local).toBe(true)
      expect(c.phase).toBe("Ready")
      expect(c.ready).toBe(2)
    }
  })

  it("an unparsable recipient is refused locally; the others are sent", () => {
    const c = ready()
    c.send(message({ recipients: [{ address: "no-at-sign" }, { address: "ok@x.test" }] }))
    expect(c.take()).toBe("MAIL FROM:<alice@example.org> SIZE=22\r\nRCPT TO:<ok@x.test>\r\nDATA\r\n")
    c.recv("250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
    expect(c.results[0]?.recipients.map((r) => [r.outcome, r.reply.code])).toEqual([["permanent", 553], ["delivered", 250]])
  })
})

describe("CR, LF and NUL are never put on the wire", () => {
  const injections: Array<[string, Partial<ClientSession.Message>, string]> = [
    ["sender", { sender: "a@x.test>\r\nRCPT TO:<evil@x.test" }, "sender"],
    ["recipient", { recipients: [{ address: "b@x.test\r\nDATA" }] }, "recipient"],
    ["recipient NUL", { recipients: [{ address: "b@x.test\0" }] }, "recipient"],
    ["envid", { envid: "1\r\nRSET" }, "ENVID"],
    ["orcpt", { recipients: [{ address: "b@x.test", orcpt: { addrType: "rfc822", address: "x\ny" } }] }, "ORCPT"],
    ["notify", { recipients: [{ address: "b@x.test", notify: ["SUCCESS\r\n" as "SUCCESS"] }] }, "NOTIFY"]
  ]
  for (const [name, over, field] of injections) {
    it(`refuses the transaction for a line break in the ${name}`, () => {
      const c = ready()
      c.send(message(over))
      expect(c.sent).toBe("")
      expect(c.results[0]?.recipients[0]?.reply).toEqual(Reply.make(501, "5.5.4", `Refused to send: CR, LF or NUL in ${field}`))
      expect(c.results[0]?.recipients[0]?.outcome).toBe("permanent")
      expect(c.phase).toBe("Ready")
    })
  }

  it("refuses an EHLO name or AUTH fields with control characters before anything happens", () => {
    const c = new Client(cfg({ hostname: "relay.test\r\nMAIL FROM:<x@y>" }))
    expect(c.failures[0]?.reason).toBe("local")
    expect(c.closed).toBe("local")
    c.recv("220 mx.test\r\n")
    expect(c.sent).toBe("")
    const d = new Client(cfg({ auth: { authcid: "tim", password: "pw\r\nQUIT" } }))
    expect(d.failures[0]).toEqual({
      reason: "local",
      reply: Reply.make(421, "4.3.5", "Invalid AUTH configuration: control character in user name or password")
    })
    d.send(message())
    expect(d.results[0]?.recipients[0]?.outcome).toBe("transient")
    expect(d.sent).toBe("")
  })
})

describe("failures mid-transaction", () => {
  it("a timeout via the deadline: undecided recipients transient 421 4.4.2", () => {
    const c = ready()
    c.now = 1000
    c.send(message({ recipients: [{ address: "a@x.test" }, { address: "b@x.test" }] }))
    c.take()
    c.recv("250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n")
    expect(ClientSession.deadline(c.state)).toEqual({ name: "data", at: 601_000 })
    c.now = 601_000
    c.input({ _tag: "Timeout" })
    expect(outcomes(c.results[0])).toEqual([
      ["a@x.test", "permanent", "550 no"],
      ["b@x.test", "transient", "421 4.4.2 Connection timed out"]
    ])
    expect(c.results[0]?.dataSent).toBe(true)
    expect(c.failures).toEqual([{ reason: "timeout", reply: Reply.make(421, "4.4.2", "Connection timed out") }])
    expect(c.closed).toBe("timeout")
  })

  it("EOF: undecided recipients transient 451 4.3.0 Connection lost; later messages too", () => {
    const c = ready()
    c.send(message())
    c.send(message({ sender: "" }))
    c.take()
    c.recv("250 ok\r\n")
    c.input({ _tag: "Eof" })
    expect(outcomes(c.results[0])).toEqual([["bob@example.net", "transient", "451 4.3.0 Connection lost"]])
    expect(c.results[1]?.local).toBe(true)
    expect(outcomes(c.results[1])).toEqual([["bob@example.net", "transient", "451 4.3.0 Connection lost"]])
    expect(c.closed).toBe("connection-lost")
    c.send(message())
    expect(outcomes(c.results[2])).toEqual([["bob@example.net", "transient", "451 4.3.0 Connection lost"]])
  })

  it("a 421 ends the session: decided recipients keep their reply, the rest get the 421", () => {
    const c = ready()
    c.send(message({ recipients: [{ address: "a@x.test" }, { address: "b@x.test" }, { address: "c@x.test" }] }))
    c.take()
    c.recv("250 ok\r\n550 no\r\n421 4.7.0 mx.test too many errors\r\n")
    expect(outcomes(c.results[0])).toEqual([
      ["a@x.test", "permanent", "550 no"],
      ["b@x.test", "transient", "421 4.7.0 mx.test too many errors"],
      ["c@x.test", "transient", "421 4.7.0 mx.test too many errors"]
    ])
    expect(c.sent).toBe("")
    expect(c.closed).toBe("server-closed")
  })

  it("a malformed reply fails the session (transient)", () => {
    const c = ready()
    c.send(message())
    c.take()
    c.recv("250 ok\r\nHELLO?\r\n")
    expect(c.failures[0]?.reason).toBe("malformed")
    expect(c.results[0]?.recipients[0]).toMatchObject({ outcome: "transient", reply: { code: 451, enhanced: "4.5.0" } })
    expect(c.closed).toBe("malformed")
  })

  it("bytes while idle make the connection unusable (stale), whole or split", () => {
    const c = ready()
    c.recv("421 4.4.2 mx.test Error: timeout exceeded\r\n")
    expect(c.failures).toEqual([{ reason: "stale", reply: Reply.make(421, "4.4.2", "mx.test Error: timeout exceeded") }])
    expect(c.closed).toBe("stale")
    const d = ready()
    d.recv("421 4.4.2 mx.te")
    expect(ClientSession.isReady(d.state)).toBe(false)
    d.send(message())
    expect(d.sent).toBe("")
    d.recv("st bye\r\n")
    expect(d.failures[0]?.reply).toEqual(Reply.make(421, "4.4.2", "mx.test bye"))
    expect(outcomes(d.results[0])).toEqual([["bob@example.net", "transient", "421 4.4.2 mx.test bye"]])
    expect(d.closed).toBe("stale")
  })
})

describe("connection reuse and QUIT", () => {
  it("carries three messages on one connection, with RSET after the failed one", () => {
    const c = ready()
    c.send(message({ recipients: [{ address: "one@x.test" }] }))
    c.recv("250 ok\r\n250 ok\r\n354 go\r\n250 ok 1\r\n")
    c.send(message({ recipients: [{ address: "two@x.test" }] }))
    c.recv("250 ok\r\n550 no\r\n554 no recipients\r\n")
    c.send(message({ recipients: [{ address: "three@x.test" }] })) // queued behind the RSET
    c.recv("250 reset\r\n")
    c.recv("250 ok\r\n250 ok\r\n354 go\r\n250 ok 3\r\n")
    expect(c.writes).toEqual([
      "MAIL FROM:<alice@example.org> SIZE=22\r\nRCPT TO:<one@x.test>\r\nDATA\r\n",
      "Subject: hi\r\n\r\nhello\r\n.\r\n",
      "MAIL FROM:<alice@example.org> SIZE=22\r\nRCPT TO:<two@x.test>\r\nDATA\r\n",
      "RSET\r\n",
      "MAIL FROM:<alice@example.org> SIZE=22\r\nRCPT TO:<three@x.test>\r\nDATA\r\n",
      "Subject: hi\r\n\r\nhello\r\n.\r\n"
    ])
    expect(c.results.map((r) => r.recipients[0]?.outcome)).toEqual(["delivered", "permanent", "delivered"])
    expect(c.phase).toBe("Ready")
  })

  it("QUIT waits for 221 and closes; without a 221 the quit deadline closes", () => {
    const c = ready()
    c.input({ _tag: "Quit" })
    expect(c.take()).toBe("QUIT\r\n")
    expect(ClientSession.deadline(c.state)).toEqual({ name: "quit", at: 30_000 })
    c.recv("221 2.0.0 Bye\r\n")
    expect(c.closed).toBe("quit")
    expect(c.failures).toEqual([])
    const d = ready()
    d.input({ _tag: "Quit" })
    d.input({ _tag: "Timeout" })
    expect(d.closed).toBe("quit")
  })

  it("QUIT during a transaction waits for its result", () => {
    const c = ready()
    c.send(message())
    c.input({ _tag: "Quit" })
    c.send(message())
    expect(c.results[0]?.recipients[0]?.reply).toEqual(Reply.make(451, "4.3.0", "Client session is closing"))
    c.take()
    c.recv("250 ok\r\n250 ok\r\n354 go\r\n")
    c.take()
    c.recv("250 ok\r\n")
    expect(c.results[1]?.recipients[0]?.outcome).toBe("delivered")
    expect(c.take()).toBe("QUIT\r\n")
    c.input({ _tag: "Eof" })
    expect(c.closed).toBe("quit")
  })
})

describe("segmentation and robustness", () => {
  const script = [
    "220-mx.test ESMTP\r\n220 hi\r\n",
    ehlo(...FULL),
    "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n354 go\r\n",
    "250 2.6.0 queued\r\n",
    "250 2.1.0 ok\r\n550 5.1.1 unknown\r\n554 5.5.1 none\r\n",
    "250 2.0.0 reset\r\n",
    "221 2.0.0 bye\r\n"
  ].join("")
  const run = (chunks: ReadonlyArray<Uint8Array>) => {
    const c = new Client(cfg({ tls: "none" }))
    c.send(message({ recipients: [{ address: "a@x.test" }, { address: "b@x.test" }] }))
    c.send(message({ recipients: [{ address: "c@x.test" }] }))
    c.input({ _tag: "Quit" })
    for (const chunk of chunks) c.recv(chunk)
    return { sent: c.sent, results: c.results, closed: c.closed, failures: c.failures }
  }
  const whole = run([enc(script)])

  it("the whole script gives the expected conversation", () => {
    expect(whole.closed).toBe("quit")
    expect(whole.results.map(outcomes)).toEqual([
      [["a@x.test", "delivered", "250 2.6.0 queued"], ["b@x.test", "permanent", "550 5.1.1 unknown"]],
      [["c@x.test", "permanent", "550 5.1.1 unknown"]]
    ])
    expect(whole.sent.endsWith("RSET\r\nQUIT\r\n")).toBe(true)
  })

  it("one byte at a time gives the same", () => {
    expect(run(Chunking.bytewise(enc(script)))).toEqual(whole)
  })

  it("any split points give the same", () => {
    fc.assert(
      fc.property(fc.array(fc.nat(script.length), { maxLength: 30 }), (points) => {
        expect(run(Chunking.splitAt(enc(script), points))).toEqual(whole)
      }),
      { numRuns: 200 }
    )
  })

  it("never throws on arbitrary server bytes, in any phase", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), fc.nat(3), (chunks, prefix) => {
        const c = new Client(cfg({ auth: { authcid: "u", password: "p" }, authRequireTls: false }))
        c.send(message())
        const lead = [
          "220 mx.test\r\n",
          ehlo("PIPELINING", "AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256", "CHUNKING"),
          "334 \r\n"
        ].slice(0, prefix)
        for (const l of lead) c.recv(l)
        for (const chunk of chunks) c.recv(chunk)
        c.input({ _tag: "Eof" })
        expect(c.closed).toBeDefined()
        expect(c.results).toHaveLength(1)
      }),
      { numRuns: 300 }
    )
  })
})

describe("the body on the wire", () => {
  /** The message with every line end CRLF and a final CRLF, byte by byte (the reference for SIZE and BDAT). */
  const canonicalRef = (data: Uint8Array): Array<number> => {
    const out: Array<number> = []
    for (let i = 0; i < data.length; i++) {
      const c = data[i]!
      if (c === 0x0d) {
        out.push(0x0d, 0x0a)
        if (data[i + 1] === 0x0a) i++
      } else if (c === 0x0a) out.push(0x0d, 0x0a)
      else out.push(c)
    }
    const n = out.length
    if (n > 0 && !(out[n - 2] === 0x0d && out[n - 1] === 0x0a)) out.push(0x0d, 0x0a)
    return out
  }
  // bytes that matter to the scan (CR, LF, ".", 8-bit), plenty of plain text, at any alignment
  const body = fc.tuple(
    fc.array(fc.oneof(fc.constantFrom(0x0d, 0x0a, 0x2e, 0x80, 0xff), fc.integer({ min: 0x20, max: 0x7e }), fc.constant(0x61)), {
      maxLength: 300,
      size: "medium"
    }),
    fc.nat(3),
    fc.boolean()
  ).map(([bytes, offset, crlfOnly]) => {
    // crlfOnly: every line end CRLF (the common case, served without the encoder)
    const src = crlfOnly
      ? [...bytes.map((b) => (b === 0x0d || b === 0x0a ? 0x61 : b)).flatMap((b, i) => (i % 7 === 6 ? [b, 0x0d, 0x0a] : [b])), 0x0d, 0x0a]
      : bytes
    const buf = new Uint8Array(src.length + offset)
    buf.set(src, offset)
    return buf.subarray(offset)
  })

  it("DATA sends exactly DataEncoder's encoding; SIZE and BODY=8BITMIME match the bytes", () => {
    fc.assert(
      fc.property(body, (data) => {
        const c = ready()
        c.send(message({ data }))
        const eight = data.some((b) => b >= 0x80)
        expect(c.take()).toBe(
          `MAIL FROM:<alice@example.org> SIZE=${canonicalRef(data).length}${eight ? " BODY=8BITMIME" : ""}\r\n` +
            "RCPT TO:<bob@example.net>\r\nDATA\r\n"
        )
        c.recv("250 ok\r\n250 ok\r\n354 go\r\n")
        expect(c.take()).toBe(txt(DataEncoder.encode(data)))
      }),
      { numRuns: 500 }
    )
  })

  it("BDAT sends the canonical form, the message itself when it already is", () => {
    fc.assert(
      fc.property(body, (data) => {
        const c = ready(FULL, cfg({ tls: "none", preferChunking: true }))
        c.send(message({ data }))
        c.take()
        c.recv("250 ok\r\n250 ok\r\n")
        const canonical = canonicalRef(data)
        expect(c.take()).toBe(`BDAT ${canonical.length} LAST\r\n` + txt(new Uint8Array(canonical)))
      }),
      { numRuns: 300 }
    )
  })

  it("8-bit bytes anywhere, at any alignment, need 8BITMIME", () => {
    for (let offset = 0; offset < 4; offset++) {
      for (let at = 0; at < 12; at++) {
        const buf = new Uint8Array(offset + 12).fill(0x61)
        buf[offset + at] = 0x80
        const c = ready(["PIPELINING", "SIZE 10000"])
        c.send(message({ data: buf.subarray(offset) }))
        expect(c.results[0]?.recipients[0]?.reply.code).toBe(554)
      }
    }
  })
})
