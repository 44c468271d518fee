import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Logger } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as QueueStorage from "../../protocol/src/queue/QueueStorage.ts"
import { fullEnvelope, simpleEnvelope, suite } from "../../../test/conformance/QueueStorageSuite.ts"
import * as DiskStorage from "../src/DiskStorage.ts"
import { bodyFor } from "./DiskStorageCrashWriter.ts"

const base = fs.mkdtempSync(path.join(os.tmpdir(), "mailroom-disk-"))
afterAll(() => fs.rmSync(base, { recursive: true, force: true }))

const suiteDir = path.join(base, "suite")
suite("disk", DiskStorage.layer({ directory: suiteDir }), { reopen: DiskStorage.layer({ directory: suiteDir }), timeout: 60_000 })

/** Runs `f` on a freshly opened storage over `directory`, collecting what it logs. */
const open = async <A, E>(directory: string, f: (s: QueueStorage.Service) => Effect.Effect<A, E>): Promise<{ value: A; logs: Array<string> }> => {
  const logs: Array<string> = []
  const collector = Logger.make((o) => {
    logs.push(`${o.logLevel}: ${Array.isArray(o.message) ? o.message.join(" ") : String(o.message)}`)
  })
  const value = await Effect.runPromise(
    Effect.flatMap(DiskStorage.make({ directory }), f).pipe(Effect.provide(Logger.layer([collector])))
  )
  return { value, logs }
}

const files = (dir: string): Array<string> => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [])
const deadPid = "99999999" // above any pid_max

describe("DiskStorage layout", () => {
  it("keeps raw message bytes and a version 1 JSON record, readable by other tools", async () => {
    const dir = path.join(base, "layout")
    const env = fullEnvelope()
    await open(dir, (s) => s.write(env, { nextAttemptAt: 77 }))
    expect(JSON.parse(fs.readFileSync(path.join(dir, "layout.json"), "utf8"))).toEqual({ format: "mailroom-queue", v: 1 })
    expect(new Uint8Array(fs.readFileSync(path.join(dir, "messages", `${env.id}.eml`)))).toEqual(env.message)
    const record = JSON.parse(fs.readFileSync(path.join(dir, "meta", `${env.id}.json`), "utf8"))
    expect(record.v).toBe(1)
    expect(record.envelope.message).toBeUndefined()
    expect(record.envelope.recipients).toEqual(env.recipients)
    expect(record.meta).toMatchObject({ id: env.id, attempts: 0, nextAttemptAt: 77, size: env.message.length, lease: null })
    expect(files(path.join(dir, "tmp"))).toEqual([])
    expect(files(path.join(dir, "lock"))).toEqual([])
    const mode = fs.statSync(path.join(dir, "meta", `${env.id}.json`)).mode & 0o777
    expect(mode).toBe(0o600)
  })

  it("an id taken by a body or by a record alone is a Conflict; the refused write touches neither and leaves nothing", async () => {
    const dir = path.join(base, "conflict")
    const p = (...xs: Array<string>) => path.join(dir, ...xs)
    const bodyOnly = simpleEnvelope(1)
    const recordOnly = simpleEnvelope(1)
    const { value } = await open(dir, (s) =>
      Effect.gen(function*() {
        yield* s.write(recordOnly, { nextAttemptAt: 0 })
        // a body whose record was never committed, and a record whose body is gone
        fs.writeFileSync(p("messages", `${bodyOnly.id}.eml`), "old body")
        fs.unlinkSync(p("messages", `${recordOnly.id}.eml`))
        const recordText = fs.readFileSync(p("meta", `${recordOnly.id}.json`), "utf8")
        const a = yield* Effect.flip(s.write(bodyOnly, { nextAttemptAt: 0 }))
        const b = yield* Effect.flip(s.write(recordOnly, { nextAttemptAt: 0 }))
        return { reasons: [a.reason, b.reason], recordText }
      }))
    expect(value.reasons).toEqual(["Conflict", "Conflict"])
    expect(fs.readFileSync(p("messages", `${bodyOnly.id}.eml`), "utf8")).toBe("old body")
    expect(files(p("messages"))).toEqual([`${bodyOnly.id}.eml`])
    expect(fs.readFileSync(p("meta", `${recordOnly.id}.json`), "utf8")).toBe(value.recordText)
    expect(files(p("meta"))).toEqual([`${recordOnly.id}.json`])
    expect(files(p("tmp"))).toEqual([])
  })

  it("refuses to open a directory of another layout version", async () => {
    const dir = path.join(base, "v2")
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, "layout.json"), JSON.stringify({ format: "mailroom-queue", v: 2 }))
    const e = await Effect.runPromise(Effect.flip(DiskStorage.make({ directory: dir })))
    expect(e.reason).toBe("Corrupt")
    expect(e.message).toContain("not a version 1 mailroom queue")
  })
})

describe("DiskStorage recovery at open", () => {
  it("removes leftovers, drops unacknowledged bodies, quarantines bad records, and does it once", async () => {
    const dir = path.join(base, "recovery")
    const good = simpleEnvelope(2)
    await open(dir, (s) => s.write(good, { nextAttemptAt: 0 }))
    const p = (...xs: Array<string>) => path.join(dir, ...xs)
    const orphan = simpleEnvelope(1)
    const badJson = simpleEnvelope(1)
    const noBody = simpleEnvelope(1)
    const wrongSize = simpleEnvelope(1)
    const badField = simpleEnvelope(1)
    await open(dir, (s) =>
      Effect.forEach([badJson, noBody, wrongSize, badField], (e) => s.write(e, { nextAttemptAt: 0 })))
    // a crash between the two renames, and writes in progress of a dead process
    fs.writeFileSync(p("messages", `${orphan.id}.eml`), orphan.message)
    fs.writeFileSync(p("tmp", `${orphan.id}.${deadPid}.1.eml`), orphan.message)
    fs.writeFileSync(p("tmp", `${orphan.id}.${deadPid}.2.json`), "{")
    fs.writeFileSync(p("tmp", "garbage"), "x")
    fs.writeFileSync(p("lock", `${good.id}.lock`), deadPid)
    // broken records
    fs.writeFileSync(p("meta", `${badJson.id}.json`), "{\"v\":1,")
    fs.unlinkSync(p("messages", `${noBody.id}.eml`))
    fs.appendFileSync(p("messages", `${wrongSize.id}.eml`), "extra")
    const rec = JSON.parse(fs.readFileSync(p("meta", `${badField.id}.json`), "utf8"))
    rec.meta.attempts = "many"
    fs.writeFileSync(p("meta", `${badField.id}.json`), JSON.stringify(rec))

    const first = await open(dir, (s) => Effect.all([s.list(), s.read(good.id), s.reschedule(good.id, { attempts: 1, nextAttemptAt: 1 })]))
    const [listed, back] = first.value
    expect(listed.map((m) => m.id)).toEqual([good.id])
    expect(back.envelope).toEqual(good)
    expect(files(p("tmp"))).toEqual([])
    expect(files(p("lock"))).toEqual([])
    expect(files(p("messages"))).toEqual([`${good.id}.eml`])
    expect(files(p("meta"))).toEqual([`${good.id}.json`])
    const quarantined = files(p("corrupt")).map((n) => n.replace(/\.\d+\./, "."))
    expect(quarantined.sort()).toEqual(
      [
        `${badJson.id}.json`, `${badJson.id}.eml`,
        `${noBody.id}.json`,
        `${wrongSize.id}.json`, `${wrongSize.id}.eml`,
        `${badField.id}.json`, `${badField.id}.eml`
      ].sort()
    )
    const warnings = first.logs.filter((l) => l.startsWith("Warn"))
    expect(warnings.length).toBe(4)
    expect(warnings.find((w) => w.includes(badJson.id))).toContain("not valid JSON")
    expect(warnings.find((w) => w.includes(noBody.id))).toContain("is missing")
    expect(warnings.find((w) => w.includes(wrongSize.id))).toContain(`has ${wrongSize.message.length + 5} bytes`)
    expect(warnings.find((w) => w.includes(badField.id))).toContain("meta.attempts")

    const second = await open(dir, (s) => s.list())
    expect(second.value.map((m) => m.id)).toEqual([good.id])
    expect(second.logs.filter((l) => l.startsWith("Warn"))).toEqual([])
  })

  it("keeps tmp files of a live writer, and breaks a lock of a dead process", async () => {
    const dir = path.join(base, "live")
    const env = simpleEnvelope(1)
    await open(dir, (s) => s.write(env, { nextAttemptAt: 0 }))
    const live = path.join(dir, "tmp", `${env.id}x.${process.ppid}.1.json`)
    fs.writeFileSync(live, "{}")
    const { value } = await open(dir, (s) =>
      Effect.gen(function*() {
        fs.writeFileSync(path.join(dir, "lock", `${env.id}.lock`), deadPid)
        return yield* s.setHeld(env.id, true)
      }))
    expect(value.held).toBe(true)
    expect(files(path.join(dir, "tmp"))).toEqual([path.basename(live)])
    fs.unlinkSync(live)
  })

  it("list quarantines a bad record that appears later instead of failing", async () => {
    const dir = path.join(base, "later")
    const a = simpleEnvelope(1)
    const b = simpleEnvelope(1)
    const { value, logs } = await open(dir, (s) =>
      Effect.gen(function*() {
        yield* s.write(a, { nextAttemptAt: 0 })
        yield* s.write(b, { nextAttemptAt: 0 })
        fs.writeFileSync(path.join(dir, "meta", `${b.id}.json`), "[]")
        const listed = yield* s.list()
        const reason = yield* Effect.match(s.read(b.id), { onFailure: (e) => e.reason, onSuccess: () => "read" })
        return { ids: listed.map((m) => m.id), reason }
      }))
    expect(value).toEqual({ ids: [a.id], reason: "NotFound" })
    expect(logs.some((l) => l.startsWith("Warn") && l.includes(b.id))).toBe(true)
    expect(files(path.join(dir, "corrupt")).length).toBe(2)
  })
})

describe("DiskStorage survives kill -9", () => {
  const writer = fileURLToPath(new URL("./DiskStorageCrashWriter.ts", import.meta.url))

  const runAndKill = (dir: string, afterReadyMs: number): Promise<{ written: Array<string>; updated: Array<string>; stderr: string }> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [writer, dir], { stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      let stderr = ""
      let timer: ReturnType<typeof setTimeout> | undefined
      const watchdog = setTimeout(() => child.kill("SIGKILL"), 20_000)
      child.stdout.setEncoding("utf8")
      child.stdout.on("data", (chunk: string) => {
        out += chunk
        if (timer === undefined && out.includes("ready\n")) timer = setTimeout(() => child.kill("SIGKILL"), afterReadyMs)
      })
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      child.on("error", reject)
      child.on("close", (code, signal) => {
        clearTimeout(watchdog)
        if (timer !== undefined) clearTimeout(timer)
        if (signal !== "SIGKILL") return reject(new Error(`writer exited with ${code}: ${stderr}`))
        const lines = out.split("\n")
        const pick = (tag: string) => lines.filter((l) => l.startsWith(`${tag} `)).map((l) => l.slice(2))
        resolve({ written: pick("W"), updated: pick("R"), stderr })
      })
    })

  it("every acknowledged write is readable and byte-exact after each of 15 kills; nothing left over", async () => {
    const dir = path.join(base, "crash")
    const written: Array<string> = []
    const updated = new Set<string>()
    let cycles = 0
    for (let cycle = 0; cycle < 15; cycle++) {
      const run = await runAndKill(dir, 30 + Math.floor(Math.random() * 350))
      expect(run.stderr).toBe("")
      written.push(...run.written)
      for (const id of run.updated) updated.add(id)
      const { value, logs } = await open(dir, (s) =>
        Effect.gen(function*() {
          const listed = new Set((yield* s.list()).map((m) => m.id))
          const problems: Array<string> = []
          for (const id of written) {
            if (!listed.has(id)) problems.push(`${id} not listed`)
            const r = yield* Effect.result(s.read(id))
            if (r._tag === "Failure") {
              problems.push(`${id}: ${r.failure.message}`)
              continue
            }
            const expected = bodyFor(id)
            const got = r.success.envelope.message
            if (got.length !== expected.length || !got.every((b, i) => b === expected[i])) problems.push(`${id}: body differs`)
            if (updated.has(id) && r.success.meta.attempts !== 1) problems.push(`${id}: update lost`)
          }
          return problems
        }))
      expect(value).toEqual([])
      expect(logs.filter((l) => l.startsWith("Warn"))).toEqual([])
      expect(files(path.join(dir, "tmp"))).toEqual([])
      expect(files(path.join(dir, "lock"))).toEqual([])
      expect(files(path.join(dir, "corrupt"))).toEqual([])
      // no body without a record survives the open
      expect(files(path.join(dir, "messages")).map((n) => n.replace(".eml", ""))).toEqual(
        files(path.join(dir, "meta")).map((n) => n.replace(".json", ""))
      )
      cycles++
    }
    expect(cycles).toBe(15)
    expect(written.length).toBeGreaterThan(15)
  }, 180_000)
})

describe("DiskStorage when the disk is full", () => {
  const mnt = path.join(base, "small")
  let mounted: "tmpfs" | "loop" | undefined
  let mountError = ""
  const image = path.join(base, "small.img")

  beforeAll(() => {
    fs.mkdirSync(mnt, { recursive: true })
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], { stdio: "pipe" })
      mounted = "tmpfs"
      return
    } catch (e) {
      mountError = `mount -t tmpfs: ${String((e as { stderr?: Buffer }).stderr ?? e)}`
    }
    try {
      fs.writeFileSync(image, new Uint8Array(0))
      fs.truncateSync(image, 4 * 1024 * 1024)
      execFileSync("mkfs.ext4", ["-q", "-F", image], { stdio: "pipe" })
      execFileSync("mount", ["-o", "loop", image, mnt], { stdio: "pipe" })
      mounted = "loop"
    } catch (e) {
      mountError += `; loop device: ${String((e as { stderr?: Buffer }).stderr ?? e)}`
    }
  })

  afterAll(() => {
    if (mounted !== undefined) execFileSync("umount", [mnt], { stdio: "pipe" })
  })

  it("fails a write that does not fit with reason Full, leaves nothing behind, and works again once space is freed", async () => {
    if (mounted === undefined) {
      throw new Error(`the disk-full test needs a small file system and could not mount one (run as root): ${mountError}`)
    }
    const dir = path.join(mnt, "queue")
    const leftovers = () =>
      ["tmp", "messages", "meta", "lock"].flatMap((d) => files(path.join(dir, d)).map((n) => `${d}/${n}`))
    const kept = simpleEnvelope(2, new Uint8Array(10_000).fill(0xe9))
    const huge = simpleEnvelope(1, new Uint8Array(3 * 1024 * 1024).fill(0x41))
    const small = simpleEnvelope(1, new Uint8Array(2_000).fill(0xff))
    const filler = path.join(mnt, "filler")

    const { value } = await open(dir, (s) =>
      Effect.gen(function*() {
        yield* s.write(kept, { nextAttemptAt: 0 })
        const before = leftovers()
        const tooBig = yield* Effect.flip(s.write(huge, { nextAttemptAt: 0 }))
        expect(tooBig.reason).toBe("Full")
        expect(QueueStorage.toReply(tooBig).code).toBe(452)
        expect(leftovers()).toEqual(before)

        // fill the rest of the file system
        try {
          fs.writeFileSync(filler, new Uint8Array(8 * 1024 * 1024))
        } catch (e) {
          expect((e as { code?: string }).code).toBe("ENOSPC")
        }
        const full = yield* Effect.flip(s.write(small, { nextAttemptAt: 0 }))
        expect(full.reason).toBe("Full")
        expect(leftovers()).toEqual(before)
        const update = yield* Effect.flip(s.reschedule(kept.id, { attempts: 3, nextAttemptAt: 9 }))
        expect(update.reason).toBe("Full")
        expect((yield* s.meta(kept.id)).attempts).toBe(0)
        expect(leftovers()).toEqual(before)

        fs.unlinkSync(filler)
        yield* s.write(small, { nextAttemptAt: 0 })
        yield* s.reschedule(kept.id, { attempts: 3, nextAttemptAt: 9 })
        return yield* Effect.all([s.read(small.id), s.read(kept.id)])
      }))
    expect(value[0].envelope).toEqual(small)
    expect(value[1].envelope).toEqual(kept)
    expect(value[1].meta.attempts).toBe(3)
    // and after a reopen
    const again = await open(dir, (s) => Effect.all([s.list(), s.read(small.id)]))
    expect(again.value[0].map((m) => m.id).sort()).toEqual([kept.id, small.id].sort())
    expect(again.value[1].envelope.message).toEqual(small.message)
    expect(files(path.join(dir, "corrupt"))).toEqual([])
  })

  it("can remove a message while the disk is full", async () => {
    if (mounted === undefined) throw new Error(`no small file system: ${mountError}`)
    const dir = path.join(mnt, "queue2")
    const env = simpleEnvelope(1, new Uint8Array(4_000))
    const filler = path.join(mnt, "filler2")
    await open(dir, (s) =>
      Effect.gen(function*() {
        yield* s.write(env, { nextAttemptAt: 0 })
        try {
          fs.writeFileSync(filler, new Uint8Array(8 * 1024 * 1024))
        } catch {
          // ENOSPC expected
        }
        yield* s.remove(env.id)
        fs.unlinkSync(filler)
      }))
    expect(files(path.join(dir, "messages"))).toEqual([])
    expect(files(path.join(dir, "meta"))).toEqual([])
  })
})
