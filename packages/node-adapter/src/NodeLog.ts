/**
 * Mailroom's structured logs on Node: a layer that writes every `Effect.log*`
 * call as one logfmt or JSON line (see `@mailroom/protocol/observability/Log`)
 * to standard output, or standard error.
 *
 * Lines are batched per stream: a line is written at most `FLUSH_MS` (20 ms)
 * after it was logged, together with every line logged meanwhile, by one
 * `stream.write` (at once when a batch passes 64 KiB), instead of one write
 * per line. On Linux, writes to a file, a pipe or a TTY on stdout and stderr
 * are synchronous system calls, so under load this turns several system
 * calls per message (session, message and delivery lines) into a small
 * fraction of one. Order is kept within a stream. What is still batched when
 * the process exits (`process.exit`, the end of the event loop, an uncaught
 * exception) is written by an `exit` handler; only a `kill -9` can lose the
 * last 20 ms of lines.
 *
 * What this module deliberately does not do: rotate files, talk to syslog or
 * journald (run Mailroom under systemd and its stdout goes to the journal),
 * or decide what to log.
 *
 * @since 0.1.0
 */
import type * as Layer from "effect/Layer"
import * as Log from "@mailroom/protocol/observability/Log"

/** Where the lines go: `stdout` (the default), `stderr`, or `split` (warnings and errors to stderr, the rest to stdout). */
export type Destination = "stdout" | "stderr" | "split"

/** A batch flushes at once past this many UTF-16 code units. */
const MAX_BATCH = 64 * 1024

/** How long a line may wait for the lines after it, ms. */
export const FLUSH_MS = 20

/** The lines of one stream waiting to be written together. */
class Batch {
  private text = ""
  private scheduled = false
  private readonly stream: () => NodeJS.WritableStream
  private readonly onTimer = (): void => {
    this.scheduled = false
    this.flush()
  }
  constructor(stream: () => NodeJS.WritableStream) {
    this.stream = stream
  }
  add(line: string): void {
    this.text += line + "\n"
    if (this.text.length >= MAX_BATCH) this.flush()
    else if (!this.scheduled) {
      this.scheduled = true
      setTimeout(this.onTimer, FLUSH_MS).unref()
    }
  }
  flush(): void {
    if (this.text === "") return
    const text = this.text
    this.text = ""
    this.stream().write(text)
  }
}

// one batch per stream, shared by every sink, so lines of several layers keep their order
const stdout = new Batch(() => process.stdout)
const stderr = new Batch(() => process.stderr)
let exitHook = false

/** Writes whatever is still batched (the `exit` handler; tests). */
export const flush = (): void => {
  stdout.flush()
  stderr.flush()
}

/** A sink writing one line per record to the chosen standard stream(s), batched (see the module header). */
export const sink = (destination: Destination = "stdout"): Log.Sink => {
  if (!exitHook) {
    exitHook = true
    process.on("exit", flush)
  }
  return (line, level) => {
    const toStderr = destination === "stderr" || (destination === "split" && (level === "warning" || level === "error"))
    ;(toStderr ? stderr : stdout).add(line)
  }
}

/**
 * The logging layer for a config's `log` section:
 * `Effect.provide(program, NodeLog.layer(config.log))`.
 */
export const layer = (
  settings: { readonly format: Log.Format; readonly level: Log.Level },
  options?: {
    readonly destination?: Destination | undefined
    readonly maxValueLength?: number | undefined
    /** Fields every line starts with (a worker process's `worker=2`). */
    readonly annotations?: Readonly<Record<string, unknown>> | undefined
  }
): Layer.Layer<never> =>
  Log.layer({
    format: settings.format,
    level: settings.level,
    sink: sink(options?.destination),
    maxValueLength: options?.maxValueLength,
    annotations: options?.annotations
  })
