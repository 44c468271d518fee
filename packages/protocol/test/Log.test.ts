import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Log from "../src/observability/Log.ts"
import * as Reply from "../src/smtp/Reply.ts"

const ts = new Date(Date.UTC(2025, 0, 2, 3, 4, 5, 678))
const rec = (fields: ReadonlyArray<readonly [string, unknown]>, event = "session", level: Log.Level = "info"): Log.LogRecord => ({
  ts,
  level,
  event,
  fields
})
const T = "ts=2025-01-02T03:04:05.678Z"

/** A strict logfmt reader: bare values, or quoted values with exactly the escapes the writer uses. */
const readLogfmt = (line: string): Array<[string, string]> => {
  const out: Array<[string, string]> = []
  let i = 0
  while (i < line.length) {
    const eq = line.indexOf("=", i)
    if (eq < 0) throw new Error(`no '=' after ${i}`)
    const key = line.slice(i, eq)
    if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw new Error(`bad key ${JSON.stringify(key)}`)
    i = eq + 1
    let value = ""
    if (line[i] === '"') {
      i++
      for (;;) {
        const c = line[i]
        if (c === undefined) throw new Error("unterminated quote")
        if (c === '"') {
          i++
          break
        }
        if (c === "\\") {
          const e = line[i + 1]
          if (e === "n") value += "\n"
          else if (e === "r") value += "\r"
          else if (e === "t") value += "\t"
          else if (e === "\\" || e === '"') value += e
          else if (e === "u") {
            value += String.fromCharCode(parseInt(line.slice(i + 2, i + 6), 16))
            i += 4
          } else throw new Error(`bad escape \\${e}`)
          i += 2
        } else {
          value += c
          i++
        }
      }
    } else {
      const end = line.indexOf(" ", i)
      value = line.slice(i, end < 0 ? line.length : end)
      i = end < 0 ? line.length : end
    }
    out.push([key, value])
    if (i < line.length) {
      if (line[i] !== " ") throw new Error(`expected a space at ${i}`)
      i++
    }
  }
  return out
}

// Anything a terminal, a log shipper or a line-oriented reader could take as a line break or a control.
const UNSAFE_IN_OUTPUT = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/

describe("Log.logfmt", () => {
  it("writes ts, level and event first, then fields in order", () => {
    expect(Log.logfmt(rec([["client", "192.0.2.1"], ["ehlo", "x y"], ["tls", "TLSv1.3"], ["auth", "user"], ["size", 1234]]))).toBe(
      `${T} level=info event=session client=192.0.2.1 ehlo="x y" tls=TLSv1.3 auth=user size=1234`
    )
  })

  it("quotes only when needed", () => {
    expect(Log.logfmtValue("plain@example.com")).toBe("plain@example.com")
    expect(Log.logfmtValue("")).toBe(`""`)
    expect(Log.logfmtValue("a b")).toBe(`"a b"`)
    expect(Log.logfmtValue("a=b")).toBe(`"a=b"`)
    expect(Log.logfmtValue(`say "hi"`)).toBe(`"say \\"hi\\""`)
    expect(Log.logfmtValue("back\\slash")).toBe(`"back\\\\slash"`)
    expect(Log.logfmtValue("<>")).toBe("<>")
    expect(Log.logfmtValue("héllo")).toBe(`"héllo"`)
  })

  it("escapes CR and LF, so a forged EHLO or Message-ID cannot start a new line", () => {
    const line = Log.logfmt(rec([["ehlo", "evil\r\nts=2025-01-01T00:00:00Z level=info event=message queue_id=FAKE"]]))
    expect(line).toBe(
      `${T} level=info event=session ehlo="evil\\r\\nts=2025-01-01T00:00:00Z level=info event=message queue_id=FAKE"`
    )
    expect(line.split("\n")).toHaveLength(1)
  })

  it("escapes other controls, C1, Unicode line separators, bidi overrides, BOM and lone surrogates", () => {
    expect(Log.escape("a\u0000b\u001b[31mc\u007fd\u0085e\u2028f\u2029g\u202eh\u2066i\ufeffj\ud800k\udc00")).toBe(
      "a\\u0000b\\u001b[31mc\\u007fd\\u0085e\\u2028f\\u2029g\\u202eh\\u2066i\\ufeffj\\ud800k\\udc00"
    )
    expect(Log.escape("tab\there")).toBe("tab\\there")
    expect(Log.escape("emoji 😀 stays")).toBe("emoji 😀 stays")
  })

  it("renders values: null and undefined left out, arrays joined, replies, dates, errors, objects, redacted", () => {
    const line = Log.logfmt(rec([
      ["a", undefined],
      ["b", null],
      ["recipients", ["x@example.com", "y@example.net"]],
      ["reply", Reply.queuedAs("01ABC")],
      ["at", new Date(Date.UTC(2024, 1, 3))],
      ["err", new TypeError("boom")],
      ["obj", { k: [1, 2] }],
      ["ok", true],
      ["n", 0],
      ["big", 10n],
      ["password", Redacted.make("hunter2")],
      ["nested", { secret: Redacted.make("x") }]
    ]))
    expect(line).toBe(
      `${T} level=info event=session recipients=x@example.com,y@example.net reply="250 2.6.0 Ok: queued as 01ABC" ` +
        `at=2024-02-03T00:00:00.000Z err="TypeError: boom" obj="{\\"k\\":[1,2]}" ok=true n=0 big=10 password=<redacted> ` +
        `nested="{\\"secret\\":\\"<redacted>\\"}"`
    )
    expect(readLogfmt(line).find(([k]) => k === "obj")).toEqual(["obj", `{"k":[1,2]}`])
  })

  it("sanitises keys and renames fields that would shadow ts, level or event", () => {
    expect(Log.logfmt(rec([["bad key=\n", 1], ["", 2], ["level", "x"], ["event", "y"]]))).toBe(
      `${T} level=info event=session bad_key__=1 _=2 level_=x event_=y`
    )
  })

  it("cuts long values without splitting a surrogate pair", () => {
    expect(Log.logfmt(rec([["v", "x".repeat(20)]]), { maxValueLength: 8 })).toBe(`${T} level=info event=session v=xxxxxxxx...`)
    expect(Log.logfmt(rec([["v", "abc😀def"]], "s"), { maxValueLength: 4 })).toBe(`${T} level=info event=s v=abc...`)
    expect(Log.logfmt(rec([["v", "y".repeat(5000)]])).length).toBe(`${T} level=info event=session v=`.length + 1024 + 3)
  })

  it("any field values come back unchanged through a logfmt reader, always on one safe line", () => {
    fc.assert(fc.property(
      fc.array(fc.tuple(fc.stringMatching(/^[a-z_]{1,8}$/), fc.string({ unit: "binary", maxLength: 60 })), { maxLength: 6 }),
      fc.string({ unit: "binary", maxLength: 30 }),
      (fields, event) => {
        const line = Log.logfmt(rec(fields, event))
        expect(line).not.toMatch(UNSAFE_IN_OUTPUT)
        const read = readLogfmt(line)
        expect(read.slice(0, 3)).toEqual([["ts", ts.toISOString()], ["level", "info"], ["event", event]])
        const expected = fields.map(([k, v]) => [["ts", "level", "event"].includes(k) ? `${k}_` : k, v])
        expect(read.slice(3)).toEqual(expected)
      }
    ))
  })
})

describe("Log.json", () => {
  it("writes one JSON object per line, numbers and booleans as JSON", () => {
    expect(Log.json(rec([["client", "192.0.2.1"], ["size", 12], ["tls", undefined], ["ok", false], ["reply", Reply.ok]]))).toBe(
      `{"ts":"2025-01-02T03:04:05.678Z","level":"info","event":"session","client":"192.0.2.1","size":12,"ok":false,"reply":"250 2.0.0 Ok"}`
    )
  })

  it("escapes what JSON.stringify leaves raw: C1 controls, U+2028/2029, bidi overrides", () => {
    const line = Log.json(rec([["ehlo", "a\r\nb\u0085c\u2028d\u202ee"]]))
    expect(line).toBe(`{"ts":"2025-01-02T03:04:05.678Z","level":"info","event":"session","ehlo":"a\\r\\nb\\u0085c\\u2028d\\u202ee"}`)
    expect(JSON.parse(line).ehlo).toBe("a\r\nb\u0085c\u2028d\u202ee")
  })

  it("any values round-trip through JSON.parse, always on one safe line", () => {
    fc.assert(fc.property(
      fc.array(fc.tuple(fc.stringMatching(/^[a-z]{1,8}$/), fc.oneof(fc.string({ unit: "binary", maxLength: 60 }), fc.integer(), fc.boolean())), {
        maxLength: 6
      }),
      (fields) => {
        const line = Log.json(rec(fields))
        expect(line).not.toMatch(UNSAFE_IN_OUTPUT)
        const parsed = JSON.parse(line) as Record<string, unknown>
        const expected: Record<string, unknown> = { ts: ts.toISOString(), level: "info", event: "session" }
        for (const [k, v] of fields) expected[["ts", "level", "event"].includes(k) ? `${k}_` : k] = v
        expect(parsed).toEqual(expected)
      }
    ))
  })
})

describe("Log: the Effect logger", () => {
  const capture = (format: Log.Format, level: Log.Level, program: Effect.Effect<void>) => {
    const lines: Array<[string, Log.Level]> = []
    Effect.runSync(program.pipe(Effect.provide(Log.layer({ format, level, sink: (line, lvl) => lines.push([line, lvl]) }))))
    return lines.map(([line, lvl]) => [line.replace(/^ts=\S+ /, "").replace(/^\{"ts":"[^"]+",/, "{"), lvl] as const)
  }

  it("turns Effect.log calls and their annotations into logfmt lines", () => {
    const lines = capture(
      "logfmt",
      "info",
      Effect.logInfo("session", { messages: 1 }).pipe(Effect.annotateLogs({ client: "192.0.2.1", ehlo: "x\r\ny" }))
    )
    expect(lines).toEqual([[`level=info event=session messages=1 client=192.0.2.1 ehlo="x\\r\\ny"`, "info"]])
  })

  it("drops records below the configured level and maps Effect's levels", () => {
    const program = Effect.gen(function*() {
      yield* Effect.logDebug("debugging")
      yield* Effect.logInfo("started")
      yield* Effect.logWarning("slow", { ms: 5 })
      yield* Effect.logError("failed")
    })
    expect(capture("logfmt", "warning", program)).toEqual([
      ["level=warning event=slow ms=5", "warning"],
      ["level=error event=failed", "error"]
    ])
    expect(capture("logfmt", "debug", program).map(([l]) => l.split(" ")[0])).toEqual([
      "level=debug",
      "level=info",
      "level=warning",
      "level=error"
    ])
  })

  it("writes JSON lines, other message parts as detail, a cause as error", () => {
    const lines = capture(
      "json",
      "info",
      Effect.logError("delivery", 42, Cause.fail(new RangeError("no route"))).pipe(Effect.annotateLogs("queue_id", "Q1"))
    )
    expect(lines).toEqual([[`{"level":"error","event":"delivery","queue_id":"Q1","detail":"42","error":"RangeError: no route"}`, "error"]])
  })

  it("Log.message and Log.session write the standard records", () => {
    const lines = capture(
      "logfmt",
      "info",
      Effect.gen(function*() {
        yield* Log.message({
          client: "192.0.2.1",
          ehlo: "client.example",
          tls: "TLSv1.3",
          auth: "alice",
          sender: "",
          recipients: ["b@example.net", "c@example.net"],
          size: 2048,
          queue_id: "01J00",
          reply: Reply.queuedAs("01J00")
        })
        yield* Log.message({
          client: "192.0.2.1",
          sender: "a@example.com",
          recipients: ["b@example.net"],
          size: 10,
          reply: Reply.queueError
        })
        yield* Log.session({ client: "192.0.2.1", client_port: 40000, ehlo: "client.example", messages: 1, end: "quit", reply: Reply.bye })
      })
    )
    expect(lines).toEqual([
      [
        `level=info event=message client=192.0.2.1 ehlo=client.example tls=TLSv1.3 auth=alice sender=<> ` +
        `recipients=b@example.net,c@example.net nrcpt=2 size=2048 queue_id=01J00 reply="250 2.6.0 Ok: queued as 01J00"`,
        "info"
      ],
      [
        `level=warning event=message client=192.0.2.1 sender=a@example.com recipients=b@example.net nrcpt=1 size=10 ` +
        `reply="451 4.3.0 Error: queue file write error"`,
        "warning"
      ],
      [`level=info event=session client=192.0.2.1 client_port=40000 ehlo=client.example messages=1 end=quit reply="221 2.0.0 Bye"`, "info"]
    ])
  })

  it("level mapping both ways", () => {
    expect((["Trace", "Debug", "Info", "Warn", "Error", "Fatal"] as const).map(Log.fromEffectLevel)).toEqual([
      "debug",
      "debug",
      "info",
      "warning",
      "error",
      "error"
    ])
    expect((["debug", "info", "warning", "error"] as const).map(Log.toEffectLevel)).toEqual(["Debug", "Info", "Warn", "Error"])
  })
})
