/**
 * `mailroom serve`'s composition, runtime-neutral: from a decoded `Config`
 * and a `Platform` (what only a runtime can give: sockets, a resolver,
 * storages, a file system, processes, file reading, an HTTP server), builds
 * the relay, the queue storage, the durable queue with its policies, one
 * SMTP edge per listen address with its rules and users, and the HTTP edge,
 * in the current scope. Node's and Deno's `serve.ts` are a platform record
 * plus logging and signals around `start`.
 *
 * Every startup problem (a file that cannot be read, a storage this runtime
 * lacks, a port in use) fails `start` with a `ServeError` whose message names
 * the config key at fault.
 *
 * What it deliberately does not do: logging setup, signals, reading the
 * config file, or anything that needs a runtime (all of that is the
 * platform's or the caller's).
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Dns from "effect/net/Dns"
import type * as Path from "effect/Path"
import type * as Scope from "effect/Scope"
import * as CredentialsService from "../auth/CredentialsService.ts"
import * as HttpEdge from "../edge/HttpEdge.ts"
import * as SmtpEdge from "../edge/SmtpEdge.ts"
import type * as Transport from "../edge/Transport.ts"
import * as QueuePolicy from "../policy/QueuePolicy.ts"
import type * as ProcessSpawner from "../process/ProcessSpawner.ts"
import * as DurableQueue from "../queue/DurableQueue.ts"
import * as Queue from "../queue/Queue.ts"
import type * as QueueStorage from "../queue/QueueStorage.ts"
import * as HttpRelay from "../relay/HttpRelay.ts"
import * as LmtpRelay from "../relay/LmtpRelay.ts"
import * as MaildirRelay from "../relay/MaildirRelay.ts"
import * as MxRelay from "../relay/MxRelay.ts"
import * as PipeRelay from "../relay/PipeRelay.ts"
import * as Relay from "../relay/Relay.ts"
import * as StaticRelay from "../relay/StaticRelay.ts"
import type * as Config from "./Config.ts"
import * as Rules from "./Rules.ts"
import * as UsersFile from "./UsersFile.ts"

/** A startup problem that names the config key at fault. */
export class ServeError extends Error {
  override readonly name = "ServeError"
}

/** The resolver a platform builds: the given name servers, or the system's when `nameServers` is undefined. */
export interface DnsOptions {
  readonly nameServers: ReadonlyArray<{ readonly host: string; readonly port: number; readonly text: string }> | undefined
  /** Time allowed for one query, ms. */
  readonly timeoutMs: number
  /** Attempts per query (and per name server). */
  readonly tries: number
}

/** Options of the platform's HTTP server. */
export interface HttpServeOptions {
  readonly host: string
  readonly port: number
  /** PEM key and certificate: serve HTTPS. */
  readonly tls?: Transport.CertificatePem | undefined
  /** Set SO_REUSEPORT: worker processes share the address. */
  readonly reusePort?: boolean | undefined
}

/** A bound HTTP server. */
export interface HttpServer {
  readonly host: string
  readonly port: number
  /** `http://127.0.0.1:8025` */
  readonly url: string
}

/** What only a runtime can give `start`. */
export interface Platform {
  /** The runtime's name, for messages ("Node", "Deno"). */
  readonly name: string
  /** Listeners (SMTP edges) and connectors (relays, spamd). */
  readonly transport: Layer.Layer<Transport.Listener | Transport.Connector>
  /** A resolver, alive for the scope; fails (with a message) when the settings are unusable. */
  readonly dns: (options: DnsOptions) => Effect.Effect<Dns.Dns["Service"], Error, Scope.Scope>
  /** The queue storage; a string says why this runtime cannot offer `settings.type`. */
  readonly storage: (settings: Config.StorageSettings) => Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> | string
  /** effect's `FileSystem` and `Path` (the Maildir relay). */
  readonly fileSystem: Layer.Layer<FileSystem.FileSystem | Path.Path>
  /** Child processes (the pipe relay). */
  readonly processes: Layer.Layer<ProcessSpawner.ProcessSpawner>
  /** Reads a UTF-8 text file; throws an `Error` whose message says why it cannot. */
  readonly readText: (path: string) => string
  /** Serves the HTTP edge's web-standard handler until the scope closes. */
  readonly serveHttp: (handler: HttpEdge.Handler, options: HttpServeOptions) => Effect.Effect<HttpServer, unknown, Scope.Scope>
}

/** The running server: its edges (with their bound endpoints) and the queue. */
export interface Running {
  /** The HTTP edge's servers, when `http` is configured. */
  readonly http: ReadonlyArray<HttpServer>
  readonly edges: ReadonlyArray<{ readonly name: string; readonly edge: SmtpEdge.SmtpEdge }>
  readonly queue: DurableQueue.DurableQueue
  /** Re-reads the TLS files of every listener. */
  readonly reloadTls: Effect.Effect<void>
  /** Graceful shutdown of every edge. */
  readonly shutdown: Effect.Effect<void>
}

const ms = (d: Duration.Duration): number => Duration.toMillis(d)

/** The message of anything thrown or failed. */
export const describe = (e: unknown): string => {
  if (e instanceof Error) return e.message
  if (typeof e === "object" && e !== null && "message" in e) return String((e as { message: unknown }).message)
  return String(e)
}

/** Reads `path` for the config key `key`; throws a `ServeError` naming both. */
const readFor = (readText: (path: string) => string, key: string, path: string): string => {
  try {
    return readText(path)
  } catch (e) {
    throw new ServeError(`${key}: cannot read ${path}: ${describe(e)}`)
  }
}

/** Reads a listener's certificate files into the transport's TLS config; throws a `ServeError` naming the key. */
export const tlsConfig = (tls: Config.TlsSettings, key: string, readText: (path: string) => string): Transport.ServerTlsConfig => ({
  default: { cert: readFor(readText, `${key}.cert`, tls.cert), key: readFor(readText, `${key}.key`, tls.key) },
  sni: tls.sni.map((s, i) => ({
    names: s.names,
    certificate: { cert: readFor(readText, `${key}.sni[${i}].cert`, s.cert), key: readFor(readText, `${key}.sni[${i}].key`, s.key) }
  })),
  minVersion: tls.min_version
})

/** Reads and parses a users file; throws a `ServeError` naming the key, the file and every bad line. */
export const loadUsers = (key: string, path: string, readText: (path: string) => string): ReadonlyMap<string, string> => {
  let text: string
  try {
    text = readText(path)
  } catch (e) {
    throw new ServeError(`${key}: users file ${path}: ${describe(e)}`)
  }
  const { users, errors } = UsersFile.parse(text)
  if (errors.length > 0) throw new ServeError(errors.map((e) => `${key}: users file ${path}:${e.line}: ${e.message}`).join("\n"))
  return users
}

/** The resolver for `key`: the given name servers (or the config's), else the system's. */
const dnsLayer = (
  platform: Platform,
  settings: Config.DnsSettings,
  key: string,
  servers?: ReadonlyArray<{ readonly host: string; readonly port: number; readonly text: string }>
): Layer.Layer<Dns.Dns, ServeError> =>
  Layer.effect(
    Dns.Dns,
    Effect.suspend(() => platform.dns({ nameServers: servers ?? settings.resolver, timeoutMs: ms(settings.timeout), tries: settings.tries })).pipe(
      Effect.mapError((e) => new ServeError(`${key}: ${describe(e)}`))
    )
  )

/** The system resolver (host names of a smarthost or an LMTP server). */
const systemDns = (platform: Platform, settings: Config.DnsSettings): Layer.Layer<Dns.Dns, ServeError> =>
  Layer.effect(
    Dns.Dns,
    Effect.suspend(() => platform.dns({ nameServers: undefined, timeoutMs: ms(settings.timeout), tries: settings.tries })).pipe(
      Effect.mapError((e) => new ServeError(`dns: ${describe(e)}`))
    )
  )

const storageLayer = (platform: Platform, settings: Config.StorageSettings): Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> => {
  const layer = platform.storage(settings)
  if (typeof layer === "string") throw new ServeError(`queue.storage.type: ${layer}`)
  return layer
}

const timeoutsOf = (r: { connect_timeout: Duration.Duration; command_timeout: Duration.Duration; data_timeout: Duration.Duration }) => ({
  connectMs: ms(r.connect_timeout),
  commandMs: ms(r.command_timeout),
  dataMs: ms(r.data_timeout)
})

const relayLayer = (platform: Platform, settings: Config.RelaySettings, hostname: string, dns: Config.DnsSettings): Layer.Layer<Relay.Relay, ServeError> => {
  switch (settings.type) {
    case "maildir":
      return MaildirRelay.layer({ root: settings.path, folders: settings.folders, hostname }).pipe(Layer.provide(platform.fileSystem))
    case "blackhole":
      return Layer.succeed(Relay.Relay, Relay.blackhole)
    case "pipe":
      return PipeRelay.layer({
        command: settings.command,
        perRecipient: settings.per_recipient,
        timeoutMs: ms(settings.timeout),
        exitCodes: "postfix"
      }).pipe(Layer.provide(platform.processes))
    case "http":
      return HttpRelay.layer({ url: settings.url, timeoutMs: ms(settings.timeout), ehlo: hostname })
    case "mx":
      return MxRelay.layer({
        ehlo: settings.ehlo ?? hostname,
        tls: settings.tls,
        ...(settings.tls_policy ? { tlsPolicy: settings.tls_policy } : {}),
        ...(settings.force_mx
          ? { forceMx: Object.fromEntries(Object.entries(settings.force_mx).map(([d, hp]) => [d.toLowerCase(), hp.text])) }
          : {}),
        port: settings.port,
        timeouts: { ...timeoutsOf(settings), dnsMs: ms(dns.timeout) },
        pool: { idleTimeoutMs: ms(settings.idle_timeout), maxPerDestination: settings.max_connections_per_host }
      }).pipe(
        Layer.provide(
          Layer.merge(
            platform.transport,
            settings.resolver ? dnsLayer(platform, dns, "relay.resolver", [settings.resolver]) : dnsLayer(platform, dns, "dns.resolver")
          )
        )
      )
    case "static":
      return StaticRelay.layer({
        host: settings.host,
        port: settings.port,
        ehlo: settings.ehlo ?? hostname,
        tls: settings.tls,
        tlsVerify: settings.tls_verify,
        ...(settings.ca ? { ca: [readFor(platform.readText, "relay.ca", settings.ca)] } : {}),
        ...(settings.auth ? { auth: { username: settings.auth.username, password: settings.auth.password } } : {}),
        timeouts: timeoutsOf(settings),
        pool: { maxPerDestination: settings.max_connections }
      }).pipe(Layer.provide(Layer.merge(platform.transport, systemDns(platform, dns))))
    case "lmtp":
      if (settings.path === undefined && settings.host === undefined) throw new ServeError("relay: an lmtp relay needs host or path")
      return LmtpRelay.layer({
        endpoint: settings.path !== undefined ? { path: settings.path } : { host: settings.host!, port: settings.port },
        ehlo: hostname,
        timeouts: timeoutsOf(settings)
      }).pipe(Layer.provide(Layer.merge(platform.transport, systemDns(platform, dns))))
  }
}

/** The queue policies the config asks for, in slimta's order. */
export const queuePolicies = (config: Config.Config, hostname: string, readText: (path: string) => string): ReadonlyArray<DurableQueue.Policy> => {
  const p = config.queue.policies
  const out: Array<DurableQueue.Policy> = []
  if (p.add_received_header) out.push(QueuePolicy.addReceivedHeader({ hostname }))
  if (p.add_date_header) out.push(QueuePolicy.addDateHeader())
  if (p.add_message_id_header) out.push(QueuePolicy.addMessageIdHeader(hostname))
  if (p.forward.length > 0) out.push(QueuePolicy.forward(p.forward.map((f) => ({ pattern: f.pattern, replace: f.replace }))))
  if (p.aliases_file !== undefined) {
    const parsed = QueuePolicy.parseAliasesFile(readFor(readText, "queue.policies.aliases_file", p.aliases_file))
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

/** A startup failure as a `ServeError` (keeps one that already is). */
const toServeError = (e: unknown): ServeError => (e instanceof ServeError ? e : new ServeError(describe(e)))

/** How this process takes part: alone, or as one worker of several (`config.workers`). */
export interface StartOptions {
  /**
   * This worker's number, 1 to `config.workers`: its queue claims messages
   * as `hostname#worker`, so a restarted worker takes its own claims back
   * at once and never shares a claim with another worker.
   */
  readonly worker?: number | undefined
}

/**
 * Builds and starts everything `config` describes, with `platform`'s
 * services, in the current scope (closing it stops everything). Fails with a
 * `ServeError` naming the config key when something cannot start.
 */
export const start = (config: Config.Config, platform: Platform, options: StartOptions = {}): Effect.Effect<Running, ServeError, Scope.Scope> =>
  Effect.gen(function*() {
    const hostname = config.hostname ?? "localhost"
    // several workers bind the same addresses and claim messages from one storage under their own names
    const reusePort = config.workers > 1
    const owner = options.worker === undefined ? hostname : `${hostname}#${options.worker}`
    const readText = platform.readText
    const relay = relayLayer(platform, config.relay, hostname, config.dns)
    const storage = storageLayer(platform, config.queue.storage)
    const policies = queuePolicies(config, hostname, readText)
    const retry = config.queue.retry
    const services = yield* Layer.build(Layer.mergeAll(relay, storage, platform.transport, dnsLayer(platform, config.dns, "dns.resolver")))
    const durable = yield* DurableQueue.make({
      hostname,
      owner,
      policies,
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
      const credentials = l.auth
        ? CredentialsService.layerTable(loadUsers(`${key}.auth.users_file`, l.auth.users_file, readText))
        : CredentialsService.none
      const tls = l.tls ? tlsConfig(l.tls, `${key}.tls`, readText) : undefined
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
            ...(reusePort ? { reusePort } : {}),
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
          Effect.mapError((e) => new ServeError(`${name}: ${e.message}`)),
          Effect.provide(Layer.mergeAll(queueLayer, credentials)),
          Effect.provideContext(services)
        )
        const tlsSettings = l.tls
        edges.push({
          name,
          edge,
          reload: () =>
            tlsSettings
              ? Effect.suspend(() => edge.setTls(tlsConfig(tlsSettings, `${key}.tls`, readText))).pipe(
                Effect.tap(() => Effect.logInfo("certificates reloaded").pipe(Effect.annotateLogs({ edge: name }))),
                Effect.catchCause((cause) =>
                  Effect.logError("certificate reload failed").pipe(Effect.annotateLogs({ edge: name, cause: String(cause) }))
                )
              )
              : Effect.void
        })
      }
    }

    const http: Array<HttpServer> = []
    if (config.http !== undefined) {
      const h = config.http
      const credentials = h.auth
        ? CredentialsService.layerTable(loadUsers("http.auth.users_file", h.auth.users_file, readText))
        : CredentialsService.none
      const handler = yield* HttpEdge.fromContext({
        hostname,
        validators: Rules.validators(h.rules, hostname),
        path: h.path,
        jsonPath: h.json_path ?? null,
        requireAuth: h.require_auth,
        maxSize: h.max_message_size,
        maxRecipients: h.max_recipients
      }).pipe(Effect.provide(Layer.mergeAll(queueLayer, credentials)), Effect.provideContext(services))
      const tls = h.tls ? tlsConfig(h.tls, "http.tls", readText).default : undefined
      for (const [j, address] of h.listen.entries()) {
        const key = `http.listen[${j}]`
        if (address._tag === "Unix") throw new ServeError(`${key}: the HTTP edge listens on TCP addresses only, got ${address.text}`)
        const server = yield* platform.serveHttp(handler, { host: address.host, port: address.port, ...(tls ? { tls } : {}), ...(reusePort ? { reusePort } : {}) }).pipe(
          Effect.mapError((e) => new ServeError(`${key}: ${describe(e)}`))
        )
        yield* Effect.logInfo("listening").pipe(Effect.annotateLogs({ edge: key, endpoint: server.url }))
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
  }).pipe(
    // the config helpers throw ServeError; anything else thrown is a bug and stays a defect
    Effect.catchDefect((d) => (d instanceof ServeError ? Effect.fail(d) : Effect.die(d))),
    Effect.mapError(toServeError)
  )
