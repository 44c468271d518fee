/**
 * `ProcessSpawner` scenarios, runtime-neutral: the rules every spawner keeps
 * (no shell, stdin delivered and closed, bounded output, the process group
 * killed at the time limit, a minimal environment, a grandchild holding the
 * pipes does not turn a finished run into a time-out), run against real
 * programs (sh, cat, head, env) on Node and Deno alike.
 */
import * as Effect from "effect/Effect"
import * as ProcessSpawner from "../../packages/protocol/src/process/ProcessSpawner.ts"
import * as Assert from "./Assert.ts"
import type { Env, Scenario, ScenarioSuite } from "./Scenario.ts"

const decoder = new TextDecoder()

/** The spawner scenarios over `env.spawner`. */
export const processSpawnerScenarios = (env: Env): ScenarioSuite => {
  const spawn = (request: Omit<ProcessSpawner.SpawnRequest, "stdin" | "timeoutMs"> & { stdin?: Uint8Array; timeoutMs?: number }) =>
    Effect.runPromise(
      Effect.flatMap(ProcessSpawner.ProcessSpawner, (s) =>
        Effect.result(s.spawn({ stdin: new Uint8Array(0), timeoutMs: 10_000, ...request }))).pipe(Effect.provide(env.spawner))
    ).then((r) => {
      if (r._tag === "Failure") return r.failure
      return r.success
    })
  const exited = async (request: Parameters<typeof spawn>[0]) => {
    const r = await spawn(request)
    if (r instanceof ProcessSpawner.SpawnError || r._tag !== "Exited") throw new Error(`expected Exited, got ${JSON.stringify(r)}`)
    return { code: r.exitCode, stdout: decoder.decode(r.stdout), stderr: decoder.decode(r.stderr), raw: r }
  }
  const scenarios: Array<Scenario> = []
  const test = (name: string, run: () => Promise<void>) => scenarios.push({ name, run, timeoutMs: 20_000 })

  test("passes every argument as it is, with no shell in between", async () => {
    const r = await exited({ command: "printf", args: ["[%s]\\n", "a b", "$HOME", "; rm -rf /", "`id`", ""] })
    Assert.equal(r.stdout, "[a b]\n[$HOME]\n[; rm -rf /]\n[`id`]\n[]\n")
    Assert.equal(r.code, 0)
  })

  test("delivers standard input byte for byte and closes it", async () => {
    const input = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 31) & 0xff)
    const r = await spawn({ command: "cat", args: [], stdin: input, maxOutputBytes: 100_000 })
    Assert.ok(!(r instanceof ProcessSpawner.SpawnError) && r._tag === "Exited", JSON.stringify(r))
    Assert.bytesEqual((r as { stdout: Uint8Array }).stdout, input)
  })

  test("reports the exit code and standard error", async () => {
    const r = await exited({ command: "sh", args: ["-c", "echo out; echo err >&2; exit 3"] })
    Assert.equal([r.code, r.stdout, r.stderr], [3, "out\n", "err\n"])
  })

  test("keeps at most maxOutputBytes of output and drains the rest", async () => {
    const r = await exited({ command: "head", args: ["-c", "300000", "/dev/zero"], maxOutputBytes: 1000 })
    Assert.equal([r.code, r.raw.stdout.length], [0, 1000])
  })

  test("kills the whole process group at the time limit", async () => {
    const dir = await env.files.tempDir("mailroom-spawn-")
    try {
      const started = Date.now()
      const r = await spawn({
        command: "sh",
        args: ["-c", `(sleep 3; touch ${dir}/survived) & echo started; sleep 30`],
        timeoutMs: 300
      })
      Assert.ok(!(r instanceof ProcessSpawner.SpawnError) && r._tag === "TimedOut", JSON.stringify(r))
      Assert.equal(decoder.decode((r as { stdout: Uint8Array }).stdout), "started\n")
      Assert.atMost(Date.now() - started, 5_000)
      await new Promise((resolve) => setTimeout(resolve, 3_500))
      Assert.equal(await env.files.exists(`${dir}/survived`), false, "the background child was killed with the group")
    } finally {
      await env.files.removeDir(dir)
    }
  })

  test("a background grandchild that keeps the pipes open does not turn a finished run into a time-out", async () => {
    const started = Date.now()
    const r = await exited({ command: "sh", args: ["-c", "sleep 20 & echo delivered"], timeoutMs: 15_000 })
    Assert.equal([r.code, r.stdout], [0, "delivered\n"])
    Assert.atMost(Date.now() - started, 6_000)
  })

  test("gives a minimal environment by default, and exactly the request's when given", async () => {
    const keys = (await exited({ command: "env", args: [] })).stdout.trim().split("\n").map((l) => l.split("=")[0]).sort()
    Assert.ok(keys.includes("PATH"), "PATH is kept")
    Assert.equal(keys.filter((k) => !["PATH", "HOME", "LANG", "TZ", "PWD", "SHLVL", "_"].includes(k!)), [])
    const own = (await exited({ command: "/usr/bin/env", args: [], env: { ONLY: "this" } })).stdout
    Assert.equal(own, "ONLY=this\n")
  })

  test("a program that does not exist is a SpawnError NotFound; a signal is Signaled", async () => {
    const missing = await spawn({ command: "/nonexistent/mailroom-no-such-program", args: [] })
    Assert.ok(missing instanceof ProcessSpawner.SpawnError, JSON.stringify(missing))
    Assert.equal((missing as ProcessSpawner.SpawnError).reason, "NotFound")
    const killed = await spawn({ command: "sh", args: ["-c", "kill -SEGV $$"] })
    Assert.matches(killed, { _tag: "Signaled", signal: "SIGSEGV" })
  })

  return { name: `${env.runtime} ProcessSpawner`, scenarios }
}
