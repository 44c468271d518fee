import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Command from "../src/smtp/Command.ts"
import * as Params from "../src/smtp/Params.ts"
import * as Reply from "../src/smtp/Reply.ts"
import * as Arb from "./SmtpArbitraries.ts"

const ok = (line: string, options?: Command.ParseOptions): Command.Command => {
  const r = Command.parse(line, options)
  if (r._tag !== "Ok") throw new Error(`expected ${JSON.stringify(line)} to parse, got ${Reply.toString(r.reply)}`)
  return r.command
}
/** The reply as one line, `501 5.5.4 Syntax: ...`. */
const err = (line: string, options?: Command.ParseOptions): string => {
  const r = Command.parse(line, options)
  if (r._tag !== "Error") throw new Error(`expected ${JSON.stringify(line)} to fail, got ${JSON.stringify(r.command)}`)
  return Reply.toString(r.reply)
}

describe("Command.parse: greetings", () => {
  it("parses EHLO, HELO and LHLO with a domain or an address literal", () => {
    expect(ok("EHLO client.example")).toStrictEqual({ _tag: "Ehlo", domain: "client.example" })
    expect(ok("ehlo Client.Example")).toStrictEqual({ _tag: "Ehlo", domain: "Client.Example" })
    expect(ok("HELO [192.0.2.1]")).toStrictEqual({ _tag: "Helo", domain: "[192.0.2.1]" })
    expect(ok("EHLO [IPv6:2001:db8::1]")).toStrictEqual({ _tag: "Ehlo", domain: "[IPv6:2001:db8::1]" })
    expect(ok("LHLO localhost")).toStrictEqual({ _tag: "Lhlo", domain: "localhost" })
    expect(ok("EHLO   spaced.example  ")).toStrictEqual({ _tag: "Ehlo", domain: "spaced.example" })
    // lenient: Windows host names carry underscores
    expect(ok("EHLO DESKTOP_1A2B")).toStrictEqual({ _tag: "Ehlo", domain: "DESKTOP_1A2B" })
  })

  it("answers 501 5.5.4 without a valid domain", () => {
    expect(err("EHLO")).toBe("501 5.5.4 Syntax: EHLO hostname")
    expect(err("EHLO ")).toBe("501 5.5.4 Syntax: EHLO hostname")
    expect(err("HELO")).toBe("501 5.5.4 Syntax: HELO hostname")
    expect(err("LHLO")).toBe("501 5.5.4 Syntax: LHLO hostname")
    expect(err("EHLO two words")).toBe("501 5.5.4 Syntax: EHLO hostname")
    expect(err("EHLO bad..name")).toBe("501 5.5.4 Syntax: EHLO hostname")
    expect(err("EHLO -bad")).toBe("501 5.5.4 Syntax: EHLO hostname")
    expect(err("EHLO [300.1.1.1]")).toBe("501 5.5.4 Syntax: EHLO hostname")
    expect(err("EHLO h\r\nMAIL FROM:<x@y>")).toBe("501 5.5.4 Syntax: EHLO hostname")
    expect(err("EHLO h\x1b")).toBe("501 5.5.4 Syntax: EHLO hostname")
    expect(err("EHLO\th")).toBe("500 5.5.2 Error: command not recognized")
    expect(err("EHLO bücher.example")).toBe("501 5.5.4 Syntax: EHLO hostname")
  })
})

describe("Command.parse: MAIL", () => {
  it("parses the sender, <> and parameters", () => {
    expect(ok("MAIL FROM:<a@example.com>")).toStrictEqual({
      _tag: "Mail",
      sender: { local: "a", domain: "example.com" },
      params: Params.emptyMail
    })
    expect(ok("MAIL FROM:<>")).toStrictEqual({ _tag: "Mail", sender: null, params: Params.emptyMail })
    expect(ok("mail from:<a@b> size=10 BODY=8BITMIME")).toStrictEqual({
      _tag: "Mail",
      sender: { local: "a", domain: "b" },
      params: { ...Params.emptyMail, size: 10, body: "8BITMIME" }
    })
    expect(ok("MAIL FROM:<@relay.example:a@b>")).toStrictEqual({
      _tag: "Mail",
      sender: { local: "a", domain: "b" },
      params: Params.emptyMail
    })
    expect(ok('MAIL FROM:<"a> b"@x> SIZE=1')).toStrictEqual({
      _tag: "Mail",
      sender: { local: "a> b", domain: "x" },
      params: { ...Params.emptyMail, size: 1 }
    })
  })

  it("is lenient about a space after the colon, extra spaces and trailing spaces", () => {
    const expected = { _tag: "Mail", sender: { local: "a", domain: "b" }, params: { ...Params.emptyMail, size: 5 } }
    expect(ok("MAIL FROM: <a@b> SIZE=5")).toStrictEqual(expected)
    expect(ok("MAIL  FROM:<a@b>   SIZE=5  ")).toStrictEqual(expected)
  })

  it("answers 501 5.5.4 to bad framing", () => {
    const usage = "501 5.5.4 Syntax: MAIL FROM:<address>"
    expect(err("MAIL")).toBe(usage)
    expect(err("MAIL FROM:")).toBe(usage)
    expect(err("MAIL FROM:a@b")).toBe(usage)
    expect(err("MAIL FROM a@b")).toBe(usage)
    expect(err("MAIL FROM : <a@b>")).toBe(usage)
    expect(err("MAIL TO:<a@b>")).toBe(usage)
    expect(err("MAIL FROM:<a@b")).toBe(usage)
    expect(err("MAIL FROM:<a@b>SIZE=1")).toBe(usage)
    expect(err("MAIL FROM:<a@b>\tSIZE=1")).toBe(usage)
  })

  it("answers 501 5.1.7 to a bad sender address", () => {
    expect(err("MAIL FROM:<a@b@c>")).toBe("501 5.1.7 Bad sender address syntax: bad character in domain")
    expect(err("MAIL FROM:<a>")).toBe("501 5.1.7 Bad sender address syntax: missing domain")
    expect(err("MAIL FROM:<Postmaster>")).toBe("501 5.1.7 Bad sender address syntax: missing domain")
    expect(err(`MAIL FROM:<${"a".repeat(65)}@b>`)).toBe("501 5.1.7 Bad sender address syntax: local part longer than 64 octets")
  })

  it("answers 501 5.5.4 to bad parameters", () => {
    expect(err("MAIL FROM:<a@b> SIZE=x")).toBe("501 5.5.4 Bad SIZE parameter syntax")
    expect(err("MAIL FROM:<a@b> SIZE=1 SIZE=2")).toBe("501 5.5.4 Duplicate SIZE parameter")
    expect(err("MAIL FROM:<a@b> BODY=9BIT")).toBe("501 5.5.4 Bad BODY parameter syntax")
    expect(err("MAIL FROM:<a@b> ENVID=a+0Ab")).toBe("501 5.5.4 Bad ENVID parameter xtext")
    expect(err("MAIL FROM:<a@b> SMTPUTF8=1")).toBe("501 5.5.4 SMTPUTF8 parameter takes no value")
  })

  it("keeps unknown parameters for the session (which answers 555)", () => {
    const c = ok("MAIL FROM:<a@b> XFOO=1")
    expect(c._tag === "Mail" && c.params.unknown).toStrictEqual([["XFOO", "1"]])
  })

  it("accepts UTF-8 addresses by default; with utf8: false answers 553 5.6.7", () => {
    expect(ok("MAIL FROM:<jörg@bücher.example> SMTPUTF8")).toStrictEqual({
      _tag: "Mail",
      sender: { local: "jörg", domain: "bücher.example" },
      params: { ...Params.emptyMail, smtputf8: true }
    })
    expect(err("MAIL FROM:<jörg@example.com>", { utf8: false })).toBe("553 5.6.7 Non-ASCII addresses require SMTPUTF8")
    expect(err("RCPT TO:<a@bücher.example>", { utf8: false })).toBe("553 5.6.7 Non-ASCII addresses require SMTPUTF8")
    expect(err("MAIL FROM:<a\u200b@x>")).toBe("501 5.1.7 Bad sender address syntax: invisible or control character not allowed")
  })
})

describe("Command.parse: RCPT", () => {
  it("parses recipients, <Postmaster> and parameters", () => {
    expect(ok("RCPT TO:<x@y>")).toStrictEqual({ _tag: "Rcpt", recipient: { local: "x", domain: "y" }, params: Params.emptyRcpt })
    expect(ok("rcpt to:<Postmaster>")).toStrictEqual({
      _tag: "Rcpt",
      recipient: { local: "Postmaster", domain: "" },
      params: Params.emptyRcpt
    })
    expect(ok("RCPT TO: <x@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y")).toStrictEqual({
      _tag: "Rcpt",
      recipient: { local: "x", domain: "y" },
      params: { notify: ["SUCCESS", "FAILURE"], orcpt: { addrType: "rfc822", address: "x@y" }, unknown: [] }
    })
  })

  it("answers 501 with the right enhanced codes", () => {
    const usage = "501 5.5.4 Syntax: RCPT TO:<address>"
    expect(err("RCPT")).toBe(usage)
    expect(err("RCPT TO:x@y")).toBe(usage)
    expect(err("RCPT FROM:<x@y>")).toBe(usage)
    expect(err("RCPT TO:<>")).toBe("501 5.1.3 Bad recipient address syntax: null address not allowed")
    expect(err("RCPT TO:<x>")).toBe("501 5.1.3 Bad recipient address syntax: missing domain")
    expect(err("RCPT TO:<x@[1.2.3.999]>")).toBe("501 5.1.3 Bad recipient address syntax: bad IPv4 address literal")
    expect(err("RCPT TO:<x@y> NOTIFY=NEVER,DELAY")).toBe("501 5.5.4 Bad NOTIFY parameter syntax")
  })
})

describe("Command.parse: the security.md inputs", () => {
  it("CVE-2020-7247: MAIL FROM:<;sleep 5;> is refused (`;` is not atext)", () => {
    expect(err("MAIL FROM:<;sleep 5;>")).toBe("501 5.1.7 Bad sender address syntax: bad character in local part")
  })

  it("CVE-2019-10149: the exploit's RCPT is refused; `${...}` without backslashes is inert data that round-trips", () => {
    expect(err("RCPT TO:<${run{\\x2Fbin\\x2Fsh\\t-c\\t\\x22id\\x22}}@localhost>")).toBe(
      "501 5.1.3 Bad recipient address syntax: bad character in local part"
    )
    const line = "RCPT TO:<${run{/bin/sh}}@localhost>"
    const c = ok(line)
    expect(c).toStrictEqual({ _tag: "Rcpt", recipient: { local: "${run{/bin/sh}}", domain: "localhost" }, params: Params.emptyRcpt })
    expect(Command.print(c)).toBe(line)
  })

  it("control characters: MAIL FROM:<a\\x1b[31m@x> and ENVID=a\\r\\nb give 501", () => {
    expect(err("MAIL FROM:<a\x1b[31m@x>")).toBe("501 5.1.7 Bad sender address syntax: control character not allowed")
    expect(err("RCPT TO:<a\x00@x>")).toBe("501 5.1.3 Bad recipient address syntax: control character not allowed")
    expect(err("MAIL FROM:<a@x> ENVID=a\r\nb")).toBe("501 5.5.4 Bad ENVID parameter value syntax")
    expect(err("NOOP a\x1b[2J")).toBe("501 5.5.4 Syntax: NOOP [text]")
  })
})

describe("Command.parse: the other commands", () => {
  it("parses argument-less commands and refuses arguments with 501 5.5.4", () => {
    expect(ok("DATA")).toStrictEqual({ _tag: "Data" })
    expect(ok("data ")).toStrictEqual({ _tag: "Data" })
    expect(ok("RSET")).toStrictEqual({ _tag: "Rset" })
    expect(ok("QUIT")).toStrictEqual({ _tag: "Quit" })
    expect(ok("StartTLS")).toStrictEqual({ _tag: "StartTls" })
    expect(err("DATA now")).toBe("501 5.5.4 Syntax: DATA")
    expect(err("RSET x")).toBe("501 5.5.4 Syntax: RSET")
    expect(err("QUIT x")).toBe("501 5.5.4 Syntax: QUIT")
    expect(err("STARTTLS x")).toBe("501 5.5.4 Syntax: STARTTLS")
  })

  it("parses NOOP, HELP and VRFY text", () => {
    expect(ok("NOOP")).toStrictEqual({ _tag: "Noop", text: "" })
    expect(ok("NOOP  hello  world ")).toStrictEqual({ _tag: "Noop", text: "hello  world" })
    expect(ok("HELP")).toStrictEqual({ _tag: "Help", text: "" })
    expect(ok("HELP MAIL")).toStrictEqual({ _tag: "Help", text: "MAIL" })
    expect(ok("VRFY <postmaster@example.com>")).toStrictEqual({ _tag: "Vrfy", text: "<postmaster@example.com>" })
    expect(ok("VRFY Jörg")).toStrictEqual({ _tag: "Vrfy", text: "Jörg" })
    expect(err("VRFY")).toBe("501 5.5.4 Syntax: VRFY address")
    expect(err("HELP a\x00")).toBe("501 5.5.4 Syntax: HELP [topic]")
  })

  it("parses BDAT", () => {
    expect(ok("BDAT 100")).toStrictEqual({ _tag: "Bdat", size: 100, last: false })
    expect(ok("bdat 0 last")).toStrictEqual({ _tag: "Bdat", size: 0, last: true })
    expect(ok("BDAT 9007199254740991 LAST")).toStrictEqual({ _tag: "Bdat", size: Number.MAX_SAFE_INTEGER, last: true })
    const usage = "501 5.5.4 Syntax: BDAT size [LAST]"
    expect(err("BDAT")).toBe(usage)
    expect(err("BDAT x")).toBe(usage)
    expect(err("BDAT -1")).toBe(usage)
    expect(err("BDAT 1.5")).toBe(usage)
    expect(err("BDAT 10 FIRST")).toBe(usage)
    expect(err("BDAT 10 LAST x")).toBe(usage)
    expect(err("BDAT 9007199254740992")).toBe(usage)
    expect(err("BDAT 123456789012345678901")).toBe(usage)
  })

  it("parses AUTH, upper-casing the mechanism and keeping the initial response raw", () => {
    expect(ok("AUTH plain dGVzdA==")).toStrictEqual({ _tag: "Auth", mechanism: "PLAIN", initial: "dGVzdA==" })
    expect(ok("AUTH LOGIN")).toStrictEqual({ _tag: "Auth", mechanism: "LOGIN", initial: undefined })
    expect(ok("AUTH EXTERNAL =")).toStrictEqual({ _tag: "Auth", mechanism: "EXTERNAL", initial: "=" })
    expect(ok("AUTH SCRAM-SHA-256 biws")).toStrictEqual({ _tag: "Auth", mechanism: "SCRAM-SHA-256", initial: "biws" })
    const usage = "501 5.5.4 Syntax: AUTH mechanism [initial-response]"
    expect(err("AUTH")).toBe(usage)
    expect(err("AUTH PLAIN a b")).toBe(usage)
    expect(err("AUTH PL@IN")).toBe(usage)
    expect(err(`AUTH ${"X".repeat(21)}`)).toBe(usage)
    expect(err("AUTH PLAIN a\x00b")).toBe(usage)
  })

  it("answers 500 5.5.2 to unknown verbs and 502 5.5.1 to known unimplemented ones", () => {
    expect(err("")).toBe("500 5.5.2 Error: command not recognized")
    expect(err("   ")).toBe("500 5.5.2 Error: command not recognized")
    expect(err(" MAIL FROM:<a@b>")).toBe("500 5.5.2 Error: command not recognized")
    expect(err("XYZZY")).toBe("500 5.5.2 Error: command not recognized")
    expect(err("MAILFROM:<a@b>")).toBe("500 5.5.2 Error: command not recognized")
    expect(err("GET / HTTP/1.1")).toBe("500 5.5.2 Error: command not recognized")
    expect(err("DATA\x00")).toBe("500 5.5.2 Error: command not recognized")
    expect(err("EXPN staff")).toBe("502 5.5.1 Error: command not implemented")
    expect(err("etrn example.com")).toBe("502 5.5.1 Error: command not implemented")
    expect(err("TURN")).toBe("502 5.5.1 Error: command not implemented")
  })

  it("returns the catalogue replies themselves", () => {
    const r = Command.parse("NOPE")
    expect(r._tag === "Error" && r.reply).toBe(Reply.unknownCommand)
  })
})

describe("Command.print", () => {
  it("prints canonical lines", () => {
    expect(Command.print({ _tag: "Ehlo", domain: "host" })).toBe("EHLO host")
    expect(Command.print({ _tag: "Helo", domain: "[192.0.2.1]" })).toBe("HELO [192.0.2.1]")
    expect(Command.print({ _tag: "Lhlo", domain: "host" })).toBe("LHLO host")
    expect(Command.print({ _tag: "Mail", sender: { local: "a", domain: "b" }, params: { ...Params.emptyMail, size: 10 } })).toBe(
      "MAIL FROM:<a@b> SIZE=10"
    )
    expect(Command.print({ _tag: "Mail", sender: null, params: { ...Params.emptyMail, auth: "<>" } })).toBe("MAIL FROM:<> AUTH=<>")
    expect(Command.print({ _tag: "Rcpt", recipient: { local: "x y", domain: "z" }, params: Params.emptyRcpt })).toBe(
      'RCPT TO:<"x y"@z>'
    )
    expect(Command.print({ _tag: "Rcpt", recipient: { local: "Postmaster", domain: "" }, params: Params.emptyRcpt })).toBe(
      "RCPT TO:<Postmaster>"
    )
    expect(Command.print({ _tag: "Data" })).toBe("DATA")
    expect(Command.print({ _tag: "Bdat", size: 100, last: true })).toBe("BDAT 100 LAST")
    expect(Command.print({ _tag: "Bdat", size: 7, last: false })).toBe("BDAT 7")
    expect(Command.print({ _tag: "Rset" })).toBe("RSET")
    expect(Command.print({ _tag: "Noop", text: "" })).toBe("NOOP")
    expect(Command.print({ _tag: "Noop", text: "x" })).toBe("NOOP x")
    expect(Command.print({ _tag: "Quit" })).toBe("QUIT")
    expect(Command.print({ _tag: "Vrfy", text: "bob" })).toBe("VRFY bob")
    expect(Command.print({ _tag: "Help", text: "" })).toBe("HELP")
    expect(Command.print({ _tag: "StartTls" })).toBe("STARTTLS")
    expect(Command.print({ _tag: "Auth", mechanism: "PLAIN", initial: "dGVzdA==" })).toBe("AUTH PLAIN dGVzdA==")
    expect(Command.print({ _tag: "Auth", mechanism: "LOGIN", initial: undefined })).toBe("AUTH LOGIN")
  })
})

describe("Command properties", () => {
  it("parse(print(c)) = c for every generated command", () => {
    fc.assert(
      fc.property(Arb.command, (c) => {
        expect(Command.parse(Command.print(c))).toStrictEqual({ _tag: "Ok", command: c })
      }),
      { numRuns: 3000 }
    )
  })

  const fragments = fc.constantFrom(
    "MAIL", "RCPT", "EHLO", "HELO", "BDAT", "AUTH", "NOOP", "DATA", "FROM:", "TO:", " ", "  ", "<", ">", "@", '"', "\\",
    "[", "]", ":", ",", ".", "a", "Z", "9", "-", "=", "+", "ä", "\t", "\r", "\n", "\x00", "SIZE=", "BODY=8BITMIME", "NOTIFY=",
    "ORCPT=rfc822;", "ENVID=", "LAST", "IPv6:", "Postmaster", "<>", "\u200b", "\ud800"
  )
  const lines = fc.oneof(
    fc.string({ unit: "binary", maxLength: 200 }),
    fc.array(fragments, { maxLength: 25 }).map((a) => a.join("")),
    Arb.command.map(Command.print).chain((l) =>
      fc.tuple(fc.nat({ max: l.length }), fc.string({ unit: "binary", maxLength: 3 })).map(([i, s]) => l.slice(0, i) + s + l.slice(i))
    )
  )

  it("never throws; errors are 500/501/502/553 replies; what parses prints canonically", () => {
    fc.assert(
      fc.property(lines, fc.boolean(), (line, utf8) => {
        const r = Command.parse(line, { utf8 })
        if (r._tag === "Error") {
          expect([500, 501, 502, 553]).toContain(r.reply.code)
          expect(Reply.isEnhancedStatus(r.reply.enhanced ?? "")).toBe(true)
        } else {
          expect(Command.parse(Command.print(r.command), { utf8 })).toStrictEqual(r)
        }
      }),
      { numRuns: 5000 }
    )
  })
})
