/**
 * The Deno `Env` of the cross-runtime scenarios (test/scenarios): the Deno
 * transport, the Deno process spawner and Deno's file APIs. The Node twin
 * is test/support/nodeEnv.ts.
 */
import type { Env } from "../../../test/scenarios/Scenario.ts"
import * as DenoProcess from "../src/DenoProcess.ts"
import * as DenoTransport from "../src/DenoTransport.ts"

export const denoEnv: Env = {
  runtime: "deno",
  transport: (options) => (options === undefined ? DenoTransport.layer : DenoTransport.layerWith(options)),
  spawner: DenoProcess.layer,
  files: {
    tempDir: (prefix) => Deno.makeTempDir({ prefix }),
    writeFile: (p, data) => (typeof data === "string" ? Deno.writeTextFile(p, data) : Deno.writeFile(p, data)),
    readTextFile: (p) => Deno.readTextFile(p),
    readFile: (p) => Deno.readFile(p),
    exists: (p) => Deno.lstat(p).then(() => true, () => false),
    removeDir: (p) => Deno.remove(p, { recursive: true }).catch((e) => (e instanceof Deno.errors.NotFound ? undefined : Promise.reject(e)))
  }
}
