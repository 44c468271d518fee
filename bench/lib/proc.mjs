// Process plumbing for the benchmark runner: spawning servers with their
// output in a log file, waiting for a port, stopping by PID (never by name),
// and reading /proc for CPU time and memory of a process and its children.
//
// Every process started through `spawnTracked` is recorded, and `stopAll`
// (called on exit, on SIGINT/SIGTERM and on errors) stops what is still
// running: SIGTERM, then SIGKILL after a grace period. Extra clean-up steps
// (e.g. `postfix -c DIR stop`) are registered with `onCleanup`.
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"

export const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100

/** The hard limit of open files, as `sh -c 'ulimit -Hn'` reports it. */
export const nofileHardLimit = () => {
  const out = spawnSync("sh", ["-c", "ulimit -Hn"], { encoding: "utf8" }).stdout.trim()
  return out === "unlimited" ? Infinity : Number(out)
}

const tracked = new Map() // pid -> { child, name }
const cleanups = []

/**
 * Spawns `cmd args` with stdout and stderr appended to `logFile`, with the
 * soft limit of open files raised to the hard limit (through `sh -c ulimit;
 * exec`, so the PID is the command's own).
 */
export const spawnTracked = (name, cmd, args, { logFile, env, cwd, stdin = "ignore", stdout } = {}) => {
  const fd = stdout === "pipe" ? "pipe" : logFile ? fs.openSync(logFile, "a") : "ignore"
  const child = spawn("/bin/sh", ["-c", 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', "sh", cmd, ...args], {
    cwd,
    env: { ...process.env, ...env },
    stdio: [stdin, fd, stdout === "pipe" ? "inherit" : fd]
  })
  if (typeof fd === "number") fs.closeSync(fd)
  tracked.set(child.pid, { child, name })
  child.once("exit", () => tracked.delete(child.pid))
  return child
}

/** Registers a clean-up step run by `stopAll` (last registered, first run). */
export const onCleanup = (f) => {
  cleanups.push(f)
  return () => {
    const i = cleanups.indexOf(f)
    if (i >= 0) cleanups.splice(i, 1)
  }
}

const alive = (pid) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Sends SIGTERM to `pid`, waits up to `graceMs` for it to go, then SIGKILL. */
export const stopPid = async (pid, graceMs = 5000) => {
  if (!pid || !alive(pid)) return
  const entry = tracked.get(pid)
  const exited = entry && entry.child.exitCode === null && entry.child.signalCode === null
    ? new Promise((resolve) => entry.child.once("exit", resolve))
    : undefined
  try {
    process.kill(pid, "SIGTERM")
  } catch {
    return
  }
  const until = Date.now() + graceMs
  while (Date.now() < until) {
    if (exited) {
      if (await Promise.race([exited.then(() => true), sleep(50).then(() => false)])) return
    } else {
      if (!alive(pid)) return
      await sleep(50)
    }
  }
  try {
    process.kill(pid, "SIGKILL")
  } catch {
    // gone meanwhile
  }
  if (exited) await Promise.race([exited, sleep(2000)])
}

/** Stops every tracked process and runs the clean-up steps. */
export const stopAll = async () => {
  while (cleanups.length > 0) {
    const f = cleanups.pop()
    try {
      await f()
    } catch (e) {
      console.error(`clean-up failed: ${e?.message ?? e}`)
    }
  }
  await Promise.all([...tracked.keys()].map((pid) => stopPid(pid, 3000)))
}

/** The same, synchronously, for `process.on("exit")`: SIGKILL to what is left. */
export const killAllSync = () => {
  for (const pid of tracked.keys()) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // gone
    }
  }
}

/** Resolves once a TCP connection to host:port succeeds; rejects after `timeoutMs` or when `child` exits. */
export const waitForPort = async (host, port, timeoutMs, child) => {
  const until = Date.now() + timeoutMs
  for (;;) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`exited (${child.exitCode ?? child.signalCode}) before listening on ${host}:${port}`)
    }
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host, port })
      s.once("connect", () => {
        s.destroy()
        resolve(true)
      })
      s.once("error", () => resolve(false))
    })
    if (ok) return
    if (Date.now() > until) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`)
    await sleep(100)
  }
}

/** A free TCP port on 127.0.0.1 (bound and released; the bench runs alone on loopback). */
export const freePort = () =>
  new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })

// --- /proc --------------------------------------------------------------------

const readStat = (pid) => {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ")
    // fields[0] is field 3 (state); ppid is field 4, utime 14, stime 15, cutime 16, cstime 17
    return {
      ppid: Number(fields[1]),
      utime: Number(fields[11]),
      stime: Number(fields[12]),
      cutime: Number(fields[13]),
      cstime: Number(fields[14])
    }
  } catch {
    return undefined
  }
}

/** `pid` and all its descendants alive now. */
export const processTree = (pid) => {
  const children = new Map()
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    const st = readStat(Number(name))
    if (st === undefined) continue
    const list = children.get(st.ppid) ?? []
    list.push(Number(name))
    children.set(st.ppid, list)
  }
  const out = []
  const stack = [pid]
  while (stack.length > 0) {
    const p = stack.pop()
    out.push(p)
    for (const c of children.get(p) ?? []) stack.push(c)
  }
  return out
}

/**
 * CPU seconds used by `pid` and its descendants: user + system time of every
 * live process in the tree, plus the time of children they have reaped
 * (cutime/cstime), so exited worker processes still count.
 */
export const treeCpuSeconds = (pid) => {
  let ticks = 0
  for (const p of processTree(pid)) {
    const st = readStat(p)
    if (st) ticks += st.utime + st.stime + st.cutime + st.cstime
  }
  return ticks / CLK_TCK
}

/** `VmRSS`, `VmHWM` (kB) of one process. */
export const memoryKb = (pid) => {
  try {
    const text = fs.readFileSync(`/proc/${pid}/status`, "utf8")
    const get = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN)
    return { rss: get("VmRSS"), hwm: get("VmHWM") }
  } catch {
    return { rss: NaN, hwm: NaN }
  }
}

/** The summed `VmRSS` (kB) of `pid` and its descendants (shared pages counted once per process). */
export const treeRssKb = (pid) => processTree(pid).reduce((sum, p) => sum + (memoryKb(p).rss || 0), 0)

/** `Pss` (kB) of one process: its resident memory with shared pages divided among their users. */
const pssKb = (pid) => {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0)
  } catch {
    return 0
  }
}

/** The summed `Pss` (kB) of `pid` and its descendants: the memory of a multi-process server, shared pages counted once. */
export const treePssKb = (pid) => processTree(pid).reduce((sum, p) => sum + pssKb(p), 0)
