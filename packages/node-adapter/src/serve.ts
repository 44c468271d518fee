/**
 * `mailroom serve` on Node: the Node platform (`node:net`/`node:tls`
 * transport, `NodeDns`, disk, journal or memory storage, `NodeFileSystem`,
 * `NodeProcess`, `node:fs` reads, `node:http`/`node:https` for the HTTP
 * edge) handed to the runtime-neutral `Compose.start`, which builds the
 * edges, the queue and the relay a decoded `Config` describes. `serve` runs
 * them until SIGTERM or SIGINT, then shuts down gracefully (stop accepting,
 * let messages in flight finish within each listener's `shutdown_grace`, 421
 * the rest). SIGHUP reloads the TLS certificates without dropping
 * connections.
 *
 * The embedded default (no config file): SMTP on 127.0.0.1:2525, the durable
 * queue on disk under ./var/queue, local delivery into Maildir folders under
 * ./var/mail (one per recipient).
 *
 * What it deliberately does not do: Redis storage (not available yet) or
 * Deno KV (Deno only): both are refused at startup naming
 * `queue.storage.type`.
 *
 * @since 0.1.0
 */
import * as NodeDns from "@effect/platform-node/NodeDns"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as Compose from "@mailroom/protocol/config/Compose"
import type * as Config from "@mailroom/protocol/config/Config"
import type * as Transport from "@mailroom/protocol/edge/Transport"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { readFileSync } from "node:fs"
import * as DiskStorage from "./DiskStorage.ts"
import * as JournalStorage from "./JournalStorage.ts"
import * as NodeHttp from "./NodeHttp.ts"
import * as NodeLog from "./NodeLog.ts"
import * as NodeProcess from "./NodeProcess.ts"
import * as NodeTransport from "./NodeTransport.ts"

export { ServeError } from "@mailroom/protocol/config/Compose"
export type { Running } from "@mailroom/protocol/config/Compose"

const readText = (path: string): string => readFileSync(path, "utf8")

/** The Node platform of `Compose.start`. */
export const platform: Compose.Platform = {
  name: "Node",
  transport: NodeTransport.layer,
  dns: (options) =>
    (options.nameServers === undefined
      ? NodeDns.make()
      : NodeDns.make({ nameServers: options.nameServers.map((s) => s.text), timeout: options.timeoutMs, tries: options.tries })).pipe(
        Effect.mapError((e) => new Error(Compose.describe(e)))
      ),
  storage: (settings) => {
    switch (settings.type) {
      case "disk":
        return DiskStorage.layer({ directory: settings.path })
      case "journal":
        return JournalStorage.layer({ directory: settings.path })
      case "memory":
        return QueueStorage.memory
      case "redis":
        return "redis storage is not available yet in this version; use disk or memory"
      case "kv":
        return "kv (Deno KV) storage runs on Deno only; on Node use disk or memory"
    }
  },
  fileSystem: Layer.merge(NodeFileSystem.layer, NodePath.layer),
  processes: NodeProcess.layer,
  readText,
  serveHttp: (handler, options) => NodeHttp.serve({ handler, host: options.host, port: options.port, ...(options.tls ? { tls: options.tls } : {}) })
}

/** Reads a listener's certificate files into the transport's TLS config; throws a `ServeError` naming the key. */
export const tlsConfig = (tls: Config.TlsSettings, key: string): Transport.ServerTlsConfig => Compose.tlsConfig(tls, key, readText)

/** Builds and starts everything in the current scope, with Node's services. */
export const start = (config: Config.Config): Effect.Effect<Compose.Running, Compose.ServeError, Scope.Scope> =>
  Compose.start(config, platform)

/**
 * Runs the server until SIGTERM or SIGINT (graceful shutdown) and resolves
 * once it has stopped. Rejects with a `ServeError` when it cannot start (a
 * port in use, a file that cannot be read), before anything listens where
 * possible.
 */
export const serve = async (config: Config.Config): Promise<void> => {
  const logging = NodeLog.layer(config.log)
  const scope = Effect.runSync(Scope.make())
  const running = await Effect.runPromise(start(config).pipe(Scope.provide(scope), Effect.provide(logging))).catch(async (e) => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw e instanceof Compose.ServeError ? e : new Compose.ServeError(Compose.describe(e))
  })
  await new Promise<void>((resolve) => {
    let stopping = false
    const onHup = () => void Effect.runPromise(running.reloadTls.pipe(Effect.provide(logging)))
    const stop = (signal: string) => {
      if (stopping) return
      stopping = true
      process.off("SIGHUP", onHup)
      Effect.runPromise(
        Effect.logInfo("shutting down").pipe(Effect.annotateLogs({ signal }), Effect.andThen(running.shutdown), Effect.provide(logging))
      ).finally(() => Effect.runPromise(Scope.close(scope, Exit.void)).finally(resolve))
    }
    process.once("SIGTERM", () => stop("SIGTERM"))
    process.once("SIGINT", () => stop("SIGINT"))
    process.on("SIGHUP", onHup)
  })
}
