/**
 * `serve.ts` on Node: the Node platform of `Compose.start` refuses what Node
 * cannot run (Deno KV, Redis) before anything listens, with a `ServeError`
 * naming `queue.storage.type`, both through `start` and through the real
 * `mailroom serve` command (exit 1, the message on stderr). The working
 * server is test/interop/Serve*.test.ts.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Config from "@mailroom/protocol/config/Config"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Result from "effect/Result"
import { describe, expect, it } from "vitest"
import * as Serve from "../src/serve.ts"

const root = new URL("../../..", import.meta.url).pathname
const bin = path.join(root, "packages/node-adapter/bin/mailroom.mjs")

const config = (yaml: string): Config.Config => {
  const r = Config.parse(yaml, "yaml")
  if (Result.isFailure(r)) throw new Error(r.failure.message)
  return r.success
}

const startError = async (yaml: string): Promise<unknown> => {
  const exit = await Effect.runPromiseExit(Effect.scoped(Serve.start(config(yaml))))
  if (Exit.isSuccess(exit)) throw new Error("expected start to fail")
  const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
  return failure !== undefined && failure._tag === "Fail" ? failure.error : exit.cause
}

describe("serve.ts on Node", () => {
  it("refuses Deno KV storage with a ServeError naming queue.storage.type", async () => {
    const e = await startError("smtp: []\nqueue: { storage: { type: kv, path: ./var/queue.kv } }\nrelay: { type: blackhole }\n")
    expect(e).toBeInstanceOf(Serve.ServeError)
    expect((e as Error).message).toBe("queue.storage.type: kv (Deno KV) storage runs on Deno only; on Node use disk or memory")
  })

  it("refuses Redis storage the same way", async () => {
    const e = await startError("smtp: []\nqueue: { storage: { type: redis, url: redis://127.0.0.1:6379/0 } }\nrelay: { type: blackhole }\n")
    expect(e).toBeInstanceOf(Serve.ServeError)
    expect((e as Error).message).toBe("queue.storage.type: redis storage is not available yet in this version; use disk or memory")
  })

  it("tlsConfig reads the certificate files and names the key of one that cannot be read", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailroom-serve-"))
    try {
      fs.writeFileSync(path.join(dir, "c.pem"), "CERT")
      fs.writeFileSync(path.join(dir, "k.pem"), "KEY")
      const tls = config(`smtp: [{ tls: { cert: ${dir}/c.pem, key: ${dir}/k.pem } }]\n`).smtp[0]!.tls!
      expect(Serve.tlsConfig(tls, "smtp[0].tls")).toEqual({ default: { cert: "CERT", key: "KEY" }, sni: [], minVersion: "TLSv1.2" })
      const missing = config(`smtp: [{ tls: { cert: ${dir}/none.pem, key: ${dir}/k.pem } }]\n`).smtp[0]!.tls!
      expect(() => Serve.tlsConfig(missing, "smtp[0].tls")).toThrow(new RegExp(`^smtp\\[0\\]\\.tls\\.cert: cannot read ${dir}/none\\.pem: ENOENT`))
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("mailroom serve with kv storage exits 1 before listening, naming the key", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailroom-serve-kv-"))
    try {
      fs.writeFileSync(path.join(dir, "kv.yaml"), "queue:\n  storage: { type: kv }\n")
      const ran = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [bin, "serve", "--config", "kv.yaml"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })
        let stderr = ""
        child.stderr.on("data", (d) => (stderr += d))
        child.on("exit", (code) => resolve({ code, stderr }))
      })
      expect(ran.code).toBe(1)
      expect(ran.stderr).toContain("mailroom: queue.storage.type: kv (Deno KV) storage runs on Deno only; on Node use disk or memory\n")
      // nothing was created for the queue
      expect(fs.existsSync(path.join(dir, "var"))).toBe(false)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
