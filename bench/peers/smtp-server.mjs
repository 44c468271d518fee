// nodemailer's smtp-server as a benchmark peer: accepts every envelope and,
// before answering the end of DATA, writes the message to its own file in
// DIR and makes it durable (open O_EXCL, write, fsync the file, close, fsync
// the directory), so that its 250 means what Mailroom's means.
//
//   node bench/peers/smtp-server.mjs PORT DIR
//
// Single process, no TLS, no AUTH, no reverse DNS lookup of the client (the
// bench runs on loopback without a resolver). Stops on SIGTERM.
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { SMTPServer } from "smtp-server"

const [port, dir] = [Number(process.argv[2]), process.argv[3]]
const dirSync = process.argv.includes("--dir-fsync")
if (!Number.isInteger(port) || !dir) {
  console.error("usage: smtp-server.mjs PORT DIR")
  process.exit(2)
}
await fs.mkdir(dir, { recursive: true })

let n = 0
const store = async (data) => {
  const file = path.join(dir, `${process.pid}.${n++}.eml`)
  const fh = await fs.open(file, "wx", 0o600)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } finally {
    await fh.close()
  }
  if (!dirSync) return
  const d = await fs.open(dir, "r")
  try {
    await d.sync()
  } finally {
    await d.close()
  }
}

const server = new SMTPServer({
  logger: false,
  banner: "smtp-server bench peer",
  authOptional: true,
  disabledCommands: ["AUTH", "STARTTLS"],
  disableReverseLookup: true,
  size: 25 * 1024 * 1024,
  onData(stream, _session, callback) {
    const chunks = []
    stream.on("data", (c) => chunks.push(c))
    stream.on("error", callback)
    stream.on("end", () => {
      if (stream.sizeExceeded) return callback(Object.assign(new Error("Message too big"), { responseCode: 552 }))
      store(Buffer.concat(chunks)).then(() => callback(null, "Ok: queued"), (e) => callback(e))
    })
  }
})
server.on("error", (e) => console.error("smtp-server:", e.message))
server.listen(port, "127.0.0.1", () => console.log(`listening 127.0.0.1:${port}`))
process.on("SIGTERM", () => {
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
})
