import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import { TestClock } from "effect/testing"
import { describe, expect, it } from "vitest"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as Headers from "../src/envelope/Headers.ts"
import * as QueuePolicy from "../src/policy/QueuePolicy.ts"
import * as Reply from "../src/smtp/Reply.ts"

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array): string => new TextDecoder().decode(b)

const RECEIVED = 1795324232000 // Sun, 22 Nov 2026 05:10:32 +0000
const ID = "01kaaaaaaaaaaaaaaaaaaaaaaa"
const BODY = "From: alice@example.org\r\nSubject: hi\r\n\r\nHello\r\n"

const env = (recipients: ReadonlyArray<string>, fields: Partial<Envelope.Envelope> = {}): Envelope.Envelope =>
  Envelope.make({
    id: ID,
    sender: "alice@example.org",
    recipients,
    message: enc(BODY),
    timestamp: RECEIVED,
    receiver: "mx.example.com",
    client: {
      ...Envelope.unknownClient,
      address: "192.0.2.1",
      reverseName: "client.example.org",
      ehlo: "helo.example.org",
      protocol: "ESMTPS"
    },
    ...fields
  })

const run1 = (policy: QueuePolicy.QueuePolicy, e: Envelope.Envelope): ReadonlyArray<Envelope.Envelope> =>
  Effect.runSync(policy(e))

const dsn = (
  notify: Envelope.DsnParams["notify"],
  orcpt: Envelope.DsnParams["orcpt"] = []
): Envelope.DsnParams => ({ ret: "HDRS", envid: "ENV1", notify, orcpt })

describe("QueuePolicy.run", () => {
  it("applies each policy to every envelope so far, in order", () => {
    const seen: Array<string> = []
    const tag = (name: string): QueuePolicy.QueuePolicy => (e) =>
      Effect.sync(() => {
        seen.push(`${name}:${e.id}`)
        return [e]
      })
    const out = Effect.runSync(
      QueuePolicy.run([tag("a"), QueuePolicy.recipientSplit, tag("b")], env(["b@x.example", "c@y.example"]))
    )
    expect(out.map((e) => e.recipients)).toEqual([["b@x.example"], ["c@y.example"]])
    expect(seen).toEqual([`a:${ID}`, `b:${ID}-1`, `b:${ID}-2`])
    expect(Effect.runSync(QueuePolicy.run([], env(["b@x.example"])))).toHaveLength(1)
  })

  it("gives different results in different orders: split then Received names each recipient", () => {
    const e = env(["bob@example.com", "carol@example.net"])
    const splitFirst = Effect.runSync(QueuePolicy.run([QueuePolicy.recipientSplit, QueuePolicy.addReceivedHeader()], e))
    const receivedFirst = Effect.runSync(QueuePolicy.run([QueuePolicy.addReceivedHeader(), QueuePolicy.recipientSplit], e))
    expect(splitFirst.map((x) => Headers.findHeaders(x.message, "Received")[0]!.includes("for <"))).toEqual([true, true])
    expect(receivedFirst.map((x) => Headers.findHeaders(x.message, "Received")[0]!.includes("for <"))).toEqual([false, false])
    expect(Headers.findHeaders(splitFirst[1]!.message, "Received")[0]).toContain(`id ${ID}-2 for <carol@example.net>;`)
  })
})

describe("QueuePolicy header policies", () => {
  it("addReceivedHeader prepends the exact trace field", () => {
    const [out] = run1(QueuePolicy.addReceivedHeader(), env(["bob@example.com"]))
    expect(dec(out!.message)).toBe(
      "Received: from helo.example.org (client.example.org [192.0.2.1]) by\r\n" +
        ` mx.example.com (Mailroom) with ESMTPS id ${ID} for\r\n` +
        " <bob@example.com>; Sun, 22 Nov 2026 05:10:32 +0000\r\n" +
        BODY
    )
  })

  it("addReceivedHeader names no recipient when there are several, and takes its host from the options", () => {
    const [out] = run1(QueuePolicy.addReceivedHeader({ hostname: "relay.example.com" }), env(["b@example.com", "c@example.com"]))
    expect(Headers.findHeaders(out!.message, "Received")).toEqual([
      `from helo.example.org (client.example.org [192.0.2.1]) by relay.example.com (Mailroom) with ESMTPS id ${ID}; Sun, 22 Nov 2026 05:10:32 +0000`
    ])
    const [local] = run1(QueuePolicy.addReceivedHeader(), env(["b@example.com"], { receiver: undefined, client: Envelope.unknownClient }))
    expect(Headers.findHeaders(local!.message, "Received")).toEqual([
      `from unknown by localhost (Mailroom) with SMTP id ${ID} for <b@example.com>; Sun, 22 Nov 2026 05:10:32 +0000`
    ])
  })

  it("addDateHeader appends the receive time when Date is missing, and leaves an existing one", () => {
    const [out] = run1(QueuePolicy.addDateHeader(), env(["b@example.com"]))
    expect(dec(out!.message)).toBe(
      "From: alice@example.org\r\nSubject: hi\r\nDate: Sun, 22 Nov 2026 05:10:32 +0000\r\n\r\nHello\r\n"
    )
    const [zoned] = run1(QueuePolicy.addDateHeader({ offsetMinutes: 60 }), env(["b@example.com"]))
    expect(Headers.findHeaders(zoned!.message, "Date")).toEqual(["Sun, 22 Nov 2026 06:10:32 +0100"])
    const dated = env(["b@example.com"], { message: enc("Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nx\r\n") })
    expect(run1(QueuePolicy.addDateHeader(), dated)[0]).toBe(dated)
  })

  it("addDateHeader uses the Clock when the receive time is unknown", async () => {
    const out = await Effect.runPromise(
      Effect.gen(function*() {
        yield* TestClock.setTime(RECEIVED + 3_600_000)
        return yield* QueuePolicy.addDateHeader()(env(["b@example.com"], { timestamp: 0 }))
      }).pipe(Effect.provide(TestClock.layer()))
    )
    expect(Headers.findHeaders(out[0]!.message, "Date")).toEqual(["Sun, 22 Nov 2026 06:10:32 +0000"])
  })

  it("addMessageIdHeader appends <ulid@host> from the Clock and the random source given", async () => {
    const out = await Effect.runPromise(
      Effect.gen(function*() {
        yield* TestClock.setTime(RECEIVED)
        return yield* QueuePolicy.addMessageIdHeader("mx.example.com", { random: (n) => new Uint8Array(n).fill(0xff) })(
          env(["b@example.com"])
        )
      }).pipe(Effect.provide(TestClock.layer()))
    )
    const expected = Headers.messageId((n) => new Uint8Array(n).fill(0xff), RECEIVED, "mx.example.com")
    expect(expected).toBe("<01m80tkga0zzzzzzzzzzzzzzzz@mx.example.com>")
    expect(dec(out[0]!.message)).toBe(`From: alice@example.org\r\nSubject: hi\r\nMessage-Id: ${expected}\r\n\r\nHello\r\n`)
  })

  it("addMessageIdHeader uses Effect's Random service by default, and keeps an existing id", async () => {
    const policy = QueuePolicy.addMessageIdHeader("mx.example.com")
    const once = async (seed: string) => {
      const out = await Effect.runPromise(
        Effect.gen(function*() {
          yield* TestClock.setTime(RECEIVED)
          return yield* policy(env(["b@example.com"]))
        }).pipe(Random.withSeed(seed), Effect.provide(TestClock.layer()))
      )
      return Headers.findHeaders(out[0]!.message, "Message-Id")
    }
    const [a, b, c] = [await once("s1"), await once("s1"), await once("s2")]
    expect(a).toEqual(b)
    expect(a).not.toEqual(c)
    expect(a[0]).toMatch(/^<01m80tkga0[0-9a-z]{16}@mx\.example\.com>$/)
    const withId = env(["b@example.com"], { message: enc("Message-ID: <x@y>\r\n\r\nbody\r\n") })
    expect(Effect.runSync(policy(withId))[0]).toBe(withId)
  })
})

describe("QueuePolicy splitting", () => {
  const three = env(["a@one.example", "b@two.example", "c@one.example"], {
    dsn: dsn([["NEVER"], ["SUCCESS", "FAILURE"], undefined], [undefined, { addrType: "rfc822", address: "orig-b@two.example" }, undefined])
  })

  it("recipientSplit makes one envelope per recipient with derived ids and its DSN parameters", () => {
    const out = run1(QueuePolicy.recipientSplit, three)
    expect(out.map((e) => e.id)).toEqual([`${ID}-1`, `${ID}-2`, `${ID}-3`])
    expect(out.map((e) => e.recipients)).toEqual([["a@one.example"], ["b@two.example"], ["c@one.example"]])
    expect(out.map((e) => e.dsn)).toEqual([
      { ret: "HDRS", envid: "ENV1", notify: [["NEVER"]], orcpt: [undefined] },
      { ret: "HDRS", envid: "ENV1", notify: [["SUCCESS", "FAILURE"]], orcpt: [{ addrType: "rfc822", address: "orig-b@two.example" }] },
      { ret: "HDRS", envid: "ENV1", notify: [undefined], orcpt: [undefined] }
    ])
    for (const e of out) {
      expect(e.message).toBe(three.message)
      expect(e.sender).toBe("alice@example.org")
      // the ids are valid in the storage format
      expect(Envelope.fromJSONString(Envelope.toJSONString(e))._tag).toBe("Success")
    }
    // deterministic: a retried write gives the same ids
    expect(run1(QueuePolicy.recipientSplit, three).map((e) => e.id)).toEqual(out.map((e) => e.id))
  })

  it("recipientSplit keeps a one-recipient envelope as it is", () => {
    const one = env(["a@one.example"])
    expect(run1(QueuePolicy.recipientSplit, one)).toEqual([one])
    expect(run1(QueuePolicy.recipientSplit, one)[0]).toBe(one)
  })

  it("derives ids that stay within 128 characters, and leaves an empty id empty", () => {
    expect(QueuePolicy.splitId("", 2)).toBe("")
    expect(QueuePolicy.splitId("abc", 12)).toBe("abc-12")
    const long = "x".repeat(126)
    expect(QueuePolicy.splitId(long, 9)).toBe(`${long}-9`)
    const hashed = QueuePolicy.splitId(long, 10)
    expect(hashed).toMatch(/^[0-9a-z]{26}$/)
    expect(QueuePolicy.splitId(long, 10)).toBe(hashed)
    expect(QueuePolicy.splitId(long, 11)).not.toBe(hashed)
    const out = run1(QueuePolicy.recipientSplit, env(["a@x.example", "b@x.example"], { id: "" }))
    expect(out.map((e) => e.id)).toEqual(["", ""])
  })

  it("recipientDomainSplit groups by lower-cased domain; domainless recipients go alone", () => {
    const e = env(["a@One.example", "postmaster", "b@two.example", "c@one.EXAMPLE", "root", "d@two.example"], {
      dsn: dsn([["FAILURE"], undefined, ["DELAY"], ["SUCCESS"], undefined, ["NEVER"]])
    })
    const out = run1(QueuePolicy.recipientDomainSplit, e)
    expect(out.map((x) => [x.id, x.recipients])).toEqual([
      [`${ID}-1`, ["a@One.example", "c@one.EXAMPLE"]],
      [`${ID}-2`, ["postmaster"]],
      [`${ID}-3`, ["b@two.example", "d@two.example"]],
      [`${ID}-4`, ["root"]]
    ])
    expect(out.map((x) => x.dsn.notify)).toEqual([[["FAILURE"], ["SUCCESS"]], [undefined], [["DELAY"], ["NEVER"]], [undefined]])
    const same = env(["a@x.example", "b@X.example"])
    expect(run1(QueuePolicy.recipientDomainSplit, same)[0]).toBe(same)
    expect(QueuePolicy.domainOf("\"a@b\"@Example.COM")).toBe("example.com")
    expect(QueuePolicy.domainOf("trailing@")).toBeUndefined()
  })
})

describe("QueuePolicy.forward", () => {
  it("rewrites with the first matching rule, with groups, and sets ORCPT to the original address", () => {
    const policy = QueuePolicy.forward([
      { pattern: /^(.*)@old\.example$/i, replace: "$1@new.example" },
      { pattern: /@old\.example$/, replace: "@never.example" },
      { pattern: "^postmaster@", replace: "admin@" }
    ])
    const e = env(["Bob@OLD.example", "postmaster@site.example", "carol@other.example"], {
      dsn: dsn([["FAILURE"], undefined, undefined], [undefined, { addrType: "rfc822", address: "pm@site.example" }, undefined])
    })
    const [out] = run1(policy, e)
    expect(out!.recipients).toEqual(["Bob@new.example", "admin@site.example", "carol@other.example"])
    expect(out!.dsn.notify).toEqual([["FAILURE"], undefined, undefined])
    expect(out!.dsn.orcpt).toEqual([
      { addrType: "rfc822", address: "Bob@OLD.example" },
      { addrType: "rfc822", address: "pm@site.example" },
      undefined
    ])
    expect(out!.id).toBe(ID)
  })

  it("ignores g and y flags (no state between calls) and returns an untouched envelope as it is", () => {
    const policy = QueuePolicy.forward([{ pattern: /^a/gy, replace: "b" }])
    const e = env(["a@x.example"])
    expect(run1(policy, e)[0]!.recipients).toEqual(["b@x.example"])
    expect(run1(policy, e)[0]!.recipients).toEqual(["b@x.example"])
    const untouched = env(["zzz@x.example"])
    expect(run1(policy, untouched)[0]).toBe(untouched)
    // a rewrite to nothing is ignored
    expect(run1(QueuePolicy.forward([{ pattern: /^.*$/, replace: "" }]), untouched)[0]).toBe(untouched)
  })

  it("merges recipients that become the same, keeping the first one's DSN parameters", () => {
    const policy = QueuePolicy.forward([{ pattern: /^.*@/, replace: "all@" }])
    const e = env(["a@x.example", "b@X.EXAMPLE", "c@y.example"], { dsn: dsn([["SUCCESS"], ["NEVER"], ["DELAY"]]) })
    const [out] = run1(policy, e)
    expect(out!.recipients).toEqual(["all@x.example", "all@y.example"])
    expect(out!.dsn.notify).toEqual([["SUCCESS"], ["DELAY"]])
    expect(out!.dsn.orcpt).toEqual([{ addrType: "rfc822", address: "a@x.example" }, { addrType: "rfc822", address: "c@y.example" }])
  })
})

describe("QueuePolicy.aliases", () => {
  const table = new Map<string, ReadonlyArray<string>>([
    ["sales@example.com", ["ann@example.com", "team@example.com"]],
    ["team@example.com", ["ann@example.com", "joe@example.net"]],
    ["Bob@Example.com", ["bob@example.com", "bob@archive.example"]],
    ["@old.example", ["@new.example"]],
    ["@catch.example", ["postmaster@catch.example"]],
    ["loop1@example.com", ["loop2@example.com"]],
    ["loop2@example.com", ["loop1@example.com", "seen@example.com"]],
    ["empty@example.com", []]
  ])
  const expand = (recipients: ReadonlyArray<string>, e: Partial<Envelope.Envelope> = {}) =>
    run1(QueuePolicy.aliases(table), env(recipients, e))[0]!

  it("expands recursively and merges duplicates", () => {
    expect(expand(["sales@example.com"]).recipients).toEqual(["ann@example.com", "joe@example.net"])
    expect(expand(["SALES@example.COM", "ann@example.com"]).recipients).toEqual(["ann@example.com", "joe@example.net"])
  })

  it("delivers an address that expands to itself as it is (the archive copy idiom)", () => {
    expect(expand(["bob@example.com"]).recipients).toEqual(["bob@example.com", "bob@archive.example"])
  })

  it("ends loops: an address met again on its path is delivered as it is", () => {
    expect(expand(["loop1@example.com"]).recipients).toEqual(["loop1@example.com", "seen@example.com"])
  })

  it("uses @domain catch-alls after exact entries, and @domain targets keep the local part", () => {
    expect(expand(["Jim@Old.Example"]).recipients).toEqual(["Jim@new.example"])
    expect(expand(["anyone@catch.example", "other@catch.example"]).recipients).toEqual(["postmaster@catch.example"])
    expect(expand(["nobody@elsewhere.example", "empty@example.com"]).recipients).toEqual([
      "nobody@elsewhere.example",
      "empty@example.com"
    ])
  })

  it("stops at the depth limit, keeping the address reached", () => {
    const chain = new Map<string, ReadonlyArray<string>>(
      Array.from({ length: 15 }, (_, i) => [`a${i}@x.example`, [`a${i + 1}@x.example`]] as const)
    )
    expect(run1(QueuePolicy.aliases(chain), env(["a0@x.example"]))[0]!.recipients).toEqual(["a10@x.example"])
    expect(run1(QueuePolicy.aliases(chain, { maxDepth: 3 }), env(["a0@x.example"]))[0]!.recipients).toEqual(["a3@x.example"])
    expect(QueuePolicy.defaultAliasDepth).toBe(10)
  })

  it("stays linear on a table that fans out at every level", () => {
    const fan = new Map<string, ReadonlyArray<string>>(
      Array.from({ length: 10 }, (_, i) => [`l${i}@x.example`, [`l${i + 1}@x.example`, `l${i + 1}@x.example`, `m${i}@x.example`]] as const)
    )
    const out = run1(QueuePolicy.aliases(fan), env(["l0@x.example"]))[0]!
    expect(out.recipients).toEqual([
      "l10@x.example",
      ...Array.from({ length: 10 }, (_, i) => `m${9 - i}@x.example`)
    ])
  })

  it("gives expanded recipients the NOTIFY of their alias and the alias as ORCPT", () => {
    const out = expand(["sales@example.com", "zed@example.com"], {
      dsn: dsn([["FAILURE", "DELAY"], ["NEVER"]], [undefined, undefined])
    })
    expect(out.recipients).toEqual(["ann@example.com", "joe@example.net", "zed@example.com"])
    expect(out.dsn.notify).toEqual([["FAILURE", "DELAY"], ["FAILURE", "DELAY"], ["NEVER"]])
    expect(out.dsn.orcpt).toEqual([
      { addrType: "rfc822", address: "sales@example.com" },
      { addrType: "rfc822", address: "sales@example.com" },
      undefined
    ])
    const untouched = env(["zed@example.com"])
    expect(run1(QueuePolicy.aliases(table), untouched)[0]).toBe(untouched)
  })
})

describe("QueuePolicy.parseAliasesFile", () => {
  it("reads entries, comments and continuation lines", () => {
    const { table, errors } = QueuePolicy.parseAliasesFile(
      [
        "# aliases for example.com",
        "",
        "Sales@Example.com: ann@example.com, <joe@example.net>,",
        "    team@example.com",
        "  # a comment inside an entry",
        "\tlast@example.com",
        "@old.example: @new.example",
        "postmaster@example.com:root@example.com   "
      ].join("\r\n")
    )
    expect(errors).toEqual([])
    expect([...table]).toEqual([
      ["sales@example.com", ["ann@example.com", "joe@example.net", "team@example.com", "last@example.com"]],
      ["@old.example", ["@new.example"]],
      ["postmaster@example.com", ["root@example.com"]]
    ])
  })

  it("reports errors with their line numbers and keeps the good entries", () => {
    const { table, errors } = QueuePolicy.parseAliasesFile(
      [
        "  stray@example.com", // 1
        "good@example.com: a@example.com", // 2
        "no colon here", // 3
        "   continues@nothing.example", // 4 (belongs to the bad line 3: skipped)
        "bad key@example.com: a@example.com", // 5
        "pipe@example.com: |/usr/bin/procmail", // 6
        "file@example.com: a@example.com,", // 7
        "  /var/mail/file", // 8
        "none@example.com:", // 9
        "good@example.com: b@example.com", // 10
        "local@example.com: justalocalpart", // 11
        "inc@example.com: :include:/etc/list" // 12
      ].join("\n")
    )
    expect(errors).toEqual([
      { line: 1, message: "continuation line without an entry above" },
      { line: 3, message: `expected "address: target, target", found no colon` },
      { line: 5, message: `"bad key@example.com": expected an address (local@domain or @domain)` },
      { line: 6, message: `"|/usr/bin/procmail": pipes, files and :include: are not supported` },
      { line: 8, message: `"/var/mail/file": pipes, files and :include: are not supported` },
      { line: 9, message: "none@example.com: no targets" },
      { line: 10, message: "good@example.com: duplicate entry (first at line 2)" },
      { line: 11, message: `"justalocalpart": expected an address (local@domain or @domain)` },
      { line: 12, message: `":include:/etc/list": pipes, files and :include: are not supported` }
    ])
    expect([...table]).toEqual([["good@example.com", ["a@example.com"]]])
  })

  it("feeds aliases", () => {
    const { table } = QueuePolicy.parseAliasesFile("list@example.com: a@example.com, b@example.com\n")
    expect(run1(QueuePolicy.aliases(table), env(["LIST@example.com"]))[0]!.recipients).toEqual(["a@example.com", "b@example.com"])
  })
})

describe("QueuePolicy relay policies", () => {
  const withHops = (n: number) =>
    env(["b@example.com"], { message: enc("Received: from x by y; Sun, 22 Nov 2026 05:10:32 +0000\r\n".repeat(n) + BODY) })

  it("maxHops fails a message with more Received fields than the limit with 554 5.4.6", () => {
    expect(QueuePolicy.hopCount(withHops(3))).toBe(3)
    expect(Effect.runSync(QueuePolicy.maxHops(3)(withHops(3)))).toEqual({ _tag: "Continue", envelope: withHops(3) })
    const failed = Effect.runSync(QueuePolicy.maxHops(3)(withHops(4)))
    expect(failed).toEqual({ _tag: "Fail", reply: Reply.loopDetected })
    expect(failed._tag === "Fail" && Reply.encodeString(failed.reply)).toBe("554 5.4.6 Too many hops\r\n")
    expect(QueuePolicy.tooManyHops(withHops(50))).toBe(false)
    expect(QueuePolicy.tooManyHops(withHops(51))).toBe(true)
    expect(Effect.runSync(QueuePolicy.maxHops()(withHops(51)))._tag).toBe("Fail")
  })

  it("runRelay passes each policy's envelope on and stops at the first Fail", () => {
    const calls: Array<string> = []
    const addHeader: QueuePolicy.RelayPolicy = (e) =>
      Effect.sync(() => {
        calls.push("add")
        return QueuePolicy.proceed(Envelope.prependHeader(e, "X-Attempt", "1"))
      })
    const check: QueuePolicy.RelayPolicy = (e) =>
      Effect.sync(() => {
        calls.push("check")
        return Headers.hasHeader(e.message, "X-Attempt") ? QueuePolicy.fail(Reply.make(451, "4.7.0", "Not now")) : QueuePolicy.proceed(e)
      })
    const never: QueuePolicy.RelayPolicy = (e) => Effect.sync(() => (calls.push("never"), QueuePolicy.proceed(e)))
    const result = Effect.runSync(QueuePolicy.runRelay([addHeader, check, never], env(["b@example.com"])))
    expect(result).toEqual({ _tag: "Fail", reply: Reply.make(451, "4.7.0", "Not now") })
    expect(calls).toEqual(["add", "check"])
    const ok = Effect.runSync(QueuePolicy.runRelay([addHeader, QueuePolicy.maxHops()], env(["b@example.com"])))
    expect(ok._tag === "Continue" && dec(ok.envelope.message)).toBe("X-Attempt: 1\r\n" + BODY)
  })
})
