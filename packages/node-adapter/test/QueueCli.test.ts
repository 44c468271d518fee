/**
 * `mailroom queue ...` and `mailroom hash-password`, through the real bin
 * (Node 24 with type stripping): against disk queues populated here with
 * `DiskStorage`, checking each command's output and what it did to the
 * storage; then against a running `mailroom serve` whose relay fails
 * transiently, so that its message stays queued.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Clock, Effect } from "effect"
import nodemailer from "nodemailer"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Credentials from "@mailroom/protocol/auth/Credentials"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import type * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import { freePort, removeDir, tempDir, waitForPort } from "../../../test/support/ports.ts"
import * as DiskStorage from "../src/DiskStorage.ts"
import * as UsersFile from "../src/UsersFile.ts"

const root = new URL("../../../", import.meta.url).pathname
const node = path.join(root, "node_modules", ".bin", "node")
const bin = path.join(root, "packages", "node-adapter", "bin", "mailroom.mjs")

interface Ran {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  readonly bytes: Buffer
}

/** Runs the real `mailroom` bin; `input` goes to its standard input. */
const mailroom = (args: ReadonlyArray<string>, options: { cwd?: string; input?: string } = {}): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const child = spawn(node, [bin, ...args], { cwd: options.cwd ?? root, stdio: ["pipe", "pipe", "pipe"] })
    const out: Array<Buffer> = []
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => out.push(d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("error", reject)
    child.on("close", (code) => {
      const bytes = Buffer.concat(out)
      resolve({ code, stdout: bytes.toString("utf8"), stderr, bytes })
    })
    child.stdin.end(options.input ?? "")
  })

let base: string
beforeAll(() => {
  base = tempDir("mailroom-queue-cli-")
})
afterAll(() => removeDir(base))

const fixedClock = (ms: number): Clock.Clock => ({
  currentTimeMillisUnsafe: () => ms,
  currentTimeMillis: Effect.succeed(ms),
  currentTimeNanosUnsafe: () => BigInt(ms) * 1_000_000n,
  currentTimeNanos: Effect.succeed(BigInt(ms) * 1_000_000n),
  monotonicTimeNanosUnsafe: () => BigInt(ms) * 1_000_000n,
  monotonicTimeNanos: Effect.succeed(BigInt(ms) * 1_000_000n),
  sleep: () => Effect.void
})

/** Runs `f` on the disk storage over `dir`, with the clock stopped at `at` (ms since the epoch) when given. */
const withStorage = <A>(dir: string, f: (s: QueueStorage.Service) => Effect.Effect<A, QueueStorage.StorageError>, at?: number): Promise<A> => {
  const program = Effect.flatMap(DiskStorage.make({ directory: dir }), f)
  return Effect.runPromise(at === undefined ? program : Effect.provideService(program, Clock.Clock, fixedClock(at)))
}

const metaOf = (dir: string, id: string) => withStorage(dir, (s) => s.meta(id))
const exists = (dir: string, id: string) => fs.existsSync(path.join(dir, "meta", `${id}.json`))

let counter = 0
const random = (n: number): Uint8Array => {
  const out = new Uint8Array(n)
  out[n - 1] = ++counter
  return out
}

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

const bigBody = "x".repeat(70) + "\r\n"
const messageA = `From: alice@example.org\r\nSubject: report\r\n\r\n${bigBody.repeat(28)}`
const messageB = "From: MAILER-DAEMON@mx.example.org\r\nSubject: bounce\r\n\r\nundeliverable\r\n"
const messageC = "From: frank@example.org\r\nSubject: caf\xe9\r\n\r\nbody\r\n"

interface TestQueue {
  readonly dir: string
  readonly config: string
  readonly t0: number
  readonly a: Envelope.Envelope
  readonly b: Envelope.Envelope
  readonly c: Envelope.Envelope
}

/**
 * A fresh queue of three messages:
 * - a (3 minutes old): three recipients, one pending after a 451, one delivered, one failed; 2 attempts, next in 5m50s;
 * - b (2 hours old): from <>, held;
 * - c (a day old): one attempt whose reply holds an escape character, next in 2h10m; 8-bit header bytes.
 */
const makeQueue = async (name: string): Promise<TestQueue> => {
  const dir = path.join(base, name, "queue")
  const config = path.join(base, name, "mailroom.yaml")
  fs.mkdirSync(path.dirname(config), { recursive: true })
  fs.writeFileSync(config, `queue:\n  storage: { type: disk, path: ${JSON.stringify(dir)} }\n`)
  const t0 = Date.now()
  const env = (at: number, fields: Parameters<typeof Envelope.make>[0]) => Envelope.make({ ...fields, id: Envelope.newId(random, at), timestamp: at })
  const a = env(t0 - 3 * MINUTE, {
    sender: "alice@example.org",
    recipients: ["bob@example.net", "carol@example.net", "dave@example.net"],
    message: new Uint8Array(Buffer.from(messageA, "latin1")),
    client: {
      address: "192.0.2.7",
      port: 40000,
      reverseName: undefined,
      ehlo: "client.example.org",
      protocol: "ESMTPSA",
      tls: { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384" },
      auth: "alice"
    }
  })
  const b = env(t0 - 2 * HOUR, { sender: "", recipients: ["erin@example.com"], message: new Uint8Array(Buffer.from(messageB, "latin1")) })
  const c = env(t0 - DAY - HOUR, { sender: "frank@example.org", recipients: ["grace@example.com"], message: new Uint8Array(Buffer.from(messageC, "latin1")) })
  await withStorage(dir, (s) => s.write(a, { nextAttemptAt: t0 - 3 * MINUTE }), t0 - 3 * MINUTE)
  await withStorage(dir, (s) => s.write(b, { nextAttemptAt: t0 - 2 * HOUR }), t0 - 2 * HOUR)
  await withStorage(dir, (s) => s.write(c, { nextAttemptAt: t0 - DAY - HOUR }), t0 - DAY - HOUR)
  await withStorage(dir, (s) =>
    Effect.gen(function*() {
      yield* s.recordResults(a.id, [
        { index: 0, status: "pending", reply: "451 4.4.1 Connection refused", remoteMta: "mx.example.net" },
        { index: 1, status: "delivered", reply: "250 2.0.0 Ok", remoteMta: undefined },
        { index: 2, status: "failed", reply: "550 5.1.1 No such user", remoteMta: "mx.example.net" }
      ])
      yield* s.reschedule(a.id, { attempts: 2, nextAttemptAt: t0 + 5 * MINUTE + 50_000 })
      yield* s.setHeld(b.id, true)
      yield* s.recordResults(c.id, [{ index: 0, status: "pending", reply: "451 4.7.0 evil\x1b[31m red", remoteMta: undefined }])
      yield* s.reschedule(c.id, { attempts: 1, nextAttemptAt: t0 + 2 * HOUR + 10 * MINUTE })
    }), t0 - MINUTE)
  return { dir, config, t0, a, b, c }
}

const iso = (ms: number) => new Date(ms).toISOString()

describe("mailroom queue list and show", () => {
  let q: TestQueue
  beforeAll(async () => {
    q = await makeQueue("list")
  })

  it("list prints one block per message in id order and a summary", async () => {
    const r = await mailroom(["queue", "list", "--config", q.config])
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    expect(r.stdout).toBe(
      `${q.c.id}  age 1d  size ${messageC.length} B  from <frank@example.org>\n` +
        "  attempts 1, next attempt in 2h\n" +
        "  pending    <grace@example.com>  451 4.7.0 evil\\x1b[31m red\n" +
        "\n" +
        `${q.b.id}  age 2h  size ${messageB.length} B  from <>  HELD\n` +
        "  attempts 0, held: no attempts until released\n" +
        "  pending    <erin@example.com>\n" +
        "\n" +
        `${q.a.id}  age 3m  size 2.0 KiB  from <alice@example.org>\n` +
        "  attempts 2, next attempt in 5m\n" +
        "  pending    <bob@example.net>  451 4.4.1 Connection refused\n" +
        "  delivered  <carol@example.net>  250 2.0.0 Ok\n" +
        "  failed     <dave@example.net>  550 5.1.1 No such user\n" +
        "\n" +
        "3 messages, 1 held\n"
    )
  })

  it("list --json prints one object per message and line", async () => {
    const r = await mailroom(["queue", "list", "--json", "-c", q.config])
    expect(r.code).toBe(0)
    const lines = r.stdout.trimEnd().split("\n").map((l) => JSON.parse(l))
    expect(lines.map((l) => l.id)).toEqual([q.c.id, q.b.id, q.a.id])
    expect(lines[2]).toEqual({
      id: q.a.id,
      createdAt: q.t0 - 3 * MINUTE,
      size: messageA.length,
      sender: "alice@example.org",
      held: false,
      attempts: 2,
      nextAttemptAt: q.t0 + 5 * MINUTE + 50_000,
      delayWarned: false,
      lease: null,
      recipients: [
        { address: "bob@example.net", status: "pending", reply: "451 4.4.1 Connection refused", remoteMta: "mx.example.net", at: q.t0 - MINUTE },
        { address: "carol@example.net", status: "delivered", reply: "250 2.0.0 Ok", remoteMta: null, at: q.t0 - MINUTE },
        { address: "dave@example.net", status: "failed", reply: "550 5.1.1 No such user", remoteMta: "mx.example.net", at: q.t0 - MINUTE }
      ]
    })
    expect(lines[1]).toMatchObject({ sender: "", held: true, recipients: [{ address: "erin@example.com", status: "pending", reply: null }] })
    expect(lines[0].recipients[0].reply).toBe("451 4.7.0 evil\x1b[31m red")
  })

  it("show prints the detailed block, an empty line and the message bytes as stored", async () => {
    const r = await mailroom(["queue", "show", q.a.id, "--config", q.config])
    expect(r.code).toBe(0)
    const head =
      `${q.a.id}  age 3m  size 2.0 KiB  from <alice@example.org>\n` +
      "  attempts 2, next attempt in 5m\n" +
      `  queued ${iso(q.t0 - 3 * MINUTE)} from 192.0.2.7 (client.example.org) over ESMTPSA, authenticated as alice\n` +
      `  next attempt ${iso(q.t0 + 5 * MINUTE + 50_000)}, delay notice not sent, no lease\n` +
      `  pending    <bob@example.net>  451 4.4.1 Connection refused (from mx.example.net at ${iso(q.t0 - MINUTE)})\n` +
      `  delivered  <carol@example.net>  250 2.0.0 Ok (at ${iso(q.t0 - MINUTE)})\n` +
      `  failed     <dave@example.net>  550 5.1.1 No such user (from mx.example.net at ${iso(q.t0 - MINUTE)})\n` +
      "\n"
    expect(r.stdout).toBe(head + messageA)
  })

  it("show prints 8-bit message bytes unchanged, and --headers stops after the header block", async () => {
    const full = await mailroom(["queue", "show", q.c.id, "--config", q.config])
    expect(full.code).toBe(0)
    expect(full.bytes.subarray(full.bytes.length - messageC.length)).toEqual(Buffer.from(messageC, "latin1"))
    const headers = await mailroom(["queue", "show", q.b.id, "--headers", "--config", q.config])
    expect(headers.code).toBe(0)
    expect(headers.stdout).toBe(
      `${q.b.id}  age 2h  size ${messageB.length} B  from <>  HELD\n` +
        "  attempts 0, held: no attempts until released\n" +
        `  queued ${iso(q.t0 - 2 * HOUR)} from an unknown client over SMTP\n` +
        `  next attempt ${iso(q.t0 - 2 * HOUR)}, delay notice not sent, no lease\n` +
        "  pending    <erin@example.com>\n" +
        "\n" +
        "From: MAILER-DAEMON@mx.example.org\r\nSubject: bounce\r\n\r\n"
    )
  })

  it("an unknown id: 'no message ID in DIR', exit 1, for every command that takes one", async () => {
    const subs = ["show", "hold", "release", "retry", "delete"]
    const runs = await Promise.all(subs.map((sub) => mailroom(["queue", sub, "01nosuchmessage", "--config", q.config])))
    for (const r of runs) expect(r).toMatchObject({ code: 1, stdout: "", stderr: `mailroom: no message 01nosuchmessage in ${q.dir}\n` })
    const bad = await mailroom(["queue", "show", "../meta/x", "--config", q.config])
    expect(bad).toMatchObject({ code: 1, stderr: `mailroom: no message ../meta/x in ${q.dir}\n` })
  })
})

describe("mailroom queue hold, release, retry, flush", () => {
  it("hold sets the flag, release clears it and makes the message due now, keeping its attempts", async () => {
    const q = await makeQueue("hold")
    const held = await mailroom(["queue", "hold", q.a.id, "--config", q.config])
    expect(held).toMatchObject({ code: 0, stdout: `held ${q.a.id}\n`, stderr: "" })
    expect((await metaOf(q.dir, q.a.id)).held).toBe(true)
    expect((await mailroom(["queue", "list", "--config", q.config])).stdout).toContain(
      `${q.a.id}  age 3m  size 2.0 KiB  from <alice@example.org>  HELD\n  attempts 2, held: no attempts until released\n`
    )
    const before = Date.now()
    const released = await mailroom(["queue", "release", q.a.id, "--config", q.config])
    expect(released).toMatchObject({ code: 0, stdout: `released ${q.a.id}: due now\n`, stderr: "" })
    const meta = await metaOf(q.dir, q.a.id)
    expect(meta.held).toBe(false)
    expect(meta.attempts).toBe(2)
    expect(meta.nextAttemptAt).toBeGreaterThanOrEqual(before)
    expect(meta.nextAttemptAt).toBeLessThanOrEqual(Date.now())
    expect(meta.lease).toBeUndefined() // the command's own lease is gone
    expect(meta.recipients.map((r) => r.status)).toEqual(["pending", "delivered", "failed"])
    const again = await mailroom(["queue", "release", q.a.id, "--config", q.config])
    expect(again.stdout).toBe(`released ${q.a.id}: due now (was not held)\n`)
  })

  it("retry ID makes it due now and releases a held one; several ids at once", async () => {
    const q = await makeQueue("retry")
    const before = Date.now()
    const r = await mailroom(["queue", "retry", q.c.id, q.b.id, "--config", q.config])
    expect(r).toMatchObject({ code: 0, stdout: `${q.c.id}: due now\n${q.b.id}: due now, released from hold\n`, stderr: "" })
    const c = await metaOf(q.dir, q.c.id)
    const b = await metaOf(q.dir, q.b.id)
    expect(c.attempts).toBe(1)
    expect(c.nextAttemptAt).toBeGreaterThanOrEqual(before)
    expect(c.nextAttemptAt).toBeLessThanOrEqual(Date.now())
    expect(b.held).toBe(false)
    expect((await mailroom(["queue", "list", "--config", q.config])).stdout).toContain(
      `${q.c.id}  age 1d  size ${messageC.length} B  from <frank@example.org>\n  attempts 1, next attempt now\n`
    )
  })

  it("retry --all and flush make every message not held due now and leave held ones alone", async () => {
    for (const args of [["retry", "--all"], ["flush"]]) {
      const q = await makeQueue(`flush-${args[0]}`)
      const before = Date.now()
      const r = await mailroom(["queue", ...args, "--config", q.config])
      expect(r).toMatchObject({ code: 0, stdout: "2 messages due now, 1 held (left alone)\n", stderr: "" })
      for (const id of [q.a.id, q.c.id]) {
        const m = await metaOf(q.dir, id)
        expect(m.nextAttemptAt).toBeGreaterThanOrEqual(before)
        expect(m.nextAttemptAt).toBeLessThanOrEqual(Date.now())
      }
      const b = await metaOf(q.dir, q.b.id)
      expect(b).toMatchObject({ held: true, nextAttemptAt: q.t0 - 2 * HOUR })
    }
  })

  it("hold --all and release --all", async () => {
    const q = await makeQueue("all")
    expect(await mailroom(["queue", "hold", "--all", "--config", q.config])).toMatchObject({
      code: 0,
      stdout: "2 messages held, 1 already held\n"
    })
    for (const id of [q.a.id, q.b.id, q.c.id]) expect((await metaOf(q.dir, id)).held).toBe(true)
    expect((await mailroom(["queue", "list", "--config", q.config])).stdout).toMatch(/\n3 messages, 3 held\n$/)
    expect(await mailroom(["queue", "release", "--all", "--config", q.config])).toMatchObject({
      code: 0,
      stdout: "3 messages released and due now\n"
    })
    for (const id of [q.a.id, q.b.id, q.c.id]) expect((await metaOf(q.dir, id)).held).toBe(false)
  })

  it("a message being attempted keeps its schedule: retry says so and leaves it to the attempt", async () => {
    const q = await makeQueue("busy")
    const now = Date.now()
    await withStorage(q.dir, (s) => s.claim(q.c.id, "mx.example.org", now, 10 * MINUTE))
    const list = await mailroom(["queue", "list", "--config", q.config])
    expect(list.stdout).toContain(`${q.c.id}  age 1d  size ${messageC.length} B  from <frank@example.org>\n  attempts 1, attempt running now (mx.example.org)\n`)
    const r = await mailroom(["queue", "retry", q.c.id, "--config", q.config])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(new RegExp(`^${q.c.id}: an attempt by mx\\.example\\.org is running \\(lease for (9|10)m more\\); its result sets the next attempt\\n$`))
    const m = await metaOf(q.dir, q.c.id)
    expect(m.nextAttemptAt).toBe(q.t0 + 2 * HOUR + 10 * MINUTE)
    expect(m.lease).toEqual({ owner: "mx.example.org", until: now + 10 * MINUTE })
    const held = await mailroom(["queue", "hold", q.c.id, "--config", q.config])
    expect(held.stdout).toBe(`held ${q.c.id} (an attempt by mx.example.org is running and finishes first)\n`)
  })
})

describe("mailroom queue delete", () => {
  it("deletes the record and the message file", async () => {
    const q = await makeQueue("delete")
    const r = await mailroom(["queue", "delete", q.a.id, "--config", q.config])
    expect(r).toMatchObject({ code: 0, stdout: `deleted ${q.a.id}\n`, stderr: "" })
    expect(exists(q.dir, q.a.id)).toBe(false)
    expect(fs.existsSync(path.join(q.dir, "messages", `${q.a.id}.eml`))).toBe(false)
    expect(exists(q.dir, q.b.id)).toBe(true)
    expect((await mailroom(["queue", "list", "--config", q.config])).stdout).toMatch(/\n2 messages, 1 held\n$/)
  })

  it("refuses a message whose lease another owner holds, unless --force; an expired lease is no obstacle", async () => {
    const q = await makeQueue("lease")
    const now = Date.now()
    await withStorage(q.dir, (s) =>
      Effect.gen(function*() {
        yield* s.claim(q.a.id, "mx.example.org", now, 10 * MINUTE)
        yield* s.claim(q.c.id, "mx.example.org", now - 20 * MINUTE, 10 * MINUTE)
      }))
    const refused = await mailroom(["queue", "delete", q.a.id, "--config", q.config])
    expect(refused.code).toBe(1)
    expect(refused.stdout).toBe("")
    expect(refused.stderr).toBe(
      `mailroom: not deleting ${q.a.id}: mx.example.org holds its lease until ${iso(now + 10 * MINUTE)}` +
        " (a delivery attempt running now, or one of a server that stopped during it); try again when the lease is over," +
        " or use --force (the attempt may still deliver it)\n"
    )
    expect(exists(q.dir, q.a.id)).toBe(true)
    expect(await mailroom(["queue", "delete", q.c.id, "--config", q.config])).toMatchObject({ code: 0, stdout: `deleted ${q.c.id}\n` })
    expect(await mailroom(["queue", "delete", "--force", q.a.id, "--config", q.config])).toMatchObject({
      code: 0,
      stdout: `deleted ${q.a.id}\n`,
      stderr: ""
    })
    expect(exists(q.dir, q.a.id)).toBe(false)
  })

  it("delete --all removes every message it may, reports the refused ones and exits 1 if any", async () => {
    const q = await makeQueue("delete-all")
    await withStorage(q.dir, (s) => s.claim(q.b.id, "mx.example.org", Date.now(), 10 * MINUTE))
    const r = await mailroom(["queue", "delete", "--all", "--config", q.config])
    expect(r.code).toBe(1)
    expect(r.stdout).toBe("2 messages deleted\n")
    expect(r.stderr).toMatch(new RegExp(`^mailroom: not deleting ${q.b.id}: mx\\.example\\.org holds its lease until `))
    expect([exists(q.dir, q.a.id), exists(q.dir, q.b.id), exists(q.dir, q.c.id)]).toEqual([false, true, false])
    expect(await mailroom(["queue", "delete", "--all", "--force", "--config", q.config])).toMatchObject({
      code: 0,
      stdout: "1 message deleted\n"
    })
    expect(await mailroom(["queue", "list", "--config", q.config])).toMatchObject({ code: 0, stdout: "0 messages, 0 held\n" })
    expect(await mailroom(["queue", "list", "--json", "--config", q.config])).toMatchObject({ code: 0, stdout: "" })
  })
})

describe("mailroom queue: configs, missing queues and usage", () => {
  it("without --config it uses the embedded default: ./var/queue under the working directory", async () => {
    const cwd = path.join(base, "default")
    const dir = path.join(cwd, "var", "queue")
    const e = Envelope.make({ id: Envelope.newId(random, Date.now()), sender: "a@example.org", recipients: ["b@example.org"], message: new Uint8Array(Buffer.from("Subject: x\r\n\r\nx\r\n")) })
    await withStorage(dir, (s) => s.write(e, { nextAttemptAt: 0 }))
    const r = await mailroom(["queue", "list"], { cwd })
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(new RegExp(`^${e.id}  age [0-9]s  size 17 B  from <a@example\\.org>\\n  attempts 0, next attempt now\\n  pending    <b@example\\.org>\\n\\n1 message, 0 held\\n$`))
  })

  it("a queue that does not exist is an error, and nothing is created", async () => {
    const cwd = path.join(base, "empty")
    fs.mkdirSync(cwd, { recursive: true })
    const r = await mailroom(["queue", "list"], { cwd })
    expect(r).toMatchObject({
      code: 1,
      stdout: "",
      stderr: `mailroom: no queue in ${path.join(cwd, "var", "queue")}: the directory does not exist (a server creates it on its first start)\n`
    })
    expect(fs.readdirSync(cwd)).toEqual([])
    fs.mkdirSync(path.join(cwd, "not-a-queue"))
    fs.writeFileSync(path.join(cwd, "q.json"), JSON.stringify({ queue: { storage: { type: "disk", path: "not-a-queue" } } }))
    const noLayout = await mailroom(["queue", "flush", "-c", "q.json"], { cwd })
    expect(noLayout).toMatchObject({
      code: 1,
      stderr: `mailroom: no queue in ${path.join(cwd, "not-a-queue")}: it has no layout.json (a server creates it on its first start)\n`
    })
    expect(fs.readdirSync(path.join(cwd, "not-a-queue"))).toEqual([])
  })

  it("memory storage: queue commands need persistent storage", async () => {
    const file = path.join(base, "memory.yaml")
    fs.writeFileSync(file, "queue:\n  storage: { type: memory }\n")
    expect(await mailroom(["queue", "list", "--config", file])).toMatchObject({
      code: 1,
      stdout: "",
      stderr: "mailroom: queue commands need persistent storage (queue.storage.type: memory)\n"
    })
  })

  it("a bad config prints its problems, exit 1", async () => {
    const file = path.join(base, "bad.yaml")
    fs.writeFileSync(file, "queue:\n  storage: { type: disk, paht: x }\n")
    const r = await mailroom(["queue", "list", "--config", file])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${file}:2: queue.storage`)
    expect(r.stderr).toMatch(/mailroom: .*bad\.yaml: 1 problem\n$/)
  })

  it("usage errors exit 2 with the usage text", async () => {
    const cases: Array<[Array<string>, string]> = [
      [["queue"], "queue: missing subcommand (list, show, hold, release, retry, delete, flush)"],
      [["queue", "frob"], `queue: unknown subcommand "frob"`],
      [["queue", "show"], "queue show: missing ID"],
      [["queue", "show", "a", "b"], "queue show: expected one ID"],
      [["queue", "hold"], "queue hold: missing ID (or --all)"],
      [["queue", "retry", "x", "--all"], "queue retry: give IDs or --all, not both"],
      [["queue", "list", "--force"], "queue list: unknown option --force"],
      [["queue", "list", "x"], `queue list: unexpected argument "x"`],
      [["queue", "flush", "--all"], "queue flush: unknown option --all"],
      [["queue", "list", "--frob"], `Unknown option '--frob'`]
    ]
    const runs = await Promise.all(cases.map(([args]) => mailroom(args)))
    for (const [i, [args, message]] of cases.entries()) {
      const r = runs[i]!
      expect(r.code, args.join(" ")).toBe(2)
      expect(r.stdout).toBe("")
      expect(r.stderr).toMatch(/^mailroom: /)
      expect(r.stderr.split("\n")[0]).toBe(`mailroom: ${message}`)
      expect(r.stderr).toContain("\nUsage: mailroom <command> [options]\n")
    }
  })

  it("--help: the queue command, each subcommand, and the top-level usage", async () => {
    const top = await mailroom(["queue", "--help"])
    expect(top.code).toBe(0)
    expect(top.stdout).toMatch(/^Usage: mailroom queue SUBCOMMAND \[ID\.\.\.\]\n/)
    for (const s of ["list [--json]", "show ID [--headers]", "hold ID...|--all", "release ID...|--all", "retry ID...|--all", "delete ID...|--all [--force]", "flush"]) {
      expect(top.stdout).toContain(`\n  ${s} `)
    }
    expect((await mailroom(["help", "queue"])).stdout).toBe(top.stdout)
    const expected: Record<string, string> = {
      list: "Usage: mailroom queue list [--json] [--config FILE]\n",
      show: "Usage: mailroom queue show ID [--headers] [--config FILE]\n",
      hold: "Usage: mailroom queue hold ID...|--all [--config FILE]\n",
      release: "Usage: mailroom queue release ID...|--all [--config FILE]\n",
      retry: "Usage: mailroom queue retry ID...|--all [--config FILE]\n",
      delete: "Usage: mailroom queue delete ID...|--all [--force] [--config FILE]\n",
      flush: "Usage: mailroom queue flush [--config FILE]\n"
    }
    const runs = await Promise.all(Object.keys(expected).map((sub) => mailroom(["queue", sub, "--help"])))
    for (const [i, [sub, first]] of Object.entries(expected).entries()) {
      const r = runs[i]!
      expect(r.code).toBe(0)
      expect(r.stdout.startsWith(first), sub).toBe(true)
      expect(r.stdout).toContain("  -c, --config FILE ")
    }
    expect((await mailroom(["queue", "retry", "--help"])).stdout).toContain("A named ID also leaves hold, like postsuper -r")
    const usage = await mailroom(["--help"])
    expect(usage.stdout).toContain("\n  queue SUBCOMMAND [ID...]  ")
    expect(usage.stdout).toContain("\n  hash-password [--pbkdf2]  ")
  })
})

describe("mailroom hash-password", () => {
  it("--pbkdf2 prints a pbkdf2-sha256 value of 100000 iterations and a 16-byte salt that verifies", async () => {
    const r = await mailroom(["hash-password", "--pbkdf2"], { input: "correct horse\n" })
    expect(r.code).toBe(0)
    expect(r.stderr).toBe("")
    expect(r.stdout).toMatch(/^pbkdf2-sha256\$100000\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=\n$/)
    const stored = r.stdout.trimEnd()
    expect(Credentials.verifyPassword(stored, "correct horse")).toBe(true)
    expect(Credentials.verifyPassword(stored, "correct horse\n")).toBe(false)
    expect(UsersFile.parse(`alice:${stored}\n`)).toEqual({ users: new Map([["alice", stored]]), errors: [] })
    const again = await mailroom(["hash-password", "--pbkdf2"], { input: "correct horse\n" })
    expect(again.stdout).not.toBe(r.stdout) // a fresh salt every time
  })

  it("prints Dovecot's {SCRAM-SHA-256} format by default; --iterations; a CRLF line end and no line end at all", async () => {
    const r = await mailroom(["hash-password", "--iterations", "4096"], { input: "pencil\r\nignored\n" })
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^\{SCRAM-SHA-256\}4096,[A-Za-z0-9+/]{22}==,[A-Za-z0-9+/]{43}=,[A-Za-z0-9+/]{43}=\n$/)
    const parsed = Credentials.parseStored(r.stdout.trimEnd())
    expect(parsed?._tag).toBe("ScramSha256")
    expect(Credentials.verifyPassword(r.stdout.trimEnd(), "pencil")).toBe(true)
    const bare = await mailroom(["hash-password", "--pbkdf2", "--iterations", "5000"], { input: "pencil" })
    expect(bare.stdout).toMatch(/^pbkdf2-sha256\$5000\$/)
    expect(Credentials.verifyPassword(bare.stdout.trimEnd(), "pencil")).toBe(true)
  })

  it("refuses an empty password, control characters and bad iteration counts", async () => {
    expect(await mailroom(["hash-password"], { input: "" })).toMatchObject({ code: 1, stdout: "", stderr: "mailroom: no password on standard input\n" })
    expect(await mailroom(["hash-password"], { input: "\n" })).toMatchObject({ code: 1, stderr: "mailroom: no password on standard input\n" })
    expect(await mailroom(["hash-password"], { input: "a\x00b\n" })).toMatchObject({
      code: 1,
      stderr: "mailroom: the password has control characters, which SASL clients cannot send\n"
    })
    const counts = ["4095", "10000001", "1e5", "abc"]
    const runs = await Promise.all(counts.map((n) => mailroom(["hash-password", "--iterations", n], { input: "x\n" })))
    for (const [i, n] of counts.entries()) {
      const r = runs[i]!
      expect(r.code).toBe(2)
      expect(r.stderr.split("\n")[0]).toBe(`mailroom: --iterations: expected a whole number from 4096 to 10000000, got "${n}"`)
    }
    const help = await mailroom(["hash-password", "--help"])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/^Usage: mailroom hash-password \[--pbkdf2\]\n/)
    expect(help.stdout).toContain("--iterations N")
  })
})

describe("mailroom queue against a running mailroom serve", () => {
  let dir: string
  let server: ChildProcess | undefined
  let log = ""

  afterAll(async () => {
    if (server !== undefined && server.exitCode === null && server.signalCode === null) {
      const s = server
      await new Promise<void>((resolve) => {
        s.once("exit", () => resolve())
        s.kill("SIGKILL")
      })
    }
  })

  const listJson = async (cwd: string): Promise<Array<{ id: string; held: boolean; attempts: number; recipients: Array<{ address: string; status: string; reply: string | null }> }>> => {
    const r = await mailroom(["queue", "list", "--json", "--config", "mailroom.yaml"], { cwd })
    expect(r.code, r.stderr).toBe(0)
    return r.stdout === "" ? [] : r.stdout.trimEnd().split("\n").map((l) => JSON.parse(l))
  }

  const waitFor = async <A>(what: string, f: () => Promise<A | undefined>, timeoutMs: number): Promise<A> => {
    const until = Date.now() + timeoutMs
    for (;;) {
      const v = await f()
      if (v !== undefined) return v
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}\n${log}`)
      await new Promise((r) => setTimeout(r, 250))
    }
  }

  it("list shows the deferred message with its last reply; hold, release (picked up at the next poll) and delete work", async () => {
    dir = tempDir("mailroom-queue-serve-")
    const port = await freePort()
    const dead = await freePort() // nothing listens here: every HTTP relay attempt fails with 451 4.4.1
    fs.writeFileSync(
      path.join(dir, "mailroom.yaml"),
      `hostname: mx.mailroom.test
smtp:
  - listen: "127.0.0.1:${port}"
queue:
  storage: { type: disk, path: var/queue }
relay: { type: http, url: "http://127.0.0.1:${dead}/" }
`
    )
    server = spawn(node, [bin, "serve", "--config", "mailroom.yaml"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })
    server.stdout!.on("data", (d) => (log += d))
    server.stderr!.on("data", (d) => (log += d))
    await waitForPort("127.0.0.1", port, 15_000)
    try {
      const transport = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true })
      const sent = await transport.sendMail({ from: "alice@example.org", to: "bob@example.net", subject: "deferred", text: "hello" })
      expect(sent.response).toMatch(/^250 2\.6\.0 Ok: queued as /)

      // the first attempt runs at once and fails transiently
      const first = await waitFor("the first attempt", async () => (await listJson(dir)).find((m) => m.attempts >= 1), 15_000)
      expect(first.recipients).toEqual([
        { address: "bob@example.net", status: "pending", reply: "451 4.4.1 Connection failed: ECONNREFUSED", remoteMta: `http; 127.0.0.1:${dead}`, at: expect.any(Number) }
      ])
      const id = first.id
      const text = await mailroom(["queue", "list", "--config", "mailroom.yaml"], { cwd: dir })
      expect(text.stdout).toMatch(new RegExp(`^${id}  age \\d+s  size \\d+ B  from <alice@example\\.org>\\n  attempts 1, next attempt in (\\d+s|1m)\\n  pending    <bob@example\\.net>  451 4\\.4\\.1 Connection failed: ECONNREFUSED\\n\\n1 message, 0 held\\n$`))
      const shown = await mailroom(["queue", "show", id, "--headers", "--config", "mailroom.yaml"], { cwd: dir })
      expect(shown.stdout).toContain("Subject: deferred\r\n")
      expect(shown.stdout).toMatch(/\n  queued \S+ from 127\.0\.0\.1 \(\S+\) over ESMTP\n/)
      expect(shown.stdout).toMatch(/\n\nReceived: from [^\r]+\s+by mx\.mailroom\.test\s+\(Mailroom\) with ESMTP id /)

      expect(await mailroom(["queue", "hold", id, "--config", "mailroom.yaml"], { cwd: dir })).toMatchObject({ code: 0, stdout: `held ${id}\n` })
      expect((await listJson(dir))[0]).toMatchObject({ id, held: true, attempts: 1 })

      // release makes it due now; the server attempts it when it next re-reads the queue (every 15 s)
      expect(await mailroom(["queue", "release", id, "--config", "mailroom.yaml"], { cwd: dir })).toMatchObject({
        code: 0,
        stdout: `released ${id}: due now\n`
      })
      const second = await waitFor("the attempt after release", async () => (await listJson(dir)).find((m) => m.attempts >= 2), 25_000)
      expect(second).toMatchObject({ id, held: false, recipients: [{ status: "pending", reply: expect.stringMatching(/^451 4\.4\.1 /) }] })

      expect(await mailroom(["queue", "delete", id, "--config", "mailroom.yaml"], { cwd: dir })).toMatchObject({
        code: 0,
        stdout: `deleted ${id}\n`,
        stderr: ""
      })
      expect(await listJson(dir)).toEqual([])
      expect(fs.readdirSync(path.join(dir, "var", "queue", "messages"))).toEqual([])

      // the server is still fine: it takes and queues another message, then stops cleanly
      const more = await transport.sendMail({ from: "alice@example.org", to: "carol@example.net", subject: "more", text: "x" })
      expect(more.response).toMatch(/^250 /)
      const s = server
      const code = await new Promise<number | null>((resolve) => {
        s.once("exit", (c) => resolve(c))
        s.kill("SIGTERM")
      })
      expect(code, log).toBe(0)
      expect(log).not.toMatch(/attempt failed|level=error/)
      expect((await listJson(dir)).map((m) => m.recipients[0]?.address)).toEqual(["carol@example.net"])
    } finally {
      removeDir(dir)
    }
  }, 90_000)

  it("a journal queue has one owner: while the server runs the commands name its pid; once it stopped they work", async () => {
    dir = tempDir("mailroom-queue-journal-")
    const port = await freePort()
    const dead = await freePort()
    fs.writeFileSync(
      path.join(dir, "mailroom.yaml"),
      `hostname: mx.mailroom.test
smtp:
  - listen: "127.0.0.1:${port}"
queue:
  storage: { type: journal, path: var/journal }
relay: { type: http, url: "http://127.0.0.1:${dead}/" }
`
    )
    server = spawn(node, [bin, "serve", "--config", "mailroom.yaml"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })
    server.stdout!.on("data", (d) => (log += d))
    server.stderr!.on("data", (d) => (log += d))
    await waitForPort("127.0.0.1", port, 15_000)
    try {
      const transport = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true })
      const sent = await transport.sendMail({ from: "alice@example.org", to: "bob@example.net", subject: "journal", text: "hello" })
      expect(sent.response).toMatch(/^250 2\.6\.0 Ok: queued as /)
      const id = /queued as (\S+)/.exec(sent.response)![1]!

      const busy = await mailroom(["queue", "list", "--config", "mailroom.yaml"], { cwd: dir })
      expect(busy.code).toBe(1)
      expect(busy.stdout).toBe("")
      expect(busy.stderr).toContain("queue.storage: ")
      expect(busy.stderr).toContain(`pid ${server.pid}`)

      const s = server
      const code = await new Promise<number | null>((resolve) => {
        s.once("exit", (c) => resolve(c))
        s.kill("SIGTERM")
      })
      expect(code, log).toBe(0)

      const listed = await listJson(dir)
      expect(listed).toMatchObject([{ id, held: false, recipients: [{ address: "bob@example.net", status: "pending" }] }])
      const shown = await mailroom(["queue", "show", id, "--headers", "--config", "mailroom.yaml"], { cwd: dir })
      expect(shown.stdout).toContain("Subject: journal\r\n")
      expect(await mailroom(["queue", "delete", id, "--config", "mailroom.yaml"], { cwd: dir })).toMatchObject({ code: 0, stdout: `deleted ${id}\n` })
      expect(await listJson(dir)).toEqual([])
      // each command gave the journal back: no owner is left behind
      expect(fs.existsSync(path.join(dir, "var", "journal", "owner.lock"))).toBe(false)
    } finally {
      removeDir(dir)
    }
  }, 90_000)
})
