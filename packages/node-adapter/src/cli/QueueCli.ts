/**
 * `mailroom queue`: look at and steer the queue of a running or stopped
 * server, like Postfix's `postqueue` and `postsuper`.
 *
 * ```text
 * mailroom queue list [--json]           postqueue -p (--json: one JSON object per line)
 * mailroom queue show ID [--headers]     postcat -q: the metadata, then the message as stored
 * mailroom queue hold ID...|--all        postsuper -h: no attempts until released
 * mailroom queue release ID...|--all     postsuper -H, and due now
 * mailroom queue retry ID...|--all       postsuper -r / postqueue -i: due now; an ID also leaves hold
 * mailroom queue delete ID...|--all      postsuper -d; --force for a message being attempted
 * mailroom queue flush                   postqueue -f: every message not held, due now
 * ```
 *
 * Every subcommand takes `--config FILE` and works on the `queue.storage` of
 * that config (the embedded default, a disk queue under `./var/queue`,
 * without it). Changes go through `QueueStorage`, so they are as durable as
 * a delivery attempt's and safe while a server runs: a server re-reads its
 * storage every 15 s (`DurableQueue`'s `pollMs`), so `release`, `retry` and
 * `flush` take effect on its next poll, and a held message is skipped.
 *
 * Races with a server are settled with the storage's own lease: `retry`,
 * `release` and `flush` take the lease before they change the schedule (an
 * attempt running now keeps its lease, and its result sets the next attempt),
 * and `delete` refuses a message whose lease another owner holds (a delivery
 * attempt in progress, or one of a server that died within the lease time)
 * unless `--force` is given. `hold` needs no lease: it flips one flag
 * atomically, and the attempt running now, if any, finishes.
 *
 * Design decision on `retry`: `retry ID` releases a held message (naming it
 * is explicit, as with `postsuper -r` and `DurableQueue.retryNow`);
 * `retry --all` and `flush` leave held messages alone (as `postqueue -f`),
 * use `release --all` for those.
 *
 * Text from the network (replies, addresses, lease owners) is printed with
 * control characters escaped; `show` prints the message bytes unchanged.
 *
 * What this module deliberately does not do: open storages (`Io.openQueue`
 * does, see `main.ts`), deliver anything itself, or talk to the server.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Result from "effect/Result"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import {
  type Command,
  EXIT_FAILURE,
  EXIT_OK,
  help,
  helpText,
  type Io,
  loadOrDefault,
  need,
  parse,
  type QueueHandle,
  UsageError
} from "./Command.ts"

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/** A duration as one unit, rounded down: `45s`, `3m`, `2h`, `1d`. */
export const formatDuration = (ms: number): string => {
  const s = Math.floor(Math.max(0, ms) / 1000)
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m`
  const h = Math.floor(m / 60)
  return h < 24 ? `${h}h` : `${Math.floor(h / 24)}d`
}

/** A size: `812 B`, `1.2 KiB`, `25.0 MiB`. */
export const formatSize = (n: number): string =>
  n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`

/** Text with control characters shown as `\xNN`, safe to print on a terminal. */
export const clean = (s: string): string =>
  s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)

const address = (a: string): string => `<${clean(a)}>`
const iso = (ms: number): string => new Date(ms).toISOString()
const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? "" : "s"}`

/** The lease of another owner that is still running at `now`, if any. */
const liveLease = (meta: QueueStorage.Meta, now: number, self?: string): QueueStorage.Lease | undefined =>
  meta.lease !== undefined && meta.lease.until > now && meta.lease.owner !== self ? meta.lease : undefined

const nextAttempt = (meta: QueueStorage.Meta, now: number): string => {
  if (meta.held) return "held: no attempts until released"
  const lease = liveLease(meta, now)
  if (lease !== undefined) return `attempt running now (${clean(lease.owner)})`
  return meta.nextAttemptAt <= now ? "next attempt now" : `next attempt in ${formatDuration(meta.nextAttemptAt - now)}`
}

const clientText = (c: Envelope.ClientFacts): string => {
  const from = c.address === undefined ? "an unknown client" : clean(c.address)
  const name = c.reverseName ?? c.ehlo
  return `${from}${name === undefined ? "" : ` (${clean(name)})`} over ${clean(c.protocol)}${c.auth === undefined ? "" : `, authenticated as ${clean(c.auth)}`}`
}

/**
 * One message as `list` prints it: id, age, size, sender and hold flag;
 * attempts and the next attempt; one line per recipient with its state and
 * last reply. `detailed` (for `show`) adds times, the client and the lease.
 */
export const formatBlock = (
  meta: QueueStorage.Meta,
  envelope: Envelope.Envelope | undefined,
  now: number,
  detailed = false
): string => {
  const lines = [
    `${meta.id}  age ${formatDuration(now - meta.createdAt)}  size ${formatSize(meta.size)}  from ${address(meta.sender)}${meta.held ? "  HELD" : ""}`,
    `  attempts ${meta.attempts}, ${nextAttempt(meta, now)}`
  ]
  if (detailed) {
    lines.push(`  queued ${iso(meta.createdAt)}${envelope === undefined ? "" : ` from ${clientText(envelope.client)}`}`)
    const lease = meta.lease === undefined
      ? "no lease"
      : `lease of ${clean(meta.lease.owner)} until ${iso(meta.lease.until)}${meta.lease.until > now ? "" : " (expired)"}`
    lines.push(`  next attempt ${iso(meta.nextAttemptAt)}, delay notice ${meta.delayWarned ? "sent" : "not sent"}, ${lease}`)
  }
  meta.recipients.forEach((r, i) => {
    const rcpt = envelope?.recipients[i]
    let line = `  ${r.status.padEnd(9)}  ${rcpt === undefined ? "<?>" : address(rcpt)}`
    if (r.reply !== undefined) line += `  ${clean(r.reply)}`
    if (detailed && (r.remoteMta !== undefined || r.at !== undefined)) {
      const parts = [r.remoteMta === undefined ? undefined : `from ${clean(r.remoteMta)}`, r.at === undefined ? undefined : `at ${iso(r.at)}`]
      line += ` (${parts.filter((p) => p !== undefined).join(" ")})`
    }
    lines.push(line)
  })
  return lines.join("\n") + "\n"
}

/** One message as `list --json` prints it (times in ms since the epoch, `null` for what is unknown). */
export const toJson = (meta: QueueStorage.Meta, envelope: Envelope.Envelope | undefined): unknown => ({
  id: meta.id,
  createdAt: meta.createdAt,
  size: meta.size,
  sender: meta.sender,
  held: meta.held,
  attempts: meta.attempts,
  nextAttemptAt: meta.nextAttemptAt,
  delayWarned: meta.delayWarned,
  lease: meta.lease === undefined ? null : { owner: meta.lease.owner, until: meta.lease.until },
  recipients: meta.recipients.map((r, i) => ({
    address: envelope?.recipients[i] ?? null,
    status: r.status,
    reply: r.reply ?? null,
    remoteMta: r.remoteMta ?? null,
    at: r.at ?? null
  }))
})

// ---------------------------------------------------------------------------
// Running storage operations
// ---------------------------------------------------------------------------

/** What a subcommand works with. */
interface Context {
  readonly io: Io
  readonly queue: QueueHandle
  readonly now: number
  /** This command's name in leases. */
  readonly owner: string
  readonly run: <A>(effect: Effect.Effect<A, QueueStorage.StorageError>) => Promise<Result.Result<A, QueueStorage.StorageError>>
}

/** How long this command's own lease lasts (it is dropped right after use). */
const LEASE_MS = 60_000

const runner = (io: Io) => {
  const logger = Logger.make<unknown, void>((o) => {
    const text = Array.isArray(o.message) ? o.message.map(String).join(" ") : String(o.message)
    io.stderr(`mailroom: ${o.logLevel.toLowerCase()}: ${text}\n`)
  })
  const layer = Logger.layer([logger])
  return <A>(effect: Effect.Effect<A, QueueStorage.StorageError>) => Effect.runPromise(Effect.result(effect).pipe(Effect.provide(layer)))
}

const failure = (ctx: Context, id: string, e: QueueStorage.StorageError): number => {
  ctx.io.stderr(
    e.reason === "NotFound" ? `mailroom: no message ${id} in ${ctx.queue.location}\n` : `mailroom: ${id}: ${e.message}\n`
  )
  return EXIT_FAILURE
}

type Due = { readonly _tag: "Due" } | { readonly _tag: "Busy"; readonly lease: QueueStorage.Lease }

/**
 * Makes a message due now under this command's lease, so that no attempt
 * can record a new schedule in between; `Busy` when an attempt holds the
 * lease (its result sets the next attempt). `release` also clears the hold.
 */
const makeDue = (ctx: Context, id: string, release: boolean): Effect.Effect<Due, QueueStorage.StorageError> => {
  const { storage } = ctx.queue
  return Effect.gen(function*() {
    if (!(yield* storage.claim(id, ctx.owner, ctx.now, LEASE_MS))) {
      if (release) yield* storage.setHeld(id, false)
      const meta = yield* storage.meta(id)
      const busy: Due = { _tag: "Busy", lease: meta.lease ?? { owner: "another process", until: ctx.now } }
      return busy
    }
    return yield* Effect.gen(function*() {
      if (release) yield* storage.setHeld(id, false)
      const meta = yield* storage.meta(id)
      yield* storage.reschedule(id, { attempts: meta.attempts, nextAttemptAt: ctx.now })
      const due: Due = { _tag: "Due" }
      return due
    }).pipe(Effect.ensuring(Effect.ignore(storage.release(id, ctx.owner))))
  })
}

const busyText = (lease: QueueStorage.Lease, now: number): string =>
  `an attempt by ${clean(lease.owner)} is running (lease for ${formatDuration(lease.until - now)} more); its result sets the next attempt`

/**
 * The messages a subcommand acts on: the ids given, or with `--all` every
 * message `pick` selects (`skipped` counts the others).
 */
const targets = async (
  ctx: Context,
  ids: ReadonlyArray<string>,
  all: boolean,
  pick: (m: QueueStorage.Meta) => boolean
): Promise<{ readonly ids: ReadonlyArray<string>; readonly skipped: number } | undefined> => {
  if (!all) return { ids, skipped: 0 }
  const listed = await ctx.run(ctx.queue.storage.list())
  if (Result.isFailure(listed)) {
    ctx.io.stderr(`mailroom: cannot list ${ctx.queue.location}: ${listed.failure.message}\n`)
    return undefined
  }
  const picked = listed.success.filter(pick).map((m) => m.id)
  return { ids: picked, skipped: listed.success.length - picked.length }
}

/**
 * Reports a failed operation on `id` and returns `EXIT_FAILURE`; with
 * `--all`, a message that went away meanwhile (delivered) is no failure.
 */
const failed = (ctx: Context, all: boolean, id: string, e: QueueStorage.StorageError): number =>
  all && e.reason === "NotFound" ? EXIT_OK : failure(ctx, id, e)

// ---------------------------------------------------------------------------
// Subcommands
// ---------------------------------------------------------------------------

type Flag = "json" | "headers" | "all" | "force"

interface Sub {
  readonly name: string
  readonly args: string
  readonly summary: string
  readonly flags: ReadonlyArray<Flag>
  /** How many ids: none, exactly one, or one or more (or `--all`). */
  readonly ids: "none" | "one" | "many"
  /** More lines for `queue <sub> --help`. */
  readonly details: ReadonlyArray<string>
  readonly run: (ctx: Context, ids: ReadonlyArray<string>, flags: Readonly<Record<Flag, boolean>>) => Promise<number>
}

const list: Sub = {
  name: "list",
  args: "[--json]",
  summary: "every message, its recipients and their last replies",
  flags: ["json"],
  ids: "none",
  details: [
    "One block per message, in id order (ids sort by arrival):",
    "",
    "  <id>  age 3m  size 1.2 KiB  from <sender>  HELD",
    "    attempts 2, next attempt in 4m",
    "    pending    <recipient>  451 4.4.1 the last reply",
    "",
    "then \"N messages, M held\". Recipients are pending, delivered or failed.",
    "--json prints one object per line instead: id, createdAt, size, sender, held,",
    "attempts, nextAttemptAt, delayWarned, lease {owner, until} or null, and",
    "recipients [{address, status, reply, remoteMta, at}]; times in ms since 1970."
  ],
  run: async (ctx, _ids, flags) => {
    // the envelopes give the recipients' addresses; a disk queue reads them without the message bodies
    const listed = await ctx.run(Effect.flatMap(ctx.queue.storage.list(), (metas) =>
      Effect.forEach(metas, (meta) => Effect.map(Effect.result(ctx.queue.envelope(meta.id)), (env) => [meta, env] as const), {
        concurrency: 16
      })))
    if (Result.isFailure(listed)) {
      ctx.io.stderr(`mailroom: cannot list ${ctx.queue.location}: ${listed.failure.message}\n`)
      return EXIT_FAILURE
    }
    let shown = 0
    let held = 0
    const blocks: Array<string> = []
    for (const [meta, env] of listed.success) {
      if (Result.isFailure(env) && env.failure.reason === "NotFound") continue // removed meanwhile
      if (Result.isFailure(env)) ctx.io.stderr(`mailroom: warning: ${meta.id}: ${env.failure.message}\n`)
      const envelope = Result.isSuccess(env) ? env.success : undefined
      shown++
      if (meta.held) held++
      if (flags.json) ctx.io.stdout(JSON.stringify(toJson(meta, envelope)) + "\n")
      else blocks.push(formatBlock(meta, envelope, ctx.now))
    }
    if (!flags.json) ctx.io.stdout([...blocks, `${plural(shown, "message")}, ${held} held\n`].join("\n"))
    return EXIT_OK
  }
}

const show: Sub = {
  name: "show",
  args: "ID [--headers]",
  summary: "one message's metadata, then the message as stored",
  flags: ["headers"],
  ids: "one",
  details: [
    "Prints the block of list plus the time queued, the client, the next attempt",
    "time, whether a delay notice went out, the lease, and for each reply the host",
    "that gave it and when; then an empty line and the message bytes exactly as",
    "stored (--headers: up to and including the empty line after the headers)."
  ],
  run: async (ctx, [id], flags) => {
    const read = await ctx.run(ctx.queue.storage.read(id!))
    if (Result.isFailure(read)) return failure(ctx, id!, read.failure)
    const { envelope, meta } = read.success
    ctx.io.stdout(formatBlock(meta, envelope, ctx.now, true) + "\n")
    const message = flags.headers ? envelope.message.subarray(0, Envelope.headerBlockEnd(envelope.message)) : envelope.message
    need(ctx.io.stdoutBytes, "a byte-exact standard output")(message)
    return EXIT_OK
  }
}

const hold: Sub = {
  name: "hold",
  args: "ID...|--all",
  summary: "no delivery attempts until released",
  flags: ["all"],
  ids: "many",
  details: [
    "A held message is never attempted (postsuper -h); an attempt running now",
    "finishes. A message released after queue.retry.max_age bounces at its next",
    "failed attempt."
  ],
  run: async (ctx, ids, flags) => {
    const todo = await targets(ctx, ids, flags.all, (m) => !m.held)
    if (todo === undefined) return EXIT_FAILURE
    let code = EXIT_OK
    let count = 0
    for (const id of todo.ids) {
      const r = await ctx.run(ctx.queue.storage.setHeld(id, true))
      if (Result.isFailure(r)) {
        code = Math.max(code, failed(ctx, flags.all, id, r.failure))
        continue
      }
      count++
      const lease = liveLease(r.success, ctx.now, ctx.owner)
      const note = lease === undefined ? "" : ` (an attempt by ${clean(lease.owner)} is running and finishes first)`
      if (!flags.all || note !== "") ctx.io.stdout(`held ${id}${note}\n`)
    }
    if (flags.all) ctx.io.stdout(`${plural(count, "message")} held${todo.skipped > 0 ? `, ${todo.skipped} already held` : ""}\n`)
    return code
  }
}

/** `release` and `retry` share this: make due now, clearing the hold when `clearHold(all)`. */
const dueNow = (verb: "release" | "retry", clearHold: (all: boolean) => boolean) =>
async (ctx: Context, ids: ReadonlyArray<string>, flags: Readonly<Record<Flag, boolean>>): Promise<number> => {
  const clear = clearHold(flags.all)
  const todo = await targets(ctx, ids, flags.all, (m) => (verb === "release" ? m.held : !m.held))
  if (todo === undefined) return EXIT_FAILURE
  let code = EXIT_OK
  let due = 0
  for (const id of todo.ids) {
    const before = await ctx.run(ctx.queue.storage.meta(id))
    if (Result.isFailure(before)) {
      code = Math.max(code, failed(ctx, flags.all, id, before.failure))
      continue
    }
    const meta = before.success
    const unhold = clear && meta.held
    const lease = liveLease(meta, ctx.now, ctx.owner)
    // Already due and nothing to clear: no write (flush of a queue whose server is down).
    const r: Result.Result<Due, QueueStorage.StorageError> = lease === undefined && !unhold && meta.nextAttemptAt <= ctx.now
      ? Result.succeed({ _tag: "Due" })
      : await ctx.run(makeDue(ctx, id, unhold))
    if (Result.isFailure(r)) {
      code = Math.max(code, failed(ctx, flags.all, id, r.failure))
      continue
    }
    const prefix = verb === "release" ? `released ${id}` : id
    const note = verb === "retry" && unhold ? ", released from hold" : verb === "release" && !meta.held ? " (was not held)" : ""
    if (r.success._tag === "Busy") ctx.io.stdout(`${prefix}: ${busyText(r.success.lease, ctx.now)}${note}\n`)
    else {
      due++
      if (!flags.all) ctx.io.stdout(`${prefix}: due now${note}\n`)
    }
  }
  if (flags.all) {
    ctx.io.stdout(
      verb === "release"
        ? `${plural(due, "message")} released and due now\n`
        : `${plural(due, "message")} due now${todo.skipped === 0 ? "" : `, ${todo.skipped} held (left alone)`}\n`
    )
  }
  return code
}

const release: Sub = {
  name: "release",
  args: "ID...|--all",
  summary: "leave hold and make due now",
  flags: ["all"],
  ids: "many",
  details: [
    "Clears the hold (postsuper -H) and makes the message due now: a running server",
    "attempts it when it next re-reads the queue (every 15 s)."
  ],
  run: dueNow("release", () => true)
}

const retry: Sub = {
  name: "retry",
  args: "ID...|--all",
  summary: "make due now (a named ID also leaves hold)",
  flags: ["all"],
  ids: "many",
  details: [
    "Makes messages due now, keeping their attempt count (the back-off goes on from",
    "there). A named ID also leaves hold, like postsuper -r; --all leaves held",
    "messages alone, like postqueue -f (use release --all for those). A message",
    "being attempted right now is left to that attempt. A running server picks the",
    "change up when it next re-reads the queue (every 15 s)."
  ],
  run: dueNow("retry", (all) => !all)
}

const flush: Sub = {
  name: "flush",
  args: "",
  summary: "make every message not held due now",
  flags: [],
  ids: "none",
  details: ["The same as retry --all (postqueue -f)."],
  run: (ctx, _ids, flags) => dueNow("retry", () => false)(ctx, [], { ...flags, all: true })
}

const remove: Sub = {
  name: "delete",
  args: "ID...|--all [--force]",
  summary: "remove without a bounce",
  flags: ["all", "force"],
  ids: "many",
  details: [
    "Removes messages for good, without a bounce to the sender (postsuper -d).",
    "A message whose lease another process holds (a delivery attempt running now,",
    "or one of a server that stopped during it: leases last 10 minutes) is refused",
    "unless --force; with --force that attempt may still deliver it."
  ],
  run: async (ctx, ids, flags) => {
    const todo = await targets(ctx, ids, flags.all, () => true)
    if (todo === undefined) return EXIT_FAILURE
    const { storage } = ctx.queue
    let code = EXIT_OK
    let deleted = 0
    for (const id of todo.ids) {
      // Taking the lease first means no attempt can start between the check and the removal.
      const r = await ctx.run(
        flags.force ? Effect.as(storage.remove(id), true) : Effect.gen(function*() {
          if (!(yield* storage.claim(id, ctx.owner, ctx.now, LEASE_MS))) return false
          yield* storage.remove(id)
          return true
        })
      )
      if (Result.isFailure(r)) {
        code = Math.max(code, failed(ctx, flags.all, id, r.failure))
        continue
      }
      if (r.success) {
        deleted++
        if (!flags.all) ctx.io.stdout(`deleted ${id}\n`)
        continue
      }
      const meta = await ctx.run(storage.meta(id))
      const lease = Result.isSuccess(meta) ? meta.success.lease : undefined
      ctx.io.stderr(
        `mailroom: not deleting ${id}: ${lease === undefined ? "its lease is held" : `${clean(lease.owner)} holds its lease until ${iso(lease.until)}`}` +
          " (a delivery attempt running now, or one of a server that stopped during it); try again when the lease is over," +
          " or use --force (the attempt may still deliver it)\n"
      )
      code = EXIT_FAILURE
    }
    if (flags.all) ctx.io.stdout(`${plural(deleted, "message")} deleted\n`)
    return code
  }
}

const subs: ReadonlyArray<Sub> = [list, show, hold, release, retry, remove, flush]

const FLAG_HELP: Record<Flag, string> = {
  json: "list: one JSON object per message and line, no summary",
  headers: "show: print the message's header block only",
  all: "hold, release, retry, delete: every message instead of IDs",
  force: "delete: also a message whose lease another process holds"
}

// ---------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------

const subHelp = (sub: Sub): string =>
  helpText({
    name: `queue ${sub.name}`,
    args: `${sub.args}${sub.args === "" ? "" : " "}[--config FILE]`,
    summary: sub.summary,
    options: [
      ["-c, --config FILE", "config file whose queue.storage to use (the embedded default: ./var/queue)"],
      ...sub.flags.map((f) => [`--${f}`, FLAG_HELP[f].replace(/^[a-z, ]+: /, "")] as const)
    ],
    details: sub.details,
    run: () => Promise.resolve(EXIT_OK)
  })

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")

/** The `queue` command: dispatches on its first argument. */
export const queue: Command = {
  name: "queue",
  args: "SUBCOMMAND [ID...]",
  summary: "list, show, hold, release, retry, delete, flush queued messages",
  options: [
    ["-c, --config FILE", "config file whose queue.storage to use"],
    ...(Object.keys(FLAG_HELP) as Array<Flag>).map((f) => [`--${f}`, FLAG_HELP[f]] as const)
  ],
  details: [
    "Subcommands:",
    ...subs.map((s) => `  ${`${s.name} ${s.args}`.padEnd(28)}  ${s.summary}`),
    "",
    "They work on the storage of a running or stopped server. A running server",
    "re-reads its queue every 15 s: release, retry and flush take effect then.",
    "Exit status: 0 ok, 1 failure (unknown id, no queue, storage error), 2 usage error."
  ],
  run: async (args, io) => {
    const { values, positionals } = parse(args, {
      config: { type: "string", short: "c" },
      json: { type: "boolean" },
      headers: { type: "boolean" },
      all: { type: "boolean" },
      force: { type: "boolean" }
    })
    const [name, ...ids] = positionals
    if (name === undefined) {
      if (values.help === true) return help(queue, io)
      throw new UsageError(`queue: missing subcommand (${subs.map((s) => s.name).join(", ")})`)
    }
    const sub = subs.find((s) => s.name === name)
    if (sub === undefined) throw new UsageError(`queue: unknown subcommand ${JSON.stringify(name)}`)
    if (values.help === true) {
      io.stdout(subHelp(sub))
      return EXIT_OK
    }
    const flags: Record<Flag, boolean> = { json: false, headers: false, all: false, force: false }
    for (const f of Object.keys(flags) as Array<Flag>) {
      if (values[f] !== true) continue
      if (!sub.flags.includes(f)) throw new UsageError(`queue ${sub.name}: unknown option --${f}`)
      flags[f] = true
    }
    if (sub.ids === "none" && ids.length > 0) throw new UsageError(`queue ${sub.name}: unexpected argument ${JSON.stringify(ids[0])}`)
    if (sub.ids === "one" && ids.length !== 1) throw new UsageError(`queue ${sub.name}: ${ids.length === 0 ? "missing ID" : "expected one ID"}`)
    if (sub.ids === "many" && flags.all === (ids.length > 0)) {
      throw new UsageError(`queue ${sub.name}: ${flags.all ? "give IDs or --all, not both" : "missing ID (or --all)"}`)
    }

    const config = await loadOrDefault(values.config, io)
    if (config === undefined) return EXIT_FAILURE
    const settings = config.queue.storage
    if (settings.type === "memory") {
      io.stderr("mailroom: queue commands need persistent storage (queue.storage.type: memory)\n")
      return EXIT_FAILURE
    }
    const run = runner(io)
    const opened = await run(need(io.openQueue, "queue storage")(settings))
    if (Result.isFailure(opened)) {
      io.stderr(`mailroom: ${opened.failure.detail}\n`)
      return EXIT_FAILURE
    }
    const ctx: Context = {
      io,
      queue: opened.success,
      now: need(io.now, "a clock")(),
      owner: `mailroom-queue-${hex(need(io.randomBytes, "random bytes")(6))}`,
      run
    }
    return sub.run(ctx, ids, flags)
  }
}
