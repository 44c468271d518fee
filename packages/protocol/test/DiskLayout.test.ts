import fc from "fast-check"
import { Result } from "effect"
import { describe, expect, it } from "vitest"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as DiskLayout from "../src/queue/DiskLayout.ts"
import * as QueueStorage from "../src/queue/QueueStorage.ts"

const join = (...parts: Array<string>) => parts.join("/")
const id = "0123456789abcdefABCDEF_-"
const envelope = Envelope.make({ id, sender: "a@example.org", recipients: ["b@example.com"], message: new TextEncoder().encode("Hi\r\n") })
const meta = QueueStorage.initialMeta(envelope, 1_000, 2_000)

describe("DiskLayout paths and names", () => {
  it("builds every path of layout version 1", () => {
    const p = DiskLayout.paths("/q", join)
    expect(p.dirs).toEqual({ messages: "/q/messages", meta: "/q/meta", tmp: "/q/tmp", lock: "/q/lock", corrupt: "/q/corrupt" })
    expect(p.layoutFile).toBe("/q/layout.json")
    expect(p.body("x")).toBe("/q/messages/x.eml")
    expect(p.record("x")).toBe("/q/meta/x.json")
    expect(p.lock("x")).toBe("/q/lock/x.lock")
    expect(p.tmp("x", 42, 35, "json")).toBe("/q/tmp/x.42.z.json")
    expect(p.layoutTmp(42, 36)).toBe("/q/tmp/layout.42.10.json")
    expect(p.quarantine("x", 1700, "eml")).toBe("/q/corrupt/x.1700.eml")
    expect(DiskLayout.directoryNames).toEqual(["messages", "meta", "tmp", "lock", "corrupt"])
  })

  it("lists the ids of one extension, skipping foreign names", () => {
    const names = ["a.eml", "a.json", "b.json", "c.txt", ".hidden.json", "d.1.x.json", "bad id.json", `${"x".repeat(129)}.json`]
    expect(DiskLayout.idsOf(names, "json")).toEqual(["a", "b"])
    expect(DiskLayout.idsOf(names, "eml")).toEqual(["a"])
  })

  it("writes and checks layout.json", () => {
    expect(DiskLayout.layoutText).toBe("{\"format\":\"mailroom-queue\",\"v\":1}\n")
    expect(DiskLayout.isLayout(DiskLayout.layoutText)).toBe(true)
    expect(DiskLayout.isLayout("{\"format\":\"mailroom-queue\",\"v\":2}")).toBe(false)
    expect(DiskLayout.isLayout("{\"format\":\"other\",\"v\":1}")).toBe(false)
    expect(DiskLayout.isLayout("not json")).toBe(false)
    expect(DiskLayout.isLayout("null")).toBe(false)
    const e = DiskLayout.layoutError("/q/layout.json", "x".repeat(100))
    expect(e.reason).toBe("Corrupt")
    expect(e.operation).toBe("open")
    expect(e.detail).toBe(`/q/layout.json: not a version 1 mailroom queue (${"x".repeat(80)})`)
  })

  it("never throws on arbitrary layout text or names", () => {
    fc.assert(fc.property(fc.string(), (s) => {
      expect(typeof DiskLayout.isLayout(s)).toBe("boolean")
      expect(DiskLayout.classifyTmp(s, 0, () => true)._tag).toMatch(/^(Keep|Remove)$/)
      expect(Array.isArray(DiskLayout.idsOf([s], "json"))).toBe(true)
    }))
  })
})

describe("DiskLayout records", () => {
  it("round-trips a record through its text", () => {
    const text = DiskLayout.encodeRecord(envelope, meta)
    expect(text).toBe(JSON.stringify(QueueStorage.encodeRecord(envelope, meta)))
    const r = DiskLayout.decodeRecord("read", id, "/q/meta/r.json", text, envelope.message)
    expect(Result.isSuccess(r)).toBe(true)
    if (Result.isSuccess(r)) {
      expect(r.success.meta).toEqual(meta)
      expect(r.success.envelope.message).toEqual(envelope.message)
    }
    const e = DiskLayout.decodeEnvelope("envelope", id, "/q/meta/r.json", text)
    expect(Result.isSuccess(e) && e.success.sender).toBe("a@example.org")
  })

  it("fails with Corrupt naming the file", () => {
    const bad = DiskLayout.decodeRecord("read", id, "/f.json", "{")
    expect(Result.isFailure(bad) && [bad.failure.reason, bad.failure.detail]).toEqual(["Corrupt", "/f.json: not valid JSON"])
    const other = DiskLayout.decodeRecord("meta", "other", "/f.json", DiskLayout.encodeRecord(envelope, meta))
    expect(Result.isFailure(other) && other.failure.detail).toBe(`/f.json: holds id ${id}`)
    const notRecord = DiskLayout.decodeRecord("list", id, "/f.json", "{}")
    expect(Result.isFailure(notRecord) && notRecord.failure.reason).toBe("Corrupt")
    expect(Result.isFailure(notRecord) && notRecord.failure.detail.startsWith("/f.json: ")).toBe(true)
    const env = DiskLayout.decodeEnvelope("envelope", id, "/f.json", "[")
    expect(Result.isFailure(env) && env.failure.detail).toBe("/f.json: not valid JSON")
  })

  it("finds what is wrong with a record at open", () => {
    const text = DiskLayout.encodeRecord(envelope, meta)
    expect(DiskLayout.recordProblem(id, "/m.json", text, "/b.eml", 4)).toBeUndefined()
    expect(DiskLayout.recordProblem(id, "/m.json", text, "/b.eml", undefined)).toBe("/b.eml is missing")
    expect(DiskLayout.recordProblem(id, "/m.json", text, "/b.eml", 3)).toBe("/b.eml has 3 bytes, the record says 4")
    expect(DiskLayout.recordProblem(id, "/m.json", "{", "/b.eml", 4)).toBe("/m.json: not valid JSON")
    expect(DiskLayout.recoveryWarning("p", "x", "/c")).toBe("QueueStorage: p; moved message x to /c")
  })
})

describe("DiskLayout recovery decisions", () => {
  const alive = (pid: number) => pid === 7
  it("keeps a live writer's young files in tmp/, removes the rest", () => {
    expect(DiskLayout.classifyTmp("m1.7.a.json", 10, alive)).toEqual({ _tag: "Keep", writing: "m1" })
    expect(DiskLayout.classifyTmp("m1.7.a.eml", 10, alive)).toEqual({ _tag: "Keep", writing: undefined })
    // "layout" is itself a valid id, so the layout file in progress reads as its record (harmless)
    expect(DiskLayout.classifyTmp("layout.7.0.json", 10, alive)).toEqual({ _tag: "Keep", writing: "layout" })
    expect(DiskLayout.classifyTmp("m1.8.a.json", 10, alive)).toEqual({ _tag: "Remove" })
    expect(DiskLayout.classifyTmp("layout.8.0.json", 10, alive)).toEqual({ _tag: "Remove" })
    expect(DiskLayout.classifyTmp("m1.7.a.json", DiskLayout.TMP_MAX_AGE_MS, alive)).toEqual({ _tag: "Remove" })
    expect(DiskLayout.classifyTmp("junk", 0, () => true)).toEqual({ _tag: "Remove" })
  })

  it("breaks stale locks", () => {
    expect(DiskLayout.lockIsStale(31, "7", 30, alive, false)).toBe(true)
    expect(DiskLayout.lockIsStale(5, "7", 30, alive, false)).toBe(false)
    expect(DiskLayout.lockIsStale(5, "8", 30, alive, false)).toBe(true)
    // an empty lock is being taken right now, unless found at open
    expect(DiskLayout.lockIsStale(5, "", 30, alive, false)).toBe(false)
    expect(DiskLayout.lockIsStale(5, "", 30, alive, true)).toBe(true)
    expect(DiskLayout.lockIsStale(5, "7", 30, alive, true)).toBe(false)
  })

  it("picks orphan body candidates", () => {
    expect(DiskLayout.orphanCandidates(["a", "b", "c", "d"], new Set(["a"]), new Set(["c"]))).toEqual(["b", "d"])
  })
})

describe("DiskLayout errors", () => {
  it("maps errno codes to reasons", () => {
    expect(DiskLayout.reasonOf("ENOSPC")).toBe("Full")
    expect(DiskLayout.reasonOf("EDQUOT")).toBe("Full")
    expect(DiskLayout.reasonOf("EIO")).toBe("Io")
    expect(DiskLayout.reasonOf(undefined)).toBe("Io")
    expect(DiskLayout.reasonOf(undefined, "write: No space left on device (os error 28)")).toBe("Full")
    expect(DiskLayout.reasonOf(undefined, "Disk quota exceeded")).toBe("Full")
    expect(DiskLayout.codeOf({ code: "ENOENT" })).toBe("ENOENT")
    expect(DiskLayout.codeOf({ code: 1 })).toBeUndefined()
    expect(DiskLayout.codeOf(null)).toBeUndefined()
  })

  it("maps thrown values to StorageErrors", () => {
    const known = QueueStorage.error("Conflict", "write", "x", "exists")
    expect(DiskLayout.toError("write", "x", known, undefined)).toBe(known)
    const full = DiskLayout.toError("write", "x", new Error("disk full"), "ENOSPC")
    expect([full.reason, full.operation, full.id, full.detail]).toEqual(["Full", "write", "x", "disk full"])
    const text = new Error("No space left on device")
    expect(DiskLayout.toError("write", "x", text, undefined).reason).toBe("Io")
    expect(DiskLayout.toError("write", "x", text, undefined, true).reason).toBe("Full")
    expect(DiskLayout.toError("list", undefined, "boom", undefined).detail).toBe("boom")
    const nf = DiskLayout.notFound("read", "x")
    expect([nf.reason, nf.detail]).toEqual(["NotFound", "no such message"])
  })
})

describe("DiskLayout coordination", () => {
  it("GroupCommit serves every caller that arrived during an fsync with one more fsync", async () => {
    const runs: Array<() => void> = []
    const g = new DiskLayout.GroupCommit(() => new Promise<void>((resolve) => runs.push(resolve)))
    const settled: Array<string> = []
    const a = g.sync().then(() => settled.push("a"))
    const b = g.sync().then(() => settled.push("b"))
    const c = g.sync().then(() => settled.push("c"))
    expect(runs.length).toBe(1)
    runs[0]!()
    await a
    expect(settled).toEqual(["a"])
    // b and c arrived while the first fsync ran: one more fsync serves both
    for (let i = 0; i < 20 && runs.length < 2; i++) await Promise.resolve()
    expect(runs.length).toBe(2)
    runs[1]!()
    await Promise.all([b, c])
    expect(settled).toEqual(["a", "b", "c"])
    expect(runs.length).toBe(2)
  })

  it("GroupCommit fails the whole batch when the fsync fails, and recovers", async () => {
    let fail = true
    const g = new DiskLayout.GroupCommit(() => (fail ? Promise.reject(new Error("EIO")) : Promise.resolve()))
    await expect(g.sync()).rejects.toThrow("EIO")
    fail = false
    await expect(g.sync()).resolves.toBeUndefined()
  })

  it("KeyedQueue runs one function per key at a time, in call order, and survives failures", async () => {
    const q = new DiskLayout.KeyedQueue()
    const log: Array<string> = []
    let release!: () => void
    const first = q.run("k", async () => {
      log.push("1 start")
      await new Promise<void>((r) => (release = r))
      log.push("1 end")
      throw new Error("one")
    })
    const second = q.run("k", async () => {
      log.push("2")
      return 2
    })
    const other = q.run("j", async () => {
      log.push("other")
      return 3
    })
    await other
    expect(log).toEqual(["1 start", "other"])
    release()
    await expect(first).rejects.toThrow("one")
    await expect(second).resolves.toBe(2)
    expect(log).toEqual(["1 start", "other", "1 end", "2"])
  })
})

describe("DiskLayout RecordIndex", () => {
  /** A meta/ directory in memory: each record's text and version, with every read counted. */
  const directory = (now: number) => {
    const files = new Map<string, { text: string; version: DiskLayout.RecordVersion | undefined }>()
    let ino = 100
    const reads: Array<string> = []
    const quarantined: Array<string> = []
    const put = (m: QueueStorage.Meta, at = now - 10_000, text?: string) =>
      files.set(m.id, {
        text: text ?? DiskLayout.encodeRecord({ ...envelope, id: m.id }, m),
        version: { ino: ino++, size: 300, mtimeMs: at, ctimeMs: at }
      })
    const io: DiskLayout.ListIo = {
      version: async (id) => files.get(id)?.version,
      readText: async (id) => {
        reads.push(id)
        return files.get(id)?.text
      },
      decode: (id, text) => {
        const r = DiskLayout.decodeRecord("list", id, `meta/${id}.json`, text)
        if (Result.isFailure(r)) throw r.failure
        return r.success.meta
      },
      quarantine: async (id) => {
        quarantined.push(id)
        files.delete(id)
      }
    }
    return { files, put, io, reads, quarantined }
  }
  const metaOf = (n: number, patch: Partial<QueueStorage.Meta> = {}): QueueStorage.Meta => ({ ...meta, id: `m${n}`, ...patch })
  const now = 1_800_000_000_000

  it("reads a settled record once, then takes it from the index until its version changes", async () => {
    const d = directory(now)
    for (let n = 1; n <= 3; n++) d.put(metaOf(n))
    const index = new DiskLayout.RecordIndex()
    const first = await index.list(["m3", "m1", "m2"], now, d.io)
    expect(first.metas.map((m) => m.id)).toEqual(["m1", "m2", "m3"])
    expect(d.reads.sort()).toEqual(["m1", "m2", "m3"])
    d.reads.length = 0
    expect((await index.list(["m1", "m2", "m3"], now + 15_000, d.io)).metas).toEqual(first.metas)
    expect(d.reads).toEqual([])
    // a rewrite (a new inode), an edit in place (a new ctime only) and a chmod-like change (ctime)
    d.put(metaOf(2, { held: true }), now + 15_000 - 5_000)
    const v3 = d.files.get("m3")!.version!
    d.files.set("m3", { text: DiskLayout.encodeRecord({ ...envelope, id: "m3" }, metaOf(3, { attempts: 7 })), version: { ...v3, ctimeMs: v3.ctimeMs + 1 } })
    const second = await index.list(["m1", "m2", "m3"], now + 20_000, d.io)
    expect(second.metas.map((m) => [m.id, m.held, m.attempts])).toEqual([["m1", false, 0], ["m2", true, 0], ["m3", false, 7]])
    expect(d.reads.sort()).toEqual(["m2", "m3"])
  })

  it("reads a record changed less than settleMs before the listing every time (a change in the same tick keeps its times)", async () => {
    const d = directory(now)
    d.put(metaOf(1), now - 500)
    const index = new DiskLayout.RecordIndex({ settleMs: 2_000 })
    await index.list(["m1"], now, d.io)
    // rewritten in place within the same clock tick: the same version, new text
    d.files.set("m1", { text: DiskLayout.encodeRecord({ ...envelope, id: "m1" }, metaOf(1, { held: true })), version: d.files.get("m1")!.version })
    expect((await index.list(["m1"], now + 1, d.io)).metas[0]!.held).toBe(true)
    expect(d.reads).toEqual(["m1", "m1"])
    expect(index.size).toBe(0)
    // once settled, it is indexed
    await index.list(["m1"], now + 5_000, d.io)
    expect(index.size).toBe(1)
  })

  it("reads every time without a version, skips records gone meanwhile, drops ids no longer listed", async () => {
    const d = directory(now)
    d.put(metaOf(1))
    d.put(metaOf(2))
    d.files.set("m2", { ...d.files.get("m2")!, version: undefined })
    const index = new DiskLayout.RecordIndex()
    await index.list(["m1", "m2"], now, d.io)
    await index.list(["m1", "m2"], now, d.io)
    expect(d.reads.sort()).toEqual(["m1", "m2", "m2"])
    // m1 removed between the directory listing and its read: skipped, and out of the index
    d.files.delete("m1")
    expect((await index.list(["m1", "m2"], now, d.io)).metas.map((m) => m.id)).toEqual(["m2"])
    expect(index.size).toBe(0)
    d.put(metaOf(3))
    await index.list(["m3"], now, d.io)
    expect(index.size).toBe(1)
    await index.list([], now, d.io)
    expect(index.size).toBe(0)
  })

  it("quarantines a corrupt record and returns its error; indexes at most maxEntries", async () => {
    const d = directory(now)
    d.put(metaOf(1))
    d.put(metaOf(2), now - 10_000, "{not json")
    for (let n = 3; n <= 6; n++) d.put(metaOf(n))
    const index = new DiskLayout.RecordIndex({ maxEntries: 3 })
    const listed = await index.list(["m1", "m2", "m3", "m4", "m5", "m6"], now, d.io)
    expect(listed.metas.map((m) => m.id)).toEqual(["m1", "m3", "m4", "m5", "m6"])
    expect(d.quarantined).toEqual(["m2"])
    expect(listed.quarantined.map((e) => [e.reason, e.id])).toEqual([["Corrupt", "m2"]])
    expect(index.size).toBe(3)
    d.reads.length = 0
    await index.list(["m1", "m3", "m4", "m5", "m6"], now, d.io)
    expect(d.reads.length).toBe(2)
  })
})
