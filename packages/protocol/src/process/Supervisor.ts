/**
 * The supervisor of `workers: N`: one small process that starts N worker
 * processes (each a whole server: edges, queue, relay, on listeners shared
 * through SO_REUSEPORT and one queue storage), restarts a worker that dies,
 * forwards SIGHUP, and on SIGTERM/SIGINT asks every worker to stop and waits
 * for them. It never touches a connection or a message, so it has nothing to
 * lose when a worker crashes: what a worker accepted is on disk, and the
 * restarted worker (the same number, the same queue claims) goes on with it.
 *
 * Rules:
 * - A worker that exits with `EXIT_CANNOT_START` (78, sysexits' EX_CONFIG:
 *   a port in use, a certificate it cannot read) stops the whole server,
 *   with exit code 1: starting it again would fail the same way.
 * - Any other exit (a crash, an out-of-memory kill, `kill -9`) restarts that
 *   worker after `restartDelayMs`; a worker that dies again within
 *   `quickExitMs` of its start waits twice as long as the last time, up to
 *   `maxRestartDelayMs`.
 * - `stop()` sends SIGTERM to every worker (graceful: each finishes its
 *   messages in flight within its `shutdown_grace`), SIGKILL to any still
 *   running `killAfterMs` later, and resolves `done` with 0 once all exited.
 *
 * Runtime-neutral: the runtime gives `Host` (spawn a worker, a timer, the
 * clock, a log line); `@mailroom/node` and `@mailroom/deno` spawn workers
 * with `MAILROOM_WORKER=<n>` in their environment and a pipe on standard
 * input whose end tells a worker its supervisor is gone.
 *
 * What it deliberately does not do: share work between workers (the kernel
 * spreads connections, the shared storage spreads deliveries), change the
 * number of workers while running, or drop privileges.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"

/** The exit code of a worker that could not start: the supervisor stops rather than retries. */
export const EXIT_CANNOT_START = 78

/** The environment variable that hands a worker its number (1 to N). */
export const WORKER_ENV = "MAILROOM_WORKER"

/** Signals the supervisor sends. */
export type Signal = "SIGTERM" | "SIGHUP" | "SIGKILL"

/** How a worker process ended. */
export interface Exit {
  readonly code: number | null
  readonly signal: string | null
}

/** A running worker (a child process of the supervisor). */
export interface Child {
  readonly pid: number
  /** Resolves once, when the process has exited. */
  readonly exited: Promise<Exit>
  readonly kill: (signal: Signal) => void
}

/** What the runtime gives the supervisor. */
export interface Host {
  /** Starts worker `worker` (1 to N); throws when the process cannot be started at all. */
  readonly spawn: (worker: number) => Child
  /** The clock, ms [effect's `Clock`]. */
  readonly now?: () => number
  /** Runs `f` after `ms`; the result cancels it [an effect `sleep` in a fiber of its own]. */
  readonly timer?: (ms: number, f: () => void) => () => void
  /** One log line; `logTo` makes one from the runtime's log layer. */
  readonly log: (level: "info" | "warning" | "error", event: string, fields: Readonly<Record<string, unknown>>) => void
}

const effectNow = (): number => Effect.runSync(Clock.currentTimeMillis)

const effectTimer = (ms: number, f: () => void): () => void => {
  const fiber = Effect.runFork(Effect.andThen(Effect.sleep(ms), Effect.sync(f)))
  return () => void Effect.runFork(Fiber.interrupt(fiber))
}

/** A `Host.log` writing through `logging` (the runtime's log layer) with `role=supervisor`. */
export const logTo = (logging: Layer.Layer<never>): Host["log"] => (level, event, fields) => {
  const line = level === "error" ? Effect.logError(event) : level === "warning" ? Effect.logWarning(event) : Effect.logInfo(event)
  Effect.runSync(line.pipe(Effect.annotateLogs({ role: "supervisor", ...fields }), Effect.provide(logging)))
}

export interface Options {
  readonly workers: number
  /** The first restart's delay, ms [1 000]. */
  readonly restartDelayMs?: number
  /** The longest restart delay, ms [30 000]. */
  readonly maxRestartDelayMs?: number
  /** A worker that exits sooner than this after its start doubles its next delay, ms [10 000]. */
  readonly quickExitMs?: number
  /** After `stop`, workers still running this much later are killed, ms [120 000]. */
  readonly killAfterMs?: number
}

/** A running supervisor. */
export interface Supervisor {
  /** Graceful stop of every worker; idempotent. */
  readonly stop: (reason: string) => void
  /** Forwards SIGHUP (certificate reload) to every worker. */
  readonly reload: () => void
  /** The workers running now, by number. */
  readonly pids: () => ReadonlyMap<number, number>
  /** The supervisor's exit code once every worker has exited: 0 after `stop`, 1 when a worker could not start. */
  readonly done: Promise<number>
}

interface Slot {
  child: Child | undefined
  startedAt: number
  delayMs: number
  cancelRestart: (() => void) | undefined
}

/** Starts `options.workers` workers and supervises them until `stop`. */
export const start = (options: Options, runtime: Host): Supervisor => {
  const host = { ...runtime, now: runtime.now ?? effectNow, timer: runtime.timer ?? effectTimer }
  const firstDelay = options.restartDelayMs ?? 1_000
  const maxDelay = options.maxRestartDelayMs ?? 30_000
  const quickExitMs = options.quickExitMs ?? 10_000
  const killAfterMs = options.killAfterMs ?? 120_000
  const slots = new Map<number, Slot>()
  let stopping = false
  let exitCode = 0
  let cancelKill: (() => void) | undefined
  let resolveDone: (code: number) => void = () => {}
  const done = new Promise<number>((resolve) => (resolveDone = resolve))

  const running = (): number => [...slots.values()].filter((s) => s.child !== undefined).length

  const finishIfIdle = () => {
    if (!stopping || running() > 0) return
    for (const slot of slots.values()) slot.cancelRestart?.()
    cancelKill?.()
    resolveDone(exitCode)
  }

  const fail = (reason: string) => {
    exitCode = 1
    stop(reason)
  }

  const launch = (worker: number) => {
    const slot = slots.get(worker)!
    slot.cancelRestart = undefined
    let child: Child
    try {
      child = host.spawn(worker)
    } catch (e) {
      host.log("error", "worker could not be started", { worker, error: e instanceof Error ? e.message : String(e) })
      return fail("a worker could not be started")
    }
    slot.child = child
    slot.startedAt = host.now()
    host.log("info", "worker started", { worker, pid: child.pid })
    child.exited.then((exit) => onExit(worker, child, exit), (e) => onExit(worker, child, { code: null, signal: String(e) }))
  }

  const onExit = (worker: number, child: Child, exit: Exit) => {
    const slot = slots.get(worker)!
    if (slot.child !== child) return
    slot.child = undefined
    const fields = { worker, pid: child.pid, code: exit.code, signal: exit.signal }
    if (stopping) {
      host.log("info", "worker stopped", fields)
      return finishIfIdle()
    }
    if (exit.code === EXIT_CANNOT_START) {
      host.log("error", "worker could not start; stopping every worker", fields)
      return fail("a worker could not start")
    }
    const quick = host.now() - slot.startedAt < quickExitMs
    slot.delayMs = quick ? Math.min(maxDelay, slot.delayMs === 0 ? firstDelay : slot.delayMs * 2) : firstDelay
    host.log("warning", "worker exited; restarting it", { ...fields, restart_in_ms: slot.delayMs })
    slot.cancelRestart = host.timer(slot.delayMs, () => {
      if (!stopping) launch(worker)
    })
  }

  const stop = (reason: string) => {
    if (stopping) return
    stopping = true
    host.log("info", "stopping workers", { reason, running: running() })
    for (const slot of slots.values()) {
      slot.cancelRestart?.()
      slot.cancelRestart = undefined
      slot.child?.kill("SIGTERM")
    }
    cancelKill = host.timer(killAfterMs, () => {
      for (const [worker, slot] of slots) {
        if (slot.child === undefined) continue
        host.log("warning", "worker still running; killing it", { worker, pid: slot.child.pid, after_ms: killAfterMs })
        slot.child.kill("SIGKILL")
      }
    })
    finishIfIdle()
  }

  for (let worker = 1; worker <= options.workers; worker++) {
    slots.set(worker, { child: undefined, startedAt: 0, delayMs: 0, cancelRestart: undefined })
  }
  for (let worker = 1; worker <= options.workers && !stopping; worker++) launch(worker)

  return {
    stop,
    reload: () => {
      for (const slot of slots.values()) slot.child?.kill("SIGHUP")
    },
    pids: () => new Map([...slots].flatMap(([worker, s]) => (s.child ? [[worker, s.child.pid] as const] : []))),
    done
  }
}

/** The worker number in `value` (the `MAILROOM_WORKER` variable): 1 to 64, else `undefined`. */
export const parseWorker = (value: string | undefined): number | undefined =>
  value !== undefined && /^[1-9][0-9]?$/.test(value) && Number(value) <= 64 ? Number(value) : undefined
