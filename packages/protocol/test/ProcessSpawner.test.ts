import { describe, expect, it } from "vitest"
import * as ProcessSpawner from "../src/process/ProcessSpawner.ts"

const bytes = (s: string) => new TextEncoder().encode(s)
const request = (env?: Record<string, string>): ProcessSpawner.SpawnRequest => ({ command: "/bin/true", args: [], stdin: new Uint8Array(0), timeoutMs: 1, env })

describe("ProcessSpawner's shared pieces", () => {
  it("builds the minimal environment from the parent's, with a default PATH", () => {
    const parent: Record<string, string> = { PATH: "/p", HOME: "/h", LANG: "C", TZ: "UTC", SECRET: "x" }
    expect(ProcessSpawner.minimalEnv((k) => parent[k])).toEqual({ PATH: "/p", HOME: "/h", LANG: "C", TZ: "UTC" })
    expect(ProcessSpawner.minimalEnv(() => undefined)).toEqual({ PATH: "/usr/local/bin:/usr/bin:/bin" })
    expect(ProcessSpawner.environmentOf(request(), (k) => parent[k])).toEqual({ PATH: "/p", HOME: "/h", LANG: "C", TZ: "UTC" })
    const own = { ONLY: "1" }
    const env = ProcessSpawner.environmentOf(request(own), (k) => parent[k])
    expect(env).toEqual({ ONLY: "1" })
    expect(env).not.toBe(own)
  })

  it("collects output up to the limit, copying chunks", () => {
    const c = new ProcessSpawner.OutputCollector(5)
    const chunk = bytes("abc")
    c.push(chunk)
    chunk[0] = 0x7a
    c.push(bytes("defg"))
    c.push(bytes("h"))
    expect(new TextDecoder().decode(c.bytes())).toBe("abcde")
    expect(new ProcessSpawner.OutputCollector(0).bytes()).toEqual(new Uint8Array(0))
  })

  it("shapes the result of a finished run", () => {
    const o = bytes("o")
    const e = bytes("e")
    expect(ProcessSpawner.resultOf(true, 0, null, o, e)).toEqual({ _tag: "TimedOut", stdout: o, stderr: e })
    expect(ProcessSpawner.resultOf(false, 75, null, o, e)).toEqual({ _tag: "Exited", exitCode: 75, stdout: o, stderr: e })
    expect(ProcessSpawner.resultOf(false, null, "SIGSEGV", o, e)).toEqual({ _tag: "Signaled", signal: "SIGSEGV", stdout: o, stderr: e })
    expect(ProcessSpawner.resultOf(false, 0, "SIGTERM", o, e)._tag).toBe("Signaled")
    expect(ProcessSpawner.resultOf(false, null, null, o, e)).toEqual({ _tag: "Signaled", signal: "unknown", stdout: o, stderr: e })
  })

  it("words a SpawnError", () => {
    const cause = new Error("x")
    const err = ProcessSpawner.spawnError("/usr/bin/lda", "NotFound", "ENOENT", cause)
    expect(err._tag).toBe("SpawnError")
    expect([err.reason, err.command, err.message, err.cause]).toEqual(["NotFound", "/usr/bin/lda", "cannot run /usr/bin/lda: ENOENT", cause])
  })
})
