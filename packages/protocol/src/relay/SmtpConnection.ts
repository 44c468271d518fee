/**
 * One outbound SMTP or LMTP connection: the driver that runs the pure client
 * session (`ClientSession`) over a `Connector` connection. It dials (with a
 * time limit), runs the handshake (banner, EHLO/LHLO, STARTTLS, AUTH) until
 * the session is `Ready`, delivers messages one at a time, and QUITs.
 *
 * - Reads: `readWithin` of the transport with the session's deadline
 *   (`ClientSession.deadline`): the deadline rides on the connection's own
 *   timer, nothing is forked per read, and a timed-out read loses no byte
 *   (what arrives later is returned by the next read). While the connection
 *   is idle in a pool, `watch` is such a read bounded by the pool's idle
 *   time: if it returns data or EOF (an unsolicited 421, a close) the
 *   connection is stale and is not reused; `poll` looks once more, without
 *   waiting, before reuse.
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
  /**
   * While idle: waits at most `ms` for the server. `"stale"` when it sent
   * anything or closed (the connection is then unusable), `"timeout"` when
   * `ms` passed in silence. Interrupting it loses nothing.
   */
  readonly watch: (ms: number) => Effect.Effect<"stale" | "timeout">
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

const eof: ClientSession.Input = { _tag: "Eof" }
const timedOut: ClientSession.Input = { _tag: "Timeout" }
const succeedEof: Effect.Effect<ClientSession.Input | undefined> = Effect.succeed(eof)
const succeedNothing: Effect.Effect<ClientSession.Input | undefined> = Effect.succeed(undefined)

/** A transport error while reading is the end of the stream for the session. */
const readOf = (conn: Transport.Connection, ms: number | undefined): Effect.Effect<Transport.ReadResult> =>
  Effect.orElseSucceed(conn.readWithin(ms), () => null)

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
    /** The server talked or closed while the connection was idle: never reuse it. */
    let stale = false
    const results: Array<ClientSession.Result> = []
    let failure: ClientSession.Failure | undefined
    let closed = false
    let sent = 0
    /** The last TLS facts seen, including a handshake that was refused for its certificate. */
    let lastTls: Transport.TlsInfo | undefined = implicitInfo

    // The per-message path (perform, apply, feed, settle, send) is written as
    // plain `flatMap` chains, not generators: it runs several times per
    // message, and a generator with its iterators costs more than the step.

    const startTls: Effect.Effect<ClientSession.Input> = Effect.gen(function*() {
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
    })

    /**
     * Performs a step's outputs from `i` on; returns the input they produced
     * (a TLS outcome, or EOF after a failed write).
     */
    const perform = (
      outputs: ReadonlyArray<ClientSession.Output>,
      i: number,
      broken: boolean
    ): Effect.Effect<ClientSession.Input | undefined> => {
      for (; i < outputs.length; i++) {
        const o = outputs[i]!
        switch (o._tag) {
          case "Send": {
            if (broken) break
            const next = i + 1
            return Effect.flatMap(Effect.exit(conn.write(o.bytes)), (exit) => perform(outputs, next, Exit.isFailure(exit)))
          }
          case "StartTls":
            return broken ? succeedEof : startTls
          case "Result":
            results.push(o.result)
            break
          case "Failed":
            failure = o.failure
            break
          case "Close": {
            closed = true
            const next = i + 1
            return Effect.flatMap(o.reason === "quit" ? conn.closeAfterQuit : conn.destroy, () => perform(outputs, next, broken))
          }
          case "Event": {
            const next = i + 1
            return Effect.flatMap(
              Effect.logDebug(`smtp client: ${o.event._tag}`).pipe(Effect.annotateLogs({ remote: Transport.formatEndpoint(endpoint) })),
              () => perform(outputs, next, broken)
            )
          }
          case "Ready":
            break
        }
      }
      return broken && !closed ? succeedEof : succeedNothing
    }

    /** Feeds what performing produced back into the session until nothing is left. */
    const feedBack = (next: ClientSession.Input | undefined): Effect.Effect<void> =>
      next === undefined ? Effect.void : feed(next)

    const apply = (step: ClientSession.Step): Effect.Effect<void> => {
      state = step.state
      return Effect.flatMap(perform(step.outputs, 0, false), feedBack)
    }

    const feed = (input: ClientSession.Input): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => apply(ClientSession.step(state, input, now)))

    /** The next input from the server: bytes, EOF, or the deadline passing. */
    const readNext: Effect.Effect<ClientSession.Input> = Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const deadline = ClientSession.deadline(state)
      return Effect.flatMap(
        readOf(conn, deadline === undefined ? undefined : Math.max(0, deadline.at - now)),
        (r): Effect.Effect<ClientSession.Input> =>
          r === null
            ? Effect.succeed(eof)
            : r === "timeout"
            ? Effect.succeed(timedOut)
            : r === "woken"
            ? readNext // nobody wakes a client connection; read on
            : Effect.succeed({ _tag: "Received", bytes: r.length === 1 ? r[0]! : Bytes.concat(r) })
      )
    })

    /** Feeds server input until the session is idle or closed. */
    const settle: Effect.Effect<void> = Effect.suspend(() =>
      closed || ClientSession.isReady(state) ? Effect.void : Effect.flatMap(Effect.flatMap(readNext, feed), () => settle)
    )

    yield* apply(ClientSession.start(state, yield* Clock.currentTimeMillis))
    yield* settle
    const tlsText = (): string => tlsNote ?? describeTls(state.tls ?? lastTls)
    if (closed || !ClientSession.isReady(state)) {
      const f = failure ?? { reason: "connection-lost" as const, reply: Reply.make(451, "4.3.0", "Connection lost") }
      return yield* new OpenFailure({ reason: f.reason, reply: f.reply, tls: tlsText() })
    }

    const connection: SmtpConnection = {
      endpoint,
      servername,
      extensions: () => ClientSession.extensions(state),
      tls: tlsText,
      isReady: () => !closed && ClientSession.isReady(state),
      messages: () => sent,
      send: (message) =>
        Effect.suspend(() => {
          const before = results.length
          const failureBefore = failure
          return Effect.map(Effect.flatMap(feed({ _tag: "Send", message }), () => settle), (): SendResult => {
            sent++
            // results are kept only until their send has read them
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
            if (before === 0) results.length = 0
            return { result, failure: failure !== failureBefore ? failure : undefined }
          })
        }),
      watch: (ms) =>
        Effect.suspend(() => {
          if (stale || closed || !ClientSession.isReady(state)) return Effect.succeed("stale" as const)
          return Effect.map(readOf(conn, ms), (r) => {
            if (r === "timeout" || r === "woken") return "timeout" as const
            stale = true
            return "stale" as const
          })
        }),
      poll: Effect.suspend(() => {
        if (stale || closed || !ClientSession.isReady(state)) return Effect.succeed(false)
        // anything that arrived while idle, or an end of stream, is already buffered
        return Effect.map(readOf(conn, 0), (r) => {
          if (r === "timeout" || r === "woken") return true
          stale = true
          return false
        })
      }),
      quit: Effect.gen(function*() {
        if (closed) return
        if (stale || !ClientSession.isReady(state)) {
          closed = true
          return yield* conn.destroy
        }
        yield* feed({ _tag: "Quit" })
        while (!closed) yield* feed(yield* readNext)
      })
    }
    return connection
  })
