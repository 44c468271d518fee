/**
 * Real client programs for the cross-runtime scenarios (python3, swaks),
 * run through the runtime's `ProcessSpawner`: a scenario that needs a peer
 * other than our own connector uses one of these, the same on Node and Deno.
 */
import * as Effect from "effect/Effect"
import * as ProcessSpawner from "../../packages/protocol/src/process/ProcessSpawner.ts"
import type { Env } from "./Scenario.ts"

/** How a program ended, with its output as text. */
export interface ProgramResult {
  readonly exitCode: number | undefined
  readonly stdout: string
  readonly stderr: string
}

const decoder = new TextDecoder()

/** Runs `command` with `args` to completion (no shell), feeding `stdin`. */
export const run = (
  env: Env,
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly stdin?: string; readonly timeoutMs?: number } = {}
): Promise<ProgramResult> =>
  Effect.runPromise(
    Effect.flatMap(ProcessSpawner.ProcessSpawner, (s) =>
      s.spawn({
        command,
        args,
        stdin: new TextEncoder().encode(options.stdin ?? ""),
        timeoutMs: options.timeoutMs ?? 20_000
      })).pipe(Effect.provide(env.spawner))
  ).then((r) => ({
    exitCode: r._tag === "Exited" ? r.exitCode : undefined,
    stdout: decoder.decode(r.stdout),
    stderr: decoder.decode(r.stderr) + (r._tag === "Exited" ? "" : ` [${r._tag}]`)
  }))

/** Runs a Python 3 program given as source text; `args` become `sys.argv[1:]`. */
export const python = (env: Env, source: string, args: ReadonlyArray<string>, options: { readonly stdin?: string; readonly timeoutMs?: number } = {}) =>
  run(env, "python3", ["-c", source, ...args], options)
