import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Transport from "../src/edge/Transport.ts"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as SpamAssassin from "../src/policy/SpamAssassin.ts"
import * as SpamdClient from "../src/policy/SpamdClient.ts"
import * as Reply from "../src/smtp/Reply.ts"
import type { Facts } from "../src/smtp/ServerModel.ts"

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array): string => new TextDecoder().decode(b)

const SPAM = "SPAMD/1.1 0 EX_OK\r\nContent-length: 31\r\nSpam: True ; 1001.1 / 5.0\r\n\r\nGTUBE,MSGID_SHORT,NO_RECEIVED\r\n"
const HAM = "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; -0.3 / 5.0\r\n\r\n"

const spamVerdict: SpamdClient.Verdict = {
  spam: true,
  score: 1001.1,
  threshold: 5,
  symbols: ["GTUBE", "MSGID_SHORT", "NO_RECEIVED"]
}

/** Feeds `bytes` in the given pieces, as the client accumulates them. */
const feed = (pieces: ReadonlyArray<Uint8Array>): SpamdClient.Decoded => {
  let acc = new Uint8Array(0)
  for (const p of pieces) {
    const next = new Uint8Array(acc.length + p.length)
    next.set(acc)
    next.set(p, acc.length)
    acc = next
    const d = SpamdClient.decodeResponse(acc, false)
    if (d._tag !== "Incomplete") return d
  }
  return SpamdClient.decodeResponse(acc, true)
}

const splitAt = (b: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y)
  const out: Array<Uint8Array> = []
  let prev = 0
  for (const p of points) {
    out.push(b.subarray(prev, p))
    prev = p
  }
  out.push(b.subarray(prev))
  return out
}

describe("SpamdClient.encodeRequest", () => {
  it("writes SYMBOLS with the exact Content-length and the message bytes", () => {
    const m = enc("Subject: \u00e9\r\n\r\nbody\r\n")
    expect(dec(SpamdClient.encodeRequest(m, "nobody"))).toBe(
      `SYMBOLS SPAMC/1.5\r\nContent-length: ${m.length}\r\nUser: nobody\r\n\r\nSubject: \u00e9\r\n\r\nbody\r\n`
    )
    expect(dec(SpamdClient.encodeRequest(enc("x"), "bad user\r\n"))).toBe("SYMBOLS SPAMC/1.5\r\nContent-length: 1\r\n\r\nx")
  })
})

describe("SpamdClient.decodeResponse", () => {
  it("decodes a verdict whole, one byte at a time, and at arbitrary split points", () => {
    const bytes = enc(SPAM)
    expect(feed([bytes])).toEqual({ _tag: "Done", verdict: spamVerdict })
    expect(feed(Array.from(bytes, (b) => Uint8Array.of(b)))).toEqual({ _tag: "Done", verdict: spamVerdict })
    fc.assert(fc.property(fc.array(fc.nat(), { maxLength: 8 }), (cuts) => {
      expect(feed(splitAt(bytes, cuts))).toEqual({ _tag: "Done", verdict: spamVerdict })
    }))
    expect(feed([enc(HAM)])).toEqual({ _tag: "Done", verdict: { spam: false, score: -0.3, threshold: 5, symbols: [] } })
  })

  it("waits for the body, reads a body without Content-length up to the close, and reports errors", () => {
    expect(SpamdClient.decodeResponse(enc(SPAM.slice(0, -5)), false)).toEqual({ _tag: "Incomplete" })
    expect(SpamdClient.decodeResponse(enc(SPAM.slice(0, -5)), true)._tag).toBe("Error")
    const noLength = "SPAMD/1.1 0 EX_OK\r\nSpam: Yes ; 6.0 / 5.0\r\n\r\nA,B"
    expect(SpamdClient.decodeResponse(enc(noLength), false)).toEqual({ _tag: "Incomplete" })
    expect(SpamdClient.decodeResponse(enc(noLength), true)).toEqual({
      _tag: "Done",
      verdict: { spam: true, score: 6, threshold: 5, symbols: ["A", "B"] }
    })
    expect(SpamdClient.decodeResponse(enc("SPAMD/1.0 76 Bad header line: x\r\n"), false)).toEqual({
      _tag: "Error",
      reason: "Refused",
      message: "spamd: 76 Bad header line: x"
    })
    expect(SpamdClient.decodeResponse(enc("HTTP/1.1 200 OK\r\n\r\n"), false)).toMatchObject({ _tag: "Error", reason: "Protocol" })
    expect(SpamdClient.decodeResponse(enc("SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n"), false)).toMatchObject({
      _tag: "Error",
      message: "malformed Spam header"
    })
    expect(SpamdClient.decodeResponse(new Uint8Array(SpamdClient.maxResponseBytes + 1), false)).toMatchObject({
      _tag: "Error",
      message: "response too long"
    })
  })

  it("never throws on arbitrary bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), (b, eof) => {
      const d = SpamdClient.decodeResponse(b, eof)
      expect(["Incomplete", "Done", "Error"]).toContain(d._tag)
    }), { numRuns: 3000 })
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (s) => {
      SpamdClient.decodeResponse(enc("SPAMD/1.1 0 EX_OK\r\n" + s), true)
    }), { numRuns: 2000 })
  })
})

// ---------------------------------------------------------------------------
// A scripted connector
// ---------------------------------------------------------------------------

type Script = { readonly _tag: "Answer"; readonly text: string } | { readonly _tag: "Silent" } | { readonly _tag: "Down" }

const connector = (script: Script) => {
  const written: Array<Uint8Array> = []
  let closed = 0
  const layer = Layer.succeed(Transport.Connector)({
    connect: () =>
      script._tag === "Down"
        ? Effect.fail(new Transport.TransportError({ reason: "Connect", message: "connect ECONNREFUSED 127.0.0.1:783" }))
        : Effect.acquireRelease(
          Effect.sync((): Transport.Connection => {
            let sent = false
            return {
              id: 1,
              remote: { _tag: "Inet", address: "127.0.0.1", port: 783 },
              local: { _tag: "Inet", address: "127.0.0.1", port: 40000 },
              proxied: undefined,
              tls: () => undefined,
              read: script._tag === "Silent"
                ? Effect.never
                : Effect.sync(() => {
                  if (sent) return null
                  sent = true
                  return [enc(script.text)]
                }),
              write: (b) => Effect.sync(() => void written.push(b)),
              startTls: () => Effect.die("unused"),
              close: Effect.void,
              destroy: Effect.void
            }
          }),
          () => Effect.sync(() => void closed++)
        )
  })
  return { layer, written, closed: () => closed }
}

const facts: Facts = {
  remote: { _tag: "Inet", address: "192.0.2.1", port: 1234 },
  local: { _tag: "Inet", address: "192.0.2.25", port: 25 },
  proxied: undefined,
  hello: undefined,
  tls: undefined,
  auth: undefined,
  protocol: "ESMTP",
  sender: undefined,
  mailParams: undefined,
  recipients: []
}

const MESSAGE = enc("Subject: hi\r\n\r\nHello\r\n")
const envelope = Envelope.make({ sender: "a@example.org", recipients: ["b@example.com"], message: MESSAGE })

const runMessage = (options: SpamAssassin.Options, layer: Layer.Layer<Transport.Connector>, env = envelope) =>
  Effect.runPromise(
    SpamAssassin.validators(options).message!(facts, env).pipe(Effect.provide(layer), Effect.provide(Logger.layer([])))
  )

const spamd = { endpoint: { _tag: "Inet", address: "127.0.0.1", port: 783 } } as const

describe("SpamAssassin.validators", () => {
  it("flags a message below the reject level with X-Spam-Status and X-Spam-Symbols", async () => {
    const c = connector({ _tag: "Answer", text: SPAM })
    const d = await runMessage({ spamd, rejectAt: 2000 }, c.layer)
    expect(d).toEqual({
      _tag: "Accept",
      reply: undefined,
      headers: [["X-Spam-Status", "Yes, score=1001.1 required=5.0"], ["X-Spam-Symbols", "GTUBE,MSGID_SHORT,NO_RECEIVED"]]
    })
    expect(dec(c.written[0]!)).toBe(`SYMBOLS SPAMC/1.5\r\nContent-length: ${MESSAGE.length}\r\n\r\nSubject: hi\r\n\r\nHello\r\n`)
    expect(c.closed()).toBe(1)
  })

  it("rejects at or above the threshold, or on spamd's verdict", async () => {
    const d = await runMessage({ spamd, rejectAt: 15 }, connector({ _tag: "Answer", text: SPAM }).layer)
    expect(d._tag === "Reject" && Reply.encodeString(d.reply)).toBe("554 5.6.0 Message content rejected\r\n")
    const v = await runMessage({ spamd, rejectAt: "spam", reply: "550 5.7.1 Spam ({score}: {symbols})" }, connector({ _tag: "Answer", text: SPAM }).layer)
    expect(v._tag === "Reject" && Reply.toString(v.reply)).toBe("550 5.7.1 Spam (1001.1: GTUBE,MSGID_SHORT,NO_RECEIVED)")
    const ham = await runMessage({ spamd, rejectAt: "spam" }, connector({ _tag: "Answer", text: HAM }).layer)
    expect(ham).toEqual({ _tag: "Accept", reply: undefined, headers: [["X-Spam-Status", "No, score=-0.3 required=5.0"]] })
  })

  it("accepts with X-Spam-Status: Unknown, or answers 451, when spamd is down", async () => {
    const down = connector({ _tag: "Down" })
    expect(await runMessage({ spamd, rejectAt: 5 }, down.layer)).toEqual({
      _tag: "Accept",
      reply: undefined,
      headers: [["X-Spam-Status", "Unknown, spamd unavailable"]]
    })
    const d = await runMessage({ spamd, rejectAt: 5, onError: "tempfail" }, down.layer)
    expect(d._tag === "Reject" && Reply.toString(d.reply)).toBe("451 4.7.1 Content scanner unavailable, try again later")
  })

  it("gives up on a spamd that never answers at the time limit, and closes the connection", async () => {
    const silent = connector({ _tag: "Silent" })
    const started = Date.now()
    const d = await runMessage({ spamd: { ...spamd, timeoutMs: 50 }, onError: "tempfail" }, silent.layer)
    expect(d._tag).toBe("Reject")
    expect(Date.now() - started).toBeLessThan(2000)
    expect(silent.closed()).toBe(1)
  })

  it("does not scan messages over maxSize, nor authenticated mail when asked", async () => {
    const c = connector({ _tag: "Answer", text: SPAM })
    expect(await runMessage({ spamd, rejectAt: 5, maxSize: 10 }, c.layer)).toEqual({
      _tag: "Accept",
      reply: undefined,
      headers: [["X-Spam-Status", "Unknown, not scanned (message too large)"]]
    })
    expect(c.written).toHaveLength(0)
    const authed = await Effect.runPromise(
      SpamAssassin.validators({ spamd, rejectAt: 5, skipAuthenticated: true }).message!(
        { ...facts, auth: { authcid: "u", authzid: undefined } },
        envelope
      ).pipe(Effect.provide(c.layer))
    )
    expect(authed).toEqual({ _tag: "Accept", reply: undefined, headers: [] })
  })
})
