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
import * as JournalFrame from "../../protocol/src/queue/JournalFrame.ts"
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

/** The good frames of segment bytes: where each ends, and whether only zeros follow the last. */
const framesOf = (bytes: Uint8Array) => {
  const ends = new JournalFrame.FrameDecoder(JournalFrame.crc32).push(bytes).map((f) => f.offset + JournalFrame.HEADER + 1 + f.payload.length)
  const end = ends[ends.length - 1] ?? 0
  return { ends, end, zerosAfter: bytes.subarray(end).every((b) => b === 0) }
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
    whileRunning?: (pid: number) => Promise<void>,
    args: ReadonlyArray<string> = []
  ): Promise<{ written: Array<string>; updated: Array<string>; stderr: string }> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [writer, dir, String(segmentBytes), ...args], { stdio: ["ignore", "pipe", "pipe"] })
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
      // a batch cut short by the kill is a torn tail (followed by zeros when it was written into the prefill, so a bad
      // length or checksum rather than a short frame); nothing else is worth a warning
      expect(warnings(logs).filter((l) => !/ends with a (frame cut short|bad frame length|bad checksum) at byte/.test(l))).toEqual([])
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

describe("JournalStorage after kill -9 with its zero prefill in place", () => {
  const writer = fileURLToPath(new URL("./JournalCrashWriter.ts", import.meta.url))

  it("replays every acknowledged message, byte-exact, with no torn-tail warning; the zeros count for nothing", async () => {
    const dir = path.join(base, "crash-idle")
    const segmentBytes = 70_000
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, [writer, dir, String(segmentBytes), "idle", "40"], { stdio: ["ignore", "pipe", "pipe"] })
      let text = ""
      let stderr = ""
      const watchdog = setTimeout(() => child.kill("SIGKILL"), 20_000)
      child.stdout.setEncoding("utf8")
      child.stdout.on("data", (chunk: string) => {
        text += chunk
        if (text.includes("ready\n")) child.kill("SIGKILL")
      })
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      child.on("error", reject)
      child.on("close", (_code, signal) => {
        clearTimeout(watchdog)
        if (signal !== "SIGKILL" || !text.includes("ready\n")) return reject(new Error(`writer ended by itself: ${stderr}`))
        resolve(text)
      })
    })
    const written = out.split("\n").filter((l) => l.startsWith("W ")).map((l) => l.slice(2))
    expect(written.length).toBe(40)
    const segs = files(path.join(dir, "journal"))
    // ~2.3 KB a message: it rotated; a rotated segment was closed (its zeros cut off), the last one was not
    expect(segs.length).toBeGreaterThanOrEqual(2)
    const onDisk = segs.map((n) => framesOf(fs.readFileSync(path.join(dir, "journal", n))))
    const sizes = segs.map((n) => fs.statSync(path.join(dir, "journal", n)).size)
    expect(onDisk.reduce((k, f) => k + f.ends.length, 0)).toBe(40)
    expect(onDisk.slice(0, -1).map((f) => f.end)).toEqual(sizes.slice(0, -1))
    const last = onDisk[onDisk.length - 1]!
    // the last segment ends with the zeros of its prefill (capped at segmentBytes), unless its last batch filled it
    expect(last.zerosAfter).toBe(true)
    expect(sizes[sizes.length - 1]).toBe(last.end >= segmentBytes ? last.end : segmentBytes)
    const { value, logs } = await open(dir, (j) =>
      Effect.gen(function*() {
        const stored = yield* Effect.forEach(written, (id) => j.storage.read(id))
        return { stored, count: (yield* j.storage.list()).length, stats: j.stats() }
      }), { segmentBytes })
    expect(warnings(logs)).toEqual([])
    expect(value.count).toBe(40)
    for (const [i, s] of value.stored.entries()) expect(s.envelope.message).toEqual(bodyFor(written[i]!).subarray(0, 2_000))
    expect(files(path.join(dir, "corrupt"))).toEqual([])
    expect(value.stats.segments).toBe(segs.length)
  }, 30_000)
})

describe("JournalStorage write-through and zero prefill", () => {
  const segFile = (dir: string, n = 1) => path.join(dir, "journal", `${String(n).padStart(16, "0")}.seg`)
  /** The ends of the good frames of a segment file. */
  const ends = (file: string) => framesOf(fs.readFileSync(file)).ends

  it("zerosAfter: a small batch crossing the zeroed end extends it 256 KiB past its end, never past the limit; a large one never", () => {
    const K = 1024
    expect(JournalStorage.zerosAfter(0, 5_300, 0, Infinity)).toBe(256 * K)
    expect(JournalStorage.zerosAfter(0, 5_300, 5_300, Infinity)).toBe(0) // fits exactly
    expect(JournalStorage.zerosAfter(100_000, 5_300, 200_000, Infinity)).toBe(0) // inside the region
    expect(JournalStorage.zerosAfter(198_000, 5_300, 200_000, Infinity)).toBe(256 * K) // crosses its end
    expect(JournalStorage.zerosAfter(0, 64 * K - 1, 0, Infinity)).toBe(256 * K)
    expect(JournalStorage.zerosAfter(0, 64 * K, 0, Infinity)).toBe(0)
    expect(JournalStorage.zerosAfter(0, 5_300, 0, 100_000)).toBe(100_000 - 5_300)
    expect(JournalStorage.zerosAfter(99_000, 5_300, 99_500, 100_000)).toBe(0) // the batch ends past the limit
  })

  it("writes zeros ahead of small batches, overwrites them with the next ones, and cuts them off at close", async () => {
    const dir = path.join(base, "prefill")
    const envs = Array.from({ length: 11 }, () => simpleEnvelope(1, new Uint8Array(5_000).fill(0x61)))
    const { value } = await open(dir, (j) =>
      Effect.gen(function*() {
        yield* j.storage.write(envs[0]!, { nextAttemptAt: 0 })
        const first = framesOf(fs.readFileSync(segFile(dir)))
        const firstSize = fs.statSync(segFile(dir)).size
        for (const e of envs.slice(1)) yield* j.storage.write(e, { nextAttemptAt: 0 })
        return { first, firstSize, after: framesOf(fs.readFileSync(segFile(dir))), afterSize: fs.statSync(segFile(dir)).size, stats: j.stats() }
      }))
    expect(value.first.ends.length).toBe(1)
    expect(value.first.end).toBeGreaterThan(5_000)
    expect(value.firstSize).toBe(value.first.end + 256 * 1024)
    expect(value.first.zerosAfter).toBe(true)
    // ten more 5 KB batches fit in the zeros: the file does not grow
    expect(value.after.ends.length).toBe(11)
    expect(value.afterSize).toBe(value.firstSize)
    expect(value.after.zerosAfter).toBe(true)
    expect([value.stats.batches, value.stats.syncs]).toEqual([11, 11])
    // closed: the file ends with its last frame
    expect(fs.statSync(segFile(dir)).size).toBe(value.after.end)
    const { value: back, logs } = await open(dir, (j) => Effect.forEach(envs, (e) => j.storage.read(e.id)))
    expect(warnings(logs)).toEqual([])
    expect(back.map((s) => s.envelope)).toEqual(envs)
  })

  it("writes a batch of 64 KiB or more without zeros, and prefills no further than segmentBytes", async () => {
    const dir = path.join(base, "prefill-large")
    const big = simpleEnvelope(1, new Uint8Array(100_000).fill(0x62))
    const small = simpleEnvelope(1, new Uint8Array(1_000).fill(0x63))
    const { value } = await open(dir, (j) =>
      Effect.gen(function*() {
        yield* j.storage.write(big, { nextAttemptAt: 0 })
        const afterBig = { size: fs.statSync(segFile(dir)).size, ends: ends(segFile(dir)) }
        yield* j.storage.write(small, { nextAttemptAt: 0 })
        return { afterBig, afterSmall: { size: fs.statSync(segFile(dir)).size, ends: ends(segFile(dir)) } }
      }))
    expect(value.afterBig.ends.length).toBe(1)
    expect(value.afterBig.size).toBe(value.afterBig.ends[0])
    expect(value.afterSmall.ends.length).toBe(2)
    expect(value.afterSmall.size).toBe(value.afterSmall.ends[1]! + 256 * 1024)

    const capped = path.join(base, "prefill-capped")
    const envs = Array.from({ length: 3 }, () => simpleEnvelope(1, new Uint8Array(1_000).fill(0x64)))
    const { value: sizes } = await open(capped, (j) =>
      Effect.forEach(envs, (e) => Effect.andThen(j.storage.write(e, { nextAttemptAt: 0 }), Effect.sync(() => fs.statSync(segFile(capped)).size))),
      { segmentBytes: 20_000 })
    expect(sizes).toEqual([20_000, 20_000, 20_000])
    const closed = ends(segFile(capped))
    expect(closed.length).toBe(3)
    expect(fs.statSync(segFile(capped)).size).toBe(closed[2])
  })

  it("a copy taken while open (a crash) replays with no warning; a torn batch written into the zeros is a torn tail", async () => {
    const dir = path.join(base, "prefill-copy")
    const copy = path.join(base, "prefill-copy-crashed")
    const torn = path.join(base, "prefill-copy-torn")
    const envs = Array.from({ length: 5 }, () => simpleEnvelope(1, new Uint8Array(3_000).fill(0x65)))
    await open(dir, (j) =>
      Effect.gen(function*() {
        for (const e of envs) yield* j.storage.write(e, { nextAttemptAt: 0 })
        // what a crash (or kill -9) now leaves on the disk
        for (const d of [copy, torn]) {
          fs.mkdirSync(path.join(d, "journal"), { recursive: true })
          fs.copyFileSync(path.join(dir, "layout.json"), path.join(d, "layout.json"))
          fs.copyFileSync(segFile(dir), segFile(d))
        }
      }))
    const crashed = framesOf(fs.readFileSync(segFile(copy)))
    const end = crashed.end
    expect(crashed.ends.length).toBe(5)
    expect(crashed.zerosAfter).toBe(true)
    const size = fs.statSync(segFile(copy)).size
    expect(size).toBe(crashed.ends[0]! + 256 * 1024)
    const { value, logs } = await open(copy, (j) =>
      Effect.gen(function*() {
        const stored = yield* Effect.forEach(envs, (e) => j.storage.read(e.id))
        yield* j.storage.write(simpleEnvelope(1), { nextAttemptAt: 0 })
        return { stored, stats: j.stats() }
      }))
    expect(warnings(logs)).toEqual([])
    expect(value.stored.map((s) => s.envelope)).toEqual(envs)
    expect(files(path.join(copy, "journal"))).toEqual(["0000000000000001.seg", "0000000000000002.seg"])
    // never appended to after the reopen: the crashed segment keeps its zeros
    expect(fs.statSync(segFile(copy)).size).toBe(size)

    // a batch the crash cut short inside the prefilled region: its first 40 bytes, then the zeros
    const fd = fs.openSync(segFile(torn), "r+")
    const head = new Uint8Array(40).fill(0x7f)
    head.set([0, 0, 0x10, 0], 0) // a frame of 4096 bytes
    fs.writeSync(fd, head, 0, head.length, end)
    fs.closeSync(fd)
    const { value: back, logs: tornLogs } = await open(torn, (j) => Effect.forEach(envs, (e) => j.storage.read(e.id)))
    expect(back.map((s) => s.envelope)).toEqual(envs)
    expect(warnings(tornLogs)).toEqual([
      `Warn: JournalStorage: ${path.join(torn, "journal", "0000000000000001.seg")} ends with a bad checksum at byte ${end} (a batch a crash cut short, never acknowledged); replay of this segment stops there`
    ])
  })
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
