#!/usr/bin/env node
// Profiles `mailroom serve` (Node, `--cpu-prof`) under one benchmark load
// and prints where the time goes: self time by function and by file.
//
//   node bench/profile.mjs [--messages N] [--sessions N] [--size BYTES] [--persistent]
//                          [--relay parked|blackhole|static] [--storage disk|memory|journal] [--no-prof]
//
// --relay static relays to an smtp-sink and waits, after each load, until the
// queue is empty: until the sink has received every message (it counts them,
// `smtp-sink -c`) and, on disk, the queue directory is empty too. With
// --relay blackhole the queue is known empty from the disk queue, or for
// memory and journal storage from Mailroom's log.
// --storage memory keeps the queue in memory: the CPU of the path without
// the disk. --no-prof runs without --cpu-prof (its sampling costs CPU too).
//
// Same config as the accept scenario of bench/run.mjs (disk queue, parked
// relay unless --relay says otherwise). A warm-up of N/2 messages runs first; the
// profile covers the whole process. The .cpuprofile is kept in
// bench/results/ for Chrome DevTools.
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { smtpSource } from "./lib/load.mjs"
import { freePort, killAllSync, stopAll, treeCpuSeconds } from "./lib/proc.mjs"
import { benchDir, root, startMailroom, startSmtpSink } from "./lib/servers.mjs"

const argv = process.argv.slice(2)
const value = (name, d) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 ? argv[i + 1] : d
}
const messages = Number(value("messages", 3000))
const sessions = Number(value("sessions", 20))
const size = Number(value("size", 5120))
const persistent = argv.includes("--persistent")
const relayType = value("relay", "parked")
const storage = value("storage", "disk")
const profiling = !argv.includes("--no-prof")
if (!["disk", "memory", "journal"].includes(storage)) throw new Error(`--storage: disk, memory or journal, not ${storage}`)

/** User and system CPU seconds of one process (Mailroom is one; clock ticks of 10 ms). */
const userSystem = (pid) => {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ").pop().split(" ")
    return { user: Number(f[11]) / 100, system: Number(f[12]) / 100 }
  } catch {
    return { user: NaN, system: NaN }
  }
}

process.on("exit", killAllSync)
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mailroom-profile-"))
const park = net.createServer((s) => s.on("error", () => {}))
await new Promise((r) => park.listen(0, "127.0.0.1", r))
const profileDir = path.join(tmp, "prof")
try {
  const port = await freePort()
  const sink = relayType === "static"
    ? await startSmtpSink({ port: await freePort(), dir: path.join(tmp, "sink"), label: "receiving smtp-sink", count: true })
    : undefined
  const h = await startMailroom({
    host: "node",
    port,
    dir: path.join(tmp, "mailroom"),
    label: "Mailroom (Node)",
    storage,
    profileDir: profiling ? profileDir : undefined,
    relay: relayType === "blackhole"
      ? { type: "blackhole" }
      : relayType === "static"
      ? { type: "static", sinkPort: sink.port }
      : { type: "parked", parkPort: park.address().port }
  })
  // messages sent so far (each has one recipient): what the sink must have received
  let sent = 0
  const empty = () => {
    if (sink !== undefined && sink.received() < sent) return false
    return storage === "disk" || sink === undefined ? h.queueEmpty() : true
  }
  const drain = async () => {
    if (relayType === "parked") return true
    for (const until = Date.now() + 120_000; Date.now() < until;) {
      if (empty()) return true
      await new Promise((r) => setTimeout(r, 20))
    }
    console.error(`queue not empty after 120 s (sink received ${sink?.received() ?? "-"} of ${sent}; log ${JSON.stringify(h.logCounts())})`)
    return false
  }
  const warm = await smtpSource({ port, sessions, messages: Math.round(messages / 2), size, persistent })
  if (!warm.ok) console.error(`warm-up: ${warm.error}`)
  sent += Math.round(messages / 2)
  await drain()
  const cpu0 = treeCpuSeconds(h.pid)
  const split0 = userSystem(h.pid)
  const t0 = performance.now()
  const r = await smtpSource({ port, sessions, messages, size, persistent })
  sent += messages
  const drained = await drain()
  r.ms = performance.now() - t0
  const cpu = treeCpuSeconds(h.pid) - cpu0
  const split1 = userSystem(h.pid)
  const perMsg = (s) => Math.round((s * 1e6) / messages)
  console.log(
    `${messages} messages (relay ${relayType}, storage ${storage}${profiling ? "" : ", no profiler"}) in ${(r.ms / 1000).toFixed(2)} s: ${
      Math.round(messages / (r.ms / 1000))
    } msgs/s, server CPU ${perMsg(cpu)} µs/msg (user ${perMsg(split1.user - split0.user)}, system ${perMsg(split1.system - split0.system)})${
      r.ok ? "" : ` (${r.error})`
    }${drained ? "" : " (queue not drained)"}`
  )
  await h.stop()
} finally {
  await stopAll()
  park.close()
}

if (!profiling) {
  fs.rmSync(tmp, { recursive: true, force: true })
  process.exit(0)
}
const file = fs.readdirSync(profileDir).find((f) => f.endsWith(".cpuprofile"))
if (!file) {
  console.error("no .cpuprofile written (did the server exit cleanly?)")
  process.exit(1)
}
const outDir = path.join(benchDir, "results")
fs.mkdirSync(outDir, { recursive: true })
const kept = path.join(outDir, `profile-${new Date().toISOString().replace(/[:.]/g, "-")}.cpuprofile`)
fs.copyFileSync(path.join(profileDir, file), kept)
fs.rmSync(tmp, { recursive: true, force: true })

// --- analysis: self time per node, summed by function and by file ---
const prof = JSON.parse(fs.readFileSync(kept, "utf8"))
const byId = new Map(prof.nodes.map((n) => [n.id, n]))
const self = new Map()
const dt = prof.timeDeltas
for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (dt[i] ?? 0))
let total = 0
let idle = 0
const fnTime = new Map()
const fileTime = new Map()
const short = (url) =>
  url.replace(`file://${root}/`, "").replace(/^.*node_modules\//, "node_modules/").replace(/^node:/, "node:") || "(native)"
for (const [id, us] of self) {
  const n = byId.get(id)
  const cf = n.callFrame
  total += us
  if (cf.functionName === "(idle)" || cf.functionName === "(program)") {
    if (cf.functionName === "(idle)") idle += us
  }
  const key = `${cf.functionName || "(anonymous)"} ${short(cf.url)}:${cf.lineNumber + 1}`
  fnTime.set(key, (fnTime.get(key) ?? 0) + us)
  const f = cf.url ? short(cf.url).replace(/^(node_modules\/(@[^/]+\/)?[^/]+)\/.*$/, "$1") : `(${cf.functionName})`
  fileTime.set(f, (fileTime.get(f) ?? 0) + us)
}
const busy = total - idle
// inclusive: each sample goes to the nearest Mailroom source file on its stack
const parent = new Map()
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
const ownTime = new Map()
for (const [id, us] of self) {
  const name = byId.get(id).callFrame.functionName
  if (name === "(idle)") continue
  let k = id
  let owner
  while (k !== undefined) {
    const url = byId.get(k).callFrame.url
    if (url.includes("/packages/")) {
      owner = short(url)
      break
    }
    k = parent.get(k)
  }
  owner ??= name === "(garbage collector)" || name === "(program)" ? name : "(no Mailroom frame: event loop, node internals)"
  ownTime.set(owner, (ownTime.get(owner) ?? 0) + us)
}
const top = (m, n) => [...m].filter(([k]) => !k.startsWith("(idle)")).sort((a, b) => b[1] - a[1]).slice(0, n)
console.log(`\nbusy ${(busy / 1e6).toFixed(2)} s of ${(total / 1e6).toFixed(2)} s sampled; profile: ${path.relative(root, kept)}\n`)
console.log("| self % of busy | function |\n|---:|---|")
for (const [k, us] of top(fnTime, 30)) console.log(`| ${((100 * us) / busy).toFixed(1)} | \`${k}\` |`)
console.log("\n| self % of busy | file or package |\n|---:|---|")
for (const [k, us] of top(fileTime, 25)) console.log(`| ${((100 * us) / busy).toFixed(1)} | \`${k}\` |`)
console.log("\n| % of busy | nearest Mailroom file on the stack (inclusive of what it calls) |\n|---:|---|")
for (const [k, us] of top(ownTime, 20)) console.log(`| ${((100 * us) / busy).toFixed(1)} | \`${k}\` |`)
