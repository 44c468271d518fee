/**
 * The static (smarthost) relay against real SMTP servers on loopback:
 * postfix's smtp-sink (delivery checked byte for byte in its dump files,
 * its injected 4xx/5xx/421/disconnect faults, connection counts for the
 * pool) and Mailroom's own SMTP edge (STARTTLS with a test CA, implicit TLS,
 * AUTH PLAIN/LOGIN/CRAM-MD5/SCRAM-SHA-256, per-recipient refusals, a server
 * without 8BITMIME or SMTPUTF8).
 */
import * as net from "node:net"
import * as Effect from "effect/Effect"
import { simpleParser } from "mailparser"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Decision from "@mailroom/protocol/policy/Decision"
import * as StaticRelay from "@mailroom/protocol/relay/StaticRelay"
import * as Reply from "@mailroom/protocol/smtp/Reply"
import { makeCa, type IssuedCertificate, type TestCa } from "../support/certs.ts"
import { freePort } from "../support/ports.ts"
import { dumpArgs, dumpBody, type SmtpSink, startSmtpSink } from "../support/smtpSink.ts"
import { startEdge } from "./EdgeHarness.ts"
import { envelope, replyText, runRelay, startBlackhole, summary, textMessage } from "./RelayHarness.ts"

const EHLO = "relay.example.org"
const enc = new TextEncoder()
/** What smtp-sink dumps for `s`: LF line ends, bytes as latin1 (the dump is read as latin1). */
const lf = (s: string) => Buffer.from(s.replace(/\r\n/g, "\n"), "utf8").toString("latin1")

/** Runs one attempt of a fresh static relay (its pool closed, QUIT sent, when it returns). */
const once = (options: Partial<StaticRelay.Options> & { host: string; port: number }, env: ReturnType<typeof envelope>) =>
  runRelay(Effect.gen(function*() {
    const relay = yield* StaticRelay.make({ ehlo: EHLO, timeouts: { commandMs: 5_000, quitMs: 2_000 }, ...options })
    return yield* relay.attempt(env, 0)
  }))

describe("StaticRelay → smtp-sink", () => {
  const sinks: Array<SmtpSink> = []
  const sink = async (args: ReadonlyArray<string> = []) => {
    const s = await startSmtpSink({ host: "127.0.0.2", args })
    sinks.push(s)
    return s
  }
  afterAll(async () => {
    for (const s of sinks) await s.stop()
  })

  it("delivers a message byte for byte, with every recipient, and QUITs when the relay closes", async () => {
    const s = await sink()
    const msg = textMessage("byte-for-byte", "Hello.\r\n.leading dot\r\n..two dots\r\nGrüße\r\n\r\nlast\r\n")
    const r = await once({ host: "127.0.0.2", port: s.port }, envelope("sender@example.org", ["a@example.net", "b@example.net"], msg))
    expect(summary(r)).toEqual(["delivered 250 2.0.0", "delivered 250 2.0.0"])
    expect(r.remote).toBe("dns; [127.0.0.2]")
    expect(r.tls).toBe("none")
    const [dump] = s.messages()
    expect(dumpBody(dump!)).toBe(lf(msg))
    expect(dumpArgs(dump!, "X-Helo-Args")).toEqual([EHLO])
    expect(dumpArgs(dump!, "X-Mail-Args")).toEqual(["<sender@example.org> BODY=8BITMIME"])
    expect(dumpArgs(dump!, "X-Rcpt-Args")).toEqual(["<a@example.net>", "<b@example.net>"])
    // smtp-sink prints its counters once it has seen the close, which the relay does not wait for
    await waitFor(() => s.counters().sessions === 1)
    expect(s.counters()).toEqual({ sessions: 1, quits: 1, messages: 1 })
  })

  it("reuses one connection for several messages (pool), then QUITs it", async () => {
    const s = await sink()
    const results = await runRelay(Effect.gen(function*() {
      const relay = yield* StaticRelay.make({ host: "127.0.0.2", port: s.port, ehlo: EHLO })
      const out = []
      for (let i = 0; i < 4; i++) out.push(yield* relay.attempt(envelope("s@example.org", [`r${i}@example.net`], textMessage(`pooled ${i}`)), 0))
      return out
    }))
    expect(results.flatMap(summary)).toEqual(Array(4).fill("delivered 250 2.0.0"))
    expect(s.messages().map((d) => dumpArgs(d, "X-Rcpt-Args")[0]).sort()).toEqual([0, 1, 2, 3].map((i) => `<r${i}@example.net>`))
    // smtp-sink prints its counters once it has seen the close, which the relay does not wait for
    await waitFor(() => s.counters().sessions === 1)
    expect(s.counters()).toEqual({ sessions: 1, quits: 1, messages: 4 })
  })

  it("QUITs after every message with idleTimeoutMs 0", async () => {
    const s = await sink()
    await runRelay(Effect.gen(function*() {
      const relay = yield* StaticRelay.make({ host: "127.0.0.2", port: s.port, ehlo: EHLO, pool: { idleTimeoutMs: 0 } })
      for (let i = 0; i < 3; i++) yield* relay.attempt(envelope("s@example.org", ["r@example.net"], textMessage(`single ${i}`)), 0)
    }))
    // the last QUIT may still be in flight when the scope closes: wait for smtp-sink's counters
    await waitFor(() => s.counters().sessions === 3)
    expect(s.counters()).toEqual({ sessions: 3, quits: 3, messages: 3 })
  })

  it("keeps at most maxPerDestination connections; the other callers wait their turn", async () => {
    const s = await sink()
    const results = await runRelay(Effect.gen(function*() {
      const relay = yield* StaticRelay.make({ host: "127.0.0.2", port: s.port, ehlo: EHLO, pool: { maxPerDestination: 2 } })
      return yield* Effect.forEach(
        [0, 1, 2, 3, 4, 5],
        (i) => relay.attempt(envelope("s@example.org", [`p${i}@example.net`], textMessage(`parallel ${i}`)), 0),
        { concurrency: "unbounded" }
      )
    }))
    expect(results.flatMap(summary)).toEqual(Array(6).fill("delivered 250 2.0.0"))
    // smtp-sink prints its counters once it has seen the close, which the relay does not wait for
    await waitFor(() => s.counters().sessions === 2)
    expect(s.counters()).toEqual({ sessions: 2, quits: 2, messages: 6 })
  })

  it("notices a pooled connection the server closed while idle, and dials anew", async () => {
    // -t 3: smtp-sink drops a session idle for 3 s (1 s was hit by the first session itself on a loaded machine)
    const s = await sink(["-t", "3"])
    const results = await runRelay(Effect.gen(function*() {
      const relay = yield* StaticRelay.make({ host: "127.0.0.2", port: s.port, ehlo: EHLO })
      const a = yield* relay.attempt(envelope("s@example.org", ["a@example.net"], textMessage("before idle")), 0)
      yield* Effect.sleep(3_800)
      const b = yield* relay.attempt(envelope("s@example.org", ["b@example.net"], textMessage("after idle")), 0)
      return [a, b]
    }))
    expect(results.flatMap(summary)).toEqual(["delivered 250 2.0.0", "delivered 250 2.0.0"])
    await waitFor(() => s.counters().sessions === 2)
    expect(s.counters()).toMatchObject({ sessions: 2, messages: 2 })
  })

  const faults: ReadonlyArray<readonly [string, ReadonlyArray<string>, ReadonlyArray<string>, string]> = [
    ["RCPT soft reject", ["-r", "RCPT"], ["transient 450 4.3.0", "transient 450 4.3.0"], "450 4.3.0 Error: command failed"],
    ["RCPT hard reject", ["-f", "RCPT"], ["permanent 500 5.3.0", "permanent 500 5.3.0"], "500 5.3.0 Error: command failed"],
    ["MAIL hard reject", ["-f", "MAIL"], ["permanent 500 5.3.0", "permanent 500 5.3.0"], "500 5.3.0 Error: command failed"],
    ["DATA soft reject", ["-r", "DATA"], ["transient 450 4.3.0", "transient 450 4.3.0"], "450 4.3.0 Error: command failed"],
    ["end of data hard reject", ["-f", "."], ["permanent 500 5.3.0", "permanent 500 5.3.0"], "500 5.3.0 Error: command failed"],
    ["421 at MAIL", ["-Q", "MAIL"], ["transient 421 4.0.0", "transient 421 4.0.0"], "421 4.0.0 Server closing connection"],
    ["silent disconnect at DATA", ["-q", "DATA"], ["transient 451 4.3.0", "transient 451 4.3.0"], "451 4.3.0 Connection lost"],
    ["421 greeting", ["-Q", "CONNECT"], ["transient 421 4.0.0", "transient 421 4.0.0"], "421 4.0.0 Server closing connection"],
    ["5xx greeting", ["-f", "CONNECT"], ["permanent 500 5.3.0", "permanent 500 5.3.0"], "500 5.3.0 Error: command failed"],
    ["EHLO soft reject", ["-r", "EHLO"], ["transient 450 4.3.0", "transient 450 4.3.0"], "450 4.3.0 Error: command failed"]
  ]
  for (const [name, args, expected, text] of faults) {
    it(`classifies smtp-sink's injected fault: ${name}`, async () => {
      const s = await sink(args)
      const r = await once({ host: "127.0.0.2", port: s.port }, envelope("s@example.org", ["a@example.net", "b@example.net"], textMessage(name)))
      expect(summary(r)).toEqual(expected)
      expect(replyText(r, 1)).toBe(text)
    })
  }

  it("refuses to relay a message smtp-sink's refusal left undelivered: nothing arrives", async () => {
    const s = await sink(["-f", "RCPT"])
    await once({ host: "127.0.0.2", port: s.port }, envelope("s@example.org", ["a@example.net"], textMessage("nothing")))
    expect(s.messages()).toEqual([])
  })

  it("answers a refused connection with 451 4.4.1", async () => {
    const port = await freePort("127.0.0.2")
    const r = await once({ host: "127.0.0.2", port }, envelope("s@example.org", ["a@example.net"], textMessage("refused")))
    expect(summary(r)).toEqual(["transient 451 4.4.1"])
    expect(replyText(r)).toBe(`451 4.4.1 Connection refused by 127.0.0.2:${port}`)
  })

  it("answers a connect timeout with 421 4.4.2", async () => {
    const hole = await startBlackhole()
    try {
      const started = Date.now()
      const r = await once(
        { host: hole.host, port: hole.port, timeouts: { connectMs: 400 } },
        envelope("s@example.org", ["a@example.net"], textMessage("timeout"))
      )
      expect(summary(r)).toEqual(["transient 421 4.4.2"])
      expect(replyText(r)).toBe(`421 4.4.2 Connection timed out: ${hole.host}:${hole.port}`)
      expect(Date.now() - started).toBeLessThan(3_000)
    } finally {
      hole.stop()
    }
  })

  it("answers a server that never greets with 421 4.4.2 after the command timeout", async () => {
    const s = await sink(["-W", "CONNECT:5"])
    const r = await once(
      { host: "127.0.0.2", port: s.port, timeouts: { commandMs: 400, quitMs: 200 } },
      envelope("s@example.org", ["a@example.net"], textMessage("slow banner"))
    )
    expect(summary(r)).toEqual(["transient 421 4.4.2"])
    expect(replyText(r)).toBe("421 4.4.2 Connection timed out")
  })

  it("does not send when TLS is required and the server has no STARTTLS", async () => {
    const s = await sink()
    const r = await once({ host: "127.0.0.2", port: s.port, tls: "required" }, envelope("s@example.org", ["a@example.net"], textMessage("tls")))
    expect(summary(r)).toEqual(["transient 421 4.7.10"])
    expect(replyText(r)).toBe("421 4.7.10 TLS required but not offered by smtp-sink")
    expect(s.messages()).toEqual([])
  })

  it("converts an 8-bit MIME message to quoted-printable for a server without 8BITMIME (-8)", async () => {
    const s = await sink(["-8"])
    const msg = "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\nSubject: qp\r\n\r\nGrüße, Zoë\r\n"
    const r = await once({ host: "127.0.0.2", port: s.port }, envelope("s@example.org", ["a@example.net"], msg, { body: "8BITMIME" }))
    expect(summary(r)).toEqual(["delivered 250 2.0.0"])
    const [dump] = s.messages()
    expect(dumpBody(dump!)).toBe(
      "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\nSubject: qp\n\nGr=C3=BC=C3=9Fe, Zo=C3=AB\n"
    )
    expect(dumpArgs(dump!, "X-Mail-Args")).toEqual(["<s@example.org>"])
  })

  it("bounces an 8-bit message it cannot convert (not MIME) with 554 5.6.3, sending nothing", async () => {
    const s = await sink(["-8"])
    const r = await once({ host: "127.0.0.2", port: s.port }, envelope("s@example.org", ["a@example.net"], "Subject: raw\r\n\r\nGrüße\r\n"))
    expect(summary(r)).toEqual(["permanent 554 5.6.3"])
    expect(replyText(r)).toBe("554 5.6.3 Conversion required but not supported: not a MIME message")
    expect(s.messages()).toEqual([])
  })
})

describe("StaticRelay → Mailroom's edge (TLS, AUTH)", () => {
  let ca: TestCa
  let cert: IssuedCertificate
  const users = { user: "{PLAIN}secret" }
  const mechanisms = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"] as const
  beforeAll(() => {
    ca = makeCa()
    cert = ca.issue("mx.test.example", ["DNS:mx.test.example", "DNS:localhost", "IP:127.0.0.1"])
  })
  afterAll(() => ca?.dispose())

  const tlsEdge = (extra: { implicit?: boolean } = {}) =>
    startEdge({
      users,
      listen: { tls: { default: { key: cert.key, cert: cert.cert } }, ...(extra.implicit ? { implicitTls: true } : {}) },
      session: { authMechanisms: [...mechanisms] }
    })

  for (const mechanism of mechanisms) {
    it(`STARTTLS with a verified certificate, then AUTH ${mechanism}`, async () => {
      const { r, received } = await runRelay(Effect.gen(function*() {
        const edge = yield* tlsEdge()
        const relay = yield* StaticRelay.make({
          host: "127.0.0.1",
          port: edge.port,
          ehlo: EHLO,
          tls: "required",
          ca: [ca.cert],
          auth: { username: "user", password: "secret", mechanism }
        })
        const r = yield* relay.attempt(envelope("s@example.org", ["a@example.net"], textMessage(`auth ${mechanism}`)), 0)
        return { r, received: yield* Effect.promise(edge.received) }
      }))
      expect(summary(r)).toEqual(["delivered 250 2.6.0"])
      expect(r.tls).toMatch(/^TLSv1\.[23] verified$/)
      expect(received).toHaveLength(1)
      expect(received[0]!.client.auth).toBe("user")
      expect(received[0]!.client.tls?.version).toMatch(/^TLSv1\.[23]$/)
      expect(received[0]!.client.ehlo).toBe(EHLO)
      expect(received[0]!.recipients).toEqual(["a@example.net"])
    })
  }

  it("looks the smarthost up by name (localhost) and checks the certificate against that name", async () => {
    const { r, received } = await runRelay(Effect.gen(function*() {
      const edge = yield* tlsEdge()
      const relay = yield* StaticRelay.make({ host: "localhost", port: edge.port, ehlo: EHLO, tls: "required", ca: [ca.cert] })
      const r = yield* relay.attempt(envelope("s@example.org", ["a@example.net"], textMessage("by name")), 0)
      return { r, received: yield* Effect.promise(edge.received) }
    }))
    expect(summary(r)).toEqual(["delivered 250 2.6.0"])
    expect(r.remote).toBe("dns; localhost")
    expect(r.tls).toMatch(/ verified$/)
    expect(received).toHaveLength(1)
  })

  it("opportunistic TLS records a certificate that does not verify, and delivers", async () => {
    const r = await runRelay(Effect.gen(function*() {
      const edge = yield* tlsEdge()
      const relay = yield* StaticRelay.make({ host: "127.0.0.1", port: edge.port, ehlo: EHLO })
      return yield* relay.attempt(envelope("s@example.org", ["a@example.net"], textMessage("unverified")), 0)
    }))
    expect(summary(r)).toEqual(["delivered 250 2.6.0"])
    expect(r.tls).toMatch(/^TLSv1\.[23] unverified: UNABLE_TO_VERIFY_LEAF_SIGNATURE$/)
  })

  it("required TLS with verification refuses an unverifiable certificate before sending anything", async () => {
    const { r, received } = await runRelay(Effect.gen(function*() {
      const edge = yield* tlsEdge()
      const relay = yield* StaticRelay.make({ host: "127.0.0.1", port: edge.port, ehlo: EHLO, tls: "required" })
      const r = yield* relay.attempt(envelope("s@example.org", ["a@example.net"], textMessage("refused cert")), 0)
      return { r, received: yield* Effect.promise(edge.received) }
    }))
    expect(summary(r)).toEqual(["transient 421 4.7.0"])
    expect(replyText(r)).toBe("421 4.7.0 TLS handshake failed: certificate not verified: UNABLE_TO_VERIFY_LEAF_SIGNATURE")
    expect(r.tls).toMatch(/unverified: UNABLE_TO_VERIFY_LEAF_SIGNATURE$/)
    expect(received).toEqual([])
  })

  it("implicit TLS (port 465 style) with AUTH PLAIN", async () => {
    const { r, received } = await runRelay(Effect.gen(function*() {
      const edge = yield* tlsEdge({ implicit: true })
      const relay = yield* StaticRelay.make({
        host: "127.0.0.1",
        port: edge.port,
        ehlo: EHLO,
        tls: "implicit",
        ca: [ca.cert],
        auth: { username: "user", password: "secret" }
      })
      const r = yield* relay.attempt(envelope("s@example.org", ["a@example.net"], textMessage("implicit")), 0)
      return { r, received: yield* Effect.promise(edge.received) }
    }))
    expect(summary(r)).toEqual(["delivered 250 2.6.0"])
    expect(r.tls).toMatch(/ verified$/)
    expect(received[0]!.client.auth).toBe("user")
  })

  it("a refused password is transient (454 4.7.0), never a bounce", async () => {
    const r = await runRelay(Effect.gen(function*() {
      const edge = yield* tlsEdge()
      const relay = yield* StaticRelay.make({
        host: "127.0.0.1",
        port: edge.port,
        ehlo: EHLO,
        ca: [ca.cert],
        auth: { username: "user", password: "wrong", mechanism: "PLAIN" }
      })
      return yield* relay.attempt(envelope("s@example.org", ["a@example.net"], textMessage("bad password")), 0)
    }))
    expect(summary(r)).toEqual(["transient 454 4.7.0"])
    expect(replyText(r)).toBe("454 4.7.0 Authentication failed: 535 5.7.8 Authentication credentials invalid")
  })

  it("never sends a plaintext password without TLS", async () => {
    const r = await runRelay(Effect.gen(function*() {
      const edge = yield* startEdge({ users, session: { authMechanisms: ["PLAIN"], allowPlaintextAuthWithoutTls: true } })
      const relay = yield* StaticRelay.make({ host: "127.0.0.1", port: edge.port, ehlo: EHLO, auth: { username: "user", password: "secret" } })
      return yield* relay.attempt(envelope("s@example.org", ["a@example.net"], textMessage("no tls auth")), 0)
    }))
    expect(summary(r)).toEqual(["transient 421 4.7.0"])
    expect(replyText(r)).toBe("421 4.7.0 No usable AUTH mechanism offered by mx.test.example without TLS: PLAIN")
  })

  it("reports each recipient on its own (one refused by the server's policy)", async () => {
    const { r, received } = await runRelay(Effect.gen(function*() {
      const edge = yield* startEdge({
        edge: {
          validators: {
            rcpt: (_facts, rcpt) =>
              Effect.succeed(rcpt.local === "nobody" ? Decision.reject(Reply.make(550, "5.1.1", "No such user")) : Decision.accept)
          }
        }
      })
      const relay = yield* StaticRelay.make({ host: "127.0.0.1", port: edge.port, ehlo: EHLO })
      const r = yield* relay.attempt(
        envelope("s@example.org", ["a@example.net", "nobody@example.net", "c@example.net"], textMessage("mixed")),
        0
      )
      return { r, received: yield* Effect.promise(edge.received) }
    }))
    expect(summary(r)).toEqual(["delivered 250 2.6.0", "permanent 550 5.1.1", "delivered 250 2.6.0"])
    expect(replyText(r, 1)).toBe("550 5.1.1 No such user")
    expect(received[0]!.recipients).toEqual(["a@example.net", "c@example.net"])
  })

  it("downgrades a multipart 8-bit message for an edge without 8BITMIME; it decodes to the same text", async () => {
    const original =
      "MIME-Version: 1.0\r\nSubject: downgrade\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n" +
      "--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nÀ bientôt, naïve café\r\n" +
      "--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>À bientôt</p>\r\n--b--\r\n"
    const { r, received } = await runRelay(Effect.gen(function*() {
      const edge = yield* startEdge({ session: { eightBitMime: false, smtputf8: false } })
      const relay = yield* StaticRelay.make({ host: "127.0.0.1", port: edge.port, ehlo: EHLO })
      const r = yield* relay.attempt(envelope("s@example.org", ["a@example.net"], original, { body: "8BITMIME" }), 0)
      return { r, received: yield* Effect.promise(edge.received) }
    }))
    expect(summary(r)).toEqual(["delivered 250 2.6.0"])
    const got = received[0]!.message
    expect(got.every((b) => b < 0x80)).toBe(true)
    const text = Buffer.from(got).toString("latin1")
    expect(text).toContain("Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=80 bient=C3=B4t, na=C3=AFve caf=C3=A9\r\n--b\r\n")
    const [a, b] = await Promise.all([simpleParser(Buffer.from(enc.encode(original))), simpleParser(Buffer.from(got))])
    expect(b.text).toBe(a.text)
    expect(b.html).toBe(a.html)
    expect(b.subject).toBe("downgrade")
  })

  it("bounces a message that needs SMTPUTF8 when the server lacks it (553 5.6.7)", async () => {
    const { r, received } = await runRelay(Effect.gen(function*() {
      const edge = yield* startEdge({ session: { smtputf8: false } })
      const relay = yield* StaticRelay.make({ host: "127.0.0.1", port: edge.port, ehlo: EHLO })
      const r = yield* relay.attempt(envelope("jörg@example.org", ["a@example.net"], "Subject: ü\r\n\r\nx\r\n", { smtputf8: true }), 0)
      return { r, received: yield* Effect.promise(edge.received) }
    }))
    expect(summary(r)).toEqual(["permanent 553 5.6.7"])
    expect(received).toEqual([])
  })

  it("REQUIRETLS envelopes go over verified TLS only", async () => {
    const r = await runRelay(Effect.gen(function*() {
      const edge = yield* startEdge({})
      const relay = yield* StaticRelay.make({ host: "127.0.0.1", port: edge.port, ehlo: EHLO })
      return yield* relay.attempt(envelope("s@example.org", ["a@example.net"], textMessage("requiretls"), { requireTls: true }), 0)
    }))
    expect(summary(r)).toEqual(["transient 421 4.7.10"])
  })
})

/**
 * A deliberately broken peer (no real server produces this on demand): it
 * offers STARTTLS and answers 220 to it, then sends plaintext where the TLS
 * handshake should be. Without STARTTLS it takes mail normally. Counts
 * connections and delivered messages.
 */
const startBrokenTlsServer = (): Promise<{ port: number; connections: () => number; delivered: () => number; close: () => void }> =>
  new Promise((resolve) => {
    let connections = 0
    let delivered = 0
    const server = net.createServer((sock) => {
      connections++
      let buf = ""
      let inData = false
      sock.write("220 broken.test ESMTP\r\n")
      sock.on("error", () => {})
      sock.on("data", (d) => {
        buf += d.toString("latin1")
        for (;;) {
          if (inData) {
            const end = buf.indexOf("\r\n.\r\n")
            if (end < 0) return
            buf = buf.slice(end + 5)
            inData = false
            delivered++
            sock.write("250 2.0.0 Ok: queued\r\n")
            continue
          }
          const i = buf.indexOf("\r\n")
          if (i < 0) return
          const line = buf.slice(0, i).toUpperCase()
          buf = buf.slice(i + 2)
          if (line.startsWith("EHLO")) sock.write("250-broken.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
          else if (line === "STARTTLS") {
            sock.write("220 2.0.0 Ready\r\n")
            setTimeout(() => sock.end("this is not a TLS handshake\r\n"), 20)
            return
          } else if (line === "DATA") {
            inData = true
            sock.write("354 go ahead\r\n")
          } else if (line === "QUIT") sock.end("221 2.0.0 Bye\r\n")
          else sock.write("250 2.0.0 Ok\r\n")
        }
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const a = server.address() as net.AddressInfo
      resolve({ port: a.port, connections: () => connections, delivered: () => delivered, close: () => server.close() })
    })
  })

describe("StaticRelay → a server whose TLS handshake fails", () => {
  it("without tlsFallback: transient 421 4.7.0, nothing sent", async () => {
    const broken = await startBrokenTlsServer()
    try {
      const r = await once({ host: "127.0.0.1", port: broken.port }, envelope("s@example.org", ["a@example.net"], textMessage("no fallback")))
      expect(summary(r)).toEqual(["transient 421 4.7.0"])
      expect(replyText(r)).toMatch(/^421 4\.7\.0 TLS handshake failed: /)
      expect(broken.delivered()).toBe(0)
    } finally {
      broken.close()
    }
  })

  it("with tlsFallback: retried once in clear, and the result says so", async () => {
    const broken = await startBrokenTlsServer()
    try {
      const r = await once(
        { host: "127.0.0.1", port: broken.port, tlsFallback: true },
        envelope("s@example.org", ["a@example.net"], textMessage("fallback"))
      )
      expect(summary(r)).toEqual(["delivered 250 2.0.0"])
      expect(r.tls).toMatch(/^none \(TLS failed, retried in clear: 421 4\.7\.0 TLS handshake failed: /)
      expect(broken.connections()).toBe(2)
      expect(broken.delivered()).toBe(1)
    } finally {
      broken.close()
    }
  })

  it("tlsFallback never applies to required TLS", async () => {
    const broken = await startBrokenTlsServer()
    try {
      const r = await once(
        { host: "127.0.0.1", port: broken.port, tls: "required", tlsFallback: true },
        envelope("s@example.org", ["a@example.net"], textMessage("required no fallback"))
      )
      expect(summary(r)).toEqual(["transient 421 4.7.0"])
      expect(broken.connections()).toBe(1)
    } finally {
      broken.close()
    }
  })
})

const waitFor = async (cond: () => boolean, timeoutMs = 3_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25))
}
