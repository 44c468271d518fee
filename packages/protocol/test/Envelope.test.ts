import { Result } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as Headers from "../src/envelope/Headers.ts"
import * as Bytes from "../src/wire/Bytes.ts"

const b = (s: string): Uint8Array => Bytes.fromLatin1(s)
const T = Date.UTC(2026, 10, 22, 5, 10, 32)
const ones = (n: number): Uint8Array => new Uint8Array(n).fill(0xff)

const sample: Envelope.Envelope = Envelope.make({
  id: "01kaq8x2r0zzzzzzzzzzzzzzzz",
  sender: "alice@example.org",
  recipients: ["bob@example.com", "carol@example.com", "dave@example.net"],
  message: b("Subject: hi\r\n\r\nbody \xe9\r\n"),
  client: {
    address: "2001:db8::1",
    port: 54321,
    reverseName: "mail.example.org",
    ehlo: "mail.example.org",
    protocol: "ESMTPSA",
    tls: { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256 },
    auth: "alice"
  },
  receiver: "mx.example.com",
  timestamp: T,
  dsn: {
    ret: "HDRS",
    envid: "QQ314159",
    notify: [["SUCCESS", "FAILURE"], undefined, ["NEVER"]],
    orcpt: [{ addrType: "rfc822", address: "bob@example.com" }, undefined, undefined]
  },
  body: "8BITMIME",
  smtputf8: false,
  requireTls: true
})

describe("Envelope.make", () => {
  it("fills defaults and pads DSN arrays to one entry per recipient", () => {
    const env = Envelope.make({ sender: "", recipients: ["a@x", "b@x"], message: b("x") })
    expect(env).toEqual({
      id: "",
      sender: "",
      recipients: ["a@x", "b@x"],
      message: b("x"),
      client: Envelope.unknownClient,
      receiver: undefined,
      timestamp: 0,
      dsn: { ret: undefined, envid: undefined, notify: [undefined, undefined], orcpt: [undefined, undefined] },
      body: undefined,
      smtputf8: false,
      requireTls: false
    })
    expect(env.dsn.notify.length).toBe(2)
  })

  it("copies the recipient list", () => {
    const rcpts = ["a@x"]
    const env = Envelope.make({ sender: "", recipients: rcpts, message: b("x") })
    rcpts.push("b@x")
    expect(env.recipients).toEqual(["a@x"])
  })

  it("refuses more DSN entries than recipients", () => {
    expect(() =>
      Envelope.make({ sender: "", recipients: ["a@x"], message: b("x"), dsn: { ret: undefined, envid: undefined, notify: [undefined, undefined], orcpt: [] } })
    ).toThrow(RangeError)
  })
})

describe("Envelope.withRecipients", () => {
  it("keeps the chosen recipients, in the given order, with their DSN parameters", () => {
    const split = Envelope.withRecipients(sample, [2, 0])
    expect(split.recipients).toEqual(["dave@example.net", "bob@example.com"])
    expect(split.dsn.notify).toEqual([["NEVER"], ["SUCCESS", "FAILURE"]])
    expect(split.dsn.orcpt).toEqual([undefined, { addrType: "rfc822", address: "bob@example.com" }])
    expect(split.dsn.ret).toBe("HDRS")
    expect(split.dsn.envid).toBe("QQ314159")
    expect(split.message).toBe(sample.message)
    expect(split.id).toBe(sample.id)
    expect(sample.recipients.length).toBe(3)
  })

  it("refuses an index out of range", () => {
    expect(() => Envelope.withRecipients(sample, [3])).toThrow(RangeError)
    expect(() => Envelope.withRecipients(sample, [-1])).toThrow(RangeError)
    expect(() => Envelope.withRecipients(sample, [0.5])).toThrow(RangeError)
  })

  it("may keep none", () => {
    expect(Envelope.withRecipients(sample, []).recipients).toEqual([])
  })
})

describe("Envelope message edits", () => {
  it("prepends and appends header fields without touching existing bytes", () => {
    const env = Envelope.prependHeader(sample, "Received", "from x by y; Sun, 22 Nov 2026 05:10:32 +0000")
    expect(Bytes.toLatin1(env.message)).toBe("Received: from x by y; Sun, 22 Nov 2026 05:10:32 +0000\r\nSubject: hi\r\n\r\nbody \xe9\r\n")
    const env2 = Envelope.appendHeader(env, "X-Tag", "1")
    expect(Bytes.toLatin1(env2.message)).toBe(
      "Received: from x by y; Sun, 22 Nov 2026 05:10:32 +0000\r\nSubject: hi\r\nX-Tag: 1\r\n\r\nbody \xe9\r\n"
    )
    expect(Bytes.toLatin1(sample.message)).toBe("Subject: hi\r\n\r\nbody \xe9\r\n")
    expect(Envelope.withMessage(sample, b("y")).message).toEqual(b("y"))
  })

  it("finds the end of the header block", () => {
    expect(Envelope.headerBlockEnd(sample.message)).toBe(15)
    expect(Envelope.headerBlockEnd(b("A: 1\n\nx"))).toBe(6)
    expect(Envelope.headerBlockEnd(b("A: 1\r\n"))).toBe(6)
  })

  it("tells 8-bit messages apart", () => {
    expect(Envelope.needs8Bit(sample)).toBe(true)
    expect(Envelope.needs8Bit(Envelope.withMessage(sample, b("Subject: x\r\n\r\n\x7f\r\n")))).toBe(false)
    expect(Envelope.has8Bit(b("\x80"))).toBe(true)
  })

  it("makes sortable lowercase ULID ids", () => {
    expect(Envelope.newId(ones, 1469918176385)).toBe("01aryz6s41zzzzzzzzzzzzzzzz")
    expect(Envelope.newId(ones, T) < Envelope.newId(() => new Uint8Array(10), T + 1)).toBe(true)
  })
})

describe("Envelope JSON", () => {
  it("has a stable, documented version 1 form", () => {
    expect(JSON.stringify(Envelope.toJSON(sample))).toBe(
      JSON.stringify({
        v: 1,
        id: "01kaq8x2r0zzzzzzzzzzzzzzzz",
        sender: "alice@example.org",
        recipients: ["bob@example.com", "carol@example.com", "dave@example.net"],
        client: {
          address: "2001:db8::1",
          port: 54321,
          reverseName: "mail.example.org",
          ehlo: "mail.example.org",
          protocol: "ESMTPSA",
          tls: { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256 },
          auth: "alice"
        },
        receiver: "mx.example.com",
        timestamp: 1795324232000,
        dsn: {
          ret: "HDRS",
          envid: "QQ314159",
          notify: [["SUCCESS", "FAILURE"], null, ["NEVER"]],
          orcpt: [{ addrType: "rfc822", address: "bob@example.com" }, null, null]
        },
        body: "8BITMIME",
        smtputf8: false,
        requireTls: true,
        message: "U3ViamVjdDogaGkNCg0KYm9keSDpDQo="
      })
    )
  })

  it("writes unknowns as null and omits absent TLS bits", () => {
    const env = Envelope.make({
      sender: "",
      recipients: ["a@x"],
      message: b(""),
      client: { ...Envelope.unknownClient, tls: { version: "TLSv1.2", cipher: "X" } }
    })
    expect(Envelope.toJSONString(env)).toBe(
      '{"v":1,"id":"","sender":"","recipients":["a@x"],' +
        '"client":{"address":null,"port":null,"reverseName":null,"ehlo":null,"protocol":"SMTP","tls":{"version":"TLSv1.2","cipher":"X"},"auth":null},' +
        '"receiver":null,"timestamp":0,"dsn":{"ret":null,"envid":null,"notify":[null],"orcpt":[null]},"body":null,"smtputf8":false,"requireTls":false,"message":""}'
    )
    expect(Result.getOrThrow(Envelope.fromJSONString(Envelope.toJSONString(env)))).toEqual(env)
  })

  // --- round trip ---------------------------------------------------------

  const safeText = (min: number, max: number) =>
    fc.string({ unit: fc.constantFrom("a", "Z", "0", "@", ".", " ", "\"", "\\", "é", "€", "😀", "<", "(", "\u2028", "\u0085"), minLength: min, maxLength: max })
  const host = fc.domain()
  const notify = fc.oneof(
    fc.constant(undefined),
    fc.constant(["NEVER"] as const),
    fc.subarray(["SUCCESS", "FAILURE", "DELAY"] as const, { minLength: 1 })
  )
  const orcpt = fc.option(fc.record({ addrType: fc.constantFrom("rfc822", "utf-8"), address: safeText(1, 40) }), { nil: undefined })
  const client = fc.record({
    address: fc.option(fc.oneof(fc.ipV4(), fc.ipV6()), { nil: undefined }),
    port: fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined }),
    reverseName: fc.option(host, { nil: undefined }),
    ehlo: fc.option(safeText(0, 60), { nil: undefined }),
    protocol: fc.constantFrom("SMTP", "ESMTP", "ESMTPS", "ESMTPSA", "LMTP", "UTF8SMTPS", "HTTPS"),
    tls: fc.option(
      fc.record({ version: fc.constantFrom("TLSv1.2", "TLSv1.3"), cipher: fc.constantFrom("TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES256-GCM-SHA384"), bits: fc.option(fc.constantFrom(128, 256), { nil: undefined }) }),
      { nil: undefined }
    ),
    auth: fc.option(safeText(1, 30), { nil: undefined })
  })
  const envelopes: fc.Arbitrary<Envelope.Envelope> = fc
    .record({
      id: fc.string({ unit: fc.constantFrom(..."0123456789abcdefghjkmnpqrstvwxyzABC_-".split("")), maxLength: 128 }),
      sender: safeText(0, 80),
      recipients: fc.array(safeText(1, 80), { minLength: 0, maxLength: 6 }),
      message: fc.uint8Array({ maxLength: 400 }),
      client,
      receiver: fc.option(host, { nil: undefined }),
      timestamp: fc.integer({ min: 0, max: 2 ** 48 - 1 }),
      ret: fc.constantFrom("FULL", "HDRS", undefined),
      envid: fc.option(safeText(0, 100), { nil: undefined }),
      body: fc.constantFrom("7BIT", "8BITMIME", "BINARYMIME", undefined),
      smtputf8: fc.boolean(),
      requireTls: fc.boolean()
    })
    .chain((r) =>
      fc.record({ notify: fc.array(notify, { minLength: r.recipients.length, maxLength: r.recipients.length }), orcpt: fc.array(orcpt, { minLength: r.recipients.length, maxLength: r.recipients.length }) }).map(
        (d): Envelope.Envelope =>
          Envelope.make({
            id: r.id,
            sender: r.sender,
            recipients: r.recipients,
            message: r.message,
            client: r.client,
            receiver: r.receiver,
            timestamp: r.timestamp,
            dsn: { ret: r.ret, envid: r.envid, notify: d.notify, orcpt: d.orcpt },
            body: r.body,
            smtputf8: r.smtputf8,
            requireTls: r.requireTls
          })
      )
    )

  it("property: every envelope survives toJSON, JSON text and fromJSON unchanged (8-bit bytes included)", () => {
    fc.assert(
      fc.property(envelopes, (env) => {
        const text = JSON.stringify(Envelope.toJSON(env))
        const back = Envelope.fromJSONString(text)
        if (Result.isFailure(back)) throw new Error(back.failure.message)
        expect(back.success).toEqual(env)
        expect(Bytes.equals(back.success.message, env.message)).toBe(true)
        expect(JSON.stringify(Envelope.toJSON(back.success))).toBe(text)
      }),
      { numRuns: 500 }
    )
  })

  // --- rejection ----------------------------------------------------------

  const good = (): Record<string, any> => JSON.parse(Envelope.toJSONString(sample))
  const reject = (mutate: (j: Record<string, any>) => void): Envelope.EnvelopeJsonError => {
    const j = good()
    mutate(j)
    const r = Envelope.fromJSON(j)
    if (Result.isSuccess(r)) throw new Error("accepted")
    expect(r.failure._tag).toBe("EnvelopeJsonError")
    expect(r.failure.message.startsWith(r.failure.field + ":")).toBe(true)
    return r.failure
  }

  const cases: ReadonlyArray<[string, (j: Record<string, any>) => void]> = [
    ["v", (j) => (j.v = 2)],
    ["v", (j) => delete j.v],
    ["id", (j) => (j.id = "../../etc/passwd")],
    ["id", (j) => (j.id = "a".repeat(129))],
    ["id", (j) => (j.id = 7)],
    ["sender", (j) => (j.sender = "a\r\nRCPT TO:<x@y>")],
    ["sender", (j) => (j.sender = null)],
    ["sender", (j) => (j.sender = "\ud800")],
    ["recipients", (j) => (j.recipients = "bob@example.com")],
    ["recipients[1]", (j) => (j.recipients[1] = "")],
    ["recipients[2]", (j) => (j.recipients[2] = 5)],
    ["client", (j) => (j.client = [])],
    ["client.address", (j) => (j.client.address = "999.0.0.1")],
    ["client.address", (j) => (j.client.address = "example.org")],
    ["client.port", (j) => (j.client.port = 65536)],
    ["client.port", (j) => (j.client.port = "25")],
    ["client.reverseName", (j) => (j.client.reverseName = "a b")],
    ["client.ehlo", (j) => (j.client.ehlo = "x\u0000")],
    ["client.protocol", (j) => (j.client.protocol = "ESMTP S")],
    ["client.protocol", (j) => delete j.client.protocol],
    ["client.tls", (j) => (j.client.tls = "TLSv1.3")],
    ["client.tls.version", (j) => (j.client.tls.version = "")],
    ["client.tls.cipher", (j) => (j.client.tls.cipher = "x\ny")],
    ["client.tls.bits", (j) => (j.client.tls.bits = -1)],
    ["client.tls.bits", (j) => (j.client.tls.bits = null)],
    ["client.tls.extra", (j) => (j.client.tls.extra = 1)],
    ["client.auth", (j) => (j.client.auth = {})],
    ["client.peer", (j) => (j.client.peer = "x")],
    ["receiver", (j) => (j.receiver = "")],
    ["timestamp", (j) => (j.timestamp = -1)],
    ["timestamp", (j) => (j.timestamp = 1.5)],
    ["timestamp", (j) => (j.timestamp = "2026-11-22")],
    ["dsn", (j) => (j.dsn = null)],
    ["dsn.ret", (j) => (j.dsn.ret = "ALL")],
    ["dsn.envid", (j) => (j.dsn.envid = "x".repeat(101))],
    ["dsn.notify", (j) => j.dsn.notify.pop()],
    ["dsn.notify[0]", (j) => (j.dsn.notify[0] = [])],
    ["dsn.notify[0][1]", (j) => (j.dsn.notify[0][1] = "SOMETIMES")],
    ["dsn.notify[0][1]", (j) => (j.dsn.notify[0][1] = "SUCCESS")],
    ["dsn.notify[2]", (j) => (j.dsn.notify[2] = ["NEVER", "DELAY"])],
    ["dsn.orcpt", (j) => j.dsn.orcpt.push(null)],
    ["dsn.orcpt[0].addrType", (j) => (j.dsn.orcpt[0].addrType = "rfc 822")],
    ["dsn.orcpt[0].address", (j) => (j.dsn.orcpt[0].address = "")],
    ["dsn.orcpt[1]", (j) => (j.dsn.orcpt[1] = "x")],
    ["body", (j) => (j.body = "8BIT")],
    ["smtputf8", (j) => (j.smtputf8 = "false")],
    ["requireTls", (j) => (j.requireTls = 1)],
    ["requireTls", (j) => delete j.requireTls],
    ["message", (j) => (j.message = "not base64!")],
    ["message", (j) => (j.message = "QQ=")],
    ["message", (j) => (j.message = null)],
    ["extra", (j) => (j.extra = true)],
    ["receiver", (j) => delete j.receiver]
  ]
  for (const [field, mutate] of cases) {
    it(`rejects a bad ${field}: ${mutate.toString().replace(/^\(j\) => /, "")}`, () => {
      expect(reject(mutate).field).toBe(field)
    })
  }

  it("says what it expected", () => {
    expect(reject((j) => (j.client.port = "25")).message).toBe('client.port: expected an integer 0-65535 or null, got "25"')
    expect(reject((j) => (j.v = 2)).message).toBe("v: unsupported version 2, this build reads version 1")
    expect(reject((j) => delete j.receiver).message).toBe("receiver: missing")
    expect(reject((j) => (j.extra = 1)).message).toBe("extra: unknown key")
    expect(reject((j) => j.dsn.notify.pop()).message).toBe("dsn.notify: expected 3 entries (one per recipient), got 2")
    expect(reject((j) => (j.dsn.notify[2] = ["NEVER", "DELAY"])).message).toBe("dsn.notify[2]: NEVER must stand alone")
    expect(reject((j) => (j.sender = "a\r\nb")).message).toBe('sender: expected a string of 0-1000 characters without control characters, got "a\\r\\nb"')
  })

  it("rejects non-objects and text that is not JSON", () => {
    for (const u of [null, undefined, 1, "x", [], true]) {
      const r = Envelope.fromJSON(u)
      expect(Result.isFailure(r) && r.failure.field).toBe("(root)")
    }
    const r = Envelope.fromJSONString("{")
    expect(Result.isFailure(r) && r.failure.message).toBe("(root): not valid JSON")
  })

  it("treats a __proto__ key as an unknown key and pollutes nothing", () => {
    const text = Envelope.toJSONString(sample).replace('"v":1,', '"v":1,"__proto__":{"polluted":true},')
    const r = Envelope.fromJSONString(text)
    expect(Result.isFailure(r) && r.failure.field).toBe("__proto__")
    const text2 = Envelope.toJSONString(sample).replace('"port":54321,', '"port":54321,"__proto__":{"protocol":"X"},')
    const r2 = Envelope.fromJSONString(text2)
    expect(Result.isFailure(r2) && r2.failure.field).toBe("client.__proto__")
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined()
  })

  it("does not read inherited properties as fields", () => {
    const j = good()
    const proto = { receiver: "mx.example.com" }
    delete j.receiver
    const r = Envelope.fromJSON(Object.assign(Object.create(proto), j))
    expect(Result.isFailure(r) && r.failure.field).toBe("receiver")
  })

  it("property: never throws, on arbitrary values or on a valid form with one field replaced", () => {
    fc.assert(
      fc.property(fc.anything(), (u) => {
        expect(Result.isFailure(Envelope.fromJSON(u))).toBe(true)
      }),
      { numRuns: 500 }
    )
    const paths = ["v", "id", "sender", "recipients", "client", "client.address", "client.port", "client.tls", "client.tls.bits", "receiver", "timestamp", "dsn", "dsn.notify", "dsn.orcpt", "body", "smtputf8", "requireTls", "message"]
    fc.assert(
      fc.property(fc.constantFrom(...paths), fc.jsonValue(), (path, value) => {
        const j = good()
        const keys = path.split(".")
        let o = j
        for (const k of keys.slice(0, -1)) o = o[k]
        o[keys[keys.length - 1]!] = value
        const r = Envelope.fromJSON(j)
        // a wrong recipient count shows up as a DSN array of the wrong length
        const blamed = keys[0] === "recipients" ? /^(recipients|dsn)/ : new RegExp(`^${keys[0]}`)
        if (Result.isFailure(r)) expect(r.failure.field).toMatch(blamed)
      }),
      { numRuns: 1000 }
    )
    fc.assert(
      fc.property(fc.string(), (text) => {
        expect(Result.isFailure(Envelope.fromJSONString(text))).toBe(true)
      })
    )
  })

  it("reads what Headers writes: received facts from a decoded envelope", () => {
    const env = Result.getOrThrow(Envelope.fromJSONString(Envelope.toJSONString(sample)))
    expect(Headers.received({ client: env.client, receiver: env.receiver ?? "", id: env.id, timestamp: env.timestamp, recipients: env.recipients.slice(0, 1) })).toBe(
      "from mail.example.org (mail.example.org [IPv6:2001:db8::1]) (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) " +
        "by mx.example.com (Mailroom) with ESMTPSA id 01kaq8x2r0zzzzzzzzzzzzzzzz for <bob@example.com>; Sun, 22 Nov 2026 05:10:32 +0000"
    )
  })
})
