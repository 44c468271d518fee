import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Decision from "../src/policy/Decision.ts"
import * as Reply from "../src/smtp/Reply.ts"
import * as ServerSession from "../src/smtp/ServerSession.ts"
import { type Answer, cfg, defaultAnswer, enc, Harness } from "./support/serverHarness.ts"

const tls = { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256, servername: undefined, authorized: undefined, authorizationError: undefined }

const ready = (config = cfg(), answer: Answer = defaultAnswer) => {
  const h = new Harness(config, answer).start()
  h.take()
  return h
}
const greeted = (config = cfg(), answer: Answer = defaultAnswer) => {
  const h = ready(config, answer)
  h.send("EHLO client.test\r\n")
  h.take()
  return h
}

describe("greeting and EHLO", () => {
  it("sends the banner and offers the extensions", () => {
    const h = new Harness().start()
    expect(h.take()).toBe("220 mx.test ESMTP Mailroom\r\n")
    h.send("EHLO client.test\r\n")
    expect(h.take()).toBe(
      [
        "250-mx.test",
        "250-PIPELINING",
        "250-SIZE 26214400",
        "250-VRFY",
        "250-8BITMIME",
        "250-ENHANCEDSTATUSCODES",
        "250-SMTPUTF8",
        "250-CHUNKING",
        "250-BINARYMIME",
        "250 DSN",
        ""
      ].join("\r\n")
    )
  })

  it("offers STARTTLS before TLS, AUTH only where it may be used, REQUIRETLS after TLS", () => {
    const h = ready(cfg({ startTls: true, authMechanisms: ["PLAIN", "LOGIN", "CRAM-MD5"] }))
    h.send("EHLO c\r\n")
    const before = h.take()
    expect(before).toContain("250-STARTTLS\r\n")
    expect(before).toContain("AUTH CRAM-MD5\r\n") // plaintext mechanisms withheld before TLS
    expect(before).not.toContain("PLAIN")
    h.send("STARTTLS\r\n")
    expect(h.take()).toBe("220 2.0.0 Ready to start TLS\r\n")
    h.input({ _tag: "TlsEstablished", tls })
    h.send("EHLO c\r\n")
    const after = h.take()
    expect(after).not.toContain("STARTTLS")
    expect(after).toContain("AUTH PLAIN LOGIN CRAM-MD5\r\n")
    expect(after).toContain("REQUIRETLS")
  })

  it("answers HELO with a plain 250 and refuses ESMTP parameters after it", () => {
    const h = ready()
    h.send("HELO client.test\r\n")
    expect(h.take()).toBe("250 mx.test\r\n")
    h.send("MAIL FROM:<a@b.test> SIZE=10\r\n")
    expect(h.take()).toMatch(/^555 5\.5\.4 /)
    h.send("MAIL FROM:<a@b.test>\r\n")
    expect(h.take()).toBe("250 2.1.0 Sender ok\r\n")
  })

  it("EHLO resets an open transaction (RFC 5321 §4.1.4)", () => {
    const h = greeted()
    h.send("MAIL FROM:<a@b.test>\r\n", "EHLO again\r\n", "RCPT TO:<c@d.test>\r\n")
    expect(h.codes()).toEqual(["250", "250", "503"])
  })

  it("allows NOOP, RSET, HELP, VRFY and QUIT before EHLO", () => {
    const h = ready()
    h.send("NOOP\r\nRSET\r\nHELP\r\nVRFY x\r\nQUIT\r\n")
    expect(h.take()).toBe(
      "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n214 2.0.0 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)\r\n" +
        "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n221 2.0.0 Bye\r\n"
    )
    expect(h.closed).toBe("quit")
  })

  it("refuses a client that talks before the banner (554 5.5.0) when it must wait for a policy", () => {
    const answer: Answer = (q) => (q._tag === "Connect" ? { _tag: "Decision", decision: Decision.accept } : defaultAnswer(q))
    const h = new Harness(cfg({ ask: { connect: true, ehlo: false, mail: false, rcpt: false, data: false } }), () => ({ _tag: "Eof" }))
    h.start()
    expect(h.questions[0]?._tag).toBe("Connect")
    // the harness answered Eof: closed. Now the real scenario, answering by hand:
    const h2 = new Harness(cfg({ ask: { connect: true, ehlo: false, mail: false, rcpt: false, data: false } }), answer)
    h2.state = ServerSession.initial(h2.state.config, { remote: h2.state.remote, local: h2.state.local })
    const s1 = ServerSession.start(h2.state, 0)
    const s2 = ServerSession.step(s1.state, { _tag: "Received", bytes: enc("EHLO early\r\n") }, 0)
    const s3 = ServerSession.step(s2.state, { _tag: "Decision", decision: Decision.accept }, 0)
    const text = s3.outputs.filter((o) => o._tag === "Send").map((o) => new TextDecoder().decode(o.bytes)).join("")
    expect(text).toBe("220 mx.test ESMTP Mailroom\r\n554 5.5.0 Error: SMTP protocol synchronization\r\n")
    expect(s3.outputs.at(-1)).toEqual({ _tag: "Close", reason: "early-talker" })
  })

  it("a rejecting connect policy sends its reply and closes", () => {
    const h = new Harness(
      cfg({ ask: { connect: true, ehlo: false, mail: false, rcpt: false, data: false } }),
      () => ({ _tag: "Decision", decision: Decision.reject(Reply.make(554, "5.7.1", "Listed at bl.test")) })
    ).start()
    expect(h.take()).toBe("554 5.7.1 Listed at bl.test\r\n")
    expect(h.closed).toBe("rejected")
  })

  it("uses LHLO in LMTP mode and refuses EHLO there", () => {
    const h = ready(cfg({ mode: "lmtp" }))
    h.send("EHLO c\r\n")
    expect(h.take()).toBe("500 5.5.1 Error: use LHLO in LMTP\r\n")
    h.send("LHLO c\r\n")
    expect(h.take()).toMatch(/^250-mx\.test\r\n/)
  })
})

describe("mail transaction", () => {
  it("accepts a message and hands it over once, with the queue's reply", () => {
    const h = greeted()
    h.send("MAIL FROM:<alice@a.test>\r\n", "RCPT TO:<bob@b.test>\r\n", "DATA\r\n")
    expect(h.take()).toBe("250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
    h.send("Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n")
    expect(h.take()).toBe("250 2.6.0 Ok: queued as Q1\r\n")
    const q = h.questions.find((q) => q._tag === "Message")
    expect(q?._tag).toBe("Message")
    if (q?._tag !== "Message") return
    expect(new TextDecoder().decode(q.message.data)).toBe("Subject: hi\r\n\r\n.dot\r\nbody\r\n")
    expect(q.message.sender).toEqual({ local: "alice", domain: "a.test" })
    expect(q.message.recipients.map((r) => r.mailbox)).toEqual([{ local: "bob", domain: "b.test" }])
    expect(q.facts.protocol).toBe("ESMTP")
    // the transaction is over: a second one works
    h.send("MAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nx\r\n.\r\n")
    expect(h.codes()).toEqual(["250", "250", "354", "250"])
  })

  it("waits for the queue before replying and passes a queue failure through", () => {
    const answer: Answer = (q) => (q._tag === "Message" ? { _tag: "Delivered", replies: [Reply.queueError] } : defaultAnswer(q))
    const h = greeted(cfg(), answer)
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nDATA\r\nx\r\n.\r\n")
    expect(h.codes()).toEqual(["250", "250", "354", "451"])
  })

  it("answers sequence errors with 503 5.5.1 and leaves the state unchanged", () => {
    const h = ready()
    h.send("MAIL FROM:<a@a.test>\r\n")
    expect(h.take()).toBe("503 5.5.1 Error: send HELO/EHLO first\r\n")
    h.send("EHLO c\r\n")
    h.take()
    h.send("RCPT TO:<b@b.test>\r\n")
    expect(h.take()).toBe("503 5.5.1 Error: need MAIL command\r\n")
    h.send("DATA\r\n")
    expect(h.take()).toBe("503 5.5.1 Error: need MAIL command\r\n")
    h.send("MAIL FROM:<a@a.test>\r\n", "MAIL FROM:<a@a.test>\r\n")
    expect(h.take()).toBe("250 2.1.0 Sender ok\r\n503 5.5.1 Error: nested MAIL command\r\n")
    h.send("DATA\r\n")
    expect(h.take()).toBe("554 5.5.1 Error: no valid recipients\r\n")
  })

  it("answers syntax errors with exact codes", () => {
    const h = greeted()
    h.send("FOO bar\r\n")
    expect(h.take()).toBe("500 5.5.2 Error: command not recognized\r\n")
    h.send("MAIL FROM:a@b\r\n")
    expect(h.take()).toMatch(/^501 5\.5\.4 /)
    h.send("MAIL FROM:<a@b.test> FOO=bar\r\n")
    expect(h.take()).toBe("555 5.5.4 Unsupported option: FOO\r\n")
    h.send("MAIL FROM:<a\u001b[31m@b.test>\r\n")
    expect(h.take()).toMatch(/^501 5\.1\.7 /)
    h.send("DATA extra\r\n")
    expect(h.take()).toMatch(/^501 5\.5\.4 /)
  })

  it("refuses a message declared too big at MAIL (552 5.3.4)", () => {
    const h = greeted(cfg({ maxMessageSize: 100 }))
    h.send("MAIL FROM:<a@a.test> SIZE=101\r\n")
    expect(h.take()).toBe("552 5.3.4 Error: message size exceeds fixed limit\r\n")
  })

  it("enforces the size cap while bytes arrive, reads to the end, then answers 552", () => {
    const h = greeted(cfg({ maxMessageSize: 100 }))
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nDATA\r\n")
    h.take()
    for (let i = 0; i < 50; i++) h.send("0123456789".repeat(10) + "\r\n")
    expect(h.take()).toBe("")
    expect(h.state.phase._tag).toBe("Data")
    // memory stays bounded: nothing is kept once over the cap
    expect(h.state.phase._tag === "Data" && h.state.phase.chunks.reduce((n, c) => n + c.length, 0)).toBeLessThanOrEqual(200)
    h.send(".\r\nNOOP\r\n")
    expect(h.take()).toBe("552 5.3.4 Error: message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n")
    expect(h.questions.some((q) => q._tag === "Message")).toBe(false)
  })

  it("answers 452 4.5.3 beyond the recipient limit and keeps the accepted ones", () => {
    const h = greeted(cfg({ maxRecipients: 2 }))
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<1@b.test>\r\nRCPT TO:<2@b.test>\r\nRCPT TO:<3@b.test>\r\nDATA\r\nx\r\n.\r\n")
    expect(h.codes()).toEqual(["250", "250", "250", "452", "354", "250"])
    const q = h.questions.find((q) => q._tag === "Message")
    expect(q?._tag === "Message" && q.message.recipients.length).toBe(2)
  })

  it("requires SMTPUTF8 for non-ASCII addresses (553 5.6.7)", () => {
    const h = greeted()
    h.send("MAIL FROM:<jöran@a.test>\r\n")
    expect(h.take()).toMatch(/^553 5\.6\.7 /)
    h.send("MAIL FROM:<jöran@a.test> SMTPUTF8\r\nRCPT TO:<用户@例子.test>\r\n")
    expect(h.codes()).toEqual(["250", "250"])
  })

  it("lets policies refuse a recipient and go on with the others", () => {
    const answer: Answer = (q) =>
      q._tag === "Rcpt" && q.recipient.local === "nobody"
        ? { _tag: "Decision", decision: Decision.reject(Reply.make(550, "5.1.1", "No such user")) }
        : defaultAnswer(q)
    const h = greeted(cfg({ ask: { connect: false, ehlo: false, mail: true, rcpt: true, data: true } }), answer)
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<nobody@b.test>\r\nRCPT TO:<bob@b.test>\r\nDATA\r\nx\r\n.\r\n")
    expect(h.take()).toBe(
      "250 2.1.0 Sender ok\r\n550 5.1.1 No such user\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.6.0 Ok: queued as Q1\r\n"
    )
  })

  it("refuses MAIL without AUTH in the submission profile (530 5.7.0)", () => {
    const h = greeted(cfg({ requireAuth: true, authMechanisms: ["PLAIN"], allowPlaintextAuthWithoutTls: true }))
    h.send("MAIL FROM:<a@a.test>\r\n")
    expect(h.take()).toBe("530 5.7.0 Authentication required\r\n")
  })

  it("refuses MAIL before STARTTLS when TLS is required", () => {
    const h = greeted(cfg({ requireTls: true, startTls: true }))
    h.send("MAIL FROM:<a@a.test>\r\n")
    expect(h.take()).toBe("530 5.7.0 Must issue a STARTTLS command first\r\n")
  })

  it("refuses a message with too many Received headers (loop)", () => {
    const h = greeted(cfg({ maxHops: 3 }))
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nDATA\r\n")
    h.take()
    h.send("Received: 1\r\nReceived: 2\r\nreceived: 3\r\nRECEIVED: 4\r\n\r\nbody\r\n.\r\n")
    expect(h.take()).toBe("554 5.4.6 Too many hops\r\n")
  })
})

describe("reply bytes", () => {
  it("sends the exact reply of every message, constant and varying, past the bound of the encoding cache", () => {
    const h = greeted(cfg(), (q) =>
      q._tag === "Message" ? { _tag: "Delivered", replies: [Reply.queuedAs(`Q${h.questions.length}`)] } : defaultAnswer(q))
    for (let i = 0; i < 600; i++) {
      h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nDATA\r\n")
      expect(h.take()).toBe("250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
      h.send("x\r\n.\r\n")
      expect(h.take()).toBe(`250 2.6.0 Ok: queued as Q${h.questions.length}\r\n`)
    }
  })
})

describe("SMTP smuggling and bare newlines", () => {
  const variants = ["\n.\n", "\r.\r", "\r.\n", "\n.\r", "\r.\r\n", "\r\n.\r", "\r\n.\n", "\r\n\x00.\r\n", "\n.\r\n"]
  for (const policy of ["normalize", "reject"] as const) {
    for (const v of variants) {
      it(`${JSON.stringify(v)} neither ends the data nor starts a second transaction (${policy})`, () => {
        const h = greeted(cfg({ bareNewline: policy }))
        h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nDATA\r\n")
        h.take()
        h.send(`Subject: x\r\n\r\nhello${v}MAIL FROM:<ceo@victim.test>\r\nRCPT TO:<x@us.test>\r\nDATA\r\nevil\r\n`)
        expect(h.take()).toBe("") // still inside DATA: no command was executed
        h.send(".\r\n")
        const messages = h.questions.filter((q) => q._tag === "Message")
        if (policy === "reject" && v !== "\r\n\x00.\r\n") {
          expect(h.take()).toBe("550 5.5.2 Error: bare <CR> or <LF> received in message data\r\n")
          expect(messages.length).toBe(0)
        } else {
          expect(h.take()).toBe("250 2.6.0 Ok: queued as Q1\r\n")
          expect(messages.length).toBe(1)
          const data = messages[0]?._tag === "Message" ? new TextDecoder().decode(messages[0].message.data) : ""
          expect(data).toContain("MAIL FROM:<ceo@victim.test>") // content, not a command
          expect(data.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/) // normalised: no bare CR/LF left
        }
      })
    }
  }

  it("refuses a command line that contains a bare LF and does not execute it", () => {
    const h = greeted()
    h.send("NOOP\nQUIT\r\n")
    expect(h.take()).toBe("500 5.5.2 Error: bare <CR> or <LF> received\r\n")
    expect(h.closed).toBeUndefined()
  })

  it("answers an over-long command line once with 500 5.5.6, without buffering it", () => {
    const h = greeted()
    h.send("NOOP " + "x".repeat(5000))
    expect(h.state.buffer.length).toBeLessThan(1100)
    h.send("x".repeat(5000))
    expect(h.state.buffer.length).toBeLessThan(1100)
    h.send("\r\nNOOP\r\n")
    expect(h.take()).toBe("500 5.5.6 Error: line too long\r\n250 2.0.0 Ok\r\n")
  })

  it("closes with 421 after too many bad commands", () => {
    const h = greeted(cfg({ maxBadCommands: 3 }))
    h.send("X\r\nX\r\nX\r\nX\r\nNOOP\r\n")
    expect(h.take()).toBe("500 5.5.2 Error: command not recognized\r\n".repeat(3) + "421 4.7.0 mx.test Error: too many errors\r\n")
    expect(h.closed).toBe("errors")
  })
})

describe("STARTTLS", () => {
  it("discards everything pipelined after STARTTLS and resets the session", () => {
    const h = greeted(cfg({ startTls: true }))
    h.send("STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<a@b.test>\r\n")
    expect(h.take()).toBe("220 2.0.0 Ready to start TLS\r\n")
    expect(h.startTls).toBe(1)
    h.send("DATA\r\n") // plaintext during the handshake: dropped
    h.input({ _tag: "TlsEstablished", tls })
    expect(h.state.hello).toBeUndefined()
    expect(h.state.transaction).toBeUndefined()
    h.send("RCPT TO:<a@b.test>\r\n")
    expect(h.take()).toBe("503 5.5.1 Error: need MAIL command\r\n")
    h.send("MAIL FROM:<a@a.test>\r\n")
    expect(h.take()).toBe("503 5.5.1 Error: send HELO/EHLO first\r\n")
    h.send("EHLO c\r\nMAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nDATA\r\nx\r\n.\r\n")
    expect(h.codes()).toEqual(["250", "250", "250", "354", "250"])
    const q = h.questions.find((q) => q._tag === "Message")
    expect(q?._tag === "Message" && q.facts.protocol).toBe("ESMTPS")
  })

  it("refuses STARTTLS when not offered, with arguments, twice, or inside a transaction", () => {
    expect(greeted().send("STARTTLS\r\n").take()).toBe("502 5.5.1 Error: command not implemented\r\n")
    const h = greeted(cfg({ startTls: true }))
    h.send("STARTTLS now\r\n")
    expect(h.take()).toMatch(/^501 5\.5\.4 /)
    h.send("MAIL FROM:<a@a.test>\r\nSTARTTLS\r\n")
    expect(h.take()).toBe("250 2.1.0 Sender ok\r\n503 5.5.1 Error: MAIL transaction in progress\r\n")
    const t = new Harness(cfg({ startTls: true }), defaultAnswer, tls).start()
    t.take()
    t.send("EHLO c\r\nSTARTTLS\r\n")
    expect(t.take()).toMatch(/554 5\.5\.1 Error: TLS already active\r\n$/)
  })

  it("closes when the handshake fails", () => {
    const h = greeted(cfg({ startTls: true }))
    h.send("STARTTLS\r\n")
    h.input({ _tag: "TlsFailed", reason: "bad record mac" })
    expect(h.closed).toBe("tls-failed")
  })
})

describe("AUTH", () => {
  const b64 = (s: string) => btoa(s)
  const authCfg = (over: Partial<ServerSession.Config> = {}) =>
    cfg({ authMechanisms: ["PLAIN", "LOGIN", "CRAM-MD5"], allowPlaintextAuthWithoutTls: true, ...over })

  it("PLAIN with an initial response", () => {
    const h = greeted(authCfg())
    h.send(`AUTH PLAIN ${b64("\0user\0secret")}\r\n`)
    expect(h.take()).toBe("235 2.7.0 Authentication successful\r\n")
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nDATA\r\nx\r\n.\r\n")
    expect(h.codes()).toEqual(["250", "250", "354", "250"])
    const q = h.questions.find((q) => q._tag === "Message")
    expect(q?._tag === "Message" && q.facts.protocol).toBe("ESMTPA")
    expect(q?._tag === "Message" && q.facts.auth?.authcid).toBe("user")
  })

  it("PLAIN with a continuation, LOGIN, wrong password, cancel", () => {
    const h = greeted(authCfg())
    h.send("AUTH PLAIN\r\n")
    expect(h.take()).toBe("334 \r\n")
    h.send(`${b64("\0user\0wrong")}\r\n`)
    expect(h.take()).toBe("535 5.7.8 Authentication credentials invalid\r\n")
    h.send("AUTH LOGIN\r\n")
    expect(h.take()).toBe(`334 ${b64("Username:")}\r\n`)
    h.send("*\r\n")
    expect(h.take()).toBe("501 5.7.0 Authentication cancelled\r\n")
    h.send(`AUTH LOGIN ${b64("user")}\r\n`)
    expect(h.take()).toBe(`334 ${b64("Password:")}\r\n`)
    h.send(`${b64("secret")}\r\n`)
    expect(h.take()).toBe("235 2.7.0 Authentication successful\r\n")
    h.send(`AUTH PLAIN ${b64("\0user\0secret")}\r\n`)
    expect(h.take()).toBe("503 5.5.1 Error: already authenticated\r\n")
  })

  it("refuses AUTH inside a transaction, before EHLO, an unknown mechanism, bad base64", () => {
    const h = ready(authCfg())
    h.send("AUTH PLAIN\r\n")
    expect(h.take()).toBe("503 5.5.1 Error: send EHLO first\r\n")
    h.send("EHLO c\r\nAUTH FOO\r\n")
    expect(h.take()).toMatch(/504 5\.5\.4 Unrecognized authentication type\r\n$/)
    h.send("AUTH PLAIN =AAA\r\n")
    expect(h.take()).toMatch(/^501 5\.5\.2 /)
    h.send("MAIL FROM:<a@a.test>\r\nAUTH PLAIN\r\n")
    expect(h.take()).toBe("250 2.1.0 Sender ok\r\n503 5.5.1 Error: MAIL transaction in progress\r\n")
  })

  it("withholds plaintext mechanisms without TLS (538 5.7.11)", () => {
    const h = greeted(authCfg({ allowPlaintextAuthWithoutTls: false }))
    h.send(`AUTH PLAIN ${b64("\0user\0secret")}\r\n`)
    expect(h.take()).toBe("538 5.7.11 Error: encryption required for requested authentication mechanism\r\n")
  })

  it("closes after too many failed authentications", () => {
    const h = greeted(authCfg({ maxAuthFailures: 2 }))
    h.send(`AUTH PLAIN ${b64("\0user\0x")}\r\nAUTH PLAIN ${b64("\0user\0y")}\r\nNOOP\r\n`)
    expect(h.take()).toBe(
      "535 5.7.8 Authentication credentials invalid\r\n535 5.7.8 Authentication credentials invalid\r\n421 4.7.0 mx.test Error: too many failed authentications\r\n"
    )
    expect(h.closed).toBe("auth-failures")
  })

  it("refuses identities with control characters before asking for credentials", () => {
    const h = greeted(authCfg())
    h.send(`AUTH PLAIN ${b64("attacker\r\nReceived: evil\0user\0secret")}\r\n`)
    expect(h.take()).toMatch(/^501 5\.5\.2 /)
    expect(h.questions.some((q) => q._tag === "Auth")).toBe(false)
  })
})

describe("LMTP", () => {
  it("answers DATA once per accepted recipient, in order", () => {
    const answer: Answer = (q) =>
      q._tag === "Message"
        ? { _tag: "Delivered", replies: [Reply.make(250, "2.1.5", "one ok"), Reply.make(452, "4.2.2", "two over quota")] }
        : defaultAnswer(q)
    const h = ready(cfg({ mode: "lmtp" }), answer)
    h.send("LHLO c\r\nMAIL FROM:<a@a.test>\r\nRCPT TO:<one@b.test>\r\nRCPT TO:<two@b.test>\r\nDATA\r\nx\r\n.\r\n")
    expect(h.take()).toMatch(/250 2\.1\.5 one ok\r\n452 4\.2\.2 two over quota\r\n$/)
    const q = h.questions.find((q) => q._tag === "Message")
    expect(q?._tag === "Message" && q.facts.protocol).toBe("LMTP")
  })
})

describe("CHUNKING (BDAT)", () => {
  it("accepts chunks and hands over the message at LAST", () => {
    const h = greeted()
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nBDAT 12\r\nSubject: x\r\n", "BDAT 6 LAST\r\n\r\nbody")
    expect(h.take()).toBe(
      "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.0.0 12 octets received\r\n250 2.6.0 Ok: queued as Q1\r\n"
    )
    const q = h.questions.find((q) => q._tag === "Message")
    expect(q?._tag === "Message" && new TextDecoder().decode(q.message.data)).toBe("Subject: x\r\n\r\nbody")
  })

  it("reads and drops the bytes of a refused chunk so they are never taken as commands", () => {
    const h = greeted()
    h.send("BDAT 6 LAST\r\nQUIT\r\n")
    expect(h.take()).toBe("503 5.5.1 Error: need MAIL command\r\n")
    expect(h.closed).toBeUndefined()
  })

  it("refuses DATA after BDAT and a chunk over the size cap", () => {
    const h = greeted(cfg({ maxMessageSize: 10 }))
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nBDAT 4\r\nabcdDATA\r\n")
    expect(h.codes()).toEqual(["250", "250", "250", "503"])
    h.send("BDAT 20 LAST\r\n" + "y".repeat(20) + "NOOP\r\n")
    expect(h.take()).toBe("552 5.3.4 Error: message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n")
    expect(h.state.transaction).toBeUndefined()
  })

  it("BDAT 0 LAST ends a chunked message", () => {
    const h = greeted()
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\n")
    expect(h.codes()).toEqual(["250", "250", "250", "250"])
  })
})

describe("time and shutdown", () => {
  it("publishes a command deadline and answers its expiry with 421 4.4.2", () => {
    const h = greeted(cfg({ commandTimeoutMs: 1000 }))
    expect(ServerSession.deadline(h.state)).toEqual({ name: "command", at: 1000 })
    h.input({ _tag: "Timeout" })
    expect(h.take()).toBe("421 4.4.2 mx.test Error: timeout exceeded\r\n")
    expect(h.closed).toBe("timeout")
  })

  it("uses the data deadline inside DATA and moves it as bytes arrive", () => {
    const h = greeted(cfg({ dataTimeoutMs: 500 }))
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nDATA\r\n")
    h.now = 100
    h.send("line\r\n")
    expect(ServerSession.deadline(h.state)).toEqual({ name: "data", at: 600 })
  })

  it("finishes a message in flight before closing on shutdown", () => {
    const h = greeted()
    h.send("MAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\nDATA\r\npart")
    h.take()
    h.input({ _tag: "Shutdown" })
    expect(h.closed).toBeUndefined()
    h.send("\r\n.\r\n")
    expect(h.take()).toBe("250 2.6.0 Ok: queued as Q1\r\n421 4.3.0 mx.test Service not available, closing transmission channel\r\n")
    expect(h.closed).toBe("shutdown")
  })

  it("closes an idle session on shutdown with 421", () => {
    const h = greeted()
    h.input({ _tag: "Shutdown" })
    expect(h.take()).toBe("421 4.3.0 mx.test Service not available, closing transmission channel\r\n")
  })
})

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

const script = [
  "EHLO client.test\r\n",
  "MAIL FROM:<alice@a.test> SIZE=40\r\n",
  "RCPT TO:<bob@b.test>\r\n",
  "RCPT TO:<carol@c.test> NOTIFY=SUCCESS,FAILURE\r\n",
  "DATA\r\n",
  "Subject: t\r\n\r\n..leading dot\r\nline\r\n.\r\n",
  "NOOP\r\n",
  "MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\n",
  "VRFY x\r\nBOGUS\r\nRSET\r\nQUIT\r\n"
].join("")

const runSplit = (bytes: Uint8Array, cuts: ReadonlyArray<number>) => {
  const h = ready()
  let last = 0
  for (const c of [...cuts].sort((a, b) => a - b)) {
    h.send(bytes.subarray(last, c))
    last = c
  }
  h.send(bytes.subarray(last))
  return {
    sent: h.take(),
    closed: h.closed,
    messages: h.questions.filter((q) => q._tag === "Message").map((q) => (q._tag === "Message" ? Array.from(q.message.data) : []))
  }
}

describe("properties", () => {
  const bytes = enc(script)
  const whole = runSplit(bytes, [])

  it("the reference script gives the expected replies", () => {
    expect(whole.sent.split("\r\n").filter((l) => /^\d{3} /.test(l)).map((l) => l.slice(0, 3))).toEqual([
      "250", "250", "250", "250", "354", "250", "250", "250", "250", "250", "250", "252", "500", "250", "221"
    ])
    expect(whole.closed).toBe("quit")
    expect(whole.messages.length).toBe(2)
  })

  it("segmentation invariance: one byte at a time", () => {
    expect(runSplit(bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1))).toEqual(whole)
  })

  it("segmentation invariance: arbitrary split points", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: bytes.length }), { maxLength: 40 }), (cuts) => {
        expect(runSplit(bytes, cuts)).toEqual(whole)
      }),
      { numRuns: 300 }
    )
  })

  it("any bytes give replies or a close, never an exception", () => {
    const interesting = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.constantFrom(...["EHLO x\r\n", "MAIL FROM:<a@b>\r\n", "RCPT TO:<c@d>\r\n", "DATA\r\n", "BDAT 3\r\n", ".\r\n", "\r\n", "\n", "\r", "AUTH PLAIN\r\n", "STARTTLS\r\n", "RSET\r\n"].map(enc))
    )
    fc.assert(
      fc.property(fc.array(interesting, { maxLength: 30 }), (chunks) => {
        const h = ready(cfg({ startTls: true, authMechanisms: ["PLAIN", "CRAM-MD5"], allowPlaintextAuthWithoutTls: true }))
        for (const c of chunks) h.send(c)
        h.input({ _tag: "Eof" })
        expect(h.closed).toBeDefined()
      }),
      { numRuns: 500 }
    )
  })

  it("pipelined replies come out in command order, in one write", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom("NOOP", "RSET", "VRFY x", "BOGUS", "HELP"), { minLength: 1, maxLength: 15 }), (cmds) => {
        const h = greeted(cfg({ maxBadCommands: 100 }))
        const before = h.outputs.length
        h.send(cmds.map((c) => c + "\r\n").join(""))
        const expected = cmds.map((c) => ({ NOOP: "250", RSET: "250", "VRFY x": "252", BOGUS: "500", HELP: "214" })[c])
        expect(h.codes()).toEqual(expected)
        expect(h.outputs.slice(before).filter((o) => o._tag === "Send").length).toBe(1)
      })
    )
  })
})
