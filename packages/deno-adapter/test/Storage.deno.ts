/**
 * Deno: the QueueStorage conformance scenarios against `DenoDisk` and
 * `DenoKvStorage`, plus what is specific to each: DenoDisk's layout is the
 * one `@mailroom/node`'s DiskStorage reads (checked with a real Node
 * process both ways), DenoDisk survives `kill -9` of a Deno writer, and
 * Deno KV keeps large bodies in parts and cleans up unfinished writes.
 *
 * Run by `deno test --allow-all test/deno/` (via test/deno/storage.test.js).
 */
import { Effect } from "effect"
import * as Assert from "../../../test/scenarios/Assert.ts"
import { fullEnvelope, queueStorageScenarios, simpleEnvelope } from "../../../test/scenarios/QueueStorageScenarios.ts"
import * as DenoDisk from "../src/DenoDisk.ts"
import * as DenoKvStorage from "../src/DenoKvStorage.ts"
import { register } from "./DenoScenarios.ts"

const base = await Deno.makeTempDir({ prefix: "mailroom-deno-storage-" })
globalThis.addEventListener("unload", () => Deno.removeSync(base, { recursive: true }))

const diskDir = `${base}/disk`
register(queueStorageScenarios("Deno disk", DenoDisk.layer({ directory: diskDir }), { reopen: DenoDisk.layer({ directory: diskDir }), timeout: 60_000 }))

const kvPath = `${base}/queue.kv`
register(queueStorageScenarios("Deno KV", DenoKvStorage.layer({ path: kvPath }), { reopen: DenoKvStorage.layer({ path: kvPath }), timeout: 60_000 }))

const root = new URL("../../../", import.meta.url).pathname
const nodeBin = `${root}node_modules/.bin/node`

/** Runs a Node script (type-stripped) with arguments; returns stdout, throws on a non-zero exit. */
const node = async (script: string, args: ReadonlyArray<string>): Promise<string> => {
  const out = await new Deno.Command(nodeBin, { args: [script, ...args], cwd: root, stdout: "piped", stderr: "piped" }).output()
  const text = new TextDecoder().decode(out.stdout)
  if (!out.success) throw new Error(`node ${script} exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`)
  return text
}

const interopScript = `${root}packages/deno-adapter/test/NodeDiskInterop.ts`

Deno.test({
  name: "DenoDisk and @mailroom/node's DiskStorage read each other's queue directories",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = `${base}/interop`
    const env = fullEnvelope()
    // Deno writes, Node reads and updates
    await Effect.runPromise(Effect.flatMap(DenoDisk.make({ directory: dir }), (s) =>
      Effect.andThen(s.write(env, { nextAttemptAt: 77 }), s.reschedule(env.id, { attempts: 2, nextAttemptAt: 99 }))))
    const seen = JSON.parse(await node(interopScript, ["read-and-hold", dir, env.id]))
    Assert.equal(seen.message, Array.from(env.message))
    Assert.matches(seen.meta, { id: env.id, attempts: 2, nextAttemptAt: 99, held: false })
    Assert.equal(seen.recipients, env.recipients)
    // Node's update is visible to Deno
    const back = await Effect.runPromise(Effect.flatMap(DenoDisk.make({ directory: dir }), (s) => s.read(env.id)))
    Assert.equal(back.envelope, env)
    Assert.equal(back.meta.held, true)
    // Node writes, Deno reads
    const id = (await node(interopScript, ["write", dir])).trim()
    const written = await Effect.runPromise(Effect.flatMap(DenoDisk.make({ directory: dir }), (s) => s.read(id)))
    Assert.equal(new TextDecoder().decode(written.envelope.message), "Subject: from node\r\n\r\ncaf\u00e9\r\n")
    Assert.equal(written.envelope.recipients, ["a@example.com", "b@example.com"])
    Assert.equal((await Effect.runPromise(Effect.flatMap(DenoDisk.make({ directory: dir }), (s) => s.list()))).length, 2)
  }
})

Deno.test({
  name: "DenoDisk: every acknowledged write survives kill -9 of a Deno writer (8 kills)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = `${base}/crash`
    const writer = new URL("./DenoDiskCrashWriter.ts", import.meta.url).pathname
    const { bodyFor } = await import("./DenoDiskCrashWriter.ts")
    const written: Array<string> = []
    const updated = new Set<string>()
    for (let cycle = 0; cycle < 8; cycle++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--no-check", writer, dir],
        cwd: root,
        stdout: "piped",
        stderr: "piped"
      }).spawn()
      let out = ""
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader()
      const afterReady = 40 + Math.floor(Math.random() * 300)
      let killAt: number | undefined
      for (;;) {
        const deadline = killAt
        const r = await (deadline === undefined
          ? reader.read()
          : Promise.race([reader.read(), new Promise<undefined>((res) => setTimeout(() => res(undefined), Math.max(0, deadline - Date.now())))]))
        if (r === undefined) break
        if (r.done) break
        out += r.value
        if (killAt === undefined && out.includes("ready\n")) killAt = Date.now() + afterReady
        if (killAt !== undefined && Date.now() >= killAt) break
      }
      child.kill("SIGKILL")
      const status = await child.status
      reader.releaseLock()
      await child.stdout.cancel().catch(() => undefined)
      const stderr = new TextDecoder().decode(new Uint8Array(await new Response(child.stderr).arrayBuffer()))
      Assert.equal(status.signal, "SIGKILL", `writer ended by itself: ${stderr}`)
      const lines = out.split("\n")
      // a line cut by the kill is not a complete acknowledgement
      const complete = out.endsWith("\n") ? lines : lines.slice(0, -1)
      for (const l of complete) {
        if (l.startsWith("W ")) written.push(l.slice(2))
        if (l.startsWith("R ")) updated.add(l.slice(2))
      }
      const problems = await Effect.runPromise(Effect.flatMap(DenoDisk.make({ directory: dir }), (s) =>
        Effect.gen(function*() {
          const listed = new Set((yield* s.list()).map((m) => m.id))
          const found: Array<string> = []
          for (const id of written) {
            if (!listed.has(id)) found.push(`${id} not listed`)
            const r = yield* Effect.result(s.read(id))
            if (r._tag === "Failure") {
              found.push(`${id}: ${r.failure.message}`)
              continue
            }
            const expected = bodyFor(id)
            const got = r.success.envelope.message
            if (got.length !== expected.length || !got.every((b, i) => b === expected[i])) found.push(`${id}: body differs`)
            if (updated.has(id) && r.success.meta.attempts !== 1) found.push(`${id}: update lost`)
          }
          return found
        })))
      Assert.equal(problems, [])
      const names = async (d: string) => {
        const out: Array<string> = []
        for await (const e of Deno.readDir(`${dir}/${d}`)) out.push(e.name)
        return out.sort()
      }
      Assert.equal(await names("tmp"), [])
      Assert.equal(await names("lock"), [])
      Assert.equal(await names("corrupt"), [])
      Assert.equal((await names("messages")).map((n) => n.replace(".eml", "")), (await names("meta")).map((n) => n.replace(".json", "")))
    }
    Assert.ok(written.length > 8, `only ${written.length} writes were acknowledged`)
  }
})

Deno.test({
  name: "Deno KV: bodies and records beyond 64 KiB are kept in parts; unfinished writes are cleaned up at open",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const path = `${base}/parts.kv`
    const big = new Uint8Array(5 * DenoKvStorage.PART_BYTES + 123)
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff
    const env = simpleEnvelope(2, big)
    // a record over 64 KiB: many recipients with long replies
    const many = simpleEnvelope(400)
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const s = yield* DenoKvStorage.make({ path })
      yield* s.write(env, { nextAttemptAt: 0 })
      yield* s.write(many, { nextAttemptAt: 0 })
      yield* s.recordResults(many.id, many.recipients.map((_, index) => ({ index, status: "failed" as const, reply: `550 5.1.1 ${"x".repeat(300)} ${index}` })))
      const back = yield* s.read(many.id)
      Assert.equal(back.meta.recipients.length, 400)
      Assert.equal(back.meta.recipients[399]!.reply, `550 5.1.1 ${"x".repeat(300)} 399`)
    })))
    const kv = await Deno.openKv(path)
    try {
      const parts = []
      for await (const e of kv.list({ prefix: ["mailroom", "queue", "body", env.id] })) parts.push(e)
      Assert.equal(parts.length, 6)
      const records = []
      for await (const e of kv.list({ prefix: ["mailroom", "queue", "record", many.id] })) records.push(e)
      Assert.ok(records.length >= 2, `the big record is in parts (${records.length})`)
      // an unfinished write of a dead process, two hours old
      const old = (Date.now() - 7_200_000).toString(36)
      await kv.set(["mailroom", "queue", "body", "orphan1", `${old}-abc`, 0], new Uint8Array([1, 2, 3]))
      // and a fresh one, maybe of a live process: kept
      await kv.set(["mailroom", "queue", "body", "orphan2", `${Date.now().toString(36)}-abc`, 0], new Uint8Array([1]))
    } finally {
      kv.close()
    }
    const read = await Effect.runPromise(Effect.scoped(Effect.flatMap(DenoKvStorage.make({ path }), (s) =>
      Effect.gen(function*() {
        const r = yield* s.read(env.id)
        yield* s.remove(many.id)
        return r
      }))))
    Assert.bytesEqual(read.envelope.message, big)
    const kv2 = await Deno.openKv(path)
    try {
      const left: Array<Deno.KvKey> = []
      for await (const e of kv2.list({ prefix: ["mailroom", "queue"] })) left.push(e.key)
      const ids = new Set(left.map((k) => String(k[3])))
      Assert.ok(!ids.has("orphan1"), "the old orphan was removed")
      Assert.ok(ids.has("orphan2"), "the fresh one was kept")
      Assert.ok(!ids.has(many.id), "a removed message leaves nothing")
    } finally {
      kv2.close()
    }
  }
})
