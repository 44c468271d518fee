// The servers the benchmark drives, each started fresh in its own temporary
// directory on a loopback port, configured so that a 250 after DATA means
// the message is on disk (fsynced), and stopped by PID (Postfix with
// `postfix -c DIR stop`).
//
// A started server is a handle:
//   { key, label, port, pid, notes, stored(), queueEmpty(), stop() }
// `pid` is the process whose tree is measured (CPU, memory); `stored()`
// counts the messages it holds durably (for the check that every accepted
// message was written; undefined where it cannot be counted from outside,
// e.g. Mailroom's memory or journal storage); `queueEmpty()` is for the
// relay scenario (Mailroom: its disk queue, or for other storages its log).
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { onCleanup, spawnTracked, stopPid, waitForPort } from "./proc.mjs"

export const root = new URL("../..", import.meta.url).pathname.replace(/\/$/, "")
export const benchDir = path.join(root, "bench")
export const nodeBin = path.join(root, "node_modules", ".bin", "node")
export const denoBin = path.join(root, "node_modules", ".bin", "deno")
export const mailroomCli = path.join(root, "packages", "node-adapter", "bin", "mailroom.mjs")
export const denoMain = path.join(root, "packages", "deno-adapter", "src", "main.ts")
export const staticRelaySource = path.join(root, "packages", "protocol", "src", "relay", "StaticRelay.ts")
const harakaDir = path.join(benchDir, "node_modules", "Haraka")

const countFiles = (dir, filter = () => true) => {
  try {
    return fs.readdirSync(dir).filter(filter).length
  } catch {
    return 0
  }
}

const countFilesDeep = (dir) => {
  let n = 0
  const walk = (d) => {
    let entries
    try {
      entries = fs.readdirSync(d, { withFileTypes: true })
    } catch {
      return
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(path.join(d, e.name))
      else n++
    }
  }
  walk(dir)
  return n
}

const started = async (handle, child, startMs) => {
  try {
    await waitForPort("127.0.0.1", handle.port, startMs, child)
  } catch (e) {
    await handle.stop()
    const log = handle.logFile && fs.existsSync(handle.logFile) ? fs.readFileSync(handle.logFile, "utf8").slice(-2000) : ""
    throw Object.assign(new Error(`${handle.label}: ${e.message}`), { log })
  }
  return handle
}

// --- Mailroom -------------------------------------------------------------------

/**
 * The relay section of Mailroom's config for each use:
 * - `parked`: an HTTP relay to a listener (in the runner) that accepts and
 *   never answers, with a one-hour timeout. The first 20 messages are claimed
 *   and their attempts hang; the rest wait in the queue. So only the
 *   durable write is measured, as with Postfix's HOLD.
 * - `blackhole`: delivers at once and removes the message (claim, record,
 *   remove: more disk work per message than the peers do).
 * - `static`: SMTP to smtp-sink (the relay scenario), when serve supports it.
 * - `maildir`: local delivery into one Maildir (the relay scenario's fallback).
 */
const relayYaml = (relay, dir) => {
  switch (relay.type) {
    case "parked":
      return `{ type: http, url: "http://127.0.0.1:${relay.parkPort}/", timeout: 1h }`
    case "blackhole":
      return "{ type: blackhole }"
    case "static":
      return `{ type: static, host: 127.0.0.1, port: ${relay.sinkPort}, tls: none }`
    case "maildir":
      return `{ type: maildir, path: "${path.join(dir, "mail")}", folders: single }`
  }
  throw new Error(`unknown relay ${relay.type}`)
}

/**
 * The queue storage section of Mailroom's config:
 * - `disk` (the default): DiskStorage under DIR/queue, what the suite measures;
 * - `memory`: no disk at all (isolates the CPU of the path from the disk);
 * - `journal`: the append-only journal at DIR/queue.
 */
const storageYaml = (storage, dir) => {
  switch (storage) {
    case "disk":
      return `{ type: disk, path: "${path.join(dir, "queue")}" }`
    case "memory":
      return "{ type: memory }"
    case "journal":
      return `{ type: journal, path: "${path.join(dir, "queue")}" }`
  }
  throw new Error(`unknown storage ${storage}`)
}

export const mailroomConfig = ({ port, dir, relay, storage = "disk", workers = 1 }) =>
  [
    "# written by bench/run.mjs",
    "hostname: bench.mailroom.test",
    ...(workers > 1 ? [`workers: ${workers}`] : []),
    "smtp:",
    `  - listen: "127.0.0.1:${port}"`,
    "    max_connections: 25000",
    "    max_connections_per_client: 25000",
    "queue:",
    `  storage: ${storageYaml(storage, dir)}`,
    `relay: ${relayYaml(relay, dir)}`,
    ""
  ].join("\n")

/**
 * Follows Mailroom's log file (logfmt) and counts what the queue took and
 * what it finished with: `event=message` lines whose id is not `-` (queued,
 * one id per queued envelope) against `event=delivery` lines with
 * `deferred=0` (every recipient delivered or bounced, so the message left
 * the queue). Reads only what was appended since the last call. This is how
 * "queue empty" is known for storages the runner cannot look into (memory,
 * journal); it assumes no DSNs are queued (the bench's relays never bounce).
 */
const logCounter = (logFile) => {
  let offset = 0
  let rest = ""
  let queued = 0
  let finished = 0
  const read = () => {
    let fd
    try {
      fd = fs.openSync(logFile, "r")
    } catch {
      return
    }
    try {
      const size = fs.fstatSync(fd).size
      if (size <= offset) return
      const buf = Buffer.alloc(size - offset)
      const n = fs.readSync(fd, buf, 0, buf.length, offset)
      offset += n
      const lines = (rest + buf.toString("utf8", 0, n)).split("\n")
      rest = lines.pop()
      for (const line of lines) {
        if (line.includes(" event=message ")) {
          const id = / id=("[^"]*"|\S+)/.exec(line)?.[1]
          if (id !== undefined && id !== "-") queued += id.split(",").length
        } else if (line.includes(" event=delivery ") && line.includes(" deferred=0 ")) finished++
      }
    } finally {
      fs.closeSync(fd)
    }
  }
  return {
    counts: () => {
      read()
      return { queued, finished }
    }
  }
}

/**
 * `mailroom serve` on Node (`host: "node"`) or Deno (`host: "deno"`).
 * `profileDir`: run Node with `--cpu-prof` into that directory.
 */
export const startMailroom = async ({ host = "node", port, dir, relay, profileDir, label, storage = "disk", workers = 1 }) => {
  fs.mkdirSync(dir, { recursive: true })
  const configFile = path.join(dir, "mailroom.yaml")
  fs.writeFileSync(configFile, mailroomConfig({ port, dir, relay, storage, workers }))
  const logFile = path.join(dir, "mailroom.log")
  let child
  if (host === "node") {
    const flags = profileDir ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : []
    child = spawnTracked(label, nodeBin, [...flags, mailroomCli, "serve", "--config", configFile], { logFile, cwd: dir })
  } else {
    child = spawnTracked(label, denoBin, ["run", "--allow-all", "--no-check", denoMain, "serve", "--config", configFile], {
      logFile,
      cwd: root
    })
  }
  const queueDir = path.join(dir, "queue")
  const fromLog = logCounter(logFile)
  const handle = {
    key: `mailroom-${host}`,
    label,
    port,
    pid: child.pid,
    logFile,
    storage,
    workers,
    // the supervisor and its workers: memory is read over the process tree
    multiProcess: workers > 1,
    notes: [],
    // only the disk queue can be counted from outside; memory and journal: undefined
    stored: () => storage === "disk" ? countFiles(path.join(queueDir, "meta"), (n) => n.endsWith(".json")) : undefined,
    delivered: () => countFiles(path.join(dir, "mail", "new")),
    queueEmpty: () => {
      if (storage === "disk") return countFiles(path.join(queueDir, "meta"), (n) => n.endsWith(".json")) === 0
      const { queued, finished } = fromLog.counts()
      return finished >= queued
    },
    /** Messages queued and messages that left the queue, from the log (any storage). */
    logCounts: () => fromLog.counts(),
    stop: () => stopPid(child.pid, 10_000)
  }
  await started(handle, child, host === "node" ? 20_000 : 30_000)
  // the port answers once one worker listens: wait for all of them
  for (const until = Date.now() + 20_000; workers > 1;) {
    const log = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8") : ""
    const listening = new Set([...log.matchAll(/event=listening worker=(\d+) edge=smtp/g)].map((m) => m[1]))
    if (listening.size >= workers) break
    if (Date.now() > until) {
      await handle.stop()
      throw Object.assign(new Error(`${label}: only ${listening.size} of ${workers} workers listening after 20 s`), { log: log.slice(-2000) })
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return handle
}

// --- Postfix -------------------------------------------------------------------------

/**
 * A private Postfix instance: its own config and queue directories under
 * `dir`, smtpd on 127.0.0.1:`port`. `hold: true` puts every message on hold
 * (`check_recipient_access static:HOLD`): cleanup writes and fsyncs the queue
 * file before smtpd answers 250, and nothing is delivered. `hold: false`
 * relays everything to `[127.0.0.1]:relayPort` (smtp-sink).
 */
export const startPostfix = async ({ port, dir, hold, relayPort, label = "Postfix" }) => {
  const etc = path.join(dir, "etc")
  const spool = path.join(dir, "spool")
  const data = path.join(dir, "data")
  for (const d of [etc, spool, data]) fs.mkdirSync(d, { recursive: true })
  // the postfix user must be able to reach its directories
  for (let d = dir; d !== "/" && d.startsWith("/tmp/"); d = path.dirname(d)) fs.chmodSync(d, 0o755)
  spawnSync("chown", ["postfix", data])
  const mainCf = [
    "# written by bench/run.mjs: a private instance for the benchmark",
    "compatibility_level = 3.6",
    `config_directory = ${etc}`,
    `queue_directory = ${spool}`,
    `data_directory = ${data}`,
    "mail_owner = postfix",
    "setgid_group = postdrop",
    "myhostname = bench.postfix.test",
    "mydomain = postfix.test",
    "inet_interfaces = 127.0.0.1",
    "inet_protocols = ipv4",
    "mydestination =",
    "local_recipient_maps =",
    "alias_maps =",
    "alias_database =",
    "mynetworks = 127.0.0.0/8",
    `relayhost = [127.0.0.1]:${relayPort ?? 9}`,
    "smtpd_relay_restrictions = permit_mynetworks, reject",
    hold ? "smtpd_recipient_restrictions = check_recipient_access static:HOLD" : "smtpd_recipient_restrictions =",
    "smtp_tls_security_level = none",
    "smtpd_tls_security_level = none",
    "message_size_limit = 26214400",
    "biff = no",
    `maillog_file = ${path.join(dir, "maillog")}`,
    `maillog_file_prefixes = ${dir}`,
    ""
  ].join("\n")
  const masterCf = [
    `127.0.0.1:${port} inet n - n - - smtpd`,
    "pickup    unix  n - n 60 1 pickup",
    "cleanup   unix  n - n - 0 cleanup",
    "qmgr      unix  n - n 300 1 qmgr",
    "rewrite   unix  - - n - - trivial-rewrite",
    "bounce    unix  - - n - 0 bounce",
    "defer     unix  - - n - 0 bounce",
    "trace     unix  - - n - 0 bounce",
    "verify    unix  - - n - 1 verify",
    "flush     unix  n - n 1000? 0 flush",
    "proxymap  unix  - - n - - proxymap",
    "proxywrite unix - - n - 1 proxymap",
    "smtp      unix  - - n - - smtp",
    "relay     unix  - - n - - smtp",
    "showq     unix  n - n - - showq",
    "error     unix  - - n - - error",
    "retry     unix  - - n - - error",
    "discard   unix  - - n - - discard",
    "anvil     unix  - - n - 1 anvil",
    "scache    unix  - - n - 1 scache",
    "postlog   unix-dgram n - n - 1 postlogd",
    ""
  ].join("\n")
  fs.writeFileSync(path.join(etc, "main.cf"), mainCf)
  fs.writeFileSync(path.join(etc, "master.cf"), masterCf)
  const stop = async () => {
    const pid = readPid()
    spawnSync("/usr/sbin/postfix", ["-c", etc, "stop"], { stdio: "ignore", timeout: 20_000 })
    // `postfix stop` returns before every child is gone
    if (pid) {
      const until = Date.now() + 10_000
      while (Date.now() < until && alive(pid)) await new Promise((r) => setTimeout(r, 50))
      if (alive(pid)) spawnSync("/usr/sbin/postfix", ["-c", etc, "abort"], { stdio: "ignore", timeout: 20_000 })
    }
    unregister()
  }
  const unregister = onCleanup(stop)
  const readPid = () => {
    try {
      return Number(fs.readFileSync(path.join(spool, "pid", "master.pid"), "utf8").trim())
    } catch {
      return undefined
    }
  }
  const r = spawnSync("/usr/sbin/postfix", ["-c", etc, "start"], { encoding: "utf8", timeout: 30_000 })
  const pid = readPid()
  const handle = {
    key: "postfix",
    label,
    port,
    pid,
    logFile: path.join(dir, "maillog"),
    notes: [],
    stored: () => countFilesDeep(path.join(spool, "hold")),
    queueEmpty: () => ["incoming", "active", "deferred", "maildrop", "hold"].every((q) => countFilesDeep(path.join(spool, q)) === 0),
    deferred: () => countFilesDeep(path.join(spool, "deferred")),
    stop
  }
  if (r.status !== 0 || !pid) {
    await stop()
    const log = fs.existsSync(handle.logFile) ? fs.readFileSync(handle.logFile, "utf8").slice(-2000) : ""
    throw Object.assign(new Error(`Postfix: postfix start failed (${r.status}): ${r.stderr}`), { log })
  }
  return started(handle, undefined, 15_000)
}

const alive = (pid) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

// --- Haraka --------------------------------------------------------------------------

/**
 * Haraka from bench/node_modules, single process (`nodes` unset), its
 * shipped default config except: listen on 127.0.0.1:`port`, and only one
 * plugin, bench/peers/haraka/queue_fsync.js (accept every recipient; write
 * and fsync each message before the 250). Logging as shipped (INFO).
 */
export const startHaraka = async ({ port, dir, label = "Haraka" }) => {
  if (!fs.existsSync(harakaDir)) throw new Error("Haraka is not installed in bench/node_modules")
  const config = path.join(dir, "config")
  fs.mkdirSync(path.join(dir, "plugins"), { recursive: true })
  fs.cpSync(path.join(harakaDir, "config"), config, { recursive: true })
  fs.copyFileSync(path.join(benchDir, "peers", "haraka", "queue_fsync.js"), path.join(dir, "plugins", "queue_fsync.js"))
  fs.writeFileSync(path.join(config, "smtp.ini"), `listen=127.0.0.1:${port}\n`)
  fs.writeFileSync(path.join(config, "plugins"), "queue_fsync\n")
  fs.writeFileSync(path.join(config, "me"), "bench.haraka.test\n")
  const spool = path.join(dir, "spool")
  const logFile = path.join(dir, "haraka.log")
  const child = spawnTracked(label, nodeBin, [path.join(harakaDir, "bin", "haraka"), "-c", dir], {
    logFile,
    cwd: dir,
    env: { BENCH_SPOOL: spool }
  })
  const handle = {
    key: "haraka",
    label,
    port,
    pid: child.pid,
    logFile,
    notes: [],
    stored: () => countFiles(spool),
    stop: () => stopPid(child.pid, 10_000)
  }
  return started(handle, child, 20_000)
}

// --- smtp-server ---------------------------------------------------------------------

/** nodemailer's smtp-server through bench/peers/smtp-server.mjs (write + fsync each message). */
export const startSmtpServer = async ({ port, dir, label = "smtp-server" }) => {
  const spool = path.join(dir, "spool")
  const logFile = path.join(dir, "smtp-server.log")
  const child = spawnTracked(label, nodeBin, [path.join(benchDir, "peers", "smtp-server.mjs"), String(port), spool], {
    logFile,
    cwd: benchDir
  })
  const handle = {
    key: "smtp-server",
    label,
    port,
    pid: child.pid,
    logFile,
    notes: [],
    stored: () => countFiles(spool),
    stop: () => stopPid(child.pid, 5000)
  }
  return started(handle, child, 15_000)
}

// --- smtp-sink -----------------------------------------------------------------------

/**
 * Postfix's smtp-sink: accepts and discards (the ceiling of the SMTP dialogue here).
 * `count: true` runs it with `-c` (a running counter written to its log at
 * each end of message, QUIT and session), so `received()` tells how many
 * messages it has taken so far; off by default, as the counter costs writes.
 */
export const startSmtpSink = async ({ port, dir, label = "smtp-sink (ceiling)", count = false }) => {
  fs.mkdirSync(dir, { recursive: true })
  const logFile = path.join(dir, "smtp-sink.log")
  const child = spawnTracked(label, "/usr/sbin/smtp-sink", [...(count ? ["-c"] : []), "-u", "postfix", `127.0.0.1:${port}`, "1024"], {
    logFile
  })
  const handle = {
    key: "smtp-sink",
    label,
    port,
    pid: child.pid,
    logFile,
    notes: [],
    stored: () => undefined,
    /** Messages received so far (with `count: true`; else undefined). */
    received: () => {
      if (!count) return undefined
      let tail = ""
      try {
        const fd = fs.openSync(logFile, "r")
        try {
          const size = fs.fstatSync(fd).size
          const buf = Buffer.alloc(Math.min(size, 256))
          const n = fs.readSync(fd, buf, 0, buf.length, size - buf.length)
          tail = buf.toString("latin1", 0, n)
        } finally {
          fs.closeSync(fd)
        }
      } catch {
        return 0
      }
      const all = [...tail.matchAll(/mesg=(\d+)/g)]
      return all.length > 0 ? Number(all.at(-1)[1]) : 0
    },
    stop: () => stopPid(child.pid, 3000)
  }
  return started(handle, child, 10_000)
}
