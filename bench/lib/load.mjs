// Load generators: Postfix's smtp-source (bounded in messages and in time),
// the idle-connection client (bench/idle-client.mjs), and the disk
// micro-benchmark (bench/disk.mjs). Loopback only.
import { spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import { spawnTracked, stopPid } from "./proc.mjs"
import { benchDir, nodeBin } from "./servers.mjs"

export const SMTP_SOURCE = "/usr/sbin/smtp-source"

/**
 * One smtp-source run: `sessions` parallel sessions sending `messages`
 * messages of `size` bytes to 127.0.0.1:`port`; a new connection per
 * message unless `persistent` (`-d`). Resolves with the wall time; killed
 * (and reported as failed) after `timeoutMs`.
 */
export const smtpSource = ({ port, sessions, messages, size, persistent = false, timeoutMs = 120_000 }) =>
  new Promise((resolve) => {
    const args = [
      ...(persistent ? ["-d"] : []),
      "-s", String(sessions),
      "-m", String(messages),
      "-l", String(size),
      "-f", "sender@bench.example",
      "-t", "rcpt@bench.example",
      `127.0.0.1:${port}`
    ]
    const t0 = performance.now()
    const child = spawn(SMTP_SOURCE, args, { stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    child.stderr.on("data", (d) => {
      if (stderr.length < 4000) stderr += d
    })
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill("SIGKILL")
    }, timeoutMs)
    child.once("error", (e) => {
      clearTimeout(timer)
      resolve({ ms: performance.now() - t0, ok: false, error: `${SMTP_SOURCE}: ${e.message}` })
    })
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      const ms = performance.now() - t0
      const ok = code === 0 && !timedOut
      resolve({
        ms,
        ok,
        error: ok ? undefined : timedOut ? `smtp-source timed out after ${timeoutMs} ms` : `smtp-source exited ${code ?? signal}: ${stderr.trim().split("\n").slice(-2).join(" | ")}`
      })
    })
  })

/**
 * Opens `count` idle connections to 127.0.0.1:`port` from `clients`
 * processes of bench/idle-client.mjs (each process holds at most its share,
 * within its open-files limit) and resolves once every client has reported:
 * `{ ready, failed, release }`; `release()` closes them all and resolves
 * with `{ held, closedByServer }`.
 */
export const idleConnections = async ({ port, count, clients, timeoutMs = 90_000 }) => {
  const per = Math.ceil(count / clients)
  const procs = []
  for (let i = 0; i < clients; i++) {
    const n = Math.min(per, count - i * per)
    if (n <= 0) break
    const child = spawnTracked(`idle-client ${i}`, nodeBin, [path.join(benchDir, "idle-client.mjs"), String(port), String(n), "120"], {
      stdin: "pipe",
      stdout: "pipe"
    })
    const lines = []
    const waiters = []
    readline.createInterface({ input: child.stdout }).on("line", (line) => {
      try {
        lines.push(JSON.parse(line))
      } catch {
        return
      }
      waiters.shift()?.()
    })
    const nextLine = async (k, ms) => {
      const until = Date.now() + ms
      while (lines.length < k && Date.now() < until && child.exitCode === null) {
        await new Promise((resolve) => {
          waiters.push(resolve)
          setTimeout(resolve, 200)
        })
      }
      return lines[k - 1]
    }
    procs.push({ child, nextLine })
  }
  const first = await Promise.all(procs.map((p) => p.nextLine(1, timeoutMs)))
  const ready = first.reduce((s, r) => s + (r?.ready ?? 0), 0)
  const failed = first.reduce((s, r) => s + (r?.failed ?? 0), 0) + (count - first.reduce((s, r) => s + (r ? (r.ready + r.failed) : 0), 0))
  const release = async () => {
    for (const p of procs) p.child.stdin.end()
    const last = await Promise.all(procs.map((p) => p.nextLine(2, 10_000)))
    await Promise.all(procs.map((p) => stopPid(p.child.pid, 3000)))
    return {
      held: last.reduce((s, r) => s + (r?.held ?? 0), 0),
      closedByServer: last.reduce((s, r) => s + (r?.closedByServer ?? 0), 0)
    }
  }
  return { ready, failed, release, pids: procs.map((p) => p.child.pid) }
}

/** Runs bench/disk.mjs in `dir` and resolves with its JSON lines. */
export const diskBenchmark = (dir, seconds) =>
  new Promise((resolve, reject) => {
    const child = spawn(nodeBin, [path.join(benchDir, "disk.mjs"), dir, String(seconds)], { stdio: ["ignore", "pipe", "inherit"] })
    const out = []
    readline.createInterface({ input: child.stdout }).on("line", (line) => {
      try {
        out.push(JSON.parse(line))
      } catch {
        // ignore
      }
    })
    const timer = setTimeout(() => child.kill("SIGKILL"), seconds * 4 * 1000 + 30_000)
    child.once("error", (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.once("exit", (code) => {
      clearTimeout(timer)
      code === 0 ? resolve(out) : reject(new Error(`disk.mjs exited ${code}`))
    })
  })
