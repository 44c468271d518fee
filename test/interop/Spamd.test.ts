/**
 * SpamAssassin against a real spamd: `/usr/sbin/spamd` on 127.0.0.1 with an
 * ephemeral port (local tests only, no user configs), reached through the
 * Node connector. GTUBE is refused or flagged, a clean message is accepted
 * with `X-Spam-Status: No`, and a spamd that is down or never answers gives
 * the configured outcome within the time limit.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as SpamAssassin from "@mailroom/protocol/policy/SpamAssassin"
import * as SpamdClient from "@mailroom/protocol/policy/SpamdClient"
import * as Reply from "@mailroom/protocol/smtp/Reply"
import type { Facts } from "@mailroom/protocol/smtp/ServerModel"
import * as NodeTransport from "../../packages/node-adapter/src/NodeTransport.ts"
import { freePort, waitForPort } from "../support/ports.ts"

const SPAMD = "/usr/sbin/spamd"
const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

const message = (body: string): Uint8Array =>
  new TextEncoder().encode(
    "From: Alice Example <alice@example.org>\r\n" +
      "To: Bob Example <bob@example.com>\r\n" +
      "Subject: Minutes of the Tuesday meeting\r\n" +
      "Date: Sat, 22 Nov 2025 05:00:00 +0000\r\n" +
      "Message-ID: <20251122050000.4711@mail.example.org>\r\n" +
      "MIME-Version: 1.0\r\n" +
      "Content-Type: text/plain; charset=us-ascii\r\n" +
      "\r\n" +
      body
  )

const CLEAN = message(
  "Hi Bob,\r\n\r\nhere are the notes from Tuesday. We agreed to move the review to\r\n" +
    "Thursday afternoon and to keep the current release schedule.\r\n\r\nThanks,\r\nAlice\r\n"
)
const SPAM = message(`This is the GTUBE test message.\r\n\r\n${GTUBE}\r\n`)

let child: ChildProcess | undefined
let port = 0
let output = ""
let silent: net.Server
let silentPort = 0
const silentSockets = new Set<net.Socket>()

beforeAll(async () => {
  if (!fs.existsSync(SPAMD)) throw new Error("spamd is not installed (/usr/sbin/spamd); .ci/run installs it")
  port = await freePort()
  const args = [
    "--syslog=stderr",
    "-x",
    "-L",
    `--listen=127.0.0.1:${port}`,
    "--allowed-ips=127.0.0.1",
    "--max-children=2",
    "--min-children=1",
    ...(process.getuid?.() === 0 ? ["-u", "nobody"] : [])
  ]
  child = spawn(SPAMD, args, { stdio: ["ignore", "pipe", "pipe"] })
  child.stdout?.on("data", (b: Buffer) => (output += b.toString()))
  child.stderr?.on("data", (b: Buffer) => (output += b.toString()))
  await waitForPort("127.0.0.1", port, 60_000).catch((e) => {
    throw new Error(`${String(e)}\n${output}`)
  })
  // a peer that accepts, reads, and never answers
  silent = net.createServer((s) => {
    silentSockets.add(s)
    s.on("data", () => {})
    s.on("close", () => silentSockets.delete(s))
    s.on("error", () => {})
  })
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()))
  silentPort = (silent.address() as net.AddressInfo).port
}, 90_000)

afterAll(async () => {
  if (child?.pid !== undefined && child.exitCode === null) {
    const exited = new Promise<void>((r) => child!.once("exit", () => r()))
    process.kill(child.pid, "SIGTERM")
    await exited
  }
  for (const s of silentSockets) s.destroy()
  await new Promise<void>((r) => (silent ? silent.close(() => r()) : r()))
})

const facts: Facts = {
  remote: { _tag: "Inet", address: "192.0.2.1", port: 1234 },
  local: { _tag: "Inet", address: "127.0.0.1", port: 25 },
  proxied: undefined,
  hello: { verb: "EHLO", domain: "mail.example.org" },
  tls: undefined,
  auth: undefined,
  protocol: "ESMTP",
  sender: undefined,
  mailParams: undefined,
  recipients: []
}

const spamdAt = (p: number, timeoutMs = 30_000): SpamdClient.Options => ({
  endpoint: { _tag: "Inet", address: "127.0.0.1", port: p },
  timeoutMs
})

const scan = (options: SpamAssassin.Options, bytes: Uint8Array) =>
  Effect.runPromise(
    SpamAssassin.validators(options).message!(
      facts,
      Envelope.make({ sender: "alice@example.org", recipients: ["bob@example.com"], message: bytes })
    ).pipe(Effect.provide(NodeTransport.connectorLayer), Effect.provide(Logger.layer([])))
  )

describe("SpamAssassin against spamd", () => {
  it("gets a verdict with GTUBE among the symbols", async () => {
    const v = await Effect.runPromise(SpamdClient.check(SPAM, spamdAt(port)).pipe(Effect.provide(NodeTransport.connectorLayer)))
    expect(v.spam).toBe(true)
    expect(v.score).toBeGreaterThanOrEqual(1000)
    expect(v.threshold).toBe(5)
    expect(v.symbols).toContain("GTUBE")
  })

  it("rejects the GTUBE message with 554 5.6.0", async () => {
    const d = await scan({ spamd: spamdAt(port), rejectAt: 15 }, SPAM)
    expect(d._tag === "Reject" && Reply.encodeString(d.reply)).toBe("554 5.6.0 Message content rejected\r\n")
  })

  it("flags GTUBE when rejection is off", async () => {
    const d = await scan({ spamd: spamdAt(port) }, SPAM)
    expect(d._tag).toBe("Accept")
    const headers = d._tag === "Accept" ? d.headers : []
    expect(headers[0]?.[0]).toBe("X-Spam-Status")
    expect(headers[0]?.[1]).toMatch(/^Yes, score=10\d\d\.\d required=5\.0$/)
    expect(headers[1]?.[0]).toBe("X-Spam-Symbols")
    expect(headers[1]?.[1].split(",")).toContain("GTUBE")
  })

  it("accepts a clean message with X-Spam-Status: No", async () => {
    const d = await scan({ spamd: spamdAt(port), rejectAt: "spam" }, CLEAN)
    expect(d._tag).toBe("Accept")
    const status = d._tag === "Accept" ? d.headers.find(([n]) => n === "X-Spam-Status")?.[1] : undefined
    expect(status).toMatch(/^No, score=-?\d+\.\d required=5\.0$/)
  })

  it("accepts with Unknown, or answers 451, when spamd is down", async () => {
    const downPort = await freePort()
    expect(await scan({ spamd: spamdAt(downPort, 2000), rejectAt: 5 }, SPAM)).toEqual({
      _tag: "Accept",
      reply: undefined,
      headers: [["X-Spam-Status", "Unknown, spamd unavailable"]]
    })
    const d = await scan({ spamd: spamdAt(downPort, 2000), rejectAt: 5, onError: "tempfail" }, SPAM)
    expect(d._tag === "Reject" && Reply.toString(d.reply)).toBe("451 4.7.1 Content scanner unavailable, try again later")
  })

  it("gives up on a listener that never answers at the time limit", async () => {
    const started = Date.now()
    const d = await scan({ spamd: spamdAt(silentPort, 300), rejectAt: 5 }, SPAM)
    const elapsed = Date.now() - started
    expect(d).toEqual({ _tag: "Accept", reply: undefined, headers: [["X-Spam-Status", "Unknown, spamd unavailable"]] })
    expect(elapsed).toBeGreaterThanOrEqual(250)
    expect(elapsed).toBeLessThan(5000)
    // the connection was closed by us, not left open
    for (let i = 0; i < 20 && silentSockets.size > 0; i++) await new Promise((r) => setTimeout(r, 100))
    expect(silentSockets.size).toBe(0)
  })
})
