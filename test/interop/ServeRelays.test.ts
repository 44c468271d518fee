/**
 * The real `mailroom serve` relaying through its durable queue to a real
 * downstream SMTP server that answers each recipient differently: one is
 * delivered, one deferred (then delivered on the retry, and only it), one
 * refused, whose DSN goes back to the sender and is checked with
 * mailparser. Also the HTTP edge and a sender deny rule, from the same
 * config file.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import * as Decision from "@mailroom/protocol/policy/Decision"
import * as Reply from "@mailroom/protocol/smtp/Reply"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { type SimpleParserOptions, simpleParser } from "mailparser"
import nodemailer from "nodemailer"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { hosts, type Server, startServer, stopServer, waitFor } from "../support/hosts.ts"
import { freePort, removeDir, tempDir } from "../support/ports.ts"
import { type RunningEdge, startEdge } from "./EdgeHarness.ts"


describe.each(hosts)("mailroom serve relaying to a real downstream, the HTTP edge, and rules ($name host)", (host) => {
  let dir: string
  let scope: Scope.Closeable
  let downstream: RunningEdge
  let server: Server
  let smtpPort: number
  let httpPort: number
  /** Deferred once, then accepted. */
  let laterAttempts = 0

  beforeAll(async () => {
    dir = tempDir("mailroom-relays-")
    scope = Effect.runSync(Scope.make())
    downstream = await Effect.runPromise(
      startEdge({
        edge: {
          validators: {
            rcpt: (_facts, rcpt) =>
              Effect.sync(() => {
                if (rcpt.local === "no") return Decision.reject(Reply.make(550, "5.1.1", "No such user here"))
                if (rcpt.local === "later" && laterAttempts++ === 0) return Decision.reject(Reply.make(451, "4.2.1", "Mailbox busy, try later"))
                return Decision.accept
              })
          }
        }
      }).pipe(Scope.provide(scope))
    )
    smtpPort = await freePort()
    httpPort = await freePort()
    fs.writeFileSync(
      path.join(dir, "mailroom.yaml"),
      `hostname: relay.mailroom.test
smtp:
  - listen: "127.0.0.1:${smtpPort}"
    rules:
      senders: { deny: ["@spammer.example"] }
http:
  listen: "127.0.0.1:${httpPort}"
  json_path: /send
queue:
  storage: { type: disk, path: var/queue }
  retry: { intervals: [1s] }
relay:
  type: static
  host: 127.0.0.1
  port: ${downstream.port}
  tls: none
log: { level: info }
`
    )
    server = await startServer(host, "mailroom.yaml", dir, [smtpPort, httpPort])
  }, 60_000)

  afterAll(async () => {
    if (server) await stopServer(server)
    if (scope) await Effect.runPromise(Scope.close(scope, Exit.void))
    if (dir) removeDir(dir)
  })

  it("delivers, retries only the deferred recipient, and bounces the refused one with an RFC 3464 DSN", async () => {
    const t = nodemailer.createTransport({ host: "127.0.0.1", port: smtpPort, secure: false, ignoreTLS: true })
    const r = await t.sendMail({
      envelope: { from: "alice@sender.example", to: ["ok@dest.example", "later@dest.example", "no@dest.example"] },
      from: "alice@sender.example",
      to: "ok@dest.example",
      subject: "mixed results",
      text: "one of each"
    })
    expect(r.response).toMatch(/^250 2\.6\.0 Ok: queued as /)
    const received = await waitFor("the retry and the DSN", async () => {
      const got = await downstream.received()
      const toLater = got.filter((e) => e.recipients.includes("later@dest.example"))
      const dsn = got.filter((e) => e.sender === "")
      return toLater.length === 1 && dsn.length === 1 ? got : undefined
    })
    const original = received.filter((e) => e.sender === "alice@sender.example")
    // first attempt: ok@ delivered (the downstream refused the others at RCPT); retry: later@ only
    expect(original.map((e) => e.recipients)).toEqual([["ok@dest.example"], ["later@dest.example"]])
    expect(laterAttempts).toBe(2)
    const dsn = received.find((e) => e.sender === "")!
    expect(dsn.recipients).toEqual(["alice@sender.example"])
    const mail = await simpleParser(Buffer.from(dsn.message), { keepDeliveryStatus: true } as SimpleParserOptions)
    expect(mail.subject).toBe("Undelivered Mail Returned to Sender")
    expect(String(mail.headers.get("content-type") && (mail.headers.get("content-type") as { value: string }).value)).toBe("multipart/report")
    const status = mail.attachments.find((a) => a.contentType === "message/delivery-status")
    expect(status).toBeDefined()
    const fields = status!.content.toString("latin1")
    expect(fields).toContain("Reporting-MTA: dns; relay.mailroom.test")
    expect(fields).toContain("Final-Recipient: rfc822; no@dest.example")
    expect(fields).toContain("Action: failed")
    expect(fields).toContain("Status: 5.1.1")
    expect(fields).toMatch(/Diagnostic-Code: smtp; 550 5\.1\.1 No such user here/)
    expect(fields).not.toContain("later@dest.example")
    expect(fields).not.toContain("ok@dest.example")
    const returned = mail.attachments.find((a) => a.contentType === "message/rfc822")
    expect(returned?.content.toString("latin1")).toContain("Subject: mixed results")
    // the delivery line may reach the log a moment after the DSN (Node batches log writes)
    await waitFor("the delivery log line", () => /event=delivery id=\S+ attempt=1 delivered=1 deferred=1 bounced=1/.exec(server.log())?.[0], {
      log: server.log
    })
  }, 60_000)

  it("the HTTP edge takes a slimta-style POST and a JSON submission into the same queue", async () => {
    const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64")
    const res = await fetch(`http://127.0.0.1:${httpPort}/`, {
      method: "POST",
      headers: {
        "content-type": "message/rfc822",
        "x-envelope-sender": b64("web@sender.example"),
        "x-envelope-recipient": b64("ok@dest.example"),
        "x-ehlo": "webapp.example"
      },
      body: "Subject: over http\r\n\r\nhello\r\n"
    })
    expect(res.status).toBe(200)
    expect(res.headers.get("x-smtp-reply")).toMatch(/^250; message="2\.6\.0 /)
    const json = await fetch(`http://127.0.0.1:${httpPort}/send`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ from: "app@sender.example", to: ["ok@dest.example"], subject: "über json", text: "hi" })
    })
    expect(json.status).toBe(200)
    const got = await waitFor("both HTTP messages downstream", async () => {
      const all = await downstream.received()
      const http = all.filter((e) => e.sender === "web@sender.example" || e.sender === "app@sender.example")
      return http.length === 2 ? http : undefined
    })
    const composed = await simpleParser(Buffer.from(got.find((e) => e.sender === "app@sender.example")!.message))
    expect(composed.subject).toBe("über json")
    expect(String(composed.headers.get("received"))).toMatch(/with HTTP/)
    const refused = await fetch(`http://127.0.0.1:${httpPort}/`, { method: "GET" })
    expect(refused.status).toBe(405)
    expect(refused.headers.get("allow")).toBe("POST")
  }, 30_000)

  it("a sender deny rule refuses MAIL with 550 5.7.1", async () => {
    const t = nodemailer.createTransport({ host: "127.0.0.1", port: smtpPort, secure: false, ignoreTLS: true })
    await expect(t.sendMail({ from: "x@spammer.example", to: "ok@dest.example", subject: "no", text: "no" })).rejects.toThrow(
      /550 5\.7\.1 Sender <x@spammer\.example> not allowed/
    )
  })
})
