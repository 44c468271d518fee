// A whole SMTP transaction through the pure server session: no sockets, no
// clock, no Effect runtime. Bytes in, replies and questions out.
import { Decision, Reply, ServerSession } from "@mailroom/protocol"

const config = ServerSession.config({ hostname: "mx.example.test" })
const endpoints = {
  remote: { _tag: "Inet", address: "192.0.2.7", port: 40123 },
  local: { _tag: "Inet", address: "192.0.2.25", port: 25 }
} as const

let now = 0
let sent = ""
let step = ServerSession.start(ServerSession.initial(config, endpoints), now)

const perform = (outputs: ReadonlyArray<ServerSession.Output>) => {
  for (const output of outputs) {
    if (output._tag === "Send") sent += new TextDecoder().decode(output.bytes)
    if (output._tag === "Ask" && output.question._tag === "Message") {
      // The driver would run the message policies and the queue here; the
      // session waits for the answer before it replies to the final dot.
      const { message } = output.question
      if (message.recipients.length !== 1) throw new Error("expected one recipient")
      step = ServerSession.step(step.state, { _tag: "Delivered", replies: [Reply.queuedAs("0001")] }, now)
      perform(step.outputs)
    } else if (output._tag === "Ask") {
      step = ServerSession.step(step.state, { _tag: "Decision", decision: Decision.accept }, now)
      perform(step.outputs)
    }
  }
}
perform(step.outputs)

// A pipelined client: every command of the transaction in one packet.
const client = "EHLO client.example.test\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
step = ServerSession.step(step.state, { _tag: "Received", bytes: new TextEncoder().encode(client) }, (now = 10))
perform(step.outputs)
step = ServerSession.step(step.state, { _tag: "Received", bytes: new TextEncoder().encode("Subject: hi\r\n\r\nHello.\r\n.\r\nQUIT\r\n") }, (now = 20))
perform(step.outputs)

const codes = sent.split("\r\n").filter((line) => /^\d{3} /.test(line)).map((line) => line.slice(0, 3))
if (codes.join(" ") !== "220 250 250 250 354 250 221") throw new Error(`unexpected replies: ${codes.join(" ")}`)
if (!ServerSession.isClosed(step.state)) throw new Error("the session should be closed after QUIT")
export const transcript = sent
