import * as Effect from "effect/Effect"
import { afterEach, describe, expect, it, vi } from "vitest"
import * as NodeLog from "../src/NodeLog.ts"

const later = () => new Promise<void>((resolve) => setTimeout(resolve, NodeLog.FLUSH_MS + 30))

describe("NodeLog", () => {
  afterEach(() => {
    NodeLog.flush()
    vi.restoreAllMocks()
  })

  it("writes the lines logged within FLUSH_MS with one write, in order, and nothing before", async () => {
    const out: Array<string> = []
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: unknown) => (out.push(String(chunk)), true))
    const program = Effect.gen(function*() {
      yield* Effect.logInfo("one", { n: 1 })
      yield* Effect.logInfo("two", { n: 2 })
      yield* Effect.logDebug("hidden")
      yield* Effect.logWarning("three")
    })
    await Effect.runPromise(program.pipe(Effect.provide(NodeLog.layer({ format: "logfmt", level: "info" }))))
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(out).toEqual([])
    await later()
    expect(out).toHaveLength(1)
    const lines = out[0]!.split("\n")
    expect(lines.map((l) => l.replace(/^ts=\S+ /, ""))).toEqual([
      "level=info event=one n=1",
      "level=info event=two n=2",
      "level=warning event=three",
      ""
    ])
  })

  it("split: warnings and errors to stderr, the rest to stdout; flush writes what is pending", async () => {
    const out: Array<string> = []
    const err: Array<string> = []
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: unknown) => (out.push(String(chunk)), true))
    vi.spyOn(process.stderr, "write").mockImplementation((chunk: unknown) => (err.push(String(chunk)), true))
    const sink = NodeLog.sink("split")
    sink("a", "info")
    sink("b", "error")
    sink("c", "debug")
    sink("d", "warning")
    expect(out).toEqual([])
    NodeLog.flush()
    expect(out).toEqual(["a\nc\n"])
    expect(err).toEqual(["b\nd\n"])
    await later()
    expect(out).toHaveLength(1)
  })

  it("a batch past 64 KiB is written at once", () => {
    const out: Array<string> = []
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: unknown) => (out.push(String(chunk)), true))
    const sink = NodeLog.sink("stdout")
    const line = "x".repeat(1023)
    for (let i = 0; i < 64; i++) sink(line, "info")
    expect(out).toHaveLength(1)
    expect(out[0]).toBe(`${line}\n`.repeat(64))
  })
})
