import fc from "fast-check"
import { simpleParser } from "mailparser"
import { describe, expect, it } from "vitest"
import * as Downgrade from "../src/relay/Downgrade.ts"
import * as Bytes from "../src/wire/Bytes.ts"

const utf8 = (s: string): Uint8Array => Bytes.fromString(s)
const latin1 = (b: Uint8Array): string => Bytes.toLatin1(b)

/** A reference quoted-printable decoder (RFC 2045 §6.7), for round trips. */
const decodeQp = (text: string): Uint8Array => {
  const out: Array<number> = []
  const lines = text.split("\r\n")
  lines.forEach((line, i) => {
    let soft = false
    let l = line
    if (l.endsWith("=")) {
      soft = true
      l = l.slice(0, -1)
    }
    for (let j = 0; j < l.length; j++) {
      if (l[j] === "=") {
        out.push(parseInt(l.slice(j + 1, j + 3), 16))
        j += 2
      } else out.push(l.charCodeAt(j))
    }
    if (!soft && i < lines.length - 1) out.push(13, 10)
  })
  return new Uint8Array(out)
}

const expect7bit = (b: Uint8Array): void => {
  expect(Downgrade.has8Bit(b)).toBe(false)
}

describe("Downgrade.encodeQuotedPrintable", () => {
  it("encodes exactly: literal ASCII, =XX for 8-bit and '=', trailing blanks, CRLF kept", () => {
    const body = utf8("Grüße = 1 \r\nok\t\r\n.dot\r\n")
    expect(latin1(Downgrade.encodeQuotedPrintable(body))).toBe("Gr=C3=BC=C3=9Fe =3D 1=20\r\nok=09\r\n.dot\r\n")
  })

  it("soft-breaks long lines at 76 characters without splitting an escape", () => {
    const body = utf8("é".repeat(40))
    const text = latin1(Downgrade.encodeQuotedPrintable(body))
    const lines = text.split("\r\n")
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(76)
    expect(lines[0]).toBe("=C3=A9".repeat(12) + "=C3=")
    expect(Bytes.equals(decodeQp(text), body)).toBe(true)
  })

  it("encodes bare CR and LF so that decoding gives the same bytes", () => {
    const body = new Uint8Array([0x61, 0x0d, 0x62, 0x0a, 0x63, 0xff])
    expect(latin1(Downgrade.encodeQuotedPrintable(body))).toBe("a=0Db=0Ac=FF")
  })

  it("round-trips arbitrary bytes, every line at most 76 characters, 7-bit only", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (body) => {
        const enc = Downgrade.encodeQuotedPrintable(body)
        expect7bit(enc)
        const text = latin1(enc)
        for (const l of text.split("\r\n")) expect(l.length).toBeLessThanOrEqual(76)
        expect(Array.from(decodeQp(text))).toEqual(Array.from(body))
      })
    )
  })
})

describe("Downgrade.encodeBase64Lines", () => {
  it("wraps at 76 characters with CRLF", () => {
    const text = latin1(Downgrade.encodeBase64Lines(new Uint8Array(100).fill(0xff)))
    const lines = text.split("\r\n")
    expect(lines[0]!.length).toBe(76)
    expect(lines[2]).toBe("")
    expect(text.endsWith("\r\n")).toBe(true)
  })
})

describe("Downgrade.parseContentType", () => {
  it("parses type, subtype and parameters (quoted, escaped, comments)", () => {
    const ct = Downgrade.parseContentType(`Multipart/Mixed (comment); Boundary="a \\"b\\" c"; charset=UTF-8`)!
    expect(ct.type).toBe("multipart")
    expect(ct.subtype).toBe("mixed")
    expect(ct.params.get("boundary")).toBe(`a "b" c`)
    expect(ct.params.get("charset")).toBe("UTF-8")
    expect(Downgrade.parseContentType("garbage")).toBeUndefined()
    expect(Downgrade.parseContentType("")).toBeUndefined()
  })
})

describe("Downgrade.toSevenBit", () => {
  it("leaves a 7-bit message alone", () => {
    expect(Downgrade.toSevenBit(utf8("Subject: x\r\n\r\nhello\r\n"))).toEqual({ _tag: "Unchanged" })
  })

  it("re-encodes an 8-bit text/plain body as quoted-printable, replacing the CTE field", async () => {
    const msg = utf8(
      "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
        "Content-Transfer-Encoding: 8bit\r\nSubject: hi\r\n\r\nGrüße aus Köln\r\nzweite Zeile\r\n"
    )
    const r = Downgrade.toSevenBit(msg)
    expect(r._tag).toBe("Converted")
    if (r._tag !== "Converted") return
    expect(latin1(r.message)).toBe(
      "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
        "Content-Transfer-Encoding: quoted-printable\r\nSubject: hi\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln\r\nzweite Zeile\r\n"
    )
    const parsed = await simpleParser(Buffer.from(r.message))
    expect(parsed.text).toBe("Grüße aus Köln\nzweite Zeile\n")
  })

  it("adds a CTE field when there is none", () => {
    const r = Downgrade.toSevenBit(utf8("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\né\r\n"))
    expect(r).toEqual({
      _tag: "Converted",
      message: utf8(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n"
      )
    })
  })

  it("walks multipart: converts only the 8-bit parts, base64 for non-text, relabels the multipart, keeps the rest", async () => {
    const pdf = "%PDF\u0000\u00ff\u00fe binary-ish"
    const msg = Bytes.concat([
      utf8(
        "MIME-Version: 1.0\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=\"=_b1\"\r\n" +
          "Content-Transfer-Encoding: 8bit\r\n\r\npreamble\r\n--=_b1\r\n" +
          "Content-Type: text/plain; charset=us-ascii\r\n\r\nplain ascii part\r\n" +
          "--=_b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>café</p>\r\n" +
          "--=_b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n" +
          "Content-Disposition: attachment; filename=x.bin\r\n\r\n"
      ),
      Bytes.fromLatin1(pdf),
      utf8("\r\n--=_b1--\r\nepilogue\r\n")
    ])
    const r = Downgrade.toSevenBit(msg)
    expect(r._tag).toBe("Converted")
    if (r._tag !== "Converted") return
    expect7bit(r.message)
    const text = latin1(r.message)
    expect(text).toContain("Content-Transfer-Encoding: 7bit\r\n\r\npreamble\r\n--=_b1\r\n")
    expect(text).toContain("Content-Type: text/plain; charset=us-ascii\r\n\r\nplain ascii part\r\n--=_b1\r\n")
    expect(text).toContain(
      "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>caf=C3=A9</p>\r\n--=_b1\r\n"
    )
    expect(text).toContain(
      "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=x.bin\r\n\r\nJVBERgD//iBiaW5hcnktaXNo\r\n--=_b1--\r\nepilogue\r\n"
    )
    const parsed = await simpleParser(Buffer.from(r.message))
    expect(parsed.html).toContain("<p>café</p>")
    expect(parsed.attachments[0]!.content.toString("latin1")).toBe(pdf)
  })

  it("walks nested multipart and message/rfc822", async () => {
    const msg = utf8(
      "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n" +
        "Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nñ\r\n--inner--\r\n" +
        "--outer\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
        "MIME-Version: 1.0\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nü\r\n--outer--\r\n"
    )
    const r = Downgrade.toSevenBit(msg)
    expect(r._tag).toBe("Converted")
    if (r._tag !== "Converted") return
    const text = latin1(r.message)
    expect(text).toContain("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=B1\r\n--inner--")
    expect(text).toContain("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
    expect(text).toContain("charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n--outer--")
  })

  it("refuses what it cannot convert correctly", () => {
    const unsafe = (s: string) => {
      const r = Downgrade.toSevenBit(utf8(s))
      expect(r._tag).toBe("Unsafe")
      return r._tag === "Unsafe" ? r.reason : ""
    }
    expect(unsafe("Subject: x\r\n\r\nnot mime é\r\n")).toBe("not a MIME message")
    expect(unsafe("MIME-Version: 1.0\r\nSubject: é\r\n\r\nbody\r\n")).toBe("8-bit characters in a header block")
    expect(unsafe("MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\né\r\n")).toBe(
      "8-bit data in a body declared base64"
    )
    expect(unsafe("MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n\r\né\r\n--x--\r\n")).toBe(
      "multipart without a valid boundary"
    )
    expect(unsafe("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\nprée\r\n--x\r\n\r\na\r\n--x--\r\n")).toBe(
      "8-bit characters in a multipart preamble"
    )
    expect(unsafe("MIME-Version: 1.0\r\nContent-Type: message/global\r\n\r\nSubject: é\r\n\r\nx\r\n")).toBe(
      "8-bit data in message/global"
    )
    expect(Downgrade.conversionFailed("x")).toEqual({ code: 554, enhanced: "5.6.3", lines: ["Conversion required but not supported: x"] })
  })

  it("never throws, and what it converts is 7-bit (arbitrary bytes)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (tail) => {
        for (
          const head of [
            "",
            "MIME-Version: 1.0\r\n\r\n",
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n"
          ]
        ) {
          const r = Downgrade.toSevenBit(Bytes.concat([utf8(head), tail]))
          if (r._tag === "Converted") expect7bit(r.message)
        }
      })
    )
  })

  it("converted MIME messages decode to the same content (random 8-bit text parts)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ unit: fc.constantFrom("a", "é", " ", "=", "\r\n", "ü", ".", "€"), maxLength: 120 }), {
          minLength: 1,
          maxLength: 3
        }),
        async (texts) => {
          const body = texts.map((t) => `--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${t}\r\n`).join("")
          const msg = utf8(`MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n${body}--B--\r\n`)
          const r = Downgrade.toSevenBit(msg)
          if (r._tag === "Unchanged") return
          expect(r._tag).toBe("Converted")
          if (r._tag !== "Converted") return
          expect7bit(r.message)
          const a = await simpleParser(Buffer.from(msg))
          const b = await simpleParser(Buffer.from(r.message))
          expect(b.attachments.map((x) => x.content.toString("utf8"))).toEqual(a.attachments.map((x) => x.content.toString("utf8")))
          expect(b.text).toBe(a.text)
        }
      ),
      { numRuns: 50 }
    )
  })
})
