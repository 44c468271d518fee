/**
 * A crash-test load: one message per connection from a few concurrent
 * clients, recording the sequence numbers that got `250 2.6.0` after DATA
 * (the messages the server promised to deliver). Each message carries
 * `X-Seq: <n>` so the receiving side can tell which arrived.
 */
import * as net from "node:net"

/** Sends one message per connection; resolves with the seq numbers that got a 250 after DATA. */
export const load = (port: number, first: number, stopAt: number, accepted: Set<number>): Promise<void> =>
  new Promise((resolve) => {
    let seq = first
    let active = 0
    const concurrency = 4
    const launch = () => {
      while (active < concurrency && Date.now() < stopAt) {
        const n = seq++
        active++
        const sock = net.connect({ host: "127.0.0.1", port })
        let buf = ""
        let sentData = false
        let sentBody = false
        sock.setEncoding("latin1")
        sock.on("data", (d: string) => {
          buf += d
          if (!sentData && /^220 .*\r\n/m.test(buf)) {
            sentData = true
            sock.write(`EHLO loader\r\nMAIL FROM:<load@example.test>\r\nRCPT TO:<sink@localhost>\r\nDATA\r\n`)
          }
          if (sentData && /^354 /m.test(buf) && !sentBody) {
            sentBody = true
            sock.write(`Subject: crash ${n}\r\nX-Seq: ${n}\r\n\r\nmessage ${n}\r\n.\r\nQUIT\r\n`)
          }
          if (/^250 2\.6\.0 /m.test(buf)) accepted.add(n)
        })
        const done = () => {
          active--
          launch()
          if (active === 0 && Date.now() >= stopAt) resolve()
        }
        sock.on("error", () => {})
        sock.on("close", done)
        sock.setTimeout(3000, () => sock.destroy())
      }
      if (active === 0) resolve()
    }
    launch()
  })

