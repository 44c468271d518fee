/**
 * `QueueStorage`: the durable envelope store behind the one promise. A
 * `250` after DATA is only sent once `write` has resolved, and `write`
 * resolves only when the envelope and its metadata are on stable storage.
 *
 * The service holds, per message, the `Envelope` (never changed after the
 * write) and its `Meta`: attempts, the next attempt time, per-recipient
 * progress (indexed like `envelope.recipients`), the hold flag, whether a
 * delay warning went out, and an expiring lease. Leases live IN the storage
 * so that several processes can share one storage: a queue `claim`s a
 * message before it attempts a delivery, and a lease whose time has passed
 * is taken over by the next claimant (recovery is at-least-once).
 *
 * Implementations give a small `Backend` (insert, read, list, an atomic
 * read-modify-write of the metadata, remove) to `make`, which adds what
 * every storage shares: argument checks, the rules of `recordResults`,
 * `reschedule`, `setHeld`, `claim` and `release`, and `changes` as a diff of
 * `list` when the backend has no change feed of its own. Every failure is a
 * `StorageError` whose `reason` says what the edge should answer:
 * `Full` → `452 4.3.1`, everything else → `451 4.3.0` (see `toReply`).
 *
 * This module also defines the storage record, version 1 (`encodeRecord`,
 * `decodeRecord`): the envelope's JSON form without the message bytes plus
 * the `Meta`, which disk, Redis and Deno KV storages persist next to the raw
 * message bytes.
 *
 * `memory` is an in-memory storage for tests and small deployments that can
 * afford to lose the queue on restart.
 *
 * What it deliberately does not do: scheduling, back-off, bouncing or
 * delivery (that is `Queue`), and reading the wall clock for leases (the
 * caller passes `now`, so leases are testable and deterministic).
 *
 * @since 0.1.0
 */
import { Clock, Context, Data, Effect, Layer, Option, Result, Stream } from "effect"
import type { Duration } from "effect"
import * as Envelope from "../envelope/Envelope.ts"
import * as Reply from "../smtp/Reply.ts"

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------

/** Where one recipient stands. */
export type RecipientStatus = "pending" | "delivered" | "failed"

/** The progress of one recipient. */
export interface RecipientState {
  readonly status: RecipientStatus
  /** The last reply as text, e.g. `"550 5.1.1 No such user"`. */
  readonly reply: string | undefined
  /** The host that gave the reply. */
  readonly remoteMta?: string
  /** When the reply was recorded, ms since the epoch. */
  readonly at?: number
}

/** An expiring claim on a message, held by `owner` until `until` (ms since the epoch, exclusive). */
export interface Lease {
  readonly owner: string
  readonly until: number
}

/** What the storage knows about a message besides the envelope. */
export interface Meta {
  readonly id: string
  /** When it was written, ms since the epoch. */
  readonly createdAt: number
  readonly attempts: number
  readonly nextAttemptAt: number
  readonly held: boolean
  readonly delayWarned: boolean
  /** Indexed like `envelope.recipients`. */
  readonly recipients: ReadonlyArray<RecipientState>
  readonly lease: Lease | undefined
  /** The message size in bytes. */
  readonly size: number
  /** The envelope sender, `""` for the null sender. */
  readonly sender: string
}

/** A message as stored. */
export interface Stored {
  readonly envelope: Envelope.Envelope
  readonly meta: Meta
}

/** The outcome of one delivery attempt for the recipient at `index`. */
export interface RecipientResult {
  readonly index: number
  readonly status: RecipientStatus
  readonly reply: string | undefined
  readonly remoteMta?: string | undefined
}

/** What changed against a set of ids the caller already knows. */
export interface Changes {
  readonly added: ReadonlyArray<Meta>
  readonly removed: ReadonlyArray<string>
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/**
 * Why a storage operation failed.
 *
 * - `NotFound`: no message with that id.
 * - `Conflict`: a message with that id already exists (`write`), or another
 *   owner holds the lease (`release`).
 * - `Invalid`: the caller passed something the storage refuses (an envelope
 *   without an id, a recipient index out of range, a negative lease time).
 * - `Full`: out of disk space or quota: answer `452 4.3.1`.
 * - `Io`: any other I/O failure: answer `451 4.3.0`.
 * - `Corrupt`: the stored data could not be read back.
 */
export type StorageErrorReason = "NotFound" | "Conflict" | "Invalid" | "Full" | "Io" | "Corrupt"

/** A failed storage operation. */
export class StorageError extends Data.TaggedError("StorageError")<{
  readonly reason: StorageErrorReason
  /** The operation, e.g. `write`. */
  readonly operation: string
  readonly id: string | undefined
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `${this.reason}: QueueStorage.${this.operation}${this.id === undefined ? "" : ` (${this.id})`}: ${this.detail}`
  }
}

/** Shorthand to build a `StorageError`. */
export const error = (
  reason: StorageErrorReason,
  operation: string,
  id: string | undefined,
  detail: string,
  cause?: unknown
): StorageError => new StorageError(cause === undefined ? { reason, operation, id, detail } : { reason, operation, id, detail, cause })

/**
 * The SMTP reply for a failed write: `452 4.3.1 Insufficient system storage`
 * when the storage is full, `451 4.3.0 Error: queue file write error`
 * otherwise.
 */
export const toReply = (e: StorageError): Reply.Reply => e.reason === "Full" ? Reply.insufficientStorage : Reply.queueError

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/** The operations of a storage. Every one fails only with a `StorageError`. */
export interface Service {
  /**
   * Stores a new message and resolves with its id (the envelope's own id)
   * only once it is durable. Attempts start at 0, every recipient is
   * `pending`. Fails with `Conflict` when the id exists, `Invalid` when the
   * envelope has no usable id, `Full` when there is no room.
   */
  readonly write: (envelope: Envelope.Envelope, options: { readonly nextAttemptAt: number }) => Effect.Effect<string, StorageError>
  /** The envelope (all recipients, as written) and its metadata. */
  readonly read: (id: string) => Effect.Effect<Stored, StorageError>
  /** The metadata only. */
  readonly meta: (id: string) => Effect.Effect<Meta, StorageError>
  /** The metadata of every message, sorted by id; never reads message bodies. */
  readonly list: () => Effect.Effect<ReadonlyArray<Meta>, StorageError>
  /** Records per-recipient outcomes (durably) and returns the new metadata. */
  readonly recordResults: (id: string, results: ReadonlyArray<RecipientResult>) => Effect.Effect<Meta, StorageError>
  /** Sets attempts, the next attempt time and (when given) the delay-warned flag. */
  readonly reschedule: (
    id: string,
    options: { readonly attempts: number; readonly nextAttemptAt: number; readonly delayWarned?: boolean | undefined }
  ) => Effect.Effect<Meta, StorageError>
  /** Holds or releases a message (a held message is not attempted). */
  readonly setHeld: (id: string, held: boolean) => Effect.Effect<Meta, StorageError>
  /**
   * Takes the lease on a message until `now + leaseMs`. Succeeds with
   * `false`, changing nothing, when another owner's lease is still live
   * (`until > now`); an expired lease is taken over; the same owner renews.
   */
  readonly claim: (id: string, owner: string, now: number, leaseMs: number) => Effect.Effect<boolean, StorageError>
  /**
   * Drops `owner`'s lease. No lease at all is fine; a lease of another owner
   * (it took an expired lease over) fails with `Conflict`.
   */
  readonly release: (id: string, owner: string) => Effect.Effect<void, StorageError>
  /** Removes a message durably. */
  readonly remove: (id: string) => Effect.Effect<void, StorageError>
  /**
   * The messages added and removed against `known`, e.g. written or removed
   * by other processes sharing the storage. Unless the backend has a change
   * feed this is a diff of `list`, so it costs as much as `list`.
   */
  readonly changes: (known: ReadonlySet<string>) => Effect.Effect<Changes, StorageError>
}

/** The durable envelope store. */
export class QueueStorage extends Context.Service<QueueStorage, Service>()("mailroom/QueueStorage") {}

// ---------------------------------------------------------------------------
// The backend contract and the normalising constructor
// ---------------------------------------------------------------------------

/** An atomic metadata update: the value to return and the new metadata, or `undefined` to leave it as it is. */
export type Update<A> = Result.Result<readonly [A, Meta | undefined], StorageError>

/**
 * What an implementation provides to `make`. `insert` is only called with a
 * checked envelope and fresh metadata; `update` must run `f` and write its
 * result atomically with respect to every other `update`, `insert` and
 * `remove` on the same id, in every process sharing the storage.
 */
export interface Backend {
  readonly insert: (envelope: Envelope.Envelope, meta: Meta) => Effect.Effect<void, StorageError>
  readonly read: (id: string) => Effect.Effect<Stored, StorageError>
  readonly meta: (id: string) => Effect.Effect<Meta, StorageError>
  readonly list: () => Effect.Effect<ReadonlyArray<Meta>, StorageError>
  readonly update: <A>(id: string, operation: string, f: (meta: Meta) => Update<A>) => Effect.Effect<A, StorageError>
  readonly remove: (id: string) => Effect.Effect<void, StorageError>
  readonly changes?: ((known: ReadonlySet<string>) => Effect.Effect<Changes, StorageError>) | undefined
}

const ID = /^[0-9A-Za-z_-]{1,128}$/

/** True for an id a storage accepts: 1-128 of `[0-9A-Za-z_-]` (safe as a file name and a key). */
export const isValidId = (id: string): boolean => ID.test(id)

const isTime = (n: number): boolean => Number.isSafeInteger(n) && n >= 0
const STATUSES: ReadonlyArray<RecipientStatus> = ["pending", "delivered", "failed"]

/** The metadata of a message just written: attempts 0, every recipient pending, no lease. */
export const initialMeta = (envelope: Envelope.Envelope, createdAt: number, nextAttemptAt: number): Meta => ({
  id: envelope.id,
  createdAt,
  attempts: 0,
  nextAttemptAt,
  held: false,
  delayWarned: false,
  recipients: envelope.recipients.map(() => ({ status: "pending", reply: undefined })),
  lease: undefined,
  size: envelope.message.length,
  sender: envelope.sender
})

/** The diff of `metas` against `known`. */
export const diff = (metas: ReadonlyArray<Meta>, known: ReadonlySet<string>): Changes => {
  const present = new Set<string>()
  const added: Array<Meta> = []
  for (const m of metas) {
    present.add(m.id)
    if (!known.has(m.id)) added.push(m)
  }
  const removed: Array<string> = []
  for (const id of known) if (!present.has(id)) removed.push(id)
  return { added, removed }
}

const checkId = (operation: string, id: string): Effect.Effect<void, StorageError> =>
  isValidId(id) ? Effect.void : Effect.fail(error("NotFound", operation, id, "not a valid message id"))

const invalid = (operation: string, id: string | undefined, detail: string) =>
  Effect.fail(error("Invalid", operation, id, detail))

/**
 * Builds the service from a backend: checks arguments, and implements the
 * metadata operations once for every storage on top of `backend.update`.
 */
export const make = (backend: Backend): Service => {
  const write = Effect.fnUntraced(function*(envelope: Envelope.Envelope, options: { readonly nextAttemptAt: number }) {
    if (envelope.id === "") return yield* invalid("write", undefined, "the envelope has no id (assign one with Envelope.newId)")
    if (!isValidId(envelope.id)) return yield* invalid("write", envelope.id, "the envelope id is not 1-128 of [0-9A-Za-z_-]")
    if (!isTime(options.nextAttemptAt)) return yield* invalid("write", envelope.id, `bad nextAttemptAt ${options.nextAttemptAt}`)
    const now = yield* Clock.currentTimeMillis
    yield* backend.insert(envelope, initialMeta(envelope, now, options.nextAttemptAt))
    return envelope.id
  })

  const read = (id: string) => Effect.andThen(checkId("read", id), backend.read(id))
  const meta = (id: string) => Effect.andThen(checkId("meta", id), backend.meta(id))
  const update = <A>(id: string, operation: string, f: (meta: Meta) => Update<A>) =>
    Effect.andThen(checkId(operation, id), backend.update(id, operation, f))

  const recordResults = Effect.fnUntraced(function*(id: string, results: ReadonlyArray<RecipientResult>) {
    for (const r of results) {
      if (!STATUSES.includes(r.status)) return yield* invalid("recordResults", id, `bad status ${String(r.status)}`)
      if (r.reply !== undefined && typeof r.reply !== "string") return yield* invalid("recordResults", id, "reply must be text")
    }
    const at = yield* Clock.currentTimeMillis
    return yield* update(id, "recordResults", (m): Update<Meta> => {
      const recipients = [...m.recipients]
      for (const r of results) {
        if (!Number.isInteger(r.index) || r.index < 0 || r.index >= recipients.length) {
          return Result.fail(error("Invalid", "recordResults", id, `recipient index ${r.index} out of range 0..${recipients.length - 1}`))
        }
        recipients[r.index] = r.remoteMta === undefined
          ? { status: r.status, reply: r.reply, at }
          : { status: r.status, reply: r.reply, remoteMta: r.remoteMta, at }
      }
      const next = { ...m, recipients }
      return Result.succeed([next, next] as const)
    })
  })

  const reschedule = Effect.fnUntraced(function*(
    id: string,
    options: { readonly attempts: number; readonly nextAttemptAt: number; readonly delayWarned?: boolean | undefined }
  ) {
    if (!isTime(options.attempts)) return yield* invalid("reschedule", id, `bad attempts ${options.attempts}`)
    if (!isTime(options.nextAttemptAt)) return yield* invalid("reschedule", id, `bad nextAttemptAt ${options.nextAttemptAt}`)
    return yield* update(id, "reschedule", (m): Update<Meta> => {
      const next: Meta = {
        ...m,
        attempts: options.attempts,
        nextAttemptAt: options.nextAttemptAt,
        delayWarned: options.delayWarned ?? m.delayWarned
      }
      return Result.succeed([next, next] as const)
    })
  })

  const setHeld = (id: string, held: boolean) =>
    update(id, "setHeld", (m): Update<Meta> => {
      const next: Meta = { ...m, held }
      return Result.succeed([next, next] as const)
    })

  const claim = Effect.fnUntraced(function*(id: string, owner: string, now: number, leaseMs: number) {
    if (owner === "") return yield* invalid("claim", id, "the owner is empty")
    if (!isTime(now)) return yield* invalid("claim", id, `bad time ${now}`)
    if (!Number.isSafeInteger(leaseMs) || leaseMs <= 0) return yield* invalid("claim", id, `bad lease time ${leaseMs}`)
    return yield* update(id, "claim", (m): Update<boolean> => {
      if (m.lease !== undefined && m.lease.owner !== owner && m.lease.until > now) return Result.succeed([false, undefined] as const)
      return Result.succeed([true, { ...m, lease: { owner, until: now + leaseMs } }] as const)
    })
  })

  const release = (id: string, owner: string) =>
    update(id, "release", (m): Update<void> => {
      if (m.lease === undefined) return Result.succeed([undefined, undefined] as const)
      if (m.lease.owner !== owner) {
        return Result.fail(error("Conflict", "release", id, `the lease is held by ${JSON.stringify(m.lease.owner)}`))
      }
      return Result.succeed([undefined, { ...m, lease: undefined }] as const)
    })

  const remove = (id: string) => Effect.andThen(checkId("remove", id), backend.remove(id))

  const changes = backend.changes ?? ((known: ReadonlySet<string>) => Effect.map(backend.list(), (metas) => diff(metas, known)))

  return { write, read, meta, list: backend.list, recordResults, reschedule, setHeld, claim, release, remove, changes }
}

/**
 * A stream of what changed in the storage, checked every `every`, starting
 * from the ids in `known` (typically those of the first `list`). Empty
 * checks emit nothing. With a storage that has no change feed, every check
 * costs a `list`; ids the caller wrote itself show up as added as well.
 */
export const poll = (known: ReadonlySet<string>, every: Duration.Input): Stream.Stream<Changes, StorageError, QueueStorage> =>
  Stream.paginate({ known, first: true }, (s) =>
    Effect.gen(function*() {
      if (!s.first) yield* Effect.sleep(every)
      const storage = yield* QueueStorage
      const c = yield* storage.changes(s.known)
      const next = new Set(s.known)
      for (const m of c.added) next.add(m.id)
      for (const id of c.removed) next.delete(id)
      const emit: ReadonlyArray<Changes> = c.added.length === 0 && c.removed.length === 0 ? [] : [c]
      return [emit, Option.some({ known: next, first: false })] as const
    }))

// ---------------------------------------------------------------------------
// The memory storage
// ---------------------------------------------------------------------------

/**
 * An in-memory storage: nothing survives the process, so it is for tests and
 * for deployments that accept that. Message bytes are copied in and out.
 */
export const makeMemory: Effect.Effect<Service> = Effect.sync(() => {
  const store = new Map<string, Stored>()
  const notFound = (operation: string, id: string) => error("NotFound", operation, id, "no such message")
  const copy = (s: Stored): Stored => ({ envelope: Envelope.withMessage(s.envelope, s.envelope.message.slice()), meta: s.meta })
  return make({
    insert: (envelope, meta) =>
      Effect.suspend(() => {
        if (store.has(envelope.id)) return Effect.fail(error("Conflict", "write", envelope.id, "a message with this id exists"))
        store.set(envelope.id, copy({ envelope, meta }))
        return Effect.void
      }),
    read: (id) =>
      Effect.suspend(() => {
        const s = store.get(id)
        return s === undefined ? Effect.fail(notFound("read", id)) : Effect.succeed(copy(s))
      }),
    meta: (id) =>
      Effect.suspend(() => {
        const s = store.get(id)
        return s === undefined ? Effect.fail(notFound("meta", id)) : Effect.succeed(s.meta)
      }),
    list: () => Effect.sync(() => [...store.values()].map((s) => s.meta).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))),
    update: (id, operation, f) =>
      Effect.suspend(() => {
        const s = store.get(id)
        if (s === undefined) return Effect.fail(notFound(operation, id))
        const r = f(s.meta)
        if (Result.isFailure(r)) return Effect.fail(r.failure)
        const [value, next] = r.success
        if (next !== undefined) store.set(id, { envelope: s.envelope, meta: next })
        return Effect.succeed(value)
      }),
    remove: (id) =>
      Effect.suspend(() => (store.delete(id) ? Effect.void : Effect.fail(notFound("remove", id))))
  })
})

/** A layer with a fresh, empty in-memory storage (see `makeMemory`). */
export const memory: Layer.Layer<QueueStorage> = Layer.effect(QueueStorage, makeMemory)

// ---------------------------------------------------------------------------
// The storage record, version 1
// ---------------------------------------------------------------------------

/**
 * The JSON record a persistent storage keeps next to the raw message bytes:
 *
 * ```json
 * { "v": 1,
 *   "envelope": { …Envelope.toJSON without "message"… },
 *   "meta": { "id": "…", "createdAt": 0, "attempts": 0, "nextAttemptAt": 0,
 *             "held": false, "delayWarned": false,
 *             "recipients": [ { "status": "pending", "reply": null, "remoteMta": null, "at": null } ],
 *             "lease": { "owner": "…", "until": 0 } | null,
 *             "size": 1234, "sender": "a@example.org" } }
 * ```
 */
export interface RecordJson {
  readonly v: 1
  readonly envelope: Omit<Envelope.EnvelopeJson, "message">
  readonly meta: {
    readonly id: string
    readonly createdAt: number
    readonly attempts: number
    readonly nextAttemptAt: number
    readonly held: boolean
    readonly delayWarned: boolean
    readonly recipients: ReadonlyArray<{
      readonly status: RecipientStatus
      readonly reply: string | null
      readonly remoteMta: string | null
      readonly at: number | null
    }>
    readonly lease: { readonly owner: string; readonly until: number } | null
    readonly size: number
    readonly sender: string
  }
}

/** The record of a message (see `RecordJson`); the message bytes are stored apart. */
export const encodeRecord = (envelope: Envelope.Envelope, meta: Meta): RecordJson => {
  const { message: _message, ...env } = Envelope.toJSON(Envelope.withMessage(envelope, new Uint8Array(0)))
  return {
    v: 1,
    envelope: env,
    meta: {
      id: meta.id,
      createdAt: meta.createdAt,
      attempts: meta.attempts,
      nextAttemptAt: meta.nextAttemptAt,
      held: meta.held,
      delayWarned: meta.delayWarned,
      recipients: meta.recipients.map((r) => ({
        status: r.status,
        reply: r.reply ?? null,
        remoteMta: r.remoteMta ?? null,
        at: r.at ?? null
      })),
      lease: meta.lease === undefined ? null : { owner: meta.lease.owner, until: meta.lease.until },
      size: meta.size,
      sender: meta.sender
    }
  }
}

type Obj = { readonly [k: string]: unknown }
const isObject = (u: unknown): u is Obj => typeof u === "object" && u !== null && !Array.isArray(u)

const decodeMeta = (u: unknown): Meta | string => {
  if (!isObject(u)) return "meta: expected an object"
  const keys = ["id", "createdAt", "attempts", "nextAttemptAt", "held", "delayWarned", "recipients", "lease", "size", "sender"]
  for (const k of Object.keys(u)) if (!keys.includes(k)) return `meta.${k}: unknown key`
  const { id, createdAt, attempts, nextAttemptAt, held, delayWarned, recipients, lease, size, sender } = u
  if (typeof id !== "string" || !isValidId(id)) return "meta.id: expected a message id"
  for (const [k, v] of [["createdAt", createdAt], ["attempts", attempts], ["nextAttemptAt", nextAttemptAt], ["size", size]] as const) {
    if (typeof v !== "number" || !isTime(v)) return `meta.${k}: expected an integer >= 0`
  }
  if (typeof held !== "boolean") return "meta.held: expected true or false"
  if (typeof delayWarned !== "boolean") return "meta.delayWarned: expected true or false"
  if (typeof sender !== "string") return "meta.sender: expected text"
  if (!Array.isArray(recipients)) return "meta.recipients: expected an array"
  const rs: Array<RecipientState> = []
  for (let i = 0; i < recipients.length; i++) {
    const r: unknown = recipients[i]
    if (!isObject(r)) return `meta.recipients[${i}]: expected an object`
    for (const k of Object.keys(r)) if (!["status", "reply", "remoteMta", "at"].includes(k)) return `meta.recipients[${i}].${k}: unknown key`
    const status = r["status"]
    if (typeof status !== "string" || !(STATUSES as ReadonlyArray<string>).includes(status)) {
      return `meta.recipients[${i}].status: expected pending, delivered or failed`
    }
    const reply = r["reply"] ?? null
    const remoteMta = r["remoteMta"] ?? null
    const at = r["at"] ?? null
    if (reply !== null && typeof reply !== "string") return `meta.recipients[${i}].reply: expected text or null`
    if (remoteMta !== null && typeof remoteMta !== "string") return `meta.recipients[${i}].remoteMta: expected text or null`
    if (at !== null && (typeof at !== "number" || !isTime(at))) return `meta.recipients[${i}].at: expected an integer >= 0 or null`
    rs.push({
      status: status as RecipientStatus,
      reply: reply ?? undefined,
      ...(remoteMta === null ? {} : { remoteMta }),
      ...(at === null ? {} : { at })
    })
  }
  let l: Lease | undefined = undefined
  if (lease !== null && lease !== undefined) {
    if (!isObject(lease) || typeof lease["owner"] !== "string" || typeof lease["until"] !== "number" || !isTime(lease["until"])) {
      return "meta.lease: expected { owner, until } or null"
    }
    l = { owner: lease["owner"], until: lease["until"] }
  }
  return {
    id,
    createdAt: createdAt as number,
    attempts: attempts as number,
    nextAttemptAt: nextAttemptAt as number,
    held,
    delayWarned,
    recipients: rs,
    lease: l,
    size: size as number,
    sender
  }
}

/**
 * Reads a record (see `RecordJson`) back, checking every field and that the
 * envelope and the metadata agree (id, sender, recipient count, and the size
 * of `message` when given). Without `message` the envelope has empty message
 * bytes (enough for `list`). Never throws; a bad record gives a `Corrupt`
 * error that names the field.
 */
export const decodeRecord = (u: unknown, message?: Uint8Array): Result.Result<Stored, StorageError> => {
  const corrupt = (detail: string) => Result.fail(error("Corrupt", "read", undefined, detail))
  if (!isObject(u)) return corrupt("the record is not an object")
  if (u["v"] !== 1) return corrupt(`unsupported record version ${JSON.stringify(u["v"] ?? null)}`)
  for (const k of Object.keys(u)) if (!["v", "envelope", "meta"].includes(k)) return corrupt(`${k}: unknown key`)
  const env = u["envelope"]
  if (!isObject(env) || Object.prototype.hasOwnProperty.call(env, "message")) return corrupt("envelope: expected an object without message")
  const decoded = Envelope.fromJSON({ ...env, message: "" })
  if (Result.isFailure(decoded)) return corrupt(`envelope.${decoded.failure.message}`)
  const meta = decodeMeta(u["meta"])
  if (typeof meta === "string") return corrupt(meta)
  const envelope = decoded.success
  if (envelope.id !== meta.id) return corrupt(`meta.id ${meta.id} differs from envelope.id ${envelope.id}`)
  if (envelope.sender !== meta.sender) return corrupt("meta.sender differs from envelope.sender")
  if (envelope.recipients.length !== meta.recipients.length) {
    return corrupt(`meta.recipients has ${meta.recipients.length} entries for ${envelope.recipients.length} recipients`)
  }
  if (message === undefined) return Result.succeed({ envelope, meta })
  if (message.length !== meta.size) return corrupt(`the message has ${message.length} bytes, the record says ${meta.size}`)
  return Result.succeed({ envelope: Envelope.withMessage(envelope, message), meta })
}
