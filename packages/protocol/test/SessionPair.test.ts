import { describe, expect, it } from "vitest"
import * as Decision from "../src/policy/Decision.ts"
import * as ClientSession from "../src/smtp/ClientSession.ts"
import * as Reply from "../src/smtp/Reply.ts"
import type * as ServerModel from "../src/smtp/ServerModel.ts"
import * as ServerSession from "../src/smtp/ServerSession.ts"
import * as Chunking from "../src/testing/Chunking.ts"
import * as SessionPair from "../src/testing/SessionPair.ts"
import * as Bytes from "../src/wire/Bytes.ts"

const enc = (s: string): Uint8Array => Bytes.fromString(s)
const fixed = (n: number): Uint8Array => new Uint8Array(n).fill(7)

const server = (over: Partial<ServerModel.Config> = {}): ServerModel.Config =>
  ServerSession.config({ hostname: "mx.test", random: fixed, ...over })
const client = (over: Partial<ClientSession.Config> = {}): ClientSession.Config =>
  ClientSession.config({ hostname: "relay.test", random: fixed, ...over })

const message = (over: Partial<ClientSession.Message> = {}): ClientSession.Message => ({
  sender: "alice@example.org",
  recipients: [{ address: "bob@example.net" }, { address: "carol@example.net" }],
  data: enc("Subject: hi\r\n\r\n.leading dot\r\nbye\r\n"),
  ...over
})

const chunkings: ReadonlyArray<[string, () => Chunking.Chunker]> = [
  ["whole", () => Chunking.whole],
  ["one byte at a time", () => Chunking.bytewise],
  ["random (seed 1)", () => Chunking.random(1)],
  ["random (seed 99)", () => Chunking.random(99, 3)]
]

/** What must not depend on how the link splits bytes. */
const observe = (p: SessionPair.Pair) => ({
  conversation: p.conversation(),
  results: p.results,
  failures: p.failures,
  delivered: p.delivered.map((m) => ({ ...m, data: Bytes.toLatin1(m.data) })),
  clientClosed: p.clientClosed,
  serverClosed: p.serverClosed,
  now: p.now
})

/**
 * Runs `body` once per chunking and checks every run observes exactly what
 * the whole-write run did; returns the whole-write pair for assertions.
 */
const scenario = (
  options: Omit<SessionPair.Options, "chunking"> | (() => Omit<SessionPair.Options, "chunking">),
  body: (p: SessionPair.Pair) => void
): SessionPair.Pair => {
  let first: SessionPair.Pair | undefined
  let expected: ReturnType<typeof observe> | undefined
  for (const [name, make] of chunkings) {
    const p = SessionPair.make({ ...(typeof options === "function" ? options() : options), chunking: make() })
    body(p)
    const seen = observe(p)
    if (expected === undefined) {
      first = p
      expected = seen
    } else {
      expect(seen, `chunking: ${name}`).toEqual(expected)
    }
  }
  return first!
}

const outcomes = (r: ClientSession.Result | undefined) => r?.recipients.map((x) => [x.address, x.outcome, Reply.toString(x.reply)])

describe("SMTP", () => {
  it("a pipelined transaction, then QUIT", () => {
    const p = scenario({ server: server(), client: client() }, (p) => {
      expect(ClientSession.isReady(p.client)).toBe(true)
      p.send(message())
      p.quit()
    })
    expect(p.conversation()).toEqual([
      { from: "server", text: "220 mx.test ESMTP Mailroom\r\n" },
      { from: "client", text: "EHLO relay.test\r\n" },
      {
        from: "server",
        text: "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-VRFY\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n" +
          "250-SMTPUTF8\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250 DSN\r\n"
      },
      {
        from: "client",
        text: "MAIL FROM:<alice@example.org> SIZE=34\r\nRCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n"
      },
      {
        from: "server",
        text: "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
      },
      { from: "client", text: "Subject: hi\r\n\r\n..leading dot\r\nbye\r\n.\r\n" },
      { from: "server", text: "250 2.6.0 Ok: queued as Q1\r\n" },
      { from: "client", text: "QUIT\r\n" },
      { from: "server", text: "221 2.0.0 Bye\r\n" }
    ])
    expect(outcomes(p.results[0])).toEqual([
      ["bob@example.net", "delivered", "250 2.6.0 Ok: queued as Q1"],
      ["carol@example.net", "delivered", "250 2.6.0 Ok: queued as Q1"]
    ])
    expect(Bytes.toLatin1(p.delivered[0]!.data)).toBe("Subject: hi\r\n\r\n.leading dot\r\nbye\r\n")
    expect(p.delivered[0]!.sender).toEqual({ local: "alice", domain: "example.org" })
    expect(p.clientClosed).toBe("quit")
    expect(p.serverClosed).toBe("quit")
  })

  it("without PIPELINING, one command per reply", () => {
    const p = scenario({ server: server({ pipelining: false }), client: client() }, (p) => {
      p.send(message())
    })
    const clientWrites = p.conversation().filter((e) => e.from === "client").map((e) => e.text)
    expect(clientWrites.slice(1)).toEqual([
      "MAIL FROM:<alice@example.org> SIZE=34\r\n",
      "RCPT TO:<bob@example.net>\r\n",
      "RCPT TO:<carol@example.net>\r\n",
      "DATA\r\n",
      "Subject: hi\r\n\r\n..leading dot\r\nbye\r\n.\r\n"
    ])
    expect(p.results[0]?.recipients.map((r) => r.outcome)).toEqual(["delivered", "delivered"])
  })

  it("a server policy refusing one recipient", () => {
    const answer: SessionPair.Answer = (q) => {
      if (q._tag === "Rcpt" && q.recipient.local === "carol") {
        return { _tag: "Decision", decision: Decision.reject(Reply.make(550, "5.1.1", "carol: no such user")) }
      }
      return SessionPair.defaultAnswer()(q)
    }
    const p = scenario({ server: server({ ask: { connect: true, ehlo: true, mail: true, rcpt: true, data: true } }), client: client(), answer }, (p) => {
      p.send(message({ recipients: [{ address: "bob@example.net" }, { address: "carol@example.net" }, { address: "dan@example.net" }] }))
    })
    expect(outcomes(p.results[0])).toEqual([
      ["bob@example.net", "delivered", "250 2.6.0 Ok: queued as Q1"],
      ["carol@example.net", "permanent", "550 5.1.1 carol: no such user"],
      ["dan@example.net", "delivered", "250 2.6.0 Ok: queued as Q1"]
    ])
    expect(p.delivered[0]?.recipients.map((r) => r.mailbox.local)).toEqual(["bob", "dan"])
    expect(p.questions.map((q) => q._tag)).toEqual(["Connect", "Ehlo", "Mail", "Rcpt", "Rcpt", "Rcpt", "Data", "Message"])
  })

  it("several messages on one connection, RSET after the refused one", () => {
    // A fresh answer per run: its queue-id counter is state.
    const answer = (): SessionPair.Answer => {
      const base = SessionPair.defaultAnswer()
      return (q) =>
        q._tag === "Mail" && q.sender?.local === "spammer"
          ? { _tag: "Decision", decision: Decision.reject(Reply.make(550, "5.7.1", "go away")) }
          : base(q)
    }
    const options = () => ({ server: server({ ask: { connect: false, ehlo: false, mail: true, rcpt: false, data: false } }), client: client(), answer: answer() })
    const p = scenario(options, (p) => {
      p.send(message({ recipients: [{ address: "one@example.net" }] }))
      p.send(message({ sender: "spammer@example.org", recipients: [{ address: "two@example.net" }] }))
      p.send(message({ sender: "", recipients: [{ address: "three@example.net" }] }))
      p.quit()
    })
    expect(p.results.map(outcomes)).toEqual([
      [["one@example.net", "delivered", "250 2.6.0 Ok: queued as Q1"]],
      [["two@example.net", "permanent", "550 5.7.1 go away"]],
      [["three@example.net", "delivered", "250 2.6.0 Ok: queued as Q2"]]
    ])
    expect(p.text("client")).toContain("RSET\r\nMAIL FROM:<> SIZE=34\r\n")
    expect(p.delivered.map((m) => m.sender)).toEqual([{ local: "alice", domain: "example.org" }, null])
    expect(p.transcript.filter((e) => e.from === "client" && Bytes.toLatin1(e.bytes).startsWith("EHLO"))).toHaveLength(1)
  })

  it("BINARYMIME with BDAT, and UTF-8 addresses with SMTPUTF8", () => {
    const data = new Uint8Array([0x00, 0x0a, 0x2e, 0x0d, 0x0a, 0xff, 0x2e, 0x0d, 0x0a])
    const p = scenario({ server: server(), client: client() }, (p) => {
      p.send(message({ body: "BINARYMIME", data, recipients: [{ address: "bob@example.net" }] }))
      p.send(message({ sender: "jörg@exämple.org", recipients: [{ address: "ü@example.net" }], data: enc("Subject: é\r\n\r\nx\r\n") }))
    })
    expect(p.results.map((r) => r.recipients[0]?.outcome)).toEqual(["delivered", "delivered"])
    expect(p.delivered[0]?.data).toEqual(data)
    expect(p.delivered[0]?.mailParams.body).toBe("BINARYMIME")
    expect(p.delivered[1]?.mailParams).toMatchObject({ smtputf8: true, body: "8BITMIME" })
    expect(p.delivered[1]?.recipients[0]?.mailbox).toEqual({ local: "ü", domain: "example.net" })
  })

  it("DSN parameters reach the server", () => {
    const p = scenario({ server: server(), client: client() }, (p) => {
      p.send(message({
        ret: "HDRS",
        envid: "env 1",
        recipients: [{ address: "bob@example.net", notify: ["FAILURE", "DELAY"], orcpt: { addrType: "rfc822", address: "bob+old@example.net" } }]
      }))
    })
    expect(p.delivered[0]?.mailParams).toMatchObject({ ret: "HDRS", envid: "env 1" })
    expect(p.delivered[0]?.recipients[0]?.params).toMatchObject({
      notify: ["FAILURE", "DELAY"],
      orcpt: { addrType: "rfc822", address: "bob+old@example.net" }
    })
  })

  it("a server without 8BITMIME: the 8-bit message is refused by the client, nothing is sent", () => {
    const p = scenario({ server: server({ eightBitMime: false }), client: client() }, (p) => {
      p.send(message({ data: new Uint8Array([0x61, 0xe9, 0x0d, 0x0a]) }))
    })
    expect(p.results[0]?.local).toBe(true)
    expect(p.results[0]?.recipients[0]?.reply.code).toBe(554)
    expect(p.text("client")).toBe("EHLO relay.test\r\n")
  })
})

describe("STARTTLS and AUTH", () => {
  it("STARTTLS, EHLO again, then AUTH PLAIN, then a message", () => {
    const p = scenario(
      {
        server: server({ startTls: true, authMechanisms: ["PLAIN", "LOGIN"], requireAuth: true }),
        client: client({ tls: "required", auth: { authcid: "tim", password: "tanstaaftanstaaf" } }),
        users: { tim: "tanstaaftanstaaf" }
      },
      (p) => {
        p.send(message({ recipients: [{ address: "bob@example.net" }] }))
      }
    )
    const writes = p.conversation().filter((e) => e.from === "client").map((e) => e.text)
    expect(writes.slice(0, 4)).toEqual([
      "EHLO relay.test\r\n",
      "STARTTLS\r\n",
      "EHLO relay.test\r\n",
      "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n"
    ])
    expect(p.results[0]).toMatchObject({ tls: SessionPair.tlsInfo, auth: "tim", dataSent: true })
    expect(p.results[0]?.recipients[0]?.outcome).toBe("delivered")
    const q = p.questions.find((x) => x._tag === "Message")
    expect(q?.facts.protocol).toBe("ESMTPSA")
    expect(q?.facts.auth).toEqual({ authcid: "tim", authzid: undefined })
  })

  it("SCRAM-SHA-256 and CRAM-MD5 against the server session", () => {
    for (const mechanism of ["SCRAM-SHA-256", "CRAM-MD5"] as const) {
      const p = scenario(
        {
          server: server({ authMechanisms: ["PLAIN", mechanism] }),
          client: client({ tls: "none", auth: { authcid: "tim", password: "pencil" } }),
          users: { tim: "pencil" }
        },
        (p) => {
          p.send(message())
        }
      )
      expect(p.clientOutputs).toContainEqual({ _tag: "Event", event: { _tag: "Authenticated", mechanism } })
      expect(p.results[0]?.auth).toBe("tim")
    }
  })

  it("a wrong password fails the session with 535, then QUIT", () => {
    const p = scenario(
      {
        server: server({ authMechanisms: ["SCRAM-SHA-256"] }),
        client: client({ tls: "none", auth: { authcid: "tim", password: "wrong" } }),
        users: { tim: "pencil" }
      },
      (p) => {
        p.send(message())
      }
    )
    expect(p.failures).toEqual([{ reason: "auth", reply: Reply.invalidCredentials }])
    expect(p.results[0]?.recipients.map((r) => r.outcome)).toEqual(["transient", "transient"])
    expect(p.clientClosed).toBe("auth")
    expect(p.serverClosed).toBe("quit")
  })

  it("a failed TLS handshake closes both sides", () => {
    const p = scenario({ server: server({ startTls: true }), client: client(), tls: { fail: "handshake failure" } }, () => {})
    expect(p.failures[0]?.reason).toBe("tls-failed")
    expect(p.clientClosed).toBe("tls-failed")
    expect(p.serverClosed).toBe("tls-failed")
  })

  it("implicit TLS: no STARTTLS, TLS facts on both sides", () => {
    const p = scenario({ server: server({ startTls: true }), client: client({ implicitTls: true, tls: "required" }) }, (p) => {
      p.send(message())
    })
    expect(p.text("client")).not.toContain("STARTTLS")
    expect(p.results[0]?.tls).toEqual(SessionPair.tlsInfo)
    expect(p.questions.find((q) => q._tag === "Message")?.facts.tls).toEqual(SessionPair.tlsInfo)
  })
})

describe("LMTP", () => {
  it("LHLO, pipelining, one final reply per accepted recipient", () => {
    const answer: SessionPair.Answer = (q) =>
      q._tag === "Message"
        ? { _tag: "Delivered", replies: [Reply.make(250, "2.0.0", "bob ok"), Reply.make(452, "4.2.2", "carol over quota")] }
        : { _tag: "Decision", decision: Decision.accept }
    const p = scenario({ server: server({ mode: "lmtp" }), client: client({ mode: "lmtp" }), answer }, (p) => {
      p.send(message({ recipients: [{ address: "bob@example.net" }, { address: "carol@example.net" }] }))
      p.send(message({ body: "BINARYMIME", data: new Uint8Array([1, 2, 3]), recipients: [{ address: "bob@example.net" }, { address: "carol@example.net" }] }))
      p.quit()
    })
    expect(p.text("client").startsWith("LHLO relay.test\r\n")).toBe(true)
    for (const r of p.results) {
      expect(outcomes(r)).toEqual([
        ["bob@example.net", "delivered", "250 2.0.0 bob ok"],
        ["carol@example.net", "transient", "452 4.2.2 carol over quota"]
      ])
    }
    expect(p.text("client")).toContain("BDAT 3 LAST\r\n\u0001\u0002\u0003QUIT\r\n")
    expect(p.clientClosed).toBe("quit")
  })
})

describe("time", () => {
  it("the server's command timeout fires under the virtual clock; the idle client sees a stale connection", () => {
    const p = scenario({ server: server(), client: client() }, (p) => {
      p.send(message())
      p.advance(299_999)
      expect(p.serverClosed).toBeUndefined()
      p.advance(1)
    })
    expect(p.now).toBe(300_000)
    expect(p.serverClosed).toBe("timeout")
    const last = p.transcript.at(-1)
    expect(last?.from).toBe("server")
    expect(Bytes.toLatin1(last!.bytes)).toBe("421 4.4.2 mx.test Error: timeout exceeded\r\n")
    expect(p.failures).toEqual([{ reason: "stale", reply: Reply.timeout("mx.test") }])
    expect(p.clientClosed).toBe("stale")
  })

  it("the client's final-reply timeout fires while the server's queue does not answer", () => {
    const p = scenario({ server: server(), client: client(), answer: (q) => (q._tag === "Message" ? undefined : { _tag: "Decision", decision: Decision.accept }) }, (p) => {
      p.send(message())
      expect(p.held.map((q) => q._tag)).toEqual(["Message"])
      expect(ClientSession.deadline(p.client)).toEqual({ name: "data", at: 600_000 })
      expect(ServerSession.deadline(p.server)).toBeUndefined()
      p.advance(600_000)
    })
    expect(p.failures).toEqual([{ reason: "timeout", reply: Reply.make(421, "4.4.2", "Connection timed out") }])
    expect(p.results[0]).toMatchObject({ dataSent: true })
    expect(p.results[0]?.recipients.map((r) => r.outcome)).toEqual(["transient", "transient"])
    expect(p.serverClosed).toBe("eof")
  })

  it("a held answer can be given later", () => {
    const p = SessionPair.make({ server: server({ ask: { connect: false, ehlo: false, mail: false, rcpt: true, data: false } }), client: client(), answer: (q) => (q._tag === "Rcpt" ? undefined : SessionPair.defaultAnswer()(q)) })
    p.input("client", { _tag: "Send", message: message({ recipients: [{ address: "bob@example.net" }] }) })
    expect(p.held).toHaveLength(1)
    p.answer({ _tag: "Decision", decision: Decision.reject(Reply.make(450, "4.2.0", "later")) })
    expect(outcomes(p.results[0])).toEqual([["bob@example.net", "transient", "450 4.2.0 later"]])
    expect(p.text("client").endsWith("RSET\r\n")).toBe(true)
    expect(ClientSession.isReady(p.client)).toBe(true)
  })
})

describe("server behaviour seen from the client", () => {
  it("recipients beyond the server's limit are transient 452 4.5.3", () => {
    const p = scenario({ server: server({ maxRecipients: 2 }), client: client() }, (p) => {
      p.send(message({ recipients: [{ address: "a@x.test" }, { address: "b@x.test" }, { address: "c@x.test" }] }))
    })
    expect(p.results[0]?.recipients.map((r) => [r.outcome, r.reply.code])).toEqual([["delivered", 250], ["delivered", 250], ["transient", 452]])
    expect(p.delivered[0]?.recipients).toHaveLength(2)
  })

  it("a server shutting down finishes the message in flight, then the client sees 421 and closes", () => {
    const p = scenario(
      { server: server(), client: client(), answer: (q) => (q._tag === "Message" ? undefined : { _tag: "Decision", decision: Decision.accept }) },
      (p) => {
        p.send(message({ recipients: [{ address: "bob@example.net" }] }))
        p.input("server", { _tag: "Shutdown" })
        expect(p.serverClosed).toBeUndefined()
        p.answer({ _tag: "Delivered", replies: [Reply.queuedAs("Z9")] })
      }
    )
    expect(outcomes(p.results[0])).toEqual([["bob@example.net", "delivered", "250 2.6.0 Ok: queued as Z9"]])
    expect(p.failures).toEqual([{ reason: "stale", reply: Reply.serviceNotAvailable("mx.test") }])
    expect(p.serverClosed).toBe("shutdown")
    expect(p.clientClosed).toBe("stale")
  })

  it("a queue failure answered with 421 makes the recipients transient and ends the session", () => {
    const p = scenario(
      { server: server(), client: client(), answer: (q) => (q._tag === "Message" ? { _tag: "Delivered", replies: [Reply.unhandledError] } : { _tag: "Decision", decision: Decision.accept }) },
      (p) => {
        p.send(message())
      }
    )
    expect(outcomes(p.results[0])).toEqual([
      ["bob@example.net", "transient", "421 4.3.0 Unhandled system error"],
      ["carol@example.net", "transient", "421 4.3.0 Unhandled system error"]
    ])
    expect(p.results[0]?.dataSent).toBe(true)
    expect(p.failures[0]?.reason).toBe("server-closed")
  })

  it("a connection refused with a 554 banner: the client QUITs, the server has already closed", () => {
    const p = scenario(
      {
        server: server({ ask: { connect: true, ehlo: false, mail: false, rcpt: false, data: false } }),
        client: client(),
        answer: () => ({ _tag: "Decision", decision: Decision.reject(Reply.make(554, "5.7.1", "You are blocked")) })
      },
      (p) => {
        p.send(message())
      }
    )
    expect(p.failures).toEqual([{ reason: "rejected", reply: Reply.make(554, "5.7.1", "You are blocked") }])
    expect(p.results[0]?.local).toBe(true)
    expect(p.text("client")).toBe("QUIT\r\n")
    expect(p.serverClosed).toBe("rejected")
    expect(p.clientClosed).toBe("rejected")
  })

  it("a server that requires TLS refuses MAIL from a client configured without it (permanent 530)", () => {
    const p = scenario({ server: server({ startTls: true, requireTls: true }), client: client({ tls: "none" }) }, (p) => {
      p.send(message({ recipients: [{ address: "bob@example.net" }] }))
    })
    expect(outcomes(p.results[0])).toEqual([["bob@example.net", "permanent", "530 5.7.0 Must issue a STARTTLS command first"]])
    expect(p.text("client").endsWith("RSET\r\n")).toBe(true)
    expect(ClientSession.isReady(p.client)).toBe(true)
  })

  it("LMTP over STARTTLS with a recipient refused by policy: one final reply per accepted recipient", () => {
    const answer: SessionPair.Answer = (q) =>
      q._tag === "Rcpt" && q.recipient.local === "carol"
        ? { _tag: "Decision", decision: Decision.reject(Reply.make(550, "5.1.1", "no carol")) }
        : q._tag === "Message"
        ? { _tag: "Delivered", replies: [Reply.make(250, "2.0.0", "bob"), Reply.make(250, "2.0.0", "dan")] }
        : { _tag: "Decision", decision: Decision.accept }
    const p = scenario(
      {
        server: server({ mode: "lmtp", startTls: true, ask: { connect: false, ehlo: false, mail: false, rcpt: true, data: false } }),
        client: client({ mode: "lmtp", tls: "required" }),
        answer
      },
      (p) => {
        p.send(message({ recipients: [{ address: "bob@example.net" }, { address: "carol@example.net" }, { address: "dan@example.net" }] }))
      }
    )
    expect(outcomes(p.results[0])).toEqual([
      ["bob@example.net", "delivered", "250 2.0.0 bob"],
      ["carol@example.net", "permanent", "550 5.1.1 no carol"],
      ["dan@example.net", "delivered", "250 2.0.0 dan"]
    ])
    expect(p.results[0]?.tls).toEqual(SessionPair.tlsInfo)
    expect(p.questions.find((q) => q._tag === "Message")?.facts.protocol).toBe("LMTPS")
  })
})

describe("Chunking", () => {
  it("splitAt, bytewise, every and seeded random cover the input exactly", () => {
    const bytes = enc("0123456789")
    expect(Chunking.splitAt(bytes, [7, 3, 3, 0, 10, 42]).map((c) => Bytes.toLatin1(c))).toEqual(["012", "3456", "789"])
    expect(Chunking.bytewise(bytes)).toHaveLength(10)
    expect(Chunking.every(4)(bytes).map((c) => Bytes.toLatin1(c))).toEqual(["0123", "4567", "89"])
    const a = Chunking.random(5)(bytes).map((c) => Bytes.toLatin1(c))
    expect(Chunking.random(5)(bytes).map((c) => Bytes.toLatin1(c))).toEqual(a)
    expect(a.join("")).toBe("0123456789")
    expect(a.every((c) => c.length > 0)).toBe(true)
    expect(Chunking.prng(1)()).toBe(Chunking.prng(1)())
  })
})
