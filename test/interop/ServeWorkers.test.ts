/**
 * `workers: 2` as an operator meets it: the real `mailroom serve` on each
 * host, a supervisor and two worker processes sharing one SMTP port, one
 * HTTP port and one disk queue, in front of a real smtp-sink. Connections
 * from a real client reach both workers; a worker killed with SIGKILL under
 * load is restarted and every message that got a 250 is delivered; the
 * supervisor's SIGTERM stops everything with exit 0; a supervisor killed
 * with SIGKILL leaves no worker behind; a port in use stops the whole server
 * with exit 1 and the address in the message.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { hosts, type Server, startServer, stopServer, waitFor } from "../support/hosts.ts"
import { freePort, removeDir, tempDir } from "../support/ports.ts"
import { load } from "../support/smtpLoad.ts"
import { startSmtpSink } from "../support/smtpSink.ts"

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** The pids of the workers the supervisor's log says are running now, by number. */
const workerPids = (log: string): Map<number, number> => {
  const pids = new Map<number, number>()
  for (const m of log.matchAll(/event="worker started" role=supervisor worker=(\d+) pid=(\d+)/g)) pids.set(Number(m[1]), Number(m[2]))
  return pids
}

/** One SMTP conversation over a raw socket; resolves with every reply. */
const converse = (port: number, lines: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolve, reject) => {
    const sock = net.connect({ host: "127.0.0.1", port })
    let buf = ""
    let sent = false
    sock.setEncoding("latin1")
    sock.on("data", (d: string) => {
      buf += d
      if (!sent && /^220 /m.test(buf)) {
        sent = true
        sock.write(lines.map((l) => `${l}\r\n`).join(""))
      }
    })
    sock.on("close", () => resolve(buf))
    sock.on("error", reject)
    sock.setTimeout(10_000, () => sock.destroy(new Error(`no answer: ${buf}`)))
  })

describe.each(hosts)("mailroom serve with workers: 2 ($name host)", (host) => {
  it("two workers share the SMTP and HTTP ports and the queue; a killed worker is restarted and loses nothing; SIGTERM stops all", async () => {
    const dir = tempDir("mailroom-workers-")
    const port = await freePort()
    const httpPort = await freePort()
    const sink = await startSmtpSink()
    fs.writeFileSync(
      path.join(dir, "mailroom.yaml"),
      `hostname: workers.mailroom.test
workers: 2
smtp: [{ listen: "127.0.0.1:${port}", max_connections_per_client: 100 }]
http: { listen: "127.0.0.1:${httpPort}" }
queue: { storage: { type: disk, path: var/queue }, retry: { intervals: [1s] } }
relay: { type: static, host: 127.0.0.1, port: ${sink.port}, tls: none }
`
    )
    let server: Server | undefined
    try {
      server = await startServer(host, "mailroom.yaml", dir, [port, httpPort])
      const s = server
      await waitFor("both workers listening", () => (/event=listening worker=1 edge=smtp/.test(s.log()) && /event=listening worker=2 edge=smtp/.test(s.log()) ? true : undefined), { log: s.log })
      const first = workerPids(s.log())
      expect([...first.keys()].sort()).toEqual([1, 2])
      expect([...first.values()].every(alive)).toBe(true)

      // 40 sessions from a real client land on both workers, each message queued once and delivered once
      const replies = await Promise.all(Array.from({ length: 40 }, (_, i) =>
        converse(port, ["EHLO client.test", "MAIL FROM:<a@client.test>", "RCPT TO:<b@sink.test>", "DATA", `X-Seq: ${i}\r\n\r\nhello ${i}\r\n.`, "QUIT"])
      ))
      expect(replies.filter((r) => /^250 2\.6\.0 /m.test(r))).toHaveLength(40)
      const response = await fetch(`http://127.0.0.1:${httpPort}/`, {
        method: "POST",
        headers: {
          "content-type": "message/rfc822",
          "x-envelope-sender": Buffer.from("h@client.test").toString("base64"),
          "x-envelope-recipient": Buffer.from("b@sink.test").toString("base64")
        },
        body: "X-Seq: http\r\n\r\nfrom the HTTP edge\r\n"
      })
      expect(response.status).toBe(200)
      await waitFor("41 messages delivered", () => (sink.messages().length >= 41 ? true : undefined), { log: s.log })
      const sessions = (w: number) => [...s.log().matchAll(new RegExp(`event=session worker=${w} `, "g"))].length
      expect(sessions(1)).toBeGreaterThan(0)
      expect(sessions(2)).toBeGreaterThan(0)
      expect(sessions(1) + sessions(2)).toBeGreaterThanOrEqual(40) // and the readiness probes of startServer
      expect(new Set(sink.messages().map((m) => /X-Seq: (\w+)/.exec(m)?.[1])).size).toBe(41)

      // SIGKILL worker 1 under load: it comes back under its own number, and every 250 is delivered
      const accepted = new Set<number>()
      const loading = load(port, 1000, Date.now() + 2500, accepted)
      await new Promise((r) => setTimeout(r, 600))
      process.kill(first.get(1)!, "SIGKILL")
      await loading
      await waitFor("worker 1 restarted", () => {
        const now = workerPids(s.log()).get(1)
        return now !== undefined && now !== first.get(1) && alive(now) ? now : undefined
      }, { log: s.log })
      expect(s.log()).toMatch(/event="worker exited; restarting it" role=supervisor worker=1 pid=\d+ signal=SIGKILL/)
      expect(accepted.size).toBeGreaterThan(10)
      const delivered = () => new Set(sink.messages().flatMap((m) => /X-Seq: (\d+)/.exec(m)?.[1] ?? []).map(Number))
      await waitFor("every accepted message delivered", () => ([...accepted].every((n) => delivered().has(n)) ? true : undefined), {
        timeoutMs: 30_000,
        log: s.log
      })
      expect(alive(first.get(2)!)).toBe(true)

      // SIGTERM to the supervisor: graceful, exit 0, no worker left
      const pids = [...workerPids(s.log()).values()]
      expect(await stopServer(s)).toBe(0)
      server = undefined
      expect(pids.filter(alive)).toEqual([])
      expect(fs.readdirSync(path.join(dir, "var", "queue", "tmp"))).toEqual([])
    } finally {
      if (server) await stopServer(server, "SIGKILL")
      await sink.stop()
      removeDir(dir)
    }
  }, 90_000)

  it("a supervisor killed with SIGKILL leaves no workers; a port in use stops the whole server with exit 1", async () => {
    const dir = tempDir("mailroom-workers-")
    const port = await freePort()
    const busy = await freePort()
    fs.writeFileSync(
      path.join(dir, "mailroom.yaml"),
      `workers: 2
smtp: [{ listen: "127.0.0.1:${port}" }]
queue: { storage: { type: disk, path: var/queue } }
relay: { type: blackhole }
`
    )
    fs.writeFileSync(
      path.join(dir, "busy.yaml"),
      `workers: 2
smtp: [{ listen: "127.0.0.1:${port}" }, { listen: "127.0.0.1:${busy}" }]
queue: { storage: { type: disk, path: var/queue } }
relay: { type: blackhole }
`
    )
    const blocker = net.createServer()
    await new Promise<void>((r) => blocker.listen(busy, "127.0.0.1", r))
    try {
      const server = await startServer(host, "mailroom.yaml", dir, port)
      await waitFor("both workers", () => (workerPids(server.log()).size === 2 ? true : undefined), { log: server.log })
      const pids = [...workerPids(server.log()).values()]
      await stopServer(server, "SIGKILL")
      await waitFor("workers gone after their supervisor", () => (pids.some(alive) ? undefined : true), { timeoutMs: 15_000, log: server.log })

      const child = spawn(host.command, [...host.args, "serve", "--config", "busy.yaml"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      child.stdout!.on("data", (d) => (out += d))
      child.stderr!.on("data", (d) => (out += d))
      const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)))
      expect(code).toBe(1)
      expect(out).toContain(`cannot listen on 127.0.0.1:${busy}`)
      expect(out).toMatch(/event="worker could not start; stopping every worker" role=supervisor worker=\d pid=\d+ code=78/)
      const started = [...out.matchAll(/event="worker started" role=supervisor worker=\d+ pid=(\d+)/g)].map((m) => Number(m[1]))
      expect(started.filter(alive)).toEqual([])
    } finally {
      blocker.close()
      removeDir(dir)
    }
  }, 60_000)
})
