/**
 * The Node `Env` of the cross-runtime scenarios (test/scenarios): the Node
 * transport, the Node process spawner and `node:fs` for temporary files.
 * The Deno twin is packages/deno-adapter/test/DenoEnv.ts.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import * as NodeProcess from "../../packages/node-adapter/src/NodeProcess.ts"
import * as NodeTransport from "../../packages/node-adapter/src/NodeTransport.ts"
import type { Env } from "../scenarios/Scenario.ts"

export const nodeEnv: Env = {
  runtime: "node",
  transport: (options) => (options === undefined ? NodeTransport.layer : NodeTransport.layerWith(options)),
  spawner: NodeProcess.layer,
  files: {
    tempDir: (prefix) => fs.mkdtemp(path.join(os.tmpdir(), prefix)),
    writeFile: (p, data) => fs.writeFile(p, data),
    readTextFile: (p) => fs.readFile(p, "utf8"),
    readFile: async (p) => new Uint8Array(await fs.readFile(p)),
    exists: (p) => fs.lstat(p).then(() => true, () => false),
    removeDir: (p) => fs.rm(p, { recursive: true, force: true })
  }
}
