/**
 * The `mailroom` process: wires `Cli.run` to the real process (argv, standard
 * streams, files, the OS host name, this package's version) and sets the exit
 * code. `serve.ts` is imported only when `serve` runs, so `--help`,
 * `--version` and `check-config` load nothing of the server.
 *
 * @since 0.1.0
 */
import { readFileSync } from "node:fs"
import { readFile } from "node:fs/promises"
import * as os from "node:os"
import * as Cli from "./Cli.ts"

const io: Cli.Io = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
  readFile: (path) => readFile(path, "utf8"),
  hostname: () => os.hostname(),
  version: () =>
    (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version,
  serve: async (config) => {
    const { serve } = await import("../serve.ts")
    await serve(config)
  }
}

Cli.run(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code
  },
  (e: unknown) => {
    process.stderr.write(`mailroom: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    process.exitCode = 1
  }
)
