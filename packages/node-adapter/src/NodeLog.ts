/**
 * Mailroom's structured logs on Node: a layer that writes every `Effect.log*`
 * call as one logfmt or JSON line (see `@mailroom/protocol/observability/Log`)
 * to standard output, or standard error.
 *
 * Lines are written with `stream.write` (asynchronous for pipes on POSIX,
 * synchronous for files and TTYs, as Node does for `console.log`), so a burst
 * of logs never blocks the event loop on a slow reader; Node keeps the order.
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

/** A sink writing one line per record to the chosen standard stream(s). */
export const sink = (destination: Destination = "stdout"): Log.Sink => (line, level) => {
  const toStderr = destination === "stderr" || (destination === "split" && (level === "warning" || level === "error"))
  ;(toStderr ? process.stderr : process.stdout).write(line + "\n")
}

/**
 * The logging layer for a config's `log` section:
 * `Effect.provide(program, NodeLog.layer(config.log))`.
 */
export const layer = (
  settings: { readonly format: Log.Format; readonly level: Log.Level },
  options?: { readonly destination?: Destination | undefined; readonly maxValueLength?: number | undefined }
): Layer.Layer<never> =>
  Log.layer({
    format: settings.format,
    level: settings.level,
    sink: sink(options?.destination),
    maxValueLength: options?.maxValueLength
  })
