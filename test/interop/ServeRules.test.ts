/**
 * The policies of `smtp[].rules` in the real `mailroom serve`, with the
 * resolver of `dns` pointed at a real DNS server (dnsmasq on loopback):
 * SPF refuses a sender whose domain forbids us and marks an accepted
 * message with Received-SPF; a DNS blocklist listing the client refuses it
 * with the list's TXT reason. On Node- and Deno-hosted Mailroom alike.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { simpleParser } from "mailparser"
import nodemailer from "nodemailer"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Dnsmasq, startDnsmasq } from "../support/dnsmasq.ts"
import { hosts } from "../support/hosts.ts"
import { freePort, removeDir, tempDir, waitForPort } from "../support/ports.ts"

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
  let child: ChildProcess
  let log = ""
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
    child = spawn(host.command, [...host.args, "serve", "--config", "mailroom.yaml"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })
    child.stdout!.on("data", (d) => (log += d))
    child.stderr!.on("data", (d) => (log += d))
    await waitForPort("127.0.0.1", spfPort, 15_000).catch((e) => {
      throw new Error(`${e}\n${log}`)
    })
    await waitForPort("127.0.0.1", blPort, 15_000)
  }, 60_000)

  afterAll(async () => {
    if (child && child.exitCode === null) {
      await new Promise((r) => {
        child.once("exit", r)
        child.kill("SIGTERM")
      })
    }
    if (dir) removeDir(dir)
  })

  const send = (port: number, from: string, to: string, subject: string) =>
    nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true }).sendMail({ from, to, subject, text: "x" })

  it("SPF: a sender whose domain forbids this client is refused at MAIL; a permitted one gets Received-SPF: pass", async () => {
    await expect(send(spfPort, "a@forbidden.spf.test", "bob@localhost", "forbidden")).rejects.toThrow(/550 5\.7\.23 SPF check failed/)
    const ok = await send(spfPort, "a@allowed.spf.test", "carol@localhost", "allowed")
    expect(ok.response).toMatch(/^250 2\.6\.0 /)
    const box = path.join(dir, "var", "mail", "carol@localhost", "new")
    const until = Date.now() + 15_000
    while (!(fs.existsSync(box) && fs.readdirSync(box).length > 0)) {
      if (Date.now() > until) throw new Error(`not delivered\n${log}`)
      await new Promise((r) => setTimeout(r, 50))
    }
    const mail = await simpleParser(fs.readFileSync(path.join(box, fs.readdirSync(box)[0]!)))
    expect(String(mail.headers.get("received-spf"))).toMatch(/^pass /)
  })

  it("DNSBL: a listed client is refused with the list's reason", async () => {
    await expect(send(blPort, "a@example.test", "bob@localhost", "listed")).rejects.toThrow(
      /554 5\.7\.1 Service unavailable; client \[127\.0\.0\.1\] blocked using bl\.test; Listed for testing/
    )
  })
})
