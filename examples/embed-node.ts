// Embedding Mailroom on Node: an SMTP edge on 127.0.0.1:2525 in front of the
// durable queue, composed in code. Run: node_modules/.bin/node examples/embed-node.ts
import { Effect, Layer } from "effect"
import { CredentialsService, DurableQueue, Queue, QueueStorage, Relay, SmtpEdge } from "@mailroom/protocol"
import * as NodeTransport from "@mailroom/node/NodeTransport"

const program = Effect.gen(function*() {
  const queue = yield* DurableQueue.make({ hostname: "mx.example.test" })       // QueueStorage + Relay from context
  const edge = yield* SmtpEdge.make({
    listen: { endpoint: { _tag: "Inet", address: "127.0.0.1", port: 2525 } },
    session: { hostname: "mx.example.test", maxMessageSize: 10 * 1024 * 1024 },
    localDomains: ["example.test"]
  }).pipe(Effect.provide(Layer.succeed(Queue.Queue, queue.queue)))
  yield* Effect.never
}).pipe(
  Effect.scoped,
  Effect.provide(Layer.mergeAll(
    NodeTransport.listenerLayer,
    QueueStorage.memory,                              // or DiskStorage.layer({ directory: "./var/queue" })
    Layer.succeed(Relay.Relay, Relay.blackhole),      // or MaildirRelay, PipeRelay, HttpRelay, ...
    CredentialsService.none
  ))
)

Effect.runFork(program)
