/**
 * `DenoKvStorage`: a `QueueStorage` over Deno KV (`Deno.openKv(path)`), the
 * default storage of Mailroom on Deno. Several processes may open the same
 * KV: every metadata change is an atomic operation guarded by the
 * versionstamp of the message's head entry (optimistic concurrency, retried
 * on conflict), so leases and per-recipient results never lose an update.
 *
 * ## Keys, version 1 (under `prefix`, default `["mailroom", "queue"]`)
 *
 * ```
 * [...prefix, "head", id]                 { v: 1, nonce, record: string | null, recordParts, bodyParts, size }
 * [...prefix, "record", id, nonce, gen, i] the record JSON in parts, when it does not fit in the head
 * [...prefix, "body", id, nonce, i]        the message bytes, in parts of at most 60 000 bytes
 * ```
 *
 * The record is `QueueStorage.encodeRecord` as JSON text (the same record the
 * disk storages keep); it lives in the head while it is under 60 000 bytes
 * (Deno KV refuses values over 64 KiB). A message exists exactly when its
 * head exists.
 *
 * A write uploads the body parts under a fresh `nonce` (several atomic
 * operations when the message is large), then commits the head with a check
 * that no head exists for the id: that commit is the acknowledgement. A
 * write that loses the race, fails or is killed leaves only parts under its
 * own nonce; they are deleted at once, or at the next open once they are
 * older than `orphanMs` (another process may be uploading). Removal deletes
 * the head (and record parts) atomically, then the body parts.
 *
 * Durability is Deno KV's: a committed operation survives the process being
 * killed; whether it survives power loss depends on Deno's SQLite settings
 * (write-ahead log), which this module cannot change. Use `DenoDisk` where
 * fsync-per-message durability on power loss is required.
 *
 * Deno KV is unstable in Deno 2: run with `--unstable-kv` (or
 * `"unstable": ["kv"]` in deno.json).
 *
 * What it deliberately does not do: use KV queues or `watch` (changes are a
 * diff of `list`), or expire anything by itself.
 *
 * @since 0.1.0
 */
import { Effect, Layer, Result } from "effect"
import type * as Scope from "effect/Scope"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"

/** Options of `make` and `layer`. */
export interface Options {
  /** The KV database file; `undefined` for Deno's default, `":memory:"` for a private in-memory one. */
  readonly path?: string | undefined
  /** Key prefix of this queue (several queues may share one KV). Default `["mailroom", "queue"]`. */
  readonly prefix?: ReadonlyArray<string> | undefined
  /** Parts of a write older than this with no head are removed at open (default 1 hour). */
  readonly orphanMs?: number | undefined
}

/** Largest part stored in one KV value (Deno KV's limit is 64 KiB per value). */
export const PART_BYTES = 60_000
/** Body parts written per atomic operation (Deno KV allows 800 KiB of mutations per operation). */
const PARTS_PER_COMMIT = 12
const MAX_UPDATE_TRIES = 10_000

interface Head {
  readonly v: 1
  readonly nonce: string
  /** Generation of the record parts (bumped by every update of a chunked record). */
  readonly gen: number
  readonly record: string | null
  readonly recordParts: number
  readonly bodyParts: number
  readonly size: number
}

const isHead = (u: unknown): u is Head => {
  if (typeof u !== "object" || u === null) return false
  const h = u as Record<string, unknown>
  return h["v"] === 1 && typeof h["nonce"] === "string" && typeof h["gen"] === "number" &&
    (h["record"] === null || typeof h["record"] === "string") && typeof h["recordParts"] === "number" &&
    typeof h["bodyParts"] === "number" && typeof h["size"] === "number"
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const splitText = (text: string): Array<string> => {
  // split on UTF-16 boundaries so that each part's UTF-8 stays under PART_BYTES (at most 3 bytes per unit)
  const max = Math.floor(PART_BYTES / 3)
  const parts: Array<string> = []
  for (let i = 0; i < text.length; i += max) {
    let end = Math.min(text.length, i + max)
    // never split a surrogate pair
    if (end < text.length && /[\uD800-\uDBFF]/.test(text[end - 1]!)) end--
    parts.push(text.slice(i, end))
    i = end - max
  }
  return parts
}

const newNonce = (): string => {
  const r = crypto.getRandomValues(new Uint8Array(6))
  return `${Date.now().toString(36)}-${Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("")}`
}

const nonceTime = (nonce: string): number => {
  const t = parseInt(nonce.split("-")[0] ?? "", 36)
  return Number.isFinite(t) ? t : 0
}

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e))

const LOCKED = /database is locked|database is busy|SQLITE_BUSY/i

/**
 * Commits `op`, retrying for up to 10 s while SQLite reports the database
 * locked by another connection (another process, or another `Deno.Kv` of
 * this one, writing at the same moment).
 */
const commit = async (op: Deno.AtomicOperation): Promise<Deno.KvCommitResult | Deno.KvCommitError> => {
  const deadline = Date.now() + 10_000
  for (let pause = 1;; pause = Math.min(pause * 2, 50)) {
    try {
      return await op.commit()
    } catch (e) {
      if (!LOCKED.test(messageOf(e)) || Date.now() > deadline) throw e
      await new Promise((resolve) => setTimeout(resolve, pause * (0.5 + Math.random())))
    }
  }
}

/**
 * Makes the storage over an open `Deno.Kv` (the caller owns it). Removes
 * orphaned parts older than `orphanMs` first.
 */
export const makeWith = (
  kv: Deno.Kv,
  options: Omit<Options, "path"> = {}
): Effect.Effect<QueueStorage.Service, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const prefix: ReadonlyArray<string> = options.prefix ?? ["mailroom", "queue"]
    const orphanMs = options.orphanMs ?? 3_600_000
    const headKey = (id: string): Deno.KvKey => [...prefix, "head", id]
    const recordPrefix = (id: string, nonce: string, gen: number): Deno.KvKey => [...prefix, "record", id, nonce, gen]
    const bodyPrefix = (id: string, nonce: string): Deno.KvKey => [...prefix, "body", id, nonce]

    const io = <A>(operation: string, id: string | undefined, f: () => Promise<A>) =>
      Effect.uninterruptible(Effect.tryPromise({
        try: f,
        catch: (e) => (e instanceof QueueStorage.StorageError ? e : QueueStorage.error("Io", operation, id, messageOf(e), e))
      }))

    const notFound = (operation: string, id: string) => QueueStorage.error("NotFound", operation, id, "no such message")
    const corrupt = (operation: string, id: string, detail: string) => QueueStorage.error("Corrupt", operation, id, detail)

    const listValues = async <T>(p: Deno.KvKey): Promise<Array<Deno.KvEntry<T>>> => {
      const out: Array<Deno.KvEntry<T>> = []
      for await (const e of kv.list<T>({ prefix: p })) out.push(e)
      return out
    }

    /** The head of `id` with its versionstamp, or undefined. */
    const getHead = async (operation: string, id: string): Promise<{ head: Head; versionstamp: string } | undefined> => {
      const e = await kv.get<unknown>(headKey(id))
      if (e.versionstamp === null) return undefined
      if (!isHead(e.value)) throw corrupt(operation, id, `the head of ${id} is not a version 1 head`)
      return { head: e.value, versionstamp: e.versionstamp }
    }

    const recordText = async (operation: string, id: string, head: Head): Promise<string> => {
      if (head.record !== null) return head.record
      const parts = await listValues<string>(recordPrefix(id, head.nonce, head.gen))
      if (parts.length !== head.recordParts || parts.some((p) => typeof p.value !== "string")) {
        throw corrupt(operation, id, `record of ${id}: ${parts.length} parts, the head says ${head.recordParts}`)
      }
      return parts.map((p) => p.value).join("")
    }

    const decode = (operation: string, id: string, text: string, body?: Uint8Array): QueueStorage.Stored => {
      let u: unknown
      try {
        u = JSON.parse(text)
      } catch {
        throw corrupt(operation, id, `record of ${id}: not valid JSON`)
      }
      const r = QueueStorage.decodeRecord(u, body)
      if (Result.isFailure(r)) throw corrupt(operation, id, `record of ${id}: ${r.failure.detail}`)
      if (r.success.meta.id !== id) throw corrupt(operation, id, `record of ${id} holds id ${r.success.meta.id}`)
      return r.success
    }

    /** Sets the head for `record` (inline or in parts of generation `gen`) on `op`. */
    const putRecord = (op: Deno.AtomicOperation, id: string, base: Omit<Head, "record" | "recordParts" | "gen">, gen: number, record: string) => {
      if (encoder.encode(record).length <= PART_BYTES) {
        op.set(headKey(id), { ...base, v: 1, gen, record, recordParts: 0 } satisfies Head)
        return
      }
      const parts = splitText(record)
      parts.forEach((p, i) => op.set([...recordPrefix(id, base.nonce, gen), i], p))
      op.set(headKey(id), { ...base, v: 1, gen, record: null, recordParts: parts.length } satisfies Head)
    }

    const deleteRecordParts = (op: Deno.AtomicOperation, id: string, head: Head) => {
      for (let i = 0; i < head.recordParts; i++) op.delete([...recordPrefix(id, head.nonce, head.gen), i])
    }

    const deleteBody = async (id: string, nonce: string): Promise<void> => {
      const keys = (await listValues<unknown>(bodyPrefix(id, nonce))).map((e) => e.key)
      for (let i = 0; i < keys.length; i += 100) {
        const op = kv.atomic()
        for (const k of keys.slice(i, i + 100)) op.delete(k)
        await commit(op)
      }
    }

    // --- operations --------------------------------------------------------

    const insert = (envelope: Envelope.Envelope, meta: QueueStorage.Meta) =>
      io("write", envelope.id, async () => {
        const id = envelope.id
        const conflict = () => QueueStorage.error("Conflict", "write", id, "a message with this id exists")
        if ((await kv.get(headKey(id))).versionstamp !== null) throw conflict()
        const nonce = newNonce()
        const body = envelope.message
        const bodyParts = Math.ceil(body.length / PART_BYTES)
        try {
          for (let i = 0; i < bodyParts; i += PARTS_PER_COMMIT) {
            const op = kv.atomic()
            for (let j = i; j < Math.min(bodyParts, i + PARTS_PER_COMMIT); j++) {
              op.set([...bodyPrefix(id, nonce), j], body.slice(j * PART_BYTES, (j + 1) * PART_BYTES))
            }
            const r = await commit(op)
            if (!r.ok) throw QueueStorage.error("Io", "write", id, "a body part could not be committed")
          }
          const op = kv.atomic().check({ key: headKey(id), versionstamp: null })
          putRecord(op, id, { v: 1, nonce, bodyParts, size: body.length }, 0, JSON.stringify(QueueStorage.encodeRecord(envelope, meta)))
          const r = await commit(op)
          if (!r.ok) throw conflict()
        } catch (e) {
          await deleteBody(id, nonce).catch(() => undefined)
          throw e
        }
      })

    const read = (id: string) =>
      io("read", id, async () => {
        const got = await getHead("read", id)
        if (got === undefined) throw notFound("read", id)
        const { head } = got
        const text = await recordText("read", id, head)
        const parts = await listValues<Uint8Array>(bodyPrefix(id, head.nonce))
        if (parts.length !== head.bodyParts || parts.some((p) => !(p.value instanceof Uint8Array))) {
          // removed meanwhile, or damaged
          if ((await kv.get(headKey(id))).versionstamp === null) throw notFound("read", id)
          throw corrupt("read", id, `body of ${id}: ${parts.length} parts, the head says ${head.bodyParts}`)
        }
        const body = new Uint8Array(head.size)
        let offset = 0
        for (const p of parts) {
          if (offset + p.value.length > body.length) throw corrupt("read", id, `body of ${id} is longer than ${head.size} bytes`)
          body.set(p.value, offset)
          offset += p.value.length
        }
        if (offset !== head.size) throw corrupt("read", id, `body of ${id} has ${offset} bytes, the head says ${head.size}`)
        return decode("read", id, text, body)
      })

    const meta = (id: string) =>
      io("meta", id, async () => {
        const got = await getHead("meta", id)
        if (got === undefined) throw notFound("meta", id)
        return decode("meta", id, await recordText("meta", id, got.head)).meta
      })

    const list = () =>
      Effect.flatMap(
        io("list", undefined, async () => {
          const metas: Array<QueueStorage.Meta> = []
          const warnings: Array<string> = []
          for await (const e of kv.list<unknown>({ prefix: [...prefix, "head"] })) {
            const id = e.key[e.key.length - 1]
            if (typeof id !== "string") continue
            try {
              if (!isHead(e.value)) throw corrupt("list", id, `the head of ${id} is not a version 1 head`)
              metas.push(decode("list", id, await recordText("list", id, e.value)).meta)
            } catch (err) {
              if (!(err instanceof QueueStorage.StorageError)) throw err
              // one bad entry must not stop the queue: report it and leave it for a human
              warnings.push(`${err.message}; skipped`)
            }
          }
          metas.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
          return { metas, warnings }
        }),
        ({ metas, warnings }) => Effect.as(Effect.forEach(warnings, (w) => Effect.logWarning(w)), metas as ReadonlyArray<QueueStorage.Meta>)
      )

    const update = <A>(id: string, operation: string, f: (meta: QueueStorage.Meta) => QueueStorage.Update<A>) =>
      io(operation, id, async () => {
        for (let attempt = 0; attempt < MAX_UPDATE_TRIES; attempt++) {
          const got = await getHead(operation, id)
          if (got === undefined) throw notFound(operation, id)
          const { head, versionstamp } = got
          const stored = decode(operation, id, await recordText(operation, id, head))
          const r = f(stored.meta)
          if (Result.isFailure(r)) throw r.failure
          const [value, next] = r.success
          if (next === undefined) return value
          const op = kv.atomic().check({ key: headKey(id), versionstamp })
          deleteRecordParts(op, id, head)
          putRecord(op, id, head, head.gen + 1, JSON.stringify(QueueStorage.encodeRecord(stored.envelope, next)))
          if ((await commit(op)).ok) return value
          // another update won the race: read again and re-apply
          if (attempt > 8) await new Promise((resolve) => setTimeout(resolve, Math.min(20, attempt)))
        }
        throw QueueStorage.error("Io", operation, id, `too much contention on ${id}`)
      })

    const remove = (id: string) =>
      io("remove", id, async () => {
        for (;;) {
          const got = await getHead("remove", id)
          if (got === undefined) throw notFound("remove", id)
          const op = kv.atomic().check({ key: headKey(id), versionstamp: got.versionstamp }).delete(headKey(id))
          deleteRecordParts(op, id, got.head)
          if ((await commit(op)).ok) {
            await deleteBody(id, got.head.nonce)
            return
          }
        }
      })

    // --- open: remove parts no head refers to ----------------------------------

    const cleanup = async (): Promise<number> => {
      const heads = new Map<string, Head>()
      for await (const e of kv.list<unknown>({ prefix: [...prefix, "head"] })) {
        const id = e.key[e.key.length - 1]
        if (typeof id === "string" && isHead(e.value)) heads.set(id, e.value)
      }
      const now = Date.now()
      let removed = 0
      for (const kind of ["body", "record"] as const) {
        const stale: Array<Deno.KvKey> = []
        for await (const e of kv.list<unknown>({ prefix: [...prefix, kind] })) {
          const [id, nonce, gen] = e.key.slice(prefix.length + 1)
          if (typeof id !== "string" || typeof nonce !== "string") continue
          const head = heads.get(id)
          const live = head !== undefined && head.nonce === nonce && (kind === "body" || gen === head.gen)
          if (!live && (head?.nonce === nonce || now - nonceTime(nonce) > orphanMs)) stale.push(e.key)
        }
        for (let i = 0; i < stale.length; i += 100) {
          const op = kv.atomic()
          for (const k of stale.slice(i, i + 100)) op.delete(k)
          await commit(op)
        }
        removed += stale.length
      }
      return removed
    }

    const removed = yield* io("open", undefined, cleanup)
    if (removed > 0) yield* Effect.logInfo(`QueueStorage (Deno KV): removed ${removed} parts of unfinished writes`)

    return QueueStorage.make({ insert, read, meta, list, update, remove })
  })

/** Opens the KV at `options.path` for the life of the scope, and makes the storage over it. */
export const make = (options: Options = {}): Effect.Effect<QueueStorage.Service, QueueStorage.StorageError, Scope.Scope> =>
  Effect.flatMap(
    Effect.acquireRelease(
      Effect.tryPromise({
        try: () => Deno.openKv(options.path),
        catch: (e) => QueueStorage.error("Io", "open", undefined, `cannot open Deno KV ${options.path ?? "(default)"}: ${messageOf(e)}`, e)
      }),
      (kv) => Effect.sync(() => kv.close())
    ),
    (kv) => makeWith(kv, options)
  )

/** A layer with the Deno KV storage; the KV is open while the layer is. */
export const layer = (options: Options = {}): Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> =>
  Layer.effect(QueueStorage.QueueStorage, make(options))
