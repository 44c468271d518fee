/**
 * The LMTP relay against a real Dovecot LMTP server (its own config in a
 * temporary directory), over TCP and over its Unix socket: one result per
 * recipient (delivered to two Maildirs, one over quota at DATA, one unknown
 * at RCPT), the delivered files checked with mailparser, and connection
 * reuse.
 */
import * as Effect from "effect/Effect"
import { simpleParser } from "mailparser"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as LmtpRelay from "@mailroom/protocol/relay/LmtpRelay"
import { type Dovecot, startDovecot } from "../support/dovecot.ts"
import { type SmtpSink, startSmtpSink } from "../support/smtpSink.ts"
import { envelope, replyText, runRelay, summary } from "./RelayHarness.ts"

const EHLO = "relay.example.org"

const message = (subject: string) =>
  "From: Sender <sender@example.org>\r\nTo: <alice@example.test>\r\n" +
  `Subject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, "")}@example.org>\r\n` +
  "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
  "Grüße from the relay.\r\n.a line with a leading dot\r\n" + "x".repeat(2_000) + "\r\n"

describe("LmtpRelay → Dovecot LMTP", () => {
  let dovecot: Dovecot
  beforeAll(async () => {
    dovecot = await startDovecot(["alice", "carol", "bob:::::::userdb_quota_rule=*:storage=1k"])
  })
  afterAll(async () => {
    await dovecot?.stop()
  })

  for (const via of ["tcp", "unix"] as const) {
    it(`answers per recipient and delivers to two mailboxes (${via})`, async () => {
      const subject = `per recipient ${via}`
      const r = await runRelay(Effect.gen(function*() {
        const relay = yield* LmtpRelay.make({
          endpoint: via === "tcp" ? { host: "127.0.0.1", port: dovecot.port } : { path: dovecot.socket },
          ehlo: EHLO,
          timeouts: { commandMs: 10_000 }
        })
        return yield* relay.attempt(
          envelope(
            "sender@example.org",
            ["alice@example.test", "bob@example.test", "nobody@example.test", "carol@example.test"],
            message(subject),
            { body: "8BITMIME" }
          ),
          0
        )
      }))
      expect(summary(r)).toEqual(["delivered 250 2.0.0", "permanent 552 5.2.2", "permanent 550 5.1.1", "delivered 250 2.0.0"])
      expect(replyText(r, 1)).toBe("552 5.2.2 <bob@example.test> Quota exceeded (mailbox for user is full)")
      expect(replyText(r, 2)).toBe("550 5.1.1 <nobody@example.test> User doesn't exist: nobody@example.test")
      expect(r.remote).toBe(via === "tcp" ? "dns; [127.0.0.1]" : `unix; ${dovecot.socket}`)
      expect(r.tls).toBe("none")
      for (const user of ["alice", "carol"]) {
        const mine = []
        for (const file of dovecot.delivered(user)) {
          const parsed = await simpleParser(file)
          if (parsed.subject === subject) mine.push(parsed)
        }
        expect(mine).toHaveLength(1)
        const parsed = mine[0]!
        expect(parsed.text).toBe("Grüße from the relay.\n.a line with a leading dot\n" + "x".repeat(2_000) + "\n")
        expect(parsed.messageId).toBe(`<${subject.replace(/\W/g, "")}@example.org>`)
        expect((parsed.headers.get("return-path") as { text: string }).text).toBe("sender@example.org")
        const received = via === "tcp"
          ? /^from relay\.example\.org \(\[127\.0\.0\.1\]\) by \S+ with LMTP id /
          : /^from relay\.example\.org by \S+ with LMTP id /
        expect(String(parsed.headers.get("received"))).toMatch(received)
      }
      expect(dovecot.delivered("bob").length).toBe(0)
    })
  }

  it("carries several messages over one LMTP connection", async () => {
    const before = dovecot.delivered("alice").length
    await runRelay(Effect.gen(function*() {
      const relay = yield* LmtpRelay.make({ endpoint: { path: dovecot.socket }, ehlo: EHLO })
      for (let i = 0; i < 3; i++) {
        const r = yield* relay.attempt(envelope("sender@example.org", ["alice@example.test"], message(`reuse ${i}`)), 0)
        expect(summary(r)).toEqual(["delivered 250 2.0.0"])
      }
    }))
    expect(dovecot.delivered("alice").length).toBe(before + 3)
    const connects = dovecot.output().match(/lmtp\(\d+\): Info: Connect from local/g) ?? []
    const subjects = (await Promise.all(dovecot.delivered("alice").map((f) => simpleParser(f)))).map((p) => p.subject)
    expect(subjects.filter((s) => s?.startsWith("reuse "))).toHaveLength(3)
    // one unix connection for the per-recipient test and one for these three messages
    expect(connects.length).toBe(2)
  })
})

describe("LmtpRelay → smtp-sink -L", () => {
  let sink: SmtpSink
  beforeAll(async () => {
    sink = await startSmtpSink({ host: "127.0.0.3", args: ["-L"] })
  })
  afterAll(async () => {
    await sink?.stop()
  })

  it("speaks LHLO and gets one final reply per recipient", async () => {
    const r = await runRelay(Effect.gen(function*() {
      const relay = yield* LmtpRelay.make({ endpoint: { host: "127.0.0.3", port: sink.port }, ehlo: EHLO })
      return yield* relay.attempt(envelope("s@example.org", ["a@example.test", "b@example.test"], "Subject: lmtp\r\n\r\nhi\r\n"), 0)
    }))
    expect(summary(r)).toEqual(["delivered 250 2.2.0", "delivered 250 2.2.0"])
    expect(sink.messages()[0]).toContain("X-Client-Proto: LMTP\n")
  })
})
