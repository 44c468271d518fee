// The storage ceiling: how many small durable file writes per second this
// disk takes, in the directory the benchmark's queues live in.
//
//   node bench/disk.mjs DIR [SECONDS_PER_TEST]
//
// Each test creates 5 KiB files (open O_EXCL, write, fsync, close) for a
// fixed time and prints one JSON line per test:
//   file-1       one writer, file fsync only
//   file+dir-1   one writer, file fsync, then fsync of the directory
//   file-20      20 writers at once through libuv's thread pool (4 threads)
//   file+dir-20  20 writers, each file fsync followed by a directory fsync
//                that is group-committed (one fsync serves every writer
//                that asked while the previous one ran, as Mailroom's
//                DiskStorage does)
// Files are removed after each test.
import * as fs from "node:fs"
import * as fsp from "node:fs/promises"
import * as path from "node:path"

const dir = process.argv[2]
const seconds = Number(process.argv[3] ?? 2)
if (!dir) {
  console.error("usage: disk.mjs DIR [SECONDS]")
  process.exit(2)
}
const data = Buffer.alloc(5120, 0x61)

const fresh = (name) => {
  const d = path.join(dir, name)
  fs.rmSync(d, { recursive: true, force: true })
  fs.mkdirSync(d, { recursive: true })
  return d
}

const report = (test, ops, ms, extra = {}) =>
  process.stdout.write(JSON.stringify({ test, ops, seconds: ms / 1000, perSecond: Math.round((ops * 1000) / ms), ...extra }) + "\n")

const syncSerial = (name, withDir) => {
  const d = fresh(name)
  let n = 0
  const t0 = performance.now()
  while (performance.now() - t0 < seconds * 1000) {
    const fd = fs.openSync(path.join(d, `${n}.eml`), "wx", 0o600)
    fs.writeSync(fd, data)
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    if (withDir) {
      const dfd = fs.openSync(d, "r")
      fs.fsyncSync(dfd)
      fs.closeSync(dfd)
    }
    n++
  }
  report(name, n, performance.now() - t0)
  fs.rmSync(d, { recursive: true, force: true })
}

const makeDirSync = (d) => {
  let running = false
  let waiting = []
  let fsyncs = 0
  const run = () => {
    const batch = waiting
    waiting = []
    running = true
    fsyncs++
    fsp.open(d, "r").then((fh) => fh.sync().finally(() => fh.close())).then(
      () => batch.forEach((w) => w.resolve()),
      (e) => batch.forEach((w) => w.reject(e))
    ).finally(() => {
      running = false
      if (waiting.length > 0) run()
    })
  }
  return {
    sync: () =>
      new Promise((resolve, reject) => {
        waiting.push({ resolve, reject })
        if (!running) run()
      }),
    count: () => fsyncs
  }
}

const concurrent = async (name, writers, withDir) => {
  const d = fresh(name)
  const dirSync = makeDirSync(d)
  let n = 0
  const t0 = performance.now()
  const until = t0 + seconds * 1000
  const worker = async () => {
    while (performance.now() < until) {
      const fh = await fsp.open(path.join(d, `${n++}.eml`), "wx", 0o600)
      await fh.writeFile(data)
      await fh.sync()
      await fh.close()
      if (withDir) await dirSync.sync()
    }
  }
  await Promise.all(Array.from({ length: writers }, worker))
  report(name, n, performance.now() - t0, withDir ? { dirFsyncs: dirSync.count() } : {})
  fs.rmSync(d, { recursive: true, force: true })
}

syncSerial("file-1", false)
syncSerial("file+dir-1", true)
await concurrent("file-20", 20, false)
await concurrent("file+dir-20", 20, true)
