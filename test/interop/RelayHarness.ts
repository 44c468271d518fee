/**
 * Shared pieces of the relay interop suites: the layers a relay needs (the
 * Node connector, Node's `Dns` pointed at a given resolver), envelope
 * builders, and a runner that provides them with quiet logs.
 *
 * Nothing here fakes the code under test: relays, the client session, the
 * pool and the Node transport are the production modules.
 */
import * as NodeDns from "@effect/platform-node/NodeDns"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Dns from "effect/net/Dns"
import * as References from "effect/References"
import type * as Scope from "effect/Scope"
import type * as Transport from "@mailroom/protocol/edge/Transport"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import type * as Relay from "@mailroom/protocol/relay/Relay"
import * as Reply from "@mailroom/protocol/smtp/Reply"
import * as NodeTransport from "@mailroom/node/NodeTransport"

/** A `Dns` layer whose record queries go to `nameServer` (`address:port`). */
export const dnsLayer = (nameServer: string, timeoutMs = 2_000): Layer.Layer<Dns.Dns> =>
  Layer.effect(Dns.Dns, NodeDns.make({ nameServers: [nameServer], timeout: timeoutMs, tries: 1 })).pipe(Layer.orDie)

/** The system resolver (lookups of `localhost` and the like). */
export const systemDns: Layer.Layer<Dns.Dns> = NodeDns.layer

/** Logs hidden unless `RELAY_LOG=1`. */
export const quiet = <A, E, R>(e: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  process.env["RELAY_LOG"] === "1" ? e : Effect.provideService(e, References.MinimumLogLevel, "Error")

/**
 * Runs `program` in a fresh scope with the Node listener and connector and
 * the `Dns` layer given; closing the scope closes every relay pool (QUIT).
 */
export const runRelay = <A, E>(
  program: Effect.Effect<A, E, Scope.Scope | Transport.Connector | Transport.Listener | Dns.Dns>,
  dns: Layer.Layer<Dns.Dns> = systemDns
): Promise<A> =>
  Effect.runPromise(quiet(program.pipe(Effect.scoped, Effect.provide(Layer.mergeAll(NodeTransport.layer, dns)))))

/** An envelope from strings (the message gets CRLF line ends as written). */
export const envelope = (
  sender: string,
  recipients: ReadonlyArray<string>,
  message: string | Uint8Array,
  fields: Partial<Envelope.Envelope> = {}
): Envelope.Envelope =>
  Envelope.make({
    ...fields,
    id: fields.id ?? "t" + Math.random().toString(36).slice(2, 10),
    sender,
    recipients,
    message: typeof message === "string" ? new TextEncoder().encode(message) : message
  })

/** A compact view of a result: `outcome code enhanced` per recipient. */
export const summary = (r: Relay.RelayResult): ReadonlyArray<string> =>
  r.recipients.map((x) => `${x.outcome} ${x.reply.code}${x.reply.enhanced !== undefined ? " " + x.reply.enhanced : ""}`)

/** The reply of recipient `i` as one line. */
export const replyText = (r: Relay.RelayResult, i = 0): string => Reply.toString(r.recipients[i]!.reply)

/** A small text message with a dot line, CRLF line ends. */
export const textMessage = (subject: string, body = "Hello.\r\n.leading dot\r\nbye\r\n"): string =>
  `From: <sender@example.org>\r\nTo: <rcpt@example.net>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, "")}@example.org>\r\n\r\n${body}`

/**
 * A TCP port on 127.0.0.7 where a connection attempt hangs: a listener
 * (python3) that never accepts, its one-slot backlog filled, so the kernel
 * drops further SYNs. For connect timeouts. Stopped by PID.
 */
export const startBlackhole = async (): Promise<{ readonly host: string; readonly port: number; readonly stop: () => void }> => {
  const { spawn } = await import("node:child_process")
  const script = [
    "import socket,time",
    "s=socket.socket(); s.bind(('127.0.0.7',0)); s.listen(0); port=s.getsockname()[1]",
    "fill=[]",
    "for i in range(4):",
    "  c=socket.socket(); c.setblocking(False)",
    "  try: c.connect(('127.0.0.7', port))",
    "  except BlockingIOError: pass",
    "  fill.append(c)",
    "print(port, flush=True)",
    "time.sleep(120)"
  ].join("\n")
  const child = spawn("python3", ["-c", script], { stdio: ["ignore", "pipe", "inherit"] })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ""
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString()
      if (out.includes("\n")) resolve(Number(out.trim()))
    })
    child.once("exit", () => reject(new Error("blackhole helper exited")))
  })
  await new Promise((r) => setTimeout(r, 200))
  return {
    host: "127.0.0.7",
    port,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGKILL")
    }
  }
}
