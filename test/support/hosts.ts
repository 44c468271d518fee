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
