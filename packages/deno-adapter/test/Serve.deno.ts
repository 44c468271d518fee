/**
 * Deno: `mailroom serve` end to end on Deno (packages/deno-adapter/src/main.ts
 * in a child `deno run`): a config file with an SMTP listener, the disk queue
 * and Maildir delivery; swaks sends a message; it is queued, relayed into
 * the Maildir, and SIGTERM stops the server with exit code 0. Also
 * `check-config` reporting a bad key, the same as on Node.
 *
 * Then the twin of test/interop/ServeRelays.test.ts: the Deno KV queue, the
 * smarthost relay to a real downstream SMTP server (a Mailroom edge over
 * `DenoTransport` in this process, answering each recipient differently:
 * delivered, deferred once, refused with a DSN back to the sender), the HTTP
 * edge (`Deno.serve`) taking a slimta-style POST and a JSON submission, a
 * sender deny rule, and `mailroom queue list` on the KV queue afterwards.
 */
import * as CredentialsService from "@mailroom/protocol/auth/CredentialsService"
import * as Config from "@mailroom/protocol/config/Config"
import * as SmtpEdge from "@mailroom/protocol/edge/SmtpEdge"
import * as Decision from "@mailroom/protocol/policy/Decision"
import * as Queue from "@mailroom/protocol/queue/Queue"
import * as Reply from "@mailroom/protocol/smtp/Reply"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Dns from "effect/net/Dns"
import * as NetAddress from "effect/net/NetAddress"
import * as DenoTransport from "../src/DenoTransport.ts"
import * as DenoServe from "../src/serve.ts"
import * as Assert from "../../../test/scenarios/Assert.ts"
import { freePort, swaks, waitFor, waitForListener } from "./DenoServeSupport.ts"

const main = new URL("../src/main.ts", import.meta.url).pathname
const root = new URL("../../../", import.meta.url).pathname
const decoder = new TextDecoder()

const files = async (dir: string): Promise<Array<string>> => {
  const out: Array<string> = []
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`)
      else out.push(`${d}/${e.name}`)
    }
  }
  await walk(dir).catch(() => undefined)
  return out
}

Deno.test({
  name: "mailroom serve on Deno: swaks → SMTP edge → disk queue → Maildir; SIGTERM stops it cleanly",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "mailroom-deno-serve-" })
    try {
      const port = freePort()
      await Deno.writeTextFile(`${dir}/mailroom.yaml`, [
        "hostname: mx.example.test",
        "log: { level: info }",
        "smtp:",
        `  - listen: 127.0.0.1:${port}`,
        "    local_domains: [example.test]",
        "queue:",
        `  storage: { type: disk, path: ${dir}/queue }`,
        "relay:",
        `  type: maildir`,
        `  path: ${dir}/mail`,
        ""
      ].join("\n"))
      const server = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--no-check", main, "serve", "--config", `${dir}/mailroom.yaml`],
        cwd: root,
        stdout: "piped",
        stderr: "piped"
      }).spawn()
      let log = ""
      const logDone = (async () => {
        for await (const chunk of server.stdout.pipeThrough(new TextDecoderStream())) log += chunk
      })()
      const errText = new Response(server.stderr).text()
      try {
        await waitForListener(port)
        const sent = await swaks([
          "--server", `127.0.0.1:${port}`, "--ehlo", "client.example",
          "--from", "alice@example.org", "--to", "bob@example.test",
          "--header", "Subject: served by Deno", "--body", "caf\u00e9 from swaks"
        ])
        const transcript = sent.transcript
        Assert.equal(sent.code, 0, `swaks: ${transcript}${sent.stderr}`)
        Assert.match(transcript, /<-  250 2\.6\.0 Ok: queued as [0-9a-z]+/)
        const delivered = await waitFor("the Maildir delivery", async () => {
          const all = await files(`${dir}/mail`)
          for (const f of all) {
            const text = await Deno.readTextFile(f)
            if (text.includes("served by Deno")) return text
          }
          return undefined
        })
        Assert.includes(delivered, "caf\u00e9 from swaks")
        Assert.match(delivered, /Received: from client\.example/)
        Assert.includes(delivered, "by mx.example.test")
        // the queue is empty again once delivered
        await waitFor("an empty queue", async () => ((await files(`${dir}/queue/meta`)).length === 0 ? true : undefined))
        // an open relay is refused: bob@elsewhere.example is not local
        const refused = await swaks(["--server", `127.0.0.1:${port}`, "--from", "alice@example.org", "--to", "bob@elsewhere.example", "--quit-after", "RCPT"])
        Assert.match(refused.transcript, /<\*\* 550 5\.7\.1 /)
      } finally {
        server.kill("SIGTERM")
      }
      const status = await server.status
      await logDone
      const stderr = await errText
      Assert.equal(status.code, 0, `exit ${status.code}: ${stderr}`)
      Assert.match(log, /shutting down/)
      Assert.match(log, /listening/)
    } finally {
      await Deno.remove(dir, { recursive: true })
    }
  }
})

Deno.test({
  name: "mailroom check-config on Deno names the bad key; --version prints the package version",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "mailroom-deno-cfg-" })
    try {
      await Deno.writeTextFile(`${dir}/bad.yaml`, "smtp:\n  - listen: 127.0.0.1:2525\n    max_message_size: lots\n")
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--no-check", main, "check-config", `${dir}/bad.yaml`],
        stdout: "piped",
        stderr: "piped"
      }).output()
      Assert.equal(out.code, 1)
      Assert.includes(decoder.decode(out.stderr), `${dir}/bad.yaml:3: smtp[0].max_message_size: expected a size`)
      const version = await new Deno.Command(Deno.execPath(), { args: ["run", "--allow-all", "--no-check", main, "--version"], stdout: "piped" }).output()
      Assert.equal(decoder.decode(version.stdout), "mailroom 0.1.0\n")
    } finally {
      await Deno.remove(dir, { recursive: true })
    }
  }
})

/** A downstream SMTP server: a Mailroom edge on Deno whose memory queue records what it accepts. */
const startDownstream = async (scope: Scope.Closeable, rcpt: (local: string) => Decision.Decision) => {
  const memory = await Effect.runPromise(Queue.memory())
  const edge = await Effect.runPromise(
    SmtpEdge.make({
      listen: { endpoint: { _tag: "Inet", address: "127.0.0.1", port: 0 } },
      session: { hostname: "downstream.test", commandTimeoutMs: 10_000, dataTimeoutMs: 10_000 },
      validators: { rcpt: (_facts, recipient) => Effect.sync(() => rcpt(recipient.local)) },
      shutdownGraceMs: 1_000
    }).pipe(
      Effect.provide(Layer.mergeAll(DenoTransport.listenerLayer, memory.layer, CredentialsService.none)),
      Effect.provideService(References.MinimumLogLevel, "Error"),
      Scope.provide(scope)
    )
  )
  return {
    port: edge.endpoint._tag === "Inet" ? edge.endpoint.port : 0,
    received: () => Effect.runPromise(memory.queue.received)
  }
}

const b64 = (s: string): string => btoa(s)

Deno.test({
  name: "mailroom serve on Deno: KV queue, smarthost relay with per-recipient results and a DSN, the HTTP edge, a sender deny rule",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "mailroom-deno-relays-" })
    const scope = Effect.runSync(Scope.make())
    let laterAttempts = 0
    try {
      const downstream = await startDownstream(scope, (local) => {
        if (local === "no") return Decision.reject(Reply.make(550, "5.1.1", "No such user here"))
        if (local === "later" && laterAttempts++ === 0) return Decision.reject(Reply.make(451, "4.2.1", "Mailbox busy, try later"))
        return Decision.accept
      })
      const smtpPort = freePort()
      const httpPort = freePort()
      await Deno.writeTextFile(`${dir}/mailroom.yaml`, [
        "hostname: relay.mailroom.test",
        "smtp:",
        `  - listen: "127.0.0.1:${smtpPort}"`,
        "    rules:",
        `      senders: { deny: ["@spammer.example"] }`,
        "http:",
        `  listen: "127.0.0.1:${httpPort}"`,
        "  json_path: /send",
        "queue:",
        "  storage: { type: kv, path: var/queue.kv }",
        "  retry: { intervals: [1s] }",
        "relay:",
        "  type: static",
        "  host: 127.0.0.1",
        `  port: ${downstream.port}`,
        "  tls: none",
        "log: { level: info }",
        ""
      ].join("\n"))
      const server = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--no-check", main, "serve", "--config", "mailroom.yaml"],
        cwd: dir,
        stdout: "piped",
        stderr: "piped"
      }).spawn()
      let log = ""
      const logDone = (async () => {
        for await (const chunk of server.stdout.pipeThrough(new TextDecoderStream())) log += chunk
      })()
      const errText = new Response(server.stderr).text()
      try {
        for (const port of [smtpPort, httpPort]) {
          await waitFor(`the listener on ${port}`, async () => {
            try {
              const c = await Deno.connect({ hostname: "127.0.0.1", port })
              c.close()
              return true
            } catch {
              return undefined
            }
          }).catch((e) => Promise.reject(new Error(`${e}\n${log}`)))
        }

        // one message, three recipients: delivered, deferred then delivered on the retry (only it), refused → DSN
        const sent = await swaks([
          "--server", `127.0.0.1:${smtpPort}`, "--ehlo", "client.example",
          "--from", "alice@sender.example", "--to", "ok@dest.example,later@dest.example,no@dest.example",
          "--header", "Subject: mixed results", "--body", "one of each"
        ])
        const transcript = sent.transcript
        Assert.equal(sent.code, 0, `swaks: ${transcript}${sent.stderr}`)
        Assert.match(transcript, /<-  250 2\.6\.0 Ok: queued as /)
        const received = await waitFor("the retry and the DSN", async () => {
          const got = await downstream.received()
          const toLater = got.filter((e) => e.recipients.includes("later@dest.example"))
          const dsn = got.filter((e) => e.sender === "")
          return toLater.length === 1 && dsn.length === 1 ? got : undefined
        }, 20_000)
        const original = received.filter((e) => e.sender === "alice@sender.example")
        Assert.equal(original.map((e) => e.recipients), [["ok@dest.example"], ["later@dest.example"]])
        Assert.equal(laterAttempts, 2)
        const dsn = received.find((e) => e.sender === "")!
        Assert.equal(dsn.recipients, ["alice@sender.example"])
        const dsnText = decoder.decode(dsn.message)
        Assert.match(dsnText, /^Subject: Undelivered Mail Returned to Sender\r$/m)
        Assert.match(dsnText, /Content-Type: multipart\/report; report-type=delivery-status/i)
        const statusPart = dsnText.split(/Content-Type: message\/delivery-status\r\n/i)[1]?.split("\r\n--")[0] ?? ""
        Assert.includes(statusPart, "Reporting-MTA: dns; relay.mailroom.test")
        Assert.includes(statusPart, "Final-Recipient: rfc822; no@dest.example")
        Assert.includes(statusPart, "Action: failed")
        Assert.includes(statusPart, "Status: 5.1.1")
        Assert.match(statusPart, /Diagnostic-Code: smtp; 550 5\.1\.1 No such user here/)
        Assert.ok(!statusPart.includes("later@dest.example") && !statusPart.includes("ok@dest.example"), statusPart)
        Assert.includes(dsnText, "Subject: mixed results")
        Assert.match(log, /event=delivery id=\S+ attempt=1 delivered=1 deferred=1 bounced=1/)

        // the HTTP edge: a slimta-style message/rfc822 POST and a JSON submission, into the same queue
        const res = await fetch(`http://127.0.0.1:${httpPort}/`, {
          method: "POST",
          headers: {
            "content-type": "message/rfc822",
            "x-envelope-sender": b64("web@sender.example"),
            "x-envelope-recipient": b64("ok@dest.example"),
            "x-ehlo": "webapp.example"
          },
          body: "Subject: over http\r\n\r\nhello\r\n"
        })
        await res.body?.cancel()
        Assert.equal(res.status, 200)
        Assert.match(res.headers.get("x-smtp-reply") ?? "", /^250; message="2\.6\.0 /)
        const json = await fetch(`http://127.0.0.1:${httpPort}/send`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ from: "app@sender.example", to: ["ok@dest.example"], subject: "json on deno", text: "hi" })
        })
        await json.body?.cancel()
        Assert.equal(json.status, 200)
        const viaHttp = await waitFor("both HTTP messages downstream", async () => {
          const all = await downstream.received()
          const http = all.filter((e) => e.sender === "web@sender.example" || e.sender === "app@sender.example")
          return http.length === 2 ? http : undefined
        })
        const composed = decoder.decode(viaHttp.find((e) => e.sender === "app@sender.example")!.message)
        Assert.match(composed, /^Subject: json on deno\r$/m)
        // the client's address comes from Deno.serve's remoteAddr
        Assert.match(composed, /^Received: from \S+ \(\S+ \[127\.0\.0\.1\]\)\s+by relay\.mailroom\.test\s+\(Mailroom\)\s+with HTTP /m)
        Assert.includes(decoder.decode(viaHttp.find((e) => e.sender === "web@sender.example")!.message), "Subject: over http")
        const refused = await fetch(`http://127.0.0.1:${httpPort}/`, { method: "GET" })
        await refused.body?.cancel()
        Assert.equal(refused.status, 405)
        Assert.equal(refused.headers.get("allow"), "POST")

        // the sender deny rule of the SMTP listener
        const denied = await swaks(["--server", `127.0.0.1:${smtpPort}`, "--from", "x@spammer.example", "--to", "ok@dest.example", "--quit-after", "MAIL"])
        Assert.match(denied.transcript, /<\*\* 550 5\.7\.1 Sender <x@spammer\.example> not allowed/)
      } finally {
        server.kill("SIGTERM")
      }
      const status = await server.status
      await logDone
      const stderr = await errText
      Assert.equal(status.code, 0, `exit ${status.code}: ${stderr}\n${log}`)
      Assert.match(log, /shutting down/)

      // the KV queue is on disk where the config said, empty, and the queue commands read it on Deno
      Assert.ok((await Deno.stat(`${dir}/var/queue.kv`)).isFile, "var/queue.kv exists")
      const list = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--no-check", main, "queue", "list", "--config", "mailroom.yaml"],
        cwd: dir,
        stdout: "piped",
        stderr: "piped"
      }).output()
      Assert.equal(decoder.decode(list.stdout), "0 messages, 0 held\n", decoder.decode(list.stderr))
      Assert.equal(list.code, 0)
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      await Deno.remove(dir, { recursive: true })
    }
  }
})

Deno.test("serve on Deno: the resolver fails over to the next name server on a server fault, for dns.tries rounds; NotFound is an answer", async () => {
  const calls: Array<string> = []
  const server = (name: string, answer: "timeout" | "refused" | "notfound" | "ok") =>
    Dns.make({
      lookup: (host) =>
        Effect.suspend(() => {
          calls.push(name)
          switch (answer) {
            case "ok":
              return Effect.succeed([NetAddress.ipFromStringUnsafe("192.0.2.1")])
            case "notfound":
              return Effect.fail(new Dns.DnsError({ reason: "NotFound", method: "lookup", hostname: host }))
            case "timeout":
              return Effect.fail(new Dns.DnsError({ reason: "Timeout", method: "lookup", hostname: host }))
            case "refused":
              return Effect.fail(new Dns.DnsError({ reason: "Refused", method: "lookup", hostname: host }))
          }
        })
    })
  const lookup = (dns: Dns.Dns["Service"]) =>
    Effect.runPromise(Effect.match(dns.lookup("mx.example.test"), { onSuccess: (a) => a.map(NetAddress.formatIp).join(","), onFailure: (e) => e.reason }))

  Assert.equal(await lookup(DenoServe.failover([server("a", "timeout"), server("b", "ok")], 1)), "192.0.2.1")
  Assert.equal(calls.splice(0), ["a", "b"])
  Assert.equal(await lookup(DenoServe.failover([server("a", "notfound"), server("b", "ok")], 2)), "NotFound")
  Assert.equal(calls.splice(0), ["a"])
  Assert.equal(await lookup(DenoServe.failover([server("a", "timeout"), server("b", "refused")], 2)), "Refused")
  Assert.equal(calls.splice(0), ["a", "b", "a", "b"])
})

Deno.test("serve on Deno: redis storage is refused at start with a ServeError naming queue.storage.type", async () => {
  const decoded = Config.parse("smtp: []\nqueue: { storage: { type: redis, url: redis://127.0.0.1/0 } }\nrelay: { type: blackhole }\n", "yaml")
  if (decoded._tag !== "Success") throw new Error("config did not decode")
  const exit = await Effect.runPromiseExit(Effect.scoped(DenoServe.start(decoded.success)))
  Assert.ok(Exit.isFailure(exit))
  const failure = Exit.isFailure(exit) ? exit.cause.reasons.find((x) => x._tag === "Fail") : undefined
  const error = failure?._tag === "Fail" ? failure.error : undefined
  Assert.ok(error instanceof DenoServe.ServeError, String(error))
  Assert.equal(error?.message, "queue.storage.type: redis storage is not available yet in this version; on Deno use kv, disk or memory")
})
