/**
 * `mailroom serve` on Node: builds the edges, the queue and the relay a
 * decoded `Config` describes, runs them until SIGTERM or SIGINT, then shuts
 * down gracefully (stop accepting, let messages in flight finish within each
 * listener's `shutdown_grace`, 421 the rest). SIGHUP reloads the TLS
 * certificates without dropping connections.
 *
 * The embedded default (no config file): SMTP on 127.0.0.1:2525, the durable
 * queue on disk under ./var/queue, local delivery into Maildir folders under
 * ./var/mail (one per recipient).
 *
 * @since 0.1.0
 */
import * as NodeDns from "@effect/platform-node/NodeDns"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as CredentialsService from "@mailroom/protocol/auth/CredentialsService"
import * as Config from "@mailroom/protocol/config/Config"
import * as Rules from "@mailroom/protocol/config/Rules"
import * as HttpEdge from "@mailroom/protocol/edge/HttpEdge"
import * as SmtpEdge from "@mailroom/protocol/edge/SmtpEdge"
import type * as Transport from "@mailroom/protocol/edge/Transport"
import * as QueuePolicy from "@mailroom/protocol/policy/QueuePolicy"
import * as DurableQueue from "@mailroom/protocol/queue/DurableQueue"
import * as Queue from "@mailroom/protocol/queue/Queue"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import * as HttpRelay from "@mailroom/protocol/relay/HttpRelay"
import * as LmtpRelay from "@mailroom/protocol/relay/LmtpRelay"
import * as MaildirRelay from "@mailroom/protocol/relay/MaildirRelay"
import * as MxRelay from "@mailroom/protocol/relay/MxRelay"
import * as PipeRelay from "@mailroom/protocol/relay/PipeRelay"
import * as Relay from "@mailroom/protocol/relay/Relay"
import * as StaticRelay from "@mailroom/protocol/relay/StaticRelay"
import * as Dns from "effect/net/Dns"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { readFileSync } from "node:fs"
import * as DiskStorage from "./DiskStorage.ts"
import * as NodeHttp from "./NodeHttp.ts"
import * as NodeLog from "./NodeLog.ts"
import * as NodeProcess from "./NodeProcess.ts"
import * as NodeTransport from "./NodeTransport.ts"
import * as UsersFile from "./UsersFile.ts"

const ms = (d: Duration.Duration): number => Duration.toMillis(d)

/** A startup problem that names the config key at fault. */
export class ServeError extends Error {}

const readPem = (what: string, path: string): string => {
  try {
    return readFileSync(path, "utf8")
  } catch (e) {
    throw new ServeError(`${what}: cannot read ${path}: ${(e as Error).message}`)
  }
}

/** Reads a listener's certificate files into the transport's TLS config. */
export const tlsConfig = (tls: Config.TlsSettings, key: string): Transport.ServerTlsConfig => ({
  default: { cert: readPem(`${key}.cert`, tls.cert), key: readPem(`${key}.key`, tls.key) },
  sni: tls.sni.map((s, i) => ({
    names: s.names,
    certificate: { cert: readPem(`${key}.sni[${i}].cert`, s.cert), key: readPem(`${key}.sni[${i}].key`, s.key) }
  })),
  minVersion: tls.min_version
})

const storageLayer = (settings: Config.StorageSettings): Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> => {
  switch (settings.type) {
    case "disk":
      return DiskStorage.layer({ directory: settings.path })
    case "memory":
      return QueueStorage.memory
    case "redis":
      throw new ServeError("queue.storage.type: redis storage is not available yet in this version; use disk or memory")
  }
}

/** The resolver: the configured name servers, or the system's. */
const dnsLayer = (settings: Config.DnsSettings, key: string, resolver?: ReadonlyArray<{ readonly text: string }>): Layer.Layer<Dns.Dns> => {
  const servers = resolver ?? settings.resolver
  if (servers === undefined) return NodeDns.layer
  return Layer.effect(
    Dns.Dns,
    NodeDns.make({ nameServers: servers.map((s) => s.text), timeout: ms(settings.timeout), tries: settings.tries }).pipe(
      Effect.mapError((e) => new ServeError(`${key}: ${String((e as { message?: unknown }).message ?? e)}`)),
      Effect.orDie
    )
  )
}

const timeoutsOf = (r: { connect_timeout: Duration.Duration; command_timeout: Duration.Duration; data_timeout: Duration.Duration }) => ({
  connectMs: ms(r.connect_timeout),
  commandMs: ms(r.command_timeout),
  dataMs: ms(r.data_timeout)
})

const relayLayer = (settings: Config.RelaySettings, hostname: string, dns: Config.DnsSettings): Layer.Layer<Relay.Relay> => {
  const network = Layer.mergeAll(NodeTransport.connectorLayer)
  switch (settings.type) {
    case "maildir":
      return MaildirRelay.layer({ root: settings.path, folders: settings.folders, hostname }).pipe(
        Layer.provide(Layer.merge(NodeFileSystem.layer, NodePath.layer))
      )
    case "blackhole":
      return Layer.succeed(Relay.Relay, Relay.blackhole)
    case "pipe":
      return PipeRelay.layer({
        command: settings.command,
        perRecipient: settings.per_recipient,
        timeoutMs: ms(settings.timeout),
        exitCodes: "postfix"
      }).pipe(Layer.provide(NodeProcess.layer))
    case "http":
      return HttpRelay.layer({ url: settings.url, timeoutMs: ms(settings.timeout), ehlo: hostname })
    case "mx":
      return MxRelay.layer({
        ehlo: settings.ehlo ?? hostname,
        tls: settings.tls,
        ...(settings.tls_policy ? { tlsPolicy: settings.tls_policy } : {}),
        ...(settings.force_mx ? { forceMx: Object.fromEntries(Object.entries(settings.force_mx).map(([d, hp]) => [d.toLowerCase(), hp.text])) } : {}),
        port: settings.port,
        timeouts: { ...timeoutsOf(settings), dnsMs: ms(dns.timeout) },
        pool: { idleTimeoutMs: ms(settings.idle_timeout), maxPerDestination: settings.max_connections_per_host }
      }).pipe(Layer.provide(Layer.merge(network, dnsLayer(dns, "relay.resolver", settings.resolver ? [settings.resolver] : undefined))))
    case "static":
      return StaticRelay.layer({
        host: settings.host,
        port: settings.port,
        ehlo: settings.ehlo ?? hostname,
        tls: settings.tls,
        tlsVerify: settings.tls_verify,
        ...(settings.ca ? { ca: [readPem("relay.ca", settings.ca)] } : {}),
        ...(settings.auth ? { auth: { username: settings.auth.username, password: settings.auth.password } } : {}),
        timeouts: timeoutsOf(settings),
        pool: { maxPerDestination: settings.max_connections }
      }).pipe(Layer.provide(Layer.merge(network, NodeDns.layer)))
    case "lmtp":
      return LmtpRelay.layer({
        endpoint: settings.path !== undefined ? { path: settings.path } : { host: settings.host!, port: settings.port },
        ehlo: hostname,
        timeouts: timeoutsOf(settings)
      }).pipe(Layer.provide(Layer.merge(network, NodeDns.layer)))
  }
}

const queuePolicies = (config: Config.Config, hostname: string): ReadonlyArray<DurableQueue.Policy> => {
  const p = config.queue.policies
  const out: Array<DurableQueue.Policy> = []
  if (p.add_received_header) out.push(QueuePolicy.addReceivedHeader({ hostname }))
  if (p.add_date_header) out.push(QueuePolicy.addDateHeader())
  if (p.add_message_id_header) out.push(QueuePolicy.addMessageIdHeader(hostname))
  if (p.forward.length > 0) out.push(QueuePolicy.forward(p.forward.map((f) => ({ pattern: f.pattern, replace: f.replace }))))
  if (p.aliases_file !== undefined) {
    let text: string
    try {
      text = readFileSync(p.aliases_file, "utf8")
    } catch (e) {
      throw new ServeError(`queue.policies.aliases_file: cannot read ${p.aliases_file}: ${(e as Error).message}`)
    }
    const parsed = QueuePolicy.parseAliasesFile(text)
    if (parsed.errors.length > 0) {
      throw new ServeError(parsed.errors.map((e) => `queue.policies.aliases_file: ${p.aliases_file}:${e.line}: ${e.message}`).join("\n"))
    }
    out.push(QueuePolicy.aliases(parsed.table))
  }
  if (p.split === "recipient") out.push(QueuePolicy.recipientSplit)
  if (p.split === "domain") out.push(QueuePolicy.recipientDomainSplit)
  return out
}

const endpointOf = (address: Config.ListenAddress): Transport.Endpoint =>
  address._tag === "Unix" ? { _tag: "Unix", path: address.path } : { _tag: "Inet", address: address.host, port: address.port }

/** The running server: its edges (with their bound endpoints) and the queue. */
export interface Running {
  /** The HTTP edge's servers, when `http` is configured. */
  readonly http: ReadonlyArray<NodeHttp.Server>
  readonly edges: ReadonlyArray<{ readonly name: string; readonly edge: SmtpEdge.SmtpEdge }>
  readonly queue: DurableQueue.DurableQueue
  /** Re-reads the TLS files of every listener. */
  readonly reloadTls: Effect.Effect<void>
  /** Graceful shutdown of every edge. */
  readonly shutdown: Effect.Effect<void>
}

/** Builds and starts everything in the current scope. */
export const start = (config: Config.Config): Effect.Effect<Running, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const hostname = config.hostname ?? "localhost"
    const relay = relayLayer(config.relay, hostname, config.dns)
    const storage = storageLayer(config.queue.storage)
    const retry = config.queue.retry
    const services = yield* Layer.build(
      Layer.mergeAll(relay, storage, NodeTransport.layer, dnsLayer(config.dns, "dns.resolver"))
    )
    const durable = yield* DurableQueue.make({
      hostname,
      policies: queuePolicies(config, hostname),
      retry: {
        intervals: retry.intervals.map(ms),
        maxInterval: ms(retry.max_interval),
        maxAge: ms(retry.max_age),
        delayWarning: ms(retry.delay_warning)
      }
    }).pipe(Effect.provideContext(services))
    const queueLayer = Layer.succeed(Queue.Queue, durable.queue)

    const edges: Array<{ name: string; edge: SmtpEdge.SmtpEdge; reload: () => Effect.Effect<void> }> = []
    for (const [i, l] of config.smtp.entries()) {
      const key = `smtp[${i}]`
      const credentials = l.auth ? CredentialsService.layerTable(loadUsers(`${key}.auth.users_file`, l.auth.users_file)) : CredentialsService.none
      const tls = l.tls ? tlsConfig(l.tls, `${key}.tls`) : undefined
      if (l.local_domains.length === 0 && !l.require_auth && (config.relay.type === "mx" || config.relay.type === "static")) {
        yield* Effect.logWarning(
          `${key}: no local_domains and no require_auth while relaying out: anyone can send anywhere through this listener (an open relay)`
        )
      }
      for (const [j, address] of l.listen.entries()) {
        const name = `${key}${l.listen.length > 1 ? `.listen[${j}]` : ""}`
        const edge = yield* SmtpEdge.make({
          name,
          listen: {
            endpoint: endpointOf(address),
            ...(tls ? { tls } : {}),
            implicitTls: l.implicit_tls,
            ...(l.proxy_protocol ? { proxyProtocol: { trusted: l.proxy_protocol.trusted, timeoutMs: ms(l.proxy_protocol.timeout) } } : {})
          },
          session: {
            hostname,
            bannerText: l.banner,
            mode: l.mode,
            maxMessageSize: l.max_message_size,
            maxRecipients: l.max_recipients,
            maxBadCommands: l.max_bad_commands,
            maxHops: config.queue.policies.max_hops,
            commandTimeoutMs: ms(l.command_timeout),
            dataTimeoutMs: ms(l.data_timeout),
            bareNewline: l.bare_newline,
            authMechanisms: l.auth?.mechanisms ?? [],
            allowPlaintextAuthWithoutTls: l.auth?.allow_plaintext_without_tls ?? false,
            requireAuth: l.require_auth,
            requireTls: l.require_tls
          },
          maxConnections: l.max_connections,
          maxConnectionsPerClient: l.max_connections_per_client,
          ...(l.auth ? { authFailures: { max: l.auth.max_failures_per_client, windowMs: ms(l.auth.failure_window) } } : {}),
          ...(l.local_domains.length > 0 ? { localDomains: l.local_domains } : {}),
          validators: Rules.validators(l.rules, hostname),
          shutdownGraceMs: ms(l.shutdown_grace)
        }).pipe(
          Effect.provide(Layer.mergeAll(queueLayer, credentials)),
          Effect.provideContext(services)
        )
        edges.push({
          name,
          edge,
          reload: () =>
            l.tls
              ? Effect.suspend(() => edge.setTls(tlsConfig(l.tls!, `${key}.tls`))).pipe(
                Effect.tap(() => Effect.logInfo("certificates reloaded").pipe(Effect.annotateLogs({ edge: name }))),
                Effect.catchCause((cause) => Effect.logError("certificate reload failed").pipe(Effect.annotateLogs({ edge: name, cause: String(cause) })))
              )
              : Effect.void
        })
      }
    }
    const http: Array<NodeHttp.Server> = []
    if (config.http !== undefined) {
      const h = config.http
      const credentials = h.auth ? CredentialsService.layerTable(loadUsers("http.auth.users_file", h.auth.users_file)) : CredentialsService.none
      const handler = yield* HttpEdge.fromContext({
        hostname,
        validators: Rules.validators(h.rules, hostname),
        path: h.path,
        jsonPath: h.json_path ?? null,
        requireAuth: h.require_auth,
        maxSize: h.max_message_size,
        maxRecipients: h.max_recipients
      }).pipe(Effect.provide(Layer.mergeAll(queueLayer, credentials)), Effect.provideContext(services))
      const tls = h.tls ? tlsConfig(h.tls, "http.tls").default : undefined
      for (const [j, address] of h.listen.entries()) {
        if (address._tag === "Unix") throw new ServeError(`http.listen[${j}]: the HTTP edge listens on TCP addresses only, got ${address.text}`)
        const server = yield* NodeHttp.serve({ handler, host: address.host, port: address.port, ...(tls ? { tls } : {}) })
        yield* Effect.logInfo("listening").pipe(Effect.annotateLogs({ edge: `http.listen[${j}]`, endpoint: server.url }))
        http.push(server)
      }
    }
    return {
      http,
      edges: edges.map(({ name, edge }) => ({ name, edge })),
      queue: durable,
      reloadTls: Effect.forEach(edges, (e) => e.reload(), { discard: true }),
      shutdown: Effect.forEach(edges, (e) => e.edge.shutdown, { concurrency: "unbounded", discard: true })
    } satisfies Running
  })

const loadUsers = (key: string, path: string): ReadonlyMap<string, string> => {
  try {
    return UsersFile.load(path)
  } catch (e) {
    throw new ServeError(`${key}: ${(e as Error).message}`)
  }
}

/**
 * Runs the server until SIGTERM or SIGINT (graceful shutdown) and resolves
 * once it has stopped. Rejects when it cannot start (a port in use, a file
 * that cannot be read), before anything listens where possible.
 */
export const serve = async (config: Config.Config): Promise<void> => {
  const logging = NodeLog.layer(config.log)
  const scope = Effect.runSync(Scope.make())
  const running = await Effect.runPromise(
    start(config).pipe(Scope.provide(scope), Effect.provide(logging))
  ).catch(async (e) => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw e instanceof ServeError ? e : new ServeError(describe(e))
  })
  await new Promise<void>((resolve) => {
    let stopping = false
    const stop = (signal: string) => {
      if (stopping) return
      stopping = true
      Effect.runPromise(
        Effect.logInfo("shutting down").pipe(Effect.annotateLogs({ signal }), Effect.andThen(running.shutdown), Effect.provide(logging))
      ).finally(() => Effect.runPromise(Scope.close(scope, Exit.void)).finally(resolve))
    }
    process.once("SIGTERM", () => stop("SIGTERM"))
    process.once("SIGINT", () => stop("SIGINT"))
    process.on("SIGHUP", () => {
      void Effect.runPromise(running.reloadTls.pipe(Effect.provide(logging)))
    })
  })
}

const describe = (e: unknown): string => {
  if (e instanceof Error) return e.message
  if (typeof e === "object" && e !== null && "message" in e) return String((e as { message: unknown }).message)
  return String(e)
}
