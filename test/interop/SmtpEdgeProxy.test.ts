/**
 * The SMTP edge behind a real haproxy sending the PROXY protocol (v1 with
 * `send-proxy`, v2 with `send-proxy-v2` and LOCAL health checks), and PROXY
 * headers that must be refused: from an untrusted peer, malformed, too long,
 * missing, late. A refused connection is closed without a banner, and the
 * edge keeps serving proxied clients.
 *
 * The client binds 127.0.0.3 before connecting to haproxy, so the address
 * the queue records (the PROXY source, 127.0.0.3 and the client's own port)
 * is distinguishable from the socket peer the edge sees (haproxy, 127.0.0.1).
 */
import { it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import nodemailer from "nodemailer"
import { describe, expect } from "vitest"
import * as ProxyProtocol from "@mailroom/protocol/wire/ProxyProtocol"
import { type Haproxy, startHaproxy } from "../support/haproxy.ts"
import { baseKeywords, ehloReply, HOST, RawClient, type RunningEdge, startEdge, text } from "./EdgeHarness.ts"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)
const queuedAs = (id: string) => `250 2.6.0 Ok: queued as ${id}\r\n`
const BANNER = `220 ${HOST} ESMTP Mailroom\r\n`
const CLIENT_ADDRESS = "127.0.0.3"

/** haproxy in the test's scope, stopped (by its PID) when the scope closes. */
const haproxyFor = (e: RunningEdge, proxy: "v1" | "v2", check = false) =>
  Effect.acquireRelease(
    promise(() => startHaproxy([{ backend: { host: "127.0.0.1", port: e.port }, proxy, check }])),
    (h: Haproxy) => promise(() => h.stop())
  )

/** One message through `port` from `localAddress`; returns the client's port and the replies. */
const sendVia = async (port: number, localAddress: string, from: string) => {
  const c = await RawClient.connect(port, "127.0.0.1", { localAddress })
  const clientPort = c.localPort
  let out = await c.reply()
  out += await c.command("EHLO proxied.client.example")
  c.send(`MAIL FROM:<${from}>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\n`)
  out += await c.replies(3)
  out += await c.command("Subject: via haproxy\r\n\r\nhello\r\n.")
  out += await c.command("QUIT")
  await c.waitClosed()
  return { clientPort, out }
}

const PROXY_TIMEOUT_MS = 1_500
const proxiedEdge = (trusted: ReadonlyArray<string> = ["127.0.0.1"]) =>
  startEdge({ listen: { proxyProtocol: { trusted, timeoutMs: PROXY_TIMEOUT_MS } } })

describe("behind haproxy", () => {
  for (const version of ["v1", "v2"] as const) {
    it.live(`send-proxy${version === "v2" ? "-v2" : ""}: the queue sees the client haproxy reported, not the socket peer`, () =>
      Effect.gen(function*() {
        const e = yield* proxiedEdge()
        const h = yield* haproxyFor(e, version, version === "v2")
        const port = h.ports[0]!
        const { clientPort, out } = yield* promise(() => sendVia(port, CLIENT_ADDRESS, `raw-${version}@client.example`))
        // nodemailer through the same haproxy, also bound to the client address
        const t = nodemailer.createTransport({ host: "127.0.0.1", port, ignoreTLS: true, localAddress: CLIENT_ADDRESS } as never)
        const info = yield* promise(() =>
          t.sendMail({ envelope: { from: `nm-${version}@client.example`, to: "y@mx.test.example" }, raw: "Subject: nm\r\n\r\nnm\r\n" })
        )
        t.close()
        const got = yield* promise(e.received)
        const raw = got.find((g) => g.sender === `raw-${version}@client.example`)!
        const nm = got.find((g) => g.sender === `nm-${version}@client.example`)!
        expect(out).toBe(
          BANNER + ehloReply(baseKeywords) +
            "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n" +
            queuedAs(raw.id) + "221 2.0.0 Bye\r\n"
        )
        expect(raw.client.address).toBe(CLIENT_ADDRESS)
        expect(raw.client.port).toBe(clientPort)
        expect(raw.client.ehlo).toBe("proxied.client.example")
        expect(text(raw.message)).toBe("Subject: via haproxy\r\n\r\nhello\r\n")
        expect(info.response).toBe(queuedAs(nm.id).trimEnd())
        expect(nm.client.address).toBe(CLIENT_ADDRESS)
        expect(text(nm.message)).toBe("Subject: nm\r\n\r\nnm\r\n")
      }))
  }

  it.live("a per-client connection limit counts the proxied address, not haproxy's", () =>
    Effect.gen(function*() {
      const e = yield* startEdge({
        listen: { proxyProtocol: { trusted: ["127.0.0.1"], timeoutMs: 500 } },
        edge: { maxConnectionsPerClient: 1 }
      })
      const h = yield* haproxyFor(e, "v2")
      const port = h.ports[0]!
      const a = yield* promise(() => RawClient.connect(port, "127.0.0.1", { localAddress: "127.0.0.3" }))
      expect(yield* promise(() => a.reply())).toBe(BANNER)
      // a second client address through the same haproxy is not limited by the first
      const b = yield* promise(() => RawClient.connect(port, "127.0.0.1", { localAddress: "127.0.0.4" }))
      expect(yield* promise(() => b.reply())).toBe(BANNER)
      // the first address again: over its share
      const a2 = yield* promise(() => RawClient.connect(port, "127.0.0.1", { localAddress: "127.0.0.3" }))
      expect(yield* promise(() => a2.waitClosed())).toBe("421 4.7.0 Too many connections from your address, try again later\r\n")
      a.destroy()
      b.destroy()
    }))
})

describe("refused PROXY headers: closed without a banner, others still served", () => {
  const directCases: ReadonlyArray<readonly [string, string | Uint8Array | undefined]> = [
    ["malformed v1 address", "PROXY TCP4 999.0.0.1 127.0.0.1 1 25\r\n"],
    ["v1 with a bare LF", "PROXY TCP4 192.0.2.1 127.0.0.1 1 25\n"],
    ["not a PROXY header (SMTP first)", "EHLO sneaky.example\r\n"],
    ["v1 longer than 107 bytes without CRLF", `PROXY TCP4 ${"1".repeat(200)}`],
    ["v2 with a bad version nibble", new Uint8Array([...ProxyProtocol.V2_SIGNATURE, 0x31, 0x11, 0x00, 0x0c, ...new Uint8Array(12)])],
    ["nothing at all (times out)", undefined]
  ]
  for (const [name, header] of directCases) {
    it.live(name, () =>
      Effect.gen(function*() {
        const e = yield* proxiedEdge()
        const bad = yield* promise(() => RawClient.connect(e.port))
        const t0 = Date.now()
        if (header !== undefined) bad.send(header)
        expect(yield* promise(() => bad.waitClosed(3_000))).toBe("")
        expect(bad.all).toBe("")
        // a bad header is refused as soon as its first bad byte is there; a missing one after the limit
        if (header === undefined) expect(Date.now() - t0).toBeGreaterThanOrEqual(PROXY_TIMEOUT_MS - 50)
        else expect(Date.now() - t0).toBeLessThan(PROXY_TIMEOUT_MS / 2)
        // a correct header from the trusted peer is served
        const good = yield* promise(() => RawClient.connect(e.port))
        good.send(ProxyProtocol.encodeV1({ source: { address: "192.0.2.7", port: 4242 }, destination: { address: "127.0.0.1", port: 25 } }))
        expect(yield* promise(() => good.reply())).toBe(BANNER)
        good.send("EHLO good.example\r\nMAIL FROM:<good@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\n")
        yield* promise(() => good.replies(4))
        const r = yield* promise(() => good.command("Subject: ok\r\n\r\nok\r\n."))
        const got = yield* promise(e.received)
        expect(got).toHaveLength(1)
        expect(r).toBe(queuedAs(got[0]!.id))
        expect(got[0]!.client).toMatchObject({ address: "192.0.2.7", port: 4242 })
        good.destroy()
      }))
  }

  it.live("a header arriving in pieces (one byte, then odd sizes) is read exactly; SMTP after it is not consumed", () =>
    Effect.gen(function*() {
      const e = yield* proxiedEdge()
      const c = yield* promise(() => RawClient.connect(e.port))
      const header = "PROXY TCP4 192.0.2.9 127.0.0.1 5353 25\r\n"
      for (const piece of [header.slice(0, 1), header.slice(1, 16), header.slice(16, 33), header.slice(33)]) {
        c.send(piece)
        yield* Effect.sleep(20)
      }
      expect(yield* promise(() => c.reply())).toBe(BANNER)
      c.send("EHLO pieces.example\r\nMAIL FROM:<p@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\n")
      yield* promise(() => c.replies(4))
      const r = yield* promise(() => c.command("Subject: p\r\n\r\np\r\n."))
      const [env] = yield* promise(e.received)
      expect(r).toBe(queuedAs(env!.id))
      expect(env!.client).toMatchObject({ address: "192.0.2.9", port: 5353, ehlo: "pieces.example" })
      c.destroy()
    }))

  it.live("a PROXY header from an untrusted peer: closed without a banner", () =>
    Effect.gen(function*() {
      const e = yield* proxiedEdge(["127.0.0.1"])
      const bad = yield* promise(() => RawClient.connect(e.port, "127.0.0.1", { localAddress: "127.0.0.2" }))
      bad.send(ProxyProtocol.encodeV1({ source: { address: "10.9.9.9", port: 1 }, destination: { address: "127.0.0.1", port: 25 } }))
      expect(yield* promise(() => bad.waitClosed(3_000))).toBe("")
      expect(bad.all).toBe("")
      expect(yield* promise(e.received)).toHaveLength(0)
    }))

  it.live("v2 LOCAL (a health check) from the trusted peer: the socket peer is the client", () =>
    Effect.gen(function*() {
      const e = yield* proxiedEdge()
      const c = yield* promise(() => RawClient.connect(e.port))
      c.send(ProxyProtocol.encodeV2({ source: undefined, destination: undefined }, { command: "LOCAL" }))
      expect(yield* promise(() => c.reply())).toBe(BANNER)
      c.send("EHLO local.example\r\nMAIL FROM:<local@client.example>\r\nRCPT TO:<x@mx.test.example>\r\nDATA\r\n")
      yield* promise(() => c.replies(4))
      const r = yield* promise(() => c.command("Subject: l\r\n\r\nl\r\n."))
      const [env] = yield* promise(e.received)
      expect(r).toBe(queuedAs(env!.id))
      expect(env!.client).toMatchObject({ address: "127.0.0.1", port: c.localPort })
      c.destroy()
    }))
})
