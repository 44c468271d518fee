import { build } from "esbuild"
import { readdirSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { runInNewContext } from "node:vm"
import { describe, expect, it } from "vitest"

const src = new URL("../src", import.meta.url).pathname

const files = (dir: string): Array<string> =>
  readdirSync(dir).flatMap((name) => {
    const p = join(dir, name)
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : []
  })

// Code lines only: comments and JSDoc examples may mention these names.
const codeLines = (text: string): Array<[number, string]> => {
  const out: Array<[number, string]> = []
  let inBlock = false
  text.split("\n").forEach((line, i) => {
    let l = line
    if (inBlock) {
      const end = l.indexOf("*/")
      if (end < 0) return
      l = l.slice(end + 2)
      inBlock = false
    }
    l = l.replace(/\/\*.*?\*\//g, "")
    const start = l.indexOf("/*")
    if (start >= 0) {
      inBlock = true
      l = l.slice(0, start)
    }
    l = l.replace(/(^|[^:])\/\/.*$/, "$1")
    if (l.trim()) out.push([i + 1, l])
  })
  return out
}

const forbidden: Array<[string, RegExp]> = [
  ["node: import", /from\s+["']node:/],
  ["bare builtin import", /from\s+["'](fs|net|tls|dns|os|child_process|path|crypto|stream|buffer)["']/],
  ["require()", /\brequire\(/],
  ["Deno", /\bDeno\./],
  ["process", /\bprocess\./],
  ["Buffer", /\bBuffer\b/],
  ["timers", /\b(setTimeout|setInterval|setImmediate)\(/],
  ["Date.now / new Date()", /\bDate\.now\(|new Date\(\)/],
  ["Math.random", /\bMath\.random\(/]
]

describe("packages/protocol is pure", () => {
  it("no source file uses a runtime API, a timer, the wall clock or ambient randomness", () => {
    const offences: Array<string> = []
    for (const file of files(src)) {
      for (const [n, line] of codeLines(readFileSync(file, "utf8"))) {
        for (const [what, re] of forbidden) if (re.test(line)) offences.push(`${file}:${n}: ${what}: ${line.trim()}`)
      }
    }
    expect(offences).toEqual([])
  })

  it("bundles for a neutral platform and loads in a bare context with no Node globals", async () => {
    const result = await build({
      entryPoints: [join(src, "index.ts")],
      bundle: true,
      platform: "neutral",
      format: "iife",
      globalName: "Mailroom",
      mainFields: ["module", "main"],
      write: false,
      logLevel: "silent"
    })
    expect(result.errors).toEqual([])
    const code = result.outputFiles[0]!.text
    // A browser-like global object: web APIs only, no process, Buffer, require or Deno.
    const context: Record<string, unknown> = {
      TextEncoder,
      TextDecoder,
      crypto: globalThis.crypto,
      console,
      URL,
      Request,
      Response,
      Headers,
      queueMicrotask,
      setTimeout,
      clearTimeout
    }
    context.globalThis = context
    runInNewContext(code, context)
    const lib = context.Mailroom as Record<string, any>
    expect(typeof lib.ServerSession.step).toBe("function")
    expect(typeof lib.Command.parse).toBe("function")
    const parsed = lib.Command.parse("MAIL FROM:<a@example.com> SIZE=10")
    expect(parsed._tag).toBe("Ok")
  })
})
