/**
 * Test helper: postfix's `smtp-sink` (Debian `postfix`, `/usr/sbin/smtp-sink`)
 * as a real downstream SMTP server on a loopback address, with its fault
 * injection (`-r` soft reject, `-f` hard reject, `-q` silent disconnect, `-Q`
 * 421 and disconnect, per command), its per-message dump files (`-d`), and
 * its running counters (`-c`: sessions, QUITs, messages).
 *
 * The process is started by PID and stopped by that PID only. A missing
 * smtp-sink is an error, never a silent skip.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { freePort, removeDir, tempDir, waitForBound } from "./ports.ts"

export const SMTP_SINK_BIN = process.env["SMTP_SINK_BIN"] ?? "/usr/sbin/smtp-sink"

export interface SmtpSinkOptions {
  /** Loopback address to bind (any of 127.0.0.0/8). Default 127.0.0.1. */
  readonly host?: string
  /** Port; default a free one. */
  readonly port?: number
  /** Extra flags, e.g. ["-r", "RCPT"], ["-8"], ["-L"]. */
  readonly args?: ReadonlyArray<string>
  /** Dump each message to a file. Default true. */
  readonly dump?: boolean
}

export interface SmtpSink {
  readonly host: string
  readonly port: number
  readonly pid: number
  /** Every dumped message, oldest first (smtp-sink's own headers first, LF line ends, unstuffed). */
  readonly messages: () => ReadonlyArray<string>
  /** The last counters printed: sessions ended, QUITs, messages. */
  readonly counters: () => { readonly sessions: number; readonly quits: number; readonly messages: number }
  readonly output: () => string
  readonly stop: () => Promise<void>
}

/** Starts smtp-sink and waits until it listens (without connecting, so no session is counted). */
export const startSmtpSink = async (options: SmtpSinkOptions = {}): Promise<SmtpSink> => {
  if (!fs.existsSync(SMTP_SINK_BIN)) {
    throw new Error(`smtp-sink not found at ${SMTP_SINK_BIN}: install the Debian package 'postfix'`)
  }
  const host = options.host ?? "127.0.0.1"
  const port = options.port ?? await freePort(host)
  const dir = tempDir("mailroom-sink-")
  fs.chmodSync(dir, 0o777)
  const args = [
    ...(process.getuid?.() === 0 ? ["-u", "nobody"] : []),
    "-c",
    ...(options.dump === false ? [] : ["-d", path.join(dir, "m.")]),
    ...(options.args ?? []),
    `${host}:${port}`,
    "64"
  ]
  const child: ChildProcess = spawn(SMTP_SINK_BIN, args, { stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  child.stdout?.on("data", (d: Buffer) => (out += d.toString("latin1")))
  child.stderr?.on("data", (d: Buffer) => (out += d.toString("latin1")))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  try {
    await waitForBound(host, port, 5_000)
  } catch (e) {
    child.kill("SIGKILL")
    removeDir(dir)
    throw new Error(`smtp-sink did not start: ${out || String(e)}`)
  }
  const pid = child.pid!
  return {
    host,
    port,
    pid,
    messages: () =>
      fs.readdirSync(dir)
        .filter((f) => f.startsWith("m."))
        .map((f) => ({ f, t: fs.statSync(path.join(dir, f)).mtimeMs }))
        .sort((a, b) => a.t - b.t || a.f.localeCompare(b.f))
        .map(({ f }) => fs.readFileSync(path.join(dir, f), "latin1")),
    counters: () => {
      const all = [...out.matchAll(/sess=(\d+) quit=(\d+) mesg=(\d+)/g)]
      const last = all[all.length - 1]
      return last === undefined
        ? { sessions: 0, quits: 0, messages: 0 }
        : { sessions: Number(last[1]), quits: Number(last[2]), messages: Number(last[3]) }
    },
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(pid, "SIGTERM")
        await Promise.race([exited, new Promise((r) => setTimeout(r, 2_000))])
        if (child.exitCode === null && child.signalCode === null) process.kill(pid, "SIGKILL")
      }
      removeDir(dir)
    }
  }
}

/** The message part of a smtp-sink dump: what follows its own headers (up to its 3-line Received). */
export const dumpBody = (dump: string): string => {
  const i = dump.indexOf("\n\tby smtp-sink")
  const afterReceived = dump.indexOf("\n", dump.indexOf("\n", i + 1) + 1) + 1
  // smtp-sink appends one empty line after the message
  return dump.slice(afterReceived).replace(/\n$/, "")
}

/** The values of smtp-sink's `X-...-Args` dump headers. */
export const dumpArgs = (dump: string, name: "X-Helo-Args" | "X-Mail-Args" | "X-Rcpt-Args"): ReadonlyArray<string> =>
  [...dump.matchAll(new RegExp(`^${name}: (.*)$`, "gm"))].map((m) => m[1]!)
