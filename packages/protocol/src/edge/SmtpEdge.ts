/**
 * The SMTP edge: drives one pure `ServerSession` per connection over the
 * `Listener` service, answers its questions with the validators, the
 * credentials service and the queue, and keeps the limits that span
 * connections (connections in total and per client, AUTH failures per client,
 * open relaying).
 *
 * The loop per connection is the measured lean shape: one fiber, one read of
 * every buffered chunk, one synchronous `step` over the whole batch, one write
 * of all its replies; Effects only where something is really asynchronous
 * (policies, storage, TLS, the clock).
 *
 * The one promise: the session sends `250` after DATA only when the queue
 * answered `Queued`, which it does only once the message is on stable
 * storage. A queue failure or a defect anywhere in the policies or the queue
 * becomes `451 4.3.0`; the connection and the process go on.
 *
 * What it deliberately does not do: open sockets (the Listener does), store
 * or relay (the Queue does), or add trace headers (queue policies do).
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as CredentialsService from "../auth/CredentialsService.ts"
import type * as Sasl from "../auth/Sasl.ts"
import * as Envelope from "../envelope/Envelope.ts"
import * as Decision from "../policy/Decision.ts"
import * as Validators from "../policy/Validators.ts"
import * as Queue from "../queue/Queue.ts"
import * as Address from "../smtp/Address.ts"
import * as Reply from "../smtp/Reply.ts"
import type { Facts, Input, Output, Question } from "../smtp/ServerModel.ts"
import * as ServerSession from "../smtp/ServerSession.ts"
import * as Bytes from "../wire/Bytes.ts"
import * as Transport from "./Transport.ts"

export interface Options<R = never> {
  /** A name for logs, e.g. "smtp" or "submission". */
  readonly name?: string
  readonly listen: Transport.ListenOptions
  /** Session settings; `hostname` is required. `startTls` defaults to whether certificates were given. */
  readonly session: Partial<ServerSession.Config> & { readonly hostname: string }
  readonly validators?: Validators.Validators<R>
  /** Connections at once; more get `421 4.7.0` [1000]. */
  readonly maxConnections?: number
  /** Connections at once from one client address [20]. */
  readonly maxConnectionsPerClient?: number
  /** AUTH failures per client address within a window before AUTH answers 454 [10 per 10 min]. */
  readonly authFailures?: { readonly max: number; readonly windowMs: number }
  /**
   * Domains we accept mail for. When set, a client that has not authenticated
   * may only send to these (550 5.7.1 Relaying denied otherwise): the edge is
   * never an open relay by accident. Unset: every recipient is accepted.
   */
  readonly localDomains?: ReadonlyArray<string>
  /** How long sessions in DATA get to finish on shutdown before they are cut [30 s]. */
  readonly shutdownGraceMs?: number
}

/** A running edge. */
export interface SmtpEdge {
  readonly endpoint: Transport.Endpoint
  /** Connections being served now. */
  readonly connections: Effect.Effect<number>
  /** Stop accepting, let messages in flight finish within the grace, 421 the rest, then close. */
  readonly shutdown: Effect.Effect<void>
  readonly setTls: (config: Transport.ServerTlsConfig) => Effect.Effect<void, Transport.TransportError>
}

interface Shared {
  active: number
  readonly perClient: Map<string, number>
  readonly authFailures: Map<string, Array<number>>
  shuttingDown: boolean
}

/** The address policies and limits see: the PROXY source when trusted, else the socket peer. */
export const clientAddress = (conn: Transport.Connection): string =>
  conn.proxied?.source?.address ?? (conn.remote._tag === "Inet" ? conn.remote.address : `unix:${conn.remote.path}`)

const encodeReply = (r: Reply.Reply): Uint8Array => Reply.encode(r)

/**
 * Starts an SMTP/LMTP edge in the current scope. Closing the scope stops it
 * abruptly; `shutdown` stops it gracefully.
 */
export const make = <R = never>(
  options: Options<R>
): Effect.Effect<
  SmtpEdge,
  Transport.TransportError,
  Scope.Scope | Transport.Listener | Queue.Queue | CredentialsService.CredentialsService | R
> =>
  Effect.gen(function*() {
    const listener = yield* Transport.Listener
    const queue = yield* Queue.Queue
    const credentials = yield* CredentialsService.CredentialsService
    const services = yield* Effect.context<R>()
    const validators = options.validators ?? (Validators.none as Validators.Validators<R>)
    const name = options.name ?? "smtp"
    const config = ServerSession.config({
      startTls: options.listen.tls !== undefined && options.listen.implicitTls !== true,
      ...options.session,
      ask: {
        ...Validators.askHooks(validators),
        rcpt: validators.rcpt !== undefined || options.localDomains !== undefined
      }
    })
    const maxConnections = options.maxConnections ?? 1000
    const maxPerClient = options.maxConnectionsPerClient ?? 20
    const authLimit = options.authFailures ?? { max: 10, windowMs: 600_000 }
    const grace = options.shutdownGraceMs ?? 30_000
    const local = options.localDomains?.map((d) => d.toLowerCase())
    const shared: Shared = { active: 0, perClient: new Map(), authFailures: new Map(), shuttingDown: false }
    const shutdownSignal = yield* Deferred.make<void>()
    const idle = yield* Deferred.make<void>()

    const recentAuthFailures = (client: string, now: number): number => {
      const list = shared.authFailures.get(client)
      if (!list) return 0
      const recent = list.filter((t) => now - t < authLimit.windowMs)
      if (recent.length === 0) shared.authFailures.delete(client)
      else shared.authFailures.set(client, recent)
      return recent.length
    }

    /**
     * Remembers an AUTH failure. The table is bounded: past `maxTracked`
     * clients, expired entries are swept, then the oldest are dropped (a
     * flood of addresses can cost memory only up to the cap).
     */
    const maxTracked = 10_000
    const recordAuthFailure = (client: string, now: number): void => {
      const list = shared.authFailures.get(client) ?? []
      list.push(now)
      if (list.length > authLimit.max) list.splice(0, list.length - authLimit.max)
      shared.authFailures.delete(client) // re-insert: Map order is then least recently failed first
      shared.authFailures.set(client, list)
      if (shared.authFailures.size <= maxTracked) return
      for (const [c, l] of shared.authFailures) {
        if (l.every((t) => now - t >= authLimit.windowMs)) shared.authFailures.delete(c)
      }
      for (const c of shared.authFailures.keys()) {
        if (shared.authFailures.size <= maxTracked) break
        shared.authFailures.delete(c)
      }
    }

    /** Answers one question of the session; never fails (a defect becomes a temporary refusal). */
    const answer = (question: Question, client: string, now: number): Effect.Effect<Input, never, R> => {
      const decision = (e: Effect.Effect<Decision.Decision, never, R> | undefined): Effect.Effect<Input, never, R> =>
        e === undefined
          ? Effect.succeed({ _tag: "Decision", decision: Decision.accept })
          : Effect.map(e, (d): Input => ({ _tag: "Decision", decision: d }))
      switch (question._tag) {
        case "Connect":
          return decision(validators.connect?.(question.facts))
        case "Ehlo":
          return decision(validators.ehlo?.(question.facts, question.domain))
        case "Mail":
          return decision(validators.mail?.(question.facts, question.sender, question.params))
        case "Rcpt": {
          if (local && !question.facts.auth && !isLocal(question.recipient, local)) {
            return Effect.succeed({ _tag: "Decision", decision: Decision.reject(Reply.relayDenied) })
          }
          return decision(validators.rcpt?.(question.facts, question.recipient, question.params))
        }
        case "Data":
          return decision(validators.data?.(question.facts))
        case "Auth":
          return authAnswer(question.facts, question.mechanism, question.request, client, now)
        case "Message":
          return messageAnswer(question, now)
      }
    }

    const authAnswer = (
      facts: Facts,
      mechanism: Sasl.Mechanism,
      request: Sasl.CredentialRequest,
      client: string,
      now: number
    ): Effect.Effect<Input, never, R> =>
      Effect.gen(function*() {
        if (recentAuthFailures(client, now) >= authLimit.max) {
          yield* Effect.logWarning("auth refused: too many failures").pipe(Effect.annotateLogs({ edge: name, client }))
          return { _tag: "Credentials", answer: { _tag: "Unavailable" } } satisfies Input
        }
        let result = yield* credentials.answer(request)
        const failed = (result._tag === "Verified" && !result.ok) ||
          (result._tag === "Secret" && result.password === undefined) ||
          (result._tag === "Scram" && result.credentials === undefined)
        if (!failed && result._tag === "Verified" && validators.auth) {
          const authzid = request._tag === "VerifyPassword" ? request.authzid : undefined
          const d = yield* validators.auth(facts, { mechanism, authcid: request.authcid, authzid })
          if (d._tag === "Reject") result = { _tag: "Verified", ok: false }
        }
        return { _tag: "Credentials", answer: result } satisfies Input
      })

    const messageAnswer = (question: Extract<Question, { _tag: "Message" }>, now: number): Effect.Effect<Input, never, R> =>
      Effect.gen(function*() {
        let envelope = toEnvelope(question, config, now)
        if (validators.message) {
          const d = yield* validators.message(question.facts, envelope)
          if (d._tag === "Reject") return { _tag: "Delivered", replies: [d.reply] } satisfies Input
          for (const [header, value] of [...d.headers].reverse()) envelope = Envelope.prependHeader(envelope, header, value)
        }
        const result = yield* queue.enqueue(envelope)
        const replies = config.mode === "lmtp"
          ? Queue.replies(result, envelope.recipients.length)
          : [Queue.smtpReply(result)]
        if (validators.queued) {
          yield* validators.queued(question.facts, envelope, {
            replies,
            ids: result._tag === "Queued" ? result.ids : []
          })
        }
        yield* Effect.logInfo("message").pipe(
          Effect.annotateLogs({
            edge: name,
            client: question.facts.remote._tag === "Inet" ? question.facts.remote.address : "unix",
            id: result._tag === "Queued" ? result.ids.join(",") : "-",
            from: envelope.sender,
            to: envelope.recipients.join(","),
            size: envelope.message.length,
            protocol: envelope.client.protocol,
            reply: Reply.toString(replies[0]!)
          })
        )
        return { _tag: "Delivered", replies } satisfies Input
      })

    /** One connection, start to end; the `close` hook runs however it ended. */
    const session = (conn: Transport.Connection, client: string): Effect.Effect<void, Transport.TransportError, R> => {
      let state: ServerSession.State | undefined
      const closeHook = validators.close
      const run = Effect.gen(function*() {
        const start = yield* Clock.currentTimeMillis
        state = ServerSession.initial(config, {
          remote: conn.remote,
          local: conn.local,
          proxied: conn.proxied,
          tls: conn.tls()
        })
        const started = ServerSession.start(state, start)
        state = started.state
        let outputs: ReadonlyArray<Output> = started.outputs
        let shutdownSent = false
        let messages = 0
        let closeReason = "eof"
        for (;;) {
          let next: Input | undefined
          for (const o of outputs) {
            switch (o._tag) {
              case "Send": {
                // A client that stops reading its replies must not hold the connection
                // forever: a write blocked by back-pressure for a command timeout ends it.
                // (An unblocked write completes at once; no timer is armed then.)
                const sent = yield* Effect.timeoutOption(conn.write(o.bytes), config.commandTimeoutMs)
                if (Option.isNone(sent)) {
                  yield* Effect.logInfo("session").pipe(
                    Effect.annotateLogs({ edge: name, client, messages, close: "write-timeout" })
                  )
                  yield* conn.destroy
                  return
                }
                break
              }
              case "Ask": {
                const now = yield* Clock.currentTimeMillis
                next = yield* answer(o.question, client, now).pipe(
                  Effect.catchCause((cause) =>
                    Effect.as(
                      Effect.logError("policy or queue failure").pipe(
                        Effect.annotateLogs({ edge: name, client, cause: Cause.pretty(cause) })
                      ),
                      failureInput(o.question)
                    )
                  )
                )
                if (o.question._tag === "Message") messages++
                if (o.question._tag === "Connect") {
                  // RFC 5321 §4.3.1: bytes that arrived while the connect policy ran were sent
                  // before the banner; the session must see them before the answer.
                  const early = yield* Effect.raceFirst(conn.read, Effect.succeed(null))
                  if (early !== null) {
                    state = ServerSession.step(state, { _tag: "Received", bytes: Bytes.concat(early) }, now).state
                  }
                }
                break
              }
              case "StartTls":
                next = yield* conn.startTls().pipe(
                  Effect.map((tls): Input => ({ _tag: "TlsEstablished", tls })),
                  Effect.catch((e) => Effect.succeed<Input>({ _tag: "TlsFailed", reason: e.message }))
                )
                break
              case "Event":
                if (o.event._tag === "AuthFailed" && o.event.reply.code === 535) {
                  const now = yield* Clock.currentTimeMillis
                  recordAuthFailure(client, now)
                }
                if (o.event._tag === "CommandRejected" || o.event._tag === "AuthFailed") {
                  yield* Effect.logDebug(o.event._tag).pipe(
                    Effect.annotateLogs({ edge: name, client, reply: Reply.toString(o.event.reply) })
                  )
                }
                break
              case "Close":
                closeReason = o.reason
                yield* Effect.logInfo("session").pipe(
                  Effect.annotateLogs({
                    edge: name,
                    client,
                    ehlo: state.hello?.domain ?? "-",
                    tls: state.tls?.version ?? "-",
                    auth: state.auth?.authcid ?? "-",
                    messages,
                    close: closeReason
                  })
                )
                yield* conn.close
                return
            }
          }
          if (next === undefined) {
            const deadline = ServerSession.deadline(state)
            const now = yield* Clock.currentTimeMillis
            const reads: Array<Effect.Effect<Input, Transport.TransportError>> = [
              Effect.map(conn.read, (chunks): Input =>
                chunks === null
                  ? { _tag: "Eof" }
                  : { _tag: "Received", bytes: chunks.length === 1 ? chunks[0]! : Bytes.concat(chunks) })
            ]
            if (deadline) reads.push(Effect.as(Effect.sleep(Math.max(0, deadline.at - now)), { _tag: "Timeout" } as Input))
            if (!shutdownSent) reads.push(Effect.as(Deferred.await(shutdownSignal), { _tag: "Shutdown" } as Input))
            next = reads.length === 1 ? yield* reads[0]! : yield* Effect.raceAll(reads)
            if (next._tag === "Shutdown") shutdownSent = true
          }
          const now = yield* Clock.currentTimeMillis
          const r = ServerSession.step(state, next, now)
          state = r.state
          outputs = r.outputs
          if (outputs.length === 0 && ServerSession.isClosed(state)) return
        }
      })
      return closeHook === undefined ? run : run.pipe(
        Effect.ensuring(Effect.suspend(() =>
          state === undefined ? Effect.void : Effect.catchCause(closeHook(ServerSession.facts(state)), () => Effect.void)
        ))
      )
    }

    const handler = (conn: Transport.Connection): Effect.Effect<void> => {
      const client = clientAddress(conn)
      const refuse = (reply: Reply.Reply, why: string) =>
        Effect.gen(function*() {
          yield* Effect.logInfo("connection refused").pipe(Effect.annotateLogs({ edge: name, client, why }))
          yield* Effect.ignore(conn.write(encodeReply(reply)))
          yield* conn.close
        })
      if (shared.shuttingDown) return refuse(Reply.serviceNotAvailable(config.hostname), "shutting down")
      if (shared.active >= maxConnections) return refuse(Reply.tooManyConnections, "max connections")
      const mine = shared.perClient.get(client) ?? 0
      if (mine >= maxPerClient) {
        return refuse(Reply.make(421, "4.7.0", "Too many connections from your address, try again later"), "max per client")
      }
      shared.active++
      shared.perClient.set(client, mine + 1)
      return session(conn, client).pipe(
        Effect.catchCause((cause) =>
          Cause.hasInterruptsOnly(cause)
            ? Effect.void
            : Effect.logDebug("connection ended").pipe(Effect.annotateLogs({ edge: name, client, cause: Cause.pretty(cause) }))
        ),
        Effect.ensuring(
          Effect.suspend(() => {
            shared.active--
            const n = (shared.perClient.get(client) ?? 1) - 1
            if (n <= 0) shared.perClient.delete(client)
            else shared.perClient.set(client, n)
            return shared.shuttingDown && shared.active === 0 ? Effect.asVoid(Deferred.succeed(idle, undefined)) : Effect.void
          })
        ),
        Effect.provideContext(services)
      )
    }

    const listenerScope = yield* Scope.fork(yield* Effect.scope)
    const bound = yield* listener.listen(options.listen, handler).pipe(Scope.provide(listenerScope))
    yield* Effect.logInfo("listening").pipe(Effect.annotateLogs({ edge: name, endpoint: Transport.formatEndpoint(bound.endpoint) }))

    const shutdown = Effect.gen(function*() {
      if (shared.shuttingDown) return
      shared.shuttingDown = true
      yield* Deferred.succeed(shutdownSignal, undefined)
      if (shared.active > 0) yield* Effect.timeoutOption(Deferred.await(idle), grace)
      yield* Scope.close(listenerScope, Exit.void)
    })

    return {
      endpoint: bound.endpoint,
      connections: Effect.sync(() => shared.active),
      shutdown,
      setTls: bound.setTls
    } satisfies SmtpEdge
  })

/** The input that stands for an answer when answering failed. */
const failureInput = (q: Question): Input => {
  switch (q._tag) {
    case "Auth":
      return { _tag: "Credentials", answer: { _tag: "Unavailable" } }
    case "Message":
      return { _tag: "Delivered", replies: [Reply.queueError] }
    default:
      return { _tag: "Decision", decision: Decision.reject(Reply.make(451, "4.3.0", "Error: temporary local problem")) }
  }
}

const isLocal = (m: Address.Mailbox, local: ReadonlyArray<string>): boolean =>
  m.domain === "" || local.includes(m.domain.toLowerCase())

/** Builds the stored envelope from the session's message and facts. */
export const toEnvelope = (
  q: Extract<Question, { _tag: "Message" }>,
  config: ServerSession.Config,
  now: number
): Envelope.Envelope => {
  const { facts, message } = q
  const remote = facts.remote
  return Envelope.make({
    id: Envelope.newId(config.random, now),
    sender: Address.print(message.sender),
    recipients: message.recipients.map((r) => Address.print(r.mailbox)),
    message: message.data,
    client: {
      address: remote._tag === "Inet" ? remote.address : undefined,
      port: remote._tag === "Inet" ? remote.port : undefined,
      reverseName: undefined,
      ehlo: facts.hello?.domain,
      protocol: facts.protocol,
      tls: facts.tls ? { version: facts.tls.version, cipher: facts.tls.cipher, ...(facts.tls.bits ? { bits: facts.tls.bits } : {}) } : undefined,
      auth: facts.auth?.authcid
    },
    receiver: config.hostname,
    timestamp: now,
    dsn: {
      ret: message.mailParams.ret,
      envid: message.mailParams.envid,
      notify: message.recipients.map((r) => r.params.notify),
      orcpt: message.recipients.map((r) => r.params.orcpt)
    },
    body: message.mailParams.body,
    smtputf8: message.mailParams.smtputf8,
    requireTls: message.mailParams.requireTls
  })
}
