import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Path from "effect/Path"
import * as PlatformError from "effect/PlatformError"
import * as Random from "effect/Random"
import * as TestClock from "effect/testing/TestClock"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as MaildirRelay from "../src/relay/MaildirRelay.ts"
import type * as Relay from "../src/relay/Relay.ts"
import * as Bytes from "../src/wire/Bytes.ts"

const b = Bytes.fromLatin1
const posix = Effect.runSync(Effect.provide(Effect.service(Path.Path), Path.layer))

const sysError = (code: string, method: string, description?: string): PlatformError.PlatformError =>
  PlatformError.systemError({ _tag: "Unknown", module: "FileSystem", method, description, cause: Object.assign(new Error(code), { code }) })

describe("MaildirRelay names", () => {
  it("folderName makes addresses safe file names", () => {
    expect(MaildirRelay.folderName("Bob@Example.COM")).toBe("bob@example.com")
    expect(MaildirRelay.folderName("../../etc/passwd@x")).toBe("____etc_passwd@x")
    expect(MaildirRelay.folderName("..")).toBe("_")
    expect(MaildirRelay.folderName(".")).toBe("_")
    expect(MaildirRelay.folderName("")).toBe("_")
    expect(MaildirRelay.folderName(".profile@x")).toBe("_profile@x")
    expect(MaildirRelay.folderName("a\\b/c\u0000d\r\ne@x")).toBe("a_b_c_d__e@x")
    expect(MaildirRelay.folderName("a.b@x.example")).toBe("a.b@x.example")
    const long = MaildirRelay.folderName(`${"x".repeat(64)}@${"d".repeat(250)}.example`)
    expect(long.length).toBe(200)
    expect(long).toMatch(/^x{64}@d+~[0-9a-f]{8}$/)
  })

  it("folderName never yields a path or a name outside root (property)", () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.stringMatching(/^[./\\a@]{0,12}$/)), (address) => {
      const name = MaildirRelay.folderName(address)
      expect(name.length).toBeGreaterThan(0)
      expect(name.length).toBeLessThanOrEqual(200)
      expect(name).not.toContain("/")
      expect(name).not.toContain("..")
      expect(name.startsWith(".")).toBe(false)
      expect(/[\u0000-\u001f\u007f]/.test(name)).toBe(false)
      const inside = posix.resolveWithin("/var/mail", name)
      expect(Option.isSome(inside) && inside.value !== "/var/mail" && posix.dirname(inside.value) === "/var/mail").toBe(true)
    }))
  })

  it("hostPart escapes / and : as the Maildir convention says", () => {
    expect(MaildirRelay.hostPart("mx.example.com")).toBe("mx.example.com")
    expect(MaildirRelay.hostPart("a/b:c d")).toBe("a\\057b\\072cd")
    expect(MaildirRelay.hostPart("")).toBe("localhost")
  })

  it("traceFields writes Return-Path and Delivered-To with the line ends asked for", () => {
    expect(Bytes.toLatin1(MaildirRelay.traceFields("a@x", "b@y", "crlf"))).toBe("Return-Path: <a@x>\r\nDelivered-To: b@y\r\n")
    expect(Bytes.toLatin1(MaildirRelay.traceFields("", "b@y\r\nX-Evil: 1", "lf"))).toBe("Return-Path: <>\nDelivered-To: b@y  X-Evil: 1\n")
  })
})

describe("MaildirRelay errors", () => {
  it("maps ENOSPC and EDQUOT (Node codes or Deno texts) to 452 4.2.2, others to 451 4.3.0", () => {
    expect(MaildirRelay.replyFor(sysError("ENOSPC", "write"))).toEqual({ code: 452, enhanced: "4.2.2", lines: ["Mailbox full"] })
    expect(MaildirRelay.replyFor(sysError("EDQUOT", "write"))).toEqual({ code: 452, enhanced: "4.2.2", lines: ["Mailbox full"] })
    const deno = PlatformError.systemError({ _tag: "Unknown", module: "FileSystem", method: "write", description: "No space left on device (os error 28)" })
    expect(MaildirRelay.isDiskFull(deno)).toBe(true)
    expect(MaildirRelay.replyFor(sysError("EIO", "sync"))).toEqual({ code: 451, enhanced: "4.3.0", lines: ["Maildir write error (EIO)"] })
    const tagged = PlatformError.systemError({ _tag: "PermissionDenied", module: "FileSystem", method: "open" })
    expect(MaildirRelay.replyFor(tagged)).toEqual({ code: 451, enhanced: "4.3.0", lines: ["Maildir write error (PermissionDenied)"] })
  })
})

// A file system that records what the relay does, failing where told.
const recording = (failAt?: { readonly op: string; readonly error: PlatformError.PlatformError }) => {
  const ops: Array<string> = []
  const files = new Map<string, Uint8Array>()
  // recorded when run, not when built
  const step = (op: string): Effect.Effect<void, PlatformError.PlatformError> =>
    Effect.suspend(() => {
      ops.push(op)
      return failAt !== undefined && op.startsWith(failAt.op) ? Effect.fail(failAt.error) : Effect.void
    })
  const fs = FileSystem.makeNoop({
    makeDirectory: (p, o) => step(`mkdir ${p} ${o?.recursive ? "-p" : ""} ${o?.mode?.toString(8)}`),
    open: (p, o) =>
      Effect.map(step(`open ${p} ${o?.flag} ${o?.mode?.toString(8) ?? ""}`.trimEnd()), () => {
        let data: Uint8Array = new Uint8Array(0)
        return {
          writeAll: (bytes: Uint8Array) =>
            Effect.map(step(`write ${p} ${bytes.length}`), () => {
              data = Bytes.concat([data, bytes])
              files.set(p, data)
            }),
          sync: step(`sync ${p}`)
        } as unknown as FileSystem.File
      }),
    link: (from, to) =>
      Effect.map(step(`link ${from} ${to}`), () => {
        files.set(to, files.get(from)!)
      }),
    rename: (from, to) => step(`rename ${from} ${to}`),
    remove: (p, o) =>
      Effect.map(step(`remove ${p}${o?.force ? " -f" : ""}`), () => {
        files.delete(p)
      })
  })
  return { ops, files, layer: Layer.mergeAll(Layer.succeed(FileSystem.FileSystem)(fs), Path.layer) }
}

const deliver = (
  options: MaildirRelay.Options,
  envelope: Envelope.Envelope,
  layer: Layer.Layer<FileSystem.FileSystem | Path.Path>
): Promise<Relay.RelayResult> =>
  Effect.runPromise(
    Effect.gen(function*() {
      yield* TestClock.setTime(1795325265123)
      const relay = yield* MaildirRelay.make(options)
      return yield* relay.attempt(envelope, 0)
    }).pipe(Random.withSeed("maildir"), Effect.provide(Layer.merge(layer, TestClock.layer())))
  )

const env = Envelope.make({ sender: "a@x", recipients: ["Bob@Y"], message: b("Subject: s\r\n\r\nbody\r\n") })

describe("MaildirRelay over a recording FileSystem", () => {
  it("creates the folders, writes tmp exclusively, fsyncs, links into new, removes tmp, fsyncs the directories", async () => {
    const fs = recording()
    const result = await deliver({ root: "/var/mail", folders: "per_recipient", hostname: "mx/1" }, env, fs.layer)
    expect(result.recipients).toEqual([{ outcome: "delivered", reply: { code: 250, enhanced: "2.0.0", lines: ["Delivered to Maildir"] } }])
    const name = /^open \/var\/mail\/bob@y\/tmp\/(\S+) wx 600$/.exec(fs.ops[3]!)![1]!
    expect(name).toMatch(/^1795325265\.M123000P[0-9a-f]+R[0-9a-f]{16}Q1\.mx\\0571,S=56$/)
    expect(fs.ops).toEqual([
      "mkdir /var/mail/bob@y/tmp -p 700",
      "mkdir /var/mail/bob@y/new -p 700",
      "mkdir /var/mail/bob@y/cur -p 700",
      `open /var/mail/bob@y/tmp/${name} wx 600`,
      `write /var/mail/bob@y/tmp/${name} 39`,
      `write /var/mail/bob@y/tmp/${name} 17`,
      `sync /var/mail/bob@y/tmp/${name}`,
      `link /var/mail/bob@y/tmp/${name} /var/mail/bob@y/new/${name}`,
      `remove /var/mail/bob@y/tmp/${name}`,
      "open /var/mail/bob@y/new r",
      "sync /var/mail/bob@y/new"
    ])
    expect(Bytes.toLatin1(fs.files.get(`/var/mail/bob@y/new/${name}`)!)).toBe("Return-Path: <a@x>\nDelivered-To: Bob@Y\nSubject: s\n\nbody\n")
  })

  it("is deterministic under a fixed clock and seed", async () => {
    const a = recording()
    const b2 = recording()
    await deliver({ root: "/m", folders: "single", hostname: "h" }, env, a.layer)
    await deliver({ root: "/m", folders: "single", hostname: "h" }, env, b2.layer)
    expect(a.ops).toEqual(b2.ops)
  })

  it("falls back to rename where hard links are not permitted", async () => {
    const fs = recording({ op: "link", error: PlatformError.systemError({ _tag: "PermissionDenied", module: "FileSystem", method: "link" }) })
    const result = await deliver({ root: "/m", folders: "single", hostname: "h" }, env, fs.layer)
    expect(result.recipients[0]!.outcome).toBe("delivered")
    expect(fs.ops.some((o) => o.startsWith("rename /m/tmp/"))).toBe(true)
  })

  it("answers 452 on ENOSPC during the write and removes the tmp file", async () => {
    const fs = recording({ op: "write", error: sysError("ENOSPC", "writeAll") })
    const result = await deliver({ root: "/m", folders: "single", hostname: "h" }, env, fs.layer)
    expect(result.recipients).toEqual([{ outcome: "transient", reply: { code: 452, enhanced: "4.2.2", lines: ["Mailbox full"] } }])
    expect(fs.ops.at(-1)).toMatch(/^remove \/m\/tmp\/\S+ -f$/)
    expect(fs.ops.some((o) => o.startsWith("link"))).toBe(false)
  })

  it("answers 451 4.3.0 when fsync fails, and never links an unsynced file", async () => {
    const fs = recording({ op: "sync /m/tmp/", error: sysError("EIO", "sync") })
    const result = await deliver({ root: "/m", folders: "single", hostname: "h" }, env, fs.layer)
    expect(result.recipients).toEqual([{ outcome: "transient", reply: { code: 451, enhanced: "4.3.0", lines: ["Maildir write error (EIO)"] } }])
    expect(fs.ops.some((o) => o.startsWith("link"))).toBe(false)
  })

  it("tolerates EINVAL from a directory fsync (file systems that cannot)", async () => {
    const fs = recording({ op: "sync /m/new", error: sysError("EINVAL", "sync") })
    expect((await deliver({ root: "/m", folders: "single", hostname: "h" }, env, fs.layer)).recipients[0]!.outcome).toBe("delivered")
  })

  it("uses the mapping: unknown users 550 5.1.1, escapes 451 4.3.5, nothing touched for either", async () => {
    const fs = recording()
    const two = Envelope.make({ sender: "a@x", recipients: ["nobody@y", "evil@y", "ok@y"], message: b("S: x\r\n\r\n") })
    const mapping = (r: string) => (r === "ok@y" ? "ok/Maildir" : r === "evil@y" ? "ok/../../etc" : undefined)
    const result = await deliver({ root: "/m", folders: "per_recipient", hostname: "h", mapping }, two, fs.layer)
    expect(result.recipients.map((r) => [r.outcome, r.reply.code, r.reply.enhanced])).toEqual([
      ["permanent", 550, "5.1.1"],
      ["transient", 451, "4.3.5"],
      ["delivered", 250, "2.0.0"]
    ])
    expect(fs.ops.every((o) => o.includes("/m/ok/Maildir/"))).toBe(true)
  })
})
