// Holds idle SMTP connections open for the memory-per-connection scenario.
//
//   node bench/idle-client.mjs PORT COUNT [MAX_SECONDS]
//
// Opens COUNT connections to 127.0.0.1:PORT, at most 256 connecting at a
// time, and waits for each one's 220 banner. Then prints one JSON line
// {"ready":n,"failed":n,"ms":n} and holds them. On SIGTERM, on stdin closing,
// or after MAX_SECONDS (default 120), it prints {"held":n,"closedByServer":n}
// (connections still open, connections the server closed meanwhile) and exits.
// Loopback only; every count and wait is bounded.
import * as net from "node:net"

const port = Number(process.argv[2])
const count = Number(process.argv[3])
const maxSeconds = Number(process.argv[4] ?? 120)
if (!Number.isInteger(port) || !Number.isInteger(count) || count < 0) {
  console.error("usage: idle-client.mjs PORT COUNT [MAX_SECONDS]")
  process.exit(2)
}

const sockets = new Set()
let ready = 0
let failed = 0
let closedByServer = 0
let reported = false
const t0 = performance.now()

const openOne = () =>
  new Promise((resolve) => {
    let banner = false
    const s = net.connect({ host: "127.0.0.1", port })
    const timer = setTimeout(() => {
      if (!banner) {
        failed++
        s.destroy()
        resolve()
      }
    }, 30_000)
    s.on("data", (d) => {
      if (!banner && d.toString("latin1").startsWith("220")) {
        banner = true
        clearTimeout(timer)
        ready++
        sockets.add(s)
        resolve()
      }
    })
    s.on("error", () => {})
    s.on("close", () => {
      clearTimeout(timer)
      if (banner) {
        if (sockets.delete(s) && reported) closedByServer++
      } else {
        failed++
        resolve()
      }
    })
  })

let next = 0
const worker = async () => {
  while (next < count) {
    next++
    await openOne()
  }
}
await Promise.all(Array.from({ length: Math.min(256, count) }, worker))
reported = true
process.stdout.write(JSON.stringify({ ready, failed, ms: Math.round(performance.now() - t0) }) + "\n")

let done = false
const finish = () => {
  if (done) return
  done = true
  process.stdout.write(JSON.stringify({ held: sockets.size, closedByServer }) + "\n")
  for (const s of sockets) s.destroy()
  setTimeout(() => process.exit(0), 200)
}
process.on("SIGTERM", finish)
process.stdin.on("end", finish)
process.stdin.on("close", finish)
process.stdin.resume()
setTimeout(finish, maxSeconds * 1000)
