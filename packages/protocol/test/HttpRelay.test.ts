import * as Effect from "effect/Effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as HttpRelay from "../src/relay/HttpRelay.ts"
import * as Reply from "../src/smtp/Reply.ts"

const reply = (code: number, enhanced: string | undefined, text: string) => ({ code, enhanced, lines: [text] })

describe("X-Smtp-Reply", () => {
  it("parses slimta's format", () => {
    expect(HttpRelay.parseSmtpReplyHeader("250; message=\"2.6.0 Message accepted for delivery\"")).toEqual({
      code: 250,
      message: "2.6.0 Message accepted for delivery",
      command: undefined
    })
    expect(HttpRelay.parseSmtpReplyHeader(" 550 ;message = \"5.7.1 Sender <a@b> Not allowed\" ; command=\"MAIL\"")).toEqual({
      code: 550,
      message: "5.7.1 Sender <a@b> Not allowed",
      command: "MAIL"
    })
    expect(HttpRelay.parseSmtpReplyHeader("451")).toEqual({ code: 451, message: undefined, command: undefined })
    expect(HttpRelay.parseSmtpReplyHeader("250; Message=\"a \\\"quoted\\\" \\\\ text\"")?.message).toBe("a \"quoted\" \\ text")
  })

  it("refuses what has no code", () => {
    for (const v of [null, undefined, "", "abc", "25", "2500; message=\"x\"", "two fifty", "250x; message=\"x\""]) {
      expect(HttpRelay.parseSmtpReplyHeader(v)).toBeUndefined()
    }
  })

  it("builds a reply, taking an enhanced code only when its class fits", () => {
    expect(HttpRelay.parseSmtpReply("250; message=\"2.6.0 Message accepted\"")).toEqual(reply(250, "2.6.0", "Message accepted"))
    expect(HttpRelay.parseSmtpReply("550; message=\"2.6.0 wrong class\"")).toEqual(reply(550, undefined, "2.6.0 wrong class"))
    expect(HttpRelay.parseSmtpReply("421; message=\"4.4.2\"")).toEqual(reply(421, "4.4.2", ""))
    expect(HttpRelay.parseSmtpReply("199; message=\"x\"")).toBeUndefined()
    expect(HttpRelay.parseSmtpReply("600; message=\"x\"")).toBeUndefined()
    expect(HttpRelay.parseSmtpReply("550; message=\"5.1.1 a\r\nRCPT TO:<x>\u0000\"")).toEqual(reply(550, "5.1.1", "a RCPT TO:<x>"))
  })

  it("formats what it parses (round trip)", () => {
    const r = Reply.make(550, "5.7.1", "Sender \"<a@b>\" \\ Not allowed")
    expect(HttpRelay.formatSmtpReply(r, "MAIL")).toBe("550; message=\"5.7.1 Sender \\\"<a@b>\\\" \\\\ Not allowed\"; command=\"MAIL\"")
    expect(HttpRelay.parseSmtpReply(HttpRelay.formatSmtpReply(r))).toEqual(r)
    fc.assert(fc.property(
      fc.oneof(fc.integer({ min: 200, max: 299 }), fc.integer({ min: 400, max: 599 })),
      fc.stringMatching(/^[A-Za-z0-9 "\\<>@.;=,]{0,60}$/),
      (code, text) => {
        const t = text.replace(/\s+/g, " ").trim()
        const r = Reply.make(code, `${String(code)[0]}.0.0`, t)
        expect(HttpRelay.parseSmtpReply(HttpRelay.formatSmtpReply(r))).toEqual(r)
      }
    ))
  })

  it("never throws and never yields a control character on arbitrary input (property)", () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.constantFrom("250; message=\"", "5", "550;;;message=\"\"\"")), (v) => {
      const r = HttpRelay.parseSmtpReply(v)
      if (r !== undefined) {
        expect(r.code).toBeGreaterThanOrEqual(200)
        expect(r.code).toBeLessThanOrEqual(599)
        for (const l of r.lines) expect(/[\u0000-\u001f\u007f]/.test(l)).toBe(false)
      }
    }))
  })
})

describe("HttpRelay.classify", () => {
  const res = (status: number, smtp?: string, statusText?: string) =>
    new Response(null, { status, ...(statusText !== undefined ? { statusText } : {}), headers: smtp === undefined ? {} : { "X-Smtp-Reply": smtp } })

  it("maps responses as slimta does", () => {
    expect(HttpRelay.classify(res(204, "250; message=\"2.6.0 Queued\""))).toEqual(reply(250, "2.6.0", "Queued"))
    expect(HttpRelay.classify(res(200, undefined, "OK"))).toEqual(reply(250, "2.0.0", "Delivered (HTTP 200 OK)"))
    expect(HttpRelay.classify(res(204, "550; message=\"5.0.0 no\""))).toEqual(reply(250, "2.0.0", "Delivered (HTTP 204)"))
    expect(HttpRelay.classify(res(403, "550; message=\"5.7.1 Not allowed\""))).toEqual(reply(550, "5.7.1", "Not allowed"))
    expect(HttpRelay.classify(res(503, "421; message=\"4.3.2 Shutting down\""))).toEqual(reply(421, "4.3.2", "Shutting down"))
    expect(HttpRelay.classify(res(500, "250; message=\"2.0.0 what\""))).toEqual(reply(451, "4.3.0", "what"))
    expect(HttpRelay.classify(res(404, undefined, "Not Found"))).toEqual(reply(550, "5.0.0", "HTTP 404 Not Found"))
    expect(HttpRelay.classify(res(401, "junk", "Unauthorized"))).toEqual(reply(550, "5.0.0", "HTTP 401 Unauthorized"))
    expect(HttpRelay.classify(res(500, undefined, "Internal  Error"))).toEqual(reply(450, "4.0.0", "HTTP 500 Internal Error"))
    expect(HttpRelay.classify(res(302))).toEqual(reply(450, "4.0.0", "HTTP 302"))
  })
})

describe("HttpRelay.make", () => {
  const env = Envelope.make({ sender: "s\u00e9nder@example.org", recipients: ["a@x", "b@y"], message: new TextEncoder().encode("Subject: x\r\n\r\nhi\r\n") })

  it("sends slimta's headers and the message, with the fetch given", async () => {
    const seen: Array<{ url: string; init: RequestInit }> = []
    const relay = HttpRelay.make({
      url: "https://edge.example/submit",
      ehlo: "me.example\r\nX-Injected: 1",
      headers: { Authorization: "Basic eDp5" },
      fetch: async (url, init) => {
        seen.push({ url: String(url), init })
        return new Response(null, { status: 204, headers: { "X-Smtp-Reply": "250; message=\"2.6.0 Ok\"" } })
      }
    })
    const result = await Effect.runPromise(relay.attempt(env, 0))
    expect(result).toEqual({
      recipients: [
        { outcome: "delivered", reply: reply(250, "2.6.0", "Ok") },
        { outcome: "delivered", reply: reply(250, "2.6.0", "Ok") }
      ],
      remote: "http; edge.example",
      tls: undefined
    })
    expect(seen).toHaveLength(1)
    const h = seen[0]!.init.headers as Headers
    expect(seen[0]!.url).toBe("https://edge.example/submit")
    expect(seen[0]!.init.method).toBe("POST")
    expect(h.get("content-type")).toBe("message/rfc822")
    expect(h.get("x-ehlo")).toBe("me.example X-Injected: 1")
    expect(h.get("x-injected")).toBeNull()
    expect(h.get("authorization")).toBe("Basic eDp5")
    expect(h.get("x-envelope-sender")).toBe(btoa("s\u00c3\u00a9nder@example.org"))
    expect(h.get("x-envelope-recipient")).toBe(`${btoa("a@x")}, ${btoa("b@y")}`)
    expect(seen[0]!.init.body).toBe(env.message)
  })

  it("answers 451 4.4.1 when fetch rejects and 421 4.4.2 when it outlives the time limit", async () => {
    const failing = HttpRelay.make({
      url: "http://x.example/",
      ehlo: "me",
      fetch: () => Promise.reject(new TypeError("fetch failed", { cause: { code: "ECONNRESET" } }))
    })
    expect((await Effect.runPromise(failing.attempt(env, 0))).recipients[0]).toEqual({
      outcome: "transient",
      reply: reply(451, "4.4.1", "Connection failed: ECONNRESET")
    })
    let aborted = false
    const hanging = HttpRelay.make({
      url: "http://x.example/",
      ehlo: "me",
      timeoutMs: 50,
      fetch: (_url, init) =>
        new Promise((_, reject) => {
          init.signal?.addEventListener("abort", () => {
            aborted = true
            reject(new Error("aborted"))
          })
        })
    })
    expect((await Effect.runPromise(hanging.attempt(env, 0))).recipients[1]).toEqual({
      outcome: "transient",
      reply: reply(421, "4.4.2", "Connection timed out")
    })
    expect(aborted).toBe(true)
  })

  it("does not call fetch for an envelope without recipients, and throws on a bad URL at construction", async () => {
    let called = false
    const relay = HttpRelay.make({ url: "http://x.example/", ehlo: "me", fetch: async () => ((called = true), new Response(null)) })
    const empty = Envelope.make({ sender: "", recipients: [], message: new Uint8Array(0) })
    expect((await Effect.runPromise(relay.attempt(empty, 0))).recipients).toEqual([])
    expect(called).toBe(false)
    expect(() => HttpRelay.make({ url: "not a url", ehlo: "me" })).toThrow(TypeError)
  })
})
