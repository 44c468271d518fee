/**
 * Deno: the journal `QueueStorage` (`DenoJournal`). The shared conformance
 * scenarios (with `reopen`, single owner: `shared: false`), once with the
 * default segments and once with tiny ones so that every scenario crosses
 * rotations and compaction; what is specific to the Deno adapter (ownership
 * between processes and runtimes, a torn tail, a body larger than a write
 * run, group commit, ENOSPC on a full tmpfs mapped to `Full`); the journal
 * written by `@mailroom/node`'s JournalStorage read by DenoJournal and the
 * other way round (a real Node process); survival of `kill -9` of a Deno
 * writer; and the Deno host:
 * `mailroom serve` with `queue.storage.type: journal` and the `queue`
 * commands, refused while the server owns the journal.
 *
 * Run by `deno test --allow-all test/deno/` (via test/deno/storage.test.js).
 */
import { Effect, Exit, Logger, Scope } from "effect"
import type * as Journal from "@mailroom/protocol/queue/Journal"
import * as JournalFrame from "@mailroom/protocol/queue/JournalFrame"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import * as Assert from "../../../test/scenarios/Assert.ts"
import { fullEnvelope, queueStorageScenarios, simpleEnvelope } from "../../../test/scenarios/QueueStorageScenarios.ts"
import * as DenoDisk from "../src/DenoDisk.ts"
import * as DenoJournal from "../src/DenoJournal.ts"
import { freePort, swaks, waitFor, waitForListener } from "./DenoServeSupport.ts"
import { register } from "./DenoScenarios.ts"

const base = await Deno.makeTempDir({ prefix: "mailroom-deno-journal-" })
globalThis.addEventListener("unload", () => Deno.removeSync(base, { recursive: true }))

const root = new URL("../../../", import.meta.url).pathname
const nodeBin = `${root}node_modules/.bin/node`
const interopScript = `${root}packages/deno-adapter/test/NodeJournalInterop.ts`
const main = `${root}packages/deno-adapter/src/main.ts`
const decoder = new TextDecoder()

// --- conformance -----------------------------------------------------------------------

const dir = `${base}/suite`
register(queueStorageScenarios("Deno journal", DenoJournal.layer({ directory: dir }), {
  reopen: DenoJournal.layer({ directory: dir }),
  timeout: 60_000,
  shared: false
}))

const small = { directory: `${base}/small`, segmentBytes: 4096, maxSegments: 2 }
register(queueStorageScenarios("Deno journal, 4 KiB segments", DenoJournal.layer(small), {
  reopen: DenoJournal.layer(small),
  timeout: 60_000,
  shared: false
}))

// --- helpers ---------------------------------------------------------------------------

const test = (name: string, fn: () => Promise<void>) => Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn })

/** Runs `f` with the journal in `options.directory` open, and closes it. */
const withJournal = <A, E>(options: DenoJournal.Options, f: (j: Journal.Journal) => Effect.Effect<A, E>): Promise<A> =>
  Effect.runPromise(Effect.scoped(Effect.flatMap(DenoJournal.open(options), f)))

/** Like `withJournal`, and what the journal logged at `Warn` or above. */
const withJournalLogged = async <A, E>(options: DenoJournal.Options, f: (j: Journal.Journal) => Effect.Effect<A, E>) => {
  const warnings: Array<string> = []
  const collector = Logger.make((o) => {
    if (o.logLevel === "Warn" || o.logLevel === "Error") warnings.push(`${o.logLevel}: ${Array.isArray(o.message) ? o.message.join(" ") : String(o.message)}`)
  })
  const value = await Effect.runPromise(Effect.scoped(Effect.flatMap(DenoJournal.open(options), f)).pipe(Effect.provide(Logger.layer([collector]))))
  return { value, warnings }
}

/** The good frames of a segment file: where each ends, whether only zeros follow the last, and the file's size. */
const framesOf = async (file: string) => {
  const bytes = await Deno.readFile(file)
  const ends = new JournalFrame.FrameDecoder(JournalFrame.crc32).push(bytes).map((f) => f.offset + JournalFrame.HEADER + 1 + f.payload.length)
  const end = ends[ends.length - 1] ?? 0
  return { ends, end, size: bytes.length, zerosAfter: bytes.subarray(end).every((b) => b === 0) }
}

const seg1 = (directory: string) => `${directory}/journal/0000000000000001.seg`

/** Copies what a crash would leave of the journal in `from` (layout and segments, no lock) to `to`. */
const crashCopy = async (from: string, to: string) => {
  await Deno.mkdir(`${to}/journal`, { recursive: true })
  await Deno.copyFile(`${from}/layout.json`, `${to}/layout.json`)
  for (const n of await names(`${from}/journal`)) await Deno.copyFile(`${from}/journal/${n}`, `${to}/journal/${n}`)
}

/** The failure of opening the journal, or `undefined` when it opened. */
const openFailure = (directory: string): Promise<QueueStorage.StorageError | undefined> =>
  Effect.runPromise(Effect.scoped(Effect.match(DenoJournal.make({ directory }), { onFailure: (e) => e, onSuccess: () => undefined })))

/** Runs a Node script (type-stripped); returns its exit code, stdout and stderr. */
const node = async (args: ReadonlyArray<string>) => {
  const out = await new Deno.Command(nodeBin, { args: [interopScript, ...args], cwd: root, stdout: "piped", stderr: "piped" }).output()
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) }
}

const names = async (d: string): Promise<Array<string>> => {
  const out: Array<string> = []
  for await (const e of Deno.readDir(d)) out.push(e.name)
  return out.sort()
}

const exists = (p: string) => Deno.lstat(p).then(() => true, () => false)

/** A pid that is certainly not running: one of a process that has exited. */
const deadPid = async (): Promise<number> => {
  const child = new Deno.Command("true", { stdout: "null", stderr: "null" }).spawn()
  await child.status
  return child.pid
}

// --- the adapter -----------------------------------------------------------------------

test("DenoJournal: coalesce keeps every byte in order, in runs of at most 1 MiB; a larger chunk stays alone", async () => {
  const chunk = (n: number, v: number) => new Uint8Array(n).fill(v)
  const chunks = [chunk(10, 1), chunk(0, 9), chunk(600_000, 2), chunk(600_000, 3), chunk(2_000_000, 4), chunk(5, 5)]
  const runs = DenoJournal.coalesce(chunks)
  Assert.equal(runs.map((r) => r.length), [600_010, 600_000, 2_000_000, 5])
  Assert.ok(runs[2] === chunks[4], "the large chunk is not copied")
  const joined = (xs: ReadonlyArray<Uint8Array>) => {
    const out = new Uint8Array(xs.reduce((n, x) => n + x.length, 0))
    let at = 0
    for (const x of xs) (out.set(x, at), at += x.length)
    return out
  }
  Assert.bytesEqual(joined(runs), joined(chunks))
  Assert.equal(DenoJournal.coalesce([]), [])
})

test("DenoJournal: the layout on disk; a 3 MiB body and 20 concurrent writes round-trip, group-committed", async () => {
  const directory = `${base}/layout`
  const big = new Uint8Array(3 * 1024 * 1024 + 17)
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 11)) & 0xff
  const bigEnv = simpleEnvelope(2, big)
  const many = Array.from({ length: 20 }, () => simpleEnvelope(1))
  const syncs = await withJournal({ directory }, (j) =>
    Effect.gen(function*() {
      Assert.equal(yield* Effect.promise(() => Deno.readTextFile(`${directory}/owner.lock`)), `${Deno.pid}\n`)
      yield* j.storage.write(bigEnv, { nextAttemptAt: 0 })
      const before = j.stats().syncs
      yield* Effect.forEach(many, (e) => j.storage.write(e, { nextAttemptAt: 0 }), { concurrency: "unbounded", discard: true })
      return j.stats().syncs - before
    }))
  Assert.atMost(syncs, 10, `20 concurrent writes took ${syncs} fsyncs`)
  Assert.equal(await Deno.readTextFile(`${directory}/layout.json`), '{"format":"mailroom-journal","v":1}\n')
  Assert.equal(await names(directory), ["corrupt", "journal", "layout.json"])
  Assert.equal(await names(`${directory}/journal`), ["0000000000000001.seg"])
  Assert.equal(((await Deno.stat(`${directory}/journal/0000000000000001.seg`)).mode ?? 0) & 0o777, 0o600)
  const back = await withJournal({ directory }, (j) =>
    Effect.gen(function*() {
      const b = yield* j.storage.read(bigEnv.id)
      const rest = yield* Effect.forEach(many, (e) => j.storage.read(e.id), { concurrency: 8 })
      return { b, rest, count: (yield* j.storage.list()).length }
    }))
  Assert.bytesEqual(back.b.envelope.message, big)
  Assert.equal(back.b.envelope, bigEnv)
  Assert.equal(back.rest.map((r) => r.envelope.id), many.map((e) => e.id))
  Assert.equal(back.count, 21)
})

test("DenoJournal: zerosAfter — a small batch crossing the zeroed end extends it 256 KiB past its end, never past the limit; a large one never", () => {
  const K = 1024
  Assert.equal(DenoJournal.zerosAfter(0, 5_300, 0, Infinity), 256 * K)
  Assert.equal(DenoJournal.zerosAfter(0, 5_300, 5_300, Infinity), 0)
  Assert.equal(DenoJournal.zerosAfter(198_000, 5_300, 200_000, Infinity), 256 * K)
  Assert.equal(DenoJournal.zerosAfter(0, 64 * K - 1, 0, Infinity), 256 * K)
  Assert.equal(DenoJournal.zerosAfter(0, 64 * K, 0, Infinity), 0)
  Assert.equal(DenoJournal.zerosAfter(0, 5_300, 0, 100_000), 100_000 - 5_300)
  Assert.equal(DenoJournal.zerosAfter(99_000, 5_300, 99_500, 100_000), 0)
  return Promise.resolve()
})

test("DenoJournal: zero prefill — zeros ahead of small batches, overwritten by the next ones, none after a large batch, capped at segmentBytes, cut off at close; a crash copy replays with no warning", async () => {
  const directory = `${base}/prefill`
  const copy = `${base}/prefill-crashed`
  const envs = Array.from({ length: 6 }, () => simpleEnvelope(1, new Uint8Array(5_000).fill(0x61)))
  const big = simpleEnvelope(1, new Uint8Array(300_000).fill(0x62))
  const seen = await withJournal({ directory }, (j) =>
    Effect.gen(function*() {
      yield* j.storage.write(envs[0]!, { nextAttemptAt: 0 })
      const first = yield* Effect.promise(() => framesOf(seg1(directory)))
      for (const e of envs.slice(1)) yield* j.storage.write(e, { nextAttemptAt: 0 })
      const six = yield* Effect.promise(() => framesOf(seg1(directory)))
      yield* Effect.promise(() => crashCopy(directory, copy))
      yield* j.storage.write(big, { nextAttemptAt: 0 }) // 300 KB: crosses the zeros' end, written alone
      const afterBig = yield* Effect.promise(() => framesOf(seg1(directory)))
      return { first, six, afterBig }
    }))
  Assert.equal(seen.first.ends.length, 1)
  Assert.equal(seen.first.size, seen.first.end + 256 * 1024)
  Assert.ok(seen.first.zerosAfter, "zeros after the first batch")
  Assert.equal([seen.six.ends.length, seen.six.size], [6, seen.first.size])
  Assert.ok(seen.six.zerosAfter)
  Assert.ok(seen.six.end + 300_000 > seen.first.size, "the large batch crosses the zeroed end")
  Assert.equal([seen.afterBig.ends.length, seen.afterBig.size], [7, seen.afterBig.end])
  // closed: the file ends with its last frame
  Assert.equal((await framesOf(seg1(directory))).size, seen.afterBig.end)
  const back = await withJournalLogged({ directory }, (j) => Effect.forEach([...envs, big], (e) => j.storage.read(e.id)))
  Assert.equal(back.warnings, [])
  Assert.equal(back.value.map((r) => r.envelope), [...envs, big])
  // the copy taken while open is what a crash leaves: the zeros are a clean end
  Assert.equal((await framesOf(seg1(copy))).size, seen.first.size)
  const crashed = await withJournalLogged({ directory: copy }, (j) => Effect.forEach(envs, (e) => j.storage.read(e.id)))
  Assert.equal(crashed.warnings, [])
  Assert.equal(crashed.value.map((r) => r.envelope), envs)

  const capped = `${base}/prefill-capped`
  const sizes = await withJournal({ directory: capped, segmentBytes: 20_000 }, (j) =>
    Effect.forEach(envs.slice(0, 3), (e) =>
      Effect.andThen(j.storage.write(e, { nextAttemptAt: 0 }), Effect.promise(() => framesOf(seg1(capped)).then((f) => f.size)))))
  Assert.equal(sizes, [20_000, 20_000, 20_000])
  const closed = await framesOf(seg1(capped))
  Assert.equal([closed.ends.length, closed.size], [3, closed.end])
})

test("DenoJournal: a torn tail is ignored at open; later writes go to a new segment and survive", async () => {
  const directory = `${base}/torn`
  const a = simpleEnvelope(1)
  await withJournal({ directory }, (j) => j.storage.write(a, { nextAttemptAt: 0 }))
  // a batch cut short by a crash: a frame header promising more bytes than there are
  await Deno.writeFile(`${directory}/journal/0000000000000001.seg`, Uint8Array.of(0, 0, 1, 0, 9, 9, 9, 9, 1, 2, 3), { append: true })
  const b = simpleEnvelope(1)
  await withJournal({ directory }, (j) =>
    Effect.gen(function*() {
      Assert.equal((yield* j.storage.read(a.id)).envelope, a)
      yield* j.storage.write(b, { nextAttemptAt: 0 })
    }))
  Assert.equal(await names(`${directory}/journal`), ["0000000000000001.seg", "0000000000000002.seg"])
  const ids = await withJournal({ directory }, (j) => Effect.map(j.storage.list(), (ms) => ms.map((m) => m.id)))
  Assert.equal(ids, [a.id, b.id].sort())
  Assert.equal(await names(`${directory}/corrupt`), [])
})

test("DenoJournal: one owner — the same directory twice in this process is refused, a live owner is refused both ways between Deno and Node (naming its pid), a dead owner's lock is taken over", async () => {
  const directory = `${base}/owner`
  // twice in this process, also through a symbolic link
  await Deno.mkdir(directory, { recursive: true })
  await Deno.symlink(directory, `${base}/owner-link`)
  const scope = Effect.runSync(Scope.make())
  try {
    await Effect.runPromise(Scope.provide(DenoJournal.make({ directory }), scope))
    for (const d of [directory, `${base}/owner-link`, `${directory}/`]) {
      const e = await openFailure(d)
      Assert.equal(e?.reason, "Io")
      Assert.includes(e?.detail, "is already open in this process: a journal has one owner")
    }
    // a Node process cannot take it while Deno owns it
    const refused = await node(["write", directory])
    Assert.equal(refused.code, 1, refused.stdout)
    Assert.includes(refused.stderr, `${directory}/owner.lock is held by pid ${Deno.pid}, which is running`)
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
  Assert.ok(!(await exists(`${directory}/owner.lock`)), "closing releases the lock")

  // a live Node owner is refused by Deno, naming its pid
  const holder = new Deno.Command(nodeBin, { args: [interopScript, "hold", directory], cwd: root, stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn()
  const lines = holder.stdout.pipeThrough(new TextDecoderStream()).getReader()
  let out = ""
  while (!out.includes("\n")) {
    const r = await lines.read()
    if (r.done) break
    out += r.value
  }
  if (out !== `ready ${holder.pid}\n`) {
    holder.kill("SIGKILL")
    throw new Error(`the Node holder said ${JSON.stringify(out)}: ${await new Response(holder.stderr).text()}`)
  }
  const e = await openFailure(directory)
  Assert.equal(e?.reason, "Io")
  Assert.equal(
    e?.detail,
    `${directory}/owner.lock is held by pid ${holder.pid}, which is running: a journal has one owner process (stop it, or use another directory)`
  )
  await holder.stdin.close()
  for (;;) if ((await lines.read()).done) break
  Assert.equal((await holder.status).code, 0)
  await new Response(holder.stderr).text()
  Assert.ok(!(await exists(`${directory}/owner.lock`)), "Node released the lock")

  // a dead owner's lock, and a lock that is not a pid, are taken over
  for (const stale of [`${await deadPid()}\n`, "garbage"]) {
    await Deno.writeTextFile(`${directory}/owner.lock`, stale)
    const env = simpleEnvelope(1)
    await withJournal({ directory }, (j) =>
      Effect.gen(function*() {
        Assert.equal(yield* Effect.promise(() => Deno.readTextFile(`${directory}/owner.lock`)), `${Deno.pid}\n`)
        yield* j.storage.write(env, { nextAttemptAt: 0 })
      }))
    Assert.ok(!(await exists(`${directory}/owner.lock`)))
  }
  Assert.equal((await names(directory)).filter((n) => n.startsWith("owner.lock")), [])
})

test("DenoJournal refuses a DenoDisk queue directory (and DenoDisk a journal) with Invalid / Corrupt naming layout.json", async () => {
  const disk = `${base}/a-disk-queue`
  await Effect.runPromise(Effect.asVoid(DenoDisk.make({ directory: disk })))
  const e = await openFailure(disk)
  Assert.equal(e?.reason, "Invalid")
  Assert.includes(e?.detail, `${disk}/layout.json`)
  Assert.ok(!(await exists(`${disk}/owner.lock`)), "nothing taken")
  const journal = `${base}/a-journal`
  await withJournal({ directory: journal }, () => Effect.void)
  const d = await Effect.runPromise(Effect.flip(DenoDisk.make({ directory: journal })))
  Assert.equal(d.reason, "Corrupt")
  Assert.includes(d.detail, `${journal}/layout.json: not a version 1 mailroom queue`)
})

test("DenoJournal when the disk is full: what does not fit fails with Full (452), nothing changes, and it works again once space is freed", async () => {
  const mnt = `${base}/tmpfs`
  await Deno.mkdir(mnt, { recursive: true })
  const mount = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], stdout: "piped", stderr: "piped" }).output()
  if (!mount.success) throw new Error(`the disk-full test needs a small file system and could not mount one (run as root): ${decoder.decode(mount.stderr)}`)
  try {
    const directory = `${mnt}/queue`
    const kept = simpleEnvelope(2, new Uint8Array(10_000).fill(0xe9))
    const huge = simpleEnvelope(1, new Uint8Array(3 * 1024 * 1024).fill(0x41))
    const smallOne = simpleEnvelope(1, new Uint8Array(2_000).fill(0xff))
    const filler = `${mnt}/filler`
    const value = await withJournal({ directory }, (j) =>
      Effect.gen(function*() {
        const s = j.storage
        yield* s.write(kept, { nextAttemptAt: 0 })
        const tooBig = yield* Effect.flip(s.write(huge, { nextAttemptAt: 0 }))
        Assert.equal([tooBig.reason, tooBig.operation, QueueStorage.toReply(tooBig).code], ["Full", "write", 452], tooBig.detail)
        Assert.equal((yield* Effect.flip(s.read(huge.id))).reason, "NotFound")
        const filled = yield* Effect.promise(() => Deno.writeFile(filler, new Uint8Array(8 * 1024 * 1024)).then(() => "fits", (e) => String(e)))
        Assert.match(filled, /No space left on device/)
        Assert.equal((yield* Effect.flip(s.write(smallOne, { nextAttemptAt: 0 }))).reason, "Full")
        Assert.equal((yield* Effect.flip(s.reschedule(kept.id, { attempts: 3, nextAttemptAt: 9 }))).reason, "Full")
        Assert.equal((yield* s.meta(kept.id)).attempts, 0)
        yield* Effect.promise(() => Deno.remove(filler))
        yield* s.write(smallOne, { nextAttemptAt: 0 })
        yield* s.reschedule(kept.id, { attempts: 3, nextAttemptAt: 9 })
        yield* j.maintain
        return yield* Effect.all([s.read(smallOne.id), s.read(kept.id)])
      }))
    Assert.equal(value[0].envelope, smallOne)
    Assert.equal(value[1].envelope, kept)
    Assert.equal(value[1].meta.attempts, 3)
    const again = await withJournal({ directory }, (j) => Effect.all([j.storage.list(), j.storage.read(smallOne.id)]))
    Assert.equal(again[0].map((m) => [m.id, m.attempts]).sort(), [[kept.id, 3], [smallOne.id, 0]].sort())
    Assert.bytesEqual(again[1].envelope.message, smallOne.message)
    Assert.equal(await names(`${directory}/corrupt`), [])
  } finally {
    await new Deno.Command("umount", { args: [mnt] }).output()
  }
})

// --- interop with Node ----------------------------------------------------------------------

test("DenoJournal and @mailroom/node's JournalStorage read each other's journals", async () => {
  const directory = `${base}/interop`
  const env = fullEnvelope()
  // Deno writes, Node reads and updates
  await withJournal({ directory }, (j) =>
    Effect.andThen(j.storage.write(env, { nextAttemptAt: 77 }), j.storage.reschedule(env.id, { attempts: 2, nextAttemptAt: 99 })))
  const read = await node(["read-and-hold", directory, env.id])
  Assert.equal(read.code, 0, read.stderr)
  const seen = JSON.parse(read.stdout)
  Assert.equal(seen.message, Array.from(env.message))
  Assert.matches(seen.meta, { id: env.id, attempts: 2, nextAttemptAt: 99, held: false })
  Assert.equal(seen.recipients, env.recipients)
  // Node's update is visible to Deno
  const back = await withJournal({ directory }, (j) => j.storage.read(env.id))
  Assert.equal(back.envelope, env)
  Assert.matches(back.meta, { attempts: 2, nextAttemptAt: 99, held: true })
  // Node writes, Deno reads
  const wrote = await node(["write", directory])
  Assert.equal(wrote.code, 0, wrote.stderr)
  const id = wrote.stdout.trim()
  const written = await withJournal({ directory }, (j) =>
    Effect.gen(function*() {
      const r = yield* j.storage.read(id)
      return { r, count: (yield* j.storage.list()).length }
    }))
  Assert.equal(decoder.decode(written.r.envelope.message), "Subject: from node\r\n\r\ncaf\u00e9\r\n")
  Assert.equal(written.r.envelope.recipients, ["a@example.com", "b@example.com"])
  Assert.equal(written.count, 2)
  Assert.equal(await names(`${directory}/corrupt`), [])
})

test("DenoJournal and JournalStorage read each other's journals left by a crash with their zero prefill, with no warning", async () => {
  // Node writes and exits without closing: its segment keeps the zeros after its last frame
  const fromNode = `${base}/interop-node-crash`
  const wrote = await node(["crash-write", fromNode])
  Assert.equal(wrote.code, 0, wrote.stderr)
  const id = wrote.stdout.trim()
  const left = await framesOf(seg1(fromNode))
  Assert.equal([left.ends.length, left.size], [1, left.end + 256 * 1024])
  Assert.ok(left.zerosAfter)
  const read = await withJournalLogged({ directory: fromNode }, (j) => j.storage.read(id))
  Assert.equal(read.warnings, [])
  Assert.equal(decoder.decode(read.value.envelope.message), "Subject: from node\r\n\r\ncaf\u00e9\r\n")

  // Deno's journal as a crash leaves it, read by Node
  const fromDeno = `${base}/interop-deno`
  const crashed = `${base}/interop-deno-crash`
  const envs = [simpleEnvelope(1), fullEnvelope()]
  await withJournal({ directory: fromDeno }, (j) =>
    Effect.gen(function*() {
      for (const e of envs) yield* j.storage.write(e, { nextAttemptAt: 0 })
      yield* Effect.promise(() => crashCopy(fromDeno, crashed))
    }))
  const copied = await framesOf(seg1(crashed))
  Assert.equal([copied.ends.length, copied.size], [2, copied.ends[0]! + 256 * 1024])
  const listed = await node(["list", crashed])
  Assert.equal(listed.code, 0, listed.stderr)
  Assert.equal(JSON.parse(listed.stdout), { ids: envs.map((e) => e.id).sort(), warnings: [] })
})

// --- kill -9 ----------------------------------------------------------------------------------

test("DenoJournal: every acknowledged write and update survives kill -9 of a Deno writer (8 kills, half with 64 KiB segments)", async () => {
  const directory = `${base}/crash`
  const writer = new URL("./DenoJournalCrashWriter.ts", import.meta.url).pathname
  const { bodyFor } = await import("./DenoJournalCrashWriter.ts")
  const written: Array<string> = []
  const updated = new Set<string>()
  for (let cycle = 0; cycle < 8; cycle++) {
    const args = ["run", "--allow-all", "--no-check", writer, directory, ...(cycle % 2 === 1 ? ["65536"] : [])]
    const child = new Deno.Command(Deno.execPath(), { args, cwd: root, stdout: "piped", stderr: "piped" }).spawn()
    let out = ""
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader()
    const afterReady = 40 + Math.floor(Math.random() * 300)
    let killAt: number | undefined
    for (;;) {
      const deadline = killAt
      const r = await (deadline === undefined
        ? reader.read()
        : Promise.race([reader.read(), new Promise<undefined>((res) => setTimeout(() => res(undefined), Math.max(0, deadline - Date.now())))]))
      if (r === undefined || r.done) break
      out += r.value
      if (killAt === undefined && out.includes("ready\n")) killAt = Date.now() + afterReady
      if (killAt !== undefined && Date.now() >= killAt) break
    }
    child.kill("SIGKILL")
    const status = await child.status
    reader.releaseLock()
    await child.stdout.cancel().catch(() => undefined)
    const stderr = await new Response(child.stderr).text()
    Assert.equal(status.signal, "SIGKILL", `writer ended by itself: ${stderr}`)
    const lines = out.split("\n")
    // a line cut by the kill is not a complete acknowledgement
    for (const l of out.endsWith("\n") ? lines : lines.slice(0, -1)) {
      if (l.startsWith("W ")) written.push(l.slice(2))
      if (l.startsWith("R ")) updated.add(l.slice(2))
    }
    const problems = await withJournal({ directory }, (j) =>
      Effect.gen(function*() {
        const listed = new Set((yield* j.storage.list()).map((m) => m.id))
        const found: Array<string> = []
        for (const id of written) {
          if (!listed.has(id)) found.push(`${id} not listed`)
          const r = yield* Effect.result(j.storage.read(id))
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
      }))
    Assert.equal(problems, [])
    Assert.equal(await names(`${directory}/corrupt`), [])
    Assert.ok(!(await exists(`${directory}/owner.lock`)), "the check released the lock")
  }
  Assert.ok(written.length > 8, `only ${written.length} writes were acknowledged`)
  Assert.ok(updated.size > 0, "no update was acknowledged")
  // the 64 KiB cycles rotated segments: without rotations there would be at most 16, one per opening that wrote
  const segments = (await names(`${directory}/journal`)).map((n) => Number(n.slice(0, 16)))
  Assert.atLeast(Math.max(...segments), 17, `segments: ${segments.join(", ")}`)
})

// --- the Deno host ---------------------------------------------------------------------------

const mailroom = async (cwd: string, args: ReadonlyArray<string>) => {
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "--allow-all", "--no-check", main, ...args], cwd, stdout: "piped", stderr: "piped" })
    .output()
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) }
}

test("mailroom serve on Deno with queue.storage.type: journal: swaks → journal; the queue commands are refused while the server owns it, and read it once stopped", async () => {
  const dir = await Deno.makeTempDir({ dir: base, prefix: "serve-" })
  const port = freePort()
  await Deno.writeTextFile(`${dir}/mailroom.yaml`, [
    "hostname: mx.example.test",
    "log: { level: info }",
    "smtp:",
    `  - listen: 127.0.0.1:${port}`,
    "    local_domains: [example.test]",
    "queue:",
    "  storage: { type: journal, path: var/queue.journal }",
    "relay:",
    // nothing listens there: every attempt fails for now, and the message stays queued
    `  type: http`,
    `  url: http://127.0.0.1:${freePort()}/`,
    ""
  ].join("\n"))
  const journal = `${dir}/var/queue.journal`
  // before the first start there is no queue, and the command does not create one
  const none = await mailroom(dir, ["queue", "list", "--config", "mailroom.yaml"])
  Assert.equal(none.code, 1)
  Assert.includes(none.stderr, `no queue in ${journal}`)
  Assert.ok(!(await exists(journal)), "the queue command created nothing")

  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--no-check", main, "serve", "--config", "mailroom.yaml"],
    cwd: dir,
    stdout: "piped",
    stderr: "piped"
  }).spawn()
  let log = ""
  const logDone = (async () => {
    for await (const chunk of server.stdout.pipeThrough(new TextDecoderStream())) log += chunk
  })()
  const errText = new Response(server.stderr).text()
  let id: string
  try {
    await waitForListener(port)
    const sent = await swaks([
      "--server", `127.0.0.1:${port}`, "--ehlo", "client.example",
      "--from", "alice@example.org", "--to", "bob@example.test",
      "--header", "Subject: journaled by Deno", "--body", "caf\u00e9 in the journal"
    ])
    const transcript = sent.transcript
    Assert.equal(sent.code, 0, `swaks: ${transcript}${sent.stderr}`)
    id = /<-  250 2\.6\.0 Ok: queued as ([0-9a-z]+)/.exec(transcript)?.[1] ?? ""
    Assert.ok(id !== "", transcript)
    Assert.equal(await Deno.readTextFile(`${journal}/owner.lock`), `${server.pid}\n`)
    // the server owns the journal: the queue commands are refused, naming it
    const refused = await mailroom(dir, ["queue", "list", "--config", "mailroom.yaml"])
    Assert.equal(refused.code, 1, refused.stdout)
    Assert.equal(
      refused.stderr,
      `mailroom: queue.storage: ${journal}/owner.lock is held by pid ${server.pid}, which is running: a journal has one owner process (stop it, or use another directory)\n`
    )
  } finally {
    server.kill("SIGTERM")
  }
  const status = await server.status
  await logDone
  Assert.equal(status.code, 0, `exit ${status.code}: ${await errText}\n${log}`)
  Assert.ok(!(await exists(`${journal}/owner.lock`)), "the server released the journal")

  const list = await mailroom(dir, ["queue", "list", "--config", "mailroom.yaml"])
  Assert.equal(list.code, 0, list.stderr)
  Assert.includes(list.stdout, id)
  Assert.includes(list.stdout, "bob@example.test")
  Assert.match(list.stdout, /1 message, 0 held\n$/)
  const show = await mailroom(dir, ["queue", "show", id, "--config", "mailroom.yaml"])
  Assert.equal(show.code, 0, show.stderr)
  Assert.includes(show.stdout, "Subject: journaled by Deno")
  Assert.includes(show.stdout, "caf\u00e9 in the journal")
  // the command released the journal when it ended
  Assert.ok(!(await exists(`${journal}/owner.lock`)), "the queue command released the journal")
  const removed = await mailroom(dir, ["queue", "delete", id, "--force", "--config", "mailroom.yaml"])
  Assert.equal(removed.code, 0, removed.stderr + removed.stdout)
  const empty = await mailroom(dir, ["queue", "list", "--config", "mailroom.yaml"])
  Assert.equal(empty.stdout, "0 messages, 0 held\n", empty.stderr)
})
