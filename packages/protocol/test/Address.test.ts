import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Address from "../src/smtp/Address.ts"
import * as Arb from "./SmtpArbitraries.ts"

const ascii = { utf8: false, allowNull: false, allowPostmaster: false }
const utf8 = { utf8: true, allowNull: false, allowPostmaster: false }
const sender = { utf8: true, allowNull: true, allowPostmaster: false }
const recipient = { utf8: true, allowNull: false, allowPostmaster: true }

const ok = (text: string, options = utf8) => {
  const r = Address.parsePath(text, options)
  if (r._tag !== "Ok") throw new Error(`expected ${text} to parse, got ${r.message}`)
  return r.value
}
const err = (text: string, options = utf8): string => {
  const r = Address.parsePath(text, options)
  if (r._tag !== "Error") throw new Error(`expected ${text} to fail, got ${JSON.stringify(r.value)}`)
  return r.message
}

describe("Address.parsePath", () => {
  it("parses dot-atom mailboxes, keeping case", () => {
    expect(ok("<user@example.com>")).toStrictEqual({ local: "user", domain: "example.com" })
    expect(ok("<First.Last+tag@Mail.Example.COM>")).toStrictEqual({ local: "First.Last+tag", domain: "Mail.Example.COM" })
    expect(ok("<!#$%&'*+-/=?^_`{|}~@x>")).toStrictEqual({ local: "!#$%&'*+-/=?^_`{|}~", domain: "x" })
    expect(ok("<a@a-b.c1>")).toStrictEqual({ local: "a", domain: "a-b.c1" })
  })

  it("parses quoted local parts and resolves quoted-pairs", () => {
    expect(ok('<"a b"@example.com>')).toStrictEqual({ local: "a b", domain: "example.com" })
    expect(ok('<"a\\"b\\\\c"@x>')).toStrictEqual({ local: 'a"b\\c', domain: "x" })
    expect(ok('<"\\a"@x>')).toStrictEqual({ local: "a", domain: "x" })
    expect(ok('<""@x>')).toStrictEqual({ local: "", domain: "x" })
    expect(ok('<"a@b"@x>')).toStrictEqual({ local: "a@b", domain: "x" })
    expect(ok('<"user"@x>')).toStrictEqual({ local: "user", domain: "x" })
  })

  it("recognises and strips source routes", () => {
    expect(ok("<@a.example,@b.example:user@c.example>")).toStrictEqual({ local: "user", domain: "c.example" })
    expect(ok("<@a.example:user@c.example>")).toStrictEqual({ local: "user", domain: "c.example" })
    expect(err("<@a.example user@c.example>")).toBe("bad source route")
    expect(err("<@:user@c.example>")).toBe("bad source route")
    expect(err("<@a..b:user@c.example>")).toBe("bad source route")
    expect(err("<@a,b:user@c.example>")).toBe("bad source route")
    expect(err("<@[1.2.3.4]:user@c.example>")).toBe("bad source route")
  })

  it("accepts address literals and validates them", () => {
    expect(ok("<a@[192.0.2.1]>")?.domain).toBe("[192.0.2.1]")
    expect(ok("<a@[255.255.255.255]>")?.domain).toBe("[255.255.255.255]")
    expect(ok("<a@[IPv6:2001:db8::1]>")?.domain).toBe("[IPv6:2001:db8::1]")
    expect(ok("<a@[ipv6:::1]>")?.domain).toBe("[ipv6:::1]")
    expect(ok("<a@[IPv6:1:2:3:4:5:6:7:8]>")?.domain).toBe("[IPv6:1:2:3:4:5:6:7:8]")
    expect(ok("<a@[IPv6:::ffff:192.0.2.1]>")?.domain).toBe("[IPv6:::ffff:192.0.2.1]")
    expect(ok("<a@[IPv6:1:2:3:4:5:6:192.0.2.1]>")?.domain).toBe("[IPv6:1:2:3:4:5:6:192.0.2.1]")
    expect(ok("<a@[x-tag:any>content]>")?.domain).toBe("[x-tag:any>content]")
    expect(err("<a@[256.0.0.1]>")).toBe("bad IPv4 address literal")
    expect(err("<a@[1.2.3]>")).toBe("bad IPv4 address literal")
    expect(err("<a@[1.2.3.4.5]>")).toBe("bad IPv4 address literal")
    expect(err("<a@[IPv6:1:2:3:4:5:6:7]>")).toBe("bad IPv6 address literal")
    expect(err("<a@[IPv6:1:2:3:4:5:6:7:8:9]>")).toBe("bad IPv6 address literal")
    expect(err("<a@[IPv6:1::2::3]>")).toBe("bad IPv6 address literal")
    expect(err("<a@[IPv6:12345::1]>")).toBe("bad IPv6 address literal")
    expect(err("<a@[IPv6:1:2:3:4:5:6:7:1.2.3.4]>")).toBe("bad IPv6 address literal")
    expect(err("<a@[IPv6:::1.2.3.256]>")).toBe("bad IPv6 address literal")
    expect(err("<a@[IPv6:g::1]>")).toBe("bad IPv6 address literal")
    expect(err("<a@[-:x]>")).toBe("bad address literal")
    expect(err("<a@[tag:]>")).toBe("bad address literal")
    expect(err("<a@[tag:a\\b]>")).toBe("bad address literal")
    expect(err("<a@[]>")).toBe("bad address literal")
  })

  it("checks domain labels", () => {
    expect(err("<a@b.>")).toBe("empty domain label")
    expect(err("<a@.b>")).toBe("empty domain label")
    expect(err("<a@b..c>")).toBe("empty domain label")
    expect(err("<a@-b.c>")).toBe("domain label starts or ends with a hyphen")
    expect(err("<a@b-.c>")).toBe("domain label starts or ends with a hyphen")
    expect(err("<a@b_c.d>")).toBe("bad character in domain")
    expect(err(`<a@${"l".repeat(64)}.com>`)).toBe("domain label longer than 63 octets")
    expect(ok(`<a@${"l".repeat(63)}.com>`)?.domain).toBe(`${"l".repeat(63)}.com`)
    expect(err("<a@>")).toBe("empty domain")
    expect(err("<a>")).toBe("missing domain")
  })

  it("checks local parts", () => {
    expect(err("<a..b@c>")).toBe("bad dot in local part")
    expect(err("<.a@c>")).toBe("bad dot in local part")
    expect(err("<a.@c>")).toBe("bad dot in local part")
    expect(err("<@c>")).toBe("bad source route")
    expect(err("<a b@c>")).toBe("bad character in local part")
    expect(err("<a(b)@c>")).toBe("bad character in local part")
    expect(err('<"abc@c>')).toBe("unterminated quoted string")
    expect(err('<"a"b@c>')).toBe("bad character in local part")
    expect(err("<a@b@c>")).toBe("bad character in domain")
  })

  it("enforces the RFC 5321 §4.5.3.1 octet limits", () => {
    const l64 = "l".repeat(64)
    expect(ok(`<${l64}@x>`)?.local).toBe(l64)
    expect(err(`<${l64}l@x>`)).toBe("local part longer than 64 octets")
    // the limit counts UTF-8 octets: 32 two-octet letters fit, 33 do not
    expect(ok(`<${"é".repeat(32)}@x>`)?.local).toBe("é".repeat(32))
    expect(err(`<${"é".repeat(33)}@x>`)).toBe("local part longer than 64 octets")
    // ... and the quotes of a quoted local part
    expect(err(`<"${"l".repeat(63)}"@x>`)).toBe("local part longer than 64 octets")
    const domain = Array.from({ length: 4 }, () => "d".repeat(62)).join(".") // 251 octets
    expect(ok(`<a@${domain}>`, { ...utf8 })?.domain).toBe(domain)
    expect(err(`<@${domain}:a@b>`)).toBe("path longer than 256 octets")
    expect(err(`<abcd@${domain}>`)).toBe("path longer than 256 octets")
    const longDomain = Array.from({ length: 5 }, () => "d".repeat(51)).join(".") // 259 octets
    expect(Address.parseDomain(longDomain, { utf8: false, allowLiteral: false })).toStrictEqual({
      _tag: "Error",
      message: "domain longer than 255 octets"
    })
  })

  it("handles <> and <Postmaster> only when allowed", () => {
    expect(ok("<>", sender)).toBeNull()
    expect(err("<>", recipient)).toBe("null address not allowed")
    expect(ok("<Postmaster>", recipient)).toStrictEqual({ local: "Postmaster", domain: "" })
    expect(ok("<pOSTMASTER>", recipient)).toStrictEqual({ local: "pOSTMASTER", domain: "" })
    expect(err("<Postmaster>", sender)).toBe("missing domain")
    expect(err('<"Postmaster">', recipient)).toBe("missing domain")
    expect(ok("<postmaster@example.com>", recipient)).toStrictEqual({ local: "postmaster", domain: "example.com" })
  })

  it("requires angle brackets", () => {
    expect(err("user@example.com")).toBe("address must be enclosed in <>")
    expect(err("<user@example.com")).toBe("address must be enclosed in <>")
    expect(err("")).toBe("address must be enclosed in <>")
    expect(err("<")).toBe("address must be enclosed in <>")
  })

  it("refuses control characters anywhere, even quoted", () => {
    expect(err("<a\x1b[31m@x>")).toBe("control character not allowed")
    expect(err('<"a\tb"@x>')).toBe("control character not allowed")
    expect(err('<"a\\\nb"@x>')).toBe("control character not allowed")
    expect(err("<a@x\x7f>")).toBe("control character not allowed")
    expect(err("<a\x00@x>")).toBe("control character not allowed")
  })

  it("accepts UTF-8 (RFC 6531) only when utf8, and never invisible code points", () => {
    expect(ok("<jörg@bücher.example>")).toStrictEqual({ local: "jörg", domain: "bücher.example" })
    expect(ok("<用户@例子.广告>")).toStrictEqual({ local: "用户", domain: "例子.广告" })
    expect(ok('<"δοκιμή test"@x>')).toStrictEqual({ local: "δοκιμή test", domain: "x" })
    expect(ok("<😀@x>")?.local).toBe("😀")
    expect(err("<jörg@example.com>", ascii)).toBe(Address.NON_ASCII)
    expect(err("<a@bücher.example>", ascii)).toBe(Address.NON_ASCII)
    expect(err("<a\u200b@x>")).toBe("invisible or control character not allowed")
    expect(err("<a\u202e@x>")).toBe("invisible or control character not allowed")
    expect(err("<a\u0085@x>")).toBe("invisible or control character not allowed")
    expect(err("<a\u00a0@x>")).toBe("invisible or control character not allowed")
    expect(err("<a\ud800@x>")).toBe("invisible or control character not allowed")
    expect(err("<a@x😀.com>")).toBe("bad character in domain")
  })

  it("refuses the CVE-2020-7247 sender `<;sleep 5;>` (`;` is not atext)", () => {
    expect(err("<;sleep 5;>", sender)).toBe("bad character in local part")
    expect(err("<;sleep 5;@x>", sender)).toBe("bad character in local part")
    // quoted, it is a legal local part, and stays inert data that prints back quoted
    const m = ok('<";sleep 5;"@x>', sender)
    expect(m).toStrictEqual({ local: ";sleep 5;", domain: "x" })
    expect(Address.printPath(m)).toBe('<";sleep 5;"@x>')
  })

  it("keeps the CVE-2019-10149 `${run{...}}` local part as inert text", () => {
    // as sent by the exploit, the backslashes are not atext: refused
    expect(err("<${run{\\x2Fbin\\x2Fsh\\t-c\\t\\x22id\\x22}}@localhost>", recipient)).toBe("bad character in local part")
    // `$`, `{`, `}` and `/` are atext: accepted verbatim and printed back byte for byte, unquoted
    const m = ok("<${run{/bin/sh}}@localhost>", recipient)
    expect(m).toStrictEqual({ local: "${run{/bin/sh}}", domain: "localhost" })
    expect(Address.printPath(m)).toBe("<${run{/bin/sh}}@localhost>")
  })
})

describe("Address.print", () => {
  it("quotes only what is not a dot-atom", () => {
    expect(Address.print({ local: "user", domain: "example.com" })).toBe("user@example.com")
    expect(Address.print({ local: "a b", domain: "example.com" })).toBe('"a b"@example.com')
    expect(Address.print({ local: 'a"b\\c', domain: "x" })).toBe('"a\\"b\\\\c"@x')
    expect(Address.print({ local: "a..b", domain: "x" })).toBe('"a..b"@x')
    expect(Address.print({ local: ".a", domain: "x" })).toBe('".a"@x')
    expect(Address.print({ local: "", domain: "x" })).toBe('""@x')
    expect(Address.print({ local: "jörg", domain: "x" })).toBe("jörg@x")
    expect(Address.print({ local: "Postmaster", domain: "" })).toBe("Postmaster")
    expect(Address.print(null)).toBe("")
    expect(Address.printPath(null)).toBe("<>")
    expect(Address.printPath({ local: "a", domain: "[IPv6:::1]" })).toBe("<a@[IPv6:::1]>")
  })
})

describe("Address helpers", () => {
  it("isAscii, equalsIgnoreCase, isPostmaster, domainOf, localOf", () => {
    expect(Address.isAscii({ local: "a", domain: "b" })).toBe(true)
    expect(Address.isAscii({ local: "ä", domain: "b" })).toBe(false)
    expect(Address.isAscii({ local: "a", domain: "bü" })).toBe(false)
    expect(Address.equalsIgnoreCase("PostMaster", "postmaster")).toBe(true)
    expect(Address.equalsIgnoreCase("postmaster", "postmastes")).toBe(false)
    expect(Address.equalsIgnoreCase("İ", "i")).toBe(false)
    expect(Address.isPostmaster({ local: "POSTMASTER", domain: "example.com" })).toBe(true)
    expect(Address.isPostmaster({ local: "postmaster2", domain: "" })).toBe(false)
    expect(Address.domainOf({ local: "a", domain: "b" })).toBe("b")
    expect(Address.localOf({ local: "a", domain: "b" })).toBe("a")
    expect(Address.utf8Length("aé中😀")).toBe(1 + 2 + 3 + 4)
  })

  it("validate refuses what cannot go on the wire", () => {
    expect(Address.validate({ local: "a", domain: "b" }, false)._tag).toBe("Ok")
    expect(Address.validate({ local: "a\r\nRCPT TO:<x@y>", domain: "b" }, false)).toStrictEqual({
      _tag: "Error",
      message: "control character not allowed"
    })
    expect(Address.validate({ local: "ä", domain: "b" }, false)).toStrictEqual({ _tag: "Error", message: Address.NON_ASCII })
    expect(Address.validate({ local: "ä", domain: "b" }, true)._tag).toBe("Ok")
    expect(Address.validate({ local: "a", domain: "b>c" }, true)._tag).toBe("Error")
    expect(Address.validate({ local: "Postmaster", domain: "" }, false)._tag).toBe("Ok")
  })

  it("pathEnd skips quoted strings and address literals", () => {
    expect(Address.pathEnd("<a@b> X", 0)).toBe(4)
    expect(Address.pathEnd('<"a>b"@c> X', 0)).toBe(8)
    expect(Address.pathEnd('<"a\\">"@c>', 0)).toBe(9)
    expect(Address.pathEnd("<a@[t:x>y]>", 0)).toBe(10)
    expect(Address.pathEnd("<a[>", 0)).toBe(3)
    expect(Address.pathEnd("<a@b", 0)).toBe(-1)
    expect(Address.pathEnd("a@b>", 0)).toBe(-1)
  })

  it("isIPv6 follows RFC 4291 text forms", () => {
    for (const a of ["::", "::1", "1::", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "fe80::1:2", "::ffff:1.2.3.4", "1:2:3:4:5:6:1.2.3.4"]) {
      expect(Address.isIPv6(a), a).toBe(true)
    }
    for (const a of ["", ":", ":::", "1:2", "1::2::3", "1:2:3:4:5:6:7:8:9", "::1.2.3", "1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", ":1::", "1::2:"]) {
      expect(Address.isIPv6(a), a).toBe(false)
    }
  })
})

describe("Address properties", () => {
  it("parsePath(printPath(m)) = m for ASCII mailboxes", () => {
    fc.assert(
      fc.property(Arb.mailbox(false), (m) => {
        expect(Address.parsePath(Address.printPath(m), ascii)).toStrictEqual({ _tag: "Ok", value: m })
      }),
      { numRuns: 1000 }
    )
  })

  it("parsePath(printPath(m)) = m for UTF-8 mailboxes, quoted parts and literals", () => {
    fc.assert(
      fc.property(Arb.mailbox(true), (m) => {
        expect(Address.parsePath(Address.printPath(m), utf8)).toStrictEqual({ _tag: "Ok", value: m })
        expect(Address.validate(m, true)).toStrictEqual({ _tag: "Ok", value: m })
        expect(Address.isAscii(m)).toBe(Address.parsePath(Address.printPath(m), ascii)._tag === "Ok")
      }),
      { numRuns: 1000 }
    )
  })

  it("non-canonical spellings (source routes, needless quoting and quoted-pairs) parse to the same mailbox", () => {
    fc.assert(
      fc.property(
        Arb.mailbox(false),
        fc.array(Arb.domainName(false), { maxLength: 2 }),
        fc.constantFrom("plain", "quoted", "escaped"),
        (m, route, style) => {
          const local =
            style === "plain"
              ? Address.printLocal(m.local)
              : style === "quoted"
                ? `"${m.local.replace(/["\\]/g, "\\$&")}"`
                : `"${m.local.replace(/[\s\S]/g, "\\$&")}"`
          const path = `<${route.map((d) => "@" + d).join(",")}${route.length > 0 ? ":" : ""}${local}@${m.domain}>`
          fc.pre(Address.utf8Length(path) <= 256 && Address.utf8Length(local) <= 64)
          expect(Address.parsePath(path, ascii)).toStrictEqual({ _tag: "Ok", value: m })
        }
      ),
      { numRuns: 1000 }
    )
  })

  it("the printed form is canonical: parse, print, parse again gives the same", () => {
    const pathish = fc
      .array(fc.constantFrom("<", ">", "@", '"', "\\", "[", "]", ".", ",", ":", "a", "B", "1", "-", " ", "ä", "IPv6:", "::", "\t", "Postmaster"), {
        maxLength: 30
      })
      .map((a) => "<" + a.join("") + ">")
    fc.assert(
      fc.property(fc.oneof(pathish, fc.string({ unit: "binary" })), fc.constantFrom(sender, recipient, ascii), (text, options) => {
        const r = Address.parsePath(text, options)
        if (r._tag === "Ok") {
          expect(Address.parsePath(Address.printPath(r.value), options)).toStrictEqual(r)
        } else {
          expect(typeof r.message).toBe("string")
        }
      }),
      { numRuns: 3000 }
    )
  })

  it("never throws on arbitrary strings", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 300 }), (s) => {
        Address.parsePath(s, sender)
        Address.parsePath(`<${s}>`, recipient)
        Address.parseDomain(s, { utf8: true, allowLiteral: true })
        Address.pathEnd(s, 0)
      }),
      { numRuns: 2000 }
    )
  })
})
