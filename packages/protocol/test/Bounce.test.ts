import fc from "fast-check"
import { simpleParser } from "mailparser"
import { describe, expect, it } from "vitest"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as Bounce from "../src/queue/Bounce.ts"
import * as Reply from "../src/smtp/Reply.ts"

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array): string => new TextDecoder().decode(b)

/** Bytes 0, 1, 2, … across calls: predictable boundaries and ids. */
const counter = (): ((n: number) => Uint8Array) => {
  let k = 0
  return (n) => Uint8Array.from({ length: n }, () => k++ & 255)
}

const RECEIVED = 1795324232000 // Sun, 22 Nov 2026 05:10:32 +0000
const NOW = RECEIVED + 60_000 // 05:11:32

const originalText = "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hi\r\nMessage-Id: <m1@example.org>\r\n\r\nHello Bob\r\n"

const original = (fields: Partial<Envelope.Envelope> = {}): Envelope.Envelope =>
  Envelope.make({
    id: "01kaaaaaaaaaaaaaaaaaaaaaaa",
    sender: "alice@example.org",
    recipients: ["bob@example.com", "carol@example.com", "dave@example.net"],
    message: enc(originalText),
    timestamp: RECEIVED,
    client: { ...Envelope.unknownClient, address: "192.0.2.1", ehlo: "client.example.org", protocol: "ESMTPS" },
    ...fields
  })

const noSuchUser = Reply.make(550, "5.1.1", "No such user")
const bob: Bounce.FailedRecipient = { recipient: "bob@example.com", index: 0, reply: noSuchUser, remote: "mx.example.com", action: "failed" }

const options = (o: Partial<Bounce.Options> = {}): Bounce.Options => ({
  hostname: "mx.mailroom.test",
  now: NOW,
  random: counter(),
  kind: "failure",
  ...o
})

/** The fields of a delivery-status body: blocks separated by empty lines, each a list of [name, value], unfolded. */
const statusBlocks = (text: string): Array<Array<[string, string]>> =>
  text.replace(/\r\n[ \t]/g, " ").split(/\r\n\r\n/).filter((b) => b.trim() !== "").map((block) =>
    block.split("\r\n").filter((l) => l !== "").map((l) => {
      const i = l.indexOf(":")
      return [l.slice(0, i), l.slice(i + 1).trim()] as [string, string]
    })
  )

const boundaryOf = (message: string): string => /boundary="([^"]+)"/.exec(message)![1]!

/** The raw parts between the boundary delimiters: [headers, body] of each. */
const rawParts = (message: string): Array<[string, string]> => {
  const b = boundaryOf(message)
  const pieces = message.split(`\r\n--${b}`)
  // pieces[0] ends with the preamble, the last starts with "--\r\n"
  expect(pieces[pieces.length - 1]).toBe("--\r\n")
  return pieces.slice(1, -1).map((p) => {
    const body = p.slice(2) // the CRLF after the delimiter
    const i = body.indexOf("\r\n\r\n")
    return [body.slice(0, i + 2), body.slice(i + 4)]
  })
}

const parse = (env: Envelope.Envelope) => simpleParser(Buffer.from(env.message), { keepDeliveryStatus: true })

describe("Bounce.build: a failure report", () => {
  it("writes the whole report, byte for byte", () => {
    const env = Bounce.build(original(), [bob], options())!
    const text = dec(env.message)
    const messageId = /^Message-Id: (<[0-9a-z]{26}@mx\.mailroom\.test>)\r$/m.exec(text)![1]!
    expect(text).toBe(
      "From: Mail Delivery System <MAILER-DAEMON@mx.mailroom.test>\r\n" +
        "To: <alice@example.org>\r\n" +
        "Subject: Undelivered Mail Returned to Sender\r\n" +
        "Date: Sun, 22 Nov 2026 05:11:32 +0000\r\n" +
        `Message-Id: ${messageId}\r\n` +
        "Auto-Submitted: auto-replied\r\n" +
        "MIME-Version: 1.0\r\n" +
        "Content-Type: multipart/report; report-type=delivery-status;\r\n" +
        ' boundary="=_mailroom_000102030405060708090a0b"\r\n' +
        "Content-Transfer-Encoding: 7bit\r\n" +
        "\r\n" +
        "This is a MIME-encapsulated message.\r\n" +
        "\r\n" +
        "--=_mailroom_000102030405060708090a0b\r\n" +
        "Content-Description: Notification\r\n" +
        "Content-Type: text/plain; charset=us-ascii\r\n" +
        "\r\n" +
        "This is the mail system at host mx.mailroom.test.\r\n" +
        "\r\n" +
        "I'm sorry to have to inform you that your message could not\r\n" +
        "be delivered to one or more recipients. It's attached below.\r\n" +
        "\r\n" +
        "For further assistance, please send mail to postmaster.\r\n" +
        "\r\n" +
        "If you do so, please include this problem report. You can\r\n" +
        "delete your own text from the attached returned message.\r\n" +
        "\r\n" +
        "                   The mail system\r\n" +
        "\r\n" +
        "<bob@example.com>: host mx.example.com said: 550 5.1.1 No such user\r\n" +
        "\r\n" +
        "--=_mailroom_000102030405060708090a0b\r\n" +
        "Content-Description: Delivery report\r\n" +
        "Content-Type: message/delivery-status\r\n" +
        "\r\n" +
        "Reporting-MTA: dns; mx.mailroom.test\r\n" +
        "X-Mailroom-Queue-ID: 01kaaaaaaaaaaaaaaaaaaaaaaa\r\n" +
        "Received-From-MTA: dns; client.example.org ([192.0.2.1])\r\n" +
        "Arrival-Date: Sun, 22 Nov 2026 05:10:32 +0000\r\n" +
        "\r\n" +
        "Final-Recipient: rfc822; bob@example.com\r\n" +
        "Action: failed\r\n" +
        "Status: 5.1.1\r\n" +
        "Remote-MTA: dns; mx.example.com\r\n" +
        "Diagnostic-Code: smtp; 550 5.1.1 No such user\r\n" +
        "Last-Attempt-Date: Sun, 22 Nov 2026 05:11:32 +0000\r\n" +
        "\r\n" +
        "--=_mailroom_000102030405060708090a0b\r\n" +
        "Content-Description: Undelivered Message\r\n" +
        "Content-Type: message/rfc822\r\n" +
        "Content-Transfer-Encoding: 7bit\r\n" +
        "\r\n" +
        originalText +
        "\r\n" +
        "--=_mailroom_000102030405060708090a0b--\r\n"
    )
  })

  it("makes an envelope from the null sender to the original sender", () => {
    const env = Bounce.build(original(), [bob], options())!
    expect(env.sender).toBe("")
    expect(env.recipients).toEqual(["alice@example.org"])
    expect(env.id).toMatch(/^[0-9a-z]{26}$/)
    expect(env.id.slice(0, 10)).toBe(Envelope.newId(() => new Uint8Array(10), NOW).slice(0, 10))
    expect(env.client).toEqual({ ...Envelope.unknownClient, protocol: "LOCAL" })
    expect(env.receiver).toBe("mx.mailroom.test")
    expect(env.timestamp).toBe(NOW)
    expect(env.body).toBeUndefined()
    expect(env.smtputf8).toBe(false)
    expect(env.requireTls).toBe(false)
    expect(env.dsn).toEqual({ ret: undefined, envid: undefined, notify: [undefined], orcpt: [undefined] })
    // it survives the storage format
    expect(Envelope.fromJSONString(Envelope.toJSONString(env))._tag).toBe("Success")
  })

  it("parses as a multipart/report with the three parts (mailparser)", async () => {
    const two = [bob, { recipient: "carol@example.com", index: 1, reply: Reply.make(552, "5.2.2", "Mailbox full"), action: "failed" as const }]
    const env = Bounce.build(original(), two, options())!
    const mail = await parse(env)
    expect(mail.subject).toBe("Undelivered Mail Returned to Sender")
    expect(mail.from?.value).toEqual([{ address: "MAILER-DAEMON@mx.mailroom.test", name: "Mail Delivery System" }])
    expect((mail.to as { value: unknown }).value).toEqual([{ address: "alice@example.org", name: "" }])
    expect(mail.date?.getTime()).toBe(NOW)
    expect(mail.headers.get("auto-submitted")).toBe("auto-replied")
    expect(mail.headers.get("content-type")).toEqual({
      value: "multipart/report",
      params: { "report-type": "delivery-status", boundary: "=_mailroom_000102030405060708090a0b" }
    })
    expect(mail.text).toContain("<bob@example.com>: host mx.example.com said: 550 5.1.1 No such user\n")
    expect(mail.text).toContain("<carol@example.com>: 552 5.2.2 Mailbox full\n")
    expect(mail.attachments.map((a) => a.contentType)).toEqual(["message/delivery-status", "message/rfc822"])
    const status = statusBlocks(mail.attachments[0]!.content.toString("utf8"))
    expect(status).toEqual([
      [
        ["Reporting-MTA", "dns; mx.mailroom.test"],
        ["X-Mailroom-Queue-ID", "01kaaaaaaaaaaaaaaaaaaaaaaa"],
        ["Received-From-MTA", "dns; client.example.org ([192.0.2.1])"],
        ["Arrival-Date", "Sun, 22 Nov 2026 05:10:32 +0000"]
      ],
      [
        ["Final-Recipient", "rfc822; bob@example.com"],
        ["Action", "failed"],
        ["Status", "5.1.1"],
        ["Remote-MTA", "dns; mx.example.com"],
        ["Diagnostic-Code", "smtp; 550 5.1.1 No such user"],
        ["Last-Attempt-Date", "Sun, 22 Nov 2026 05:11:32 +0000"]
      ],
      [
        ["Final-Recipient", "rfc822; carol@example.com"],
        ["Action", "failed"],
        ["Status", "5.2.2"],
        ["Diagnostic-Code", "smtp; 552 5.2.2 Mailbox full"],
        ["Last-Attempt-Date", "Sun, 22 Nov 2026 05:11:32 +0000"]
      ]
    ])
    expect(mail.attachments[1]!.content.toString("utf8")).toBe(originalText)
    const inner = await simpleParser(mail.attachments[1]!.content)
    expect(inner.subject).toBe("hi")
    expect(inner.messageId).toBe("<m1@example.org>")
  })

  it("echoes ENVID and ORCPT", () => {
    const orig = original({
      dsn: {
        ret: "FULL",
        envid: "QQ314159",
        notify: [["FAILURE"], undefined, undefined],
        orcpt: [{ addrType: "rfc822", address: "Bob.Original@example.com" }, undefined, undefined]
      }
    })
    const carol: Bounce.FailedRecipient = { recipient: "carol@example.com", index: 1, reply: noSuchUser, action: "failed" }
    const [head, rcpt1, rcpt2] = statusBlocks(rawParts(dec(Bounce.build(orig, [bob, carol], options())!.message))[1]![1])
    expect(head).toContainEqual(["Original-Envelope-Id", "QQ314159"])
    expect(rcpt1![0]).toEqual(["Original-Recipient", "rfc822; Bob.Original@example.com"])
    expect(rcpt1![1]).toEqual(["Final-Recipient", "rfc822; bob@example.com"])
    expect(rcpt2!.map(([n]) => n)).not.toContain("Original-Recipient")
  })

  it("derives Status from the reply class when there is no enhanced code", () => {
    const statuses = [
      Reply.make(550, undefined, "go away"),
      Reply.make(451, undefined, "later"),
      Reply.make(554, "5.7.1", "Rejected")
    ].map((reply) => Bounce.statusOf({ recipient: "x@y", index: 0, reply, action: "failed" }))
    expect(statuses).toEqual(["5.0.0", "4.0.0", "5.7.1"])
    // an expired message is failed with its last transient reply, as Postfix reports it
    const env = Bounce.build(original(), [{ ...bob, reply: Reply.make(451, "4.4.1", "Connection timed out") }], options())!
    const [, r] = statusBlocks(rawParts(dec(env.message))[1]![1])
    expect(r).toContainEqual(["Status", "4.4.1"])
    expect(r).toContainEqual(["Action", "failed"])
    expect(r).toContainEqual(["Diagnostic-Code", "smtp; 451 4.4.1 Connection timed out"])
  })

  it("joins a multi-line reply into one diagnostic", () => {
    const reply = Reply.make(550, "5.7.1", ["Message rejected", "see https://example.com/why"])
    const env = Bounce.build(original(), [{ ...bob, reply }], options())!
    const [, r] = statusBlocks(rawParts(dec(env.message))[1]![1])
    expect(r).toContainEqual(["Diagnostic-Code", "smtp; 550 5.7.1 Message rejected see https://example.com/why"])
  })

  it("wraps long diagnostics in the text part like Postfix, and keeps every line under 998 octets", () => {
    const long = "word ".repeat(40).trim()
    const env = Bounce.build(original(), [{ ...bob, reply: Reply.make(550, "5.1.1", long + " " + "x".repeat(2500)) }], options())!
    const text = rawParts(dec(env.message))[0]![1]
    const entry = text.slice(text.indexOf("<bob@example.com>"))
    const lines = entry.split("\r\n").filter((l) => l !== "")
    expect(lines[0]).toBe("<bob@example.com>: host mx.example.com said: 550 5.1.1 word word word word")
    for (const l of lines.slice(1)) expect(l.startsWith("    ")).toBe(true)
    for (const l of dec(env.message).split("\r\n")) expect(l.length).toBeLessThanOrEqual(998)
  })
})

describe("Bounce.build: when no report may be sent", () => {
  it("never bounces a bounce: the null sender gets nothing", () => {
    expect(Bounce.build(original({ sender: "" }), [bob], options())).toBeUndefined()
    expect(Bounce.build(original({ sender: "" }), [bob], options({ kind: "delay" }))).toBeUndefined()
  })

  it("sends nothing with no recipients", () => {
    expect(Bounce.build(original(), [], options())).toBeUndefined()
  })

  it("follows NOTIFY per recipient", () => {
    const rcpts: ReadonlyArray<Bounce.FailedRecipient> = [0, 1, 2].map((index) => ({
      recipient: original().recipients[index]!,
      index,
      reply: noSuchUser,
      action: "failed"
    }))
    const withNotify = (notify: Envelope.DsnParams["notify"]) =>
      original({ dsn: { ret: undefined, envid: undefined, notify, orcpt: [] } })
    const listed = (env: Envelope.Envelope | undefined): Array<string> =>
      env === undefined
        ? []
        : statusBlocks(rawParts(dec(env.message))[1]![1]).slice(1).map((b) => b.find(([n]) => n === "Final-Recipient")![1])
    expect(Bounce.build(withNotify([["NEVER"], ["NEVER"], ["NEVER"]]), rcpts, options())).toBeUndefined()
    expect(Bounce.build(withNotify([["SUCCESS"], ["DELAY"], ["SUCCESS", "DELAY"]]), rcpts, options())).toBeUndefined()
    expect(listed(Bounce.build(withNotify([["NEVER"], undefined, ["DELAY", "FAILURE"]]), rcpts, options()))).toEqual([
      "rfc822; carol@example.com",
      "rfc822; dave@example.net"
    ])
    expect(listed(Bounce.build(withNotify([["SUCCESS"], ["FAILURE"], ["NEVER"]]), rcpts, options()))).toEqual([
      "rfc822; carol@example.com"
    ])
  })

  it("reports delays by default and when DELAY is listed, not when NOTIFY leaves it out", () => {
    const delayed = (notify: Envelope.DsnParams["notify"]) =>
      Bounce.build(
        original({ dsn: { ret: undefined, envid: undefined, notify, orcpt: [] } }),
        [{ ...bob, action: "delayed", reply: Reply.make(451, "4.3.0", "Try later") }],
        options({ kind: "delay" })
      )
    expect(delayed([undefined])).toBeDefined()
    expect(delayed([["DELAY"]])).toBeDefined()
    expect(delayed([["FAILURE"]])).toBeUndefined()
    expect(delayed([["SUCCESS", "FAILURE"]])).toBeUndefined()
  })

  it("reports success only when NOTIFY asks for it", () => {
    const delivered: Bounce.FailedRecipient = { ...bob, action: "delivered", reply: Reply.make(250, "2.0.0", "Ok: queued as 123") }
    const success = (notify: Envelope.DsnParams["notify"]) =>
      Bounce.build(original({ dsn: { ret: undefined, envid: undefined, notify, orcpt: [] } }), [delivered], options({ kind: "success" }))
    expect(success([undefined])).toBeUndefined()
    expect(success([["FAILURE", "DELAY"]])).toBeUndefined()
    expect(Bounce.notifies(undefined, "delivered")).toBe(false)
    expect(Bounce.notifies(["SUCCESS"], "delivered")).toBe(true)
    expect(Bounce.notifies(undefined, "failed")).toBe(true)
    expect(Bounce.notifies(undefined, "delayed")).toBe(true)
    expect(Bounce.notifies(["NEVER"], "failed")).toBe(false)
    expect(success([["SUCCESS"]])).toBeDefined()
  })

  it("refuses a recipient index outside the original envelope", () => {
    expect(() => Bounce.build(original(), [{ ...bob, index: 3 }], options())).toThrow(RangeError)
  })
})

describe("Bounce.build: what is returned", () => {
  const headerBlock = originalText.slice(0, originalText.indexOf("\r\n\r\n") + 4)

  it("returns only the header block with RET=HDRS", async () => {
    const orig = original({ dsn: { ret: "HDRS", envid: undefined, notify: [], orcpt: [] } })
    const env = Bounce.build(orig, [bob], options())!
    const parts = rawParts(dec(env.message))
    expect(parts[2]).toEqual([
      "Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 7bit\r\n",
      headerBlock
    ])
    const mail = await parse(env)
    expect(mail.attachments.map((a) => a.contentType)).toEqual(["message/delivery-status", "text/rfc822-headers"])
    expect(mail.attachments[1]!.content.toString("utf8")).toBe(headerBlock)
    expect(mail.text).not.toContain("Hello Bob")
  })

  it("returns headers only when the message is over the size cap, even with RET=FULL", () => {
    const orig = original({ dsn: { ret: "FULL", envid: undefined, notify: [], orcpt: [] } })
    const small = rawParts(dec(Bounce.build(orig, [bob], options({ maxReturnBytes: originalText.length }))!.message))
    expect(small[2]![1]).toBe(originalText)
    const big = rawParts(dec(Bounce.build(orig, [bob], options({ maxReturnBytes: originalText.length - 1 }))!.message))
    expect(big[2]![0]).toContain("Content-Type: text/rfc822-headers\r\n")
    expect(big[2]![1]).toBe(headerBlock)
    expect(Bounce.defaultMaxReturnBytes).toBe(10 * 1024 * 1024)
  })

  it("writes a delay warning with Will-Retry-Until and the headers only", () => {
    const delayedBob: Bounce.FailedRecipient = {
      ...bob,
      action: "delayed",
      reply: Reply.make(451, "4.4.1", "Connection timed out")
    }
    const env = Bounce.build(original(), [delayedBob], options({
      kind: "delay",
      delayedFor: 4 * 3_600_000,
      willRetryUntil: RECEIVED + 5 * 86_400_000
    }))!
    const text = dec(env.message)
    expect(text).toContain("\r\nSubject: Delayed Mail (still being retried)\r\n")
    const parts = rawParts(text)
    expect(parts).toHaveLength(3)
    const [[, human], [, status], [returnedHead, returned]] = parts as [[string, string], [string, string], [string, string]]
    expect(human).toContain(
      "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n" +
        "####################################################################\r\n" +
        "\r\n" +
        "Your message could not be delivered for 4.0 hours.\r\n" +
        "It will be retried until it is 5.0 days old.\r\n"
    )
    expect(human).toContain("<bob@example.com>: host mx.example.com said: 451 4.4.1 Connection timed out\r\n")
    expect(statusBlocks(status!)[1]).toEqual([
      ["Final-Recipient", "rfc822; bob@example.com"],
      ["Action", "delayed"],
      ["Status", "4.4.1"],
      ["Remote-MTA", "dns; mx.example.com"],
      ["Diagnostic-Code", "smtp; 451 4.4.1 Connection timed out"],
      ["Last-Attempt-Date", "Sun, 22 Nov 2026 05:11:32 +0000"],
      ["Will-Retry-Until", "Fri, 27 Nov 2026 05:10:32 +0000"]
    ])
    expect(returnedHead).toBe("Content-Description: Message Headers\r\nContent-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 7bit\r\n")
    expect(returned).toBe(headerBlock)
  })

  it("writes a delay of less than an hour in minutes", () => {
    const env = Bounce.build(original(), [{ ...bob, action: "delayed" }], options({ kind: "delay", delayedFor: 30 * 60_000 }))!
    expect(dec(env.message)).toContain("Your message could not be delivered for 30 minutes.\r\n")
  })

  it("writes a success report", async () => {
    const delivered: Bounce.FailedRecipient = { ...bob, action: "delivered", reply: Reply.make(250, undefined, "Ok: queued as 123") }
    const orig = original({ dsn: { ret: undefined, envid: undefined, notify: [["SUCCESS"]], orcpt: [] } })
    const env = Bounce.build(orig, [delivered], options({ kind: "success" }))!
    const mail = await parse(env)
    expect(mail.subject).toBe("Successful Mail Delivery Report")
    expect(mail.text).toContain("Your message was successfully delivered to the destination(s)\nlisted below.")
    expect(mail.text).toContain("<bob@example.com>: delivery via mx.example.com: 250 Ok: queued as 123\n")
    expect(mail.text).not.toContain("postmaster")
    const [, r] = statusBlocks(mail.attachments[0]!.content.toString("utf8"))
    expect(r).toContainEqual(["Action", "delivered"])
    expect(r).toContainEqual(["Status", "2.0.0"])
    expect(mail.attachments[1]!.contentType).toBe("text/rfc822-headers")
  })

  it("returns an 8-bit original as 8bit and asks for 8BITMIME", async () => {
    const body = "From: alice@example.org\r\nSubject: caf\xe9\r\n\r\nZ\xfcrich \u00e9t\u00e9\r\n"
    const bytes = enc(body)
    const env = Bounce.build(original({ message: bytes, body: "8BITMIME" }), [bob], options())!
    expect(env.body).toBe("8BITMIME")
    expect(env.smtputf8).toBe(false)
    const text = dec(env.message)
    expect(text).toContain("\r\nContent-Transfer-Encoding: 8bit\r\n\r\nThis is a MIME-encapsulated message.")
    const parts = rawParts(text)
    expect(parts[2]![0]).toBe("Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n")
    expect(parts[2]![1]).toBe(body)
    const mail = await parse(env)
    expect(Uint8Array.from(mail.attachments[1]!.content)).toEqual(bytes)
  })

  it("returns a BINARYMIME original as binary", () => {
    const bytes = Uint8Array.from([...enc("Subject: b\r\n\r\n"), 0, 0xff, 0x0d, 0x41, 0x0a])
    const env = Bounce.build(original({ message: bytes, body: "BINARYMIME" }), [bob], options())!
    expect(env.body).toBe("BINARYMIME")
    expect(dec(env.message)).toContain("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: binary\r\n")
    expect(dec(env.message)).toContain("\r\nContent-Transfer-Encoding: binary\r\n\r\nThis is a MIME")
  })

  it("uses the RFC 6533 types for UTF-8 addresses", async () => {
    const orig = original({ sender: "andré@exemple.fr", recipients: ["jürgen@beispiel.de"], smtputf8: true })
    const env = Bounce.build(orig, [{ recipient: "jürgen@beispiel.de", index: 0, reply: noSuchUser, action: "failed" }], options())!
    expect(env.smtputf8).toBe(true)
    expect(env.body).toBe("8BITMIME")
    expect(env.recipients).toEqual(["andré@exemple.fr"])
    const parts = rawParts(dec(env.message))
    expect(parts[0]![0]).toBe("Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n")
    expect(parts[1]![0]).toBe(
      "Content-Description: Delivery report\r\nContent-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: 8bit\r\n"
    )
    expect(statusBlocks(parts[1]![1])[1]![0]).toEqual(["Final-Recipient", "utf-8; jürgen@beispiel.de"])
    expect(parts[2]![0]).toContain("Content-Type: message/global\r\n")
    const mail = await parse(env)
    expect((mail.to as { value: Array<{ address: string }> }).value[0]!.address).toBe("andré@exemple.fr")
  })

  it("carries REQUIRETLS over to the report", () => {
    expect(Bounce.build(original({ requireTls: true }), [bob], options())!.requireTls).toBe(true)
  })
})

describe("Bounce.build: hostile input", () => {
  it("cannot be made to write a header field or a MIME part from a recipient or a reply", async () => {
    const evil: Bounce.FailedRecipient = {
      recipient: "bob@example.com\r\nBcc: victim@example.net\r\n\r\n--=_mailroom_000102030405060708090a0b",
      index: 0,
      reply: Reply.make(550, "5.1.1", ["nope\r\nX-Injected: yes", "\r\n--=_mailroom_000102030405060708090a0b--\r\nContent-Type: text/html"]),
      remote: "mx.example.com\r\nX-Remote: injected",
      action: "failed"
    }
    const orig = original({
      dsn: { ret: undefined, envid: "E\r\nX-Envid: injected", notify: [], orcpt: [{ addrType: "rfc822\r\nX", address: "o\r\nX-Orcpt: 1" }] }
    })
    const env = Bounce.build(orig, [evil], options())!
    const text = dec(env.message)
    const b = boundaryOf(text)
    expect(b).not.toBe("=_mailroom_000102030405060708090a0b")
    // exactly three part delimiters and the close delimiter
    expect(text.split(`--${b}`).length - 1).toBe(4)
    expect(text.match(/^X-[A-Za-z-]+:/gm)).toEqual(["X-Mailroom-Queue-ID:"])
    expect(text).not.toMatch(/^Bcc:/im)
    // no bare CR or LF anywhere
    expect(text.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/)
    const mail = await parse(env)
    expect(mail.headers.has("bcc")).toBe(false)
    expect(mail.attachments.map((a) => a.contentType)).toEqual(["message/delivery-status", "message/rfc822"])
    const [head, rcpt] = statusBlocks(mail.attachments[0]!.content.toString("utf8").replace(/\n/g, "\r\n").replace(/\r\r/g, "\r"))
    expect(head).toContainEqual(["Original-Envelope-Id", "E  X-Envid: injected"])
    expect(rcpt!.map(([n]) => n)).toEqual([
      "Original-Recipient",
      "Final-Recipient",
      "Action",
      "Status",
      "Remote-MTA",
      "Diagnostic-Code",
      "Last-Attempt-Date"
    ])
    expect(rcpt).toContainEqual(["Remote-MTA", "dns; mx.example.comX-Remote:injected"])
  })

  it("chooses another boundary when the original contains it", () => {
    const message = enc(`Subject: x\r\n\r\n--=_mailroom_000102030405060708090a0b\r\nfake part\r\n`)
    const env = Bounce.build(original({ message }), [bob], options())!
    expect(boundaryOf(dec(env.message))).toBe("=_mailroom_0c0d0e0f1011121314151617")
  })

  it("finds a free boundary even when the random source repeats itself", () => {
    const zeros = (n: number) => new Uint8Array(n)
    const taken = [0, 8, 9].map((k) => `=_mailroom_${"00".repeat(12)}${k >= 8 ? `_${k}` : ""}`)
    const message = enc(`Subject: x\r\n\r\n${taken.join("\r\n")}\r\n`)
    const env = Bounce.build(original({ message }), [bob], options({ random: zeros }))!
    expect(boundaryOf(dec(env.message))).toBe(`=_mailroom_${"00".repeat(12)}_10`)
  })

  it("keeps its structure whatever the recipient and reply texts (property)", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "binary", maxLength: 300 }),
        fc.array(fc.string({ unit: "binary", maxLength: 200 }), { minLength: 1, maxLength: 3 }),
        fc.option(fc.string({ unit: "binary", maxLength: 80 }), { nil: undefined }),
        (recipient, lines, remote) => {
          const env = Bounce.build(original(), [{ recipient, index: 0, reply: Reply.make(550, "5.1.1", lines), remote, action: "failed" }], options())!
          const text = dec(env.message)
          const b = boundaryOf(text)
          expect(text.split(`--${b}`).length - 1).toBe(4)
          expect(text.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/)
          for (const l of text.split("\r\n")) expect(new TextEncoder().encode(l).length).toBeLessThanOrEqual(998)
          const parts = rawParts(text)
          expect(parts.map(([h]) => /Content-Type: ([^;\r]+)/.exec(h)![1])).toEqual([
            expect.stringMatching(/^text\/plain$/),
            expect.stringMatching(/^message\/(global-)?delivery-status$/),
            expect.stringMatching(/^message\/(rfc822|global)$/)
          ])
          const blocks = statusBlocks(parts[1]![1])
          expect(blocks.length).toBe(2)
          expect(blocks[1]!.map(([n]) => n).filter((n) => n === "Final-Recipient")).toHaveLength(1)
        }
      ),
      { numRuns: 300 }
    )
  })
})
