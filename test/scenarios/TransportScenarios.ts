/**
 * Transport scenarios, runtime-neutral: the runtime's `Listener` is the
 * server and its `Connector` (or a real python3 client) is the peer. They
 * cover what the SMTP edge relies on: batch reads, end of stream as a value
 * (also towards a half-closed peer), graceful close that flushes, STARTTLS
 * discarding pipelined plaintext, implicit TLS, SNI, PROXY v1/v2 read
 * exactly (also with TLS right behind the header), and the connector's TLS
 * with and without verification; the read deadline and wake-up
 * (`readWithin`, `wake`) and the write time limit, and what the SMTP edge
 * builds on them: the exact 421 after an idle timeout in each state, and a
 * shutdown that wakes idle sessions at once. Node registers them in
 * test/node/Transport.test.ts, Deno in packages/deno-adapter/test.
 *
 * What it deliberately does not do: haproxy and back-pressure timing (the
 * Node adapter's own tests cover those with node sockets).
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import type * as Scope from "effect/Scope"
import * as CredentialsService from "../../packages/protocol/src/auth/CredentialsService.ts"
import * as SmtpEdge from "../../packages/protocol/src/edge/SmtpEdge.ts"
import * as Transport from "../../packages/protocol/src/edge/Transport.ts"
import * as Queue from "../../packages/protocol/src/queue/Queue.ts"
import * as Bytes from "../../packages/protocol/src/wire/Bytes.ts"
import * as ProxyProtocol from "../../packages/protocol/src/wire/ProxyProtocol.ts"
import * as Assert from "./Assert.ts"
import { commonName, makeCertificates } from "./Certs.ts"
import * as Programs from "./Programs.ts"
import type { Env, Scenario, ScenarioSuite } from "./Scenario.ts"
import { signal, sleep } from "./Scenario.ts"

type Services = Transport.Listener | Transport.Connector

const loopback: Transport.Endpoint = { _tag: "Inet", address: "127.0.0.1", port: 0 }
const portOf = (e: Transport.Endpoint) => (e._tag === "Inet" ? e.port : 0)
const bytes = (s: string) => Bytes.fromLatin1(s)
const text = (batch: ReadonlyArray<Uint8Array>) => batch.map((c) => Bytes.toLatin1(c)).join("")
const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

const listen = (options: Transport.ListenOptions, handler: (c: Transport.Connection) => Effect.Effect<void>) =>
  Effect.flatMap(Transport.Listener, (l) => l.listen(options, handler))
const connect = (options: Transport.ConnectOptions) => Effect.flatMap(Transport.Connector, (c) => c.connect(options))

/** Reads until `needle` was seen; returns everything read (less when the stream ended). */
const readUntil = (conn: Transport.Connection, needle: string) =>
  Effect.gen(function*() {
    let got = ""
    while (!got.includes(needle)) {
      const batch = yield* conn.read
      if (batch === null) return got
      got += text(batch)
    }
    return got
  })

/** Reads to the end of the stream. */
const readAll = (conn: Transport.Connection) =>
  Effect.gen(function*() {
    const parts: Array<Uint8Array> = []
    for (;;) {
      const batch = yield* conn.read
      if (batch === null) return parts
      parts.push(...batch)
    }
  })

/** Echoes every batch back; closes gracefully at end of stream. */
const echo = (conn: Transport.Connection): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (;;) {
      const batch = yield* conn.read
      if (batch === null) return yield* conn.close
      for (const chunk of batch) yield* conn.write(chunk)
    }
  }).pipe(Effect.catch(() => Effect.void))

/**
 * Sends QUIT and reads to end of stream. Mode "half-close" shuts its write
 * side first; mode "reset" closes with SO_LINGER 0 afterwards (a reset, as
 * smtp-source does).
 */
const QUIT_CLIENT = `
import socket, struct, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"QUIT\\r\\n")
if sys.argv[3] == "half-close":
    s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
if sys.argv[3] == "reset":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
sys.stdout.write(data.decode("latin-1"))
`

/** The transport scenarios over `env`'s Listener and Connector. */
export const transportScenarios = (env: Env): ScenarioSuite => {
  const run = <A, E>(program: Effect.Effect<A, E, Services | Scope.Scope>, layer = env.transport()): Promise<A> =>
    Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(layer)))
  const certs = {
    ca: "",
    rogueCa: "",
    mail: { key: "", cert: "" },
    other: { key: "", cert: "" },
    rogue: { key: "", cert: "" }
  }
  const scenarios: Array<Scenario> = []
  const test = (name: string, body: () => Promise<void>, timeoutMs?: number) => scenarios.push({ name, run: body, timeoutMs })

  test("echoes over 127.0.0.1 and reports the connection facts", () =>
    run(Effect.gen(function*() {
      const seen: Array<Transport.Connection> = []
      const bound = yield* listen({ endpoint: loopback }, (c) => (seen.push(c), echo(c)))
      Assert.equal(bound.endpoint._tag, "Inet")
      Assert.ok(portOf(bound.endpoint) > 0, "bound to a port")
      const client = yield* connect({ endpoint: bound.endpoint })
      yield* client.write(bytes("hello\r\n"))
      Assert.equal(yield* readUntil(client, "\r\n"), "hello\r\n")
      const second = yield* connect({ endpoint: bound.endpoint })
      yield* second.write(bytes("again\r\n"))
      Assert.equal(yield* readUntil(second, "\r\n"), "again\r\n")
      Assert.equal(seen.length, 2)
      const c = seen[0]!
      Assert.equal(c.remote, client.local)
      Assert.equal(c.local, { _tag: "Inet", address: "127.0.0.1", port: portOf(bound.endpoint) })
      Assert.equal(client.remote, c.local)
      Assert.equal(c.proxied, undefined)
      Assert.equal(c.tls(), undefined)
      Assert.ok(seen[1]!.id !== c.id, "connection ids differ")
      yield* client.close
      Assert.equal(yield* client.read, null)
    })))

  test("echoes over a Unix socket and removes the socket file when the listener closes", async () => {
    const dir = await env.files.tempDir("mailroom-unix-")
    try {
      const endpoint: Transport.Endpoint = { _tag: "Unix", path: `${dir}/smtp.sock` }
      await run(Effect.gen(function*() {
        const seen: Array<Transport.Connection> = []
        const bound = yield* listen({ endpoint }, (c) => (seen.push(c), echo(c)))
        Assert.equal(bound.endpoint, endpoint)
        const client = yield* connect({ endpoint })
        yield* client.write(bytes("unix\r\n"))
        Assert.equal(yield* readUntil(client, "\r\n"), "unix\r\n")
        Assert.equal(seen[0]!.local, endpoint)
        Assert.equal(seen[0]!.remote._tag, "Unix")
        const live = yield* Effect.flip(Effect.scoped(listen({ endpoint }, echo)))
        Assert.equal(live.reason, "Listen")
        Assert.includes(live.message, "in use")
      }))
      Assert.equal(await env.files.exists(endpoint.path), false)
    } finally {
      await env.files.removeDir(dir)
    }
  })

  test("fails to listen on a port in use with a Listen error", () =>
    run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, echo)
      const err = yield* Effect.flip(listen({ endpoint: bound.endpoint }, echo))
      Assert.equal(err.reason, "Listen")
    })))

  test("returns everything received since the last read in one batch", async () => {
    const reads: Array<string> = []
    const ready = signal()
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          yield* promise(() => ready.promise)
          const batch = yield* conn.read
          if (batch !== null) reads.push(text(batch))
          yield* conn.write(bytes("done\r\n"))
        }).pipe(Effect.catch(() => Effect.void)))
      const client = yield* connect({ endpoint: bound.endpoint })
      for (const s of ["a\r\n", "b\r\n", "c\r\n"]) {
        yield* client.write(bytes(s))
        yield* promise(() => sleep(30))
      }
      ready.resolve()
      Assert.equal(yield* readUntil(client, "done\r\n"), "done\r\n")
    }))
    Assert.equal(reads, ["a\r\nb\r\nc\r\n"])
  })

  test("returns null at end of stream, and answers a half-closed peer (python3)", async () => {
    const reads: Array<string | null> = []
    let again: unknown = "unset"
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          for (;;) {
            const batch = yield* conn.read
            reads.push(batch === null ? null : text(batch))
            if (batch === null) break
          }
          again = yield* conn.read
          yield* conn.write(bytes("221 2.0.0 Bye\r\n"))
          yield* conn.close
        }).pipe(Effect.catch(() => Effect.void)))
      const out = yield* promise(() => Programs.python(env, QUIT_CLIENT, ["127.0.0.1", String(portOf(bound.endpoint)), "half-close"]))
      Assert.equal(out.stderr, "")
      Assert.equal(out.stdout, "221 2.0.0 Bye\r\n")
    }))
    Assert.equal(reads.filter((r) => r !== null).join(""), "QUIT\r\n")
    Assert.equal(reads[reads.length - 1], null)
    Assert.equal(again, null)
  })

  test("close flushes a large reply before closing; writes after close fail with Closed", async () => {
    const big = new Uint8Array(4 * 1024 * 1024).fill(0x61)
    let late: string | undefined
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          yield* conn.write(big)
          yield* conn.close
          yield* conn.close
          late = (yield* Effect.flip(conn.write(bytes("late")))).reason
        }).pipe(Effect.catch(() => Effect.void)))
      const client = yield* connect({ endpoint: bound.endpoint })
      const parts = yield* readAll(client)
      Assert.equal(parts.reduce((n, p) => n + p.length, 0), big.length)
    }))
    Assert.equal(late, "Closed")
  })

  test("closeAfterQuit: the peer gets the last reply and end of stream, then may reset (python3, SO_LINGER 0)", async () => {
    let late: string | undefined
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          Assert.equal(yield* readUntil(conn, "\r\n"), "QUIT\r\n")
          yield* conn.write(bytes("221 2.0.0 Bye\r\n"))
          yield* conn.closeAfterQuit
          yield* conn.closeAfterQuit
          late = (yield* Effect.flip(conn.write(bytes("late")))).reason
        }).pipe(Effect.catch(() => Effect.void)))
      const out = yield* promise(() => Programs.python(env, QUIT_CLIENT, ["127.0.0.1", String(portOf(bound.endpoint)), "reset"]))
      Assert.equal(out.stderr, "")
      Assert.equal(out.stdout, "221 2.0.0 Bye\r\n")
    }))
    Assert.equal(late, "Closed")
  })

  test("closeAfterQuit with bytes still queued: all of a large reply arrives before the end", async () => {
    const big = new Uint8Array(4 * 1024 * 1024).fill(0x62)
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          yield* conn.write(big)
          yield* conn.closeAfterQuit
        }).pipe(Effect.catch(() => Effect.void)))
      const client = yield* connect({ endpoint: bound.endpoint })
      const parts = yield* readAll(client)
      Assert.equal(parts.reduce((n, p) => n + p.length, 0), big.length)
    }))
  })

  test("closeAfterQuit over TLS ends the stream cleanly (close_notify), after the last reply", async () => {
    let reply: string | undefined
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback, tls: { default: certs.mail } }, (conn) =>
        Effect.gen(function*() {
          yield* readUntil(conn, "STARTTLS\r\n")
          yield* conn.write(bytes("220 2.0.0 Ready to start TLS\r\n"))
          yield* conn.startTls()
          yield* readUntil(conn, "QUIT\r\n")
          yield* conn.write(bytes("221 2.0.0 Bye\r\n"))
          yield* conn.closeAfterQuit
        }).pipe(Effect.catch(() => Effect.void)))
      const client = yield* connect({ endpoint: bound.endpoint })
      yield* client.write(bytes("STARTTLS\r\n"))
      yield* readUntil(client, "TLS\r\n")
      yield* client.startTls({ servername: "mail.test", ca: [certs.ca] })
      yield* client.write(bytes("QUIT\r\n"))
      reply = text(yield* readAll(client))
    }))
    Assert.equal(reply, "221 2.0.0 Bye\r\n")
  })

  test("the handler's end destroys the connection; closing the scope stops accepting", async () => {
    let port = 0
    const parked = signal()
    let interrupted = false
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          const first = yield* conn.read
          if (first !== null && text(first).startsWith("park")) {
            parked.resolve()
            yield* Effect.onInterrupt(Effect.never, () => Effect.sync(() => (interrupted = true)))
          }
        }).pipe(Effect.catch(() => Effect.void)))
      port = portOf(bound.endpoint)
      const client = yield* connect({ endpoint: bound.endpoint })
      yield* client.write(bytes("bye\r\n"))
      Assert.equal((yield* readAll(client)).length, 0)
      const parkedClient = yield* Effect.forkDetach(Effect.scoped(Effect.gen(function*() {
        const c = yield* connect({ endpoint: bound.endpoint })
        yield* c.write(bytes("park\r\n"))
        return yield* readAll(c)
      })))
      void parkedClient
      yield* promise(() => parked.promise)
    }))
    Assert.equal(interrupted, true)
    const refused = await run(Effect.flip(connect({ endpoint: { _tag: "Inet", address: "127.0.0.1", port } })))
    Assert.equal(refused.reason, "Connect")
    Assert.includes(refused.message, `127.0.0.1:${port}`)
  })

  // --- read deadline, wake-up, write time limit --------------------------------

  test("readWithin: \"timeout\" once its time is up, at once for 0 ms; the late bytes come with the next read", async () => {
    const seen: Array<string> = []
    let waited = 0
    const done = signal()
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          const show = (r: Transport.ReadResult) => (typeof r === "string" || r === null ? String(r) : text(r))
          seen.push(show(yield* conn.readWithin(0)))
          const started = Date.now()
          seen.push(show(yield* conn.readWithin(200)))
          waited = Date.now() - started
          yield* conn.write(bytes("go\r\n"))
          seen.push(show(yield* conn.readWithin(5_000)))
          // bytes already received are returned by a 0 ms read (on Deno, where reads are
          // pulled, once a poll has started the read that fetches them)
          yield* conn.write(bytes("again\r\n"))
          let polled: Transport.ReadResult = "timeout"
          for (let i = 0; i < 100 && polled === "timeout"; i++) {
            yield* promise(() => sleep(20))
            polled = yield* conn.readWithin(0)
          }
          seen.push(show(polled))
          seen.push(show(yield* conn.readWithin(5_000)))
        }).pipe(Effect.catch(() => Effect.void), Effect.ensuring(Effect.sync(() => done.resolve()))))
      const client = yield* connect({ endpoint: bound.endpoint })
      Assert.equal(yield* readUntil(client, "go\r\n"), "go\r\n")
      yield* client.write(bytes("late\r\n"))
      Assert.equal(yield* readUntil(client, "again\r\n"), "again\r\n")
      yield* client.write(bytes("more\r\n"))
      yield* promise(() => sleep(50))
      yield* client.close
      yield* promise(() => done.promise)
    }))
    Assert.equal(seen, ["timeout", "timeout", "late\r\n", "more\r\n", "null"])
    Assert.atLeast(waited, 190, "the 200 ms deadline")
    Assert.atMost(waited, 2_000, "the 200 ms deadline")
  })

  test("wake: a pending readWithin returns \"woken\"; with none pending the next one does, once; plain reads are not woken", async () => {
    const seen: Array<string> = []
    const done = signal()
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          const show = (r: Transport.ReadResult) => (typeof r === "string" || r === null ? String(r) : text(r))
          // a read with no deadline, woken from outside
          const pending = yield* Effect.forkChild(conn.readWithin(undefined))
          yield* promise(() => sleep(50))
          conn.wake()
          seen.push(show(yield* Fiber.join(pending)))
          // a wake-up with no read pending is kept for the next read, once
          conn.wake()
          seen.push(show(yield* conn.readWithin(5_000)))
          yield* conn.write(bytes("ready\r\n"))
          seen.push(show(yield* conn.readWithin(5_000)))
          // a plain read is not woken: it goes on to the data
          const plain = yield* Effect.forkChild(conn.read)
          yield* promise(() => sleep(50))
          conn.wake()
          yield* conn.write(bytes("send\r\n"))
          const batch = yield* Fiber.join(plain)
          seen.push(batch === null ? "null" : text(batch))
          // ... and the wake-up it did not take is the next readWithin's
          seen.push(show(yield* conn.readWithin(5_000)))
        }).pipe(Effect.catch(() => Effect.void), Effect.ensuring(Effect.sync(() => done.resolve()))))
      const client = yield* connect({ endpoint: bound.endpoint })
      Assert.equal(yield* readUntil(client, "ready\r\n"), "ready\r\n")
      yield* client.write(bytes("data\r\n"))
      Assert.equal(yield* readUntil(client, "send\r\n"), "send\r\n")
      yield* client.write(bytes("plain\r\n"))
      yield* promise(() => done.promise)
    }))
    Assert.equal(seen, ["woken", "woken", "data\r\n", "plain\r\n", "woken"])
  })

  test("an interrupted readWithin loses nothing: the bytes that come next go to the next read", async () => {
    let got = ""
    const done = signal()
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          const pending = yield* Effect.forkChild(conn.readWithin(60_000))
          yield* promise(() => sleep(30))
          yield* Fiber.interrupt(pending)
          yield* conn.write(bytes("go\r\n"))
          const next = yield* conn.readWithin(5_000)
          got = typeof next === "string" || next === null ? String(next) : text(next)
        }).pipe(Effect.catch(() => Effect.void), Effect.ensuring(Effect.sync(() => done.resolve()))))
      const client = yield* connect({ endpoint: bound.endpoint })
      Assert.equal(yield* readUntil(client, "go\r\n"), "go\r\n")
      yield* client.write(bytes("after\r\n"))
      yield* promise(() => done.promise)
    }))
    Assert.equal(got, "after\r\n")
  })

  test("write with a time limit: a peer that never reads makes it fail with Timeout", async () => {
    let outcome: string | undefined
    let written = 0
    const done = signal()
    await run(
      Effect.gen(function*() {
        const bound = yield* listen({ endpoint: loopback }, (conn) =>
          Effect.gen(function*() {
            const chunk = new Uint8Array(64 * 1024).fill(0x61)
            // bounded: loopback buffers hold a few MiB, far below this
            while (written < 256 * 1024 * 1024) {
              yield* conn.write(chunk, 300)
              written += chunk.length
            }
            outcome = "never blocked"
          }).pipe(
            Effect.catch((e) => Effect.sync(() => (outcome = e.reason))),
            Effect.ensuring(Effect.sync(() => done.resolve()))
          ))
        yield* connect({ endpoint: bound.endpoint })
        yield* promise(() => done.promise)
      }),
      env.transport({ highWaterMark: 16 * 1024 })
    )
    Assert.equal(outcome, "Timeout")
    Assert.atLeast(written, 64 * 1024)
  })

  /** An SMTP edge on a loopback port with a memory queue; the edge's log is dropped. */
  const edgeRun = <A, E>(
    session: { readonly commandTimeoutMs?: number; readonly dataTimeoutMs?: number },
    client: (edge: SmtpEdge.SmtpEdge, queue: Queue.MemoryQueue) => Effect.Effect<A, E, Services | Scope.Scope>
  ): Promise<A> =>
    run(
      Effect.gen(function*() {
        const { layer, queue } = yield* Queue.memory()
        const edge = yield* SmtpEdge.make({
          listen: { endpoint: loopback },
          session: { hostname: "mx.example.test", ...session },
          shutdownGraceMs: 20_000
        }).pipe(Effect.provide([layer, CredentialsService.none]))
        return yield* client(edge, queue)
      }).pipe(Effect.provide(Logger.layer([])))
    )

  const BANNER = "220 mx.example.test ESMTP Mailroom\r\n"
  const TIMEOUT = "421 4.4.2 mx.example.test Error: timeout exceeded\r\n"
  const SHUTDOWN = "421 4.3.0 mx.example.test Service not available, closing transmission channel\r\n"

  test("SmtpEdge: an idle session gets exactly 421 4.4.2 after its command timeout, then the close", async () => {
    let waited = 0
    await edgeRun({ commandTimeoutMs: 300 }, (edge) =>
      Effect.gen(function*() {
        const client = yield* connect({ endpoint: edge.endpoint })
        Assert.equal(yield* readUntil(client, "\r\n"), BANNER)
        const started = Date.now()
        Assert.equal(text(yield* readAll(client)), TIMEOUT)
        waited = Date.now() - started
        // a command resets the deadline: this session is answered, then times out the same way
        const other = yield* connect({ endpoint: edge.endpoint })
        Assert.equal(yield* readUntil(other, "\r\n"), BANNER)
        yield* promise(() => sleep(200))
        yield* other.write(bytes("NOOP\r\n"))
        yield* promise(() => sleep(200))
        yield* other.write(bytes("NOOP\r\n"))
        Assert.equal(text(yield* readAll(other)), "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n" + TIMEOUT)
        Assert.equal(yield* edge.connections, 0)
      }))
    Assert.atLeast(waited, 250, "not before the command timeout")
    Assert.atMost(waited, 3_000, "soon after the command timeout")
  })

  test("SmtpEdge: the data timeout applies mid-message: exactly 421 4.4.2, nothing queued", async () => {
    let waited = 0
    await edgeRun({ commandTimeoutMs: 5_000, dataTimeoutMs: 300 }, (edge, queue) =>
      Effect.gen(function*() {
        const client = yield* connect({ endpoint: edge.endpoint })
        Assert.equal(yield* readUntil(client, "\r\n"), BANNER)
        yield* client.write(bytes("HELO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"))
        Assert.includes(yield* readUntil(client, "354 "), "354 ")
        yield* client.write(bytes("Subject: half a message\r\n"))
        const started = Date.now()
        Assert.equal(text(yield* readAll(client)), TIMEOUT)
        waited = Date.now() - started
        Assert.equal((yield* queue.received).length, 0)
      }))
    Assert.atLeast(waited, 250, "not before the data timeout")
    Assert.atMost(waited, 3_000, "the data timeout, not the command timeout")
  })

  test("SmtpEdge: shutdown wakes idle sessions at once with 421 4.3.0 and ends without waiting out the grace", async () => {
    let took = 0
    await edgeRun({}, (edge) =>
      Effect.gen(function*() {
        const a = yield* connect({ endpoint: edge.endpoint })
        const b = yield* connect({ endpoint: edge.endpoint })
        Assert.equal(yield* readUntil(a, "\r\n"), BANNER)
        Assert.equal(yield* readUntil(b, "\r\n"), BANNER)
        yield* b.write(bytes("EHLO client.example\r\n"))
        Assert.includes(yield* readUntil(b, "250 "), "250-mx.example.test")
        Assert.equal(yield* edge.connections, 2)
        const started = Date.now()
        const stopping = yield* Effect.forkChild(edge.shutdown)
        Assert.equal(text(yield* readAll(a)), SHUTDOWN)
        Assert.includes(text(yield* readAll(b)), SHUTDOWN)
        yield* Fiber.join(stopping)
        took = Date.now() - started
        Assert.equal(yield* edge.connections, 0)
      }))
    // the sessions waited in reads with a 300 s deadline; the grace was 20 s
    Assert.atMost(took, 3_000, "shutdown did not wait for the idle reads")
  })

  // --- TLS ------------------------------------------------------------------

  /**
   * A client pipelines plaintext after STARTTLS, in packets of its own. It is
   * never read as a command: on Node the listener has already read it into
   * its buffers and discards it, and TLS goes on; on Deno, where reads are
   * pulled, it is still in the kernel and reaches the TLS layer, which
   * refuses the handshake, so the connection ends without running it.
   */
  const startTlsInjection = async (highWaterMark: number | undefined, injections: ReadonlyArray<string>) => {
    const record: { before?: string; after?: string; info?: Transport.TlsInfo; error?: Transport.TransportError; other?: unknown } = {}
    const injected = signal()
    const handlerDone = signal()
    let clientOutcome: "secure" | Transport.TransportError | undefined
    await run(
      Effect.gen(function*() {
        const bound = yield* listen({ endpoint: loopback, tls: { default: certs.mail } }, (conn) =>
          Effect.gen(function*() {
            yield* conn.write(bytes("220 ready\r\n"))
            record.before = yield* readUntil(conn, "STARTTLS\r\n")
            // the client pipelines plaintext now; let it reach the server
            yield* promise(() => injected.promise)
            yield* Effect.sleep(150)
            yield* conn.write(bytes("220 2.0.0 Ready to start TLS\r\n"))
            record.info = yield* conn.startTls()
            record.after = yield* readUntil(conn, "\r\n")
            yield* conn.write(bytes(`250 saw ${record.after}`))
            yield* conn.close
          }).pipe(
            Effect.catch((e) => Effect.sync(() => (e instanceof Transport.TransportError ? (record.error = e) : (record.other = e)))),
            Effect.ensuring(Effect.sync(() => handlerDone.resolve()))
          ))
        const client = yield* connect({ endpoint: bound.endpoint })
        Assert.equal(yield* readUntil(client, "220 ready\r\n"), "220 ready\r\n")
        yield* client.write(bytes("STARTTLS\r\n"))
        yield* promise(() => sleep(50))
        for (const s of injections) {
          yield* client.write(bytes(s))
          yield* promise(() => sleep(30))
        }
        injected.resolve()
        Assert.equal(yield* readUntil(client, "Ready to start TLS\r\n"), "220 2.0.0 Ready to start TLS\r\n")
        const secured = yield* Effect.result(client.startTls({ servername: "mail.test", ca: [certs.ca] }))
        if (secured._tag === "Failure") {
          clientOutcome = secured.failure
        } else {
          clientOutcome = "secure"
          yield* client.write(bytes("EHLO after.tls\r\n"))
          Assert.equal(yield* readUntil(client, "after.tls\r\n"), "250 saw EHLO after.tls\r\n")
          Assert.equal(yield* client.read, null)
        }
        yield* promise(() => handlerDone.promise)
      }),
      env.transport(highWaterMark === undefined ? undefined : { highWaterMark })
    )
    Assert.equal(record.other, undefined)
    Assert.equal(record.before, "STARTTLS\r\n")
    if (env.runtime === "node") {
      Assert.equal(clientOutcome, "secure")
      Assert.equal(record.error, undefined)
      Assert.equal(record.after, "EHLO after.tls\r\n")
      Assert.matches(record.info, { version: "TLSv1.3", servername: "mail.test" })
      Assert.equal(record.info!.authorized, undefined)
      Assert.match(record.info!.cipher, /^TLS_/)
      Assert.atLeast(record.info!.bits ?? 0, 128)
    } else {
      Assert.ok(clientOutcome !== "secure", "the handshake is refused")
      Assert.equal(record.error?.reason, "TlsHandshake")
      Assert.equal(record.info, undefined)
      Assert.equal(record.after, undefined)
    }
  }

  test("STARTTLS: plaintext pipelined in its own packet is never read as a command", () =>
    startTlsInjection(undefined, ["RSET\r\nMAIL FROM:<attacker@evil.example>\r\n"]))

  test("STARTTLS: the same with several packets and a tiny high-water mark", () =>
    startTlsInjection(8, ["RSET\r\nRSET\r\nRSET\r\n", "MAIL FROM:<attacker@evil.example>\r\n", "RCPT TO:<victim@example.test>\r\n"]))

  test("STARTTLS: plaintext pipelined in the same packet is discarded and TLS goes on", async () => {
    const record: { after?: string; info?: Transport.TlsInfo } = {}
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback, tls: { default: certs.mail } }, (conn) =>
        Effect.gen(function*() {
          // the command and the injection arrive in one read; only the command is taken
          const first = yield* readUntil(conn, "STARTTLS\r\n")
          Assert.equal(first, "STARTTLS\r\nMAIL FROM:<attacker@evil.example>\r\n")
          yield* conn.write(bytes("220 2.0.0 Ready to start TLS\r\n"))
          record.info = yield* conn.startTls()
          record.after = yield* readUntil(conn, "\r\n")
          yield* conn.write(bytes(`250 saw ${record.after}`))
          yield* conn.close
        }).pipe(Effect.catch(() => Effect.void)))
      const client = yield* connect({ endpoint: bound.endpoint })
      yield* client.write(bytes("STARTTLS\r\nMAIL FROM:<attacker@evil.example>\r\n"))
      Assert.equal(yield* readUntil(client, "TLS\r\n"), "220 2.0.0 Ready to start TLS\r\n")
      yield* client.startTls({ servername: "mail.test", ca: [certs.ca] })
      yield* client.write(bytes("EHLO after.tls\r\n"))
      Assert.equal(yield* readUntil(client, "after.tls\r\n"), "250 saw EHLO after.tls\r\n")
    }))
    Assert.equal(record.after, "EHLO after.tls\r\n")
    Assert.matches(record.info, { version: "TLSv1.3", servername: "mail.test" })
  })

  test("STARTTLS on a listener without certificates fails and closes", () =>
    run(Effect.gen(function*() {
      const result = signal<Transport.TransportError>()
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.flip(conn.startTls()).pipe(Effect.map((e) => result.resolve(e)), Effect.orDie))
      const client = yield* connect({ endpoint: bound.endpoint })
      const err = yield* promise(() => result.promise)
      Assert.equal(err.reason, "TlsHandshake")
      Assert.equal((yield* readAll(client)).length, 0)
    })))

  test("implicit TLS handshakes before the handler runs; the connector dials it", async () => {
    const infos: Array<Transport.TlsInfo | undefined> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback, tls: { default: certs.mail }, implicitTls: true }, (conn) => {
        infos.push(conn.tls())
        return Effect.flatMap(Effect.orDie(conn.write(bytes("220 tls\r\n"))), () => echo(conn))
      })
      const client = yield* connect({ endpoint: bound.endpoint, tls: { servername: "mail.test", ca: [certs.ca] } })
      Assert.matches(client.tls(), { authorized: true, servername: "mail.test" })
      Assert.equal(yield* readUntil(client, "220 tls\r\n"), "220 tls\r\n")
      yield* client.write(bytes("ping\r\n"))
      Assert.equal(yield* readUntil(client, "ping\r\n"), "ping\r\n")
      yield* client.close
      Assert.equal(yield* client.read, null)
    }))
    Assert.matches(infos[0], { version: "TLSv1.3", servername: "mail.test" })
  })

  test("implicit TLS: a plaintext client is refused and reported", async () => {
    const rejects: Array<string> = []
    let handled = 0
    await run(Effect.gen(function*() {
      const bound = yield* listen({
        endpoint: loopback,
        tls: { default: certs.mail },
        implicitTls: true,
        onReject: (i) => rejects.push(i.reason)
      }, () => Effect.sync(() => void handled++))
      const client = yield* connect({ endpoint: bound.endpoint })
      yield* client.write(bytes("EHLO plain\r\n\r\n\r\n"))
      const got = yield* Effect.result(readAll(client))
      Assert.equal(got._tag === "Success" ? got.success.length : 0, 0)
      yield* promise(() => sleep(50))
    }))
    Assert.equal(handled, 0)
    Assert.equal(rejects.length, 1)
    Assert.match(rejects[0], /TLS handshake failed/)
  })

  test("chooses the certificate by SNI and swaps certificates with setTls", async () => {
    const names: Array<string | undefined> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen({
        endpoint: loopback,
        implicitTls: true,
        tls: { default: certs.mail, sni: [{ names: ["other.test", "*.wild.test"], certificate: certs.other }] }
      }, (conn) => {
        names.push(conn.tls()?.servername)
        return Effect.flatMap(Effect.orDie(conn.write(bytes("220 hi\r\n"))), () => echo(conn))
      })
      // verification against the expected name proves which certificate was presented
      const dial = (servername: string) =>
        Effect.scoped(Effect.gen(function*() {
          const c = yield* connect({ endpoint: bound.endpoint, tls: { servername, ca: [certs.ca] } })
          return (yield* readUntil(c, "\r\n")) === "220 hi\r\n" && c.tls()?.authorized === true
        }))
      Assert.equal(yield* dial("other.test"), true)
      Assert.equal(yield* dial("mx.wild.test"), true)
      Assert.equal(yield* dial("mail.test"), true)
      const wrong = yield* Effect.flip(dial("a.b.wild.test"))
      Assert.equal(wrong.reason, "TlsHandshake")
      yield* bound.setTls({ default: certs.other })
      Assert.equal(yield* dial("other.test"), true)
      const bad = yield* Effect.flip(bound.setTls({ default: { key: "nope", cert: "nope" } }))
      Assert.equal(bad.reason, "Listen")
    }))
    Assert.equal(names.slice(0, 3), ["other.test", "mx.wild.test", "mail.test"])
  })

  // --- connector TLS --------------------------------------------------------

  const starttlsEcho = (conn: Transport.Connection): Effect.Effect<void> =>
    Effect.gen(function*() {
      yield* readUntil(conn, "STARTTLS\r\n")
      yield* conn.write(bytes("220 go\r\n"))
      yield* conn.startTls()
      return yield* echo(conn)
    }).pipe(Effect.catch(() => Effect.void))

  const clientStartTls = (endpoint: Transport.Endpoint, options: Transport.ClientTlsOptions) =>
    Effect.gen(function*() {
      const conn = yield* connect({ endpoint, timeoutMs: 5000 })
      yield* conn.write(bytes("STARTTLS\r\n"))
      Assert.equal(yield* readUntil(conn, "220 go\r\n"), "220 go\r\n")
      const info = yield* conn.startTls(options)
      return { conn, info }
    })

  test("connector: STARTTLS with verification, by name and by IP literal (not sent as SNI)", () =>
    run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback, tls: { default: certs.mail } }, starttlsEcho)
      const { conn, info } = yield* clientStartTls(bound.endpoint, { servername: "mail.test", ca: [certs.ca] })
      Assert.matches(info, { servername: "mail.test", authorized: true, authorizationError: undefined })
      Assert.equal(conn.tls(), info)
      yield* conn.write(bytes("ping over tls\r\n"))
      Assert.equal(yield* readUntil(conn, "\r\n"), "ping over tls\r\n")
      const again = yield* Effect.flip(conn.startTls())
      Assert.equal(again.reason, "TlsHandshake")
      const byIp = yield* clientStartTls(bound.endpoint, { servername: "127.0.0.1", ca: [certs.ca] })
      Assert.matches(byIp.info, { authorized: true, servername: undefined })
    })))

  test("connector: with rejectUnauthorized false, records why verification failed and goes on", () =>
    run(Effect.gen(function*() {
      const good = yield* listen({ endpoint: loopback, tls: { default: certs.mail } }, starttlsEcho)
      const wrongName = yield* clientStartTls(good.endpoint, { servername: "wrong.test", ca: [certs.ca], rejectUnauthorized: false })
      Assert.matches(wrongName.info, { authorized: false, authorizationError: "ERR_TLS_CERT_ALTNAME_INVALID", version: "TLSv1.3" })
      const rogue = yield* listen({ endpoint: loopback, tls: { default: certs.rogue } }, starttlsEcho)
      const untrusted = yield* clientStartTls(rogue.endpoint, { servername: "mail.test", ca: [certs.ca], rejectUnauthorized: false })
      Assert.equal(untrusted.info.authorized, false)
      Assert.equal(untrusted.info.authorizationError, "UNABLE_TO_VERIFY_LEAF_SIGNATURE")
      yield* untrusted.conn.write(bytes("hi\r\n"))
      Assert.equal(yield* readUntil(untrusted.conn, "\r\n"), "hi\r\n")
    })))

  test("connector: with verification on, an untrusted certificate fails the handshake", () =>
    run(Effect.gen(function*() {
      const rogue = yield* listen({ endpoint: loopback, tls: { default: certs.rogue } }, starttlsEcho)
      const err = yield* Effect.flip(clientStartTls(rogue.endpoint, { servername: "mail.test", ca: [certs.ca] }))
      Assert.ok(err instanceof Transport.TransportError, "a TransportError")
      Assert.equal((err as Transport.TransportError).reason, "TlsHandshake")
    })))

  // --- PROXY protocol ---------------------------------------------------------

  interface Seen {
    readonly proxied: Transport.ProxiedFacts | undefined
    readonly tls: Transport.TlsInfo | undefined
    first?: string
  }

  /** Writes one line describing the connection, then echoes. */
  const describeThenEcho = (seen: Array<Seen>) => (conn: Transport.Connection): Effect.Effect<void> => {
    const s: Seen = { proxied: conn.proxied, tls: conn.tls() }
    seen.push(s)
    const p = conn.proxied
    const line = p === undefined
      ? "none"
      : `v${p.version} ${p.source ? `${p.source.address}:${p.source.port}` : "-"} ${p.destination ? `${p.destination.address}:${p.destination.port}` : "-"}`
    return Effect.gen(function*() {
      yield* conn.write(bytes(`${line}\r\n`))
      const batch = yield* conn.read
      if (batch === null) return
      s.first = text(batch)
      for (const c of batch) yield* conn.write(c)
      return yield* echo(conn)
    }).pipe(Effect.catch(() => Effect.void))
  }

  const proxyListen = (seen: Array<Seen>, rejects: Array<string>, extra: Partial<Transport.ListenOptions> = {}, trusted: ReadonlyArray<string> = ["127.0.0.0/8", "::1"]) =>
    listen({ endpoint: loopback, proxyProtocol: { trusted, timeoutMs: 2000 }, onReject: (i) => rejects.push(i.reason), ...extra }, describeThenEcho(seen))

  test("PROXY v1: takes the header and leaves the bytes after it (same packet) to the handler", async () => {
    const seen: Array<Seen> = []
    await run(Effect.gen(function*() {
      const bound = yield* proxyListen(seen, [])
      const client = yield* connect({ endpoint: bound.endpoint })
      yield* client.write(bytes("PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\nEHLO client.example\r\n"))
      Assert.equal(yield* readUntil(client, "EHLO client.example\r\n"), "v1 192.0.2.1:56324 198.51.100.7:25\r\nEHLO client.example\r\n")
    }))
    Assert.equal(seen[0]!.first, "EHLO client.example\r\n")
  })

  test("PROXY v1 sent one byte at a time", () =>
    run(Effect.gen(function*() {
      const bound = yield* proxyListen([], [])
      const client = yield* connect({ endpoint: bound.endpoint })
      for (const ch of "PROXY TCP6 2001:db8::1 2001:db8::2 4000 587\r\n") {
        yield* client.write(bytes(ch))
        yield* promise(() => sleep(2))
      }
      Assert.equal(yield* readUntil(client, "\r\n"), "v1 2001:db8::1:4000 2001:db8::2:587\r\n")
    })))

  test("PROXY v2 with TLVs, and v2 LOCAL", () =>
    run(Effect.gen(function*() {
      const bound = yield* proxyListen([], [])
      const client = yield* connect({ endpoint: bound.endpoint })
      const header = ProxyProtocol.encodeV2({
        source: { address: "2001:db8::7", port: 1234 },
        destination: { address: "2001:db8::25", port: 25 }
      }, { tlvs: Uint8Array.of(0x04, 0x00, 0x02, 0x00, 0x00) })
      yield* client.write(Bytes.concat([header, bytes("EHLO v2\r\n")]))
      Assert.equal(yield* readUntil(client, "EHLO v2\r\n"), "v2 2001:db8::7:1234 2001:db8::25:25\r\nEHLO v2\r\n")
      const local = yield* connect({ endpoint: bound.endpoint })
      yield* local.write(ProxyProtocol.encodeV2({ source: undefined, destination: undefined }))
      Assert.equal(yield* readUntil(local, "\r\n"), "v2 - -\r\n")
    })))

  test("PROXY: the header is read exactly, so the TLS handshake can follow right behind it", async () => {
    const seen: Array<Seen> = []
    await run(Effect.gen(function*() {
      const bound = yield* proxyListen(seen, [], { implicitTls: true, tls: { default: certs.mail } })
      for (const encode of [ProxyProtocol.encodeV1, ProxyProtocol.encodeV2]) {
        const client = yield* connect({ endpoint: bound.endpoint })
        yield* client.write(encode({ source: { address: "203.0.113.5", port: 5555 }, destination: { address: "203.0.113.25", port: 465 } }))
        yield* client.startTls({ servername: "mail.test", ca: [certs.ca] })
        Assert.match(yield* readUntil(client, "\r\n"), /^v[12] 203\.0\.113\.5:5555 203\.0\.113\.25:465\r\n$/)
        yield* client.destroy
      }
    }))
    Assert.equal(seen.length, 2)
    Assert.matches(seen[0]!.tls, { version: "TLSv1.3", servername: "mail.test" })
  })

  const refused = async (payload: ReadonlyArray<Uint8Array>, reason: RegExp, trusted: ReadonlyArray<string> = ["127.0.0.1"], timeoutMs = 2000) => {
    const seen: Array<Seen> = []
    const rejects: Array<string> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen({
        endpoint: loopback,
        proxyProtocol: { trusted, timeoutMs },
        onReject: (i) => rejects.push(i.reason)
      }, describeThenEcho(seen))
      const client = yield* connect({ endpoint: bound.endpoint })
      for (const p of payload) yield* client.write(p)
      const got = yield* Effect.result(readAll(client))
      Assert.equal(got._tag === "Success" ? got.success.length : 0, 0, "not a byte is sent")
      yield* promise(() => sleep(30))
    }))
    Assert.equal(seen.length, 0)
    Assert.equal(rejects.length, 1)
    Assert.match(rejects[0], reason)
  }

  test("PROXY: refuses a header from an untrusted peer without sending a byte", () =>
    refused([bytes("PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\nEHLO x\r\n")], /^PROXY header not allowed from 127\.0\.0\.1$/, ["10.0.0.0/8"]))
  test("PROXY: refuses a malformed v1 header", () =>
    refused([bytes("PROXY TCP4 192.0.2.1 198.51.100.7 025 25\r\n")], /invalid PROXY header: v1 header: invalid source port/))
  test("PROXY: refuses a connection without a header (never guesses)", () =>
    refused([bytes("EHLO client.example\r\n")], /invalid PROXY header/))
  test("PROXY: refuses an endless v1 line", () => refused([bytes("PROXY UNKNOWN " + "x".repeat(2000))], /longer than 107/))
  test("PROXY: times out a slow header", async () => {
    const started = Date.now()
    await refused([bytes("PROXY TCP4 192.0.2.1")], /no complete PROXY header within 300 ms/, ["127.0.0.1"], 300)
    Assert.atLeast(Date.now() - started, 300)
  })

  return {
    name: `${env.runtime} transport`,
    setup: async () => {
      const good = await makeCertificates(env, "Mailroom Test CA", [
        { commonName: "mail.test", altNames: ["DNS:mail.test", "IP:127.0.0.1", "IP:::1"] },
        { commonName: "other.test", altNames: ["DNS:other.test", "DNS:*.wild.test"] }
      ])
      const bad = await makeCertificates(env, "Rogue CA", [{ commonName: "mail.test", altNames: ["DNS:mail.test", "IP:127.0.0.1"] }])
      certs.ca = good.ca
      certs.mail = good.issued[0]!
      certs.other = good.issued[1]!
      certs.rogueCa = bad.ca
      certs.rogue = bad.issued[0]!
      Assert.equal(await commonName(env, certs.other.cert), "other.test")
    },
    scenarios
  }
}
