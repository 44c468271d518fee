/**
 * The `mailroom` command line: a small command table, argument parsing with
 * `node:util`'s `parseArgs` (strict: unknown flags are errors), and the
 * commands that need no running server: `check-config`, `--version`,
 * `--help`. `serve` loads and validates the config, then hands it to the
 * `serve` function it is given.
 *
 * Exit codes: 0 success, 1 a bad config or a failure, 2 a usage error (unknown
 * command or flag, missing argument). A config with problems prints every
 * problem, one per line as `FILE:LINE: key.path: expected ..., got ...`, and
 * nothing is started.
 *
 * Everything the commands touch comes in through `Io`, so `run` can be tested
 * in-process; `main.ts` wires the real process.
 *
 * What this module deliberately does not do: start listeners (`serve.ts`
 * does), daemonise or drop privileges (use systemd), or call `process.exit`.
 *
 * @since 0.1.0
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util"
import * as Result from "effect/Result"
import * as Config from "@mailroom/protocol/config/Config"
import * as ConfigValue from "@mailroom/protocol/config/ConfigValue"

/** What the commands may touch. */
export interface Io {
  readonly stdout: (text: string) => void
  readonly stderr: (text: string) => void
  readonly readFile: (path: string) => Promise<string>
  /** The OS host name, used when the config has no `hostname`. */
  readonly hostname: () => string
  readonly version: () => string
  /** Runs the server; resolves when it has shut down. */
  readonly serve: (config: Config.Config) => Promise<void>
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
  readonly run: (args: ReadonlyArray<string>, io: Io) => Promise<number>
}

class UsageError extends Error {}

const HELP = { help: { type: "boolean", short: "h" } } as const

const parse = <const O extends ParseArgsOptionsConfig>(args: ReadonlyArray<string>, options: O) => {
  try {
    return parseArgs({ args: [...args], options: { ...options, ...HELP }, allowPositionals: true, strict: true })
  } catch (e) {
    throw new UsageError((e as Error).message.split(". ")[0]!)
  }
}

const problemLines = (file: string, error: Config.ConfigError): string =>
  error.problems
    .map((p) => `${file}${p.line === undefined ? "" : `:${p.line}`}: ${Config.formatProblem(p)}\n`)
    .join("")

/** Reads, parses and validates a config file; prints problems and returns `undefined` when it is bad. */
const load = async (file: string, io: Io): Promise<Config.Config | undefined> => {
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

const fillHostname = (config: Config.Config, io: Io): Config.Config => {
  if (config.hostname !== undefined) return config
  const name = io.hostname()
  if (ConfigValue.isDomainName(name)) return Config.withHostname(config, name)
  io.stderr(`mailroom: the OS host name ${JSON.stringify(name)} is not a valid domain name; using "localhost" (set hostname in the config)\n`)
  return Config.withHostname(config, "localhost")
}

const serve: Command = {
  name: "serve",
  args: "[--config FILE]",
  summary: "run the edges, queue and relay a config file describes (the embedded default without --config)",
  options: [["-c, --config FILE", "config file: .yaml/.yml (YAML) or .json (JSON)"]],
  run: async (args, io) => {
    const { values, positionals } = parse(args, { config: { type: "string", short: "c" } })
    if (values.help === true) return help(serve, io)
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
    const file = values.config
    const loaded = typeof file === "string" ? await load(file, io) : Config.embeddedDefault
    if (loaded === undefined) {
      io.stderr("mailroom: not starting\n")
      return EXIT_FAILURE
    }
    const config = fillHostname(loaded, io)
    try {
      await io.serve(config)
      return EXIT_OK
    } catch (e) {
      io.stderr(`mailroom: ${e instanceof Error ? e.message : String(e)}\n`)
      return EXIT_FAILURE
    }
  }
}

const checkConfig: Command = {
  name: "check-config",
  args: "FILE",
  summary: "validate a config file: print \"ok\" and a summary, or every problem (exit 1)",
  options: [],
  run: async (args, io) => {
    const { values, positionals } = parse(args, {})
    if (values.help === true) return help(checkConfig, io)
    if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? "missing FILE" : "expected one FILE")
    const config = await load(positionals[0]!, io)
    if (config === undefined) return EXIT_FAILURE
    io.stdout(`ok: ${Config.summary(config)}\n`)
    return EXIT_OK
  }
}

/**
 * The command table. `queue list|show|hold|release|retry|delete|flush` will be
 * one more entry here, dispatching on its first argument.
 */
export const commands: ReadonlyArray<Command> = [serve, checkConfig]

/** The usage text: commands and options. */
export const usage = (): string => {
  const width = Math.max(...commands.map((c) => `${c.name} ${c.args}`.length))
  const lines = [
    "Usage: mailroom <command> [options]",
    "",
    "Commands:",
    ...commands.map((c) => `  ${`${c.name} ${c.args}`.padEnd(width)}  ${c.summary}`),
    "",
    "Options:",
    ...commands.flatMap((c) => c.options.map(([flags, text]) => `  ${flags.padEnd(width)}  ${text} (${c.name})`)),
    `  ${"-h, --help".padEnd(width)}  show this help, or a command's help (mailroom <command> --help)`,
    `  ${"-V, --version".padEnd(width)}  print the version`,
    "",
    "Exit status: 0 ok, 1 bad config or failure, 2 usage error."
  ]
  return lines.join("\n") + "\n"
}

const help = (command: Command, io: Io): number => {
  const lines = [`Usage: mailroom ${command.name} ${command.args}`, "", command.summary]
  if (command.options.length > 0) {
    lines.push("", "Options:", ...command.options.map(([flags, text]) => `  ${flags.padEnd(20)}  ${text}`))
  }
  io.stdout(lines.join("\n") + "\n")
  return EXIT_OK
}

/** Runs the command line `argv` (without the node and script paths) and returns the exit code. */
export const run = async (argv: ReadonlyArray<string>, io: Io): Promise<number> => {
  const [first, ...rest] = argv
  try {
    if (first === "--help" || first === "-h" || first === "help") {
      const command = first === "help" ? commands.find((c) => c.name === rest[0]) : undefined
      if (command !== undefined) return help(command, io)
      if (first === "help" && rest.length > 0) throw new UsageError(`unknown command ${JSON.stringify(rest[0])}`)
      io.stdout(usage())
      return EXIT_OK
    }
    if (first === "--version" || first === "-V") {
      io.stdout(`mailroom ${io.version()}\n`)
      return EXIT_OK
    }
    if (first === undefined) throw new UsageError("missing command")
    const command = commands.find((c) => c.name === first)
    if (command === undefined) {
      throw new UsageError(first.startsWith("-") ? `unknown option ${JSON.stringify(first)}` : `unknown command ${JSON.stringify(first)}`)
    }
    return await command.run(rest, io)
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`mailroom: ${e.message}\n\n${usage()}`)
      return EXIT_USAGE
    }
    throw e
  }
}
