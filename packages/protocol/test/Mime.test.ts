import fc from "fast-check"
import { simpleParser } from "mailparser"
import { describe, expect, it } from "vitest"
import * as Mime from "../src/envelope/Mime.ts"

const dec = (b: Uint8Array): string => new TextDecoder().decode(b)
const counter = () => {
  let n = 0
  return (len: number) => Uint8Array.from({ length: len }, () => n++ & 0xff)
}

const base: Omit<Mime.Message, "random"> = {
  from: { name: "Alice Example", address: "alice@example.org" },
  to: [{ address: "bob@example.com" }],
  subject: "Hello",
  date: "Sat, 22 Nov 2025 05:00:00 +0000",
  messageId: "<01kaaaaaaaaaaaaaaaaaaaaaaa@mx.example.com>"
}

describe("Mime encodings", () => {
  it("quoted-printable: hard breaks, soft breaks at 76, encoded '=', trailing space and UTF-8", () => {
    expect(Mime.quotedPrintable("a=b caf\u00e9 \nend")).toBe("a=3Db caf=C3=A9=20\r\nend\r\n")
    const long = Mime.quotedPrintable("x".repeat(200))
    for (const line of long.split("\r\n")) expect(line.length).toBeLessThanOrEqual(76)
    expect(long.replace(/=\r\n/g, "")).toBe("x".repeat(200) + "\r\n")
  })

  it("quoted-printable decodes back to the text (mailparser's decoder)", async () => {
    await fc.assert(fc.asyncProperty(fc.string({ maxLength: 300, unit: "grapheme" }), async (s) => {
      const text = s.replace(/\r\n|\r/g, "\n")
      const raw = `Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n${Mime.quotedPrintable(text)}`
      const parsed = await simpleParser(Buffer.from(raw))
      expect((parsed.text ?? "").replace(/\n$/, "")).toBe(text.replace(/\n$/, ""))
    }), { numRuns: 100 })
  })

  it("encoded-words for non-ASCII, at most 75 characters each", () => {
    expect(Mime.encodeWords("plain ascii")).toBe("plain ascii")
    const w = Mime.encodeWords("Gr\u00fc\u00dfe aus K\u00f6ln \u2013 \u{1F600}".repeat(4))
    for (const word of w.split(" ")) {
      expect(word).toMatch(/^=\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=$/)
      expect(word.length).toBeLessThanOrEqual(75)
    }
  })

  it("parameters: tokens bare, others quoted, non-ASCII as RFC 2231", () => {
    expect(Mime.parameter("filename", "report.pdf")).toBe("filename=report.pdf")
    expect(Mime.parameter("filename", "my report.pdf")).toBe("filename=\"my report.pdf\"")
    expect(Mime.parameter("filename", "r\u00e9sum\u00e9.pdf")).toBe("filename*=UTF-8''r%C3%A9sum%C3%A9.pdf")
  })

  it("mailboxes: atoms, quoted strings, encoded-words", () => {
    expect(Mime.formatMailbox({ name: "Alice Example", address: "a@x.example" })).toBe("Alice Example <a@x.example>")
    expect(Mime.formatMailbox({ name: "Example, Alice", address: "a@x.example" })).toBe("\"Example, Alice\" <a@x.example>")
    expect(Mime.formatMailbox({ name: "J\u00fcrgen", address: "j@x.example" })).toBe("=?UTF-8?B?SsO8cmdlbg==?= <j@x.example>")
    expect(Mime.formatMailbox({ address: "a@x.example" })).toBe("a@x.example")
  })
})

describe("Mime.compose", () => {
  it("writes a single 7bit text part exactly", () => {
    const out = Mime.compose({ ...base, text: "Hi Bob\nsee you", random: counter() })
    expect(out instanceof Uint8Array && dec(out)).toBe(
      "From: Alice Example <alice@example.org>\r\n" +
        "To: bob@example.com\r\n" +
        "Subject: Hello\r\n" +
        "Date: Sat, 22 Nov 2025 05:00:00 +0000\r\n" +
        "Message-ID: <01kaaaaaaaaaaaaaaaaaaaaaaa@mx.example.com>\r\n" +
        "MIME-Version: 1.0\r\n" +
        "Content-Type: text/plain; charset=utf-8\r\n" +
        "Content-Transfer-Encoding: 7bit\r\n" +
        "\r\n" +
        "Hi Bob\r\nsee you\r\n"
    )
  })

  it("nests alternative in mixed with base64 attachments, and mailparser reads it all back", async () => {
    const pdf = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff)
    const out = Mime.compose({
      ...base,
      to: [{ address: "bob@example.com" }, { name: "Carol, C.", address: "carol@example.net" }],
      cc: [{ name: "D\u00e4ve", address: "dave@example.net" }],
      subject: "Caf\u00e9 menu \u2013 \u{1F600}",
      text: "Menu attached. Caf\u00e9 au lait = 3\u20ac",
      html: "<p>Menu attached. <b>Caf\u00e9</b></p>",
      attachments: [
        { filename: "menu.pdf", contentType: "application/pdf", content: pdf },
        { filename: "r\u00e9sum\u00e9.txt", contentType: "text/plain", content: new TextEncoder().encode("hello\n") }
      ],
      random: counter()
    })
    if (!(out instanceof Uint8Array)) throw new Error(out.message)
    const raw = dec(out)
    expect(raw).toMatch(/^Content-Type: multipart\/mixed; boundary="=_mailroom_[0-9a-f]{24}"\r$/m)
    expect(raw).toMatch(/Content-Type: multipart\/alternative;\s+boundary=/)
    expect(/[^\x00-\x7f]/.test(raw)).toBe(false)
    for (const line of raw.split("\r\n")) expect(line.length).toBeLessThanOrEqual(78)
    const parsed = await simpleParser(Buffer.from(out))
    expect(parsed.subject).toBe("Caf\u00e9 menu \u2013 \u{1F600}")
    expect(parsed.text?.trim()).toBe("Menu attached. Caf\u00e9 au lait = 3\u20ac")
    expect(parsed.html).toContain("<b>Caf\u00e9</b>")
    expect(parsed.messageId).toBe("<01kaaaaaaaaaaaaaaaaaaaaaaa@mx.example.com>")
    const to = Array.isArray(parsed.to) ? parsed.to : [parsed.to]
    expect(to.flatMap((t) => t?.value ?? []).map((v) => [v.name, v.address])).toEqual([
      ["", "bob@example.com"],
      ["Carol, C.", "carol@example.net"]
    ])
    const cc = Array.isArray(parsed.cc) ? parsed.cc[0] : parsed.cc
    expect(cc?.value[0]?.name).toBe("D\u00e4ve")
    expect(parsed.attachments.map((a) => [a.filename, a.contentType, a.size])).toEqual([
      ["menu.pdf", "application/pdf", 300],
      ["r\u00e9sum\u00e9.txt", "text/plain", 6]
    ])
    expect(Uint8Array.from(parsed.attachments[0]!.content)).toEqual(pdf)
  })

  it("refuses line breaks in header values and bad content types", () => {
    expect(Mime.compose({ ...base, subject: "a\r\nBcc: x@y", random: counter() })).toBeInstanceOf(Mime.ComposeError)
    expect(Mime.compose({ ...base, from: { name: "x\ny", address: "a@b.example" }, random: counter() })).toBeInstanceOf(
      Mime.ComposeError
    )
    expect(
      Mime.compose({ ...base, attachments: [{ filename: "a", contentType: "text/plain\r\nX: y", content: new Uint8Array() }], random: counter() })
    ).toBeInstanceOf(Mime.ComposeError)
  })
})
