/**
 * The two runtimes that host `mailroom serve`, for tests that run the same
 * scenario against both: the real command started as a child process.
 */
import * as path from "node:path"

const root = new URL("../..", import.meta.url).pathname

export interface Host {
  readonly name: "node" | "deno"
  /** The program and the arguments before `serve ...`. */
  readonly command: string
  readonly args: ReadonlyArray<string>
}

export const nodeHost: Host = {
  name: "node",
  command: path.join(root, "node_modules", ".bin", "node"),
  args: [path.join(root, "packages", "node-adapter", "bin", "mailroom.mjs")]
}

export const denoHost: Host = {
  name: "deno",
  command: path.join(root, "node_modules", ".bin", "deno"),
  args: ["run", "--allow-all", "--quiet", path.join(root, "packages", "deno-adapter", "src", "main.ts")]
}

/** Every host, for `describe.each`. */
export const hosts: ReadonlyArray<Host> = [nodeHost, denoHost]

/** A running `mailroom serve` child process and what it has logged so far. */
export interface Server {
  readonly child: import("node:child_process").ChildProcess
  readonly log: () => string
}

/** Starts `mailroom serve --config FILE` on `host` in `cwd` and waits until every port in `ports` accepts. */
export const startServer = async (host: Host, configFile: string, cwd: string, ports: number | ReadonlyArray<number>): Promise<Server> => {
  const { spawn } = await import("node:child_process")
  const { waitForPort } = await import("./ports.ts")
  let log = ""
  const child = spawn(host.command, [...host.args, "serve", "--config", configFile], { cwd, stdio: ["ignore", "pipe", "pipe"] })
  child.stdout!.on("data", (d) => (log += d))
  child.stderr!.on("data", (d) => (log += d))
  for (const port of typeof ports === "number" ? [ports] : ports) {
    await waitForPort("127.0.0.1", port, 15_000).catch((e) => {
      throw new Error(`${e}\n${log}`)
    })
  }
  return { child, log: () => log }
}

/** Stops the server with `signal` (SIGTERM: graceful) and resolves with its exit code. */
export const stopServer = (s: Server, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> =>
  new Promise((resolve) => {
    if (s.child.exitCode !== null || s.child.signalCode !== null) return resolve(s.child.exitCode)
    s.child.once("exit", (code) => resolve(code))
    s.child.kill(signal)
  })

/** Polls `f` every 50 ms until it gives a value; the error names `what` and appends `log()` when given. */
export const waitFor = async <A>(
  what: string,
  f: () => Promise<A | undefined> | A | undefined,
  options: { readonly timeoutMs?: number; readonly log?: () => string } = {}
): Promise<A> => {
  const until = Date.now() + (options.timeoutMs ?? 20_000)
  for (;;) {
    const v = await f()
    if (v !== undefined) return v
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${options.log ? `\n${options.log()}` : ""}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
