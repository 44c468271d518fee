/**
 * `ProcessSpawner` on Node, over `node:child_process.spawn`:
 *
 * - never a shell: `spawn(command, args, { shell: false })`, so every element
 *   of `args` reaches the program as exactly one argument;
 * - the child leads its own process group (`detached: true`), so that a time
 *   limit or an interruption kills everything it started
 *   (`process.kill(-pid, "SIGKILL")`), as Postfix's pipe(8) does;
 * - standard input gets the message and is closed; a child that exits
 *   without reading it all (EPIPE) is not an error;
 * - standard output and error are collected up to `maxOutputBytes` each and
 *   drained past that;
 * - after the child exits, output is awaited for at most `closeGraceMs`: a
 *   background grandchild that keeps the pipes open cannot turn a finished
 *   delivery into a time-out (and a duplicate delivery on retry);
 * - the environment is the request's, or a minimal one (`PATH`, `HOME`,
 *   `LANG`, `TZ`), never Mailroom's own.
 *
 * What this module deliberately does not do: interpret exit codes (the
 * relay does), privilege changes (run Mailroom as the user the agent needs,
 * or use an agent that switches users itself, as dovecot-lda does).
 *
 * @since 0.1.0
 */
import * as childProcess from "node:child_process"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ProcessSpawner from "@mailroom/protocol/process/ProcessSpawner"

/** Tunables of the Node spawner. */
export interface NodeProcessOptions {
  /** How long to wait for the output pipes to close once the child has exited, ms. Default 2 000. */
  readonly closeGraceMs?: number
}

const spawnErrorOf = (command: string, err: NodeJS.ErrnoException): ProcessSpawner.SpawnError =>
  ProcessSpawner.spawnError(
    command,
    err.code === "ENOENT" ? "NotFound" : err.code === "EACCES" || err.code === "EPERM" ? "PermissionDenied" : "Unknown",
    err.code ?? err.message,
    err
  )

const killGroup = (child: childProcess.ChildProcess): void => {
  const pid = child.pid
  if (pid === undefined) return
  try {
    process.kill(-pid, "SIGKILL")
  } catch {
    // the group is gone already; fall back to the leader alone
    try {
      child.kill("SIGKILL")
    } catch {
      // already exited
    }
  }
}

/** Runs one program (see `ProcessSpawner.SpawnRequest`). */
export const spawn = (
  request: ProcessSpawner.SpawnRequest,
  options: NodeProcessOptions = {}
): Effect.Effect<ProcessSpawner.SpawnResult, ProcessSpawner.SpawnError> =>
  Effect.callback<ProcessSpawner.SpawnResult, ProcessSpawner.SpawnError>((resume) => {
    const closeGraceMs = options.closeGraceMs ?? 2_000
    const limit = request.maxOutputBytes ?? ProcessSpawner.maxOutputBytes
    const stdout = new ProcessSpawner.OutputCollector(limit)
    const stderr = new ProcessSpawner.OutputCollector(limit)
    let child: childProcess.ChildProcess
    try {
      child = childProcess.spawn(request.command, [...request.args], {
        shell: false,
        detached: true,
        stdio: ["pipe", "pipe", "pipe"],
        env: ProcessSpawner.environmentOf(request, (k) => process.env[k]),
        ...(request.cwd !== undefined ? { cwd: request.cwd } : {}),
        windowsHide: true
      })
    } catch (e) {
      // bad arguments (e.g. a NUL byte in an argument) throw synchronously
      resume(Effect.fail(spawnErrorOf(request.command, e as NodeJS.ErrnoException)))
      return
    }

    let done = false
    let timedOut = false
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined
    let timer: ReturnType<typeof setTimeout> | undefined
    let graceTimer: ReturnType<typeof setTimeout> | undefined

    const finish = (result: Effect.Effect<ProcessSpawner.SpawnResult, ProcessSpawner.SpawnError>): void => {
      if (done) return
      done = true
      if (timer !== undefined) clearTimeout(timer)
      if (graceTimer !== undefined) clearTimeout(graceTimer)
      child.stdout?.destroy()
      child.stderr?.destroy()
      child.stdin?.destroy()
      resume(result)
    }

    const settle = (): void => {
      if (exit === undefined) return
      finish(Effect.succeed(ProcessSpawner.resultOf(timedOut, exit.code, exit.signal, stdout.bytes(), stderr.bytes())))
    }

    child.stdout?.on("data", (c: Uint8Array) => stdout.push(c))
    child.stderr?.on("data", (c: Uint8Array) => stderr.push(c))
    child.stdout?.on("error", () => {})
    child.stderr?.on("error", () => {})
    // EPIPE when the child exits without reading everything: not our failure
    child.stdin?.on("error", () => {})

    child.on("error", (err: NodeJS.ErrnoException) => {
      // 'error' without a pid: the program never started
      if (child.pid === undefined) finish(Effect.fail(spawnErrorOf(request.command, err)))
    })
    child.on("exit", (code, signal) => {
      exit = { code, signal }
      if (timedOut) {
        settle()
        return
      }
      graceTimer = setTimeout(settle, closeGraceMs)
    })
    child.on("close", () => settle())

    if (child.pid !== undefined) {
      timer = setTimeout(() => {
        timer = undefined
        if (exit !== undefined) {
          // the program itself finished in time; only a lingering descendant is left
          killGroup(child)
          settle()
          return
        }
        timedOut = true
        killGroup(child)
      }, Math.max(0, request.timeoutMs))
      child.stdin?.end(request.stdin)
    }

    return Effect.sync(() => {
      // interrupted: kill the whole group and stop listening
      if (!done) {
        done = true
        if (timer !== undefined) clearTimeout(timer)
        if (graceTimer !== undefined) clearTimeout(graceTimer)
        killGroup(child)
        child.stdout?.destroy()
        child.stderr?.destroy()
        child.stdin?.destroy()
      }
    })
  })

/** The Node spawner as a service value. */
export const make = (options: NodeProcessOptions = {}): ProcessSpawner.Service =>
  ProcessSpawner.fromFunction((request) => spawn(request, options))

/** A layer providing `ProcessSpawner` on Node. */
export const layer: Layer.Layer<ProcessSpawner.ProcessSpawner> = Layer.succeed(ProcessSpawner.ProcessSpawner)(make())

/** The same with tunables. */
export const layerWith = (options: NodeProcessOptions): Layer.Layer<ProcessSpawner.ProcessSpawner> =>
  Layer.succeed(ProcessSpawner.ProcessSpawner)(make(options))
