/**
 * Test helper: a real DNS server, dnsmasq (Debian `dnsmasq`), on a loopback
 * port. It is authoritative for the `local` domains given (`--local`: a name
 * it does not know there gets NXDOMAIN, a name without a record of the asked
 * type NODATA) and serves the records given as dnsmasq options
 * (`--txt-record=...`, `--mx-host=...`, `--host-record=...`,
 * `--dns-rr=...`, `--server=/domain/addr#port` to forward a domain).
 *
 * Started and stopped by PID only; a missing dnsmasq is an error for the
 * caller to raise (`hasDnsmasq`), never a silent skip.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import { freePort, waitForBound } from "./ports.ts"

export const DNSMASQ_BIN = process.env["DNSMASQ_BIN"] ?? "/usr/sbin/dnsmasq"

/** True when the dnsmasq binary is installed. */
export const hasDnsmasq = (): boolean => fs.existsSync(DNSMASQ_BIN)

export interface Dnsmasq {
  readonly address: string
  readonly port: number
  readonly pid: number
  /** `127.0.0.1:port`, for a resolver's name server list. */
  readonly server: string
  /** What dnsmasq logged so far (queries included). */
  readonly output: () => string
  /** Stops it, by PID. */
  readonly stop: () => Promise<void>
}

/**
 * Starts dnsmasq on 127.0.0.1 and a free port, answering for `local` domains
 * with `records` (dnsmasq options), and waits until it listens.
 */
export const startDnsmasq = async (local: ReadonlyArray<string>, records: ReadonlyArray<string>): Promise<Dnsmasq> => {
  if (!hasDnsmasq()) throw new Error(`dnsmasq not found at ${DNSMASQ_BIN}: install the Debian package 'dnsmasq'`)
  const address = "127.0.0.1"
  let lastError = ""
  for (let tries = 0; tries < 5; tries++) {
    const port = await freePort(address)
    const args = [
      "-k",
      "--conf-file=/dev/null",
      `--port=${port}`,
      `--listen-address=${address}`,
      "--bind-interfaces",
      "--no-resolv",
      "--no-hosts",
      "--no-negcache",
      "--log-facility=-",
      "--log-queries",
      ...local.map((d) => `--local=/${d}/`),
      ...records
    ]
    const child: ChildProcess = spawn(DNSMASQ_BIN, args, { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    child.stdout?.on("data", (d: Buffer) => (out += d.toString("latin1")))
    child.stderr?.on("data", (d: Buffer) => (out += d.toString("latin1")))
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    try {
      await Promise.race([
        waitForBound(address, port, 5_000),
        exited.then(() => {
          throw new Error(out)
        })
      ])
    } catch (e) {
      lastError = e instanceof Error ? e.message : String(e)
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      continue
    }
    const pid = child.pid!
    return {
      address,
      port,
      pid,
      server: `${address}:${port}`,
      output: () => out,
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) {
          process.kill(pid, "SIGTERM")
          await Promise.race([exited, new Promise((r) => setTimeout(r, 2_000))])
          if (child.exitCode === null && child.signalCode === null) process.kill(pid, "SIGKILL")
        }
      }
    }
  }
  throw new Error(`dnsmasq did not start: ${lastError}`)
}
