/**
 * MaildirRelay on Node's real file system (`@effect/platform-node`'s
 * NodeFileSystem and NodePath): byte-exact copies, trace fields, unique
 * names, path containment, and a real ENOSPC on a small tmpfs.
 */
import { execFileSync } from "node:child_process"
import * as nfs from "node:fs"
import * as os from "node:os"
import * as npath from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { simpleParser } from "mailparser"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as MaildirRelay from "@mailroom/protocol/relay/MaildirRelay"
import type * as Relay from "@mailroom/protocol/relay/Relay"

const services = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer)

const deliver = (options: MaildirRelay.Options, envelope: Envelope.Envelope): Promise<Relay.RelayResult> =>
  Effect.runPromise(
    Effect.provide(Effect.flatMap(MaildirRelay.make(options), (relay) => relay.attempt(envelope, 0)), services)
  )

const enc = new TextEncoder()
const MESSAGE = enc.encode(
  "From: Alice <alice@example.org>\r\n" +
    "To: bob@example.com, carol@example.com\r\n" +
    "Subject: Maildir test \u00e9\r\n" +
    "Message-ID: <m1@example.org>\r\n" +
    "MIME-Version: 1.0\r\n" +
    "Content-Type: text/plain; charset=utf-8\r\n" +
    "Content-Transfer-Encoding: 8bit\r\n" +
    "\r\n" +
    "Hello \u00fcber Maildir.\r\n" +
    ".leading dot line\r\n" +
    "last line\r\n"
)
const LF_MESSAGE = enc.encode(new TextDecoder().decode(MESSAGE).replace(/\r\n/g, "\n"))

const env = (recipients: ReadonlyArray<string>, message: Uint8Array = MESSAGE, sender = "alice@example.org") =>
  Envelope.make({ sender, recipients, message, id: "01test" })

const concat = (...parts: Array<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

const listNew = (folder: string): Array<string> => nfs.readdirSync(npath.join(folder, "new")).sort()

const NAME = /^\d+\.M\d{1,6}P[0-9a-f]+R[0-9a-f]{16}Q\d+\.mx\.example\.com,S=(\d+)$/

let base: string
beforeAll(() => {
  base = nfs.mkdtempSync(npath.join(os.tmpdir(), "mailroom-maildir-"))
})
afterAll(() => {
  nfs.rmSync(base, { recursive: true, force: true })
})

const freshRoot = (name: string): string => {
  const root = npath.join(base, name)
  nfs.mkdirSync(root)
  return root
}

describe("MaildirRelay on Node", () => {
  it("delivers one copy per recipient, byte for byte, with Return-Path and Delivered-To", async () => {
    const root = freshRoot("per-recipient")
    const result = await deliver(
      { root, folders: "per_recipient", hostname: "mx.example.com" },
      env(["bob@example.com", "Carol@Example.COM"])
    )
    expect(result.recipients.map((r) => r.outcome)).toEqual(["delivered", "delivered"])
    expect(result.recipients[0]!.reply).toEqual({ code: 250, enhanced: "2.0.0", lines: ["Delivered to Maildir"] })
    expect(result.remote).toBe(`maildir; ${root}`)
    expect(nfs.readdirSync(root).sort()).toEqual(["bob@example.com", "carol@example.com"])

    for (const [folder, rcpt] of [["bob@example.com", "bob@example.com"], ["carol@example.com", "Carol@Example.COM"]] as const) {
      const dir = npath.join(root, folder)
      expect(nfs.readdirSync(dir).sort()).toEqual(["cur", "new", "tmp"])
      expect(nfs.readdirSync(npath.join(dir, "tmp"))).toEqual([])
      expect(nfs.readdirSync(npath.join(dir, "cur"))).toEqual([])
      const files = listNew(dir)
      expect(files).toHaveLength(1)
      const m = NAME.exec(files[0]!)
      expect(m).not.toBeNull()
      const bytes = new Uint8Array(nfs.readFileSync(npath.join(dir, "new", files[0]!)))
      const expected = concat(enc.encode(`Return-Path: <alice@example.org>\nDelivered-To: ${rcpt}\n`), LF_MESSAGE)
      expect(Buffer.from(bytes).equals(Buffer.from(expected))).toBe(true)
      expect(Number(m![1])).toBe(bytes.length)
      expect(nfs.statSync(npath.join(dir, "new", files[0]!)).mode & 0o777).toBe(0o600)

      const parsed = await simpleParser(Buffer.from(bytes))
      expect((parsed.headers.get("delivered-to") as { text: string }).text).toBe(rcpt)
      expect(parsed.headers.get("return-path")).toEqual({
        value: [{ address: "alice@example.org", name: "" }],
        html: "<span class=\"mp_address_group\"><a href=\"mailto:alice@example.org\" class=\"mp_address_email\">alice@example.org</a></span>",
        text: "alice@example.org"
      })
      expect(parsed.subject).toBe("Maildir test \u00e9")
      expect(parsed.messageId).toBe("<m1@example.org>")
      expect(parsed.text).toBe("Hello \u00fcber Maildir.\n.leading dot line\nlast line\n")
    }
  })

  it("keeps CRLF line ends with newline: crlf", async () => {
    const root = freshRoot("crlf")
    const result = await deliver({ root, folders: "single", hostname: "mx.example.com", newline: "crlf" }, env(["bob@example.com"]))
    expect(result.recipients[0]!.outcome).toBe("delivered")
    const files = listNew(root)
    expect(files).toHaveLength(1)
    const bytes = nfs.readFileSync(npath.join(root, "new", files[0]!))
    const expected = concat(enc.encode("Return-Path: <alice@example.org>\r\nDelivered-To: bob@example.com\r\n"), MESSAGE)
    expect(bytes.equals(Buffer.from(expected))).toBe(true)
  })

  it("puts every copy in root itself with folders: single, each with its own Delivered-To and a unique name", async () => {
    const root = freshRoot("single")
    const result = await deliver(
      { root, folders: "single", hostname: "mx.example.com" },
      env(["a@example.com", "b@example.com", "a@example.com"], MESSAGE, "")
    )
    expect(result.recipients.map((r) => r.outcome)).toEqual(["delivered", "delivered", "delivered"])
    const files = listNew(root)
    expect(new Set(files).size).toBe(3)
    const delivered = await Promise.all(files.map(async (f) => {
      const parsed = await simpleParser(nfs.readFileSync(npath.join(root, "new", f)))
      return (parsed.headers.get("delivered-to") as { text: string }).text
    }))
    expect(delivered.sort()).toEqual(["a@example.com", "a@example.com", "b@example.com"])
    // the null sender is written as Return-Path: <>
    const first = nfs.readFileSync(npath.join(root, "new", files[0]!), "latin1")
    expect(first.startsWith("Return-Path: <>\nDelivered-To: ")).toBe(true)
  })

  it("never writes outside root: a traversal address becomes a plain folder name", async () => {
    const root = freshRoot("traversal")
    const before = nfs.readdirSync(base).sort()
    const result = await deliver(
      { root, folders: "per_recipient", hostname: "mx.example.com" },
      env(["../../etc/passwd@x", "..", "/abs/path@x", ".hidden@x", "a\u0000b\r\n@x"])
    )
    expect(result.recipients.map((r) => r.outcome)).toEqual(["delivered", "delivered", "delivered", "delivered", "delivered"])
    expect(nfs.readdirSync(root).sort()).toEqual(["_", "____etc_passwd@x", "_abs_path@x", "_hidden@x", "a_b__@x"])
    expect(nfs.readdirSync(base).sort()).toEqual(before)
    expect(nfs.existsSync("/etc/passwd@x")).toBe(false)
    expect(nfs.existsSync("/abs")).toBe(false)
  })

  it("refuses a mapping that points outside root, and 550s an unknown user", async () => {
    const root = freshRoot("mapped")
    const outside = npath.join(base, "outside")
    const mapping = (r: string): string | undefined =>
      r === "bob@example.com" ? "users/bob/Maildir" : r === "evil@example.com" ? "../outside" : r === "abs@example.com" ? outside : undefined
    const result = await deliver(
      { root, folders: "per_recipient", hostname: "mx.example.com", mapping },
      env(["bob@example.com", "evil@example.com", "abs@example.com", "nobody@example.com"])
    )
    expect(result.recipients).toEqual([
      { outcome: "delivered", reply: { code: 250, enhanced: "2.0.0", lines: ["Delivered to Maildir"] } },
      { outcome: "transient", reply: { code: 451, enhanced: "4.3.5", lines: ["Mailbox path outside the Maildir root"] } },
      { outcome: "transient", reply: { code: 451, enhanced: "4.3.5", lines: ["Mailbox path outside the Maildir root"] } },
      { outcome: "permanent", reply: { code: 550, enhanced: "5.1.1", lines: ["No such user here"] } }
    ])
    expect(listNew(npath.join(root, "users/bob/Maildir"))).toHaveLength(1)
    expect(nfs.existsSync(outside)).toBe(false)
  })

  it("answers 451 4.3.0 for an I/O error (root is a file)", async () => {
    const file = npath.join(base, "not-a-dir")
    nfs.writeFileSync(file, "x")
    const result = await deliver({ root: file, folders: "per_recipient", hostname: "mx.example.com" }, env(["bob@example.com"]))
    expect(result.recipients).toEqual([
      { outcome: "transient", reply: { code: 451, enhanced: "4.3.0", lines: ["Maildir write error (ENOTDIR)"] } }
    ])
  })

  it("answers 452 4.2.2 Mailbox full on a full file system (a 64 KiB tmpfs) and leaves nothing in tmp/", async () => {
    const mnt = npath.join(base, "tmpfs")
    nfs.mkdirSync(mnt)
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", mnt], { stdio: "pipe" })
    } catch (e) {
      throw new Error(
        `this test needs a real full file system: mounting a 64 KiB tmpfs at ${mnt} failed ` +
          `(run the tests as root, or in a container with CAP_SYS_ADMIN): ${String((e as { stderr?: unknown }).stderr ?? e)}`
      )
    }
    try {
      const big = new Uint8Array(256 * 1024).fill(0x61)
      for (let i = 76; i < big.length; i += 78) {
        big[i] = 0x0d
        big[i + 1] = 0x0a
      }
      const message = concat(enc.encode("Subject: big\r\n\r\n"), big)
      const result = await deliver({ root: mnt, folders: "per_recipient", hostname: "mx.example.com" }, env(["bob@example.com", "c@example.com"], message))
      expect(result.recipients[0]).toEqual({ outcome: "transient", reply: { code: 452, enhanced: "4.2.2", lines: ["Mailbox full"] } })
      expect(result.recipients[1]!.outcome).toBe("transient")
      expect(result.recipients[1]!.reply.code).toBe(452)
      expect(nfs.readdirSync(npath.join(mnt, "bob@example.com", "tmp"))).toEqual([])
      expect(listNew(npath.join(mnt, "bob@example.com"))).toEqual([])
      // a small message still fits: the relay recovers once there is room
      const small = await deliver({ root: mnt, folders: "per_recipient", hostname: "mx.example.com" }, env(["bob@example.com"]))
      expect(small.recipients[0]!.outcome).toBe("delivered")
    } finally {
      execFileSync("umount", [mnt])
    }
  })
})
