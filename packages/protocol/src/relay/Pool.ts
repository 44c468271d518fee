/**
 * Connection pooling for the SMTP/LMTP relays, per destination: a key that
 * names the endpoint and everything that makes two connections
 * interchangeable (TLS settings, EHLO name, credentials).
 *
 * - A connection that is still ready after a message waits, idle, for the
 *   next one to the same destination, at most `idleTimeoutMs` (then QUIT);
 *   the most recently used idle connection is reused first. `idleTimeoutMs:
 *   0` QUITs after every message.
 * - While idle, a connection is watched (`Resource.watch`, one wait bounded
 *   by the idle time): a server that talks or closes (typically a 421 when
 *   it timed us out) makes it stale, and it is closed at once. Before reuse
 *   it is polled once more; a stale one is discarded and a new one is
 *   dialled in its place.
 * - A connection released while a caller waits for its destination goes
 *   straight to that caller: it is not parked, and no watch starts.
 * - At most `maxPerDestination` connections (open or being dialled) per
 *   destination and `maxTotal` in all; callers beyond that wait in one FIFO
 *   queue. When the total is reached but another destination has an idle
 *   connection, that one is QUIT to make room.
 * - Each connection lives in its own scope under the pool's; closing the
 *   pool's scope QUITs the idle connections (in parallel, bounded), answers
 *   the waiters with `PoolClosed`, then closes whatever is still open.
 *
 * The pool is generic over what it holds (`Resource`), so its rules are
 * tested without sockets; the relays pool `SmtpConnection`s.
 *
 * What it deliberately does not do: dial, decide what a destination is, or
 * retry a failed dial (the relay tries the next host).
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"

/** Pool settings. */
export interface Options {
  /** Connections (open or being dialled) per destination. Default 5. */
  readonly maxPerDestination?: number | undefined
  /** Connections in all. Default 100. */
  readonly maxTotal?: number | undefined
  /** How long an idle connection is kept for reuse, ms; 0 = QUIT after every message. Default 10 000. */
  readonly idleTimeoutMs?: number | undefined
  /** Messages per connection before it is QUIT. Default 100. */
  readonly maxMessagesPerConnection?: number | undefined
  /** Bound on a QUIT exchange when closing idle connections, ms. Default 10 000. */
  readonly quitTimeoutMs?: number | undefined
}

/** What the pool needs from a connection. */
export interface Resource {
  /** Open and idle: may go back to the pool. */
  readonly isReady: () => boolean
  /** Messages sent on it so far. */
  readonly messages: () => number
  /** Before reuse: still usable (nothing arrived while idle)? */
  readonly poll: Effect.Effect<boolean>
  /**
   * While idle: waits at most `ms`; `"stale"` as soon as the connection
   * becomes unusable (the server talked or closed), `"timeout"` when `ms`
   * passed. The pool interrupts it to reuse the connection.
   */
  readonly watch: (ms: number) => Effect.Effect<"stale" | "timeout">
  /** Ends the connection politely. */
  readonly quit: Effect.Effect<void>
}

/** The pool's scope is closed: nothing more is dialled. */
export class PoolClosed extends Data.TaggedError("PoolClosed")<{}> {}

/** Counters, for tests and metrics. */
export interface Stats {
  /** Connections open or being dialled. */
  readonly open: number
  readonly idle: number
  readonly waiting: number
  /** Connections dialled successfully since the pool was made. */
  readonly dialled: number
  /** Times an idle connection was reused. */
  readonly reused: number
  /** Idle connections found stale (by the watch or the poll before reuse). */
  readonly stale: number
}

/** A pool of connections keyed by destination. */
export interface Pool<R extends Resource> {
  /**
   * Runs `f` with a connection to `key`: an idle one when there is a usable
   * one (`reused` true), else one made with `open` (in a scope the pool owns).
   * Waits when the limits are reached. With `fresh`, never reuses an idle
   * connection (to retry on a new one after a stale reuse).
   */
  readonly use: <A, E>(
    key: string,
    open: Effect.Effect<R, E, Scope.Scope>,
    f: (resource: R, reused: boolean) => Effect.Effect<A>,
    options?: { readonly fresh?: boolean }
  ) => Effect.Effect<A, E | PoolClosed>
  readonly stats: Effect.Effect<Stats>
}

interface Entry<R> {
  readonly key: string
  readonly resource: R
  readonly scope: Scope.Closeable
  watcher: Fiber.Fiber<void> | undefined
  /** Times it was parked (tells `park` whether a waiter parked it again meanwhile). */
  parks: number
}

type Grant<R> =
  | { readonly _tag: "Idle"; readonly entry: Entry<R> }
  | { readonly _tag: "Dial" }
  | { readonly _tag: "Closed" }

interface Waiter<R> {
  readonly key: string
  readonly fresh: boolean
  readonly deferred: Deferred.Deferred<Grant<R>>
}

/** Makes a pool in the current scope (see the module header). */
export const make = <R extends Resource>(options: Options = {}): Effect.Effect<Pool<R>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxPer = Math.max(1, options.maxPerDestination ?? 5)
    const maxTotal = Math.max(1, options.maxTotal ?? 100)
    const idleTimeoutMs = Math.max(0, options.idleTimeoutMs ?? 10_000)
    const maxMessages = Math.max(1, options.maxMessagesPerConnection ?? 100)
    const quitTimeoutMs = options.quitTimeoutMs ?? 10_000
    const parent = yield* Effect.scope
    // every connection and background fiber lives under `root`; the finalizer
    // below is added after it, so it runs first: idle connections are QUIT
    // before `root` destroys the rest
    const root = yield* Scope.fork(parent)

    const counts = new Map<string, number>()
    let total = 0
    /** Idle connections, most recently used last. */
    const idle: Array<Entry<R>> = []
    const waiters: Array<Waiter<R>> = []
    let closing = false
    let dialled = 0
    let reused = 0
    let stale = 0

    const count = (key: string): number => counts.get(key) ?? 0
    const add = (key: string, n: number): void => {
      const c = count(key) + n
      if (c <= 0) counts.delete(key)
      else counts.set(key, c)
      total += n
    }
    /** Takes the newest idle entry matching `pred` (to reuse), or the oldest (to evict). */
    const takeIdle = (pred: (e: Entry<R>) => boolean, newest = true): Entry<R> | undefined => {
      for (let j = 0; j < idle.length; j++) {
        const i = newest ? idle.length - 1 - j : j
        const e = idle[i]!
        if (pred(e)) {
          idle.splice(i, 1)
          return e
        }
      }
      return undefined
    }
    const removeIdle = (entry: Entry<R>): boolean => {
      const i = idle.indexOf(entry)
      if (i < 0) return false
      idle.splice(i, 1)
      return true
    }

    const quitBounded = (r: R): Effect.Effect<void> => Effect.ignore(Effect.timeoutOption(r.quit, quitTimeoutMs))

    /** Closes an entry that is no longer idle nor in use, then frees its slot for the waiters. */
    const retire = (entry: Entry<R>, quit: boolean): Effect.Effect<void> =>
      Effect.gen(function*() {
        const w = entry.watcher
        entry.watcher = undefined
        if (w !== undefined) yield* Fiber.interrupt(w)
        if (quit) yield* quitBounded(entry.resource)
        yield* Scope.close(entry.scope, Exit.void)
        add(entry.key, -1)
        dispatch()
        yield* flush
      })

    /** Evictions decided by `grant` (synchronous), run by `flush`. */
    const pending: Array<Entry<R>> = []

    /** What a caller for `key` may do now, or undefined to wait. Synchronous. */
    const grant = (key: string, fresh: boolean): Grant<R> | undefined => {
      if (closing) return { _tag: "Closed" }
      if (!fresh) {
        const e = takeIdle((x) => x.key === key)
        if (e !== undefined) return { _tag: "Idle", entry: e }
      }
      if (count(key) >= maxPer) {
        // a fresh connection at the limit replaces an idle one of the same destination
        const own = fresh ? takeIdle((x) => x.key === key, false) : undefined
        if (own === undefined) return undefined
        pending.push(own)
      } else if (total >= maxTotal) {
        const other = takeIdle((x) => x.key !== key, false) ?? (fresh ? takeIdle(() => true, false) : undefined)
        if (other === undefined) return undefined
        pending.push(other)
      }
      add(key, 1)
      return { _tag: "Dial" }
    }

    /** Hands slots to waiters, in order. Synchronous. */
    const dispatch = (): void => {
      for (let i = 0; i < waiters.length;) {
        const w = waiters[i]!
        const g = grant(w.key, w.fresh)
        if (g === undefined) {
          i++
          continue
        }
        waiters.splice(i, 1)
        Deferred.doneUnsafe(w.deferred, Effect.succeed(g))
      }
    }

    /** Background work (QUITs) under `root`; closing the pool waits for it (bounded). */
    const background = new Set<Fiber.Fiber<void>>()
    const inBackground = (work: Effect.Effect<void>): Effect.Effect<void> =>
      Effect.gen(function*() {
        const fiber = yield* Effect.forkIn(work, root, { startImmediately: true })
        if (fiber.pollUnsafe() === undefined) {
          background.add(fiber)
          fiber.addObserver(() => background.delete(fiber))
        }
      })

    /** QUITs the evicted connections in the background. */
    const flush: Effect.Effect<void> = Effect.suspend(() => {
      if (pending.length === 0) return Effect.void
      const work = pending.splice(0, pending.length)
      return inBackground(Effect.forEach(work, (e) => retire(e, true), { concurrency: "unbounded", discard: true }))
    })

    /** Gives back a grant that was not used. */
    const giveBack = (key: string, g: Grant<R>): Effect.Effect<void> => {
      if (g._tag === "Idle") return park(g.entry)
      if (g._tag === "Closed") return Effect.void
      return Effect.suspend(() => {
        add(key, -1)
        dispatch()
        return flush
      })
    }

    /** The watch of an idle entry: closes it when it turns stale or its idle time is up. */
    const watch = (entry: Entry<R>): Effect.Effect<void> =>
      Effect.flatMap(entry.resource.watch(idleTimeoutMs), (why) => {
        if (!removeIdle(entry)) return Effect.void
        if (why === "stale") stale++
        entry.watcher = undefined
        return retire(entry, why === "timeout")
      })

    /**
     * Puts a connection back as idle; a waiter for its destination takes it
     * at once, else it is watched.
     */
    const park = (entry: Entry<R>): Effect.Effect<void> =>
      Effect.suspend(() => {
        const parks = ++entry.parks
        idle.push(entry)
        // a waiter may take it here, and (its fiber runs on this stack) even
        // use it and park it again: then that park watches it, not this one
        dispatch()
        if (entry.parks !== parks || idle.length === 0 || idle[idle.length - 1] !== entry) return flush
        return Effect.flatMap(Effect.forkIn(watch(entry), root), (fiber) => {
          entry.watcher = fiber
          return flush
        })
      })

    /** After use: back to idle, or closed. */
    const release = (entry: Entry<R>, usable: boolean): Effect.Effect<void> => {
      const r = entry.resource
      const keep = usable && !closing && idleTimeoutMs > 0 && r.isReady() && r.messages() < maxMessages
      if (keep) return park(entry)
      return inBackground(retire(entry, r.isReady()))
    }

    const use = <A, E>(
      key: string,
      open: Effect.Effect<R, E, Scope.Scope>,
      f: (resource: R, reused: boolean) => Effect.Effect<A>,
      useOptions?: { readonly fresh?: boolean }
    ): Effect.Effect<A, E | PoolClosed> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const fresh = useOptions?.fresh === true
          let g = grant(key, fresh)
          yield* flush
          if (g === undefined) {
            const waiter: Waiter<R> = { key, fresh, deferred: Deferred.makeUnsafe<Grant<R>>() }
            waiters.push(waiter)
            const waited = yield* Effect.exit(restore(Deferred.await(waiter.deferred)))
            if (Exit.isFailure(waited)) {
              // interrupted while waiting: leave the queue, give back a grant that raced in
              const i = waiters.indexOf(waiter)
              if (i >= 0) waiters.splice(i, 1)
              if (Deferred.isDoneUnsafe(waiter.deferred)) yield* giveBack(key, yield* Deferred.await(waiter.deferred))
              return yield* Effect.failCause(waited.cause)
            }
            g = waited.value
          }
          if (g._tag === "Closed") return yield* new PoolClosed()
          let entry: Entry<R> | undefined
          if (g._tag === "Idle") {
            const e = g.entry
            if (e.watcher !== undefined) {
              const w = e.watcher
              e.watcher = undefined
              yield* Fiber.interrupt(w)
            }
            if (yield* e.resource.poll) {
              entry = e
              reused++
            } else {
              // stale: close it, keep its slot for a new dial
              stale++
              yield* Scope.close(e.scope, Exit.void)
            }
          }
          if (entry === undefined) {
            const scope = yield* Scope.fork(root)
            const opened = yield* Effect.exit(restore(Scope.provide(scope)(open)))
            if (Exit.isFailure(opened)) {
              yield* Scope.close(scope, Exit.void)
              yield* giveBack(key, { _tag: "Dial" })
              return yield* Effect.failCause(opened.cause)
            }
            dialled++
            entry = { key, resource: opened.value, scope, watcher: undefined, parks: 0 }
          }
          const wasReused = g._tag === "Idle" && entry === g.entry
          const result = yield* Effect.exit(restore(f(entry.resource, wasReused)))
          yield* release(entry, Exit.isSuccess(result))
          return yield* result
        })
      )

    yield* Scope.addFinalizer(
      parent,
      Effect.gen(function*() {
        closing = true
        for (const w of waiters.splice(0, waiters.length)) Deferred.doneUnsafe(w.deferred, Effect.succeed({ _tag: "Closed" }))
        const entries = idle.splice(0, idle.length)
        entries.push(...pending.splice(0, pending.length))
        yield* Effect.forEach(entries, (e) => retire(e, true), { concurrency: "unbounded", discard: true })
        // QUITs already under way (after a last message, evictions) finish before `root` closes
        yield* Effect.ignore(Effect.timeoutOption(Fiber.awaitAll([...background]), quitTimeoutMs))
      })
    )

    const pool: Pool<R> = {
      use,
      stats: Effect.sync(() => ({ open: total, idle: idle.length, waiting: waiters.length, dialled, reused, stale }))
    }
    return pool
  })
