// Embedding Mailroom on Deno: an SMTP edge on 127.0.0.1:2525 in front of the
// durable queue, composed in code. Run: deno run --allow-net examples/embed-deno.ts [port]
import { Effect, Layer } from "effect"
import { CredentialsService, DurableQueue, Queue, QueueStorage, Relay, SmtpEdge, Transport } from "@mailroom/protocol"
import { DenoTransport } from "@mailroom/deno"

const port = Number(Deno.args[0] ?? 2525)                // 0 picks a free port

const program = Effect.gen(function*() {
  const queue = yield* DurableQueue.make({ hostname: "mx.example.test" })       // QueueStorage + Relay from context
  const edge = yield* SmtpEdge.make({
    listen: { endpoint: { _tag: "Inet", address: "127.0.0.1", port } },
    session: { hostname: "mx.example.test", maxMessageSize: 10 * 1024 * 1024 },
    localDomains: ["example.test"]
  }).pipe(Effect.provide(Layer.succeed(Queue.Queue, queue.queue)))
  console.log(`listening on ${Transport.formatEndpoint(edge.endpoint)}`)
  yield* Effect.never
}).pipe(
  Effect.scoped,
  Effect.provide(Layer.mergeAll(
    DenoTransport.listenerLayer,
    QueueStorage.memory,                              // or DenoKvStorage.layer({ path: "./var/queue.kv" }), DenoDisk.layer(...)
    Layer.succeed(Relay.Relay, Relay.blackhole),      // or MaildirRelay, PipeRelay, HttpRelay, StaticRelay, ...
    CredentialsService.none
  ))
)

Effect.runFork(program)
