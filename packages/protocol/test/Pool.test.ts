import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import { describe, expect, it } from "vitest"
import * as Pool from "../src/relay/Pool.ts"

/** A connection stand-in that records what the pool did with it. */
interface Fake extends Pool.Resource {
  readonly name: string
  ready: boolean
  used: number
  quits: number
  closed: boolean
  /** Completing it makes the idle connection stale (the server talked). */
  readonly talk: Deferred.Deferred<void>
  /** Watches started on it while idle. */
  watches: number
  pollAnswer: boolean
}

const makeFake = (name: string): Effect.Effect<Fake, never, Scope.Scope> =>
  Effect.gen(function*() {
    const talk = yield* Deferred.make<void>()
    const fake: Fake = {
      name,
      ready: true,
      used: 0,
      quits: 0,
      closed: false,
      talk,
      watches: 0,
      pollAnswer: true,
      isReady: () => fake.ready && !fake.closed,
      messages: () => fake.used,
      poll: Effect.sync(() => fake.pollAnswer),
      watch: (ms) =>
        Effect.suspend(() => {
          fake.watches++
          return Effect.raceFirst(Effect.as(Deferred.await(talk), "stale" as const), Effect.as(Effect.sleep(ms), "timeout" as const))
        }),
      quit: Effect.sync(() => {
        fake.quits++
      })
    }
    yield* Effect.addFinalizer(() => Effect.sync(() => (fake.closed = true)))
    return fake
  })

/** A pool and a dialer that names its connections `key#n`. */
const setup = (options: Pool.Options) =>
  Effect.gen(function*() {
    const pool = yield* Pool.make<Fake>(options)
    const opened: Array<Fake> = []
    const open = (key: string) =>
      Effect.gen(function*() {
        const f = yield* makeFake(`${key}#${opened.length}`)
        opened.push(f)
        return f
      })
    const use = (key: string, hold: Effect.Effect<void> = Effect.void, fresh = false) =>
      pool.use(key, open(key), (f, reused) =>
        Effect.gen(function*() {
          yield* hold
          f.used++
          return { name: f.name, reused }
        }), { fresh })
    return { pool, opened, use }
  })

const run = <A, E>(e: Effect.Effect<A, E, Scope.Scope>): Promise<A> => Effect.runPromise(Effect.scoped(e))

describe("Pool", () => {
  it("reuses an idle connection for the same destination, LIFO, and dials for another", async () => {
    const out = await run(Effect.gen(function*() {
      const { pool, opened, use } = yield* setup({})
      const a = yield* use("a")
      const b = yield* use("a")
      const c = yield* use("b")
      const stats = yield* pool.stats
      return { a, b, c, stats, n: opened.length }
    }))
    expect(out.a).toEqual({ name: "a#0", reused: false })
    expect(out.b).toEqual({ name: "a#0", reused: true })
    expect(out.c).toEqual({ name: "b#1", reused: false })
    expect(out.stats).toEqual({ open: 2, idle: 2, waiting: 0, dialled: 2, reused: 1, stale: 0 })
  })

  it("QUITs after each use with idleTimeoutMs 0", async () => {
    const fakes = await run(Effect.gen(function*() {
      const { opened, use } = yield* setup({ idleTimeoutMs: 0 })
      yield* use("a")
      yield* use("a")
      yield* Effect.sleep(20)
      return opened
    }))
    expect(fakes.map((f) => [f.name, f.quits, f.closed])).toEqual([["a#0", 1, true], ["a#1", 1, true]])
  })

  it("does not keep a connection that is no longer ready, nor one past maxMessagesPerConnection", async () => {
    const fakes = await run(Effect.gen(function*() {
      const { opened, use, pool } = yield* setup({ maxMessagesPerConnection: 2 })
      yield* use("a")
      yield* use("a")
      yield* use("a")
      opened[1]!.ready = false
      yield* use("a", Effect.sync(() => (opened[1]!.ready = false)))
      yield* Effect.sleep(20)
      return { opened, stats: yield* pool.stats }
    }))
    expect(fakes.opened.map((f) => [f.name, f.used, f.quits, f.closed])).toEqual([["a#0", 2, 1, true], ["a#1", 2, 0, true]])
    expect(fakes.stats.open).toBe(0)
  })

  it("limits connections per destination: the second caller waits and gets the first connection", async () => {
    const out = await run(Effect.gen(function*() {
      const { opened, use, pool } = yield* setup({ maxPerDestination: 1 })
      const gate = yield* Deferred.make<void>()
      const first = yield* Effect.forkChild(use("a", Deferred.await(gate)))
      yield* Effect.sleep(5)
      const second = yield* Effect.forkChild(use("a"))
      yield* Effect.sleep(5)
      const waiting = (yield* pool.stats).waiting
      yield* Deferred.succeed(gate, undefined)
      return { a: yield* Fiber.join(first), b: yield* Fiber.join(second), waiting, n: opened.length }
    }))
    expect(out.waiting).toBe(1)
    expect(out.n).toBe(1)
    expect(out.b).toEqual({ name: "a#0", reused: true })
  })

  it("hands a released connection straight to a waiter, without parking or watching it", async () => {
    const out = await run(Effect.gen(function*() {
      const { opened, use, pool } = yield* setup({ maxPerDestination: 1 })
      const gate = yield* Deferred.make<void>()
      const first = yield* Effect.forkChild(use("a", Deferred.await(gate)))
      yield* Effect.sleep(5)
      const waiters = [yield* Effect.forkChild(use("a")), yield* Effect.forkChild(use("a"))]
      yield* Effect.sleep(5)
      yield* Deferred.succeed(gate, undefined)
      const got = [yield* Fiber.join(first), ...(yield* Fiber.joinAll(waiters))]
      yield* Effect.sleep(5)
      return { got, watches: opened[0]!.watches, n: opened.length, stats: yield* pool.stats }
    }))
    expect(out.got).toEqual([{ name: "a#0", reused: false }, { name: "a#0", reused: true }, { name: "a#0", reused: true }])
    expect(out.n).toBe(1)
    // only after the last use, with nobody waiting, is it parked and watched
    expect(out.watches).toBe(1)
    expect(out.stats).toMatchObject({ open: 1, idle: 1, waiting: 0, reused: 2 })
  })

  it("limits connections in total, evicting (QUIT) an idle connection of another destination", async () => {
    const out = await run(Effect.gen(function*() {
      const { opened, use } = yield* setup({ maxTotal: 1 })
      yield* use("a")
      const b = yield* use("b")
      yield* Effect.sleep(20)
      return { b, a: opened[0]! }
    }))
    expect(out.b).toEqual({ name: "b#1", reused: false })
    expect([out.a.quits, out.a.closed]).toEqual([1, true])
  })

  it("drops an idle connection the server talked on, without QUIT, and dials anew", async () => {
    const out = await run(Effect.gen(function*() {
      const { opened, use, pool } = yield* setup({})
      yield* use("a")
      yield* Deferred.succeed(opened[0]!.talk, undefined)
      yield* Effect.sleep(10)
      const statsAfterTalk = yield* pool.stats
      const again = yield* use("a")
      return { again, statsAfterTalk, first: opened[0]! }
    }))
    expect(out.statsAfterTalk).toMatchObject({ open: 0, idle: 0, stale: 1 })
    expect([out.first.quits, out.first.closed]).toEqual([0, true])
    expect(out.again).toEqual({ name: "a#1", reused: false })
  })

  it("discards an idle connection that fails the poll before reuse", async () => {
    const out = await run(Effect.gen(function*() {
      const { opened, use, pool } = yield* setup({})
      yield* use("a")
      opened[0]!.pollAnswer = false
      const again = yield* use("a")
      return { again, stats: yield* pool.stats, first: opened[0]! }
    }))
    expect(out.again).toEqual({ name: "a#1", reused: false })
    expect(out.first.closed).toBe(true)
    expect(out.stats).toMatchObject({ open: 1, idle: 1, stale: 1, dialled: 2 })
  })

  it("QUITs an idle connection after idleTimeoutMs", async () => {
    const out = await run(Effect.gen(function*() {
      const { opened, use, pool } = yield* setup({ idleTimeoutMs: 30 })
      yield* use("a")
      yield* Effect.sleep(80)
      return { stats: yield* pool.stats, first: opened[0]! }
    }))
    expect(out.stats).toMatchObject({ open: 0, idle: 0 })
    expect([out.first.quits, out.first.closed]).toEqual([1, true])
  })

  it("`fresh` never reuses, replacing an idle connection at the limit", async () => {
    const out = await run(Effect.gen(function*() {
      const { opened, use } = yield* setup({ maxPerDestination: 1 })
      yield* use("a")
      const b = yield* use("a", Effect.void, true)
      yield* Effect.sleep(20)
      return { b, first: opened[0]! }
    }))
    expect(out.b).toEqual({ name: "a#1", reused: false })
    expect(out.first.quits).toBe(1)
  })

  it("frees the slot of a failed dial for the next caller", async () => {
    const out = await run(Effect.gen(function*() {
      const pool = yield* Pool.make<Fake>({ maxPerDestination: 1 })
      const failed = yield* Effect.exit(pool.use("a", Effect.fail("refused" as const), () => Effect.void))
      const ok = yield* pool.use("a", makeFake("a"), (f) => Effect.succeed(f.name))
      return { failed, ok, stats: yield* pool.stats }
    }))
    expect(out.failed).toEqual(Exit.fail("refused"))
    expect(out.ok).toBe("a")
    expect(out.stats).toMatchObject({ open: 1, dialled: 1 })
  })

  it("an interrupted waiter leaves the queue", async () => {
    const out = await run(Effect.gen(function*() {
      const { use, pool } = yield* setup({ maxPerDestination: 1 })
      const gate = yield* Deferred.make<void>()
      const holder = yield* Effect.forkChild(use("a", Deferred.await(gate)))
      yield* Effect.sleep(5)
      const waiter = yield* Effect.forkChild(use("a"))
      yield* Effect.sleep(5)
      yield* Fiber.interrupt(waiter)
      const after = yield* pool.stats
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(holder)
      return { after, end: yield* pool.stats }
    }))
    expect(out.after.waiting).toBe(0)
    expect(out.end).toMatchObject({ open: 1, idle: 1, waiting: 0 })
  })

  it("closing the pool's scope QUITs idle connections and answers waiters with PoolClosed", async () => {
    const scope = await Effect.runPromise(Scope.make())
    const { fakes, waiter } = await Effect.runPromise(Effect.gen(function*() {
      const { opened, use } = yield* setup({ maxPerDestination: 1 })
      yield* use("idle")
      const gate = yield* Deferred.make<void>()
      yield* Effect.forkDetach(use("busy", Deferred.await(gate)))
      yield* Effect.sleep(5)
      const waiter = yield* Effect.forkDetach(use("busy"))
      yield* Effect.sleep(5)
      return { fakes: opened, waiter }
    }).pipe(Scope.provide(scope)))
    await Effect.runPromise(Scope.close(scope, Exit.void))
    const w = await Effect.runPromise(Fiber.await(waiter))
    expect(Exit.isFailure(w) && JSON.stringify(w.cause).includes("PoolClosed")).toBe(true)
    expect(fakes.map((f) => [f.name, f.quits, f.closed])).toEqual([["idle#0", 1, true], ["busy#1", 0, true]])
  })
})
