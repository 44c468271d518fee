/**
 * The process spawner: the one service through which the pipe relay runs a
 * local delivery agent (maildrop, dovecot-lda, a script). One call runs one
 * program to completion: the argument vector is handed to the operating
 * system as it is (no shell ever sees it), the message goes to standard
 * input, standard output and error are collected (bounded), and the program
 * is killed, with its whole process group, when it outlives its time limit.
 *
 * `@mailroom/node` implements it over `node:child_process` (`NodeProcess`),
 * `@mailroom/deno` over `Deno.Command`. `fromFunction` and `layerScripted`
 * make test doubles for the pure core.
 *
 * Why not effect's `effect/process` `ChildProcessSpawner`: it fits on Node
 * (no shell by default, process-group kill on release), but it has no Deno
 * implementation, its handle is stream- and scope-shaped where the relay needs
 * one request/response, and its release waits for a killed group without a
 * time limit unless told otherwise. This service is the narrow seam the relay
 * needs; an adapter over `ChildProcessSpawner` is a few lines if wanted.
 *
 * What this module deliberately does not do: shells, pipelines, streaming
 * output, interactive input, or any interpretation of exit codes (that is the
 * relay's job, see `PipeRelay`).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/** What to run. */
export interface SpawnRequest {
  /** The program: an absolute path, or a name looked up on `PATH`. Never a shell command line. */
  readonly command: string
  /** The arguments after the program name, each passed as one argument exactly as given. */
  readonly args: ReadonlyArray<string>
  /** Written to the program's standard input, which is then closed. */
  readonly stdin: Uint8Array
  /** After this many milliseconds the program and its process group are killed (SIGKILL). */
  readonly timeoutMs: number
  /**
   * The program's whole environment. When omitted, implementations pass a
   * minimal one (`PATH`, `HOME`, `LANG`, `TZ` from the parent where set), never
   * the parent's full environment with whatever secrets it holds.
   */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** The working directory; the implementation's default (the parent's) when omitted. */
  readonly cwd?: string | undefined
  /**
   * At most this many bytes of standard output, and as many of standard
   * error, are kept; the rest is read and dropped. Default `maxOutputBytes`.
   */
  readonly maxOutputBytes?: number | undefined
}

/** Default limit of collected output per stream: 64 KiB. */
export const maxOutputBytes = 64 * 1024

/** How a run ended. Output is what was collected, possibly truncated. */
export type SpawnResult =
  /** The program exited by itself with `exitCode`. */
  | {
    readonly _tag: "Exited"
    readonly exitCode: number
    readonly stdout: Uint8Array
    readonly stderr: Uint8Array
  }
  /** The program was ended by a signal it did not get from us (e.g. `SIGSEGV`). */
  | {
    readonly _tag: "Signaled"
    readonly signal: string
    readonly stdout: Uint8Array
    readonly stderr: Uint8Array
  }
  /** The time limit passed; the program and its process group were killed. */
  | {
    readonly _tag: "TimedOut"
    readonly stdout: Uint8Array
    readonly stderr: Uint8Array
  }

/** The program could not be started at all (not found, not executable, out of processes). */
export class SpawnError extends Data.TaggedError("SpawnError")<{
  readonly reason: "NotFound" | "PermissionDenied" | "Unknown"
  readonly command: string
  readonly message: string
  readonly cause?: unknown
}> {}

// --- pieces shared by the runtime implementations -------------------------------

/** The variables a minimal environment takes from the parent's, where set. */
export const minimalEnvNames = ["PATH", "HOME", "LANG", "TZ"] as const

/** `PATH` of the minimal environment when the parent has none. */
export const defaultPath = "/usr/local/bin:/usr/bin:/bin"

/**
 * The minimal environment of a request without `env`: `minimalEnvNames`
 * read with `get` (the runtime's environment lookup), `PATH` defaulting to
 * `defaultPath`.
 */
export const minimalEnv = (get: (name: string) => string | undefined): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const k of minimalEnvNames) {
    const v = get(k)
    if (v !== undefined) env[k] = v
  }
  if (env["PATH"] === undefined) env["PATH"] = defaultPath
  return env
}

/** The environment a request's program gets: its own `env` (copied), or `minimalEnv(get)`. */
export const environmentOf = (request: SpawnRequest, get: (name: string) => string | undefined): Record<string, string> =>
  request.env !== undefined ? { ...request.env } : minimalEnv(get)

/**
 * Collects one output stream up to `limit` bytes; later bytes are dropped.
 * Chunks are copied, so a runtime may reuse its buffers.
 */
export class OutputCollector {
  private readonly chunks: Array<Uint8Array> = []
  private size = 0
  readonly limit: number
  constructor(limit: number) {
    this.limit = limit
  }
  /** Keeps as much of `chunk` as fits. */
  push(chunk: Uint8Array): void {
    const room = this.limit - this.size
    if (room <= 0) return
    const part = chunk.length <= room ? chunk : chunk.subarray(0, room)
    this.chunks.push(new Uint8Array(part))
    this.size += part.length
  }
  /** What was kept, as one array. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.size)
    let o = 0
    for (const c of this.chunks) {
      out.set(c, o)
      o += c.length
    }
    return out
  }
}

/**
 * The result of a finished run: `TimedOut` when the time limit killed it,
 * else `Signaled` when `signal` is set, else `Exited` with `exitCode`
 * (a missing code with no signal reads as signal `"unknown"`).
 */
export const resultOf = (
  timedOut: boolean,
  exitCode: number | null,
  signal: string | null,
  stdout: Uint8Array,
  stderr: Uint8Array
): SpawnResult => {
  if (timedOut) return { _tag: "TimedOut", stdout, stderr }
  if (signal !== null) return { _tag: "Signaled", signal, stdout, stderr }
  if (exitCode !== null) return { _tag: "Exited", exitCode, stdout, stderr }
  return { _tag: "Signaled", signal: "unknown", stdout, stderr }
}

/** The `SpawnError` of a program that could not be started: `cannot run <command>: <detail>`. */
export const spawnError = (
  command: string,
  reason: SpawnError["reason"],
  detail: string,
  cause: unknown
): SpawnError => new SpawnError({ reason, command, message: `cannot run ${command}: ${detail}`, cause })

/** The service shape. */
export interface Service {
  /**
   * Runs one program to completion (see `SpawnRequest`). Interrupting the
   * effect kills the program's process group, as a timeout does.
   */
  readonly spawn: (request: SpawnRequest) => Effect.Effect<SpawnResult, SpawnError>
}

/** The process spawner service. */
export class ProcessSpawner extends Context.Service<ProcessSpawner, Service>()("@mailroom/protocol/ProcessSpawner") {}

/** A spawner from a plain function (test doubles, adapters). */
export const fromFunction = (f: (request: SpawnRequest) => Effect.Effect<SpawnResult, SpawnError>): Service => ({
  spawn: f
})

/** `Exited` with the given code and text output (UTF-8). */
export const exited = (exitCode: number, stdout = "", stderr = ""): SpawnResult => ({
  _tag: "Exited",
  exitCode,
  stdout: encoder.encode(stdout),
  stderr: encoder.encode(stderr)
})

const encoder = new TextEncoder()

/**
 * A layer whose spawner records every request in `calls` and answers with
 * `answer(request)`; no program runs. For unit tests of the pure core.
 */
export const layerScripted = (
  answer: (request: SpawnRequest) => SpawnResult | SpawnError,
  calls: Array<SpawnRequest> = []
): Layer.Layer<ProcessSpawner> =>
  Layer.succeed(ProcessSpawner)(fromFunction((request) =>
    Effect.suspend(() => {
      calls.push(request)
      const a = answer(request)
      return a instanceof SpawnError ? Effect.fail(a) : Effect.succeed(a)
    })
  ))
