import { describe, expect, it } from "vitest"
import * as Supervisor from "../src/process/Supervisor.ts"

/** A fake host: children that exit when told, a manual clock and timers. */
const makeHost = (options: { readonly failSpawn?: (worker: number) => boolean } = {}) => {
  let now = 0
  let nextPid = 100
  const timers: Array<{ at: number; f: () => void; cancelled: boolean }> = []
  const children: Array<{ worker: number; pid: number; signals: Array<Supervisor.Signal>; exit: (e: Supervisor.Exit) => void }> = []
  const logs: Array<{ level: string; event: string; fields: Readonly<Record<string, unknown>> }> = []
  const host: Supervisor.Host = {
    spawn: (worker) => {
      if (options.failSpawn?.(worker)) throw new Error("ENOENT: no such program")
      let exit: (e: Supervisor.Exit) => void = () => {}
      const exited = new Promise<Supervisor.Exit>((resolve) => (exit = resolve))
      const record = { worker, pid: nextPid++, signals: [] as Array<Supervisor.Signal>, exit }
      children.push(record)
      return { pid: record.pid, exited, kill: (s) => void record.signals.push(s) }
    },
    now: () => now,
    timer: (ms, f) => {
      const t = { at: now + ms, f, cancelled: false }
      timers.push(t)
      return () => void (t.cancelled = true)
    },
    log: (level, event, fields) => void logs.push({ level, event, fields })
  }
  const flush = () => new Promise((r) => setTimeout(r, 0))
  /** Moves the clock on, running the timers that fall due. */
  const advance = async (ms: number) => {
    now += ms
    for (const t of timers.filter((t) => !t.cancelled && t.at <= now)) {
      t.cancelled = true
      t.f()
    }
    await flush()
  }
  const live = (worker: number) => children.filter((c) => c.worker === worker).at(-1)!
  return { host, children, logs, advance, flush, live }
}

describe("Supervisor", () => {
  it("starts N workers, forwards SIGHUP, and stops them all with SIGTERM (exit code 0)", async () => {
    const h = makeHost()
    const s = Supervisor.start({ workers: 3 }, h.host)
    expect(h.children.map((c) => c.worker)).toEqual([1, 2, 3])
    expect([...s.pids()]).toEqual([[1, 100], [2, 101], [3, 102]])
    s.reload()
    expect(h.children.map((c) => c.signals)).toEqual([["SIGHUP"], ["SIGHUP"], ["SIGHUP"]])
    s.stop("SIGTERM")
    s.stop("SIGTERM again")
    expect(h.children.map((c) => c.signals.at(-1))).toEqual(["SIGTERM", "SIGTERM", "SIGTERM"])
    expect(h.children.every((c) => c.signals.filter((x) => x === "SIGTERM").length === 1)).toBe(true)
    let code: number | undefined
    void s.done.then((c) => (code = c))
    h.children[0]!.exit({ code: 0, signal: null })
    h.children[1]!.exit({ code: 0, signal: null })
    await h.flush()
    expect(code).toBeUndefined()
    h.children[2]!.exit({ code: 0, signal: null })
    await h.flush()
    expect(code).toBe(0)
    expect(h.logs.filter((l) => l.event === "worker stopped")).toHaveLength(3)
  })

  it("restarts a worker that dies, under the same number, with a delay that doubles while it keeps dying young", async () => {
    const h = makeHost()
    const s = Supervisor.start({ workers: 2, restartDelayMs: 1000, maxRestartDelayMs: 4000, quickExitMs: 10_000 }, h.host)
    await h.advance(60_000)
    h.live(2).exit({ code: null, signal: "SIGKILL" })
    await h.flush()
    expect(h.logs.at(-1)).toMatchObject({ level: "warning", event: "worker exited; restarting it", fields: { worker: 2, signal: "SIGKILL", restart_in_ms: 1000 } })
    expect(s.pids().has(2)).toBe(false)
    await h.advance(999)
    expect(h.children).toHaveLength(2)
    await h.advance(1)
    expect(h.children).toHaveLength(3)
    expect(h.live(2).pid).toBe(102)
    expect(s.pids().get(2)).toBe(102)
    // dies young again and again: 2 s, 4 s, then capped at 4 s
    const delays: Array<unknown> = []
    for (let i = 0; i < 3; i++) {
      await h.advance(100)
      h.live(2).exit({ code: 1, signal: null })
      await h.flush()
      delays.push(h.logs.at(-1)!.fields.restart_in_ms)
      await h.advance(4000)
    }
    expect(delays).toEqual([2000, 4000, 4000])
    // a worker that lived long starts again from the first delay
    await h.advance(20_000)
    h.live(2).exit({ code: 134, signal: null })
    await h.flush()
    expect(h.logs.at(-1)!.fields.restart_in_ms).toBe(1000)
    // worker 1 was never touched
    expect(h.children.filter((c) => c.worker === 1)).toHaveLength(1)
  })

  it("a worker that could not start (exit 78) stops every worker; the exit code is 1", async () => {
    const h = makeHost()
    const s = Supervisor.start({ workers: 2 }, h.host)
    h.live(1).exit({ code: Supervisor.EXIT_CANNOT_START, signal: null })
    await h.flush()
    expect(h.live(2).signals).toEqual(["SIGTERM"])
    expect(h.logs.some((l) => l.level === "error" && l.event === "worker could not start; stopping every worker")).toBe(true)
    h.live(2).exit({ code: 0, signal: null })
    expect(await s.done).toBe(1)
    await h.advance(60_000)
    expect(h.children).toHaveLength(2)
  })

  it("a worker that cannot be spawned at all stops the rest; exit code 1", async () => {
    const h = makeHost({ failSpawn: (w) => w === 2 })
    const s = Supervisor.start({ workers: 3 }, h.host)
    expect(h.children.map((c) => c.worker)).toEqual([1])
    expect(h.live(1).signals).toEqual(["SIGTERM"])
    h.live(1).exit({ code: 0, signal: null })
    expect(await s.done).toBe(1)
    expect(h.logs.find((l) => l.level === "error")!.fields.error).toContain("ENOENT")
  })

  it("a stop while a restart is pending cancels it; workers that ignore SIGTERM are killed after killAfterMs", async () => {
    const h = makeHost()
    const s = Supervisor.start({ workers: 2, killAfterMs: 5000 }, h.host)
    h.live(1).exit({ code: 1, signal: null })
    await h.flush()
    s.stop("SIGINT")
    await h.advance(4999)
    expect(h.children).toHaveLength(2)
    expect(h.live(2).signals).toEqual(["SIGTERM"])
    await h.advance(1)
    expect(h.live(2).signals).toEqual(["SIGTERM", "SIGKILL"])
    h.live(2).exit({ code: null, signal: "SIGKILL" })
    expect(await s.done).toBe(0)
    await h.advance(60_000)
    expect(h.children).toHaveLength(2)
  })

  it("without a clock and timer of the runtime's, effect's do the restarts", async () => {
    const h = makeHost()
    const { now: _now, timer: _timer, ...bare } = h.host
    const s = Supervisor.start({ workers: 1, restartDelayMs: 20 }, bare)
    h.live(1).exit({ code: null, signal: "SIGSEGV" })
    await new Promise((r) => setTimeout(r, 5))
    expect(h.children).toHaveLength(1)
    await new Promise((r) => setTimeout(r, 100))
    expect(h.children).toHaveLength(2)
    s.stop("test")
    h.live(1).exit({ code: 0, signal: null })
    expect(await s.done).toBe(0)
  })

  it("parseWorker takes 1 to 64 only", () => {
    expect(["1", "2", "64"].map(Supervisor.parseWorker)).toEqual([1, 2, 64])
    expect([undefined, "", "0", "65", "01", "1.5", "x", " 1"].map(Supervisor.parseWorker)).toEqual(Array(8).fill(undefined))
  })
})
