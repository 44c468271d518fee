/**
 * The policies of `smtp[].rules` in the real `mailroom serve`, with the
 * resolver of `dns` pointed at a real DNS server (dnsmasq on loopback):
 * SPF refuses a sender whose domain forbids us and marks an accepted
 * message with Received-SPF; a DNS blocklist listing the client refuses it
 * with the list's TXT reason. On Node- and Deno-hosted Mailroom alike.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { simpleParser } from "mailparser"
import nodemailer from "nodemailer"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Dnsmasq, startDnsmasq } from "../support/dnsmasq.ts"
import { hosts, type Server, startServer, stopServer, waitFor } from "../support/hosts.ts"
import { freePort, removeDir, tempDir } from "../support/ports.ts"

let dns: Dnsmasq
beforeAll(async () => {
  dns = await startDnsmasq(["spf.test", "bl.test"], [
    `--txt-record=allowed.spf.test,v=spf1 ip4:127.0.0.0/8 -all`,
    `--txt-record=forbidden.spf.test,v=spf1 ip4:192.0.2.0/24 -all`,
    // 127.0.0.1 is listed in bl.test
    "--host-record=1.0.0.127.bl.test,127.0.0.2",
    `--txt-record=1.0.0.127.bl.test,Listed for testing`
  ])
}, 30_000)
afterAll(async () => {
  await dns?.stop()
})

describe.each(hosts)("mailroom serve: SPF and DNSBL rules over a real DNS server ($name host)", (host) => {
  let dir: string
  let server: Server
  let spfPort: number
  let blPort: number

  beforeAll(async () => {
    dir = tempDir("mailroom-rules-")
    spfPort = await freePort()
    blPort = await freePort()
    fs.writeFileSync(
      path.join(dir, "mailroom.yaml"),
      `hostname: rules.mailroom.test
smtp:
  - listen: "127.0.0.1:${spfPort}"
    rules: { spf: { reject: [fail] } }
  - listen: "127.0.0.1:${blPort}"
    rules: { dnsbl: { zones: [bl.test], at: mail } }
queue: { storage: { type: memory } }
relay: { type: maildir, path: var/mail }
dns: { resolver: ["${dns.server}"], timeout: 2s, tries: 1 }
`
    )
    server = await startServer(host, "mailroom.yaml", dir, [spfPort, blPort])
  }, 60_000)

  afterAll(async () => {
    if (server) await stopServer(server)
    if (dir) removeDir(dir)
  })

  const send = (port: number, from: string, to: string, subject: string) =>
    nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true }).sendMail({ from, to, subject, text: "x" })

  it("SPF: a sender whose domain forbids this client is refused at MAIL; a permitted one gets Received-SPF: pass", async () => {
    await expect(send(spfPort, "a@forbidden.spf.test", "bob@localhost", "forbidden")).rejects.toThrow(/550 5\.7\.23 SPF check failed/)
    const ok = await send(spfPort, "a@allowed.spf.test", "carol@localhost", "allowed")
    expect(ok.response).toMatch(/^250 2\.6\.0 /)
    const box = path.join(dir, "var", "mail", "carol@localhost", "new")
    const file = await waitFor("the delivery", () => (fs.existsSync(box) ? fs.readdirSync(box)[0] : undefined), { log: server.log })
    const mail = await simpleParser(fs.readFileSync(path.join(box, file)))
    expect(String(mail.headers.get("received-spf"))).toMatch(/^pass /)
  })

  it("DNSBL: a listed client is refused with the list's reason", async () => {
    await expect(send(blPort, "a@example.test", "bob@localhost", "listed")).rejects.toThrow(
      /554 5\.7\.1 Service unavailable; client \[127\.0\.0\.1\] blocked using bl\.test; Listed for testing/
    )
  })
})
