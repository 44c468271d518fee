/**
 * HttpRelay with Node's own fetch against a node:http server on loopback
 * speaking slimta's HTTP edge protocol, plus a raw TCP server for answers
 * node:http would refuse to send.
 */
import * as http from "node:http"
import * as net from "node:net"
import * as Effect from "effect/Effect"
import { simpleParser } from "mailparser"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as HttpRelay from "@mailroom/protocol/relay/HttpRelay"
import type * as Relay from "@mailroom/protocol/relay/Relay"

const MESSAGE = new TextEncoder().encode(
  "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: http relay\r\n\r\nHello over HTTP.\r\n\u00ff binary-ish \u00e9\r\n"
)

interface Seen {
  readonly method: string | undefined
  readonly url: string | undefined
  readonly headers: http.IncomingHttpHeaders
  readonly rawHeaders: ReadonlyArray<string>
  readonly body: Buffer
}

let server: http.Server
let raw: net.Server
let base: string
let rawBase: string
const seen: Array<Seen> = []
const sockets = new Set<net.Socket>()

const answers: Record<string, (res: http.ServerResponse) => void> = {
  "/ok": (res) => {
    res.writeHead(204, { "X-Smtp-Reply": "250; message=\"2.6.0 Message accepted for delivery\"" })
    res.end()
  },
  "/ok-plain": (res) => {
    res.writeHead(200, { "Content-Type": "text/plain" })
    res.end("queued as 1234\n")
  },
  "/ok-odd-reply": (res) => {
    res.writeHead(200, { "X-Smtp-Reply": "550; message=\"5.0.0 contradicts the status\"" })
    res.end()
  },
  "/forbidden": (res) => {
    res.writeHead(403, { "X-Smtp-Reply": "550; message=\"5.7.1 Sender <alice@example.org> Not allowed\"; command=\"MAIL\"" })
    res.end()
  },
  "/unavailable": (res) => {
    res.writeHead(503, { "X-Smtp-Reply": "451; message=\"4.3.0 Try again later\"" })
    res.end()
  },
  "/no-enhanced": (res) => {
    res.writeHead(500, { "X-Smtp-Reply": "554 ; message=\"Transaction \\\"failed\\\"\"" })
    res.end()
  },
  "/not-found": (res) => {
    res.writeHead(404)
    res.end("nope")
  },
  "/bad-gateway": (res) => {
    res.writeHead(502)
    res.end()
  },
  "/garbage-reply": (res) => {
    res.writeHead(500, { "X-Smtp-Reply": "sorry; message=\"5.1.1 whatever\"" })
    res.end()
  },
  "/wrong-class": (res) => {
    res.writeHead(500, { "X-Smtp-Reply": "250; message=\"2.0.0 fine?\"" })
    res.end()
  },
  "/slow": () => {
    // never answers
  }
}

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks) })
      const answer = answers[req.url ?? ""]
      if (answer === undefined) {
        res.writeHead(500)
        res.end()
      } else answer(res)
    })
  })
  server.on("connection", (s: net.Socket) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`

  // answers node:http cannot produce: control characters and junk in header lines
  raw = net.createServer((s) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
    let got = ""
    s.on("data", (c: Buffer) => {
      got += c.toString("latin1")
      if (!got.includes("\r\n\r\n")) return
      const path = got.split(" ")[1]
      if (path === "/raw-ctl") {
        s.end("HTTP/1.1 403 Forbidden\r\nX-Smtp-Reply: 550; message=\"5.7.1 no\u0007 bell\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "latin1")
      } else if (path === "/raw-latin1") {
        s.end("HTTP/1.1 503 Busy\r\nX-Smtp-Reply: 452;message=\"4.2.2 Bo\u00eete pleine\";command=\"DATA\";junk\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "latin1")
      } else {
        s.end("this is not HTTP at all\r\n\r\n")
      }
    })
  })
  await new Promise<void>((r) => raw.listen(0, "127.0.0.1", r))
  rawBase = `http://127.0.0.1:${(raw.address() as net.AddressInfo).port}`
})

afterAll(async () => {
  for (const s of sockets) s.destroy()
  await new Promise((r) => server.close(r))
  await new Promise((r) => raw.close(r))
})

const envelope = Envelope.make({
  sender: "alice@example.org",
  recipients: ["bob@example.com", "j\u00f6rg@b\u00fccher.example", "carol@example.com"],
  message: MESSAGE
})

const attempt = (path: string, options: Partial<HttpRelay.Options> = {}, env: Envelope.Envelope = envelope): Promise<Relay.RelayResult> =>
  Effect.runPromise(HttpRelay.make({ url: `${base}${path}`, ehlo: "relay.example.net", timeoutMs: 5_000, ...options }).attempt(env, 0))

const only = (result: Relay.RelayResult) => {
  // the HTTP relay answers the same for every recipient
  for (const r of result.recipients) expect(r).toEqual(result.recipients[0])
  expect(result.recipients).toHaveLength(envelope.recipients.length)
  return result.recipients[0]!
}

const reply = (code: number, enhanced: string | undefined, text: string) => ({ code, enhanced, lines: [text] })

describe("HttpRelay against a node:http server", () => {
  it("POSTs slimta's request and reads 204 + X-Smtp-Reply as delivered", async () => {
    seen.length = 0
    const result = await attempt("/ok", { headers: { Authorization: "Bearer t0ken" } })
    expect(only(result)).toEqual({ outcome: "delivered", reply: reply(250, "2.6.0", "Message accepted for delivery") })
    expect(result.remote).toBe(`http; ${base.slice("http://".length)}`)
    expect(seen).toHaveLength(1)
    const req = seen[0]!
    expect(req.method).toBe("POST")
    expect(req.url).toBe("/ok")
    expect(req.headers["content-type"]).toBe("message/rfc822")
    expect(req.headers["content-length"]).toBe(String(MESSAGE.length))
    expect(req.headers["x-ehlo"]).toBe("relay.example.net")
    expect(req.headers["authorization"]).toBe("Bearer t0ken")
    expect(Buffer.from(req.headers["x-envelope-sender"] as string, "base64").toString("utf8")).toBe("alice@example.org")
    // fetch joins repeated fields with ", "; the edge splits on commas (slimta: \s*[,;]\s*)
    const values: Array<string> = []
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      if (req.rawHeaders[i]!.toLowerCase() === "x-envelope-recipient") values.push(req.rawHeaders[i + 1]!)
    }
    const rcpts = values
      .flatMap((v) => v.split(/\s*[,;]\s*/))
      .map((b) => Buffer.from(b, "base64").toString("utf8"))
    expect(rcpts).toEqual(["bob@example.com", "j\u00f6rg@b\u00fccher.example", "carol@example.com"])
    expect(req.body.equals(Buffer.from(MESSAGE))).toBe(true)
    const parsed = await simpleParser(req.body)
    expect(parsed.subject).toBe("http relay")
  })

  it("takes 2xx without X-Smtp-Reply, or with a non-2xx one, as delivered with its own reply", async () => {
    expect(only(await attempt("/ok-plain"))).toEqual({ outcome: "delivered", reply: reply(250, "2.0.0", "Delivered (HTTP 200 OK)") })
    expect(only(await attempt("/ok-odd-reply"))).toEqual({ outcome: "delivered", reply: reply(250, "2.0.0", "Delivered (HTTP 200 OK)") })
  })

  it("classifies a non-2xx answer by its X-Smtp-Reply code", async () => {
    expect(only(await attempt("/forbidden"))).toEqual({ outcome: "permanent", reply: reply(550, "5.7.1", "Sender <alice@example.org> Not allowed") })
    expect(only(await attempt("/unavailable"))).toEqual({ outcome: "transient", reply: reply(451, "4.3.0", "Try again later") })
    expect(only(await attempt("/no-enhanced"))).toEqual({ outcome: "permanent", reply: reply(554, undefined, "Transaction \"failed\"") })
    expect(only(await attempt("/wrong-class"))).toEqual({ outcome: "transient", reply: reply(451, "4.3.0", "fine?") })
  })

  it("without X-Smtp-Reply: HTTP 4xx is permanent, anything else transient", async () => {
    expect(only(await attempt("/not-found"))).toEqual({ outcome: "permanent", reply: reply(550, "5.0.0", "HTTP 404 Not Found") })
    expect(only(await attempt("/bad-gateway"))).toEqual({ outcome: "transient", reply: reply(450, "4.0.0", "HTTP 502 Bad Gateway") })
    expect(only(await attempt("/garbage-reply"))).toEqual({ outcome: "transient", reply: reply(450, "4.0.0", "HTTP 500 Internal Server Error") })
  })

  it("survives garbage on the wire: control characters, latin1, and a non-HTTP answer", async () => {
    const ctl = await Effect.runPromise(HttpRelay.make({ url: `${rawBase}/raw-ctl`, ehlo: "x", timeoutMs: 5_000 }).attempt(envelope, 0))
    // undici refuses a control character in a header value: a protocol error, transient
    expect(only(ctl)).toEqual({
      outcome: "transient",
      reply: reply(451, "4.4.1", "Connection failed: Response does not match the HTTP/1.1 protocol (Invalid header value char)")
    })
    const latin1 = only(await Effect.runPromise(HttpRelay.make({ url: `${rawBase}/raw-latin1`, ehlo: "x", timeoutMs: 5_000 }).attempt(envelope, 0)))
    expect(latin1).toEqual({ outcome: "transient", reply: reply(452, "4.2.2", "Bo\u00eete pleine") })
    const junk = only(await Effect.runPromise(HttpRelay.make({ url: `${rawBase}/junk`, ehlo: "x", timeoutMs: 5_000 }).attempt(envelope, 0)))
    expect(junk.outcome).toBe("transient")
    expect(junk.reply.code).toBe(451)
    expect(junk.reply.enhanced).toBe("4.4.1")
  })

  it("answers 451 4.4.1 when the connection is refused", async () => {
    const closed = net.createServer()
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r))
    const port = (closed.address() as net.AddressInfo).port
    await new Promise((r) => closed.close(r))
    const result = await Effect.runPromise(HttpRelay.make({ url: `http://127.0.0.1:${port}/`, ehlo: "x", timeoutMs: 5_000 }).attempt(envelope, 0))
    expect(only(result)).toEqual({ outcome: "transient", reply: reply(451, "4.4.1", "Connection failed: ECONNREFUSED") })
  })

  it("answers 421 4.4.2 when the server does not answer in time, and aborts the request", async () => {
    seen.length = 0
    const before = sockets.size
    const started = Date.now()
    const result = await attempt("/slow", { timeoutMs: 300 })
    const took = Date.now() - started
    expect(took).toBeGreaterThanOrEqual(280)
    expect(took).toBeLessThan(3_000)
    expect(only(result)).toEqual({ outcome: "transient", reply: reply(421, "4.4.2", "Connection timed out") })
    expect(seen.map((s) => s.url)).toEqual(["/slow"])
    // the aborted request's connection is closed by the client
    for (let i = 0; i < 40 && sockets.size > before; i++) await new Promise((r) => setTimeout(r, 50))
    expect(sockets.size).toBeLessThanOrEqual(before)
  })

  it("uses the fetch it is given", async () => {
    const calls: Array<string> = []
    const relay = HttpRelay.make({
      url: "http://relay.invalid/submit",
      ehlo: "x",
      fetch: async (input) => {
        calls.push(String(input))
        return new Response(null, { status: 204, headers: { "X-Smtp-Reply": "250; message=\"2.0.0 Ok: queued as ABC\"" } })
      }
    })
    const result = await Effect.runPromise(relay.attempt(envelope, 0))
    expect(only(result)).toEqual({ outcome: "delivered", reply: reply(250, "2.0.0", "Ok: queued as ABC") })
    expect(calls).toEqual(["http://relay.invalid/submit"])
  })
})
