/**
 * One message through the real `mailroom serve` to each relay type's real
 * downstream: MX (dnsmasq answering the MX and A records, postfix's
 * smtp-sink as the MX host), LMTP (Dovecot delivering into Maildir), pipe
 * (Courier maildrop), HTTP (a web endpoint speaking slimta's protocol).
 * Maildir, smarthost and blackhole are covered by Serve.test.ts and
 * ServeRelays.test.ts.
 */
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { simpleParser } from "mailparser"
import nodemailer from "nodemailer"
import { afterAll, describe, expect, it } from "vitest"
import { startDnsmasq } from "../support/dnsmasq.ts"
import { startDovecot } from "../support/dovecot.ts"
import { nodeHost, startServer, stopServer, waitFor } from "../support/hosts.ts"
import { freePort, removeDir, tempDir } from "../support/ports.ts"
import { startSmtpSink } from "../support/smtpSink.ts"


const cleanups: Array<() => Promise<void> | void> = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

/** Starts `mailroom serve` with `relay` (a YAML flow mapping) and sends one message; returns the server log. */
const serveAndSend = async (relay: string, to: string, subject: string): Promise<{ log: () => string; stop: () => Promise<void> }> => {
  const dir = tempDir("mailroom-each-")
  const port = await freePort()
  fs.writeFileSync(
    path.join(dir, "mailroom.yaml"),
    `hostname: each.mailroom.test
smtp: [{ listen: "127.0.0.1:${port}" }]
queue: { storage: { type: disk, path: var/queue }, retry: { intervals: [1s] } }
relay: ${relay}
`
  )
  const server = await startServer(nodeHost, "mailroom.yaml", dir, port)
  const stop = async () => {
    await stopServer(server)
    removeDir(dir)
  }
  cleanups.push(stop)
  const t = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true })
  const r = await t.sendMail({ from: "sender@origin.example", to, subject, text: `via ${relay}` })
  expect(r.response).toMatch(/^250 2\.6\.0 Ok: queued as /)
  return { log: server.log, stop }
}

describe("mailroom serve delivers through each relay type to its real downstream", () => {
  it("mx: MX lookup through dnsmasq, delivery to smtp-sink on the MX host", async () => {
    const sink = await startSmtpSink({ host: "127.0.0.7" })
    cleanups.push(() => sink.stop())
    const dns = await startDnsmasq(["dest.test"], ["--mx-host=dest.test,mx.dest.test,10", "--host-record=mx.dest.test,127.0.0.7"])
    cleanups.push(() => dns.stop())
    const s = await serveAndSend(`{ type: mx, port: ${sink.port}, resolver: "${dns.server}", tls: opportunistic }`, "user@dest.test", "via mx")
    const got = await waitFor("the message at the MX host", () => sink.messages().find((m) => m.includes("Subject: via mx")), { log: s.log })
    expect(got).toContain("Received: from ")
    // the delivery line may reach the log a moment after smtp-sink has the message (Node batches log writes)
    const line = await waitFor("the delivery log line", () => /event=delivery .*delivered=1 .*/.exec(s.log())?.[0], { log: s.log })
    expect(line).toMatch(/remote="dns; mx\.dest\.test" tls=none/)
    await s.stop()
  }, 60_000)

  it("lmtp: Dovecot delivers into the user's Maildir", async () => {
    const dovecot = await startDovecot(["alice"])
    cleanups.push(() => dovecot.stop())
    const s = await serveAndSend(`{ type: lmtp, host: 127.0.0.1, port: ${dovecot.port} }`, "alice@example.test", "via lmtp")
    const files = await waitFor("Dovecot's delivery", () => (dovecot.delivered("alice").length > 0 ? dovecot.delivered("alice") : undefined), { log: s.log })
    const mail = await simpleParser(files[0]!)
    expect(mail.subject).toBe("via lmtp")
    await s.stop()
  }, 60_000)

  it("pipe: Courier maildrop with the message on stdin, arguments never through a shell", async () => {
    const base = tempDir("mailroom-maildrop-")
    cleanups.push(() => removeDir(base))
    const maildir = path.join(base, "Maildir")
    for (const sub of ["tmp", "new", "cur"]) fs.mkdirSync(path.join(maildir, sub), { recursive: true })
    const filter = path.join(base, "filter")
    fs.writeFileSync(filter, `to "${maildir}/"\n`, { mode: 0o600 })
    const s = await serveAndSend(`{ type: pipe, command: [maildrop, ${JSON.stringify(filter)}], per_recipient: false, timeout: 20s }`, "bob@example.test", "via pipe")
    const file = await waitFor("maildrop's delivery", () => fs.readdirSync(path.join(maildir, "new"))[0], { log: s.log })
    const mail = await simpleParser(fs.readFileSync(path.join(maildir, "new", file)))
    expect(mail.subject).toBe("via pipe")
    await s.stop()
  }, 60_000)

  it("http: POST message/rfc822 with base64 envelope headers", async () => {
    const posts: Array<{ sender: string; recipients: Array<string>; body: string }> = []
    const server = http.createServer((req, res) => {
      let body = ""
      req.on("data", (d) => (body += d))
      req.on("end", () => {
        const b64 = (h: string | string[] | undefined) => String(h ?? "").split(/\s*,\s*/).filter(Boolean).map((v) => Buffer.from(v, "base64").toString("utf8"))
        posts.push({ sender: b64(req.headers["x-envelope-sender"])[0] ?? "", recipients: b64(req.headers["x-envelope-recipient"]), body })
        res.writeHead(204, { "X-Smtp-Reply": `250; message="2.6.0 Message accepted for delivery"` })
        res.end()
      })
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/deliver`
    const s = await serveAndSend(`{ type: http, url: "${url}" }`, "carol@example.test", "via http")
    const post = await waitFor("the POST", () => posts[0], { log: s.log })
    expect(post.sender).toBe("sender@origin.example")
    expect(post.recipients).toEqual(["carol@example.test"])
    expect(post.body).toContain("Subject: via http")
    await s.stop()
  }, 60_000)
})
