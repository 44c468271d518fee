/**
 * The HTTP edge served by `NodeHttp` on loopback, driven by the real `curl`
 * and by Node's `fetch`: slimta's message/rfc822 protocol (base64 UTF-8
 * envelope headers, repeated recipients), every status, authentication,
 * the JSON endpoint (parsed back with mailparser), the size limit on a
 * declared length and on a streamed body, and HTTPS.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as Scope from "effect/Scope"
import { simpleParser } from "mailparser"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Credentials from "@mailroom/protocol/auth/CredentialsService"
import * as HttpEdge from "@mailroom/protocol/edge/HttpEdge"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as Decision from "@mailroom/protocol/policy/Decision"
import type * as Queue from "@mailroom/protocol/queue/Queue"
import * as Reply from "@mailroom/protocol/smtp/Reply"
import * as NodeHttp from "../../packages/node-adapter/src/NodeHttp.ts"
import { makeCa, type TestCa } from "../support/certs.ts"
import { removeDir, tempDir } from "../support/ports.ts"

const MAX = 64 * 1024
const b64 = (s: string): string => Buffer.from(s, "utf8").toString("base64")
const MESSAGE = "From: J\u00f6rg <joerg@example.org>\r\nTo: bob@example.com\r\nSubject: over HTTP\r\n\r\nHello via curl.\r\n"

const received: Array<Envelope.Envelope> = []
const queue: Queue.Queue["Service"] = {
  enqueue: (e) =>
    Effect.sync(() => {
      received.push(e)
      return { _tag: "Queued", ids: [e.id] } as const
    })
}

let scope: Scope.Closeable
let open: NodeHttp.Server
let locked: NodeHttp.Server
let secure: NodeHttp.Server
let ca: TestCa
let dir: string

const handler = (requireAuth: boolean) =>
  HttpEdge.make({
    hostname: "mx.example.com",
    queue,
    credentials: Credentials.fromTable(new Map([["alice", "{PLAIN}wonderland"], ["ci.bot", "{PLAIN}t0ken"]])),
    requireAuth,
    maxSize: MAX,
    validators: {
      mail: (_f, sender) =>
        Effect.succeed(
          sender?.domain === "blocked.example" ? Decision.reject(Reply.make(550, "5.7.1", "Sender not allowed")) : Decision.accept
        )
    },
    run: (e) => Effect.runPromise(Effect.provide(e, Logger.layer([])))
  })

beforeAll(async () => {
  dir = tempDir("mailroom-http-")
  ca = makeCa()
  const cert = ca.issue("localhost", ["DNS:localhost", "IP:127.0.0.1"])
  scope = Effect.runSync(Scope.make())
  const start = (options: NodeHttp.Options) => Effect.runPromise(Scope.provide(NodeHttp.serve(options), scope))
  open = await start({ handler: handler(false), port: 0 })
  locked = await start({ handler: handler(true), port: 0 })
  secure = await start({ handler: handler(false), port: 0, tls: { key: cert.key, cert: cert.cert } })
})

afterAll(async () => {
  if (scope) await Effect.runPromise(Scope.close(scope, Exit.void))
  ca?.dispose()
  if (dir) removeDir(dir)
})

interface CurlResult {
  readonly status: number
  readonly headers: Record<string, Array<string>>
  readonly body: string
}

/** Runs curl, returning the final status, headers (lower-case names) and body. */
const curl = (args: ReadonlyArray<string>): Promise<CurlResult> =>
  new Promise((resolve, reject) => {
    const headerFile = path.join(dir, `h-${Math.random().toString(36).slice(2)}`)
    execFile("curl", ["-sS", "-D", headerFile, "-o", "-", ...args], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && !fs.existsSync(headerFile)) return reject(new Error(`curl failed: ${stderr || err.message}`))
      const raw = fs.readFileSync(headerFile, "utf8")
      fs.rmSync(headerFile, { force: true })
      const blocks = raw.split(/\r\n\r\n/).filter((b) => b.startsWith("HTTP/"))
      const last = blocks[blocks.length - 1] ?? ""
      const [statusLine, ...lines] = last.split("\r\n")
      const headers: Record<string, Array<string>> = {}
      for (const l of lines) {
        const i = l.indexOf(":")
        if (i > 0) (headers[l.slice(0, i).toLowerCase()] ??= []).push(l.slice(i + 1).trim())
      }
      resolve({ status: Number(statusLine?.split(" ")[1]), headers, body: stdout })
    })
  })

const envelopeArgs = (sender: string, ...recipients: Array<string>): Array<string> => [
  "-H", "Content-Type: message/rfc822",
  "-H", `X-Envelope-Sender: ${b64(sender)}`,
  ...recipients.flatMap((r) => ["-H", `X-Envelope-Recipient: ${b64(r)}`])
]

const messageFile = (content: string | Buffer): string => {
  const f = path.join(dir, `m-${Math.random().toString(36).slice(2)}`)
  fs.writeFileSync(f, content)
  return f
}

describe("HTTP edge with curl", () => {
  it("queues a message with UTF-8 envelope addresses and repeated recipient headers", async () => {
    const before = received.length
    const r = await curl([
      ...envelopeArgs("j\u00f6rg@example.org", "bob@example.com", "\u00e7a@example.net"),
      "-H", "X-Ehlo: curl.client.example",
      "--data-binary", `@${messageFile(MESSAGE)}`,
      `${open.url}/`
    ])
    expect(r.status).toBe(200)
    const env = received[before]!
    expect(JSON.parse(r.body)).toEqual({ id: env.id, ids: [env.id], reply: `250 2.6.0 Ok: queued as ${env.id}` })
    expect(r.headers["x-smtp-reply"]).toEqual([`250; message="2.6.0 Ok: queued as ${env.id}"`])
    expect(env.sender).toBe("j\u00f6rg@example.org")
    expect(env.recipients).toEqual(["bob@example.com", "\u00e7a@example.net"])
    expect(env.client).toMatchObject({ address: "127.0.0.1", ehlo: "curl.client.example", protocol: "HTTP" })
    const parsed = await simpleParser(Buffer.from(env.message))
    expect(parsed.subject).toBe("over HTTP")
    expect(parsed.from?.value[0]).toEqual({ name: "J\u00f6rg", address: "joerg@example.org" })
    expect(parsed.text?.trim()).toBe("Hello via curl.")
  })

  it("answers 404, 405 with Allow: POST, and 415", async () => {
    expect((await curl([...envelopeArgs("a@x.example", "b@y.example"), "--data-binary", "x", `${open.url}/nope`])).status).toBe(404)
    const get = await curl([`${open.url}/`])
    expect(get.status).toBe(405)
    expect(get.headers["allow"]).toEqual(["POST"])
    const wrong = await curl(["-H", "Content-Type: text/plain", "-H", `X-Envelope-Recipient: ${b64("b@y.example")}`, "--data-binary", "x", `${open.url}/`])
    expect(wrong.status).toBe(415)
  })

  it("answers 400 for malformed base64, missing recipients and invalid addresses, queueing nothing", async () => {
    const before = received.length
    const file = messageFile(MESSAGE)
    const bad = [
      ["-H", "Content-Type: message/rfc822", "-H", "X-Envelope-Sender: !!!", "-H", `X-Envelope-Recipient: ${b64("b@y.example")}`],
      ["-H", "Content-Type: message/rfc822", "-H", `X-Envelope-Sender: ${b64("a@x.example")}`],
      envelopeArgs("a@x.example", "no-at-sign"),
      envelopeArgs("a@x.example", "b@y.example>, <c@z.example")
    ]
    for (const args of bad) {
      const r = await curl([...args, "--data-binary", `@${file}`, `${open.url}/`])
      expect(r.status, args.join(" ")).toBe(400)
      expect(r.headers["x-smtp-reply"]?.[0]).toMatch(/^501; message="5\.5\.4 /)
    }
    expect(received.length).toBe(before)
  })

  it("refuses a sender the validator refuses with 403", async () => {
    const r = await curl([...envelopeArgs("x@blocked.example", "b@y.example"), "--data-binary", "x", `${open.url}/`])
    expect(r.status).toBe(403)
    expect(r.headers["x-smtp-reply"]).toEqual(["550; message=\"5.7.1 Sender not allowed\"; command=\"MAIL\""])
  })

  it("answers 413 on a large Content-Length and on a large chunked body, queueing nothing", async () => {
    const before = received.length
    const big = messageFile(Buffer.alloc(MAX * 4, 0x61))
    const declared = await curl([...envelopeArgs("a@x.example", "b@y.example"), "--data-binary", `@${big}`, `${open.url}/`])
    expect(declared.status).toBe(413)
    expect(declared.headers["x-smtp-reply"]).toEqual(["552; message=\"5.3.4 Error: message size exceeds fixed limit\""])
    const streamed = await curl([
      ...envelopeArgs("a@x.example", "b@y.example"),
      "-H", "Transfer-Encoding: chunked",
      "--data-binary", `@${big}`,
      `${open.url}/`
    ])
    expect(streamed.status).toBe(413)
    expect(received.length).toBe(before)
  })

  it("authenticates with Basic (curl -u) and Bearer, and answers 401 otherwise", async () => {
    const file = messageFile(MESSAGE)
    const none = await curl([...envelopeArgs("a@x.example", "b@y.example"), "--data-binary", `@${file}`, `${locked.url}/`])
    expect(none.status).toBe(401)
    expect(none.headers["www-authenticate"]?.[0]).toContain("Basic realm=\"mailroom\"")
    const wrong = await curl([...envelopeArgs("a@x.example", "b@y.example"), "-u", "alice:nope", "--data-binary", `@${file}`, `${locked.url}/`])
    expect(wrong.status).toBe(401)
    const before = received.length
    const basic = await curl([...envelopeArgs("a@x.example", "b@y.example"), "-u", "alice:wonderland", "--data-binary", `@${file}`, `${locked.url}/`])
    expect(basic.status).toBe(200)
    expect(received[before]!.client.auth).toBe("alice")
    const bearer = await curl([
      ...envelopeArgs("a@x.example", "b@y.example"),
      "-H", "Authorization: Bearer ci.bot.t0ken",
      "--data-binary", `@${file}`,
      `${locked.url}/`
    ])
    expect(bearer.status).toBe(200)
    expect(received[before + 1]!.client.auth).toBe("ci.bot")
  })

  it("speaks HTTPS, recording the protocol and TLS facts", async () => {
    const caFile = messageFile(ca.cert)
    const before = received.length
    const r = await curl([
      "--cacert", caFile,
      ...envelopeArgs("a@x.example", "b@y.example"),
      "--data-binary", `@${messageFile(MESSAGE)}`,
      `${secure.url.replace("127.0.0.1", "localhost")}/`,
      "--resolve", `localhost:${secure.port}:127.0.0.1`
    ])
    expect(r.status).toBe(200)
    const env = received[before]!
    expect(env.client.protocol).toBe("HTTPS")
    expect(env.client.tls?.version).toMatch(/^TLSv1\.[23]$/)
  })
})

describe("HTTP edge with fetch", () => {
  it("posts with comma-joined recipients (as fetch joins repeated headers)", async () => {
    const headers = new Headers({ "Content-Type": "message/rfc822", "X-Envelope-Sender": b64("a@x.example") })
    headers.append("X-Envelope-Recipient", b64("b@y.example"))
    headers.append("X-Envelope-Recipient", b64("c@y.example"))
    const before = received.length
    const res = await fetch(`${open.url}/`, { method: "POST", headers, body: MESSAGE })
    expect(res.status).toBe(200)
    expect(received[before]!.recipients).toEqual(["b@y.example", "c@y.example"])
  })

  it("composes a message from JSON; mailparser reads what the queue got", async () => {
    const before = received.length
    const res = await fetch(`${open.url}/send`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        from: "Alice Example <alice@example.org>",
        to: ["bob@example.com"],
        cc: [{ name: "Z\u00fcrich Office", address: "zurich@example.net" }],
        bcc: "audit@example.org",
        subject: "Quarterly r\u00e9sum\u00e9 \u{1F4C8}",
        text: "Numbers attached.\nRegards, Alice",
        html: "<p>Numbers <i>attached</i>.</p>",
        attachments: [
          { filename: "numbers.csv", contentType: "text/csv", content: Buffer.from("a,b\n1,2\n").toString("base64") },
          { filename: "r\u00e9sum\u00e9.pdf", contentType: "application/pdf", content: Buffer.from([37, 80, 68, 70, 0, 255]).toString("base64") }
        ]
      })
    })
    expect(res.status).toBe(200)
    const body = await res.json() as { id: string; reply: string }
    const env = received[before]!
    expect(body.id).toBe(env.id)
    expect(env.sender).toBe("alice@example.org")
    expect(env.recipients).toEqual(["bob@example.com", "zurich@example.net", "audit@example.org"])
    const parsed = await simpleParser(Buffer.from(env.message))
    expect(parsed.subject).toBe("Quarterly r\u00e9sum\u00e9 \u{1F4C8}")
    expect(parsed.from?.value[0]).toEqual({ name: "Alice Example", address: "alice@example.org" })
    const cc = Array.isArray(parsed.cc) ? parsed.cc[0] : parsed.cc
    expect(cc?.value[0]).toEqual({ name: "Z\u00fcrich Office", address: "zurich@example.net" })
    expect(parsed.bcc).toBeUndefined()
    expect(parsed.text?.trim()).toBe("Numbers attached.\nRegards, Alice")
    expect(parsed.html).toContain("<i>attached</i>")
    expect(parsed.messageId).toMatch(/^<[0-9a-z]{26}@mx\.example\.com>$/)
    expect(parsed.date).toBeInstanceOf(Date)
    expect(parsed.attachments.map((a) => [a.filename, a.contentType, Buffer.from(a.content).toString("hex")])).toEqual([
      ["numbers.csv", "text/csv", Buffer.from("a,b\n1,2\n").toString("hex")],
      ["r\u00e9sum\u00e9.pdf", "application/pdf", Buffer.from([37, 80, 68, 70, 0, 255]).toString("hex")]
    ])
  })

  it("queues a raw JSON message and refuses bad JSON with 400", async () => {
    const ok = await fetch(`${open.url}/send`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sender: "a@x.example", recipients: ["b@y.example"], raw: MESSAGE })
    })
    expect(ok.status).toBe(200)
    const bad = await fetch(`${open.url}/send`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{" })
    expect(bad.status).toBe(400)
    expect(await bad.json()).toEqual({ error: "the body is not valid JSON" })
  })

  it("answers 413 for a streamed body over the limit without buffering it", async () => {
    let sent = 0
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent > MAX * 16) return controller.close()
        sent += 8192
        controller.enqueue(new Uint8Array(8192).fill(0x62))
      }
    })
    const before = received.length
    const res = await fetch(`${open.url}/`, {
      method: "POST",
      headers: {
        "Content-Type": "message/rfc822",
        "X-Envelope-Sender": b64("a@x.example"),
        "X-Envelope-Recipient": b64("b@y.example")
      },
      body: stream,
      duplex: "half"
    } as RequestInit)
    expect(res.status).toBe(413)
    expect(received.length).toBe(before)
  })
})
