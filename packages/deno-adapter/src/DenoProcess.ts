/**
 * `ProcessSpawner` on Deno, over `Deno.Command`, with the same rules as
 * `@mailroom/node`'s `NodeProcess`:
 *
 * - never a shell: the program and each argument go to the OS as they are;
 * - the child leads its own process group (`detached: true`), so a time
 *   limit or an interruption kills everything it started
 *   (`Deno.kill(-pid, "SIGKILL")`);
 * - standard input gets the message and is closed; a child that exits
 *   without reading it all is not an error;
 * - standard output and error are collected up to `maxOutputBytes` each and
 *   drained past that;
 * - after the child exits, output is awaited for at most `closeGraceMs`, so
 *   a background grandchild holding the pipes cannot turn a finished
 *   delivery into a time-out;
 * - the environment is the request's, or a minimal one (`PATH`, `HOME`,
 *   `LANG`, `TZ`), never Mailroom's own (`clearEnv: true`).
 *
 * Needs `--allow-run` (and `--allow-env` for the minimal environment).
 *
 * What this module deliberately does not do: interpret exit codes (the relay
 * does), or change users.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ProcessSpawner from "@mailroom/protocol/process/ProcessSpawner"

/** Tunables of the Deno spawner. */
export interface DenoProcessOptions {
  /** How long to wait for the output pipes to close once the child has exited, ms. Default 2 000. */
  readonly closeGraceMs?: number
}

const spawnErrorOf = (command: string, e: unknown): ProcessSpawner.SpawnError =>
  ProcessSpawner.spawnError(
    command,
    e instanceof Deno.errors.NotFound
      ? "NotFound"
      : e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable
      ? "PermissionDenied"
      : "Unknown",
    e instanceof Error ? e.message : String(e),
    e
  )

const killGroup = (child: Deno.ChildProcess): void => {
  try {
    Deno.kill(-child.pid, "SIGKILL")
  } catch {
    // the group is gone already; fall back to the leader alone
    try {
      child.kill("SIGKILL")
    } catch {
      // already exited
    }
  }
}

/** Reads a stream to its end into `into`; resolves when it ends (or fails). */
const drain = async (stream: ReadableStream<Uint8Array>, into: ProcessSpawner.OutputCollector): Promise<void> => {
  const reader = stream.getReader()
  try {
    for (;;) {
      const r = await reader.read()
      if (r.done) return
      into.push(r.value)
    }
  } catch {
    // cancelled or broken: what was read is kept
  } finally {
    reader.releaseLock()
  }
}

/** Runs one program (see `ProcessSpawner.SpawnRequest`). */
export const spawn = (
  request: ProcessSpawner.SpawnRequest,
  options: DenoProcessOptions = {}
): Effect.Effect<ProcessSpawner.SpawnResult, ProcessSpawner.SpawnError> =>
  Effect.callback<ProcessSpawner.SpawnResult, ProcessSpawner.SpawnError>((resume) => {
    const closeGraceMs = options.closeGraceMs ?? 2_000
    const limit = request.maxOutputBytes ?? ProcessSpawner.maxOutputBytes
    const stdout = new ProcessSpawner.OutputCollector(limit)
    const stderr = new ProcessSpawner.OutputCollector(limit)
    let child: Deno.ChildProcess
    try {
      child = new Deno.Command(request.command, {
        args: [...request.args],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        clearEnv: true,
        env: ProcessSpawner.environmentOf(request, (k) => Deno.env.get(k)),
        ...(request.cwd !== undefined ? { cwd: request.cwd } : {}),
        detached: true
      }).spawn()
    } catch (e) {
      resume(Effect.fail(spawnErrorOf(request.command, e)))
      return
    }

    let done = false
    let timedOut = false
    let exit: Deno.CommandStatus | undefined
    let outputDone = false
    let timer: ReturnType<typeof setTimeout> | undefined
    let graceTimer: ReturnType<typeof setTimeout> | undefined

    const stopStreams = () => {
      child.stdout.cancel().catch(() => undefined)
      child.stderr.cancel().catch(() => undefined)
    }

    const finish = (result: ProcessSpawner.SpawnResult) => {
      if (done) return
      done = true
      if (timer !== undefined) clearTimeout(timer)
      if (graceTimer !== undefined) clearTimeout(graceTimer)
      resume(Effect.succeed(result))
    }

    const settle = (force: boolean) => {
      if (exit === undefined || (!outputDone && !force)) return
      if (!outputDone) stopStreams()
      finish(ProcessSpawner.resultOf(timedOut, exit.code, exit.signal, stdout.bytes(), stderr.bytes()))
    }

    Promise.all([drain(child.stdout, stdout), drain(child.stderr, stderr)]).then(() => {
      outputDone = true
      settle(false)
    })
    child.status.then((status) => {
      exit = status
      if (timedOut || outputDone) return settle(true)
      graceTimer = setTimeout(() => settle(true), closeGraceMs)
    })

    timer = setTimeout(() => {
      timer = undefined
      if (exit !== undefined) {
        // the program itself finished in time; only a lingering descendant is left
        killGroup(child)
        settle(true)
        return
      }
      timedOut = true
      killGroup(child)
    }, Math.max(0, request.timeoutMs))

    const writer = child.stdin.getWriter()
    // a child that exits without reading its input (EPIPE) is not our failure
    writer.write(request.stdin).then(() => writer.close()).catch(() => undefined)

    return Effect.sync(() => {
      // interrupted: kill the whole group and stop listening
      if (done) return
      done = true
      if (timer !== undefined) clearTimeout(timer)
      if (graceTimer !== undefined) clearTimeout(graceTimer)
      killGroup(child)
      stopStreams()
    })
  })

/** The Deno spawner as a service value. */
export const make = (options: DenoProcessOptions = {}): ProcessSpawner.Service =>
  ProcessSpawner.fromFunction((request) => spawn(request, options))

/** A layer providing `ProcessSpawner` on Deno. */
export const layer: Layer.Layer<ProcessSpawner.ProcessSpawner> = Layer.succeed(ProcessSpawner.ProcessSpawner)(make())

/** The same with tunables. */
export const layerWith = (options: DenoProcessOptions): Layer.Layer<ProcessSpawner.ProcessSpawner> =>
  Layer.succeed(ProcessSpawner.ProcessSpawner)(make(options))
