// Turns the runner's result into Markdown: the machine, one table per
// scenario, and the issue's targets with met/missed. Pure: no I/O.

const fmt = (n, digits = 0) =>
  n === undefined || n === null || Number.isNaN(n)
    ? "—"
    : Number(n).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

const ratio = (a, b) => (a === undefined || b === undefined || !b ? undefined : a / b)
const fmtRatio = (r) => (r === undefined ? "—" : `${fmt(r, 2)}×`)

const scenario = (result, id) => result.scenarios.find((s) => s.id === id)
const row = (result, id, key) => scenario(result, id)?.rows?.find((r) => r.key === key)
const skippedRow = (result, id, key) => scenario(result, id)?.skipped?.find((r) => r.key === key)

const MAILROOM = "mailroom-node"

const check = (sc, r) => {
  const parts = []
  if (r.stored !== undefined) parts.push(r.stored === r.sent ? `${fmt(r.stored)} of ${fmt(r.sent)} on disk` : `**${fmt(r.stored)} on disk, ${fmt(r.sent)} sent**`)
  if (sc.purpose === "relay" && r.key !== "smtp-sink") {
    if (r.relayKind) parts.push(r.relayKind === "static" ? "delivered over SMTP to smtp-sink" : "**delivered into a Maildir** (see note)")
    parts.push(`accept phase ${fmt(r.acceptRate)} msgs/s`)
    parts.push(r.runs.every((x) => x.ok) ? "queue emptied after each run" : "**queue not emptied**")
    if (r.delivered !== undefined) parts.push(`${fmt(r.delivered)} in the Maildir`)
    if (r.deferred) parts.push(`**${r.deferred} deferred**`)
  }
  const failed = r.runs.filter((x) => !x.ok).length
  if (failed > 0 || r.errors.length > 0) parts.push(`**${failed} run(s) failed: ${r.errors[0] ?? ""}**`)
  return parts.join("; ") || "—"
}

const sourceTable = (sc) => {
  const latency = sc.metric === "latency"
  const base = sc.rows.find((r) => r.key === MAILROOM)
  const out = []
  out.push(
    latency
      ? "| Server | ms/msg (median) | runs (ms/msg) | Mailroom (Node) ms ÷ this | server CPU µs/msg | peak RSS MB | check |"
      : `| Server | msgs/s (median) | runs (msgs/s) | Mailroom (Node) ÷ this | server CPU µs/msg | peak RSS MB | check |`
  )
  out.push("|---|---:|---|---:|---:|---:|---|")
  for (const r of sc.rows) {
    const runs = r.runs.map((x) => (latency ? fmt(x.msPerMessage, 2) : fmt(x.rate))).join(", ")
    const value = latency ? fmt(r.msPerMessage, 2) : fmt(r.rate)
    const rel = latency ? ratio(base?.msPerMessage, r.msPerMessage) : ratio(base?.rate, r.rate)
    out.push(
      `| ${r.label} | ${value} | ${runs} | ${r.key === MAILROOM ? "1.00×" : fmtRatio(rel)} | ${fmt(r.cpuUsPerMessage)} | ${fmt(r.peakRssMb)} | ${check(sc, r)} |`
    )
  }
  for (const s of sc.skipped ?? []) out.push(`| ${s.label} | ${s.reason} | | | | | |`)
  out.push("")
  out.push(
    `${sc.runs !== undefined ? `${sc.runs} timed run${sc.runs === 1 ? "" : "s"} per server, interleaved; the median is shown. ` : ""}` +
      `${sc.rows.length > 0 ? `Messages per run: ${[...new Set(sc.rows.map((r) => `${r.label} ${fmt(r.runs[0]?.messages)}`))].join(", ")}. ` : ""}` +
      `Sessions ${sc.sessions}, message body ${fmt(sc.size / 1024)} KiB${sc.persistent ? ", persistent sessions (-d)" : ", one connection per message"}. ` +
      "Server CPU: user + system time of the server's processes (threads and reaped children included) per message. " +
      "Peak memory: VmHWM of the server process; for Postfix the peak of the summed PSS of its master and children, sampled every 0.5 s."
  )
  for (const r of sc.rows) for (const note of r.notes ?? []) if (note) out.push("", `Note (${r.label}): ${note}.`)
  return out
}

const idleTable = (sc) => {
  const out = []
  out.push("| Server | connections | held | refused | closed by server | RSS before MB | RSS held MB | KiB per connection | peak RSS MB |")
  out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for (const r of sc.rows) {
    out.push(
      `| ${r.label}${r.workers > 1 ? `, ${r.workers} workers` : ""} | ${fmt(r.count)}${r.count !== r.asked ? ` (of ${fmt(r.asked)} asked)` : ""} | ${fmt(r.ready)} | ${fmt(r.refused)} | ${fmt(r.closedByServer)} | ${fmt(r.rssBeforeMb, 1)} | ${fmt(r.rssHeldMb, 1)} | ${fmt(r.kibPerConnection, 1)} | ${fmt(r.peakRssMb)} |`
    )
  }
  for (const s of sc.skipped ?? []) out.push(`| ${s.label} | ${s.reason} | | | | | | | |`)
  const notes = [...new Set(sc.rows.map((r) => r.note).filter(Boolean))]
  for (const n of notes) out.push("", `Note: ${n}.`)
  return out
}

const diskTable = (sc) => {
  const what = {
    "file-1": "1 writer: create, write 5 KiB, fsync, close",
    "file+dir-1": "1 writer: the same + fsync of the directory",
    "file-20": "20 writers: create, write, fsync, close",
    "file+dir-20": "20 writers: the same + group-committed directory fsync"
  }
  const out = ["| Test | durable writes/s | |", "|---|---:|---|"]
  for (const t of sc.tests) out.push(`| ${what[t.test] ?? t.test} | ${fmt(t.perSecond)} | ${t.dirFsyncs ? `${fmt(t.dirFsyncs)} directory fsyncs` : ""} |`)
  return out
}

/** The issue's targets, each with what was measured and met/missed. */
export const targets = (result) => {
  const out = []
  const rate = (id, key) => row(result, id, key)?.rate
  const ms = (id, key) => row(result, id, key)?.msPerMessage
  const missing = (id, key) => skippedRow(result, id, key)?.reason ?? (scenario(result, id)?.skippedScenario ?? "not measured")
  const cmp = (name, id, peer, need, kind = "rate") => {
    const a = kind === "rate" ? rate(id, MAILROOM) : ms(id, MAILROOM)
    const b = kind === "rate" ? rate(id, peer) : ms(id, peer)
    const r = ratio(a, b)
    if (r === undefined) return out.push({ name, measured: missing(id, a === undefined ? MAILROOM : peer), met: undefined })
    const met = kind === "rate" ? r >= need : r <= need
    out.push({
      name,
      measured: kind === "rate"
        ? `${fmt(r, 2)}× (${fmt(a)} vs ${fmt(b)} msgs/s)`
        : `${fmt(a, 2)} vs ${fmt(b, 2)} ms/msg (${fmt(r, 2)}×)`,
      met
    })
  }
  cmp("Accept (20 × 5 KiB) ≥ 1.5× Postfix", "accept-5k", "postfix", 1.5)
  cmp("Accept (20 × 5 KiB) ≥ 1.0× fsyncing smtp-server", "accept-5k", "smtp-server", 1.0)
  cmp("Accept, persistent sessions ≥ 1.0× fsyncing smtp-server (extra: without its 100 ms greeting delay)", "accept-5k-d", "smtp-server", 1.0)
  cmp("End-to-end relay ≥ 1.5× Postfix", "relay", "postfix", 1.5)
  cmp("One session: no more ms per message than Postfix", "latency", "postfix", 1.0, "ms")
  cmp("100 KiB messages ≥ 1.0× Postfix", "accept-100k", "postfix", 1.0)
  const idle = scenario(result, "idle")
  for (const asked of idle?.counts ?? []) {
    const m = idle.rows?.find((r) => r.key === MAILROOM && r.asked === asked)
    const s = idle.rows?.find((r) => r.key === "smtp-server" && r.asked === asked)
    const name = `Idle connections (${fmt(asked)}): no more memory per connection than smtp-server`
    if (!m || !s) out.push({ name, measured: idle.skippedScenario ?? "not measured", met: undefined })
    else {
      out.push({
        name,
        measured: `${fmt(m.kibPerConnection, 1)} vs ${fmt(s.kibPerConnection, 1)} KiB${m.count !== asked ? ` (at ${fmt(m.count)} connections)` : ""}${
          m.workers > 1 ? ` (Mailroom as ${m.workers} workers at ${fmt(m.count)}, smtp-server at ${fmt(s.count)})` : ""
        }`,
        met: m.kibPerConnection <= s.kibPerConnection
      })
    }
  }
  const big = idle?.rows?.find((r) => r.key === MAILROOM && r.asked === 20000)
  if (big) {
    const allHeld = big.ready === big.asked && big.refused === 0 && big.closedByServer === 0
    out.push({
      name: "20,000 idle connections held without refusing any",
      measured: `${fmt(big.ready)} held, ${fmt(big.refused)} refused, ${fmt(big.closedByServer)} closed by the server${big.count < big.asked ? ` — only ${fmt(big.count)} tried: ${big.note}` : ""}${
        big.workers > 1 ? ` (workers: ${big.workers})` : ""
      }`,
      met: big.count < big.asked ? (big.ready === big.count && big.refused === 0 && big.closedByServer === 0 ? "partly" : false) : allHeld
    })
  } else out.push({ name: "20,000 idle connections held without refusing any", measured: idle?.skippedScenario ?? "not measured", met: undefined })
  // Deno within 25% of Node, in every load scenario where both ran
  const denoRatios = []
  for (const sc of result.scenarios) {
    const n = sc.rows?.find((r) => r.key === MAILROOM)
    const d = sc.rows?.find((r) => r.key === "mailroom-deno")
    if (!n || !d) continue
    if (sc.kind === "idle") continue
    if (n.relayKind !== d.relayKind) {
      denoRatios.push(`${sc.id} not comparable (Node ${n.relayKind} relay, Deno ${d.relayKind} relay)`)
      continue
    }
    const r = sc.metric === "latency" ? ratio(n.msPerMessage, d.msPerMessage) : ratio(d.rate, n.rate)
    if (r !== undefined) denoRatios.push(`${sc.id} ${fmt(r, 2)}×`)
  }
  out.push({
    name: "Deno within 25% of Node",
    measured: denoRatios.length > 0 ? `Deno ÷ Node: ${denoRatios.join(", ")}` : `not yet measured${result.deno ? `: ${result.deno}` : ""}`,
    met: (() => {
      const xs = denoRatios.filter((s) => s.endsWith("×")).map((s) => Number(s.split(" ")[1].replace("×", "")))
      return xs.length === 0 ? undefined : xs.every((x) => x >= 0.75)
    })()
  })
  return out
}

/** The whole report. */
export const markdown = (result) => {
  const m = result.machine
  const out = []
  const counts = [...new Set(result.scenarios.map((sc) => sc.runs).filter((n) => n !== undefined))].sort((a, b) => b - a)
  const runs = counts.length === 0 ? `${result.runs}` : counts.join(" or ")
  out.push(`## Results of ${result.date.slice(0, 10)} (${runs} timed run${runs === "1" ? "" : "s"} per server, medians${result.quick ? ", QUICK mode" : ""})`)
  out.push("")
  out.push(
    `Machine: ${m.nproc} × ${m.model}, ${fmt(m.memoryGiB)} GiB, ${m.os}, Linux ${m.kernel}; temp dir on ${m.tmpFilesystem}; open files hard limit ${m.nofileHardLimit}. ` +
      `Node ${m.node}, Deno ${m.deno?.replace(/^deno /, "") ?? "—"}, Postfix ${m.postfix}, Haraka ${m.haraka}, smtp-server ${m.smtpServer}; Mailroom ${m.mailroom} at ${m.git}. Suite time ${result.seconds} s.`
  )
  for (const sc of result.scenarios) {
    out.push("", `### ${sc.title}`, "")
    if (sc.skippedScenario) {
      out.push(sc.skippedScenario)
      continue
    }
    const table = sc.kind === "disk" ? diskTable(sc) : sc.kind === "idle" ? idleTable(sc) : sourceTable(sc)
    out.push(...table)
  }
  out.push("", "### Targets", "", "| Target | Measured | Met |", "|---|---|---|")
  for (const t of targets(result)) {
    const met = t.met === undefined ? "not measured" : t.met === "partly" ? "partly" : t.met ? "**met**" : "**missed**"
    out.push(`| ${t.name} | ${t.measured} | ${met} |`)
  }
  out.push("")
  return out.join("\n") + "\n"
}
