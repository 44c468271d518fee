import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Logger } from "effect"
import type { Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as DiskLayout from "../../protocol/src/queue/DiskLayout.ts"
import * as Journal from "../../protocol/src/queue/Journal.ts"
import * as QueueStorage from "../../protocol/src/queue/QueueStorage.ts"
import { simpleEnvelope, suite } from "../../../test/conformance/QueueStorageSuite.ts"
import * as DiskStorage from "../src/DiskStorage.ts"
import * as JournalStorage from "../src/JournalStorage.ts"
import { bodyFor } from "./JournalCrashWriter.ts"

const base = fs.mkdtempSync(path.join(os.tmpdir(), "mailroom-journal-"))
afterAll(() => fs.rmSync(base, { recursive: true, force: true }))

const suiteDir = path.join(base, "suite")
suite("journal", JournalStorage.layer({ directory: suiteDir }), {
  reopen: JournalStorage.layer({ directory: suiteDir }),
  timeout: 60_000,
  shared: false
})

/** Runs `f` on the journal in `directory` (through `adapter` when given), collecting what it logs; closes it. */
const open = async <A, E>(
  directory: string,
  f: (j: Journal.Journal) => Effect.Effect<A, E, Scope.Scope>,
  options: Journal.Options & { readonly adapter?: Journal.Adapter } = {}
): Promise<{ value: A; logs: Array<string> }> => {
  const logs: Array<string> = []
  const collector = Logger.make((o) => {
    logs.push(`${o.logLevel}: ${Array.isArray(o.message) ? o.message.join(" ") : String(o.message)}`)
  })
  const journal = options.adapter === undefined
    ? JournalStorage.open({ directory, ...options })
    : Journal.make(options.adapter, options)
  const value = await Effect.runPromise(Effect.scoped(Effect.flatMap(journal, f)).pipe(Effect.provide(Logger.layer([collector]))))
  return { value, logs }
}

const files = (dir: string): Array<string> => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [])
const warnings = (logs: ReadonlyArray<string>) => logs.filter((l) => l.startsWith("Warn") || l.startsWith("Error"))
const deadPid = "99999999" // above any pid_max

describe("JournalStorage layout and ownership", () => {
  it("keeps layout.json, segments and owner.lock (the pid, while open)", async () => {
    const dir = path.join(base, "layout")
    const env = simpleEnvelope(2)
    const { value: lockWhileOpen } = await open(dir, (j) =>
      Effect.gen(function*() {
        yield* j.storage.write(env, { nextAttemptAt: 77 })
        return fs.readFileSync(path.join(dir, "owner.lock"), "utf8")
      }))
    expect(lockWhileOpen).toBe(`${process.pid}\n`)
    expect(JSON.parse(fs.readFileSync(path.join(dir, "layout.json"), "utf8"))).toEqual({ format: "mailroom-journal", v: 1 })
    expect(files(dir)).toEqual(["corrupt", "journal", "layout.json"]) // the lock is gone after close
    expect(files(path.join(dir, "journal"))).toEqual(["0000000000000001.seg"])
    const seg = fs.readFileSync(path.join(dir, "journal", "0000000000000001.seg"))
    // the raw message bytes are in the segment, unchanged
    expect(seg.includes(Buffer.from(env.message))).toBe(true)
    expect(fs.statSync(path.join(dir, "journal", "0000000000000001.seg")).mode & 0o777).toBe(0o600)
  })

  it("refuses a disk queue directory, naming its layout.json", async () => {
    const dir = path.join(base, "disk")
    await Effect.runPromise(Effect.asVoid(DiskStorage.make({ directory: dir })))
    const e = await Effect.runPromise(Effect.flip(Effect.scoped(JournalStorage.make({ directory: dir }))))
    expect(e.reason).toBe("Invalid")
    expect(e.detail).toBe(`${path.join(dir, "layout.json")}: not a version 1 mailroom journal (it is a disk queue directory, format mailroom-queue)`)
    expect(files(path.join(dir, "journal"))).toEqual([])
  })

  it("refuses a second open in this process, and takes over the lock of a dead pid or of our own pid", async () => {
    const dir = path.join(base, "owner")
    await open(dir, () =>
      Effect.gen(function*() {
        const e = yield* Effect.flip(Effect.scoped(JournalStorage.make({ directory: dir })))
        expect(e.reason).toBe("Io")
        expect(e.detail).toBe(`${path.resolve(dir)} is already open in this process: a journal has one owner`)
      }))
    for (const stale of [deadPid, String(process.pid), "", "garbage"]) {
      fs.writeFileSync(path.join(dir, "owner.lock"), stale)
      const { value } = await open(dir, () => Effect.sync(() => fs.readFileSync(path.join(dir, "owner.lock"), "utf8")))
      expect(value).toBe(`${process.pid}\n`)
      expect(fs.existsSync(path.join(dir, "owner.lock"))).toBe(false)
    }
  })
})

describe("JournalStorage segments", () => {
  it("rotates, deletes dead segments, compacts the oldest, and every message survives", async () => {
    const dir = path.join(base, "rotate")
    const options = { segmentBytes: 20_000, maxSegments: 2 }
    const envs = Array.from({ length: 12 }, () => simpleEnvelope(1, new Uint8Array(5_000).fill(0x41)))
    const seg = (n: number) => `${String(n).padStart(16, "0")}.seg`
    const { value } = await open(dir, (j) =>
      Effect.gen(function*() {
        for (const e of envs) yield* j.storage.write(e, { nextAttemptAt: 0 })
        const rotated = files(path.join(dir, "journal"))
        // keep one message of the first segment, and the last three
        for (const e of envs.slice(1, 9)) yield* j.storage.remove(e.id)
        yield* j.storage.reschedule(envs[0]!.id, { attempts: 2, nextAttemptAt: 3 })
        yield* j.maintain
        return { rotated, after: files(path.join(dir, "journal")), stats: j.stats() }
      }), options)
    // ~5.2 KB a message: 4 per segment, then the next one starts
    expect(value.rotated).toEqual([seg(1), seg(2), seg(3)])
    expect(value.after).not.toContain(seg(1))
    expect(value.after).not.toContain(seg(2))
    expect(value.stats.moved).toBe(1)
    const { value: back, logs } = await open(dir, (j) =>
      Effect.all([j.storage.list(), Effect.forEach([envs[0]!, ...envs.slice(9)], (e) => j.storage.read(e.id))]), options)
    expect(warnings(logs)).toEqual([])
    expect(back[0].map((m) => m.id)).toEqual([envs[0]!, ...envs.slice(9)].map((e) => e.id).sort())
    expect(back[1].map((s) => s.envelope)).toEqual([envs[0]!, ...envs.slice(9)])
    expect(back[1][0]!.meta.attempts).toBe(2)
  })

  it("fails a batch whose fsync fails with Io, changes nothing, never appends to that segment again", async () => {
    const dir = path.join(base, "fsync")
    const real = JournalStorage.adapter(dir)
    let failSync = false
    const adapter: Journal.Adapter = {
      ...real,
      create: (name) =>
        Effect.map(real.create(name), (h) => ({
          ...h,
          sync: Effect.suspend(() => {
            if (!failSync) return h.sync
            failSync = false
            return Effect.fail(DiskLayout.toError("write", undefined, Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }), "EIO"))
          })
        }))
    }
    const keep = simpleEnvelope(1)
    const lost = simpleEnvelope(1)
    const { value } = await open(dir, (j) =>
      Effect.gen(function*() {
        yield* j.storage.write(keep, { nextAttemptAt: 0 })
        failSync = true
        const [a, b] = yield* Effect.all([
          Effect.flip(j.storage.write(lost, { nextAttemptAt: 0 })),
          Effect.flip(j.storage.setHeld(keep.id, true))
        ], { concurrency: "unbounded" })
        expect([a.reason, a.operation, b.reason, b.operation]).toEqual(["Io", "write", "Io", "setHeld"])
        expect(QueueStorage.toReply(a).code).toBe(451)
        expect(yield* Effect.flip(j.storage.read(lost.id))).toMatchObject({ reason: "NotFound" })
        expect((yield* j.storage.meta(keep.id)).held).toBe(false)
        const size = fs.statSync(path.join(dir, "journal", "0000000000000001.seg")).size
        yield* j.storage.reschedule(keep.id, { attempts: 1, nextAttemptAt: 1 })
        expect(fs.statSync(path.join(dir, "journal", "0000000000000001.seg")).size).toBe(size)
        return files(path.join(dir, "journal"))
      }), { adapter })
    expect(value).toEqual(["0000000000000001.seg", "0000000000000002.seg"])
    // the failed batch was cut off segment 1, and nothing of it comes back
    const { value: back, logs } = await open(dir, (j) => j.storage.list())
    expect(warnings(logs)).toEqual([])
    expect(back.map((m) => [m.id, m.held, m.attempts])).toEqual([[keep.id, false, 1]])
  })
})

describe("JournalStorage survives kill -9", () => {
  const writer = fileURLToPath(new URL("./JournalCrashWriter.ts", import.meta.url))

  const runAndKill = (
    dir: string,
    afterReadyMs: number,
    segmentBytes: number,
    whileRunning?: (pid: number) => Promise<void>
  ): Promise<{ written: Array<string>; updated: Array<string>; stderr: string }> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [writer, dir, String(segmentBytes)], { stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      let stderr = ""
      let timer: ReturnType<typeof setTimeout> | undefined
      const watchdog = setTimeout(() => child.kill("SIGKILL"), 20_000)
      child.stdout.setEncoding("utf8")
      child.stdout.on("data", (chunk: string) => {
        out += chunk
        if (timer === undefined && out.includes("ready\n")) {
          timer = setTimeout(() => child.kill("SIGKILL"), afterReadyMs)
          if (whileRunning !== undefined) whileRunning(child.pid!).catch(reject)
        }
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

  it("refuses to open a journal that a running process owns, naming its pid", async () => {
    const dir = path.join(base, "owned")
    let refused: QueueStorage.StorageError | undefined
    await runAndKill(dir, 300, 64 * 1024 * 1024, async (pid) => {
      refused = await Effect.runPromise(Effect.flip(Effect.scoped(JournalStorage.make({ directory: dir }))))
      expect(refused.detail).toContain(`is held by pid ${pid}, which is running: a journal has one owner process`)
    })
    expect(refused?.reason).toBe("Io")
    // once it is dead, its lock is taken over
    const { value } = await open(dir, (j) => j.storage.list())
    expect(value.length).toBeGreaterThan(0)
  })

  it("every acknowledged write and update is there, byte-exact, after each of 15 kills, across rotations and compaction", async () => {
    const dir = path.join(base, "crash")
    const written: Array<string> = []
    const updated = new Set<string>()
    let cycles = 0
    let segmentsSeen = 0
    for (let cycle = 0; cycle < 15; cycle++) {
      const run = await runAndKill(dir, 30 + Math.floor(Math.random() * 350), 256 * 1024)
      expect(run.stderr).toBe("")
      written.push(...run.written)
      for (const id of run.updated) updated.add(id)
      segmentsSeen = Math.max(segmentsSeen, ...files(path.join(dir, "journal")).map((n) => Number(n.slice(0, 16))))
      const { value, logs } = await open(dir, (j) =>
        Effect.gen(function*() {
          const listed = new Set((yield* j.storage.list()).map((m) => m.id))
          const problems: Array<string> = []
          for (const id of written) {
            if (!listed.has(id)) problems.push(`${id} not listed`)
            const r = yield* Effect.result(j.storage.read(id))
            if (r._tag === "Failure") {
              problems.push(`${id}: ${r.failure.message}`)
              continue
            }
            const expected = bodyFor(id)
            const got = r.success.envelope.message
            if (got.length !== expected.length || !got.every((b, i) => b === expected[i])) problems.push(`${id}: body differs`)
            if (updated.has(id) && r.success.meta.attempts !== 1) problems.push(`${id}: update lost`)
          }
          // keep the queue from growing without bound: remove half of what is there
          for (const id of [...listed].filter((_, i) => i % 2 === 0)) {
            yield* j.storage.remove(id)
            written.splice(written.indexOf(id), 1)
          }
          return problems
        }))
      expect(value).toEqual([])
      // a batch cut short by the kill is a torn tail; nothing else is worth a warning
      expect(warnings(logs).filter((l) => !l.includes("ends with a frame cut short"))).toEqual([])
      expect(files(path.join(dir, "corrupt"))).toEqual([])
      expect(fs.existsSync(path.join(dir, "owner.lock"))).toBe(false)
      cycles++
    }
    expect(cycles).toBe(15)
    expect(written.length).toBeGreaterThan(15)
    expect(segmentsSeen).toBeGreaterThan(4) // rotations happened
    expect(files(path.join(dir, "journal")).length).toBeLessThan(segmentsSeen) // and segments were deleted
  }, 180_000)
})

describe("JournalStorage when the disk is full", () => {
  const mnt = path.join(base, "small")
  let mounted = false
  let mountError = ""

  beforeAll(() => {
    fs.mkdirSync(mnt, { recursive: true })
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], { stdio: "pipe" })
      mounted = true
    } catch (e) {
      mountError = `mount -t tmpfs: ${String((e as { stderr?: Buffer }).stderr ?? e)}`
    }
  })

  afterAll(() => {
    if (mounted) execFileSync("umount", [mnt], { stdio: "pipe" })
  })

  it("fails what does not fit with Full, changes nothing, and works again once space is freed", async () => {
    if (!mounted) throw new Error(`the disk-full test needs a small file system and could not mount one (run as root): ${mountError}`)
    const dir = path.join(mnt, "queue")
    const kept = simpleEnvelope(2, new Uint8Array(10_000).fill(0xe9))
    const huge = simpleEnvelope(1, new Uint8Array(3 * 1024 * 1024).fill(0x41))
    const small = simpleEnvelope(1, new Uint8Array(2_000).fill(0xff))
    const filler = path.join(mnt, "filler")
    const { value } = await open(dir, (j) =>
      Effect.gen(function*() {
        const s = j.storage
        yield* s.write(kept, { nextAttemptAt: 0 })
        const tooBig = yield* Effect.flip(s.write(huge, { nextAttemptAt: 0 }))
        expect(tooBig.reason).toBe("Full")
        expect(QueueStorage.toReply(tooBig).code).toBe(452)
        expect(yield* Effect.flip(s.read(huge.id))).toMatchObject({ reason: "NotFound" })
        try {
          fs.writeFileSync(filler, new Uint8Array(8 * 1024 * 1024))
        } catch (e) {
          expect((e as { code?: string }).code).toBe("ENOSPC")
        }
        expect((yield* Effect.flip(s.write(small, { nextAttemptAt: 0 }))).reason).toBe("Full")
        expect((yield* Effect.flip(s.reschedule(kept.id, { attempts: 3, nextAttemptAt: 9 }))).reason).toBe("Full")
        expect((yield* s.meta(kept.id)).attempts).toBe(0)
        fs.unlinkSync(filler)
        yield* s.write(small, { nextAttemptAt: 0 })
        yield* s.reschedule(kept.id, { attempts: 3, nextAttemptAt: 9 })
        yield* j.maintain
        return yield* Effect.all([s.read(small.id), s.read(kept.id)])
      }))
    expect(value[0].envelope).toEqual(small)
    expect(value[1].envelope).toEqual(kept)
    expect(value[1].meta.attempts).toBe(3)
    const again = await open(dir, (j) => Effect.all([j.storage.list(), j.storage.read(small.id)]))
    expect(again.value[0].map((m) => [m.id, m.attempts]).sort()).toEqual([[kept.id, 3], [small.id, 0]].sort())
    expect(again.value[1].envelope.message).toEqual(small.message)
    expect(files(path.join(dir, "corrupt"))).toEqual([])
    // the batches cut short by ENOSPC are torn tails, nothing else
    expect(warnings(again.logs).filter((l) => !l.includes("ends with"))).toEqual([])
  })
})
