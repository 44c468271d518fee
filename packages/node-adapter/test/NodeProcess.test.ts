/**
 * NodeProcess, the Node `ProcessSpawner`, against real programs: large
 * stdin, bounded output, interruption killing the process group, and spawn
 * failures as `SpawnError`.
 */
import * as nfs from "node:fs"
import * as os from "node:os"
import * as npath from "node:path"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as ProcessSpawner from "@mailroom/protocol/process/ProcessSpawner"
import * as NodeProcess from "../src/NodeProcess.ts"

let base: string
beforeAll(() => {
  base = nfs.mkdtempSync(npath.join(os.tmpdir(), "mailroom-proc-"))
})
afterAll(() => {
  nfs.rmSync(base, { recursive: true, force: true })
})

const alive = (pid: number): boolean => {
  try {
    return !/^\d+ \(.*\) [ZX]/s.test(nfs.readFileSync(`/proc/${pid}/stat`, "utf8"))
  } catch {
    return false
  }
}

const request = (command: string, args: ReadonlyArray<string>, extra: Partial<ProcessSpawner.SpawnRequest> = {}): ProcessSpawner.SpawnRequest => ({
  command,
  args,
  stdin: new Uint8Array(0),
  timeoutMs: 10_000,
  ...extra
})

describe("NodeProcess", () => {
  it("pipes a large stdin through and collects stdout, stderr and the exit code", async () => {
    const input = new Uint8Array(3 * 1024 * 1024)
    for (let i = 0; i < input.length; i++) input[i] = (i * 7) & 0xff
    const result = await Effect.runPromise(
      NodeProcess.spawn(request("/bin/sh", ["-c", "cat; echo oops >&2; exit 3"], { stdin: input, maxOutputBytes: 4 * 1024 * 1024 }))
    )
    expect(result._tag).toBe("Exited")
    if (result._tag !== "Exited") return
    expect(result.exitCode).toBe(3)
    expect(Buffer.from(result.stdout).equals(Buffer.from(input))).toBe(true)
    expect(new TextDecoder().decode(result.stderr)).toBe("oops\n")
  })

  it("keeps at most maxOutputBytes of output and still lets the program finish", async () => {
    const result = await Effect.runPromise(
      NodeProcess.spawn(request("/bin/sh", ["-c", "head -c 1000000 /dev/zero; exit 0"], { maxOutputBytes: 1000 }))
    )
    expect(result).toMatchObject({ _tag: "Exited", exitCode: 0 })
    expect(result.stdout.length).toBe(1000)
  })

  it("does not fail when the program exits without reading its input", async () => {
    const result = await Effect.runPromise(
      NodeProcess.spawn(request("/bin/true", [], { stdin: new Uint8Array(8 * 1024 * 1024) }))
    )
    expect(result).toMatchObject({ _tag: "Exited", exitCode: 0 })
  })

  it("kills the process group when the effect is interrupted", async () => {
    const pids = npath.join(base, "pids")
    const program = Effect.gen(function*() {
      const fiber = yield* Effect.forkChild(NodeProcess.spawn(request("/bin/sh", ["-c", `sleep 60 & echo "$$ $!" > '${pids}'; wait`])))
      for (let i = 0; i < 100 && !nfs.existsSync(pids); i++) yield* Effect.sleep("20 millis")
      yield* Fiber.interrupt(fiber)
    })
    await Effect.runPromise(program)
    const [shell, sleeper] = nfs.readFileSync(pids, "utf8").trim().split(" ").map(Number)
    for (let i = 0; i < 50 && (alive(shell!) || alive(sleeper!)); i++) await new Promise((r) => setTimeout(r, 20))
    expect(alive(shell!)).toBe(false)
    expect(alive(sleeper!)).toBe(false)
  })

  it("reports a program it cannot start as SpawnError, never as a defect", async () => {
    const missing = await Effect.runPromise(Effect.flip(NodeProcess.spawn(request(npath.join(base, "missing"), []))))
    expect(missing).toBeInstanceOf(ProcessSpawner.SpawnError)
    expect(missing.reason).toBe("NotFound")
    const nul = await Effect.runPromise(Effect.flip(NodeProcess.spawn(request("/bin/echo", ["a\u0000b"]))))
    expect(nul.reason).toBe("Unknown")
  })

  it("reports a signal death as Signaled", async () => {
    const result = await Effect.runPromise(NodeProcess.spawn(request("/bin/sh", ["-c", "kill -TERM $$"])))
    expect(result).toMatchObject({ _tag: "Signaled", signal: "SIGTERM" })
  })
})
