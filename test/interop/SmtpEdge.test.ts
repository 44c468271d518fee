/**
 * The SMTP edge against real clients over real loopback sockets: nodemailer
 * (plain, STARTTLS, implicit TLS, AUTH PLAIN/LOGIN/CRAM-MD5, pooled
 * connections), our own SASL client for SCRAM-SHA-256, raw pipelining,
 * swaks, Python's smtplib, `openssl s_client -starttls smtp` and postfix's
 * `smtp-source`. Every test checks the exact replies and what the memory
 * queue received: sender, recipients and the exact message bytes.
 *
 * Abuse cases are in SmtpEdgeAbuse.test.ts, PROXY/haproxy in
 * SmtpEdgeProxy.test.ts, limits and shutdown in SmtpEdgeLimits.test.ts.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import nodemailer from "nodemailer"
import { afterAll, beforeAll, describe, expect } from "vitest"
import * as Client from "@mailroom/protocol/auth/Client"
import * as Credentials from "@mailroom/protocol/auth/Credentials"
import * as Bytes from "@mailroom/protocol/wire/Bytes"
import * as ReplyDecoder from "@mailroom/protocol/wire/ReplyDecoder"
import { makeCa, type IssuedCertificate, type TestCa } from "../support/certs.ts"
import { hasIPv6Loopback, removeDir, tempDir } from "../support/ports.ts"
import {
  baseKeywords,
  connectGreeted,
  ehloReply,
  type EdgeSetup,
  HOST,
  runProgram,
  startEdge,
  text
} from "./EdgeHarness.ts"

let ca: TestCa
let cert: IssuedCertificate
let dir: string

beforeAll(() => {
  ca = makeCa()
  cert = ca.issue(HOST, [`DNS:${HOST}`, "DNS:localhost", "IP:127.0.0.1", "IP:::1"])
  dir = tempDir("mailroom-edge-interop-")
  fs.writeFileSync(path.join(dir, "ca.pem"), ca.cert)
})

afterAll(() => {
  ca?.dispose()
  if (dir) removeDir(dir)
})

const tlsListen = (): EdgeSetup["listen"] => ({ tls: { default: { key: cert.key, cert: cert.cert } } })
const clientTls = () => ({ ca: [ca.cert], servername: HOST })

const PASSWORD = "s3cret pass"
const users = (): Record<string, string> => ({
  // CRAM-MD5 needs the clear secret; PLAIN and LOGIN work with either.
  alice: `{PLAIN}${PASSWORD}`,
  bob: Credentials.hashPassword(PASSWORD, new Uint8Array(16).fill(7), Credentials.minIterations)
})
const ALL_MECHS = ["SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"] as const

const RAW = "From: a@client.example\r\nTo: b@mx.test.example\r\nSubject: interop\r\n\r\n.leading dot\r\n..two dots\r\nlast line\r\n"

const queuedAs = (id: string) => `250 2.6.0 Ok: queued as ${id}`

describe("nodemailer", () => {
  it.live("plain SMTP: one message, exact bytes and envelope", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const t = nodemailer.createTransport({ host: "127.0.0.1", port: e.port, ignoreTLS: true, name: "nm.client.example" })
      const info = yield* Effect.promise(() =>
        t.sendMail({ envelope: { from: "a@client.example", to: ["b@mx.test.example", "c@mx.test.example"] }, raw: RAW })
      )
      const got = yield* Effect.promise(e.received)
      expect(got).toHaveLength(1)
      const env = got[0]!
      expect(info.response).toBe(queuedAs(env.id))
      expect(info.accepted).toEqual(["b@mx.test.example", "c@mx.test.example"])
      expect(env.sender).toBe("a@client.example")
      expect(env.recipients).toEqual(["b@mx.test.example", "c@mx.test.example"])
      expect(text(env.message)).toBe(RAW)
      expect(env.client).toMatchObject({ address: "127.0.0.1", ehlo: "nm.client.example", protocol: "ESMTP", tls: undefined, auth: undefined })
      expect(env.receiver).toBe(HOST)
      t.close()
    }))

  it.live("STARTTLS (requireTLS, CA-verified): protocol ESMTPS, TLS facts recorded", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: tlsListen() })
      const t = nodemailer.createTransport({ host: "127.0.0.1", port: e.port, requireTLS: true, tls: clientTls() })
      const info = yield* Effect.promise(() => t.sendMail({ envelope: { from: "a@client.example", to: "b@mx.test.example" }, raw: RAW }))
      const [env] = yield* Effect.promise(e.received)
      expect(info.response).toBe(queuedAs(env!.id))
      expect(text(env!.message)).toBe(RAW)
      expect(env!.client.protocol).toBe("ESMTPS")
      expect(env!.client.tls?.version).toMatch(/^TLSv1\.[23]$/)
      expect(env!.client.tls?.cipher).toBeTruthy()
      t.close()
    }))

  it.live("implicit TLS (port 465 style)", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: { ...tlsListen(), implicitTls: true } })
      const t = nodemailer.createTransport({ host: "127.0.0.1", port: e.port, secure: true, tls: clientTls() })
      const info = yield* Effect.promise(() => t.sendMail({ envelope: { from: "a@client.example", to: "b@mx.test.example" }, raw: RAW }))
      const [env] = yield* Effect.promise(e.received)
      expect(info.response).toBe(queuedAs(env!.id))
      expect(text(env!.message)).toBe(RAW)
      expect(env!.client.protocol).toBe("ESMTPS")
      expect(info.ehlo).not.toContain("STARTTLS")
      expect(info.ehlo).toContain("REQUIRETLS")
      t.close()
    }))

  for (const method of ["PLAIN", "LOGIN", "CRAM-MD5"] as const) {
    for (const user of method === "CRAM-MD5" ? ["alice"] : ["alice", "bob"]) {
      it.live(`AUTH ${method} as ${user} over STARTTLS: ESMTPSA, identity recorded`, () =>
        Effect.gen(function*() {
          const e = yield* startEdge({ listen: tlsListen(), users: users(), session: { authMechanisms: ALL_MECHS } })
          const t = nodemailer.createTransport({
            host: "127.0.0.1",
            port: e.port,
            requireTLS: true,
            tls: clientTls(),
            auth: { user, pass: PASSWORD, method }
          })
          const info = yield* Effect.promise(() => t.sendMail({ envelope: { from: `${user}@client.example`, to: "b@elsewhere.example" }, raw: RAW }))
          const [env] = yield* Effect.promise(e.received)
          expect(info.response).toBe(queuedAs(env!.id))
          expect(env!.client.auth).toBe(user)
          expect(env!.client.protocol).toBe("ESMTPSA")
          expect(env!.recipients).toEqual(["b@elsewhere.example"])
          t.close()
        }))
    }
  }

  it.live("AUTH with a wrong password: 535 5.7.8 reaches nodemailer, nothing queued", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: tlsListen(), users: users(), session: { authMechanisms: ALL_MECHS } })
      const t = nodemailer.createTransport({
        host: "127.0.0.1",
        port: e.port,
        requireTLS: true,
        tls: clientTls(),
        auth: { user: "alice", pass: "wrong", method: "PLAIN" }
      })
      const err = yield* Effect.promise(() =>
        t.sendMail({ envelope: { from: "a@client.example", to: "b@x.example" }, raw: RAW }).then(() => undefined, (x: unknown) => x as { response?: string })
      )
      expect(err?.response).toBe("535 5.7.8 Authentication credentials invalid")
      expect(yield* Effect.promise(e.received)).toHaveLength(0)
      t.close()
    }))

  it.live("CRAM-MD5 over plaintext (not a plaintext mechanism, so offered without TLS)", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ users: users(), session: { authMechanisms: ALL_MECHS } })
      const t = nodemailer.createTransport({
        host: "127.0.0.1",
        port: e.port,
        ignoreTLS: true,
        auth: { user: "alice", pass: PASSWORD, method: "CRAM-MD5" }
      })
      const info = yield* Effect.promise(() => t.sendMail({ envelope: { from: "a@client.example", to: "b@x.example" }, raw: RAW }))
      const [env] = yield* Effect.promise(e.received)
      expect(info.response).toBe(queuedAs(env!.id))
      expect(info.ehlo).toContain("AUTH SCRAM-SHA-256 CRAM-MD5")
      expect(env!.client.protocol).toBe("ESMTPA")
      t.close()
    }))

  it.live("DSN parameters and SMTPUTF8 (non-ASCII addresses) are recorded in the envelope", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const t = nodemailer.createTransport({ host: "127.0.0.1", port: e.port, ignoreTLS: true })
      const info = yield* Effect.promise(() =>
        t.sendMail({
          envelope: { from: "jörg@client.example", to: ["zoë@mx.test.example", "plain@mx.test.example"] },
          raw: RAW,
          dsn: { id: "env-42", return: "headers", notify: ["failure", "delay"], recipient: "jörg@client.example" }
        })
      )
      const [env] = yield* Effect.promise(e.received)
      expect(info.response).toBe(queuedAs(env!.id))
      expect(env!.sender).toBe("jörg@client.example")
      expect(env!.recipients).toEqual(["zoë@mx.test.example", "plain@mx.test.example"])
      expect(env!.smtputf8).toBe(true)
      expect(env!.client.protocol).toBe("UTF8SMTP")
      expect(env!.dsn.ret).toBe("HDRS")
      expect(env!.dsn.envid).toBe("env-42")
      expect(env!.dsn.notify).toEqual([["FAILURE", "DELAY"], ["FAILURE", "DELAY"]])
      expect(env!.dsn.orcpt[0]).toMatchObject({ addrType: "rfc822" })
      expect(text(env!.message)).toBe(RAW)
      t.close()
    }))

  it.live("pool: several messages over one connection", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const t = nodemailer.createTransport({ pool: true, maxConnections: 1, maxMessages: 100, host: "127.0.0.1", port: e.port, ignoreTLS: true })
      const infos = yield* Effect.promise(() =>
        Promise.all(
          Array.from({ length: 6 }, (_, i) =>
            t.sendMail({ envelope: { from: `s${i}@client.example`, to: `r${i}@mx.test.example` }, raw: `Subject: ${i}\r\n\r\nbody ${i}\r\n` }))
        )
      )
      const got = yield* Effect.promise(e.received)
      expect(got).toHaveLength(6)
      for (let i = 0; i < 6; i++) {
        const env = got.find((g) => g.sender === `s${i}@client.example`)!
        expect(env.recipients).toEqual([`r${i}@mx.test.example`])
        expect(text(env.message)).toBe(`Subject: ${i}\r\n\r\nbody ${i}\r\n`)
        expect(infos[i]!.response).toBe(queuedAs(env.id))
      }
      // one connection: one client port for all
      expect(new Set(got.map((g) => g.client.port)).size).toBe(1)
      t.close()
    }))

  it.live("IPv6 loopback listener", () =>
    Effect.gen(function*() {
      if (!(yield* Effect.promise(hasIPv6Loopback))) return
      const e = yield* startEdge({ address: "::1" })
      const t = nodemailer.createTransport({ host: "::1", port: e.port, ignoreTLS: true })
      const info = yield* Effect.promise(() => t.sendMail({ envelope: { from: "a@client.example", to: "b@mx.test.example" }, raw: RAW }))
      const [env] = yield* Effect.promise(e.received)
      expect(info.response).toBe(queuedAs(env!.id))
      expect(env!.client.address).toBe("::1")
      expect(text(env!.message)).toBe(RAW)
      t.close()
    }))
})

describe("raw socket", () => {
  it.live("PIPELINING: one write per command group, replies in order, a second transaction pipelined after the dot", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const c = yield* Effect.promise(() => connectGreeted(e.port))
      expect(yield* Effect.promise(() => c.command("EHLO pipe.example"))).toBe(ehloReply(baseKeywords))
      c.send("MAIL FROM:<a@pipe.example>\r\nRCPT TO:<b@mx.test.example>\r\nRCPT TO:<c@mx.test.example>\r\nDATA\r\n")
      expect(yield* Effect.promise(() => c.replies(4))).toBe(
        "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
      )
      c.send("Subject: one\r\n\r\n1\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<d@mx.test.example>\r\nDATA\r\n")
      const r1 = yield* Effect.promise(() => c.replies(4))
      c.send("Subject: two\r\n\r\n2\r\n.\r\nQUIT\r\n")
      const r2 = yield* Effect.promise(() => c.replies(2))
      yield* Effect.promise(() => c.waitClosed())
      const got = yield* Effect.promise(e.received)
      expect(got).toHaveLength(2)
      expect(r1).toBe(`${queuedAs(got[0]!.id)}\r\n250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n`)
      expect(r2).toBe(`${queuedAs(got[1]!.id)}\r\n221 2.0.0 Bye\r\n`)
      expect(got[0]).toMatchObject({ sender: "a@pipe.example", recipients: ["b@mx.test.example", "c@mx.test.example"] })
      expect(text(got[0]!.message)).toBe("Subject: one\r\n\r\n1\r\n")
      expect(got[1]).toMatchObject({ sender: "", recipients: ["d@mx.test.example"] })
      expect(text(got[1]!.message)).toBe("Subject: two\r\n\r\n2\r\n")
    }))

  it.live("BDAT (CHUNKING) over the wire", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const c = yield* Effect.promise(() => connectGreeted(e.port))
      yield* Effect.promise(() => c.command("EHLO chunk.example"))
      c.send("MAIL FROM:<a@chunk.example>\r\nRCPT TO:<b@mx.test.example>\r\nBDAT 10\r\nSubject: x")
      const r = yield* Effect.promise(() => c.replies(3))
      expect(r).toBe("250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.0.0 10 octets received\r\n")
      c.send("BDAT 9 LAST\r\n\r\n\r\nbody\r\n")
      const last = yield* Effect.promise(() => c.reply())
      const [env] = yield* Effect.promise(e.received)
      expect(last).toBe(`${queuedAs(env!.id)}\r\n`)
      expect(text(env!.message)).toBe("Subject: x\r\n\r\nbody\r\n")
      c.destroy()
    }))

  it.live("SCRAM-SHA-256 with our own SASL client over STARTTLS", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: tlsListen(), users: users(), session: { authMechanisms: ALL_MECHS } })
      const c = yield* Effect.promise(() => connectGreeted(e.port))
      const ehlo1 = yield* Effect.promise(() => c.command("EHLO scram.example"))
      expect(ehlo1).toBe(ehloReply([...baseKeywords, "STARTTLS", "AUTH SCRAM-SHA-256 CRAM-MD5"]))
      expect(yield* Effect.promise(() => c.command("STARTTLS"))).toBe("220 2.0.0 Ready to start TLS\r\n")
      yield* Effect.promise(() => c.startTls(clientTls()))
      const ehlo2 = yield* Effect.promise(() => c.command("EHLO scram.example"))
      expect(ehlo2).toBe(ehloReply([...baseKeywords, "AUTH SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN", "REQUIRETLS"]))
      let tr = Client.start("SCRAM-SHA-256", {
        authcid: "alice",
        password: PASSWORD,
        random: (n) => globalThis.crypto.getRandomValues(new Uint8Array(n))
      })
      let rounds = 0
      while (tr.step._tag === "Send" && rounds++ < 5) {
        const reply = yield* Effect.promise(() => c.command(tr.step._tag === "Send" ? tr.step.line : ""))
        const decoded = ReplyDecoder.decode(Bytes.fromLatin1(reply), 0)
        if (decoded._tag !== "Reply") throw new Error(`bad reply ${reply}`)
        if (decoded.reply.code === 235) expect(reply).toBe("235 2.7.0 Authentication successful\r\n")
        tr = Client.receive(tr.state, decoded.reply)
      }
      expect(tr.step._tag).toBe("Success")
      expect(yield* Effect.promise(() => c.command("MAIL FROM:<alice@client.example>"))).toBe("250 2.1.0 Sender ok\r\n")
      expect(yield* Effect.promise(() => c.command("RCPT TO:<z@far.example>"))).toBe("250 2.1.5 Recipient ok\r\n")
      expect(yield* Effect.promise(() => c.command("DATA"))).toBe("354 End data with <CR><LF>.<CR><LF>\r\n")
      const done = yield* Effect.promise(() => c.command("Subject: scram\r\n\r\nok\r\n."))
      const [env] = yield* Effect.promise(e.received)
      expect(done).toBe(`${queuedAs(env!.id)}\r\n`)
      expect(env!.client).toMatchObject({ auth: "alice", protocol: "ESMTPSA", ehlo: "scram.example" })
      expect(text(env!.message)).toBe("Subject: scram\r\n\r\nok\r\n")
      c.destroy()
    }))
})

describe("swaks", () => {
  const swaks = (port: number, extra: ReadonlyArray<string>) =>
    runProgram("swaks", [
      "--server", "127.0.0.1", "--port", String(port),
      "--from", "sw@client.example", "--to", "rcpt@mx.test.example",
      "--helo", "swaks.client.example",
      "--data", "Subject: swaks\\n\\n.dot line\\nbody\\n",
      "--timeout", "10",
      ...extra
    ])

  it.live("plain", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const r = yield* Effect.promise(() => swaks(e.port, []))
      const [env] = yield* Effect.promise(e.received)
      expect(r.code, r.stdout + r.stderr).toBe(0)
      expect(r.stdout).toContain(`<-  ${queuedAs(env!.id)}`)
      expect(r.stdout).toContain("<-  221 2.0.0 Bye")
      expect(env).toMatchObject({ sender: "sw@client.example", recipients: ["rcpt@mx.test.example"] })
      expect(env!.client.ehlo).toBe("swaks.client.example")
      expect(text(env!.message)).toBe("Subject: swaks\r\n\r\n.dot line\r\nbody\r\n\r\n")
    }))

  it.live("-tls", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: tlsListen() })
      const r = yield* Effect.promise(() => swaks(e.port, ["-tls"]))
      const [env] = yield* Effect.promise(e.received)
      expect(r.code, r.stdout + r.stderr).toBe(0)
      expect(r.stdout).toContain("<-  220 2.0.0 Ready to start TLS")
      expect(r.stdout).toContain(`<~  ${queuedAs(env!.id)}`)
      expect(env!.client.protocol).toBe("ESMTPS")
      expect(text(env!.message)).toBe("Subject: swaks\r\n\r\n.dot line\r\nbody\r\n\r\n")
    }))

  it.live("-tls -a PLAIN", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: tlsListen(), users: users(), session: { authMechanisms: ALL_MECHS } })
      const r = yield* Effect.promise(() => swaks(e.port, ["-tls", "-a", "PLAIN", "-au", "bob", "-ap", PASSWORD]))
      const [env] = yield* Effect.promise(e.received)
      expect(r.code, r.stdout + r.stderr).toBe(0)
      expect(r.stdout).toContain("<~  235 2.7.0 Authentication successful")
      expect(env!.client).toMatchObject({ auth: "bob", protocol: "ESMTPSA" })
    }))

  it.live("-a PLAIN without TLS: PLAIN is not advertised in plaintext, swaks gives up, nothing queued", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: tlsListen(), users: users(), session: { authMechanisms: ALL_MECHS } })
      const r = yield* Effect.promise(() => swaks(e.port, ["-a", "PLAIN", "-au", "bob", "-ap", PASSWORD]))
      expect(r.code).not.toBe(0)
      expect(r.stdout).toContain("<-  250-STARTTLS\n<-  250 AUTH SCRAM-SHA-256 CRAM-MD5\n")
      expect(r.stdout + r.stderr).toContain("Auth not attempted, requested type not available")
      expect(yield* Effect.promise(e.received)).toHaveLength(0)
    }))

  it.live("--pipeline", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const r = yield* Effect.promise(() => swaks(e.port, ["--pipeline"]))
      const [env] = yield* Effect.promise(e.received)
      expect(r.code, r.stdout + r.stderr).toBe(0)
      // swaks sent MAIL, RCPT and DATA in one go, then read the three replies
      expect(r.stdout).toContain(
        " -> MAIL FROM:<sw@client.example>\n -> RCPT TO:<rcpt@mx.test.example>\n -> DATA\n" +
          "<-  250 2.1.0 Sender ok\n<-  250 2.1.5 Recipient ok\n<-  354 End data with <CR><LF>.<CR><LF>\n"
      )
      expect(r.stdout).toContain(`<-  ${queuedAs(env!.id)}`)
      expect(text(env!.message)).toBe("Subject: swaks\r\n\r\n.dot line\r\nbody\r\n\r\n")
    }))
})

describe("python smtplib", () => {
  const script = `
import smtplib, ssl, sys
port, mode, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.client.example", timeout=10)
s.ehlo()
if mode in ("starttls", "login"):
    ctx = ssl.create_default_context(cafile=cafile)
    code, msg = s.starttls(context=ctx)
    print("STARTTLS", code, msg.decode())
    s.ehlo()
if mode == "login":
    code, msg = s.login("alice", "${PASSWORD}")
    print("LOGIN", code, msg.decode())
msg = b"Subject: py\\r\\n\\r\\n.dot\\r\\nline\\r\\n"
refused = s.sendmail("py@client.example", ["one@mx.test.example", "two@mx.test.example"], msg)
print("REFUSED", refused)
code, msg = s.docmd("NOOP")
print("NOOP", code, msg.decode())
print("QUIT", s.quit())
`
  const py = (port: number, mode: string) => runProgram("python3", ["-c", script, String(port), mode, path.join(dir, "ca.pem")])

  for (const mode of ["plain", "starttls", "login"] as const) {
    it.live(mode, () =>
      Effect.gen(function*() {
        const e = yield* startEdge(mode === "plain" ? {} : { listen: tlsListen(), users: users(), session: { authMechanisms: ALL_MECHS } })
        const r = yield* Effect.promise(() => py(e.port, mode))
        expect(r.code, r.stdout + r.stderr).toBe(0)
        const [env] = yield* Effect.promise(e.received)
        expect(env).toMatchObject({ sender: "py@client.example", recipients: ["one@mx.test.example", "two@mx.test.example"] })
        expect(text(env!.message)).toBe("Subject: py\r\n\r\n.dot\r\nline\r\n")
        const lines = r.stdout.split("\n")
        expect(lines).toContain("REFUSED {}")
        expect(lines).toContain("NOOP 250 2.0.0 Ok")
        expect(lines).toContain("QUIT (221, b'2.0.0 Bye')")
        if (mode !== "plain") expect(lines).toContain("STARTTLS 220 2.0.0 Ready to start TLS")
        // smtplib prefers CRAM-MD5 among what we offer
        if (mode === "login") expect(lines).toContain("LOGIN 235 2.7.0 Authentication successful")
        expect(env!.client.protocol).toBe(mode === "plain" ? "ESMTP" : mode === "starttls" ? "ESMTPS" : "ESMTPSA")
        expect(env!.client.ehlo).toBe("py.client.example")
      }))
  }
})

describe("openssl s_client -starttls smtp", () => {
  it.live("EHLO/MAIL/RCPT/DATA driven by stdin after the handshake", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({ listen: tlsListen() })
      const steps: ReadonlyArray<readonly [number, string]> = [
        [300, "EHLO ossl.client.example\n"],
        [100, "MAIL FROM:<o@client.example>\n"],
        [100, "RCPT TO:<r@mx.test.example>\n"],
        [100, "DATA\n"],
        [100, "Subject: ossl\n\n..stuffed\nbody\n.\n"],
        [200, "QUIT\n"],
        [300, ""]
      ]
      const r = yield* Effect.promise(() =>
        runProgram(
          "openssl",
          ["s_client", "-connect", `127.0.0.1:${e.port}`, "-starttls", "smtp", "-name", "ossl.client.example",
            "-CAfile", path.join(dir, "ca.pem"), "-verify_return_error", "-servername", HOST, "-quiet", "-crlf"],
          { stdinChunks: steps, timeoutMs: 15_000 }
        )
      )
      const [env] = yield* Effect.promise(e.received)
      expect(env, r.stdout + r.stderr).toBeDefined()
      expect(r.stdout).toBe(
        ehloReply([...baseKeywords, "REQUIRETLS"]) +
          "250 2.1.0 Sender ok\r\n" +
          "250 2.1.5 Recipient ok\r\n" +
          "354 End data with <CR><LF>.<CR><LF>\r\n" +
          `${queuedAs(env!.id)}\r\n` +
          "221 2.0.0 Bye\r\n"
      )
      expect(env).toMatchObject({ sender: "o@client.example", recipients: ["r@mx.test.example"] })
      expect(env!.client).toMatchObject({ ehlo: "ossl.client.example", protocol: "ESMTPS" })
      expect(text(env!.message)).toBe("Subject: ossl\r\n\r\n.stuffed\r\nbody\r\n")
    }))
})

describe("postfix smtp-source", () => {
  it.live("-s 10 -m 200: all 200 accepted, exact bytes", () =>
    Effect.gen(function*() {
      const e = yield* startEdge()
      const file = path.join(dir, "smtp-source.msg")
      fs.writeFileSync(file, "Subject: load\nX-Test: smtp-source\n\n.leading dot\nbody\n")
      const r = yield* Effect.promise(() =>
        runProgram("/usr/sbin/smtp-source", [
          "-s", "10", "-m", "200", "-M", "source.client.example",
          "-f", "load@client.example", "-t", "sink@mx.test.example", "-F", file,
          `127.0.0.1:${e.port}`
        ], { timeoutMs: 30_000 })
      )
      expect(r.code, r.stdout + r.stderr).toBe(0)
      const got = yield* Effect.promise(e.received)
      expect(got).toHaveLength(200)
      for (const env of got) {
        expect(env.sender).toBe("load@client.example")
        expect(env.recipients).toEqual(["sink@mx.test.example"])
        // smtp-source puts an empty line before the final dot
        expect(text(env.message)).toBe("Subject: load\r\nX-Test: smtp-source\r\n\r\n.leading dot\r\nbody\r\n\r\n")
        expect(env.client).toMatchObject({ ehlo: "source.client.example", protocol: "SMTP" })
      }
      expect(new Set(got.map((g) => g.id)).size).toBe(200)
      expect(yield* e.edge.connections).toBe(0)
    }))
})
