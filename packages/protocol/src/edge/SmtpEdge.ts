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
 * (policies, storage, TLS). Time limits ride on the connection: each read
 * carries the session's deadline (`readWithin`), each write the command
 * timeout, and a shutdown wakes the sessions' pending reads (`wake`), so a
 * waiting session forks no fiber, arms no timer of its own and builds no
 * error.
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
    const validators = options.validators ?? (Validators.none as Validators.Validators<R>)
    const name = options.name ?? "smtp"
    const config = ServerSession.config({
      startTls: options.listen.tls !== undefined && options.listen.implicitTls !== true,
      random: pooledRandom(),
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
    /** The connections in a session: `shutdown` wakes each one's pending read. */
    const live = new Set<Transport.Connection>()
    const idle = yield* Deferred.make<void>()
    // Read once: the sessions run with this fiber's services (see `Transport.Listener`), so this is their clock too.
    const clock = yield* Clock.Clock

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

    /**
     * One connection, start to end; the `close` hook runs however it ended.
     * Between effects the loop is plain code: a command costs one read, one
     * `step` and one write, and an idle session is one fiber suspended in
     * `readWithin` (its deadline is the connection's timer; a shutdown wakes
     * it through `wake`), with nothing forked.
     */
    const session = (conn: Transport.Connection, client: string): Effect.Effect<void, never, R> => {
      let state: ServerSession.State | undefined
      let messages = 0
      const closeHook = validators.close
      /**
       * Carries out one step's outputs: the input they lead to (an answer, the
       * TLS outcome), `undefined` when the session must read, `closed` once it
       * has closed. A generator of its own, so that nothing of a step (the
       * bytes it sent) outlives it while the session waits for the next read.
       */
      const perform = function*(outputs: ReadonlyArray<Output>) {
        let next: Input | typeof closed | undefined
        for (const o of outputs) {
          switch (o._tag) {
            case "Send":
              // A client that stops reading its replies must not hold the connection
              // forever: a write blocked by back-pressure for a command timeout fails
              // with reason Timeout, which ends the session (see `ended`).
              yield* conn.write(o.bytes, config.commandTimeoutMs)
              break
            case "Ask": {
              const question = o.question
              const now = clock.currentTimeMillisUnsafe()
              next = yield* answer(question, client, now).pipe(
                Effect.catchCause((cause) =>
                  Effect.as(
                    Effect.logError("policy or queue failure").pipe(
                      Effect.annotateLogs({ edge: name, client, cause: Cause.pretty(cause) })
                    ),
                    failureInput(question)
                  )
                )
              )
              if (question._tag === "Message") messages++
              if (question._tag === "Connect") {
                // RFC 5321 §4.3.1: bytes that arrived while the connect policy ran were sent
                // before the banner; the session must see them before the answer. (A wake-up
                // taken here is not lost: the shutdown flag is checked before every read.)
                const early = yield* conn.readWithin(0)
                if (typeof early === "object" && early !== null) {
                  state = ServerSession.step(state!, received(early), now).state
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
            case "Event": {
              const event = o.event
              if (event._tag === "AuthFailed" && event.reply.code === 535) {
                recordAuthFailure(client, clock.currentTimeMillisUnsafe())
              }
              if (event._tag === "CommandRejected" || event._tag === "AuthFailed") {
                yield* Effect.logDebug(event._tag).pipe(
                  Effect.annotateLogs({ edge: name, client, reply: Reply.toString(event.reply) })
                )
              }
              break
            }
            case "Close": {
              const s = state!
              yield* Effect.logInfo("session").pipe(
                Effect.annotateLogs({
                  edge: name,
                  client,
                  ehlo: s.hello?.domain ?? "-",
                  tls: s.tls?.version ?? "-",
                  auth: s.auth?.authcid ?? "-",
                  messages,
                  close: o.reason
                })
              )
              yield* o.reason === "quit" ? conn.closeAfterQuit : conn.close
              return closed
            }
          }
        }
        return next
      }
      const run = Effect.gen(function*() {
        state = ServerSession.initial(config, {
          remote: conn.remote,
          local: conn.local,
          proxied: conn.proxied,
          tls: conn.tls()
        })
        // Function-wide and cleared before every read: an idle session keeps its state, not its last step.
        let step: ServerSession.Step | undefined = ServerSession.start(state, clock.currentTimeMillisUnsafe())
        let input: Input | typeof closed | undefined
        let shutdownSeen = false
        state = step.state
        for (;;) {
          input = yield* perform(step.outputs)
          step = undefined
          if (input === closed) return
          while (input === undefined) {
            if (!shutdownSeen && shared.shuttingDown) {
              shutdownSeen = true
              input = shutdownInput
              break
            }
            const deadline = ServerSession.deadline(state)
            input = readInput(
              yield* conn.readWithin(deadline === undefined ? undefined : Math.max(0, deadline.at - clock.currentTimeMillisUnsafe()))
            )
          }
          step = ServerSession.step(state, input, clock.currentTimeMillisUnsafe())
          input = undefined
          state = step.state
          if (step.outputs.length === 0 && ServerSession.isClosed(state)) return
        }
      })
      /**
       * However the session ended: a reply the client would not take within
       * the command timeout ends it with a log line and a hard close, another
       * failure is logged at debug level (an interruption not at all); then
       * the close hook runs and the connection leaves the counters.
       */
      const ended = (exit: Exit.Exit<void, Transport.TransportError>): Effect.Effect<void, never, R> => {
        let log: Effect.Effect<void> = Effect.void
        if (exit._tag === "Failure" && !Cause.hasInterruptsOnly(exit.cause)) {
          const error = Cause.findErrorOption(exit.cause)
          log = error._tag === "Some" && error.value.reason === "Timeout"
            ? Effect.andThen(
              Effect.logInfo("session").pipe(Effect.annotateLogs({ edge: name, client, messages, close: "write-timeout" })),
              conn.destroy
            )
            : Effect.logDebug("connection ended").pipe(Effect.annotateLogs({ edge: name, client, cause: Cause.pretty(exit.cause) }))
        }
        const hook = closeHook === undefined || state === undefined
          ? Effect.void
          : Effect.catchCause(closeHook(ServerSession.facts(state)), () => Effect.void)
        return Effect.andThen(log, Effect.ensuring(hook, Effect.sync(() => leave(conn, client))))
      }
      // One frame for the whole session: `ended` runs on success, failure and interruption alike,
      // and the failure it has reported is dropped (`exit`), so the handler never fails.
      return Effect.asVoid(Effect.exit(Effect.onExit(run, ended)))
    }

    /** A session is over: it leaves the counters, and the last one out during a shutdown says so. */
    const leave = (conn: Transport.Connection, client: string): void => {
      live.delete(conn)
      shared.active--
      const n = (shared.perClient.get(client) ?? 1) - 1
      if (n <= 0) shared.perClient.delete(client)
      else shared.perClient.set(client, n)
      if (shared.shuttingDown && shared.active === 0) Deferred.doneUnsafe(idle, Exit.void)
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
      live.add(conn)
      // The Listener runs every handler with the services of the fiber that called `listen`
      // (this one, see `Transport.Listener`): R is there without a context per session.
      return session(conn, client) as Effect.Effect<void>
    }

    const listenerScope = yield* Scope.fork(yield* Effect.scope)
    const bound = yield* listener.listen(options.listen, handler).pipe(Scope.provide(listenerScope))
    yield* Effect.logInfo("listening").pipe(Effect.annotateLogs({ edge: name, endpoint: Transport.formatEndpoint(bound.endpoint) }))

    const shutdown = Effect.gen(function*() {
      if (shared.shuttingDown) return
      shared.shuttingDown = true
      // every session sees the flag before its next read; the ones waiting in a read now are woken
      for (const conn of live) conn.wake()
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

/**
 * Random bytes (message ids, SASL nonces) from the platform's CSPRNG, drawn
 * 4 KiB at a time: one `getRandomValues` per few hundred messages instead of
 * one per message id (that call costs microseconds of validation on Node).
 * Every byte is handed out once.
 */
const pooledRandom = (): ((n: number) => Uint8Array) => {
  const pool = new Uint8Array(4096)
  let used = pool.length
  return (n) => {
    if (n > pool.length) return globalThis.crypto.getRandomValues(new Uint8Array(n))
    if (used + n > pool.length) {
      globalThis.crypto.getRandomValues(pool)
      used = 0
    }
    used += n
    return pool.slice(used - n, used)
  }
}

/** What `perform` returns once the session has closed. */
const closed: unique symbol = Symbol("closed")
const eofInput: Input = { _tag: "Eof" }
const timeoutInput: Input = { _tag: "Timeout" }
const shutdownInput: Input = { _tag: "Shutdown" }

/** A read's outcome as the session's input; `undefined` for a wake-up (the loop checks the shutdown flag). */
const readInput = (got: Transport.ReadResult): Input | undefined =>
  got === "woken" ? undefined : got === null ? eofInput : got === "timeout" ? timeoutInput : received(got)

/** A read batch as the session's input. */
const received = (chunks: ReadonlyArray<Uint8Array>): Input => ({
  _tag: "Received",
  bytes: chunks.length === 1 ? chunks[0]! : Bytes.concat(chunks)
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
