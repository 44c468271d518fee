/**
 * `mailroom serve` on Deno: builds the edges, the durable queue and the
 * relay a decoded `Config` describes, from Deno layers, runs them until
 * SIGTERM or SIGINT, then shuts down gracefully (stop accepting, let
 * messages in flight finish within each listener's `shutdown_grace`, 421 the
 * rest). SIGHUP reloads the TLS certificates.
 *
 * It mirrors `@mailroom/node`'s `serve.ts` with Deno's services:
 * `DenoTransport` for the listeners, `DenoDisk` (or memory) for the queue,
 * `DenoProcess` for the pipe relay, `fetch` for the HTTP relay, Deno's file
 * APIs for certificates, users and aliases files. The Maildir relay uses
 * effect's `FileSystem` from `@effect/platform-node` through Deno's Node
 * compatibility (effect has no Deno file system of its own).
 *
 * What it deliberately does not do (yet): Deno KV as the queue (the config
 * has no storage type for it), the relays the Node server does not offer
 * either (mx, static, lmtp), the HTTP edge.
 *
 * @since 0.1.0
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as CredentialsService from "@mailroom/protocol/auth/CredentialsService"
import type * as Config from "@mailroom/protocol/config/Config"
import * as SmtpEdge from "@mailroom/protocol/edge/SmtpEdge"
import type * as Transport from "@mailroom/protocol/edge/Transport"
import * as Log from "@mailroom/protocol/observability/Log"
import * as QueuePolicy from "@mailroom/protocol/policy/QueuePolicy"
import * as DurableQueue from "@mailroom/protocol/queue/DurableQueue"
import * as Queue from "@mailroom/protocol/queue/Queue"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import * as HttpRelay from "@mailroom/protocol/relay/HttpRelay"
import * as MaildirRelay from "@mailroom/protocol/relay/MaildirRelay"
import * as PipeRelay from "@mailroom/protocol/relay/PipeRelay"
import * as Relay from "@mailroom/protocol/relay/Relay"
import * as UsersFile from "@mailroom/node/UsersFile"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as DenoDisk from "./DenoDisk.ts"
import * as DenoProcess from "./DenoProcess.ts"
import * as DenoTransport from "./DenoTransport.ts"

const ms = (d: Duration.Duration): number => Duration.toMillis(d)

/** A startup problem that names the config key at fault. */
export class ServeError extends Error {}

const readText = (what: string, path: string): string => {
  try {
    return Deno.readTextFileSync(path)
  } catch (e) {
    throw new ServeError(`${what}: cannot read ${path}: ${(e as Error).message}`)
  }
}

/** Reads a listener's certificate files into the transport's TLS config. */
export const tlsConfig = (tls: Config.TlsSettings, key: string): Transport.ServerTlsConfig => ({
  default: { cert: readText(`${key}.cert`, tls.cert), key: readText(`${key}.key`, tls.key) },
  sni: tls.sni.map((s, i) => ({
    names: s.names,
    certificate: { cert: readText(`${key}.sni[${i}].cert`, s.cert), key: readText(`${key}.sni[${i}].key`, s.key) }
  })),
  minVersion: tls.min_version
})

const storageLayer = (settings: Config.StorageSettings): Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> => {
  switch (settings.type) {
    case "disk":
      return DenoDisk.layer({ directory: settings.path })
    case "memory":
      return QueueStorage.memory
    case "redis":
      throw new ServeError("queue.storage.type: redis storage is not available on Deno; use disk or memory")
  }
}

const relayLayer = (settings: Config.RelaySettings, hostname: string): Layer.Layer<Relay.Relay> => {
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
      }).pipe(Layer.provide(DenoProcess.layer))
    case "http":
      return HttpRelay.layer({ url: settings.url, timeoutMs: ms(settings.timeout), ehlo: hostname })
    case "mx":
    case "static":
    case "lmtp":
      throw new ServeError(`relay.type: the ${settings.type} relay is not available yet in this version; use maildir, pipe, http or blackhole`)
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
    const parsed = QueuePolicy.parseAliasesFile(readText("queue.policies.aliases_file", p.aliases_file))
    if (parsed.errors.length > 0) {
      throw new ServeError(parsed.errors.map((e) => `queue.policies.aliases_file: ${p.aliases_file}:${e.line}: ${e.message}`).join("\n"))
    }
    out.push(QueuePolicy.aliases(parsed.table))
  }
  if (p.split === "recipient") out.push(QueuePolicy.recipientSplit)
  if (p.split === "domain") out.push(QueuePolicy.recipientDomainSplit)
  return out
}

const loadUsers = (key: string, path: string): ReadonlyMap<string, string> => {
  const { users, errors } = UsersFile.parse(readText(key, path))
  if (errors.length > 0) throw new ServeError(errors.map((e) => `${key}: users file ${path}:${e.line}: ${e.message}`).join("\n"))
  return users
}

const endpointOf = (address: Config.ListenAddress): Transport.Endpoint =>
  address._tag === "Unix" ? { _tag: "Unix", path: address.path } : { _tag: "Inet", address: address.host, port: address.port }

/** The running server: its edges (with their bound endpoints) and the queue. */
export interface Running {
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
    const relay = relayLayer(config.relay, hostname)
    const storage = storageLayer(config.queue.storage)
    const retry = config.queue.retry
    const services = yield* Layer.build(Layer.mergeAll(relay, storage, DenoTransport.listenerLayer))
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
          shutdownGraceMs: ms(l.shutdown_grace)
        }).pipe(Effect.provide(Layer.mergeAll(queueLayer, credentials)), Effect.provideContext(services))
        const tlsSettings = l.tls
        edges.push({
          name,
          edge,
          reload: () =>
            tlsSettings
              ? Effect.suspend(() => edge.setTls(tlsConfig(tlsSettings, `${key}.tls`))).pipe(
                Effect.tap(() => Effect.logInfo("certificates reloaded").pipe(Effect.annotateLogs({ edge: name }))),
                Effect.catchCause((cause) =>
                  Effect.logError("certificate reload failed").pipe(Effect.annotateLogs({ edge: name, cause: String(cause) }))
                )
              )
              : Effect.void
        })
      }
    }
    return {
      edges: edges.map(({ name, edge }) => ({ name, edge })),
      queue: durable,
      reloadTls: Effect.forEach(edges, (e) => e.reload(), { discard: true }),
      shutdown: Effect.forEach(edges, (e) => e.edge.shutdown, { concurrency: "unbounded", discard: true })
    } satisfies Running
  })

const encoder = new TextEncoder()

/** The log layer: logfmt or JSON lines on standard output. */
export const logLayer = (settings: Config.Config["log"]): Layer.Layer<never> =>
  Log.layer({ format: settings.format, level: settings.level, sink: (line) => void Deno.stdout.writeSync(encoder.encode(`${line}\n`)) })

const describe = (e: unknown): string => {
  if (e instanceof Error) return e.message
  if (typeof e === "object" && e !== null && "message" in e) return String((e as { message: unknown }).message)
  return String(e)
}

/**
 * Runs the server until SIGTERM or SIGINT (graceful shutdown) and resolves
 * once it has stopped. Rejects when it cannot start.
 */
export const serve = async (config: Config.Config): Promise<void> => {
  const logging = logLayer(config.log)
  const scope = Effect.runSync(Scope.make())
  const running = await Effect.runPromise(start(config).pipe(Scope.provide(scope), Effect.provide(logging))).catch(async (e) => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw e instanceof ServeError ? e : new ServeError(describe(e))
  })
  await new Promise<void>((resolve) => {
    let stopping = false
    const onHup = () => void Effect.runPromise(running.reloadTls.pipe(Effect.provide(logging)))
    const stop = (signal: Deno.Signal) => {
      if (stopping) return
      stopping = true
      Deno.removeSignalListener("SIGHUP", onHup)
      Effect.runPromise(
        Effect.logInfo("shutting down").pipe(Effect.annotateLogs({ signal }), Effect.andThen(running.shutdown), Effect.provide(logging))
      ).finally(() => Effect.runPromise(Scope.close(scope, Exit.void)).finally(resolve))
    }
    Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"))
    Deno.addSignalListener("SIGINT", () => stop("SIGINT"))
    Deno.addSignalListener("SIGHUP", onHup)
  })
}
