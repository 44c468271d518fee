/**
 * Test helper: a real haproxy (Debian's `/usr/sbin/haproxy`) in TCP mode in
 * front of a server under test, sending the PROXY protocol (`send-proxy` or
 * `send-proxy-v2`). One process serves any number of frontends, each on its
 * own ephemeral 127.0.0.1 port.
 *
 * A missing haproxy is an error, never a silent skip: the PROXY interop
 * tests must fail where haproxy is not installed (`.ci/install-system.sh`
 * installs it).
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { freePort, removeDir, tempDir, waitForBound } from "./ports.ts"

export const HAPROXY_BIN = process.env["HAPROXY_BIN"] ?? "/usr/sbin/haproxy"

export interface HaproxyRoute {
  /** Where haproxy forwards to. */
  readonly backend: { readonly host: string; readonly port: number }
  /** `v1` = `send-proxy`, `v2` = `send-proxy-v2`, `none` = plain TCP. */
  readonly proxy: "v1" | "v2" | "none"
  /** Also health-check the backend every 200 ms (with `check-send-proxy`: v2 checks carry LOCAL). */
  readonly check?: boolean
}

export interface Haproxy {
  /** The frontend port of each route, in order. */
  readonly ports: ReadonlyArray<number>
  readonly pid: number
  /** Everything haproxy printed so far. */
  readonly output: () => string
  /** Kills haproxy by PID and removes its files. */
  readonly stop: () => Promise<void>
}

/**
 * Starts haproxy with one frontend per route and waits until every frontend
 * port is bound (without connecting, so the backend sees no probe).
 */
export const startHaproxy = async (routes: ReadonlyArray<HaproxyRoute>): Promise<Haproxy> => {
  if (!fs.existsSync(HAPROXY_BIN)) {
    throw new Error(`haproxy not found at ${HAPROXY_BIN}: install the Debian package 'haproxy' (.ci/install-system.sh)`)
  }
  const dir = tempDir("mailroom-haproxy-")
  const ports: Array<number> = []
  for (const _ of routes) ports.push(await freePort())
  const lines = [
    "global",
    "  maxconn 256",
    "defaults",
    "  mode tcp",
    "  timeout connect 5s",
    "  timeout client 30s",
    "  timeout server 30s",
    ...routes.flatMap((route, i) => {
      const send = route.proxy === "v1" ? " send-proxy" : route.proxy === "v2" ? " send-proxy-v2" : ""
      const check = route.check === true ? " check inter 200 check-send-proxy" : ""
      return [
        `listen route${i}`,
        `  bind 127.0.0.1:${ports[i]}`,
        `  server backend${i} ${route.backend.host}:${route.backend.port}${send}${check}`
      ]
    })
  ]
  const cfg = path.join(dir, "haproxy.cfg")
  fs.writeFileSync(cfg, lines.join("\n") + "\n")
  let out = ""
  const child: ChildProcess = spawn(HAPROXY_BIN, ["-f", cfg, "-db"], { stdio: ["ignore", "pipe", "pipe"] })
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()))
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const spawnError = new Promise<never>((_, reject) => child.once("error", reject))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, "SIGTERM")
      const killer = setTimeout(() => child.pid !== undefined && process.kill(child.pid, "SIGKILL"), 3000)
      await exited
      clearTimeout(killer)
    }
    removeDir(dir)
  }
  try {
    await Promise.race([
      Promise.all(ports.map((p) => waitForBound("127.0.0.1", p))),
      spawnError,
      exited.then(() => {
        throw new Error(`haproxy exited at start:\n${out}`)
      })
    ])
  } catch (e) {
    await stop()
    throw e
  }
  if (child.pid === undefined) throw new Error("haproxy has no pid")
  return { ports, pid: child.pid, output: () => out, stop }
}
