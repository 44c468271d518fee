import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import { simpleParser } from "mailparser"
import { describe, expect, it } from "vitest"
import * as Base64 from "../src/auth/Base64.ts"
import * as Credentials from "../src/auth/CredentialsService.ts"
import * as HttpEdge from "../src/edge/HttpEdge.ts"
import type * as Envelope from "../src/envelope/Envelope.ts"
import * as Decision from "../src/policy/Decision.ts"
import type * as Validators from "../src/policy/Validators.ts"
import * as Queue from "../src/queue/Queue.ts"
import * as Reply from "../src/smtp/Reply.ts"

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array): string => new TextDecoder().decode(b)
const b64 = (s: string): string => Base64.encode(enc(s))

const MESSAGE = "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello\r\n"

interface Harness {
  readonly handler: HttpEdge.Handler
  readonly received: () => Array<Envelope.Envelope>
}

const harness = (
  over: Partial<HttpEdge.Options> = {},
  answer?: (e: Envelope.Envelope) => Queue.EnqueueResult
): Harness => {
  const got: Array<Envelope.Envelope> = []
  const queue: Queue.Queue["Service"] = {
    enqueue: (e) =>
      Effect.sync(() => {
        const r = answer ? answer(e) : ({ _tag: "Queued", ids: [e.id] } as const)
        if (r._tag === "Queued") got.push(e)
        return r
      })
  }
  const handler = HttpEdge.make({
    hostname: "mx.example.com",
    queue,
    credentials: Credentials.fromTable(new Map([["alice", "{PLAIN}wonderland"], ["api.client", "{PLAIN}s3cr3t"]])),
    run: (e) => Effect.runPromise(Effect.provide(e, Logger.layer([]))),
    ...over
  })
  return { handler, received: () => got }
}

const post = (headers: HeadersInit, body: BodyInit | null = MESSAGE, url = "http://mx.example.com/"): Request =>
  new Request(url, { method: "POST", headers, body })

const envelopeHeaders = (sender: string, ...recipients: Array<string>): Record<string, string> => ({
  "Content-Type": "message/rfc822",
  "X-Envelope-Sender": b64(sender),
  "X-Envelope-Recipient": recipients.map(b64).join(", ")
})

const client = { address: "192.0.2.7", port: 51000 }

describe("HttpEdge: the message/rfc822 endpoint", () => {
  it("queues the message and answers 200 with the id and X-Smtp-Reply", async () => {
    const h = harness()
    const res = await h.handler(
      post({ ...envelopeHeaders("j\u00f6rg@example.org", "bob@example.com", "\u00e7a@example.net"), "X-Ehlo": "client.example.org" }),
      client
    )
    expect(res.status).toBe(200)
    const body = await res.json() as { id: string; ids: Array<string>; reply: string }
    const [env] = h.received()
    expect(env).toBeDefined()
    expect(body).toEqual({ id: env!.id, ids: [env!.id], reply: `250 2.6.0 Ok: queued as ${env!.id}` })
    expect(res.headers.get("x-smtp-reply")).toBe(`250; message="2.6.0 Ok: queued as ${env!.id}"`)
    expect(env!.sender).toBe("j\u00f6rg@example.org")
    expect(env!.recipients).toEqual(["bob@example.com", "\u00e7a@example.net"])
    expect(env!.smtputf8).toBe(true)
    expect(env!.receiver).toBe("mx.example.com")
    expect(env!.client).toEqual({
      address: "192.0.2.7",
      port: 51000,
      reverseName: undefined,
      ehlo: "client.example.org",
      protocol: "HTTP",
      tls: undefined,
      auth: undefined
    })
    expect(dec(env!.message)).toBe(MESSAGE)
  })

  it("takes repeated recipient headers, the null sender, LF line ends, and defaults X-Ehlo to the address", async () => {
    const h = harness()
    const headers = new Headers({ "Content-Type": "message/rfc822" })
    headers.append("X-Envelope-Recipient", b64("a@example.com"))
    headers.append("X-Envelope-Recipient", b64("b@example.com"))
    const res = await h.handler(post(headers, "Subject: x\n\nline\nlast"), client)
    expect(res.status).toBe(200)
    const env = h.received()[0]!
    expect(env.sender).toBe("")
    expect(env.recipients).toEqual(["a@example.com", "b@example.com"])
    expect(env.client.ehlo).toBe("[192.0.2.7]")
    expect(dec(env.message)).toBe("Subject: x\r\n\r\nline\r\nlast\r\n")
    expect(env.body).toBeUndefined()
  })

  it("says HTTPS for an https URL", async () => {
    const h = harness()
    await h.handler(post(envelopeHeaders("a@example.org", "b@example.com"), MESSAGE, "https://mx.example.com/"), client)
    expect(h.received()[0]!.client.protocol).toBe("HTTPS")
  })

  it("answers 404, 405 with Allow, 415, and 413 for a large Content-Length, queueing nothing", async () => {
    const h = harness({ maxSize: 100 })
    expect((await h.handler(post(envelopeHeaders("a@x.example", "b@y.example"), MESSAGE, "http://h/other"), client)).status).toBe(404)
    const get = await h.handler(new Request("http://h/", { method: "GET" }), client)
    expect([get.status, get.headers.get("allow")]).toEqual([405, "POST"])
    const wrongType = await h.handler(post({ ...envelopeHeaders("a@x.example", "b@y.example"), "Content-Type": "text/plain" }), client)
    expect(wrongType.status).toBe(415)
    const big = await h.handler(post(envelopeHeaders("a@x.example", "b@y.example"), "x".repeat(101)), client)
    expect(big.status).toBe(413)
    expect(big.headers.get("x-smtp-reply")).toBe("552; message=\"5.3.4 Error: message size exceeds fixed limit\"")
    expect(h.received()).toEqual([])
  })

  it("stops reading a streamed body at the limit (no Content-Length) and answers 413", async () => {
    const h = harness({ maxSize: 1000 })
    let pulled = 0
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++
        controller.enqueue(new Uint8Array(300).fill(0x61))
        if (pulled > 100) controller.close()
      }
    })
    const req = new Request("http://h/", {
      method: "POST",
      headers: envelopeHeaders("a@x.example", "b@y.example"),
      body: stream,
      duplex: "half"
    } as RequestInit)
    const res = await h.handler(req, client)
    expect(res.status).toBe(413)
    expect(pulled).toBeLessThan(10)
    expect(h.received()).toEqual([])
  })

  it("answers 400 for bad base64, non-UTF-8, missing recipients, bad addresses and CR/LF/NUL in headers", async () => {
    const h = harness()
    const cases: Array<Record<string, string>> = [
      { ...envelopeHeaders("a@x.example", "b@y.example"), "X-Envelope-Sender": "***" },
      { ...envelopeHeaders("a@x.example"), "X-Envelope-Recipient": Base64.encode(Uint8Array.of(0xff, 0xfe)) },
      { ...envelopeHeaders("a@x.example") },
      envelopeHeaders("a@x.example", "not an address"),
      envelopeHeaders("a@@x.example", "b@y.example"),
      envelopeHeaders("a@x.example", "b@y.example\r\nRCPT TO:<c@z.example>")
    ]
    for (const headers of cases) {
      const res = await h.handler(post(headers), client)
      expect(res.status, JSON.stringify(headers)).toBe(400)
      expect(res.headers.get("x-smtp-reply")).toMatch(/^501; message="5\.5\.4 /)
    }
    // fetch's Headers refuse CR/LF/NUL, but another runtime's request object might not
    const sneaky = {
      url: "http://h/",
      method: "POST",
      headers: new Map([["x-envelope-sender", "YUB4LmV4YW1wbGU=\r\nX: y"], ["x-envelope-recipient", b64("b@y.example")]]),
      body: null
    } as unknown as Request
    expect((await h.handler(sneaky, client)).status).toBe(400)
    expect(h.received()).toEqual([])
  })
})

describe("HttpEdge: validators and the queue", () => {
  const refuseMail: Validators.Validators = {
    mail: (_f, sender) =>
      Effect.succeed(
        sender?.domain === "spam.example" ? Decision.reject(Reply.make(550, "5.7.1", `Sender <${sender.local}@${sender.domain}> Not allowed`)) : Decision.accept
      ),
    rcpt: (_f, r) => Effect.succeed(r.local === "later" ? Decision.reject(Reply.make(450, "4.2.1", "Try later")) : Decision.accept),
    message: (_f, e) =>
      Effect.succeed<Validators.MessageDecision>(
        dec(e.message).includes("GTUBE")
          ? { _tag: "Reject", reply: Reply.make(554, "5.6.0", "Message content rejected") }
          : { _tag: "Accept", reply: undefined, headers: [["X-Spam-Status", "No, score=0.1 required=5.0"]] }
      )
  }

  it("maps refusals: 5.7.x at MAIL to 403, 4xx at RCPT to 503, content to 422; headers added on accept", async () => {
    const h = harness({ validators: refuseMail })
    const mail = await h.handler(post(envelopeHeaders("x@spam.example", "b@y.example")), client)
    expect(mail.status).toBe(403)
    expect(mail.headers.get("x-smtp-reply")).toBe("550; message=\"5.7.1 Sender <x@spam.example> Not allowed\"; command=\"MAIL\"")
    const rcpt = await h.handler(post(envelopeHeaders("a@x.example", "b@y.example", "later@y.example")), client)
    expect(rcpt.status).toBe(503)
    expect(rcpt.headers.get("x-smtp-reply")).toBe("450; message=\"4.2.1 Try later\"; command=\"RCPT\"")
    const spam = await h.handler(post(envelopeHeaders("a@x.example", "b@y.example"), "Subject: s\r\n\r\nGTUBE\r\n"), client)
    expect(spam.status).toBe(422)
    expect(await spam.json()).toEqual({ error: "554 5.6.0 Message content rejected", reply: "554 5.6.0 Message content rejected" })
    expect(h.received()).toEqual([])
    const ok = await h.handler(post(envelopeHeaders("a@x.example", "b@y.example")), client)
    expect(ok.status).toBe(200)
    expect(dec(h.received()[0]!.message)).toBe("X-Spam-Status: No, score=0.1 required=5.0\r\n" + MESSAGE)
  })

  it("answers 503 when the queue refuses or fails, and never 2xx", async () => {
    const refused = harness({}, () => ({ _tag: "Refused", reply: Reply.insufficientStorage }))
    const r = await refused.handler(post(envelopeHeaders("a@x.example", "b@y.example")), client)
    expect(r.status).toBe(503)
    expect(r.headers.get("x-smtp-reply")).toBe("452; message=\"4.3.1 Insufficient system storage\"; command=\"DATA\"")
    const broken = harness({}, () => {
      throw new Error("disk on fire")
    })
    const b = await broken.handler(post(envelopeHeaders("a@x.example", "b@y.example")), client)
    expect(b.status).toBe(503)
    expect(b.headers.get("x-smtp-reply")).toBe("451; message=\"4.3.0 Error: temporary local problem\"")
  })

  it("runs connect, ehlo, mail, rcpt, data, message, queued and close hooks in order", async () => {
    const seen: Array<string> = []
    const log = (name: string) => () => Effect.sync(() => void seen.push(name)).pipe(Effect.as(Decision.accept))
    const v: Validators.Validators = {
      connect: log("connect"),
      ehlo: log("ehlo"),
      mail: log("mail"),
      rcpt: log("rcpt"),
      data: log("data"),
      message: () => Effect.sync(() => (seen.push("message"), { _tag: "Accept", reply: undefined, headers: [] })),
      queued: () => Effect.sync(() => void seen.push("queued")),
      close: () => Effect.sync(() => void seen.push("close"))
    }
    const h = harness({ validators: v })
    expect((await h.handler(post(envelopeHeaders("a@x.example", "b@y.example", "c@y.example")), client)).status).toBe(200)
    expect(seen).toEqual(["connect", "ehlo", "mail", "rcpt", "rcpt", "data", "message", "queued", "close"])
  })
})

describe("HttpEdge: authentication", () => {
  const basic = (u: string, p: string) => `Basic ${b64(`${u}:${p}`)}`

  it("requires credentials when asked (401 with a challenge), accepts Basic and Bearer, refuses bad ones", async () => {
    const h = harness({ requireAuth: true })
    const none = await h.handler(post(envelopeHeaders("a@x.example", "b@y.example")), client)
    expect(none.status).toBe(401)
    expect(none.headers.get("www-authenticate")).toBe("Basic realm=\"mailroom\", charset=\"UTF-8\", Bearer realm=\"mailroom\"")
    expect(none.headers.get("x-smtp-reply")).toBe("530; message=\"5.7.0 Authentication required\"; command=\"AUTH\"")
    const bad = await h.handler(post({ ...envelopeHeaders("a@x.example", "b@y.example"), Authorization: basic("alice", "nope") }), client)
    expect(bad.status).toBe(401)
    expect(bad.headers.get("x-smtp-reply")).toBe("535; message=\"5.7.8 Authentication credentials invalid\"; command=\"AUTH\"")
    const good = await h.handler(post({ ...envelopeHeaders("a@x.example", "b@y.example"), Authorization: basic("alice", "wonderland") }), client)
    expect(good.status).toBe(200)
    expect(h.received()[0]!.client.auth).toBe("alice")
    const bearer = await h.handler(post({ ...envelopeHeaders("a@x.example", "b@y.example"), Authorization: "Bearer api.client.s3cr3t" }), client)
    expect(bearer.status).toBe(200)
    expect(h.received()[1]!.client.auth).toBe("api.client")
    const junk = await h.handler(post({ ...envelopeHeaders("a@x.example", "b@y.example"), Authorization: "Digest x" }), client)
    expect(junk.status).toBe(401)
    expect(h.received()).toHaveLength(2)
  })

  it("lets the auth validator refuse verified credentials", async () => {
    const h = harness({ validators: { auth: (_f, id) => Effect.succeed(id.authcid === "alice" ? Decision.reject(Reply.relayDenied) : Decision.accept) } })
    const res = await h.handler(post({ ...envelopeHeaders("a@x.example", "b@y.example"), Authorization: basic("alice", "wonderland") }), client)
    expect(res.status).toBe(401)
  })
})

describe("HttpEdge: the JSON endpoint", () => {
  const postJson = (body: unknown, headers: Record<string, string> = {}) =>
    new Request("http://mx.example.com/send", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body)
    })

  it("queues a raw message given as text or base64", async () => {
    const h = harness()
    expect((await h.handler(postJson({ sender: "a@x.example", recipients: ["b@y.example"], raw: MESSAGE }), client)).status).toBe(200)
    expect(
      (await h.handler(postJson({ sender: "", recipients: ["c@y.example"], raw: Base64.encode(enc(MESSAGE)), encoding: "base64" }), client))
        .status
    ).toBe(200)
    expect(h.received().map((e) => [e.sender, e.recipients, dec(e.message)])).toEqual([
      ["a@x.example", ["b@y.example"], MESSAGE],
      ["", ["c@y.example"], MESSAGE]
    ])
  })

  it("composes a MIME message from parts (what mailparser reads back)", async () => {
    const h = harness()
    const res = await h.handler(
      postJson({
        from: "Alice Example <alice@example.org>",
        to: ["bob@example.com", { name: "Carol", address: "carol@example.net" }],
        cc: "dave@example.net",
        bcc: ["eve@example.net"],
        subject: "Gr\u00fc\u00dfe",
        text: "Hallo \u2013 plain",
        html: "<p>Hallo</p>",
        attachments: [{ filename: "a.bin", contentType: "application/octet-stream", content: Base64.encode(Uint8Array.of(0, 1, 2, 255)) }]
      }),
      client
    )
    expect(res.status).toBe(200)
    const env = h.received()[0]!
    expect(env.sender).toBe("alice@example.org")
    expect(env.recipients).toEqual(["bob@example.com", "carol@example.net", "dave@example.net", "eve@example.net"])
    const raw = dec(env.message)
    expect(raw).not.toMatch(/^Bcc:/im)
    expect(raw).toMatch(/^Message-ID: <[0-9a-z]{26}@mx\.example\.com>\r$/m)
    const parsed = await simpleParser(Buffer.from(env.message))
    expect(parsed.subject).toBe("Gr\u00fc\u00dfe")
    expect(parsed.text?.trim()).toBe("Hallo \u2013 plain")
    expect(parsed.html).toContain("<p>Hallo</p>")
    expect(parsed.date?.getTime()).toBeGreaterThan(0)
    expect(Uint8Array.from(parsed.attachments[0]!.content)).toEqual(Uint8Array.of(0, 1, 2, 255))
  })

  it("answers 400 for bad JSON and bad fields, 415 for another type", async () => {
    const h = harness()
    for (const body of [
      "{not json",
      "[]",
      { sender: "a@x.example", recipients: "b@y.example", raw: "x" },
      { sender: "a@x.example", recipients: ["b@y.example"], raw: "!!", encoding: "base64" },
      { from: "a@x.example", to: [], subject: "no recipients" },
      { from: "a@x.example", to: ["b@y.example"], subject: "s\r\nBcc: c@z.example" },
      { from: "a@x.example", to: ["b@y.example"], subject: "s", attachments: [{ filename: "f", content: "%%%" }] },
      { from: "a@x.example", to: ["b@y.example"], subject: "s", extra: 1 }
    ]) {
      const res = await h.handler(postJson(body), client)
      expect(res.status, JSON.stringify(body)).toBe(400)
    }
    expect((await h.handler(postJson("{}", { "Content-Type": "text/plain" }), client)).status).toBe(415)
    expect(h.received()).toEqual([])
  })
})

describe("HttpEdge.statusFor", () => {
  it("maps SMTP replies to HTTP statuses", () => {
    const s = (code: number, e?: string) => HttpEdge.statusFor(Reply.make(code, e, "x"))
    expect([s(250, "2.6.0"), s(421, "4.3.0"), s(451, "4.3.0"), s(530, "5.7.0"), s(535, "5.7.8"), s(552, "5.3.4")]).toEqual([
      200, 503, 503, 401, 401, 413
    ])
    expect([s(501, "5.5.4"), s(553, "5.1.3"), s(550, "5.7.1"), s(554, "5.7.1"), s(554, "5.6.0"), s(550)]).toEqual([
      400, 400, 403, 403, 422, 422
    ])
  })
})
