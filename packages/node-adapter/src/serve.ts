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
 * `run` is what `mailroom serve` calls: with `workers: N` (N > 1) it runs
 * `Supervisor` in this process and N worker processes, each this same
 * command with `MAILROOM_WORKER=<n>` set, serving on listeners shared
 * through SO_REUSEPORT and one disk queue. A worker stops gracefully when
 * its standard input (a pipe from the supervisor) ends, so `kill -9` of the
 * supervisor leaves no orphans, and exits 78 when it cannot start.
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
import * as Supervisor from "@mailroom/protocol/process/Supervisor"
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
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
  serveHttp: (handler, options) => NodeHttp.serve({ handler, host: options.host, port: options.port, reusePort: options.reusePort, ...(options.tls ? { tls: options.tls } : {}) })
}

/** Reads a listener's certificate files into the transport's TLS config; throws a `ServeError` naming the key. */
export const tlsConfig = (tls: Config.TlsSettings, key: string): Transport.ServerTlsConfig => Compose.tlsConfig(tls, key, readText)

/** Builds and starts everything in the current scope, with Node's services. */
export const start = (config: Config.Config, options?: Compose.StartOptions): Effect.Effect<Compose.Running, Compose.ServeError, Scope.Scope> =>
  Compose.start(config, platform, options)

/**
 * Runs the server until SIGTERM or SIGINT (graceful shutdown) and resolves
 * once it has stopped. Rejects with a `ServeError` when it cannot start (a
 * port in use, a file that cannot be read), before anything listens where
 * possible.
 */
export const serve = async (config: Config.Config, options: Compose.StartOptions = {}): Promise<void> => {
  const worker = options.worker
  const logging = NodeLog.layer(config.log, worker === undefined ? {} : { annotations: { worker } })
  const scope = Effect.runSync(Scope.make())
  const running = await Effect.runPromise(start(config, options).pipe(Scope.provide(scope), Effect.provide(logging))).catch(async (e) => {
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
    if (worker !== undefined) {
      // the supervisor holds the other end of standard input: its end means the supervisor is gone
      process.stdin.on("data", () => {}).once("end", () => stop("supervisor gone")).once("error", () => stop("supervisor gone"))
    }
  }).finally(() => {
    if (worker !== undefined) process.stdin.destroy()
  })
}

const bin = fileURLToPath(new URL("../bin/mailroom.mjs", import.meta.url))

/**
 * Supervises `config.workers` worker processes, each `mailroom serve
 * --config configFile` with `MAILROOM_WORKER` set, until SIGTERM or SIGINT;
 * resolves with the exit code (see `Supervisor`).
 */
export const supervise = async (config: Config.Config, configFile: string): Promise<number> => {
  const logging = NodeLog.layer(config.log)
  const supervisor = Supervisor.start({ workers: config.workers }, {
    spawn: (worker) => {
      const child = spawn(process.execPath, [...process.execArgv, bin, "serve", "--config", configFile], {
        env: { ...process.env, [Supervisor.WORKER_ENV]: String(worker) },
        stdio: ["pipe", "inherit", "inherit"]
      })
      const exited = new Promise<Supervisor.Exit>((resolve) => {
        child.once("exit", (code, signal) => resolve({ code, signal }))
        // a spawn that failed (no such program) reports here and never exits
        child.once("error", (e) => {
          if (child.pid === undefined) resolve({ code: null, signal: e.message })
        })
      })
      child.stdin!.on("error", () => {})
      return { pid: child.pid ?? -1, exited, kill: (signal) => void child.kill(signal) }
    },
    log: Supervisor.logTo(logging)
  })
  const onTerm = () => supervisor.stop("SIGTERM")
  const onInt = () => supervisor.stop("SIGINT")
  const onHup = () => supervisor.reload()
  process.on("SIGTERM", onTerm).on("SIGINT", onInt).on("SIGHUP", onHup)
  const code = await supervisor.done
  process.off("SIGTERM", onTerm).off("SIGINT", onInt).off("SIGHUP", onHup)
  return code
}

/**
 * `mailroom serve`: one process, a worker (`MAILROOM_WORKER` set), or the
 * supervisor of `config.workers` workers. Resolves with the exit code when
 * it is not 0; rejects with a `ServeError` when a lone server cannot start.
 */
export const run = async (config: Config.Config, configFile: string | undefined): Promise<number | void> => {
  const worker = Supervisor.parseWorker(process.env[Supervisor.WORKER_ENV])
  if (worker !== undefined) {
    try {
      return await serve(config, { worker })
    } catch (e) {
      process.stderr.write(`mailroom: worker ${worker}: ${e instanceof Error ? e.message : String(e)}\n`)
      return Supervisor.EXIT_CANNOT_START
    }
  }
  if (config.workers === 1) return serve(config)
  if (configFile === undefined) throw new Compose.ServeError(`workers: ${config.workers} workers need a config file (serve --config FILE)`)
  return supervise(config, configFile)
}
