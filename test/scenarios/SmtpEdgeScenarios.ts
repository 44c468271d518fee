/**
 * SMTP edge scenarios, runtime-neutral: `SmtpEdge.make` from the protocol
 * package over the runtime's `Listener`, with `Queue.memory()`, driven by
 * real client programs (Python's smtplib, swaks) through the runtime's
 * `ProcessSpawner`. The same definitions run on Node (test/node) and Deno
 * (packages/deno-adapter/test).
 *
 * What it deliberately does not do: storage or relaying (the queue is the
 * memory one; it keeps what the edge accepted, byte for byte).
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import type * as Scope from "effect/Scope"
import * as CredentialsService from "../../packages/protocol/src/auth/CredentialsService.ts"
import * as SmtpEdge from "../../packages/protocol/src/edge/SmtpEdge.ts"
import type * as Transport from "../../packages/protocol/src/edge/Transport.ts"
import type * as Envelope from "../../packages/protocol/src/envelope/Envelope.ts"
import * as Queue from "../../packages/protocol/src/queue/Queue.ts"
import * as Assert from "./Assert.ts"
import { makeCertificates } from "./Certs.ts"
import * as Programs from "./Programs.ts"
import type { Env, Scenario, ScenarioSuite } from "./Scenario.ts"

const SMTPLIB_CLIENT = `
import smtplib, ssl, sys
host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = smtplib.SMTP(host, port, local_hostname="client.example", timeout=10)
if cafile:
    code, _ = s.ehlo()
    ctx = ssl.create_default_context(cafile=cafile)
    print("STARTTLS", s.starttls(context=ctx)[0])
code, _ = s.ehlo()
print("EHLO", code, s.has_extn("pipelining"), s.has_extn("8bitmime"), s.has_extn("starttls"))
print("MAIL", s.mail("alice@example.org", ["BODY=8BITMIME"])[0])
print("RCPT", s.rcpt("bob@example.com")[0], s.rcpt("carol@example.com")[0])
msg = "Subject: caf\\u00e9\\r\\nFrom: alice@example.org\\r\\n\\r\\n.hidden line starts with a dot\\r\\ncaf\\u00e9 \\u2603\\r\\n".encode("utf-8")
code, text = s.data(msg)
print("DATA", code, text.decode())
print("QUIT", s.quit()[0])
`

/** The message the smtplib client sends, as the edge must store it (dot-unstuffed, 8-bit intact). */
const SMTPLIB_MESSAGE = "Subject: caf\u00e9\r\nFrom: alice@example.org\r\n\r\n.hidden line starts with a dot\r\ncaf\u00e9 \u2603\r\n"

/** The SMTP edge scenarios over `env`'s Listener. */
export const smtpEdgeScenarios = (env: Env): ScenarioSuite => {
  const certs = { ca: "", mail: { key: "", cert: "" }, dir: "" }
  const scenarios: Array<Scenario> = []
  const test = (name: string, body: () => Promise<void>) => scenarios.push({ name, run: body, timeoutMs: 30_000 })

  /** Runs an edge on an ephemeral loopback port while `client(port)` runs; returns what the queue received. */
  const withEdge = async (
    listen: Partial<Transport.ListenOptions>,
    client: (port: number) => Promise<void>
  ): Promise<ReadonlyArray<Envelope.Envelope>> => {
    const program: Effect.Effect<ReadonlyArray<Envelope.Envelope>, unknown, Scope.Scope | Transport.Listener> = Effect.gen(function*() {
      const { layer, queue } = yield* Queue.memory()
      const edge = yield* SmtpEdge.make({
        listen: { endpoint: { _tag: "Inet", address: "127.0.0.1", port: 0 }, ...listen },
        session: { hostname: "mx.example.test" },
        shutdownGraceMs: 1_000
      }).pipe(Effect.provide([layer, CredentialsService.none]))
      const port = edge.endpoint._tag === "Inet" ? edge.endpoint.port : 0
      yield* Effect.promise(() => client(port))
      yield* edge.shutdown
      return yield* queue.received
    })
    // the edge logs every session; the scenarios check what the clients and the queue saw
    return Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(env.transport()), Effect.provide(Logger.layer([]))))
  }

  test("Python smtplib sends an 8-bit, dot-stuffed message to two recipients; the queue gets it byte for byte", async () => {
    const received = await withEdge({}, async (port) => {
      const out = await Programs.python(env, SMTPLIB_CLIENT, ["127.0.0.1", String(port), ""])
      Assert.equal(out.stderr, "")
      Assert.equal(out.exitCode, 0)
      const lines = out.stdout.trim().split("\n")
      Assert.equal(lines[0], "EHLO 250 True True False")
      Assert.equal(lines[1], "MAIL 250")
      Assert.equal(lines[2], "RCPT 250 250")
      Assert.match(lines[3], /^DATA 250 2\.6\.0 Ok: queued as [0-9a-z]+$/)
      Assert.equal(lines[4], "QUIT 221")
    })
    Assert.equal(received.length, 1)
    const env0 = received[0]!
    Assert.equal(env0.sender, "alice@example.org")
    Assert.equal(env0.recipients, ["bob@example.com", "carol@example.com"])
    Assert.equal(new TextDecoder().decode(env0.message), SMTPLIB_MESSAGE)
    Assert.matches(env0.client, { address: "127.0.0.1", ehlo: "client.example", protocol: "ESMTP" })
    Assert.equal(env0.client.tls, undefined)
  })

  test("Python smtplib with STARTTLS (verifying the certificate); the envelope records TLS", async () => {
    const received = await withEdge({ tls: { default: certs.mail } }, async (port) => {
      const out = await Programs.python(env, SMTPLIB_CLIENT, ["127.0.0.1", String(port), `${certs.dir}/ca.pem`])
      Assert.equal(out.stderr, "")
      const lines = out.stdout.trim().split("\n")
      Assert.equal(lines[0], "STARTTLS 220")
      Assert.equal(lines[1], "EHLO 250 True True False")
      Assert.match(lines[4], /^DATA 250 /)
    })
    Assert.equal(received.length, 1)
    Assert.equal(new TextDecoder().decode(received[0]!.message), SMTPLIB_MESSAGE)
    Assert.matches(received[0]!.client, { protocol: "ESMTPS", tls: { version: "TLSv1.3" } })
  })

  test("swaks over implicit TLS (port 465 style) with PIPELINING", async () => {
    const received = await withEdge({ tls: { default: certs.mail }, implicitTls: true }, async (port) => {
      const out = await Programs.run(env, "swaks", [
        "--server", `127.0.0.1:${port}`,
        "--tls-on-connect", "--tls-verify", "--tls-ca-path", `${certs.dir}/ca.pem`,
        "--pipeline",
        "--ehlo", "swaks.example",
        "--from", "swaks@example.org",
        "--to", "dave@example.com",
        "--header", "Subject: over 465",
        "--body", "hello from swaks"
      ])
      Assert.equal(out.exitCode, 0, `swaks failed: ${out.stdout}${out.stderr}`)
      Assert.match(out.stdout, /250 2\.6\.0 Ok: queued as [0-9a-z]+/)
      Assert.match(out.stdout, /PIPELINING/)
    })
    Assert.equal(received.length, 1)
    Assert.equal(received[0]!.recipients, ["dave@example.com"])
    Assert.includes(new TextDecoder().decode(received[0]!.message), "hello from swaks")
    Assert.matches(received[0]!.client, { ehlo: "swaks.example", tls: { version: "TLSv1.3" } })
  })

  test("a plaintext command pipelined after STARTTLS is never executed", async () => {
    // swaks cannot inject; a raw python client sends STARTTLS and a MAIL in one packet
    const received = await withEdge({ tls: { default: certs.mail } }, async (port) => {
      const out = await Programs.python(env, `
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line.strip())
        if line[3:4] != "-":
            return " | ".join(lines)
print(reply())
s.sendall(b"EHLO inject.example\\r\\n"); reply()
s.sendall(b"STARTTLS\\r\\nMAIL FROM:<attacker@evil.example>\\r\\n")
print(reply())
ctx = ssl.create_default_context(cafile=sys.argv[2])
t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
tf = t.makefile("rb")
t.sendall(b"RCPT TO:<victim@example.com>\\r\\n")
print(tf.readline().decode().strip())
t.sendall(b"QUIT\\r\\n")
print(tf.readline().decode().strip())
`, [String(port), `${certs.dir}/ca.pem`])
      Assert.equal(out.stderr, "")
      const lines = out.stdout.trim().split("\n")
      Assert.match(lines[0], /^220 mx\.example\.test /)
      Assert.equal(lines[1], "220 2.0.0 Ready to start TLS")
      // had the injected MAIL run, RCPT would be accepted; it must be refused for lack of MAIL
      Assert.match(lines[2], /^503 5\.5\.1 /)
      Assert.match(lines[3], /^221 /)
    })
    Assert.equal(received.length, 0)
  })

  return {
    name: `${env.runtime} SMTP edge with real clients`,
    setup: async () => {
      const made = await makeCertificates(env, "Mailroom Edge CA", [{ commonName: "mx.example.test", altNames: ["DNS:mx.example.test", "IP:127.0.0.1"] }])
      certs.ca = made.ca
      certs.mail = made.issued[0]!
      certs.dir = await env.files.tempDir("mailroom-edge-")
      await env.files.writeFile(`${certs.dir}/ca.pem`, made.ca)
    },
    teardown: () => env.files.removeDir(certs.dir),
    scenarios
  }
}
