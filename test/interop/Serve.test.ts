/**
 * `mailroom serve` as a new user meets it: the real command, a config file,
 * real clients (swaks, nodemailer) over loopback, and what arrives in the
 * Maildir checked with mailparser. Then the crash test: the real process
 * under load, killed with SIGKILL at random moments and restarted; every
 * message that got a 250 must be delivered at least once.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { simpleParser } from "mailparser"
import nodemailer from "nodemailer"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { makeCa, type TestCa } from "../support/certs.ts"
import { freePort, removeDir, tempDir, waitForPort } from "../support/ports.ts"
import { hosts, type Server, startServer, stopServer, waitFor } from "../support/hosts.ts"
import { startSmtpSink } from "../support/smtpSink.ts"
import { load } from "../support/smtpLoad.ts"


const swaks = (args: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolve, reject) =>
    execFile("swaks", [...args], { timeout: 20_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`swaks failed: ${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout + stderr)
    )
  )

const maildirFiles = (dir: string): Array<string> => {
  if (!fs.existsSync(dir)) return []
  return fs.readdirSync(dir).flatMap((box) => {
    const nd = path.join(dir, box, "new")
    return fs.existsSync(nd) ? fs.readdirSync(nd).map((f) => path.join(nd, f)) : []
  })
}

describe.each(hosts)("mailroom serve with a config file ($name host)", (host) => {
  let dir: string
  let ca: TestCa
  let server: Server
  let mxPort: number
  let subPort: number

  beforeAll(async () => {
    dir = tempDir("mailroom-serve-")
    ca = makeCa()
    const cert = ca.issue("mx.mailroom.test", ["DNS:mx.mailroom.test", "DNS:localhost", "IP:127.0.0.1"])
    fs.writeFileSync(path.join(dir, "cert.pem"), cert.cert)
    fs.writeFileSync(path.join(dir, "key.pem"), cert.key)
    fs.writeFileSync(
      path.join(dir, "users"),
      "# test users\nalice:{PLAIN}wonderland\nbob:pbkdf2-sha256$4096$c2FsdHNhbHQ=$" +
        Buffer.from(
          await import("@noble/hashes/pbkdf2.js").then(async (m) =>
            m.pbkdf2((await import("@noble/hashes/sha2.js")).sha256, "builder", Buffer.from("saltsalt"), { c: 4096, dkLen: 32 })
          )
        ).toString("base64") + "\n"
    )
    mxPort = await freePort()
    subPort = await freePort()
    fs.writeFileSync(
      path.join(dir, "mailroom.yaml"),
      `hostname: mx.mailroom.test
smtp:
  - listen: "127.0.0.1:${mxPort}"
    tls: { cert: cert.pem, key: key.pem }
    command_timeout: 10s
  - listen: "127.0.0.1:${subPort}"
    tls: { cert: cert.pem, key: key.pem }
    auth: { users_file: users, mechanisms: [PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256] }
    require_auth: true
queue:
  storage: { type: disk, path: var/queue }
relay: { type: maildir, path: var/mail }
`
    )
    server = await startServer(host, "mailroom.yaml", dir, mxPort)
    await waitForPort("127.0.0.1", subPort)
  }, 60_000)

  afterAll(async () => {
    if (server) await stopServer(server)
    ca?.dispose()
    if (dir) removeDir(dir)
  })

  it("swaks, plain and STARTTLS: queued with a 250 and delivered to the Maildir", async () => {
    const out = await swaks(["--server", `127.0.0.1:${mxPort}`, "--to", "carol@localhost", "--from", "dave@example.test", "--h-Subject", "plain swaks"])
    expect(out).toMatch(/<-  250 2\.6\.0 Ok: queued as [0-9a-z]+/)
    const tls = await swaks(["--server", `127.0.0.1:${mxPort}`, "-tls", "--to", "erin@localhost", "--from", "dave@example.test", "--h-Subject", "tls swaks"])
    expect(tls).toMatch(/<-  220 2\.0\.0 Ready to start TLS/)
    expect(tls).toMatch(/<~  250 2\.6\.0 Ok: queued as/)
    const file = await waitFor("erin's mail", () => maildirFiles(path.join(dir, "var", "mail")).find((f) => f.includes("erin@localhost")))
    const mail = await simpleParser(fs.readFileSync(file))
    expect(mail.subject).toBe("tls swaks")
    const received = String(mail.headers.get("received") ?? "")
    expect(received).toMatch(/by mx\.mailroom\.test \(Mailroom\) with ESMTPS id/)
    expect((mail.headers.get("delivered-to") as { text: string }).text).toBe("erin@localhost")
  })

  it("nodemailer: plain, STARTTLS with AUTH on the submission listener, several messages on one connection", async () => {
    const plain = nodemailer.createTransport({ host: "127.0.0.1", port: mxPort, secure: false, ignoreTLS: true })
    const r1 = await plain.sendMail({ from: "frank@example.test", to: "grace@localhost", subject: "nodemailer plain", text: "hi" })
    expect(r1.response).toMatch(/^250 2\.6\.0 Ok: queued as/)
    for (const method of ["PLAIN", "LOGIN", "CRAM-MD5"]) {
      const sub = nodemailer.createTransport({
        host: "127.0.0.1",
        port: subPort,
        secure: false,
        requireTLS: true,
        tls: { ca: [ca.cert], servername: "mx.mailroom.test" },
        auth: method === "CRAM-MD5" ? { user: "alice", pass: "wonderland", method } : { user: "bob", pass: "builder", method },
        authMethod: method
      })
      const r = await sub.sendMail({ from: "bob@example.test", to: `heidi-${method.toLowerCase()}@localhost`, subject: `auth ${method}`, text: "x" })
      expect(r.response).toMatch(/^250 2\.6\.0 Ok: queued as/)
      sub.close()
    }
    const pooled = nodemailer.createTransport({
      pool: true,
      maxConnections: 1,
      host: "127.0.0.1",
      port: subPort,
      requireTLS: true,
      tls: { ca: [ca.cert], servername: "mx.mailroom.test" },
      auth: { user: "alice", pass: "wonderland" }
    })
    const sent = await Promise.all([1, 2, 3].map((n) => pooled.sendMail({ from: "alice@example.test", to: `ivan${n}@localhost`, subject: `pooled ${n}`, text: "x" })))
    for (const r of sent) expect(r.response).toMatch(/^250 /)
    pooled.close()
    // one session carried all three (logged when it closes)
    await waitFor("the pooled session's log line", () =>
      server.log().split("\n").some((l) => l.includes("event=session") && l.includes("auth=alice") && l.includes("messages=3")) ? true : undefined)
    await waitFor("pooled mail", () => (maildirFiles(path.join(dir, "var", "mail")).filter((f) => /ivan\d@localhost/.test(f)).length === 3 ? true : undefined))
    const cram = maildirFiles(path.join(dir, "var", "mail")).find((f) => f.includes("heidi-cram-md5"))!
    const mail = await simpleParser(fs.readFileSync(cram))
    expect(String(mail.headers.get("received"))).toMatch(/with ESMTPSA id/)
  })

  it("the submission listener refuses unauthenticated MAIL", async () => {
    const out = await swaks(["--server", `127.0.0.1:${subPort}`, "-tls", "--to", "x@localhost", "--from", "y@example.test", "--quit-after", "MAIL"]).catch((e: Error) => e.message)
    expect(out).toMatch(/530 5\.7\.0 Authentication required/)
  })

  it("stops gracefully on SIGTERM and exits 0", async () => {
    const code = await stopServer(server)
    expect(code).toBe(0)
    expect(server.log()).toMatch(/event="shutting down" signal=SIGTERM/)
  })
})

describe.each(hosts)("mailroom serve: certificate reload and LMTP on a Unix socket ($name host)", (host) => {
  it("SIGHUP swaps the certificate for new handshakes and keeps live connections", async () => {
    const dir = tempDir("mailroom-reload-")
    const ca = makeCa()
    const { connect } = await import("node:tls")
    try {
      const first = ca.issue("first.mailroom.test", ["DNS:first.mailroom.test", "IP:127.0.0.1"])
      const second = ca.issue("second.mailroom.test", ["DNS:second.mailroom.test", "IP:127.0.0.1"])
      fs.writeFileSync(path.join(dir, "cert.pem"), first.cert)
      fs.writeFileSync(path.join(dir, "key.pem"), first.key)
      const port = await freePort()
      fs.writeFileSync(
        path.join(dir, "mailroom.yaml"),
        `smtp: [{ listen: "127.0.0.1:${port}", implicit_tls: true, tls: { cert: cert.pem, key: key.pem } }]
queue: { storage: { type: memory } }
relay: { type: blackhole }
`
      )
      const server = await startServer(host, "mailroom.yaml", dir, port)
      const open = () =>
        new Promise<{ cn: string; socket: import("node:tls").TLSSocket; banner: Promise<string> }>((resolve, reject) => {
          const socket = connect({ host: "127.0.0.1", port, ca: [ca.cert], servername: "localhost", checkServerIdentity: () => undefined })
          let text = ""
          const banner = new Promise<string>((r) => socket.on("data", (d) => {
            text += d
            if (text.includes("\r\n")) r(text)
          }))
          socket.once("secureConnect", () => resolve({ cn: String(socket.getPeerCertificate().subject?.CN), socket, banner }))
          socket.once("error", reject)
        })
      const before = await open()
      expect(before.cn).toBe("first.mailroom.test")
      expect(await before.banner).toMatch(/^220 /)
      fs.writeFileSync(path.join(dir, "cert.pem"), second.cert)
      fs.writeFileSync(path.join(dir, "key.pem"), second.key)
      server.child.kill("SIGHUP")
      await waitFor("the reload", () => (server.log().includes("certificates reloaded") ? true : undefined))
      const after = await open()
      expect(after.cn).toBe("second.mailroom.test")
      // the connection opened before the reload still works
      const reply = await new Promise<string>((resolve) => {
        let text = ""
        before.socket.on("data", (d) => {
          text += d
          if (/^250 /m.test(text)) resolve(text)
        })
        before.socket.write("NOOP\r\n")
      })
      expect(reply).toMatch(/250 2\.0\.0 Ok/)
      before.socket.destroy()
      after.socket.destroy()
      expect(await stopServer(server)).toBe(0)
    } finally {
      ca.dispose()
      removeDir(dir)
    }
  })

  it("an LMTP listener on a Unix socket answers once per recipient (Python's smtplib.LMTP)", async () => {
    const dir = tempDir("mailroom-lmtp-")
    try {
      const sock = path.join(dir, "lmtp.sock")
      const port = await freePort()
      fs.writeFileSync(
        path.join(dir, "mailroom.yaml"),
        `smtp:
  - { listen: "127.0.0.1:${port}" }
  - { listen: "unix:${sock}", mode: lmtp }
queue: { storage: { type: disk, path: var/queue } }
relay: { type: maildir, path: var/mail }
`
      )
      const server = await startServer(host, "mailroom.yaml", dir, port)
      await waitFor("the socket", () => (fs.existsSync(sock) ? true : undefined))
      const script = [
        "import smtplib, sys",
        `c = smtplib.LMTP(${JSON.stringify(sock)})`,
        "c.ehlo_or_helo_if_needed()",
        "c.mail('sender@example.test')",
        "c.rcpt('one@localhost'); c.rcpt('two@localhost')",
        "code, msg = c.docmd('DATA')",
        "assert code == 354, (code, msg)",
        "c.send(b'Subject: lmtp\\r\\n\\r\\nhi\\r\\n.\\r\\n')",
        "print(c.getreply()); print(c.getreply())",
        "c.quit()"
      ].join("\n")
      const out = await new Promise<string>((resolve, reject) =>
        execFile("python3", ["-c", script], { timeout: 20_000 }, (err, stdout, stderr) => (err ? reject(new Error(stderr || err.message)) : resolve(stdout)))
      )
      const lines = out.trim().split("\n")
      expect(lines).toHaveLength(2)
      for (const l of lines) expect(l).toMatch(/^\(250, b'2\.6\.0 Ok: queued as /)
      await waitFor("both deliveries", () =>
        ["one@localhost", "two@localhost"].every((b) => fs.existsSync(path.join(dir, "var", "mail", b, "new")) && fs.readdirSync(path.join(dir, "var", "mail", b, "new")).length === 1) ? true : undefined)
      expect(await stopServer(server)).toBe(0)
    } finally {
      removeDir(dir)
    }
  })
})

// ---------------------------------------------------------------------------
// The crash test
// ---------------------------------------------------------------------------

describe.each(hosts)("crash test: SIGKILL under load ($name host)", (host) => {
  it("delivers every message that got a 250 to a real downstream server, across 8 kill -9 cycles", async () => {
    const dir = tempDir("mailroom-crash-")
    const port = await freePort()
    const sink = await startSmtpSink()
    fs.writeFileSync(
      path.join(dir, "mailroom.yaml"),
      `hostname: crash.mailroom.test
smtp: [{ listen: "127.0.0.1:${port}", max_connections_per_client: 100 }]
queue: { storage: { type: disk, path: var/queue }, retry: { intervals: [1s] } }
relay: { type: static, host: 127.0.0.1, port: ${sink.port}, tls: none }
log: { level: warning }
`
    )
    const accepted = new Set<number>()
    let seq = 0
    try {
      for (let cycle = 0; cycle < 8; cycle++) {
        const server = await startServer(host, "mailroom.yaml", dir, port)
        const runFor = 300 + Math.floor(Math.random() * 500)
        const loading = load(port, seq, Date.now() + runFor + 200, accepted)
        await new Promise((r) => setTimeout(r, runFor))
        await stopServer(server, "SIGKILL")
        await loading
        seq += 100_000
      }
      // A last, clean run drains the queue.
      const server = await startServer(host, "mailroom.yaml", dir, port)
      const delivered = () => {
        const seen = new Set<number>()
        for (const text of sink.messages()) {
          const m = /X-Seq: (\d+)/.exec(text)
          if (m) seen.add(Number(m[1]))
        }
        return seen
      }
      await waitFor("every accepted message delivered", () => {
        const seen = delivered()
        return [...accepted].every((n) => seen.has(n)) ? true : undefined
      }, { timeoutMs: 30_000 }).catch((e) => {
        const seen = delivered()
        const missing = [...accepted].filter((n) => !seen.has(n))
        throw new Error(`${e}: ${missing.length} of ${accepted.size} accepted messages missing, e.g. ${missing.slice(0, 5).join(",")}\n${server.log()}`)
      })
      expect(accepted.size).toBeGreaterThan(20)
      await stopServer(server)
      const left = fs.readdirSync(path.join(dir, "var", "queue", "tmp"))
      expect(left).toEqual([])
    } finally {
      await sink.stop()
      removeDir(dir)
    }
  }, 120_000)
})
