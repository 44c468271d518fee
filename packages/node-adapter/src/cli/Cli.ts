/**
 * The `mailroom` command line: a small command table, argument parsing with
 * `node:util`'s `parseArgs` (strict: unknown flags are errors, see
 * `Command.ts`), and the commands that need no running server:
 * `check-config`, `hash-password`, `--version`, `--help`, and the `queue`
 * commands of `QueueCli.ts` (which work on the storage of a running or
 * stopped server). `serve` loads and validates the config, then hands it to
 * the `serve` function it is given.
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
import * as Credentials from "@mailroom/protocol/auth/Credentials"
import * as Config from "@mailroom/protocol/config/Config"
import * as ConfigValue from "@mailroom/protocol/config/ConfigValue"
import { type Command, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, help, type Io, load, loadOrDefault, need, parse, UsageError } from "./Command.ts"
import * as QueueCli from "./QueueCli.ts"

export { type Command, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type Io, type QueueHandle } from "./Command.ts"

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
    const loaded = await loadOrDefault(values.config, io)
    if (loaded === undefined) {
      io.stderr("mailroom: not starting\n")
      return EXIT_FAILURE
    }
    const config = fillHostname(loaded, io)
    try {
      return (await io.serve(config, values.config)) ?? EXIT_OK
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

/** The iteration count `hash-password` uses unless told otherwise. */
export const DEFAULT_ITERATIONS = 100_000

const hashPassword: Command = {
  name: "hash-password",
  args: "[--pbkdf2]",
  summary: "hash a password read from standard input for a users file",
  options: [
    ["--pbkdf2", "pbkdf2-sha256$... instead of Dovecot's {SCRAM-SHA-256} format (see below)"],
    ["--iterations N", `PBKDF2 iterations, ${Credentials.minIterations} to ${Credentials.maxIterations} (default ${DEFAULT_ITERATIONS})`]
  ],
  details: [
    "Reads the first line of standard input and prints the value for a users file",
    "line name:<value>. Both formats work for AUTH PLAIN, LOGIN and SCRAM-SHA-256",
    "(CRAM-MD5 needs {PLAIN}). The default {SCRAM-SHA-256} value keeps only SCRAM's",
    "StoredKey and ServerKey; a pbkdf2-sha256 value holds SaltedPassword, so whoever",
    "reads the users file could log in with SCRAM-SHA-256. The server runs PBKDF2 once per PLAIN or LOGIN check,",
    `on its event loop (about 0.1 s of CPU at ${DEFAULT_ITERATIONS} iterations). The salt is 16 random bytes.`,
    "",
    "Example: printf '%s\\n' 'correct horse' | mailroom hash-password"
  ],
  run: async (args, io) => {
    const { values, positionals } = parse(args, { pbkdf2: { type: "boolean" }, iterations: { type: "string" } })
    if (values.help === true) return help(hashPassword, io)
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
    let iterations = DEFAULT_ITERATIONS
    if (values.iterations !== undefined) {
      iterations = /^[1-9][0-9]*$/.test(values.iterations) ? Number(values.iterations) : NaN
      if (!(iterations >= Credentials.minIterations && iterations <= Credentials.maxIterations)) {
        throw new UsageError(
          `--iterations: expected a whole number from ${Credentials.minIterations} to ${Credentials.maxIterations}, got ${JSON.stringify(values.iterations)}`
        )
      }
    }
    const password = await need(io.readStdinLine, "standard input")("Password (shown as you type): ")
    if (password === undefined || password === "") {
      io.stderr("mailroom: no password on standard input\n")
      return EXIT_FAILURE
    }
    if (/[\u0000-\u001f\u007f]/.test(password)) {
      io.stderr("mailroom: the password has control characters, which SASL clients cannot send\n")
      return EXIT_FAILURE
    }
    const salt = need(io.randomBytes, "random bytes")(16)
    const stored = values.pbkdf2 === true
      ? Credentials.hashPassword(password, salt, iterations)
      : Credentials.formatStored({ _tag: "ScramSha256", credentials: Credentials.scramCredentials(password, salt, iterations) })
    io.stdout(stored + "\n")
    return EXIT_OK
  }
}

/** The command table. */
export const commands: ReadonlyArray<Command> = [serve, checkConfig, QueueCli.queue, hashPassword]

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
