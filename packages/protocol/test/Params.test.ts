import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Params from "../src/smtp/Params.ts"
import * as Arb from "./SmtpArbitraries.ts"

const mail = (...tokens: Array<string>) => {
  const r = Params.parseMail(tokens)
  if (r._tag !== "Ok") throw new Error(`expected ${tokens.join(" ")} to parse, got ${r.message}`)
  return r.value
}
const mailErr = (...tokens: Array<string>): string => {
  const r = Params.parseMail(tokens)
  if (r._tag !== "Error") throw new Error(`expected ${tokens.join(" ")} to fail`)
  return r.message
}
const rcpt = (...tokens: Array<string>) => {
  const r = Params.parseRcpt(tokens)
  if (r._tag !== "Ok") throw new Error(`expected ${tokens.join(" ")} to parse, got ${r.message}`)
  return r.value
}
const rcptErr = (...tokens: Array<string>): string => {
  const r = Params.parseRcpt(tokens)
  if (r._tag !== "Error") throw new Error(`expected ${tokens.join(" ")} to fail`)
  return r.message
}

describe("Params.xtext", () => {
  it("encodes +, =, space, controls and non-ASCII as +XX of the UTF-8 octets", () => {
    expect(Params.xtextEncode("plain<>@x")).toBe("plain<>@x")
    expect(Params.xtextEncode("a+b=c d")).toBe("a+2Bb+3Dc+20d")
    expect(Params.xtextEncode("\r\n\x7f")).toBe("+0D+0A+7F")
    expect(Params.xtextEncode("ü")).toBe("+C3+BC")
    expect(Params.xtextEncode("😀")).toBe("+F0+9F+98+80")
    expect(Params.xtextEncode("")).toBe("")
  })

  it("decodes +XX in either case, and literal UTF-8 (RFC 6531)", () => {
    expect(Params.xtextDecode("a+2Bb+3Dc+20d")).toStrictEqual({ _tag: "Ok", value: "a+b=c d" })
    expect(Params.xtextDecode("a+2bb")).toStrictEqual({ _tag: "Ok", value: "a+b" })
    expect(Params.xtextDecode("+C3+BC")).toStrictEqual({ _tag: "Ok", value: "ü" })
    expect(Params.xtextDecode("ü+2B")).toStrictEqual({ _tag: "Ok", value: "ü+" })
    expect(Params.xtextDecode("ü")).toStrictEqual({ _tag: "Ok", value: "ü" })
    expect(Params.xtextDecode("+0D+0A")).toStrictEqual({ _tag: "Ok", value: "\r\n" })
  })

  it("refuses bad xtext", () => {
    for (const bad of ["a+", "a+2", "a+G0", "a+ 2", "a=b", "a b", "a\tb", "a\x7f", "+C3", "+FF", "\u200b", "\ud800"]) {
      expect(Params.xtextDecode(bad)._tag, JSON.stringify(bad)).toBe("Error")
    }
    expect(Params.xtextDecode("+C3")).toStrictEqual({ _tag: "Error", message: "xtext is not valid UTF-8" })
  })

  it("round-trips every string (property)", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "binary" }), Arb.xtextValue), (s) => {
        const e = Params.xtextEncode(s)
        expect(e).toMatch(/^[\x21-\x7e]*$/)
        expect(Params.xtextDecode(e)).toStrictEqual({ _tag: "Ok", value: s })
      }),
      { numRuns: 2000 }
    )
  })
})

describe("Params.parseMail", () => {
  it("returns emptyMail without tokens", () => {
    expect(mail()).toStrictEqual(Params.emptyMail)
  })

  it("parses every known parameter, keywords and enumerations case-insensitively", () => {
    expect(
      mail("size=1000", "Body=8bitmime", "smtputf8", "RET=hdrs", "ENVID=QQ314159+2Bx", "AUTH=e+3Dmc2@example.com", "REQUIRETLS")
    ).toStrictEqual({
      size: 1000,
      body: "8BITMIME",
      smtputf8: true,
      ret: "HDRS",
      envid: "QQ314159+x",
      auth: "e=mc2@example.com",
      requireTls: true,
      unknown: []
    })
    expect(mail("BODY=7BIT").body).toBe("7BIT")
    expect(mail("BODY=BINARYMIME").body).toBe("BINARYMIME")
    expect(mail("RET=FULL").ret).toBe("FULL")
    expect(mail("AUTH=<>").auth).toBe("<>")
    expect(mail("SIZE=0").size).toBe(0)
    expect(mail("SIZE=9007199254740991").size).toBe(Number.MAX_SAFE_INTEGER)
    expect(mail("SIZE=00000000000000000042").size).toBe(42)
  })

  it("keeps unknown parameters with upper-cased keywords and raw values", () => {
    expect(mail("x-foo=Bar+20", "HOLDFOR", "notify=SUCCESS").unknown).toStrictEqual([
      ["X-FOO", "Bar+20"],
      ["HOLDFOR", undefined],
      ["NOTIFY", "SUCCESS"]
    ])
  })

  it("refuses bad keywords, empty values and duplicates", () => {
    expect(mailErr("")).toBe("Bad parameter keyword syntax")
    expect(mailErr("-X=1")).toBe("Bad parameter keyword syntax")
    expect(mailErr("X_Y=1")).toBe("Bad parameter keyword syntax")
    expect(mailErr("=1")).toBe("Bad parameter keyword syntax")
    expect(mailErr("X=")).toBe("Bad X parameter value syntax")
    expect(mailErr("X=a=b")).toBe("Bad X parameter value syntax")
    expect(mailErr("SIZE=1", "size=2")).toBe("Duplicate SIZE parameter")
    expect(mailErr("X-A", "x-a=1")).toBe("Duplicate X-A parameter")
  })

  it("refuses control characters in values (raw or xtext-decoded)", () => {
    expect(mailErr("X=a\x1bb")).toBe("Bad X parameter value syntax")
    expect(mailErr("ENVID=a\r\nb")).toBe("Bad ENVID parameter value syntax")
    expect(mailErr("ENVID=a+0D+0Ab")).toBe("Bad ENVID parameter xtext")
    expect(mailErr("AUTH=a+00b")).toBe("Bad AUTH parameter xtext")
    expect(mailErr("X=a\u200bb")).toBe("Bad X parameter value syntax")
  })

  it("checks SIZE", () => {
    expect(mailErr("SIZE")).toBe("Bad SIZE parameter syntax")
    expect(mailErr("SIZE=-1")).toBe("Bad SIZE parameter syntax")
    expect(mailErr("SIZE=1e3")).toBe("Bad SIZE parameter syntax")
    expect(mailErr("SIZE=12a")).toBe("Bad SIZE parameter syntax")
    expect(mailErr("SIZE=9007199254740992")).toBe("Bad SIZE parameter syntax")
    expect(mailErr("SIZE=123456789012345678901")).toBe("Bad SIZE parameter syntax")
    // the nodemailer GHSA-c7w3-x93f-qmm8 payload, had it arrived as one token
    expect(mailErr("SIZE=1\r\nRCPT")).toBe("Bad SIZE parameter value syntax")
  })

  it("checks BODY, RET, SMTPUTF8, REQUIRETLS, ENVID, AUTH", () => {
    expect(mailErr("BODY")).toBe("Bad BODY parameter syntax")
    expect(mailErr("BODY=8BIT")).toBe("Bad BODY parameter syntax")
    expect(mailErr("RET")).toBe("Bad RET parameter syntax")
    expect(mailErr("RET=ALL")).toBe("Bad RET parameter syntax")
    expect(mailErr("SMTPUTF8=yes")).toBe("SMTPUTF8 parameter takes no value")
    expect(mailErr("REQUIRETLS=1")).toBe("REQUIRETLS parameter takes no value")
    expect(mailErr("ENVID")).toBe("Bad ENVID parameter syntax")
    expect(mailErr("ENVID=a+zz")).toBe("Bad ENVID parameter xtext")
    expect(mailErr(`ENVID=${"e".repeat(101)}`)).toBe("ENVID parameter longer than 100 octets")
    expect(mail(`ENVID=${"e".repeat(100)}`).envid).toBe("e".repeat(100))
    expect(mailErr("AUTH")).toBe("Bad AUTH parameter syntax")
    expect(mailErr("AUTH=a+")).toBe("Bad AUTH parameter xtext")
  })
})

describe("Params.parseRcpt", () => {
  it("returns emptyRcpt without tokens", () => {
    expect(rcpt()).toStrictEqual(Params.emptyRcpt)
  })

  it("parses NOTIFY and ORCPT", () => {
    expect(rcpt("NOTIFY=success,Delay", "ORCPT=rfc822;Bob+2Bx@example.com")).toStrictEqual({
      notify: ["SUCCESS", "DELAY"],
      orcpt: { addrType: "rfc822", address: "Bob+x@example.com" },
      unknown: []
    })
    expect(rcpt("notify=never").notify).toStrictEqual(["NEVER"])
    expect(rcpt("NOTIFY=FAILURE,SUCCESS,DELAY").notify).toStrictEqual(["FAILURE", "SUCCESS", "DELAY"])
    expect(rcpt("ORCPT=utf-8;j\\x{00F6}rg@example.com").orcpt).toStrictEqual({
      addrType: "utf-8",
      address: "j\\x{00F6}rg@example.com"
    })
    expect(rcpt("SIZE=10").unknown).toStrictEqual([["SIZE", "10"]])
  })

  it("refuses bad NOTIFY", () => {
    for (const v of ["NOTIFY", "NOTIFY=NEVER,SUCCESS", "NOTIFY=SUCCESS,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=SUCCESS,", "NOTIFY=,DELAY"]) {
      expect(rcptErr(v), v).toBe("Bad NOTIFY parameter syntax")
    }
  })

  it("refuses bad ORCPT", () => {
    expect(rcptErr("ORCPT")).toBe("Bad ORCPT parameter syntax")
    expect(rcptErr("ORCPT=rfc822")).toBe("Bad ORCPT parameter syntax")
    expect(rcptErr("ORCPT=rfc822;")).toBe("Bad ORCPT parameter syntax")
    expect(rcptErr("ORCPT=;a@b")).toBe("Bad ORCPT parameter syntax")
    expect(rcptErr("ORCPT=rfc_822;a@b")).toBe("Bad ORCPT parameter syntax")
    expect(rcptErr("ORCPT=rfc822;a+0Ab")).toBe("Bad ORCPT parameter xtext")
    expect(rcptErr("ORCPT=rfc822;a+")).toBe("Bad ORCPT parameter xtext")
    expect(rcptErr(`ORCPT=rfc822;${"a".repeat(501)}`)).toBe("ORCPT parameter longer than 500 octets")
    expect(rcptErr("ORCPT=rfc822;a", "orcpt=rfc822;b")).toBe("Duplicate ORCPT parameter")
  })
})

describe("Params.print", () => {
  it("prints a leading space per parameter, xtext-encoding values", () => {
    expect(Params.printMail(Params.emptyMail)).toBe("")
    expect(Params.printRcpt(Params.emptyRcpt)).toBe("")
    expect(
      Params.printMail({
        size: 123,
        body: "8BITMIME",
        smtputf8: true,
        ret: "FULL",
        envid: "id 1+=",
        auth: "<>",
        requireTls: true,
        unknown: [["X-A", "1"], ["X-B", undefined]]
      })
    ).toBe(" SIZE=123 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=id+201+2B+3D AUTH=<> REQUIRETLS X-A=1 X-B")
    expect(
      Params.printRcpt({ notify: ["SUCCESS", "FAILURE"], orcpt: { addrType: "rfc822", address: "a+b@x" }, unknown: [["X", "y"]] })
    ).toBe(" NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x X=y")
  })

  it("parse(print(p)) = p for MAIL parameters (property)", () => {
    fc.assert(
      fc.property(Arb.mailParams, (p) => {
        const printed = Params.printMail(p)
        expect(printed === "" || printed.startsWith(" ")).toBe(true)
        expect(Params.parseMail(printed.split(" ").slice(1))).toStrictEqual({ _tag: "Ok", value: p })
      }),
      { numRuns: 1000 }
    )
  })

  it("parse(print(p)) = p for RCPT parameters (property)", () => {
    fc.assert(
      fc.property(Arb.rcptParams, (p) => {
        expect(Params.parseRcpt(Params.printRcpt(p).split(" ").slice(1))).toStrictEqual({ _tag: "Ok", value: p })
      }),
      { numRuns: 1000 }
    )
  })

  it("never throws on arbitrary tokens, and what parses prints canonically", () => {
    const token = fc.oneof(
      fc.string({ unit: "binary", maxLength: 20 }),
      fc
        .tuple(
          fc.constantFrom("SIZE", "body", "SMTPUTF8", "RET", "ENVID", "AUTH", "REQUIRETLS", "NOTIFY", "ORCPT", "X-Y"),
          fc.option(fc.string({ unit: fc.constantFrom("1", "0", "a", "+", "2", "B", "=", ";", ",", "SUCCESS", "NEVER", "rfc822", "ü", "\r") }), {
            nil: undefined
          })
        )
        .map(([k, v]) => (v === undefined ? k : `${k}=${v}`))
    )
    fc.assert(
      fc.property(fc.array(token, { maxLength: 5 }), (tokens) => {
        const m = Params.parseMail(tokens)
        if (m._tag === "Ok") expect(Params.parseMail(Params.printMail(m.value).split(" ").slice(1))).toStrictEqual(m)
        const r = Params.parseRcpt(tokens)
        if (r._tag === "Ok") expect(Params.parseRcpt(Params.printRcpt(r.value).split(" ").slice(1))).toStrictEqual(r)
      }),
      { numRuns: 3000 }
    )
  })
})
