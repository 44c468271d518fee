/**
 * One outbound SMTP or LMTP connection: the driver that runs the pure client
 * session (`ClientSession`) over a `Connector` connection. It dials (with a
 * time limit), runs the handshake (banner, EHLO/LHLO, STARTTLS, AUTH) until
 * the session is `Ready`, delivers messages one at a time, and QUITs.
 *
 * - Reads: at most one `read` of the transport is outstanding, in a fiber of
 *   the connection's scope; the driver waits for it against the session's
 *   deadline (`ClientSession.deadline`), and a timed-out wait leaves the read
 *   running rather than interrupting it, so no received byte is ever lost.
 *   While the connection is idle in a pool the same pending read is the
 *   stale-connection check: if it completes (an unsolicited 421, or EOF)
 *   the connection is not reused.
 * - STARTTLS: the handshake starts right after the session asks for it, with
 *   no read outstanding, so plaintext the server pipelined after its 220 is
 *   discarded by the transport (and by the session), never read as a reply.
 *   Certificates are always checked and the verdict recorded; with
 *   `verify` (required or implicit TLS) a certificate that does not verify
 *   ends the connection before anything is sent over it.
 * - Failures: a refused connection is `451 4.4.1 Connection refused by
 *   <host:port>`, a connect timeout `421 4.4.2 Connection timed out`, a
 *   failed TLS handshake `421 4.7.0`; the session's own failures (421
 *   greetings, timeouts, lost connections, AUTH refusals) keep its reply.
 *   With `fallback`, an opportunistic STARTTLS whose handshake failed is
 *   retried once on a new plaintext connection.
 *
 * What it deliberately does not do: choose hosts (MX), pool connections
 * (`Pool`), decide what a message needs (`SmtpDelivery` downgrades it), or
 * interpret results for the queue.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Transport from "../edge/Transport.ts"
import * as ClientSession from "../smtp/ClientSession.ts"
import type * as Extensions from "../smtp/Extensions.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Bytes from "../wire/Bytes.ts"

/** How TLS is used: never, STARTTLS when offered, STARTTLS or fail, or TLS from the first byte (port 465). */
export type TlsMode = "none" | "opportunistic" | "required" | "implicit"

/** TLS settings of a connection. */
export interface TlsOptions {
  readonly mode: TlsMode
  /**
   * With `required` or `implicit`: a certificate that does not verify (chain
   * and name) fails the connection. Opportunistic TLS never fails on it; the
   * verdict is recorded either way.
   */
  readonly verify: boolean
  /** Opportunistic only: after a failed handshake, dial again without TLS. */
  readonly fallback: boolean
  /** Extra trusted CAs, PEM. */
  readonly ca?: ReadonlyArray<string> | undefined
}

/** What `open` dials and how it talks. */
export interface Options {
  readonly endpoint: Transport.Endpoint
  /** The name the certificate must match (and SNI when it is not an IP address); undefined: none. */
  readonly servername: string | undefined
  readonly tls: TlsOptions
  /** Session settings; `tls` and `implicitTls` are set from `tls`. */
  readonly session: ClientSession.Config
  readonly connectTimeoutMs: number
  readonly localAddress?: string | undefined
}

/** Why a connection could not be made ready. */
export type OpenFailureReason = "connect" | "connect-timeout" | ClientSession.FailureReason

/** The connection could not be made ready; `reply` says why (always 4xx or 5xx). */
export class OpenFailure extends Data.TaggedError("OpenFailure")<{
  readonly reason: OpenFailureReason
  readonly reply: Reply.Reply
  /** The TLS verdict of the attempt (see `describeTls`). */
  readonly tls: string
}> {}

/** The answer to one message. */
export interface SendResult {
  readonly result: ClientSession.Result
  /** Set when the session failed during this message (the connection is then closed). */
  readonly failure: ClientSession.Failure | undefined
}

/** A ready connection. Use it from one fiber at a time. */
export interface SmtpConnection {
  readonly endpoint: Transport.Endpoint
  readonly servername: string | undefined
  /** What the server advertised after the last EHLO/LHLO. */
  readonly extensions: () => Extensions.Extensions
  /** The TLS verdict, e.g. `TLSv1.3 verified` (see `describeTls`). */
  readonly tls: () => string
  /** Idle and open: the next `send` starts at once. */
  readonly isReady: () => boolean
  /** Messages sent on this connection so far. */
  readonly messages: () => number
  /** Sends one message and waits until the session is idle again (or closed). */
  readonly send: (message: ClientSession.Message) => Effect.Effect<SendResult>
  /** While idle: completes when the server sends anything or closes (the connection is then stale). */
  readonly idle: Effect.Effect<void>
  /** Before reuse: true when the connection is ready and nothing arrived while it was idle. */
  readonly poll: Effect.Effect<boolean>
  /** QUIT, wait for the 221 (bounded by the session's quit timeout), close. */
  readonly quit: Effect.Effect<void>
}

/**
 * The TLS verdict for logs and `RelayResult.tls`: `none`, `TLSv1.3
 * verified`, or `TLSv1.3 unverified: <reason>`.
 */
export const describeTls = (info: Transport.TlsInfo | undefined): string =>
  info === undefined
    ? "none"
    : info.authorized === true
    ? `${info.version} verified`
    : `${info.version} unverified: ${info.authorizationError ?? "not checked"}`

/** `451 4.4.1 Connection refused by <host:port>` and friends, from a transport error. */
export const connectFailure = (endpoint: Transport.Endpoint, error: Transport.TransportError): OpenFailure => {
  const where = Transport.formatEndpoint(endpoint)
  const cause = error.cause as { readonly code?: unknown; readonly name?: unknown } | undefined
  const code = typeof cause === "object" && cause !== null ? cause.code ?? cause.name : undefined
  switch (error.reason) {
    case "Timeout":
      return new OpenFailure({
        reason: "connect-timeout",
        reply: Reply.make(421, "4.4.2", `Connection timed out: ${where}`),
        tls: "none"
      })
    case "TlsHandshake":
      return new OpenFailure({
        reason: "tls-failed",
        reply: Reply.make(421, "4.7.0", `TLS handshake with ${where} failed: ${clean(error.message)}`),
        tls: "none"
      })
    default: {
      const refused = code === "ECONNREFUSED" || code === "ConnectionRefused" || /ECONNREFUSED|refused/i.test(error.message)
      const text = refused ? `Connection refused by ${where}` : `Connection to ${where} failed: ${clean(error.message)}`
      return new OpenFailure({ reason: "connect", reply: Reply.make(451, "4.4.1", text), tls: "none" })
    }
  }
}

/** A message text safe for a reply line. */
const clean = (s: string): string => s.replace(/[\u0000-\u001f\u007f]+/g, " ").slice(0, 300)

type Batch = ReadonlyArray<Uint8Array> | null

const eof: ClientSession.Input = { _tag: "Eof" }

/**
 * Dials `options.endpoint` and runs the handshake until the session is ready.
 * The connection lives in the current scope: closing it destroys the socket.
 */
export const open = (
  options: Options
): Effect.Effect<SmtpConnection, OpenFailure, Scope.Scope | Transport.Connector> =>
  Effect.gen(function*() {
    const first = yield* Effect.exit(dial(options, options.tls.mode, undefined))
    if (Exit.isSuccess(first)) return first.value
    const failure = Option.getOrUndefined(Exit.findErrorOption(first))
    if (
      failure !== undefined && failure.reason === "tls-failed" && options.tls.mode === "opportunistic" &&
      options.tls.fallback
    ) {
      return yield* dial(options, "none", `none (TLS failed, retried in clear: ${Reply.toString(failure.reply)})`)
    }
    return yield* first
  })

const dial = (
  options: Options,
  mode: TlsMode,
  tlsNote: string | undefined
): Effect.Effect<SmtpConnection, OpenFailure, Scope.Scope | Transport.Connector> =>
  Effect.gen(function*() {
    const connector = yield* Transport.Connector
    const scope = yield* Effect.scope
    const { endpoint, servername } = options
    const clientTls: Transport.ClientTlsOptions = {
      ...(servername !== undefined ? { servername } : {}),
      rejectUnauthorized: false,
      ...(options.tls.ca !== undefined ? { ca: options.tls.ca } : {})
    }
    const enforce = options.tls.verify && (mode === "required" || mode === "implicit")
    const conn = yield* connector.connect({
      endpoint,
      timeoutMs: options.connectTimeoutMs,
      ...(mode === "implicit" ? { tls: clientTls } : {}),
      ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {})
    }).pipe(Effect.mapError((e) => connectFailure(endpoint, e)))
    const implicitInfo = conn.tls()
    if (enforce && mode === "implicit" && implicitInfo?.authorized !== true) {
      yield* conn.destroy
      const who = servername ?? Transport.formatEndpoint(endpoint)
      const why = clean(implicitInfo?.authorizationError ?? "no TLS")
      return yield* new OpenFailure({
        reason: "tls-failed",
        reply: Reply.make(421, "4.7.0", `TLS certificate of ${who} not verified: ${why}`),
        tls: describeTls(implicitInfo)
      })
    }

    const config: ClientSession.Config = {
      ...options.session,
      tls: mode === "implicit" ? "none" : mode,
      implicitTls: mode === "implicit"
    }
    let state = ClientSession.initial(config, { tls: implicitInfo })
    let reader: Fiber.Fiber<Batch, Transport.TransportError> | undefined
    const results: Array<ClientSession.Result> = []
    let failure: ClientSession.Failure | undefined
    let closed = false
    let sent = 0
    /** The last TLS facts seen, including a handshake that was refused for its certificate. */
    let lastTls: Transport.TlsInfo | undefined = implicitInfo

    /** Performs a step's outputs; returns the input they produced (a TLS outcome, or EOF after a failed write). */
    const perform = (outputs: ReadonlyArray<ClientSession.Output>): Effect.Effect<ClientSession.Input | undefined> =>
      Effect.gen(function*() {
        let broken = false
        for (const o of outputs) {
          switch (o._tag) {
            case "Send":
              if (!broken) broken = Exit.isFailure(yield* Effect.exit(conn.write(o.bytes)))
              break
            case "StartTls": {
              if (broken) return eof
              const r = yield* Effect.exit(conn.startTls(clientTls))
              if (Exit.isFailure(r)) {
                const e = Option.getOrUndefined(Exit.findErrorOption(r))
                return { _tag: "TlsFailed", reason: clean(e?.message ?? "interrupted") }
              }
              lastTls = r.value
              if (enforce && r.value.authorized !== true) {
                yield* conn.destroy
                return { _tag: "TlsFailed", reason: `certificate not verified: ${clean(r.value.authorizationError ?? "unknown")}` }
              }
              return { _tag: "TlsEstablished", tls: r.value }
            }
            case "Result":
              results.push(o.result)
              break
            case "Failed":
              failure = o.failure
              break
            case "Close":
              closed = true
              yield* o.reason === "quit" ? conn.close : conn.destroy
              break
            case "Event":
              yield* Effect.logDebug(`smtp client: ${o.event._tag}`).pipe(
                Effect.annotateLogs({ remote: Transport.formatEndpoint(endpoint) })
              )
              break
            case "Ready":
              break
          }
        }
        return broken && !closed ? eof : undefined
      })

    const apply = (step: ClientSession.Step): Effect.Effect<void> =>
      Effect.gen(function*() {
        state = step.state
        let next = yield* perform(step.outputs)
        while (next !== undefined) {
          const now = yield* Clock.currentTimeMillis
          const s = ClientSession.step(state, next, now)
          state = s.state
          next = yield* perform(s.outputs)
        }
      })

    const feed = (input: ClientSession.Input): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => apply(ClientSession.step(state, input, now)))

    /** The next input from the server: bytes, EOF, or the deadline passing. */
    const readNext: Effect.Effect<ClientSession.Input> = Effect.gen(function*() {
      if (reader === undefined) reader = yield* Effect.forkIn(conn.read, scope)
      const deadline = ClientSession.deadline(state)
      let exit: Exit.Exit<Batch, Transport.TransportError>
      if (deadline === undefined) {
        exit = yield* Fiber.await(reader)
      } else {
        const now = yield* Clock.currentTimeMillis
        const waited = yield* Effect.timeoutOption(Fiber.await(reader), Math.max(0, deadline.at - now))
        if (Option.isNone(waited)) return { _tag: "Timeout" }
        exit = waited.value
      }
      reader = undefined
      if (Exit.isSuccess(exit) && exit.value !== null) return { _tag: "Received", bytes: Bytes.concat(exit.value) }
      return eof
    })

    /** Feeds server input until the session is idle or closed. */
    const settle: Effect.Effect<void> = Effect.gen(function*() {
      while (!closed && !ClientSession.isReady(state)) yield* feed(yield* readNext)
    })

    yield* apply(ClientSession.start(state, yield* Clock.currentTimeMillis))
    yield* settle
    const tlsText = (): string => tlsNote ?? describeTls(state.tls ?? lastTls)
    if (closed || !ClientSession.isReady(state)) {
      const f = failure ?? { reason: "connection-lost" as const, reply: Reply.make(451, "4.3.0", "Connection lost") }
      return yield* new OpenFailure({ reason: f.reason, reply: f.reply, tls: tlsText() })
    }

    const staleRead = (): boolean => reader !== undefined && reader.pollUnsafe() !== undefined

    const connection: SmtpConnection = {
      endpoint,
      servername,
      extensions: () => ClientSession.extensions(state),
      tls: tlsText,
      isReady: () => !closed && ClientSession.isReady(state),
      messages: () => sent,
      send: (message) =>
        Effect.gen(function*() {
          const before = results.length
          const failureBefore = failure
          yield* feed({ _tag: "Send", message })
          yield* settle
          sent++
          const result = results[before] ?? {
            recipients: message.recipients.map((r) => ({
              address: r.address,
              outcome: "transient" as const,
              reply: failure?.reply ?? Reply.make(451, "4.3.0", "Connection lost")
            })),
            tls: state.tls,
            auth: undefined,
            dataSent: false,
            local: true
          }
          return { result, failure: failure !== failureBefore ? failure : undefined }
        }),
      idle: Effect.gen(function*() {
        if (closed || !ClientSession.isReady(state)) return
        if (reader === undefined) reader = yield* Effect.forkIn(conn.read, scope)
        yield* Fiber.await(reader)
      }),
      poll: Effect.sync(() => !closed && ClientSession.isReady(state) && !staleRead()),
      quit: Effect.gen(function*() {
        if (closed) return
        if (staleRead() || !ClientSession.isReady(state)) {
          closed = true
          return yield* conn.destroy
        }
        yield* feed({ _tag: "Quit" })
        while (!closed) yield* feed(yield* readNext)
      })
    }
    return connection
  })
