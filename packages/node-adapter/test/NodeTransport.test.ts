import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as tls from "node:tls"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Transport from "@mailroom/protocol/edge/Transport"
import * as ProxyProtocol from "@mailroom/protocol/wire/ProxyProtocol"
import type { NodeConnection } from "../src/internal/NodeConnection.ts"
import * as NodeTransport from "../src/NodeTransport.ts"
import { type IssuedCertificate, makeCa, type TestCa } from "../../../test/support/certs.ts"
import { type Haproxy, startHaproxy } from "../../../test/support/haproxy.ts"
import { removeDir, tempDir } from "../../../test/support/ports.ts"

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

type Services = Transport.Listener | Transport.Connector

const run = <A, E>(
  program: Effect.Effect<A, E, Services | Scope.Scope>,
  layer: Layer.Layer<Services> = NodeTransport.layer
): Promise<A> => Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(layer)))

const listen = (options: Transport.ListenOptions, handler: (c: Transport.Connection) => Effect.Effect<void>) =>
  Effect.flatMap(Transport.Listener, (l) => l.listen(options, handler))

const connect = (options: Transport.ConnectOptions) =>
  Effect.flatMap(Transport.Connector, (c) => c.connect(options))

const loopback: Transport.Endpoint = { _tag: "Inet", address: "127.0.0.1", port: 0 }
const portOf = (e: Transport.Endpoint) => (e._tag === "Inet" ? e.port : 0)
const text = (batch: ReadonlyArray<Uint8Array>) => Buffer.concat(batch).toString("latin1")
const bytes = (s: string) => Buffer.from(s, "latin1")
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

interface Signal<A> {
  readonly promise: Promise<A>
  readonly resolve: (a: A) => void
}
const signal = <A = void>(): Signal<A> => {
  let resolve!: (a: A) => void
  const p = new Promise<A>((r) => (resolve = r))
  return { promise: p, resolve }
}

/** Reads until `needle` has been seen (in the text read so far); returns everything read. */
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

/** Echoes every batch back; closes gracefully at end of stream. */
const echo = (conn: Transport.Connection): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (;;) {
      const batch = yield* conn.read
      if (batch === null) return yield* conn.close
      for (const chunk of batch) yield* conn.write(chunk)
    }
  }).pipe(Effect.catch(() => Effect.void))

/** A plain or TLS client socket that collects what it receives. */
class Client {
  data = Buffer.alloc(0)
  ended = false
  closed = false
  error: Error | undefined
  private waiters: Array<() => void> = []
  readonly sock: net.Socket
  constructor(sock: net.Socket) {
    this.sock = sock
    sock.on("data", (d: Buffer) => {
      this.data = Buffer.concat([this.data, d])
      this.wake()
    })
    sock.on("end", () => {
      this.ended = true
      this.wake()
    })
    sock.on("close", () => {
      this.closed = true
      this.wake()
    })
    sock.on("error", (e) => {
      this.error = e
      this.wake()
    })
  }
  private wake() {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }
  get text() {
    return this.data.toString("latin1")
  }
  /** Resolves once `pred` holds, rejects after `ms`. */
  until(pred: (c: Client) => boolean, ms = 5000, what = "condition"): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.text.slice(0, 200))}`)), ms)
      const check = () => {
        if (pred(this)) {
          clearTimeout(timer)
          resolve()
        } else this.waiters.push(check)
      }
      check()
    })
  }
  waitFor(needle: string, ms = 5000) {
    return this.until((c) => c.text.includes(needle), ms, JSON.stringify(needle))
  }
  waitClosed(ms = 5000) {
    return this.until((c) => c.closed, ms, "close")
  }
  write(s: string | Uint8Array) {
    this.sock.write(typeof s === "string" ? bytes(s) : s)
  }
  static connect(options: net.NetConnectOpts, ms = 5000): Promise<Client> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(options)
      const timer = setTimeout(() => (sock.destroy(), reject(new Error("connect timed out"))), ms)
      sock.setNoDelay(true)
      sock.once("connect", () => (clearTimeout(timer), resolve(new Client(sock))))
      sock.once("error", (e) => (clearTimeout(timer), reject(e)))
    })
  }
  /** Client-side TLS over an existing socket (STARTTLS) or a new connection. */
  static tls(options: tls.ConnectionOptions, ms = 5000): Promise<Client> {
    return new Promise((resolve, reject) => {
      const sock = tls.connect(options)
      const timer = setTimeout(() => (sock.destroy(), reject(new Error("TLS handshake timed out"))), ms)
      sock.once("secureConnect", () => (clearTimeout(timer), resolve(new Client(sock))))
      sock.once("error", (e) => (clearTimeout(timer), reject(e)))
    })
  }
}

const tcp = (e: Transport.Endpoint) =>
  e._tag === "Unix" ? Client.connect({ path: e.path }) : Client.connect({ host: e.address, port: e.port })

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

let ca: TestCa
let rogueCa: TestCa
let mailCert: IssuedCertificate
let otherCert: IssuedCertificate
let rogueCert: IssuedCertificate
const pem = (c: IssuedCertificate): Transport.CertificatePem => ({ key: c.key, cert: c.cert })
const peerCn = (s: tls.TLSSocket) => s.getPeerCertificate().subject?.CN

beforeAll(() => {
  ca = makeCa("Mailroom Test CA")
  rogueCa = makeCa("Rogue CA")
  mailCert = ca.issue("mail.test", ["DNS:mail.test", "IP:127.0.0.1", "IP:::1"])
  otherCert = ca.issue("other.test", ["DNS:other.test", "DNS:*.wild.test"])
  rogueCert = rogueCa.issue("mail.test", ["DNS:mail.test", "IP:127.0.0.1"])
})

afterAll(() => {
  ca?.dispose()
  rogueCa?.dispose()
})

// ---------------------------------------------------------------------------
// Plain connections
// ---------------------------------------------------------------------------

describe("NodeTransport listener: plain TCP and Unix sockets", () => {
  it("echoes over 127.0.0.1 and reports the connection facts", async () => {
    const seen: Array<Transport.Connection> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (c) => (seen.push(c), echo(c)))
      expect(bound.endpoint._tag).toBe("Inet")
      const port = portOf(bound.endpoint)
      expect(port).toBeGreaterThan(0)
      const client = yield* promise(() => tcp(bound.endpoint))
      client.write("hello\r\n")
      yield* promise(() => client.waitFor("hello\r\n"))
      const second = yield* promise(() => tcp(bound.endpoint))
      second.write("again\r\n")
      yield* promise(() => second.waitFor("again\r\n"))
      expect(seen).toHaveLength(2)
      const c = seen[0]!
      expect(c.remote).toEqual({ _tag: "Inet", address: "127.0.0.1", port: client.sock.localPort })
      expect(c.local).toEqual({ _tag: "Inet", address: "127.0.0.1", port })
      expect(c.proxied).toBeUndefined()
      expect(c.tls()).toBeUndefined()
      expect(seen[1]!.id).toBeGreaterThan(c.id)
      client.sock.end()
      yield* promise(() => client.waitClosed())
      expect(client.text).toBe("hello\r\n")
      expect(client.ended).toBe(true)
    }))
  })

  it("echoes over ::1", async () => {
    const seen: Array<Transport.Connection> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: { _tag: "Inet", address: "::1", port: 0 } }, (c) => (seen.push(c), echo(c)))
      expect(bound.endpoint).toMatchObject({ _tag: "Inet", address: "::1" })
      const client = yield* promise(() => tcp(bound.endpoint))
      client.write("six\r\n")
      yield* promise(() => client.waitFor("six\r\n"))
      expect(seen[0]!.remote).toEqual({ _tag: "Inet", address: "::1", port: client.sock.localPort })
      expect(Transport.formatEndpoint(seen[0]!.local)).toBe(`[::1]:${portOf(bound.endpoint)}`)
    }))
  })

  it("reports each connection's own address on a wildcard listener, and the bound one on a specific listener", async () => {
    const seen: Array<Transport.Connection> = []
    await run(Effect.gen(function*() {
      const any = yield* listen({ endpoint: { _tag: "Inet", address: "0.0.0.0", port: 0 } }, (c) => (seen.push(c), echo(c)))
      const port = portOf(any.endpoint)
      const client = yield* promise(() => tcp({ _tag: "Inet", address: "127.0.0.1", port }))
      client.write("any\r\n")
      yield* promise(() => client.waitFor("any\r\n"))
      expect(seen[0]!.local).toEqual({ _tag: "Inet", address: "127.0.0.1", port })
      const one = yield* listen({ endpoint: loopback }, (c) => (seen.push(c), echo(c)))
      const second = yield* promise(() => tcp(one.endpoint))
      second.write("one\r\n")
      yield* promise(() => second.waitFor("one\r\n"))
      expect(seen[1]!.local).toEqual({ _tag: "Inet", address: "127.0.0.1", port: portOf(one.endpoint) })
      expect(seen[1]!.remote).toEqual({ _tag: "Inet", address: "127.0.0.1", port: second.sock.localPort })
    }))
  })

  it("listens on a Unix socket, replacing a stale socket file and refusing a live or foreign one", async () => {
    const dir = tempDir()
    try {
      const sockPath = path.join(dir, "smtp.sock")
      // a socket file left behind by a dead process
      execFileSync("python3", ["-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", sockPath])
      expect(fs.lstatSync(sockPath).isSocket()).toBe(true)
      const endpoint: Transport.Endpoint = { _tag: "Unix", path: sockPath }
      const seen: Array<Transport.Connection> = []
      await run(Effect.gen(function*() {
        const bound = yield* listen({ endpoint }, (c) => (seen.push(c), echo(c)))
        expect(bound.endpoint).toEqual(endpoint)
        const client = yield* promise(() => tcp(endpoint))
        client.write("unix\r\n")
        yield* promise(() => client.waitFor("unix\r\n"))
        expect(seen[0]!.local).toEqual(endpoint)
        expect(seen[0]!.remote._tag).toBe("Unix")
        // a second listener on the live path is refused
        const live = yield* Effect.exit(Effect.scoped(listen({ endpoint }, echo)))
        expect(live._tag).toBe("Failure")
        expect(JSON.stringify(live)).toContain("in use")
      }))
      // closing the listener removes its socket file
      expect(fs.existsSync(sockPath)).toBe(false)
      // a regular file is never removed
      const filePath = path.join(dir, "not-a-socket")
      fs.writeFileSync(filePath, "data")
      const err = await run(Effect.flip(listen({ endpoint: { _tag: "Unix", path: filePath } }, echo)))
      expect(err).toBeInstanceOf(Transport.TransportError)
      expect(err.reason).toBe("Listen")
      expect(err.message).toContain("not a socket")
      expect(fs.readFileSync(filePath, "utf8")).toBe("data")
    } finally {
      removeDir(dir)
    }
  })

  it("fails to listen on a port in use with a Listen error", async () => {
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, echo)
      const err = yield* Effect.flip(listen({ endpoint: bound.endpoint }, echo))
      expect(err.reason).toBe("Listen")
    }))
  })

  it("returns every chunk received since the last read in one batch", async () => {
    const batches: Array<ReadonlyArray<Uint8Array>> = []
    const ready = signal()
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          yield* promise(() => ready.promise)
          const batch = yield* conn.read
          if (batch !== null) batches.push(batch)
          yield* conn.write(bytes("done\r\n"))
        }).pipe(Effect.catch(() => Effect.void)))
      const client = yield* promise(() => tcp(bound.endpoint))
      for (const s of ["a\r\n", "b\r\n", "c\r\n"]) {
        client.write(s)
        yield* promise(() => sleep(30))
      }
      ready.resolve()
      yield* promise(() => client.waitFor("done\r\n"))
    }))
    expect(batches).toHaveLength(1)
    expect(batches[0]!.length).toBe(3)
    expect(text(batches[0]!)).toBe("a\r\nb\r\nc\r\n")
  })

  it("returns null at end of stream and can still answer a half-closed peer", async () => {
    const reads: Array<string | null> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          for (;;) {
            const batch = yield* conn.read
            reads.push(batch === null ? null : text(batch))
            if (batch === null) break
          }
          // end of stream is a value, and stays so
          expect(yield* conn.read).toBeNull()
          yield* conn.write(bytes("221 2.0.0 Bye\r\n"))
          yield* conn.close
        }).pipe(Effect.catch(() => Effect.void)))
      const client = yield* promise(() => tcp(bound.endpoint))
      client.sock.end(bytes("QUIT\r\n"))
      yield* promise(() => client.waitClosed())
      expect(client.text).toBe("221 2.0.0 Bye\r\n")
      expect(client.ended).toBe(true)
    }))
    expect(reads.join("")).toBe("QUIT\r\n")
    expect(reads[reads.length - 1]).toBeNull()
  })

  it("suspends a large write until a slow reader takes it, and delivers every byte", async () => {
    const total = 32 * 1024 * 1024
    const piece = Buffer.alloc(64 * 1024)
    for (let i = 0; i < piece.length; i++) piece[i] = i % 251
    let writesDoneAt = 0
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          for (let sent = 0; sent < total; sent += piece.length) yield* conn.write(piece)
          writesDoneAt = Date.now()
          yield* conn.close
        }).pipe(Effect.catch(() => Effect.void)))
      const sock = net.connect({ host: "127.0.0.1", port: portOf(bound.endpoint) })
      sock.pause()
      yield* promise(() => sleep(300))
      const readingFrom = Date.now()
      let received = 0
      let sum = 0
      yield* promise(() =>
        new Promise<void>((resolve, reject) => {
          sock.on("data", (d: Buffer) => {
            for (let i = 0; i < d.length; i++) sum = (sum + d[i]!) % 1_000_000_007
            received += d.length
          })
          sock.on("end", () => resolve())
          sock.on("error", reject)
          sock.resume()
        })
      )
      expect(received).toBe(total)
      let expected = 0
      for (let i = 0; i < total; i++) expected = (expected + ((i % piece.length) % 251)) % 1_000_000_007
      expect(sum).toBe(expected)
      expect(writesDoneAt).toBeGreaterThanOrEqual(readingFrom)
    }))
  })

  it("pauses a fast sender at the high-water mark and delivers everything in order", async () => {
    const total = 8 * 1024 * 1024
    const firstBatch: Array<number> = []
    let received = 0
    let ordered = true
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          yield* Effect.sleep(300)
          for (;;) {
            const batch = yield* conn.read
            if (batch === null) break
            let size = 0
            for (const c of batch) {
              for (let i = 0; i < c.length; i++) if (c[i] !== (received + i) % 256) ordered = false
              received += c.length
              size += c.length
            }
            if (firstBatch.length === 0) firstBatch.push(size)
          }
          yield* conn.write(bytes(`got ${received}\r\n`))
          yield* conn.close
        }).pipe(Effect.catch(() => Effect.void)))
      const client = yield* promise(() => tcp(bound.endpoint))
      const data = Buffer.alloc(total)
      for (let i = 0; i < total; i++) data[i] = i % 256
      client.sock.end(data)
      yield* promise(() => client.waitFor(`got ${total}\r\n`, 20_000))
    }))
    expect(received).toBe(total)
    expect(ordered).toBe(true)
    // the first read after the pause held about one high-water mark, not the 8 MB sent
    expect(firstBatch[0]!).toBeLessThan(1024 * 1024)
  })

  it("destroys the socket when the handler ends, and stops accepting when the scope closes", async () => {
    let port = 0
    const parked = signal()
    let interrupted = false
    let parkedClient: Client | undefined
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          const first = yield* conn.read
          if (first !== null && text(first).startsWith("park")) {
            parked.resolve()
            yield* Effect.onInterrupt(Effect.never, () => Effect.sync(() => (interrupted = true)))
          }
          // any other connection: the handler just ends
        }).pipe(Effect.catch(() => Effect.void)))
      port = portOf(bound.endpoint)
      const client = yield* promise(() => tcp(bound.endpoint))
      client.write("bye\r\n")
      yield* promise(() => client.waitClosed())
      parkedClient = yield* promise(() => tcp(bound.endpoint))
      parkedClient.write("park\r\n")
      yield* promise(() => parked.promise)
    }))
    expect(interrupted).toBe(true)
    await parkedClient!.waitClosed()
    await expect(Client.connect({ host: "127.0.0.1", port })).rejects.toThrow(/ECONNREFUSED/)
  })

  it("close flushes a large reply before closing; destroy does not wait", async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 0x61)
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          yield* conn.write(big)
          yield* conn.close
          yield* conn.close // idempotent
          const err = yield* Effect.flip(conn.write(bytes("late")))
          expect(err.reason).toBe("Closed")
        }).pipe(Effect.catch(() => Effect.void)))
      const client = yield* promise(() => tcp(bound.endpoint))
      yield* promise(() => client.waitClosed(10_000))
      expect(client.data.length).toBe(big.length)
      expect(client.ended).toBe(true)
    }))
  })

  it("a peer's reset after close builds no error object; a reset during the session is a Reset failure", async () => {
    const conns: Array<NodeConnection> = []
    const closed = signal()
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          conns.push(conn as NodeConnection)
          yield* conn.write(bytes("221 bye\r\n"))
          if (conns.length === 1) {
            yield* conn.close
            // the linger waits for the peer's FIN; the peer resets instead
            while (!(conn as NodeConnection).sock.destroyed) yield* Effect.sleep(10)
            closed.resolve()
            return
          }
          const got = yield* Effect.flip(conn.readWithin(5_000))
          expect(got.reason).toBe("Reset")
        }).pipe(Effect.catch(() => Effect.void)))
      const first = yield* promise(() => tcp(bound.endpoint))
      yield* promise(() => first.waitFor("221 bye\r\n"))
      first.sock.resetAndDestroy()
      yield* promise(() => closed.promise)
      expect(conns[0]!.failure).toBeUndefined()
      const second = yield* promise(() => tcp(bound.endpoint))
      yield* promise(() => second.waitFor("221 bye\r\n"))
      second.sock.resetAndDestroy()
      yield* Effect.sleep(100)
    }))
    expect(conns[1]!.failure?.reason).toBe("Reset")
  })

  it("readWithin arms one timer while it waits and disarms it when data comes, on wake and on interruption", async () => {
    const seen: Array<string> = []
    const done = signal()
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (c) =>
        Effect.gen(function*() {
          const conn = c as NodeConnection
          const pending = yield* Effect.forkChild(conn.readWithin(60_000))
          yield* Effect.sleep(20)
          seen.push(`armed ${conn.readTimer !== undefined}`)
          yield* conn.write(bytes("go\r\n"))
          const got = yield* Fiber.join(pending)
          seen.push(`data ${Array.isArray(got) ? text(got) : String(got)} ${conn.readTimer === undefined}`)
          const woken = yield* Effect.forkChild(conn.readWithin(60_000))
          yield* Effect.sleep(20)
          conn.wake()
          seen.push(`${yield* Fiber.join(woken)} ${conn.readTimer === undefined}`)
          const interrupted = yield* Effect.forkChild(conn.readWithin(60_000))
          yield* Effect.sleep(20)
          yield* Fiber.interrupt(interrupted)
          seen.push(`interrupted ${conn.readTimer === undefined} ${conn.reader === undefined}`)
          // nothing is lost: the bytes that come now go to the next read
          yield* conn.write(bytes("again\r\n"))
          const next = yield* conn.readWithin(5_000)
          seen.push(`next ${Array.isArray(next) ? text(next) : String(next)}`)
        }).pipe(Effect.catch(() => Effect.void), Effect.ensuring(Effect.sync(() => done.resolve()))))
      const client = yield* promise(() => tcp(bound.endpoint))
      yield* promise(() => client.waitFor("go\r\n"))
      client.write("one\r\n")
      yield* promise(() => client.waitFor("again\r\n"))
      client.write("two\r\n")
      yield* promise(() => done.promise)
    }))
    expect(seen).toEqual(["armed true", "data one\r\n true", "woken true", "interrupted true true", "next two\r\n"])
  })
})

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

describe("NodeTransport listener: TLS", () => {
  const startTlsServer = (
    record: { before?: string; after?: string; info?: Transport.TlsInfo; error?: unknown },
    injected: Promise<void>
  ) =>
  (conn: Transport.Connection): Effect.Effect<void> =>
    Effect.gen(function*() {
      yield* conn.write(bytes("220 ready\r\n"))
      record.before = yield* readUntil(conn, "STARTTLS\r\n")
      // the client now pipelines plaintext; let it reach our buffers
      yield* promise(() => injected)
      yield* Effect.sleep(150)
      yield* conn.write(bytes("220 2.0.0 Ready to start TLS\r\n"))
      record.info = yield* conn.startTls()
      record.after = yield* readUntil(conn, "\r\n")
      yield* conn.write(bytes(`250 saw ${record.after}`))
      yield* conn.close
    }).pipe(Effect.catch((e) => Effect.sync(() => (record.error = e))))

  const injectionScenario = async (layer: Layer.Layer<Services>, injections: ReadonlyArray<string>) => {
    const record: { before?: string; after?: string; info?: Transport.TlsInfo; error?: unknown } = {}
    const injected = signal()
    await run(
      Effect.gen(function*() {
        const bound = yield* listen({ endpoint: loopback, tls: { default: pem(mailCert) } }, startTlsServer(record, injected.promise))
        const client = yield* promise(() => tcp(bound.endpoint))
        yield* promise(() => client.waitFor("220 ready\r\n"))
        client.write("STARTTLS\r\n")
        yield* promise(() => sleep(50))
        for (const s of injections) {
          client.write(s)
          yield* promise(() => sleep(30))
        }
        injected.resolve()
        yield* promise(() => client.waitFor("220 2.0.0 Ready to start TLS\r\n"))
        const secure = yield* promise(() => Client.tls({ socket: client.sock, servername: "mail.test", ca: [ca.cert] }))
        expect(peerCn(secure.sock as tls.TLSSocket)).toBe("mail.test")
        secure.write("EHLO after.tls\r\n")
        yield* promise(() => secure.waitFor("250 saw "))
        yield* promise(() => secure.waitClosed())
        expect(secure.text).toBe("250 saw EHLO after.tls\r\n")
      }),
      layer
    )
    expect(record.error).toBeUndefined()
    expect(record.before).toBe("STARTTLS\r\n")
    expect(record.after).toBe("EHLO after.tls\r\n")
    expect(record.info).toMatchObject({ version: "TLSv1.3", servername: "mail.test", authorized: undefined })
    expect(record.info!.cipher).toMatch(/^TLS_/)
    expect(record.info!.bits).toBeGreaterThanOrEqual(128)
  }

  it("STARTTLS discards plaintext pipelined before the handshake", async () => {
    await injectionScenario(NodeTransport.layer, ["RSET\r\nMAIL FROM:<attacker@evil.example>\r\n"])
  })

  it("STARTTLS also discards plaintext held back by a paused socket", async () => {
    // a tiny high-water mark pauses the socket after the first injected chunk, so
    // the second one waits inside the socket rather than in the connection's buffer
    await injectionScenario(NodeTransport.layerWith({ highWaterMark: 8 }), [
      "RSET\r\nRSET\r\nRSET\r\n",
      "MAIL FROM:<attacker@evil.example>\r\n",
      "RCPT TO:<victim@example.test>\r\n"
    ])
  })

  it("STARTTLS without certificates fails and closes", async () => {
    await run(Effect.gen(function*() {
      const result = signal<Transport.TransportError>()
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.flip(conn.startTls()).pipe(Effect.map((e) => result.resolve(e)), Effect.orDie))
      const client = yield* promise(() => tcp(bound.endpoint))
      const err = yield* promise(() => result.promise)
      expect(err.reason).toBe("TlsHandshake")
      yield* promise(() => client.waitClosed())
    }))
  })

  it("implicit TLS handshakes before the handler runs", async () => {
    const infos: Array<Transport.TlsInfo | undefined> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen(
        { endpoint: loopback, tls: { default: pem(mailCert) }, implicitTls: true },
        (conn) => {
          infos.push(conn.tls())
          return Effect.flatMap(Effect.orDie(conn.write(bytes("220 tls\r\n"))), () => echo(conn))
        }
      )
      const client = yield* promise(() =>
        Client.tls({ host: "127.0.0.1", port: portOf(bound.endpoint), servername: "mail.test", ca: [ca.cert] })
      )
      expect((client.sock as tls.TLSSocket).authorized).toBe(true)
      yield* promise(() => client.waitFor("220 tls\r\n"))
      client.write("ping\r\n")
      yield* promise(() => client.waitFor("ping\r\n"))
    }))
    expect(infos[0]).toMatchObject({ version: "TLSv1.3", servername: "mail.test" })
  })

  it("implicit TLS: a plaintext client is refused and reported", async () => {
    const rejects: Array<string> = []
    let handled = 0
    await run(Effect.gen(function*() {
      const bound = yield* listen({
        endpoint: loopback,
        tls: { default: pem(mailCert) },
        implicitTls: true,
        onReject: (i) => rejects.push(i.reason)
      }, () => Effect.sync(() => handled++))
      const client = yield* promise(() => tcp(bound.endpoint))
      client.write("EHLO plain\r\n\r\n\r\n")
      yield* promise(() => client.waitClosed())
      expect(client.data.length).toBe(0)
    }))
    expect(handled).toBe(0)
    expect(rejects).toHaveLength(1)
    expect(rejects[0]).toMatch(/TLS handshake failed/)
  })

  it("chooses the certificate by SNI: exact, wildcard one label deep, else the default", async () => {
    const names: Array<string | undefined> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen({
        endpoint: loopback,
        implicitTls: true,
        tls: { default: pem(mailCert), sni: [{ names: ["other.test", "*.wild.test"], certificate: pem(otherCert) }] }
      }, (conn) => {
        names.push(conn.tls()?.servername)
        return Effect.flatMap(Effect.orDie(conn.write(bytes("220 hi\r\n"))), () => echo(conn))
      })
      const cn = (servername: string | undefined) =>
        promise(async () => {
          const c = await Client.tls({
            host: "127.0.0.1",
            port: portOf(bound.endpoint),
            ...(servername !== undefined ? { servername } : {}),
            ca: [ca.cert],
            rejectUnauthorized: false
          })
          const name = peerCn(c.sock as tls.TLSSocket)
          await c.waitFor("220 hi\r\n")
          c.sock.destroy()
          return name
        })
      expect(yield* cn("other.test")).toBe("other.test")
      expect(yield* cn("OTHER.test")).toBe("other.test")
      expect(yield* cn("mx.wild.test")).toBe("other.test")
      expect(yield* cn("a.b.wild.test")).toBe("mail.test")
      expect(yield* cn("wild.test")).toBe("mail.test")
      expect(yield* cn("mail.test")).toBe("mail.test")
      expect(yield* cn(undefined)).toBe("mail.test")
    }))
    expect(names).toEqual(["other.test", "OTHER.test", "mx.wild.test", "a.b.wild.test", "wild.test", "mail.test", undefined])
  })

  it("setTls swaps certificates for new handshakes and keeps live connections", async () => {
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback, implicitTls: true, tls: { default: pem(mailCert) } }, echo)
      const opts = { host: "127.0.0.1", port: portOf(bound.endpoint), ca: [ca.cert], rejectUnauthorized: false }
      const first = yield* promise(() => Client.tls(opts))
      expect(peerCn(first.sock as tls.TLSSocket)).toBe("mail.test")
      yield* bound.setTls({ default: pem(otherCert) })
      const second = yield* promise(() => Client.tls(opts))
      expect(peerCn(second.sock as tls.TLSSocket)).toBe("other.test")
      first.write("still here\r\n")
      yield* promise(() => first.waitFor("still here\r\n"))
      second.write("new\r\n")
      yield* promise(() => second.waitFor("new\r\n"))
      const bad = yield* Effect.flip(bound.setTls({ default: { key: "nope", cert: "nope" } }))
      expect(bad.reason).toBe("Listen")
      // a bad certificate leaves the current one in place
      const third = yield* promise(() => Client.tls(opts))
      expect(peerCn(third.sock as tls.TLSSocket)).toBe("other.test")
    }))
  })
})

// ---------------------------------------------------------------------------
// Connector
// ---------------------------------------------------------------------------

describe("NodeTransport connector", () => {
  /** A server that answers STARTTLS, then echoes over TLS. */
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
      expect(yield* readUntil(conn, "220 go\r\n")).toBe("220 go\r\n")
      const info = yield* conn.startTls(options)
      return { conn, info }
    })

  it("dials, upgrades with verification on, and echoes over TLS", async () => {
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback, tls: { default: pem(mailCert) } }, starttlsEcho)
      const { conn, info } = yield* clientStartTls(bound.endpoint, { servername: "mail.test", ca: [ca.cert] })
      expect(info).toMatchObject({ version: "TLSv1.3", servername: "mail.test", authorized: true, authorizationError: undefined })
      expect(conn.tls()).toEqual(info)
      expect(conn.remote).toEqual(bound.endpoint)
      yield* conn.write(bytes("ping over tls\r\n"))
      expect(yield* readUntil(conn, "\r\n")).toBe("ping over tls\r\n")
      const again = yield* Effect.flip(conn.startTls())
      expect(again.reason).toBe("TlsHandshake")
    }))
  })

  it("verifies an IP literal against the certificate's IP SAN without sending it as SNI", async () => {
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback, tls: { default: pem(mailCert) } }, starttlsEcho)
      const { info } = yield* clientStartTls(bound.endpoint, { servername: "127.0.0.1", ca: [ca.cert] })
      expect(info).toMatchObject({ authorized: true, servername: undefined })
    }))
  })

  it("with rejectUnauthorized false, records why verification failed", async () => {
    await run(Effect.gen(function*() {
      const good = yield* listen({ endpoint: loopback, tls: { default: pem(mailCert) } }, starttlsEcho)
      const wrongName = yield* clientStartTls(good.endpoint, { servername: "wrong.test", ca: [ca.cert], rejectUnauthorized: false })
      expect(wrongName.info).toMatchObject({ authorized: false, authorizationError: "ERR_TLS_CERT_ALTNAME_INVALID" })
      const rogue = yield* listen({ endpoint: loopback, tls: { default: pem(rogueCert) } }, starttlsEcho)
      const untrusted = yield* clientStartTls(rogue.endpoint, { servername: "mail.test", ca: [ca.cert], rejectUnauthorized: false })
      expect(untrusted.info.authorized).toBe(false)
      expect(untrusted.info.authorizationError).toBe("UNABLE_TO_VERIFY_LEAF_SIGNATURE")
      // and the connection still works
      yield* untrusted.conn.write(bytes("hi\r\n"))
      expect(yield* readUntil(untrusted.conn, "\r\n")).toBe("hi\r\n")
    }))
  })

  it("with verification on, an untrusted certificate fails the handshake", async () => {
    await run(Effect.gen(function*() {
      const rogue = yield* listen({ endpoint: loopback, tls: { default: pem(rogueCert) } }, starttlsEcho)
      const err = yield* Effect.flip(clientStartTls(rogue.endpoint, { servername: "mail.test", ca: [ca.cert] }))
      expect(err).toBeInstanceOf(Transport.TransportError)
      expect((err as Transport.TransportError).reason).toBe("TlsHandshake")
    }))
  })

  it("dials implicit TLS", async () => {
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback, implicitTls: true, tls: { default: pem(mailCert) } }, echo)
      const conn = yield* connect({ endpoint: bound.endpoint, tls: { servername: "mail.test", ca: [ca.cert] } })
      expect(conn.tls()).toMatchObject({ authorized: true, version: "TLSv1.3" })
      yield* conn.write(bytes("465\r\n"))
      expect(yield* readUntil(conn, "\r\n")).toBe("465\r\n")
      yield* conn.close
      expect(yield* conn.read).toBeNull()
    }))
  })

  it("reports a refused connection as a Connect error", async () => {
    const port = await run(Effect.scoped(Effect.map(listen({ endpoint: loopback }, echo), (b) => portOf(b.endpoint))))
    const err = await run(Effect.flip(connect({ endpoint: { _tag: "Inet", address: "127.0.0.1", port } })))
    expect(err.reason).toBe("Connect")
    expect(err.message).toContain(`127.0.0.1:${port}`)
  })

  it("sees the server's close as null and the server's reset as an error", async () => {
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback }, (conn) =>
        Effect.gen(function*() {
          const first = yield* readUntil(conn, "\r\n")
          if (first === "close\r\n") return yield* conn.close
          ;(conn as unknown as { sock: net.Socket }).sock.resetAndDestroy()
        }).pipe(Effect.catch(() => Effect.void)))
      const a = yield* connect({ endpoint: bound.endpoint })
      yield* a.write(bytes("close\r\n"))
      expect(yield* a.read).toBeNull()
      const b = yield* connect({ endpoint: bound.endpoint })
      yield* b.write(bytes("reset\r\n"))
      const err = yield* Effect.flip(b.read)
      expect(err.reason).toBe("Reset")
    }))
  })
})

// ---------------------------------------------------------------------------
// PROXY protocol
// ---------------------------------------------------------------------------

describe("NodeTransport listener: PROXY protocol", () => {
  interface Seen {
    readonly proxied: Transport.ProxiedFacts | undefined
    readonly remote: Transport.Endpoint
    readonly tls: Transport.TlsInfo | undefined
    first?: string
  }

  /** Writes one line describing the connection, then echoes. */
  const describeThenEcho = (seen: Array<Seen>) => (conn: Transport.Connection): Effect.Effect<void> => {
    const s: Seen = { proxied: conn.proxied, remote: conn.remote, tls: conn.tls() }
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
      yield* conn.write(Buffer.concat(batch))
      return yield* echo(conn)
    }).pipe(Effect.catch(() => Effect.void))
  }

  const proxyListen = (
    seen: Array<Seen>,
    rejects: Array<string>,
    extra: Partial<Transport.ListenOptions> = {},
    trusted: ReadonlyArray<string> = ["127.0.0.0/8", "::1"]
  ) =>
    listen({
      endpoint: loopback,
      proxyProtocol: { trusted, timeoutMs: 2000 },
      onReject: (i) => rejects.push(i.reason),
      ...extra
    }, describeThenEcho(seen))

  const v1 = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\n"

  it("takes a v1 header and leaves the bytes after it to the handler", async () => {
    const seen: Array<Seen> = []
    await run(Effect.gen(function*() {
      const bound = yield* proxyListen(seen, [])
      const client = yield* promise(() => tcp(bound.endpoint))
      client.write(v1 + "EHLO client.example\r\n")
      yield* promise(() => client.waitFor("EHLO client.example\r\n"))
      expect(client.text).toBe("v1 192.0.2.1:56324 198.51.100.7:25\r\nEHLO client.example\r\n")
    }))
    expect(seen[0]!.first).toBe("EHLO client.example\r\n")
    expect(seen[0]!.remote).toMatchObject({ _tag: "Inet", address: "127.0.0.1" })
  })

  it("takes a v1 header sent one byte at a time", async () => {
    const seen: Array<Seen> = []
    await run(Effect.gen(function*() {
      const bound = yield* proxyListen(seen, [])
      const client = yield* promise(() => tcp(bound.endpoint))
      for (const ch of "PROXY TCP6 2001:db8::1 2001:db8::2 4000 587\r\n") {
        client.write(ch)
        yield* promise(() => sleep(2))
      }
      yield* promise(() => client.waitFor("\r\n"))
      expect(client.text).toBe("v1 2001:db8::1:4000 2001:db8::2:587\r\n")
    }))
  })

  it("takes a v2 header (with TLVs) and the data after it", async () => {
    const seen: Array<Seen> = []
    await run(Effect.gen(function*() {
      const bound = yield* proxyListen(seen, [])
      const client = yield* promise(() => tcp(bound.endpoint))
      const header = ProxyProtocol.encodeV2({
        source: { address: "2001:db8::7", port: 1234 },
        destination: { address: "2001:db8::25", port: 25 }
      }, { tlvs: Buffer.from([0x04, 0x00, 0x02, 0x00, 0x00]) })
      client.write(Buffer.concat([header, bytes("EHLO v2\r\n")]))
      yield* promise(() => client.waitFor("EHLO v2\r\n"))
      expect(client.text).toBe("v2 2001:db8::7:1234 2001:db8::25:25\r\nEHLO v2\r\n")
      const local = yield* promise(() => tcp(bound.endpoint))
      local.write(ProxyProtocol.encodeV2({ source: undefined, destination: undefined }))
      yield* promise(() => local.waitFor("\r\n"))
      expect(local.text).toBe("v2 - -\r\n")
    }))
  })

  it("reads the header exactly, so implicit TLS can follow in the same packet", async () => {
    const seen: Array<Seen> = []
    await run(Effect.gen(function*() {
      const bound = yield* proxyListen(seen, [], { implicitTls: true, tls: { default: pem(mailCert) } })
      for (const header of [ProxyProtocol.encodeV1, ProxyProtocol.encodeV2]) {
        const raw = net.connect({ host: "127.0.0.1", port: portOf(bound.endpoint) })
        yield* promise(() => new Promise<void>((r) => raw.once("connect", () => r())))
        raw.setNoDelay(false)
        raw.cork()
        raw.write(header({ source: { address: "203.0.113.5", port: 5555 }, destination: { address: "203.0.113.25", port: 465 } }))
        // the ClientHello is written right behind the header, before the server has read anything
        const secure = Client.tls({ socket: raw, servername: "mail.test", ca: [ca.cert] })
        process.nextTick(() => raw.uncork())
        const client = yield* promise(() => secure)
        yield* promise(() => client.waitFor("\r\n"))
        expect(client.text).toMatch(/^v[12] 203\.0\.113\.5:5555 203\.0\.113\.25:465\r\n$/)
        client.sock.destroy()
      }
    }))
    expect(seen).toHaveLength(2)
    expect(seen[0]!.tls).toMatchObject({ version: "TLSv1.3", servername: "mail.test" })
  })

  it("refuses a PROXY header from an untrusted peer without sending a byte", async () => {
    const seen: Array<Seen> = []
    const rejects: Array<string> = []
    await run(Effect.gen(function*() {
      const bound = yield* proxyListen(seen, rejects, {}, ["10.0.0.0/8", "2001:db8::/32"])
      const client = yield* promise(() => tcp(bound.endpoint))
      client.write(v1 + "EHLO x\r\n")
      yield* promise(() => client.waitClosed())
      expect(client.data.length).toBe(0)
    }))
    expect(seen).toHaveLength(0)
    expect(rejects).toEqual(["PROXY header not allowed from 127.0.0.1"])
  })

  const refused = async (payload: ReadonlyArray<string | Uint8Array>, reason: RegExp, timeoutMs = 2000) => {
    const seen: Array<Seen> = []
    const rejects: Array<string> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen({
        endpoint: loopback,
        proxyProtocol: { trusted: ["127.0.0.1"], timeoutMs },
        onReject: (i) => rejects.push(i.reason)
      }, describeThenEcho(seen))
      const client = yield* promise(() => tcp(bound.endpoint))
      for (const p of payload) client.write(p)
      yield* promise(() => client.waitClosed(timeoutMs + 3000))
      expect(client.data.length).toBe(0)
    }))
    expect(seen).toHaveLength(0)
    expect(rejects).toHaveLength(1)
    expect(rejects[0]).toMatch(reason)
  }

  it("refuses a malformed v1 header", () => refused(["PROXY TCP4 192.0.2.1 198.51.100.7 025 25\r\n"], /invalid PROXY header: v1 header: invalid source port/))
  it("refuses a connection with no header at all (never guesses)", () => refused(["EHLO client.example\r\n"], /invalid PROXY header/))
  it("refuses an endless v1 line after 107 bytes", () => refused(["PROXY UNKNOWN " + "x".repeat(2000)], /longer than 107/))
  it("refuses a bad v2 header", () => refused([Buffer.from("0d0a0d0a000d0a515549540a2211000c", "hex")], /unknown command/))
  it("refuses a peer that closes mid-header", async () => {
    const rejects: Array<string> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen({ endpoint: loopback, proxyProtocol: { trusted: ["127.0.0.1"] }, onReject: (i) => rejects.push(i.reason) }, echo)
      const client = yield* promise(() => tcp(bound.endpoint))
      client.sock.end(bytes("PROXY TCP4 1.2"))
      yield* promise(() => client.waitClosed())
      yield* promise(() => sleep(50))
    }))
    expect(rejects).toEqual(["connection closed before a complete PROXY header"])
  })
  it("times out a slow header", async () => {
    const started = Date.now()
    await refused(["PROXY TCP4 192.0.2.1"], /no complete PROXY header within 300 ms/, 300)
    expect(Date.now() - started).toBeGreaterThanOrEqual(300)
  })

  it("bounds connections still waiting for their header (maxPending): more are closed at once", async () => {
    const rejects: Array<string> = []
    await run(Effect.gen(function*() {
      const bound = yield* listen(
        { endpoint: loopback, proxyProtocol: { trusted: ["127.0.0.1"], timeoutMs: 2000 }, maxPending: 2, onReject: (i) => rejects.push(i.reason) },
        echo
      )
      const a = yield* promise(() => tcp(bound.endpoint))
      const b = yield* promise(() => tcp(bound.endpoint))
      yield* promise(() => sleep(50))
      const c = yield* promise(() => tcp(bound.endpoint))
      yield* promise(() => c.waitClosed())
      expect(rejects).toEqual(["too many connections still in their PROXY header (2)"])
      // a pending one that completes its header goes on to the handler, and frees its place
      a.sock.write(bytes(v1 + "hello\n"))
      yield* promise(() => sleep(100))
      const d = yield* promise(() => tcp(bound.endpoint))
      yield* promise(() => sleep(50))
      expect(rejects.length).toBe(1)
      for (const x of [a, b, d]) x.sock.destroy()
    }))
  })

  it("refuses an invalid trusted-peer list at listen time", async () => {
    const err = await run(Effect.flip(listen({ endpoint: loopback, proxyProtocol: { trusted: ["10.0.0.0/33"] } }, echo)))
    expect(err.reason).toBe("Listen")
  })

  describe("behind a real haproxy", () => {
    let haproxy: Haproxy | undefined
    afterAll(async () => {
      await haproxy?.stop()
    })

    it("takes send-proxy (v1) and send-proxy-v2 headers", async () => {
      const seen: Array<Seen> = []
      const rejects: Array<string> = []
      await run(Effect.gen(function*() {
        const bound = yield* proxyListen(seen, rejects)
        const backend = { host: "127.0.0.1", port: portOf(bound.endpoint) }
        haproxy = yield* promise(() =>
          startHaproxy([
            { backend, proxy: "v1" },
            { backend, proxy: "v2" }
          ])
        )
        const [p1, p2] = haproxy.ports
        for (const [port, version] of [[p1!, 1], [p2!, 2]] as const) {
          const client = yield* promise(() => Client.connect({ host: "127.0.0.1", port }))
          yield* promise(() => client.waitFor("\r\n"))
          expect(client.text).toBe(`v${version} 127.0.0.1:${client.sock.localPort} 127.0.0.1:${port}\r\n`)
          client.write("EHLO through.haproxy\r\n")
          yield* promise(() => client.waitFor("EHLO through.haproxy\r\n"))
          client.sock.end()
          yield* promise(() => client.waitClosed())
        }
        expect(rejects).toEqual([])
        expect(seen.map((s) => s.proxied?.version)).toEqual([1, 2])
        const v1Seen = seen.find((s) => s.proxied?.version === 1)
        expect(v1Seen?.first).toBe("EHLO through.haproxy\r\n")
      }))
      await haproxy?.stop()
      haproxy = undefined
    })
  })
})

describe("NodeTransport layers", () => {
  it("provides both services and keeps connection ids unique across listeners", async () => {
    const ids: Array<number> = []
    await run(Effect.gen(function*() {
      const a = yield* listen({ endpoint: loopback }, (c) => (ids.push(c.id), echo(c)))
      const b = yield* listen({ endpoint: loopback }, (c) => (ids.push(c.id), echo(c)))
      const ca1 = yield* connect({ endpoint: a.endpoint })
      const cb1 = yield* connect({ endpoint: b.endpoint })
      yield* ca1.write(bytes("x\r\n"))
      yield* cb1.write(bytes("y\r\n"))
      expect(yield* readUntil(ca1, "\r\n")).toBe("x\r\n")
      expect(yield* readUntil(cb1, "\r\n")).toBe("y\r\n")
      expect(ca1.id).not.toBe(cb1.id)
    }))
    expect(new Set(ids).size).toBe(2)
  })
})
