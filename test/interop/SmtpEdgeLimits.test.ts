/**
 * The edge's limits and failure paths over real sockets: message size (with
 * and without SIZE=), connections in total and per client, graceful
 * shutdown, the `localDomains` relay control, the AUTH failure rate per
 * client, and queues that refuse or die. Each case checks exact replies,
 * what the queue received, and that other clients keep being served.
 */
import * as net from "node:net"
import { it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import nodemailer from "nodemailer"
import { afterAll, beforeAll, describe, expect } from "vitest"
import * as Queue from "@mailroom/protocol/queue/Queue"
import * as Reply from "@mailroom/protocol/smtp/Reply"
import * as Decision from "@mailroom/protocol/policy/Decision"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
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

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)
const queuedAs = (id: string) => `250 2.6.0 Ok: queued as ${id}\r\n`
const b64 = (s: string) => Buffer.from(s, "latin1").toString("base64")

/** A good client's single message goes through; returns its envelope. */
const served = (e: RunningEdge, tag: string, host = "127.0.0.1") =>
  Effect.gen(function*() {
    const transcript = yield* promise(() => sendOne(e.port, `good-${tag}@client.example`, "good@mx.test.example", "Subject: good\r\n\r\nok", host))
    const env = (yield* promise(e.received)).find((g) => g.sender === `good-${tag}@client.example`)
    expect(env, transcript).toBeDefined()
    expect(transcript).toContain(queuedAs(env!.id))
    expect(text(env!.message)).toBe("Subject: good\r\n\r\nok\r\n")
    return env!
  })

const connectFrom = (port: number, localAddress: string) => RawClient.connect(port, "127.0.0.1", { localAddress })

describe("message size", () => {
  it.live("SIZE= over the limit: 552 5.3.4 at MAIL; no SIZE: 552 5.3.4 after the data, session goes on", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { maxMessageSize: 1000 } })
      const c = yield* promise(() => connectGreeted(e.port))
      const keywords = baseKeywords.map((k) => (k.startsWith("SIZE") ? "SIZE 1000" : k))
      expect(yield* promise(() => c.command("EHLO big.example"))).toBe(ehloReply(keywords))
      expect(yield* promise(() => c.command("MAIL FROM:<big@client.example> SIZE=1001"))).toBe(
        "552 5.3.4 Error: message size exceeds fixed limit\r\n"
      )
      expect(yield* promise(() => c.command("MAIL FROM:<big@client.example> SIZE=1000"))).toBe("250 2.1.0 Sender ok\r\n")
      expect(yield* promise(() => c.command("RSET"))).toBe("250 2.0.0 Ok\r\n")
      // undeclared: 5 000 bytes streamed in several writes
      c.send("MAIL FROM:<big@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\n")
      expect(yield* promise(() => c.replies(3))).toBe("250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
      c.send("Subject: big\r\n\r\n")
      for (let i = 0; i < 50; i++) c.send(`${"y".repeat(98)}\r\n`)
      c.send(".\r\n")
      expect(yield* promise(() => c.reply())).toBe("552 5.3.4 Error: message size exceeds fixed limit\r\n")
      // exactly at the limit is fine, on the same connection
      const body = `Subject: fits\r\n\r\n${"z".repeat(1000 - 17 - 2)}\r\n`
      expect(body.length).toBe(1000)
      c.send(`MAIL FROM:<fits@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\n${body}.\r\n`)
      const r = yield* promise(() => c.replies(4))
      const got = yield* promise(e.received)
      expect(got).toHaveLength(1)
      expect(r).toBe(`250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n${queuedAs(got[0]!.id)}`)
      expect(text(got[0]!.message)).toBe(body)
      c.destroy()
    }))

  it.live("nodemailer: 552 5.3.4 after the data (it declares no SIZE for a raw message); a second message on the pooled connection fits", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { maxMessageSize: 1000 } })
      const t = nodemailer.createTransport({ pool: true, maxConnections: 1, host: "127.0.0.1", port: e.port, ignoreTLS: true })
      const err = yield* promise(() =>
        t.sendMail({ envelope: { from: "a@client.example", to: "b@mx.test.example" }, raw: `Subject: x\r\n\r\n${"a".repeat(5000)}\r\n` })
          .then(() => undefined, (x: { response?: string }) => x)
      )
      expect(err?.response).toBe("552 5.3.4 Error: message size exceeds fixed limit")
      expect(yield* promise(e.received)).toHaveLength(0)
      const info = yield* promise(() => t.sendMail({ envelope: { from: "a@client.example", to: "b@mx.test.example" }, raw: "Subject: small\r\n\r\nok\r\n" }))
      const got = yield* promise(e.received)
      expect(got).toHaveLength(1)
      expect(info.response).toBe(queuedAs(got[0]!.id).trimEnd())
      t.close()
    }))
})

describe("connection limits", () => {
  it.live("maxConnections: the one too many gets 421 4.7.0 and is closed; the others are unaffected", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ edge: { maxConnections: 3 } })
      const held = [
        yield* promise(() => connectGreeted(e.port)),
        yield* promise(() => connectGreeted(e.port))
      ]
      const extra = yield* promise(() => RawClient.connect(e.port))
      // the third slot is taken by a real client...
      const third = yield* promise(() => extra.reply())
      expect(third).toBe(`220 ${HOST} ESMTP Mailroom\r\n`)
      // ...so the fourth is refused before any banner
      const fourth = yield* promise(() => RawClient.connect(e.port))
      expect(yield* promise(() => fourth.waitClosed())).toBe("421 4.7.0 Too many connections, try again later\r\n")
      for (const c of [...held, extra]) expect(yield* promise(() => c.command("NOOP"))).toBe("250 2.0.0 Ok\r\n")
      // a slot frees up: a new client is served
      expect(yield* promise(() => held[0]!.command("QUIT"))).toBe("221 2.0.0 Bye\r\n")
      yield* promise(() => held[0]!.waitClosed())
      yield* served(e, "after-limit")
      for (const c of [held[1]!, extra]) c.destroy()
    }))

  it.live("maxConnectionsPerClient: 421 4.7.0 for the address over its share; another address still gets in", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ edge: { maxConnectionsPerClient: 2, maxConnections: 10 } })
      const a1 = yield* promise(() => connectGreeted(e.port))
      const a2 = yield* promise(() => connectGreeted(e.port))
      const a3 = yield* promise(() => connectFrom(e.port, "127.0.0.1"))
      expect(yield* promise(() => a3.waitClosed())).toBe("421 4.7.0 Too many connections from your address, try again later\r\n")
      // 127.0.0.2 is another client
      const b = yield* promise(() => connectFrom(e.port, "127.0.0.2"))
      expect(yield* promise(() => b.reply())).toBe(`220 ${HOST} ESMTP Mailroom\r\n`)
      expect(yield* promise(() => b.command("EHLO other.example"))).toBe(ehloReply(baseKeywords))
      expect(yield* promise(() => a1.command("NOOP"))).toBe("250 2.0.0 Ok\r\n")
      expect(yield* e.edge.connections).toBe(3)
      a1.destroy()
      yield* promise(() => a1.waitClosed())
      // the freed slot is usable again by 127.0.0.1
      let env: Envelope.Envelope | undefined
      for (let i = 0; i < 20 && env === undefined; i++) {
        if ((yield* e.edge.connections) < 3) env = yield* served(e, "per-client")
        else yield* Effect.sleep(25)
      }
      expect(env?.client.address).toBe("127.0.0.1")
      a2.destroy()
      b.destroy()
    }))
})

describe("graceful shutdown", () => {
  it.live("a session in DATA finishes (250 then 421), an idle one gets 421, new connections are refused", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const busy = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => busy.command("EHLO busy.example"))
      busy.send("MAIL FROM:<busy@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\nSubject: in flight\r\n\r\nfirst half\r\n")
      expect(yield* promise(() => busy.replies(3))).toBe("250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
      const idle = yield* promise(() => connectGreeted(e.port))
      expect(yield* promise(() => idle.command("EHLO idle.example"))).toBe(ehloReply(baseKeywords))
      const shutdown = yield* Effect.forkChild(e.edge.shutdown)
      expect(yield* promise(() => idle.waitClosed())).toBe(`421 4.3.0 ${HOST} Service not available, closing transmission channel\r\n`)
      // while the busy one is finishing, a new connection is refused with 421 (or not accepted at all)
      const late = yield* promise(() => RawClient.connect(e.port).then((c) => c.waitClosed(), (err: NodeJS.ErrnoException) => err.code ?? "error"))
      expect([`421 4.3.0 ${HOST} Service not available, closing transmission channel\r\n`, "ECONNREFUSED"]).toContain(late)
      busy.send("second half\r\n.\r\n")
      const rest = yield* promise(() => busy.waitClosed())
      const got = yield* promise(e.received)
      expect(got).toHaveLength(1)
      expect(rest).toBe(`${queuedAs(got[0]!.id)}421 4.3.0 ${HOST} Service not available, closing transmission channel\r\n`)
      expect(text(got[0]!.message)).toBe("Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n")
      yield* Fiber.join(shutdown)
      expect(yield* e.edge.connections).toBe(0)
      // the listener is closed now
      const after = yield* promise(
        () =>
          new Promise<string>((resolve) => {
            const s = net.connect({ host: "127.0.0.1", port: e.port })
            s.once("connect", () => (s.destroy(), resolve("connected")))
            s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "error"))
          })
      )
      expect(after).toBe("ECONNREFUSED")
    }))

  it.live("a session that does not finish within the grace is cut", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ edge: { shutdownGraceMs: 300 } })
      const busy = yield* promise(() => connectGreeted(e.port))
      busy.send("EHLO busy.example\r\nMAIL FROM:<busy@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\nSubject: never ends\r\n")
      yield* promise(() => busy.replies(4))
      const t0 = Date.now()
      yield* e.edge.shutdown
      expect(Date.now() - t0).toBeLessThan(2_000)
      yield* promise(() => busy.waitClosed())
      expect(yield* promise(e.received)).toHaveLength(0)
    }))
})

describe("relay control (localDomains)", () => {
  it.live("unauthenticated: 550 5.7.1 for other domains, local ones and bare postmaster accepted", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ edge: { localDomains: ["mx.test.example", "Other.Example"] } })
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO relay.example"))
      c.send(
        "MAIL FROM:<spammer@client.example>\r\n" +
          "RCPT TO:<victim@far.example>\r\n" +
          "RCPT TO:<User@MX.TEST.EXAMPLE>\r\n" +
          "RCPT TO:<x@other.example>\r\n" +
          "RCPT TO:<Postmaster>\r\n" +
          "RCPT TO:<x@sub.mx.test.example>\r\n" +
          "DATA\r\n"
      )
      expect(yield* promise(() => c.replies(7))).toBe(
        "250 2.1.0 Sender ok\r\n" +
          "550 5.7.1 Relaying denied\r\n" +
          "250 2.1.5 Recipient ok\r\n" +
          "250 2.1.5 Recipient ok\r\n" +
          "250 2.1.5 Recipient ok\r\n" +
          "550 5.7.1 Relaying denied\r\n" +
          "354 End data with <CR><LF>.<CR><LF>\r\n"
      )
      const r = yield* promise(() => c.command("Subject: r\r\n\r\nx\r\n."))
      const [env] = yield* promise(e.received)
      expect(r).toBe(queuedAs(env!.id))
      expect(env!.recipients).toEqual(["User@MX.TEST.EXAMPLE", "x@other.example", "Postmaster"])
      c.destroy()
    }))

  it.live("authenticated: may relay (nodemailer AUTH PLAIN over STARTTLS)", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({
        edge: { localDomains: ["mx.test.example"] },
        listen: { tls: { default: { key: cert.key, cert: cert.cert } } },
        users: { carol: "{PLAIN}pw" },
        session: { authMechanisms: ["PLAIN"] }
      })
      const anon = nodemailer.createTransport({ host: "127.0.0.1", port: e.port, requireTLS: true, tls: { ca: [ca.cert], servername: HOST } })
      const denied = yield* promise(() =>
        anon.sendMail({ envelope: { from: "x@client.example", to: "far@far.example" }, raw: "Subject: a\r\n\r\nb\r\n" })
          .then(() => undefined, (x: { response?: string }) => x)
      )
      expect(denied?.response).toBe("550 5.7.1 Relaying denied")
      const authed = nodemailer.createTransport({
        host: "127.0.0.1",
        port: e.port,
        requireTLS: true,
        tls: { ca: [ca.cert], servername: HOST },
        auth: { user: "carol", pass: "pw" }
      })
      const info = yield* promise(() => authed.sendMail({ envelope: { from: "carol@client.example", to: "far@far.example" }, raw: "Subject: a\r\n\r\nb\r\n" }))
      const got = yield* promise(e.received)
      expect(got).toHaveLength(1)
      expect(info.response).toBe(queuedAs(got[0]!.id).trimEnd())
      expect(got[0]).toMatchObject({ sender: "carol@client.example", recipients: ["far@far.example"] })
      expect(got[0]!.client.auth).toBe("carol")
      anon.close()
      authed.close()
    }))
})

describe("AUTH failure rate per client", () => {
  it.live("after N failures from one address AUTH answers 454 4.7.0, even with the right password; other addresses unaffected", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({
        users: { dave: "{PLAIN}right" },
        session: { authMechanisms: ["PLAIN"], allowPlaintextAuthWithoutTls: true, maxAuthFailures: 3 },
        edge: { authFailures: { max: 3, windowMs: 60_000 } }
      })
      const bad = `AUTH PLAIN ${b64("\0dave\0wrong")}`
      const good = `AUTH PLAIN ${b64("\0dave\0right")}`
      // two failures on one connection, one on another: three in the window
      const c1 = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c1.command("EHLO a.example"))
      expect(yield* promise(() => c1.command(bad))).toBe("535 5.7.8 Authentication credentials invalid\r\n")
      expect(yield* promise(() => c1.command(bad))).toBe("535 5.7.8 Authentication credentials invalid\r\n")
      expect(yield* promise(() => c1.command("QUIT"))).toBe("221 2.0.0 Bye\r\n")
      const c2 = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c2.command("EHLO a.example"))
      expect(yield* promise(() => c2.command(bad))).toBe("535 5.7.8 Authentication credentials invalid\r\n")
      expect(yield* promise(() => c2.command(good))).toBe("454 4.7.0 Temporary authentication failure\r\n")
      c2.destroy()
      // the same user from another address is fine
      const other = yield* promise(() => connectFrom(e.port, "127.0.0.2"))
      yield* promise(() => other.reply())
      yield* promise(() => other.command("EHLO b.example"))
      expect(yield* promise(() => other.command(good))).toBe("235 2.7.0 Authentication successful\r\n")
      other.destroy()
      // mail without AUTH still flows from the throttled address
      yield* served(e, "auth-throttled")
    }))

  it.live("per session: the third 535 is followed by 421 4.7.0 and a close", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({
        users: { dave: "{PLAIN}right" },
        session: { authMechanisms: ["PLAIN"], allowPlaintextAuthWithoutTls: true, maxAuthFailures: 3 },
        edge: { authFailures: { max: 100, windowMs: 60_000 } }
      })
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO a.example"))
      c.send(`AUTH PLAIN ${b64("\0dave\0x")}\r\n`)
      c.send(`AUTH PLAIN ${b64("\0dave\0y")}\r\n`)
      c.send(`AUTH PLAIN ${b64("\0dave\0z")}\r\n`)
      expect(yield* promise(() => c.waitClosed())).toBe(
        "535 5.7.8 Authentication credentials invalid\r\n".repeat(3) + `421 4.7.0 ${HOST} Error: too many failed authentications\r\n`
      )
    }))
})

describe("queue failures", () => {
  it.live("a queue that answers Refused: its 451 4.3.0 reaches the client, the session goes on", () =>
    Effect.gen(function*() {
      let n = 0
      const e = yield* startEdge({
        answer: (env) => (++n === 1 ? { _tag: "Refused", reply: Reply.queueError } : { _tag: "Queued", ids: [env.id] })
      })
      const t = nodemailer.createTransport({ pool: true, maxConnections: 1, host: "127.0.0.1", port: e.port, ignoreTLS: true })
      const first = yield* promise(() =>
        t.sendMail({ envelope: { from: "q@client.example", to: "x@mx.test.example" }, raw: "Subject: 1\r\n\r\none\r\n" })
          .then(() => undefined, (x: { response?: string; responseCode?: number }) => x)
      )
      expect(first?.response).toBe("451 4.3.0 Error: queue file write error")
      const info = yield* promise(() => t.sendMail({ envelope: { from: "q@client.example", to: "x@mx.test.example" }, raw: "Subject: 2\r\n\r\ntwo\r\n" }))
      const got = yield* promise(e.received)
      expect(got).toHaveLength(1)
      expect(info.response).toBe(queuedAs(got[0]!.id).trimEnd())
      expect(text(got[0]!.message)).toBe("Subject: 2\r\n\r\ntwo\r\n")
      t.close()
    }))

  it.live("452 4.3.1 (disk full) is passed through as well", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ answer: () => ({ _tag: "Refused", reply: Reply.insufficientStorage }) })
      const c = yield* promise(() => connectGreeted(e.port))
      c.send("EHLO d.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<b@mx.test.example>\r\nDATA\r\nSubject: x\r\n\r\ny\r\n.\r\nNOOP\r\n")
      const r = yield* promise(() => c.replies(6))
      expect(r.endsWith("452 4.3.1 Insufficient system storage\r\n250 2.0.0 Ok\r\n")).toBe(true)
      c.destroy()
    }))

  it.live("a queue that dies (defect): 451 4.3.0, the connection and the process keep serving", () =>
    Effect.gen(function*() {
      const stored: Array<Envelope.Envelope> = []
      let calls = 0
      const queue = Layer.succeed(Queue.Queue)({
        enqueue: (env) =>
          Effect.suspend(() => {
            calls++
            if (env.sender.startsWith("boom")) return Effect.die(new Error("storage exploded"))
            stored.push(env)
            return Effect.succeed({ _tag: "Queued", ids: [env.id] } as const)
          })
      })
      const e = yield* startEdge({ queue })
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO die.example"))
      c.send("MAIL FROM:<boom@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\nSubject: boom\r\n\r\nx\r\n.\r\n")
      expect(yield* promise(() => c.replies(4))).toBe(
        "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n451 4.3.0 Error: queue file write error\r\n"
      )
      // same connection, next message
      c.send("MAIL FROM:<fine@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\nSubject: fine\r\n\r\ny\r\n.\r\n")
      const r = yield* promise(() => c.replies(4))
      expect(stored).toHaveLength(1)
      expect(r).toBe(`250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n${queuedAs(stored[0]!.id)}`)
      // another connection
      const t = nodemailer.createTransport({ host: "127.0.0.1", port: e.port, ignoreTLS: true })
      const info = yield* promise(() => t.sendMail({ envelope: { from: "other@client.example", to: "x@mx.test.example" }, raw: "Subject: o\r\n\r\no\r\n" }))
      expect(stored).toHaveLength(2)
      expect(info.response).toBe(queuedAs(stored[1]!.id).trimEnd())
      expect(calls).toBe(3)
      c.destroy()
      t.close()
    }))

  it.live("a validator that dies: 451 4.3.0 for that command only", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({
        edge: {
          validators: {
            rcpt: (_facts, rcpt) => rcpt.local === "crash" ? Effect.die(new Error("policy bug")) : Effect.succeed(Decision.accept)
          }
        }
      })
      const c = yield* promise(() => connectGreeted(e.port))
      c.send("EHLO v.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<crash@mx.test.example>\r\nRCPT TO:<ok@mx.test.example>\r\nDATA\r\nSubject: v\r\n\r\nv\r\n.\r\n")
      const r = yield* promise(() => c.replies(6))
      const [env] = yield* promise(e.received)
      expect(r).toBe(
        ehloReply(baseKeywords) +
          "250 2.1.0 Sender ok\r\n451 4.3.0 Error: temporary local problem\r\n250 2.1.5 Recipient ok\r\n" +
          "354 End data with <CR><LF>.<CR><LF>\r\n" +
          queuedAs(env!.id)
      )
      expect(env!.recipients).toEqual(["ok@mx.test.example"])
      c.destroy()
    }))
})

describe("session policy over the wire", () => {
  it.live("recipients beyond maxRecipients get 452 4.5.3; the ones accepted are kept", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { maxRecipients: 5 } })
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO many.example"))
      let batch = "MAIL FROM:<many@client.example>\r\n"
      for (let i = 0; i < 7; i++) batch += `RCPT TO:<r${i}@mx.test.example>\r\n`
      c.send(`${batch}DATA\r\n`)
      expect(yield* promise(() => c.replies(9))).toBe(
        "250 2.1.0 Sender ok\r\n" + "250 2.1.5 Recipient ok\r\n".repeat(5) + "452 4.5.3 Error: too many recipients\r\n".repeat(2) +
          "354 End data with <CR><LF>.<CR><LF>\r\n"
      )
      yield* promise(() => c.command("Subject: many\r\n\r\nx\r\n."))
      const [env] = yield* promise(e.received)
      expect(env!.recipients).toEqual([0, 1, 2, 3, 4].map((i) => `r${i}@mx.test.example`))
      c.destroy()
    }))

  it.live("AUTH PLAIN without TLS: 538 5.7.11; requireTls: MAIL gets 530 5.7.0 before STARTTLS", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({
        listen: { tls: { default: { key: cert.key, cert: cert.cert } } },
        users: { erin: "{PLAIN}pw" },
        session: { authMechanisms: ["PLAIN", "CRAM-MD5"], requireTls: true }
      })
      const c = yield* promise(() => connectGreeted(e.port))
      expect(yield* promise(() => c.command("EHLO notls.example"))).toBe(ehloReply([...baseKeywords, "STARTTLS"]))
      expect(yield* promise(() => c.command(`AUTH PLAIN ${b64("\0erin\0pw")}`))).toBe("530 5.7.0 Must issue a STARTTLS command first\r\n")
      expect(yield* promise(() => c.command("MAIL FROM:<erin@client.example>"))).toBe("530 5.7.0 Must issue a STARTTLS command first\r\n")
      c.destroy()
      const e2 = yield* startEdge({
        listen: { tls: { default: { key: cert.key, cert: cert.cert } } },
        users: { erin: "{PLAIN}pw" },
        session: { authMechanisms: ["PLAIN", "CRAM-MD5"] }
      })
      const d = yield* promise(() => connectGreeted(e2.port))
      expect(yield* promise(() => d.command("EHLO notls.example"))).toBe(ehloReply([...baseKeywords, "STARTTLS", "AUTH CRAM-MD5"]))
      expect(yield* promise(() => d.command(`AUTH PLAIN ${b64("\0erin\0pw")}`))).toBe(
        "538 5.7.11 Error: encryption required for requested authentication mechanism\r\n"
      )
      d.destroy()
    }))

  it.live("a message with more Received fields than maxHops: 554 5.4.6, nothing queued, the session goes on", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ session: { maxHops: 3 } })
      const c = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => c.command("EHLO loop.example"))
      const hops = (n: number) => "Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n".repeat(n)
      c.send(`MAIL FROM:<l@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\n${hops(4)}Subject: loop\r\n\r\nx\r\n.\r\n`)
      expect(yield* promise(() => c.replies(4))).toBe(
        "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n554 5.4.6 Too many hops\r\n"
      )
      c.send(`MAIL FROM:<l@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\n${hops(3)}Subject: ok\r\n\r\nx\r\n.\r\n`)
      const r = yield* promise(() => c.replies(4))
      const got = yield* promise(e.received)
      expect(got).toHaveLength(1)
      expect(r.endsWith(queuedAs(got[0]!.id))).toBe(true)
      expect(text(got[0]!.message)).toBe(`${hops(3)}Subject: ok\r\n\r\nx\r\n`)
      c.destroy()
    }))

  it.live("the close hook runs once per session, however it ended (QUIT, hang-up, timeout)", () =>
    Effect.gen(function*() {
      const closed: Array<string> = []
      const e = yield* startEdge({
        session: { commandTimeoutMs: 300 },
        edge: { validators: { close: (facts) => Effect.sync(() => void closed.push(facts.hello?.domain ?? "-")) } }
      })
      const quit = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => quit.command("EHLO quit.example"))
      yield* promise(() => quit.command("QUIT"))
      yield* promise(() => quit.waitClosed())
      const hang = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => hang.command("EHLO hangup.example"))
      hang.destroy()
      const slow = yield* promise(() => connectGreeted(e.port))
      yield* promise(() => slow.command("EHLO slow.example"))
      yield* promise(() => slow.waitClosed())
      const t0 = Date.now()
      while (closed.length < 3 && Date.now() - t0 < 3_000) yield* Effect.sleep(20)
      expect([...closed].sort()).toEqual(["hangup.example", "quit.example", "slow.example"])
    }))
})
