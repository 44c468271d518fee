/**
 * The building blocks of a `mailroom` command: the `Io` a command may touch,
 * the `Command` table entry, exit codes, usage errors, strict argument
 * parsing (`node:util`'s `parseArgs`: unknown flags are errors), a command's
 * `--help` text, and loading a config file with every problem printed.
 *
 * `Cli.ts` holds the command table and `run`; the commands themselves live in
 * `Cli.ts` (`serve`, `check-config`, `hash-password`) and `QueueCli.ts`
 * (`queue ...`). Both import this module, never each other's table.
 *
 * What this module deliberately does not do: touch the process (`main.ts`
 * wires `Io` to it), or know any particular command.
 *
 * @since 0.1.0
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util"
import type * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Config from "@mailroom/protocol/config/Config"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
import type * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"

/**
 * An open queue storage, as the queue commands see it. `main.ts` opens the
 * disk storage; a test may hand in any `QueueStorage.Service`.
 */
export interface QueueHandle {
  /** Where the queue is, as messages name it (the absolute directory of a disk queue). */
  readonly location: string
  readonly storage: QueueStorage.Service
  /**
   * The envelope of `id` with empty message bytes (addresses, client facts,
   * DSN parameters), without reading the message body; `NotFound` when
   * there is no such message.
   */
  readonly envelope: (id: string) => Effect.Effect<Envelope.Envelope, QueueStorage.StorageError>
}

/** What the commands may touch. */
export interface Io {
  readonly stdout: (text: string) => void
  readonly stderr: (text: string) => void
  readonly readFile: (path: string) => Promise<string>
  /** The OS host name, used when the config has no `hostname`. */
  readonly hostname: () => string
  readonly version: () => string
  /**
   * Runs the server, or with `workers` > 1 its supervisor and workers (which
   * re-read `configFile`); resolves when it has shut down, with the exit
   * code when it is not 0. Rejects when it cannot start.
   */
  readonly serve: (config: Config.Config, configFile: string | undefined) => Promise<number | void>
  /**
   * Opens the queue storage a config names (`queue` commands). Never creates
   * one: a disk queue that does not exist fails with `NotFound` (operation
   * `open`) and a detail that says so. Not called for memory storage.
   */
  readonly openQueue?: (settings: Config.StorageSettings) => Effect.Effect<QueueHandle, QueueStorage.StorageError>
  /** Writes bytes to standard output unchanged (`queue show` prints a message as stored). */
  readonly stdoutBytes?: (bytes: Uint8Array) => void
  /**
   * The first line of standard input without its line end, `undefined` when
   * it is empty (`hash-password`); `prompt` goes to standard error when
   * standard input is a terminal.
   */
  readonly readStdinLine?: (prompt: string) => Promise<string | undefined>
  /** `n` cryptographically random bytes (salts, lease owners). */
  readonly randomBytes?: (n: number) => Uint8Array
  /** The wall clock, ms since the epoch (ages and due times of queued messages). */
  readonly now?: () => number
}

/** Exit codes. */
export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

/** One entry of the command table. */
export interface Command {
  readonly name: string
  /** Arguments after the name, for the usage text: `[--config FILE]`. */
  readonly args: string
  readonly summary: string
  readonly options: ReadonlyArray<readonly [flags: string, description: string]>
  /** More lines for the command's `--help`, after the options. */
  readonly details?: ReadonlyArray<string>
  readonly run: (args: ReadonlyArray<string>, io: Io) => Promise<number>
}

/** A usage error: `Cli.run` prints it with the usage text and exits with 2. */
export class UsageError extends Error {}

const HELP = { help: { type: "boolean", short: "h" } } as const

/** Parses `args` strictly against `options` (plus `-h, --help`); a bad flag is a `UsageError`. */
export const parse = <const O extends ParseArgsOptionsConfig>(args: ReadonlyArray<string>, options: O) => {
  try {
    return parseArgs({ args: [...args], options: { ...options, ...HELP }, allowPositionals: true, strict: true })
  } catch (e) {
    throw new UsageError((e as Error).message.split(". ")[0]!)
  }
}

/** The `--help` text of a command. */
export const helpText = (command: Command): string => {
  const lines = [`Usage: mailroom ${command.name} ${command.args}`, "", command.summary]
  if (command.options.length > 0) {
    lines.push("", "Options:", ...command.options.map(([flags, text]) => `  ${flags.padEnd(20)}  ${text}`))
  }
  if (command.details !== undefined && command.details.length > 0) lines.push("", ...command.details)
  return lines.join("\n") + "\n"
}

/** Prints a command's `--help` and returns `EXIT_OK`. */
export const help = (command: Command, io: Io): number => {
  io.stdout(helpText(command))
  return EXIT_OK
}

const problemLines = (file: string, error: Config.ConfigError): string =>
  error.problems
    .map((p) => `${file}${p.line === undefined ? "" : `:${p.line}`}: ${Config.formatProblem(p)}\n`)
    .join("")

/** Reads, parses and validates a config file; prints problems and returns `undefined` when it is bad. */
export const load = async (file: string, io: Io): Promise<Config.Config | undefined> => {
  let text: string
  try {
    text = await io.readFile(file)
  } catch (e) {
    io.stderr(`mailroom: cannot read ${file}: ${(e as Error).message}\n`)
    return undefined
  }
  // Files that are neither .json nor .yaml/.yml are read as YAML (a superset of JSON).
  const result = Config.parse(text, Config.formatOf(file) ?? "yaml")
  if (Result.isFailure(result)) {
    const n = result.failure.problems.length
    io.stderr(problemLines(file, result.failure))
    io.stderr(`mailroom: ${file}: ${n} problem${n === 1 ? "" : "s"}\n`)
    return undefined
  }
  return result.success
}

/** The config of `--config FILE`, or the embedded default without it; `undefined` (problems printed) when the file is bad. */
export const loadOrDefault = (file: string | boolean | undefined, io: Io): Promise<Config.Config | undefined> =>
  typeof file === "string" ? load(file, io) : Promise.resolve(Config.embeddedDefault)

/** An optional `Io` member a command needs; its absence is a failure of the host program, not of the user. */
export const need = <A>(value: A | undefined, what: string): A => {
  if (value === undefined) throw new Error(`this program does not provide ${what}`)
  return value
}
