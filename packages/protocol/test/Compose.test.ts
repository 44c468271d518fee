/**
 * Compose: `start` over a stub platform that records what it is asked for
 * (listen options, resolver settings, HTTP servers) and reads files from a
 * table. Real sockets are the runtimes' suites (test/interop/Serve*.test.ts
 * on Node, packages/deno-adapter/test/Serve.deno.ts on Deno); here the
 * composition itself: what each config key turns into, and that every
 * startup problem is a ServeError naming its key.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Dns from "effect/net/Dns"
import * as Path from "effect/Path"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import { describe, expect, it } from "vitest"
import * as Base64 from "../src/auth/Base64.ts"
import * as Compose from "../src/config/Compose.ts"
import * as Config from "../src/config/Config.ts"
import type * as HttpEdge from "../src/edge/HttpEdge.ts"
import * as Transport from "../src/edge/Transport.ts"
import * as ProcessSpawner from "../src/process/ProcessSpawner.ts"
import * as QueueStorage from "../src/queue/QueueStorage.ts"

const config = (yaml: string): Config.Config => {
  const r = Config.parse(yaml, "yaml")
  if (Result.isFailure(r)) throw new Error(r.failure.message)
  return r.success
}

interface Stub {
  readonly platform: Compose.Platform
  readonly files: Map<string, string>
  readonly listens: Array<Transport.ListenOptions>
  readonly setTls: Array<{ readonly endpoint: Transport.Endpoint; readonly config: Transport.ServerTlsConfig }>
  readonly dns: Array<Compose.DnsOptions>
  readonly http: Array<{ readonly handler: HttpEdge.Handler; readonly options: Compose.HttpServeOptions }>
}

const stub = (over: Partial<Compose.Platform> = {}, files: Record<string, string> = {}): Stub => {
  const s: Omit<Stub, "platform"> = { files: new Map(Object.entries(files)), listens: [], setTls: [], dns: [], http: [] }
  let nextPort = 40000
  const listener: Transport.Listener["Service"] = {
    listen: (options) =>
      Effect.sync(() => {
        s.listens.push(options)
        const endpoint: Transport.Endpoint = options.endpoint._tag === "Inet" && options.endpoint.port === 0
          ? { ...options.endpoint, port: nextPort++ }
          : options.endpoint
        return { endpoint, setTls: (config) => Effect.sync(() => void s.setTls.push({ endpoint, config })) }
      })
  }
  const connector: Transport.Connector["Service"] = {
    connect: () => Effect.fail(new Transport.TransportError({ reason: "Connect", message: "no network in this test" }))
  }
  const platform: Compose.Platform = {
    name: "Stub",
    transport: Layer.mergeAll(Layer.succeed(Transport.Listener, listener), Layer.succeed(Transport.Connector, connector)),
    dns: (options) =>
      Effect.sync(() => {
        s.dns.push(options)
        return Result.getOrThrow(Dns.makeStatic({}))
      }),
    storage: (settings) => (settings.type === "memory" ? QueueStorage.memory : `${settings.type} storage is not on this stub`),
    fileSystem: Layer.merge(FileSystem.layerNoop({}), Path.layer),
    processes: Layer.succeed(ProcessSpawner.ProcessSpawner, ProcessSpawner.fromFunction(() => Effect.succeed(ProcessSpawner.exited(0)))),
    readText: (path) => {
      const text = s.files.get(path)
      if (text === undefined) throw new Error(`ENOENT: no such file or directory, open '${path}'`)
      return text
    },
    serveHttp: (handler, options) =>
      Effect.sync(() => {
        s.http.push({ handler, options })
        return { host: options.host, port: options.port, url: `http://${options.host}:${options.port}` }
      }),
    ...over
  }
  return { ...s, platform }
}

const quiet = <A, E>(e: Effect.Effect<A, E, Scope.Scope>): Promise<Exit.Exit<A, E>> =>
  Effect.runPromiseExit(e.pipe(Effect.scoped, Effect.provide(Logger.layer([]))))

/** Starts `yaml` on `s`, runs `f` on the running server, and closes everything. */
const withRunning = async <A>(s: Stub, yaml: string, f: (r: Compose.Running) => Promise<A>): Promise<A> => {
  const exit = await quiet(Effect.flatMap(Compose.start(config(yaml), s.platform), (r) => Effect.promise(() => f(r))))
  if (Exit.isFailure(exit)) throw new Error(`start failed: ${String(exit.cause)}`)
  return exit.value
}

/** The ServeError message `start` fails with. */
const startError = async (s: Stub, yaml: string): Promise<string> => {
  const exit = await quiet(Compose.start(config(yaml), s.platform))
  if (Exit.isSuccess(exit)) throw new Error("expected start to fail")
  const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (failure === undefined || failure._tag !== "Fail") throw new Error(`expected a typed failure, got ${String(exit.cause)}`)
  expect(failure.error).toBeInstanceOf(Compose.ServeError)
  return failure.error.message
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const b64 = (s: string): string => Base64.encode(enc(s))

const CERT = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"
const KEY = "-----BEGIN PRIVATE KEY-----\nB\n-----END PRIVATE KEY-----\n"

describe("Compose.start: what the config turns into", () => {
  it("one SMTP edge per listen address, with the TLS files read and the listen options from the config", async () => {
    const s = stub({}, { "/tls/mx.crt": CERT, "/tls/mx.key": KEY, "/tls/org.crt": "org cert", "/tls/org.key": "org key" })
    const yaml = `hostname: mx.example.test
smtp:
  - listen: 127.0.0.1:0
  - listen: ["127.0.0.1:0", "unix:/run/mailroom/lmtp.sock"]
    implicit_tls: true
    tls:
      cert: /tls/mx.crt
      key: /tls/mx.key
      min_version: TLSv1.3
      sni: [{ names: ["*.example.org"], cert: /tls/org.crt, key: /tls/org.key }]
    proxy_protocol: { trusted: [10.0.0.0/8], timeout: 2s }
queue: { storage: { type: memory } }
relay: { type: blackhole }
`
    const names = await withRunning(s, yaml, async (r) => {
      expect(r.http).toEqual([])
      return r.edges.map((e) => [e.name, e.edge.endpoint])
    })
    expect(names).toEqual([
      ["smtp[0]", { _tag: "Inet", address: "127.0.0.1", port: 40000 }],
      ["smtp[1].listen[0]", { _tag: "Inet", address: "127.0.0.1", port: 40001 }],
      ["smtp[1].listen[1]", { _tag: "Unix", path: "/run/mailroom/lmtp.sock" }]
    ])
    expect(s.listens[0]).toMatchObject({ endpoint: { _tag: "Inet", address: "127.0.0.1", port: 0 }, implicitTls: false })
    expect(s.listens[0]!.tls).toBeUndefined()
    expect(s.listens[1]).toMatchObject({
      implicitTls: true,
      tls: {
        default: { cert: CERT, key: KEY },
        sni: [{ names: ["*.example.org"], certificate: { cert: "org cert", key: "org key" } }],
        minVersion: "TLSv1.3"
      },
      proxyProtocol: { trusted: ["10.0.0.0/8"], timeoutMs: 2000 }
    })
    // the resolver of the rules: the system's, with the config's time limit and tries
    expect(s.dns).toEqual([{ nameServers: undefined, timeoutMs: 5000, tries: 2 }])
  })

  it("reloadTls re-reads the certificate files into every TLS listener", async () => {
    const s = stub({}, { "/c": "cert 1", "/k": "key 1" })
    await withRunning(
      s,
      `smtp: [{ listen: "127.0.0.1:0", tls: { cert: /c, key: /k } }, { listen: "127.0.0.1:0" }]
queue: { storage: { type: memory } }
relay: { type: blackhole }
`,
      async (r) => {
        s.files.set("/c", "cert 2")
        s.files.set("/k", "key 2")
        await Effect.runPromise(r.reloadTls.pipe(Effect.provide(Logger.layer([]))))
      }
    )
    expect(s.setTls).toEqual([
      { endpoint: { _tag: "Inet", address: "127.0.0.1", port: 40000 }, config: { default: { cert: "cert 2", key: "key 2" }, sni: [], minVersion: "TLSv1.2" } }
    ])
  })

  it("the HTTP edge: served by the platform, into the durable queue, with the listener's rules", async () => {
    const s = stub()
    const yaml = `hostname: mx.example.test
smtp: []
http:
  listen: "127.0.0.1:8080"
  json_path: /send
  rules: { senders: { deny: ["@spammer.example"] } }
queue: { storage: { type: memory } }
relay: { type: blackhole }
`
    const answers = await withRunning(s, yaml, async (r) => {
      expect(r.http).toEqual([{ host: "127.0.0.1", port: 8080, url: "http://127.0.0.1:8080" }])
      const handler = s.http[0]!.handler
      const post = (sender: string) =>
        handler(
          new Request("http://127.0.0.1:8080/", {
            method: "POST",
            headers: { "content-type": "message/rfc822", "x-envelope-sender": b64(sender), "x-envelope-recipient": b64("bob@example.test") },
            body: "Subject: hi\r\n\r\nhello\r\n"
          }),
          { address: "192.0.2.7", port: 51000 }
        )
      const ok = await post("alice@example.org")
      const denied = await post("x@spammer.example")
      return [ok.status, ok.headers.get("x-smtp-reply"), denied.status, denied.headers.get("x-smtp-reply")]
    })
    expect(s.http[0]!.options).toEqual({ host: "127.0.0.1", port: 8080 })
    expect(answers[0]).toBe(200)
    expect(answers[1]).toMatch(/^250; message="2\.6\.0 Ok: queued as [0-9a-z]+"$/)
    expect(answers[2]).toBe(403)
    expect(answers[3]).toBe(`550; message="5.7.1 Sender <x@spammer.example> not allowed"; command="MAIL"`)
  })

  it("the MX relay asks the platform for the configured resolver (relay.resolver over dns.resolver)", async () => {
    const s = stub()
    await withRunning(
      s,
      `dns: { resolver: ["127.0.0.1:5353", "[::1]:53"], timeout: 2s, tries: 3 }
smtp: []
queue: { storage: { type: memory } }
relay: { type: mx, resolver: "127.0.0.2:5300" }
`,
      async () => undefined
    )
    expect(s.dns).toContainEqual({ nameServers: [{ host: "127.0.0.2", port: 5300, text: "127.0.0.2:5300" }], timeoutMs: 2000, tries: 3 })
    expect(s.dns).toContainEqual({
      nameServers: [{ host: "127.0.0.1", port: 5353, text: "127.0.0.1:5353" }, { host: "::1", port: 53, text: "[::1]:53" }],
      timeoutMs: 2000,
      tries: 3
    })
  })
})

describe("Compose.start: every startup problem is a ServeError naming its key", () => {
  const tail = `queue: { storage: { type: memory } }\nrelay: { type: blackhole }\n`

  it("a storage the platform lacks names queue.storage.type", async () => {
    expect(await startError(stub(), `queue: { storage: { type: kv, path: /q.kv } }\n`)).toBe("queue.storage.type: kv storage is not on this stub")
  })

  it("an unreadable certificate names the key and the file", async () => {
    expect(await startError(stub({}, { "/k": KEY }), `smtp: [{ listen: "127.0.0.1:0", tls: { cert: /missing.crt, key: /k } }]\n${tail}`)).toBe(
      "smtp[0].tls.cert: cannot read /missing.crt: ENOENT: no such file or directory, open '/missing.crt'"
    )
  })

  it("a bad users file names the key, the file and each bad line", async () => {
    const s = stub({}, { "/users": "# users\nalice:{PLAIN}secret\nbob\nalice:{PLAIN}again\n" })
    expect(await startError(s, `smtp: [{ listen: "127.0.0.1:0", auth: { users_file: /users } }]\n${tail}`)).toBe(
      ["smtp[0].auth.users_file: users file /users:3: expected name:stored-password", "smtp[0].auth.users_file: users file /users:4: user alice appears twice"].join(
        "\n"
      )
    )
    expect(await startError(stub(), `smtp: []\nhttp: { auth: { users_file: /nope } }\n${tail}`)).toBe(
      "http.auth.users_file: users file /nope: ENOENT: no such file or directory, open '/nope'"
    )
  })

  it("an unreadable aliases file and a relay CA name their keys", async () => {
    expect(await startError(stub(), `smtp: []\nqueue: { storage: { type: memory }, policies: { aliases_file: /aliases } }\n`)).toBe(
      "queue.policies.aliases_file: cannot read /aliases: ENOENT: no such file or directory, open '/aliases'"
    )
    expect(await startError(stub(), `smtp: []\nqueue: { storage: { type: memory } }\nrelay: { type: static, host: smarthost.example, ca: /ca.pem }\n`)).toBe(
      "relay.ca: cannot read /ca.pem: ENOENT: no such file or directory, open '/ca.pem'"
    )
  })

  it("a resolver the platform refuses names dns.resolver or relay.resolver", async () => {
    const refusing = stub({ dns: (o) => (o.nameServers === undefined ? Effect.succeed(Result.getOrThrow(Dns.makeStatic({}))) : Effect.fail(new Error("bad name server"))) })
    expect(await startError(refusing, `dns: { resolver: "127.0.0.1:53" }\nsmtp: []\n${tail}`)).toBe("dns.resolver: bad name server")
    expect(await startError(refusing, `smtp: []\nqueue: { storage: { type: memory } }\nrelay: { type: mx, resolver: "127.0.0.1:53" }\n`)).toBe(
      "relay.resolver: bad name server"
    )
  })

  it("a port in use names the listener; an HTTP edge on a Unix socket and a failing HTTP server name http.listen", async () => {
    const busy = stub({
      transport: Layer.mergeAll(
        Layer.succeed(Transport.Listener, {
          listen: () => Effect.fail(new Transport.TransportError({ reason: "Listen", message: "cannot listen on 127.0.0.1:25: address in use" }))
        }),
        Layer.succeed(Transport.Connector, { connect: () => Effect.die("unused") })
      )
    })
    expect(await startError(busy, `smtp: [{ listen: "127.0.0.1:25" }]\n${tail}`)).toBe("smtp[0]: cannot listen on 127.0.0.1:25: address in use")
    expect(await startError(stub(), `smtp: []\nhttp: { listen: "unix:/run/http.sock" }\n${tail}`)).toBe(
      "http.listen[0]: the HTTP edge listens on TCP addresses only, got unix:/run/http.sock"
    )
    const failing = stub({ serveHttp: () => Effect.fail(new Error("cannot listen on 127.0.0.1:8025: address in use")) })
    expect(await startError(failing, `smtp: []\nhttp: {}\n${tail}`)).toBe("http.listen[0]: cannot listen on 127.0.0.1:8025: address in use")
  })
})

describe("Compose.tlsConfig and loadUsers", () => {
  it("read through the given readText", () => {
    const files: Record<string, string> = { "/c": "C", "/k": "K", "/u": "alice:{PLAIN}x\n" }
    const read = (p: string) => files[p] ?? (() => { throw new Error("missing") })()
    const tls = config(`smtp: [{ tls: { cert: /c, key: /k } }]\n`).smtp[0]!.tls!
    expect(Compose.tlsConfig(tls, "smtp[0].tls", read)).toEqual({ default: { cert: "C", key: "K" }, sni: [], minVersion: "TLSv1.2" })
    expect(Compose.loadUsers("k", "/u", read)).toEqual(new Map([["alice", "{PLAIN}x"]]))
    expect(() => Compose.loadUsers("k", "/v", read)).toThrow(new Compose.ServeError("k: users file /v: missing"))
  })
})
