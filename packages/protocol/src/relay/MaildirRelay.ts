/**
 * The Maildir relay: local delivery into Maildir folders, written through
 * effect's `FileSystem` and `Path` services so that it runs on every runtime
 * that provides them (`@effect/platform-node`'s `NodeFileSystem`/`NodePath`,
 * Deno's, Bun's).
 *
 * For each recipient, in order:
 *
 * 1. the folder: with `mapping`, the folder it names relative to `root`
 *    (`undefined` means no such user: permanent `550 5.1.1 No such user
 *    here`); else `root/<address>` (`folders: "per_recipient"`, the address
 *    lower-cased and made a safe file name: no `/`, `\`, `..`, control
 *    characters or leading dot, long names shortened with a hash) or `root`
 *    itself (`"single"`). Whatever the mapping or the address says, a folder
 *    that resolves outside `root` is never written (the check is lexical:
 *    `root` must not contain symlinks planted by others).
 * 2. `tmp/`, `new/`, `cur/` are created when missing (mode 0700);
 * 3. the copy is written to `tmp/<unique>` (created exclusively, mode 0600):
 *    `Return-Path: <sender>` and `Delivered-To: <recipient>` fields, then the
 *    message bytes; the file is fsynced;
 * 4. it is hard-linked into `new/` (falling back to a rename where the file
 *    system has no hard links), `tmp/` is cleaned, and `new/` is fsynced: a
 *    `250` means the copy is on stable storage.
 *
 * Unique names follow the Maildir convention
 * `<seconds>.M<micros>P<tag>R<random hex>Q<n>.<host>,S=<size>`, from the
 * `Clock` and `Random` services (the `P` tag is random per relay instance;
 * the pure core has no process id).
 *
 * Errors: ENOSPC / EDQUOT give transient `452 4.2.2 Mailbox full`; any other
 * I/O error transient `451 4.3.0` naming the error code, never a path.
 *
 * Line ends: LF by default, as Unix mail readers, Postfix's local(8) and
 * Dovecot write Maildir files; `newline: "crlf"` keeps the bytes unchanged.
 *
 * What this module deliberately does not do: Maildir++ subfolders, quotas of
 * its own (the file system's quota is honoured), Sieve, or locking (Maildir
 * needs none).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Path from "effect/Path"
import type * as PlatformError from "effect/PlatformError"
import * as Random from "effect/Random"
import type * as Envelope from "../envelope/Envelope.ts"
import * as Headers from "../envelope/Headers.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Bytes from "../wire/Bytes.ts"
import { crlfToLf } from "./PipeRelay.ts"
import * as Relay from "./Relay.ts"

/** Maildir relay settings. */
export interface Options {
  /** The directory under which every folder lives. */
  readonly root: string
  /** One folder per recipient under `root`, or `root` itself for everyone. Ignored when `mapping` is given. */
  readonly folders: "per_recipient" | "single"
  /** The folder for a recipient, relative to `root` (`""` is `root`), or `undefined` for an unknown user. */
  readonly mapping?: ((recipient: string) => string | undefined) | undefined
  /** Our host name, the last part of every file name. */
  readonly hostname: string
  /** Line ends of the stored copy. Default `"lf"`. */
  readonly newline?: "lf" | "crlf" | undefined
}

/** `452 4.2.2 Mailbox full`. */
export const mailboxFull = Reply.make(452, "4.2.2", "Mailbox full")
/** `550 5.1.1 No such user here`. */
export const noSuchUser = Reply.make(550, "5.1.1", "No such user here")

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

const fnv1a = (s: string): string => {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h.toString(16).padStart(8, "0")
}

const MAX_NAME = 200

/**
 * The folder name for an address: lower-cased; `/`, `\`, control characters
 * and NUL become `_`; every run of two or more dots becomes `_`; a leading
 * dot becomes `_`; names longer than 200 characters keep 191 and end with
 * `~` and a hash of the whole name. Never empty, `.` or `..`, never a path.
 */
export const folderName = (address: string): string => {
  let s = address
    .toLowerCase()
    .replace(/[\u0000-\u001f\u007f-\u009f/\\]/g, "_")
    .replace(/\.{2,}/g, "_")
    .replace(/^\./, "_")
  if (s === "") s = "_"
  if (s.length > MAX_NAME) s = `${s.slice(0, MAX_NAME - 9)}~${fnv1a(s)}`
  return s
}

/** The host part of a unique name: `/` and `:` escaped as `\057` and `\072` (Maildir convention). */
export const hostPart = (hostname: string): string =>
  (hostname.replace(/[\u0000-\u0020\u007f]/g, "") || "localhost").replace(/\//g, "\\057").replace(/:/g, "\\072")

/** The header fields prepended to every copy, as bytes with CRLF or LF line ends. */
export const traceFields = (sender: string, recipient: string, newline: "lf" | "crlf"): Uint8Array => {
  const text = Headers.formatField("Return-Path", `<${sender}>`) + Headers.formatField("Delivered-To", recipient)
  return Bytes.fromString(newline === "lf" ? text.replace(/\r\n/g, "\n") : text)
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

const errnoOf = (error: PlatformError.PlatformError): string | undefined => {
  const cause: unknown = (error.reason as { readonly cause?: unknown }).cause
  if (typeof cause === "object" && cause !== null && "code" in cause) {
    const code = (cause as { readonly code: unknown }).code
    if (typeof code === "string" && /^E[A-Z0-9]{1,20}$/.test(code)) return code
  }
  const m = /\b(E[A-Z]{3,15})\b/.exec(`${error.message} ${String(cause)}`)
  return m?.[1]
}

/** True when the error means "no space" or "over quota" (ENOSPC, EDQUOT, or the same in words). */
export const isDiskFull = (error: PlatformError.PlatformError): boolean => {
  const code = errnoOf(error)
  if (code === "ENOSPC" || code === "EDQUOT") return true
  const cause: unknown = (error.reason as { readonly cause?: unknown }).cause
  return /no space left|quota exceeded|os error (28|122)\b/i.test(`${error.message} ${String(cause)}`)
}

/** The reply for a failed write: `452 4.2.2 Mailbox full` or `451 4.3.0 Maildir write error (<code>)`. */
export const replyFor = (error: PlatformError.PlatformError): Reply.Reply => {
  if (isDiskFull(error)) return mailboxFull
  const code = errnoOf(error) ?? error.reason._tag
  return Reply.make(451, "4.3.0", `Maildir write error (${code})`)
}

// ---------------------------------------------------------------------------
// The relay
// ---------------------------------------------------------------------------

type Target = { readonly _tag: "Folder"; readonly path: string } | { readonly _tag: "Refused"; readonly reply: Reply.Reply }

/** A Maildir relay over the `FileSystem` and `Path` services. */
export const make = (
  options: Options
): Effect.Effect<Relay.Relay["Service"], never, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const root = path.resolve(options.root)
    const host = hostPart(options.hostname)
    const newline = options.newline ?? "lf"
    const tag = (yield* Random.nextIntBetween(0, 0x7fffffff)).toString(16)
    let counter = 0

    const target = (recipient: string): Target => {
      let relative: string
      if (options.mapping !== undefined) {
        const mapped = options.mapping(recipient)
        if (mapped === undefined) return { _tag: "Refused", reply: noSuchUser }
        relative = mapped
      } else {
        relative = options.folders === "single" ? "" : folderName(recipient)
      }
      const within = path.resolveWithin(root, relative)
      if (Option.isNone(within)) return { _tag: "Refused", reply: Reply.make(451, "4.3.5", "Mailbox path outside the Maildir root") }
      return { _tag: "Folder", path: within.value }
    }

    const uniqueName = (size: number): Effect.Effect<string> =>
      Effect.gen(function*() {
        const nanos = yield* Clock.currentTimeNanos
        const seconds = nanos / 1_000_000_000n
        const micros = (nanos / 1_000n) % 1_000_000n
        const r1 = yield* Random.nextIntBetween(0, 0x7fffffff)
        const r2 = yield* Random.nextIntBetween(0, 0x7fffffff)
        const random = r1.toString(16).padStart(8, "0") + r2.toString(16).padStart(8, "0")
        counter = (counter + 1) % 1_000_000_000
        return `${seconds}.M${micros}P${tag}R${random}Q${counter}.${host},S=${size}`
      })

    const syncDirectory = (dir: string): Effect.Effect<void, PlatformError.PlatformError> =>
      Effect.scoped(Effect.flatMap(fs.open(dir, { flag: "r" }), (file) => file.sync)).pipe(
        // some file systems cannot fsync a directory (EINVAL); their metadata is synchronous or unsupported
        Effect.catchIf((e) => errnoOf(e) === "EINVAL", () => Effect.void)
      )

    const deliverTo = (folder: string, fields: Uint8Array, body: Uint8Array): Effect.Effect<void, PlatformError.PlatformError> =>
      Effect.gen(function*() {
        for (const sub of ["tmp", "new", "cur"]) yield* fs.makeDirectory(path.join(folder, sub), { recursive: true, mode: 0o700 })
        const name = yield* uniqueName(fields.length + body.length)
        const tmp = path.join(folder, "tmp", name)
        const dest = path.join(folder, "new", name)
        const written = Effect.scoped(
          Effect.gen(function*() {
            const file = yield* fs.open(tmp, { flag: "wx", mode: 0o600 })
            yield* file.writeAll(fields)
            yield* file.writeAll(body)
            yield* file.sync
          })
        )
        const linked = fs.link(tmp, dest).pipe(
          Effect.flatMap(() => fs.remove(tmp)),
          // no hard links here (some network and FUSE file systems): rename instead
          Effect.catchIf((e) => e.reason._tag === "PermissionDenied" || errnoOf(e) === "ENOTSUP" || errnoOf(e) === "EXDEV", () => fs.rename(tmp, dest))
        )
        yield* Effect.andThen(written, linked).pipe(
          Effect.tapError(() => Effect.ignore(fs.remove(tmp, { force: true })))
        )
        // the new/ entry is what must survive a crash; a tmp/ leftover is ordinary Maildir debris
        yield* syncDirectory(path.join(folder, "new"))
      })

    const attempt = (envelope: Envelope.Envelope): Effect.Effect<Relay.RelayResult> =>
      Effect.gen(function*() {
        const body = newline === "lf" ? crlfToLf(envelope.message) : envelope.message
        const results: Array<Relay.RecipientResult> = []
        for (const recipient of envelope.recipients) {
          const t = target(recipient)
          if (t._tag === "Refused") {
            results.push({ outcome: Relay.outcomeOf(t.reply), reply: t.reply })
            continue
          }
          const first = body[0]
          // a message starting with white space would continue our last field: end the header block as Headers.prepend does
          const fields = first === 0x20 || first === 0x09
            ? Bytes.concat([traceFields(envelope.sender, recipient, newline), Bytes.fromString(newline === "lf" ? "\n" : "\r\n")])
            : traceFields(envelope.sender, recipient, newline)
          const reply = yield* deliverTo(t.path, fields, body).pipe(
            Effect.map(() => Reply.make(250, "2.0.0", "Delivered to Maildir")),
            Effect.catch((e) => Effect.succeed(replyFor(e)))
          )
          results.push({ outcome: Relay.outcomeOf(reply), reply })
        }
        return { recipients: results, remote: `maildir; ${root}`, tls: undefined }
      })

    return { attempt }
  })

/** `make` as a layer providing `Relay`. */
export const layer = (options: Options): Layer.Layer<Relay.Relay, never, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(Relay.Relay)(make(options))
