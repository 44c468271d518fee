/**
 * Bad input against the SMTP edge over real sockets: SMTP smuggling
 * end-of-data variants, plaintext injected after STARTTLS, over-long lines,
 * invalid bytes, early talkers, a client that floods without reading, and a
 * slow client. Each bad client gets the exact reply (or a clean close) while
 * a well-behaved client on the same edge keeps being served.
 */
import { it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { afterAll, beforeAll, describe, expect } from "vitest"
import { makeCa, type IssuedCertificate, type TestCa } from "../support/certs.ts"
import {
  baseKeywords,
  connectGreeted,
  ehloReply,
  HOST,
  RawClient,
  type RunningEdge,
  sendOne,
  startEdge,
  text
} from "./EdgeHarness.ts"

let ca: TestCa
let cert: IssuedCertificate

beforeAll(() => {
  ca = makeCa()
  cert = ca.issue(HOST, [`DNS:${HOST}`, "IP:127.0.0.1"])
})
afterAll(() => ca?.dispose())

const queuedAs = (id: string) => `250 2.6.0 Ok: queued as ${id}\r\n`
const GOOD_BODY = "Subject: good\r\n\r\nstill served\r\n"

/** A well-behaved client sends one message while the bad one is connected; checks its replies and bytes. */
const bystander = (e: RunningEdge, tag: string, keywords: ReadonlyArray<string> = baseKeywords) =>
  Effect.gen(function*() {
    const transcript = yield* Effect.promise(() => sendOne(e.port, `good-${tag}@client.example`, "good@mx.test.example", GOOD_BODY.slice(0, -2)))
    const got = yield* Effect.promise(e.received)
    const env = got.find((g) => g.sender === `good-${tag}@client.example`)
    expect(env, transcript).toBeDefined()
    expect(text(env!.message)).toBe(GOOD_BODY)
    expect(transcript).toBe(
      ehloReply(keywords) +
        "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n" +
        queuedAs(env!.id) +
        "221 2.0.0 Bye\r\n"
    )
  })

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

describe("SMTP smuggling", () => {
  const SMUGGLED = "MAIL FROM:<ceo@victim.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\nSubject: evil\r\n\r\nsmuggled\r\n"
  // variant sent → what it must become in the stored message (bare CR/LF normalised to CRLF,
  // a dot after a real CRLF unstuffed, a dot after a bare one kept)
  const variants: ReadonlyArray<readonly [string, string]> = [
    ["\n.\n", "\r\n.\r\n"],
    ["\r.\r", "\r\n.\r\n"],
    ["\r.\n", "\r\n.\r\n"],
    ["\n.\r", "\r\n.\r\n"],
    ["\r.\r\n", "\r\n.\r\n"],
    ["\r\n.\r", "\r\n\r\n"],
    ["\r\n.\n", "\r\n\r\n"],
    ["\n.\r\n", "\r\n.\r\n"],
    ["\r\n\x00.\r\n", "\r\n\x00.\r\n"]
  ]
  for (const [variant, stored] of variants) {
    it.live(`${JSON.stringify(variant)} neither ends the data nor starts a second transaction`, () =>
      Effect.gen(function*() {
        const e = yield* startEdge()
        const c = yield* promise(() => connectGreeted(e.port))
        yield* promise(() => c.command("EHLO smuggler.example"))
        c.send("MAIL FROM:<alice@client.example>\r\nRCPT TO:<bob@mx.test.example>\r\nDATA\r\n")
        expect(yield* promise(() => c.replies(3))).toBe(
          "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
        )
        // all in one write, as an attacker's relay would send it
        c.send(`Subject: hello\r\n\r\nbody${variant}${SMUGGLED}.\r\n`)
        const after = yield* promise(() => c.reply())
        yield* bystander(e, "smuggling")
        c.send("QUIT\r\n")
        const bye = yield* promise(() => c.reply())
        const rest = yield* promise(() => c.waitClosed())
        const got = (yield* promise(e.received)).filter((g) => g.sender === "alice@client.example")
        expect(got).toHaveLength(1)
        expect(after).toBe(queuedAs(got[0]!.id))
        expect(bye).toBe("221 2.0.0 Bye\r\n")
        expect(rest).toBe("")
        expect(got[0]!.recipients).toEqual(["bob@mx.test.example"])
        expect(text(got[0]!.message)).toBe(`Subject: hello\r\n\r\nbody${stored}${SMUGGLED}`)
        expect((yield* promise(e.received)).some((g) => g.sender === "ceo@victim.example")).toBe(false)
      }))
  }

  it.live("with bareNewline=reject the message is refused (550 5.5.2) and nothing is queued", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { bareNewline: "reject" } })
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO smuggler.example"))
      c.send("MAIL FROM:<alice@client.example>\r\nRCPT TO:<bob@mx.test.example>\r\nDATA\r\n")
      yield* promise(() => c.replies(3))
      c.send(`Subject: hello\r\n\r\nbody\n.\n${SMUGGLED}.\r\nNOOP\r\n`)
      expect(yield* promise(() => c.replies(2))).toBe("550 5.5.2 Error: bare <CR> or <LF> received in message data\r\n250 2.0.0 Ok\r\n")
      expect(yield* promise(e.received)).toHaveLength(0)
      c.destroy()
    }))
})

describe("STARTTLS command injection (CVE-2011-0411)", () => {
  it.live("plaintext in the same segment as STARTTLS is discarded, never executed", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: { tls: { default: { key: cert.key, cert: cert.cert } } } })
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO injector.example"))
      // one write, one TCP segment on loopback (noDelay on both sides)
      c.send("STARTTLS\r\nMAIL FROM:<evil@inject.example>\r\nRCPT TO:<injected@evil.example>\r\n")
      expect(yield* promise(() => c.reply())).toBe("220 2.0.0 Ready to start TLS\r\n")
      yield* promise(() => c.startTls({ ca: [ca.cert], servername: HOST }))
      expect(yield* promise(() => c.command("EHLO injector.example"))).toBe(ehloReply([...baseKeywords, "REQUIRETLS"]))
      // the injected MAIL was not executed: RCPT has no transaction
      expect(yield* promise(() => c.command("RCPT TO:<after@mx.test.example>"))).toBe("503 5.5.1 Error: need MAIL command\r\n")
      expect(yield* promise(() => c.command("MAIL FROM:<real@client.example>"))).toBe("250 2.1.0 Sender ok\r\n")
      expect(yield* promise(() => c.command("RCPT TO:<real@mx.test.example>"))).toBe("250 2.1.5 Recipient ok\r\n")
      expect(yield* promise(() => c.command("DATA"))).toBe("354 End data with <CR><LF>.<CR><LF>\r\n")
      const done = yield* promise(() => c.command("Subject: tls\r\n\r\nok\r\n."))
      yield* bystander(e, "starttls", [...baseKeywords, "STARTTLS"])
      expect(yield* promise(() => c.command("QUIT"))).toBe("221 2.0.0 Bye\r\n")
      const got = yield* promise(e.received)
      const env = got.find((g) => g.sender === "real@client.example")!
      expect(done).toBe(queuedAs(env.id))
      expect(env.recipients).toEqual(["real@mx.test.example"])
      expect(env.client.protocol).toBe("ESMTPS")
      expect(got.some((g) => g.sender === "evil@inject.example" || g.recipients.includes("injected@evil.example"))).toBe(false)
      // the whole transcript: nothing ever answered the injected lines
      expect(c.all).toBe(
        `220 ${HOST} ESMTP Mailroom\r\n` +
          ehloReply([...baseKeywords, "STARTTLS"]) +
          "220 2.0.0 Ready to start TLS\r\n" +
          ehloReply([...baseKeywords, "REQUIRETLS"]) +
          "503 5.5.1 Error: need MAIL command\r\n" +
          "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n" +
          queuedAs(env.id) +
          "221 2.0.0 Bye\r\n"
      )
    }))
})

describe("bad lines", () => {
  it.live("an over-long command line gets 500 5.5.6 and the session goes on", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO long.example"))
      expect(yield* promise(() => c.command(`MAIL FROM:<${"a".repeat(2000)}@client.example>`))).toBe("500 5.5.6 Error: line too long\r\n")
      // 100 KB without a line end: one 500, bounded buffering
      c.send("X".repeat(100_000))
      yield* bystander(e, "longline")
      c.send("\r\nNOOP\r\n")
      expect(yield* promise(() => c.replies(2))).toBe("500 5.5.6 Error: line too long\r\n250 2.0.0 Ok\r\n")
      // the longest line allowed (512 + 500 for DSN parameters, CRLF included) still works
      const line = `NOOP ${"x".repeat(1012 - 2 - 5)}`
      expect(yield* promise(() => c.command(line))).toBe("250 2.0.0 Ok\r\n")
      expect(yield* promise(() => c.command(`${line}y`))).toBe("500 5.5.6 Error: line too long\r\n")
      expect(yield* promise(() => c.command("QUIT"))).toBe("221 2.0.0 Bye\r\n")
    }))

  it.live("invalid UTF-8, a bare LF, a NUL: exact refusals, then too many errors closes with 421 4.7.0", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { maxBadCommands: 5 } })
      const c = yield* promise(() => connectGreeted(e.port))
      c.send(new Uint8Array([0x4e, 0x4f, 0x4f, 0x50, 0x20, 0xff, 0xfe, 0x0d, 0x0a]))
      expect(yield* promise(() => c.reply())).toBe("500 5.5.2 Error: invalid UTF-8 in command\r\n")
      // a bare LF never ends a line: the line runs on to the CRLF and is refused whole
      c.send("NOOP\nNOOP\r\nNOOP\r\n")
      expect(yield* promise(() => c.replies(2))).toBe("500 5.5.2 Error: bare <CR> or <LF> received\r\n250 2.0.0 Ok\r\n")
      c.send("NO\x00OP\r\n")
      expect(yield* promise(() => c.reply())).toBe("500 5.5.2 Error: command not recognized\r\n")
      c.send("BOGUS\r\nBOGUS\r\nBOGUS\r\nNOOP\r\n")
      const r = yield* promise(() => c.replies(3))
      expect(r).toBe(
        "500 5.5.2 Error: command not recognized\r\n".repeat(2) + `421 4.7.0 ${HOST} Error: too many errors\r\n`
      )
      expect(yield* promise(() => c.waitClosed())).toBe("")
      yield* bystander(e, "badbytes")
    }))

  it.live("a client talking before the banner gets 554 5.5.0 after it and is closed", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ edge: { validators: { connect: () => Effect.as(Effect.sleep(200), { _tag: "Accept", reply: undefined } as const) } } })
      const c = yield* promise(() => RawClient.connect(e.port))
      c.send("EHLO early.example\r\n")
      expect(yield* promise(() => c.waitClosed())).toBe(`220 ${HOST} ESMTP Mailroom\r\n554 5.5.0 Error: SMTP protocol synchronization\r\n`)
      expect(yield* promise(e.received)).toHaveLength(0)
    }))
})

describe("a client that floods without reading", () => {
  it.live("is stopped by back-pressure; the edge keeps serving others; memory stays bounded", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { commandTimeoutMs: 1_000 } })
      const c = yield* promise(() => RawClient.connect(e.port))
      c.sock.pause() // never read
      const chunk = Buffer.from("EHLO flood.example\r\n".repeat(3200)) // 64 000 bytes
      // loopback socket buffers on both sides absorb about 4 MB before writes stall
      const limitBytes = 8 * 1024 * 1024
      const heapBefore = process.memoryUsage().heapUsed
      const flood = yield* promise(
        () =>
          new Promise<{ readonly written: number; readonly stalled: boolean }>((resolve) => {
            let written = 0
            const deadline = Date.now() + 4_000
            const pump = () => {
              while (written < limitBytes && Date.now() < deadline && !c.closed) {
                written += chunk.length
                if (!c.sock.write(chunk)) {
                  const t = setTimeout(() => {
                    c.sock.off("drain", pump)
                    resolve({ written, stalled: true })
                  }, 500)
                  c.sock.once("drain", () => {
                    clearTimeout(t)
                    pump()
                  })
                  return
                }
              }
              resolve({ written, stalled: false })
            }
            pump()
          })
      )
      // stopped by back-pressure: the writes stalled well before the cap
      expect(flood.stalled).toBe(true)
      expect(flood.written).toBeLessThan(limitBytes)
      const heapGrowth = process.memoryUsage().heapUsed - heapBefore
      expect(heapGrowth).toBeLessThan(64 * 1024 * 1024)
      // another client is served while the flooder is stuck
      yield* bystander(e, "flood")
      // and the stuck flooder does not hold its slot forever: the edge gives up on it
      const start = Date.now()
      while (!c.closed && Date.now() - start < 6_000) yield* Effect.sleep(50)
      expect(c.closed).toBe(true)
      while ((yield* e.edge.connections) > 0 && Date.now() - start < 8_000) yield* Effect.sleep(50)
      expect(yield* e.edge.connections).toBe(0)
    }))
})

describe("a slow client", () => {
  it.live("command timeout: 421 4.4.2 and close; others unaffected", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { commandTimeoutMs: 400 } })
      const c = yield* promise(() => connectGreeted(e.port))
      const t0 = Date.now()
      expect(yield* promise(() => c.reply(3_000))).toBe(`421 4.4.2 ${HOST} Error: timeout exceeded\r\n`)
      expect(Date.now() - t0).toBeGreaterThanOrEqual(350)
      expect(yield* promise(() => c.waitClosed())).toBe("")
      yield* bystander(e, "slow")
    }))

  it.live("data timeout mid-message: 421 4.4.2, nothing queued", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { dataTimeoutMs: 400 } })
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO slow.example"))
      c.send("MAIL FROM:<slow@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\n")
      yield* promise(() => c.replies(3))
      c.send("Subject: slow\r\n\r\npart")
      expect(yield* promise(() => c.reply(3_000))).toBe(`421 4.4.2 ${HOST} Error: timeout exceeded\r\n`)
      expect(yield* promise(() => c.waitClosed())).toBe("")
      expect((yield* promise(e.received)).filter((g) => g.sender === "slow@client.example")).toHaveLength(0)
      yield* bystander(e, "slowdata")
    }))

  it.live("a client dribbling bytes keeps its session alive (timeouts are per read, like Postfix) but stays bounded by the line limit", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { commandTimeoutMs: 400 } })
      const c = yield* promise(() => connectGreeted(e.port))
      for (const ch of "NOOP\r\n") {
        c.send(ch)
        yield* Effect.sleep(150)
      }
      expect(yield* promise(() => c.reply())).toBe("250 2.0.0 Ok\r\n")
      c.destroy()
    }))
})


describe("broken TLS and broken connections", () => {
  const tlsListen = () => ({ tls: { default: { key: cert.key, cert: cert.cert } } })

  it.live("garbage instead of a ClientHello after STARTTLS: the connection is closed; others are served", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: tlsListen() })
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO broken.example"))
      expect(yield* promise(() => c.command("STARTTLS"))).toBe("220 2.0.0 Ready to start TLS\r\n")
      c.send("EHLO this is not TLS\r\n")
      expect(yield* promise(() => c.waitClosed())).toBe("")
      yield* bystander(e, "badtls", [...baseKeywords, "STARTTLS"])
      expect(yield* e.edge.connections).toBe(0)
    }))

  it.live("a plaintext client on an implicit-TLS listener gets nothing and is closed; TLS clients are served", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: { ...tlsListen(), implicitTls: true } })
      const c = yield* promise(() => RawClient.connect(e.port))
      c.send("EHLO plaintext.example\r\n")
      expect(yield* promise(() => c.waitClosed())).toBe("")
      expect(c.all.startsWith("220")).toBe(false)
      const t = yield* promise(() => RawClient.connect(e.port, "127.0.0.1", { tls: { ca: [ca.cert], servername: HOST } }))
      expect(yield* promise(() => t.reply())).toBe(`220 ${HOST} ESMTP Mailroom\r\n`)
      expect(yield* promise(() => t.command("EHLO tls.example"))).toBe(ehloReply([...baseKeywords, "REQUIRETLS"]))
      t.destroy()
    }))

  it.live("a client that hangs up in the middle of DATA: nothing is queued, its slot is freed", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const c = yield* promise(() => connectGreeted(e.port))
      c.send("EHLO gone.example\r\nMAIL FROM:<gone@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\nSubject: half\r\n\r\nhalf a message\r\n")
      yield* promise(() => c.replies(4))
      c.sock.end()
      expect(yield* promise(() => c.waitClosed())).toBe("")
      expect(yield* promise(e.received)).toHaveLength(0)
      const t0 = Date.now()
      while ((yield* e.edge.connections) > 0 && Date.now() - t0 < 3_000) yield* Effect.sleep(20)
      expect(yield* e.edge.connections).toBe(0)
      yield* bystander(e, "hangup")
    }))

  it.live("a whole session in one write followed by a half-close is answered in full", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const c = yield* promise(() => connectGreeted(e.port))
      c.send("EHLO batch.example\r\nMAIL FROM:<batch@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\nSubject: batch\r\n\r\nall at once\r\n.\r\nQUIT\r\n")
      c.sock.end()
      const all = yield* promise(() => c.waitClosed())
      const [env] = yield* promise(e.received)
      expect(all).toBe(
        ehloReply(baseKeywords) +
          "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n" +
          queuedAs(env!.id) +
          "221 2.0.0 Bye\r\n"
      )
      expect(text(env!.message)).toBe("Subject: batch\r\n\r\nall at once\r\n")
    }))
})
