/**
 * `mailroom serve` on Deno: the Deno platform handed to the runtime-neutral
 * `Compose.start` (the same composition as on Node: every relay, the rules,
 * the HTTP edge), plus logging and signals. `serve` runs until SIGTERM or
 * SIGINT, then shuts down gracefully (stop accepting, let messages in flight
 * finish within each listener's `shutdown_grace`, 421 the rest). SIGHUP
 * reloads the TLS certificates.
 *
 * `run` is what `mailroom serve` calls: with `workers: N` (N > 1) it runs
 * `Supervisor` in this process and N worker processes (`deno run
 * --allow-all --unstable-net --unstable-kv` of this entry point, with
 * `MAILROOM_WORKER=<n>` set), which share the listeners through
 * SO_REUSEPORT (unstable in Deno, hence `--unstable-net`) and one disk or kv
 * queue. A worker stops gracefully when its standard input (a pipe from the
 * supervisor) ends, and exits 78 when it cannot start.
 *
 * The Deno platform:
 *
 * - listeners and connectors: `DenoTransport`;
 * - the resolver: `DenoDns` (`Deno.resolveDns`), with the configured name
 *   servers tried in order on time-outs, refusals and server failures, for
 *   `dns.tries` rounds; the system's when none is configured;
 * - the queue: `DenoDisk` (`type: disk`, the same on-disk format as Node's),
 *   `DenoJournal` (`type: journal`, the same journal as Node's, owned by
 *   this process while it runs), `DenoKvStorage` (`type: kv`, Deno KV in a
 *   file, its parent directory created), or memory;
 * - the Maildir relay's file system: effect's `FileSystem` and `Path` from
 *   `@effect/platform-node` through Deno's Node compatibility (effect has no
 *   Deno file system of its own; Deno's `node:fs` open, fsync, link and
 *   rename are what the relay needs);
 * - processes: `DenoProcess` (`Deno.Command`);
 * - files (certificates, users, aliases): `Deno.readTextFileSync`;
 * - the HTTP edge: `DenoHttp` (`Deno.serve`).
 *
 * What it deliberately does not do: Redis storage (not available yet),
 * refused at startup naming `queue.storage.type`.
 *
 * @since 0.1.0
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as Compose from "@mailroom/protocol/config/Compose"
import type * as Config from "@mailroom/protocol/config/Config"
import type * as Transport from "@mailroom/protocol/edge/Transport"
import * as Log from "@mailroom/protocol/observability/Log"
import * as Supervisor from "@mailroom/protocol/process/Supervisor"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Dns from "effect/net/Dns"
import * as NetAddress from "effect/net/NetAddress"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import * as DenoDisk from "./DenoDisk.ts"
import * as DenoDns from "./DenoDns.ts"
import * as DenoHttp from "./DenoHttp.ts"
import * as DenoJournal from "./DenoJournal.ts"
import * as DenoKvStorage from "./DenoKvStorage.ts"
import * as DenoProcess from "./DenoProcess.ts"
import * as DenoTransport from "./DenoTransport.ts"

export { ServeError } from "@mailroom/protocol/config/Compose"
export type { Running } from "@mailroom/protocol/config/Compose"

const readText = (path: string): string => Deno.readTextFileSync(path)

/** Worth asking the next name server: the failure was the server's, not the name's. */
const serverFault = (e: Dns.DnsError): boolean => e.isTemporary || e.reason === "Refused" || e.reason === "Unknown"

/**
 * One resolver over several: each query goes to the first name server, and
 * to the next on a server fault, for `tries` rounds; other failures
 * (`NotFound`, ...) are answers and end the query.
 */
export const failover = (servers: ReadonlyArray<Dns.Dns["Service"]>, tries: number): Dns.Dns["Service"] => {
  const first = servers[0]
  if (first === undefined) throw new RangeError("failover: no name server")
  if (servers.length === 1 && tries <= 1) return first
  const attempts = Array.from({ length: Math.max(1, tries) }, () => servers).flat()
  const ask = <A>(f: (s: Dns.Dns["Service"]) => Effect.Effect<A, Dns.DnsError>): Effect.Effect<A, Dns.DnsError> =>
    attempts.slice(1).reduce<Effect.Effect<A, Dns.DnsError>>(
      (acc, s) => Effect.catchIf(acc, serverFault, () => f(s)),
      f(first)
    )
  return Dns.make({
    lookup: (host, family) => ask((s) => s.lookup(host, family === undefined ? undefined : { family })),
    resolve: (name, type) => ask((s) => s.resolve(name, type)),
    reverse: (address) => ask((s) => s.reverse(address))
  })
}

/** The KV's parent directory, created when missing. */
const kvLayer = (path: string): Layer.Layer<QueueStorage.QueueStorage, QueueStorage.StorageError> =>
  Layer.unwrap(
    Effect.tryPromise({
      try: async () => {
        const slash = path.lastIndexOf("/")
        if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true, mode: 0o700 })
      },
      catch: (e) => QueueStorage.error("Io", "open", undefined, `cannot create the directory of ${path}: ${e instanceof Error ? e.message : String(e)}`, e)
    }).pipe(Effect.as(DenoKvStorage.layer({ path })))
  )

/** The Deno platform of `Compose.start`. */
export const platform: Compose.Platform = {
  name: "Deno",
  transport: DenoTransport.layer,
  dns: (options) =>
    Effect.suspend(() => {
      if (options.nameServers === undefined) return Effect.succeed(DenoDns.make({ timeoutMs: options.timeoutMs }))
      const services: Array<Dns.Dns["Service"]> = []
      for (const s of options.nameServers) {
        if (Result.isFailure(NetAddress.ipFromString(s.host))) {
          return Effect.fail(new Error(`name server ${s.text}: Deno's resolver takes name servers by IP address`))
        }
        services.push(DenoDns.make({ nameServer: { ipAddr: s.host, port: s.port }, timeoutMs: options.timeoutMs }))
      }
      return Effect.succeed(failover(services, options.tries))
    }),
  storage: (settings) => {
    switch (settings.type) {
      case "disk":
        return DenoDisk.layer({ directory: settings.path })
      case "journal":
        return DenoJournal.layer({ directory: settings.path })
      case "kv":
        return kvLayer(settings.path)
      case "memory":
        return QueueStorage.memory
      case "redis":
        return "redis storage is not available yet in this version; on Deno use kv, disk or memory"
    }
  },
  fileSystem: Layer.merge(NodeFileSystem.layer, NodePath.layer),
  processes: DenoProcess.layer,
  readText,
  serveHttp: (handler, options) => DenoHttp.serve({ handler, host: options.host, port: options.port, reusePort: options.reusePort, ...(options.tls ? { tls: options.tls } : {}) })
}

/** Reads a listener's certificate files into the transport's TLS config; throws a `ServeError` naming the key. */
export const tlsConfig = (tls: Config.TlsSettings, key: string): Transport.ServerTlsConfig => Compose.tlsConfig(tls, key, readText)

/** Builds and starts everything in the current scope, with Deno's services. */
export const start = (config: Config.Config, options?: Compose.StartOptions): Effect.Effect<Compose.Running, Compose.ServeError, Scope.Scope> =>
  Compose.start(config, platform, options)

const encoder = new TextEncoder()

/** The log layer: logfmt or JSON lines on standard output. */
export const logLayer = (settings: Config.Config["log"], annotations?: Readonly<Record<string, unknown>>): Layer.Layer<never> =>
  Log.layer({
    format: settings.format,
    level: settings.level,
    annotations,
    sink: (line) => {
      const bytes = encoder.encode(`${line}\n`)
      for (let o = 0; o < bytes.length;) o += Deno.stdout.writeSync(bytes.subarray(o))
    }
  })

/**
 * Runs the server until SIGTERM or SIGINT (graceful shutdown) and resolves
 * once it has stopped. Rejects with a `ServeError` when it cannot start.
 */
export const serve = async (config: Config.Config, options: Compose.StartOptions = {}): Promise<void> => {
  const worker = options.worker
  const logging = logLayer(config.log, worker === undefined ? undefined : { worker })
  const scope = Effect.runSync(Scope.make())
  const running = await Effect.runPromise(start(config, options).pipe(Scope.provide(scope), Effect.provide(logging))).catch(async (e) => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw e instanceof Compose.ServeError ? e : new Compose.ServeError(Compose.describe(e))
  })
  await new Promise<void>((resolve) => {
    let stopping = false
    const onHup = () => void Effect.runPromise(running.reloadTls.pipe(Effect.provide(logging)))
    const onTerm = () => stop("SIGTERM")
    const onInt = () => stop("SIGINT")
    const stop = (signal: string) => {
      if (stopping) return
      stopping = true
      Deno.removeSignalListener("SIGHUP", onHup)
      Effect.runPromise(
        Effect.logInfo("shutting down").pipe(Effect.annotateLogs({ signal }), Effect.andThen(running.shutdown), Effect.provide(logging))
      ).finally(() =>
        Effect.runPromise(Scope.close(scope, Exit.void)).finally(() => {
          Deno.removeSignalListener("SIGTERM", onTerm)
          Deno.removeSignalListener("SIGINT", onInt)
          resolve()
        })
      )
    }
    Deno.addSignalListener("SIGTERM", onTerm)
    Deno.addSignalListener("SIGINT", onInt)
    Deno.addSignalListener("SIGHUP", onHup)
    if (worker !== undefined) {
      // the supervisor holds the other end of standard input: its end means the supervisor is gone
      const drain = async () => {
        const buffer = new Uint8Array(256)
        try {
          while ((await Deno.stdin.read(buffer)) !== null);
        } catch {
          // a broken pipe is the same news
        }
        stop("supervisor gone")
      }
      void drain()
    }
  })
}

/**
 * Supervises `config.workers` worker processes, each this entry point's
 * `serve --config configFile` with `MAILROOM_WORKER` set, until SIGTERM or
 * SIGINT; resolves with the exit code (see `Supervisor`).
 */
export const supervise = async (config: Config.Config, configFile: string): Promise<number> => {
  const logging = logLayer(config.log)
  const main = new URL("./main.ts", import.meta.url).href
  const supervisor = Supervisor.start({ workers: config.workers }, {
    spawn: (worker) => {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--unstable-net", "--unstable-kv", "--quiet", main, "serve", "--config", configFile],
        env: { [Supervisor.WORKER_ENV]: String(worker) },
        stdin: "piped",
        stdout: "inherit",
        stderr: "inherit"
      }).spawn()
      // held open, never written: its end tells the worker the supervisor is gone
      const stdin = child.stdin.getWriter()
      const exited = child.status.then((s) => {
        stdin.close().catch(() => {})
        return { code: s.signal === null ? s.code : null, signal: s.signal }
      })
      return {
        pid: child.pid,
        exited,
        kill: (signal) => {
          try {
            child.kill(signal)
          } catch {
            // already gone
          }
        }
      }
    },
    log: Supervisor.logTo(logging)
  })
  const onTerm = () => supervisor.stop("SIGTERM")
  const onInt = () => supervisor.stop("SIGINT")
  const onHup = () => supervisor.reload()
  Deno.addSignalListener("SIGTERM", onTerm)
  Deno.addSignalListener("SIGINT", onInt)
  Deno.addSignalListener("SIGHUP", onHup)
  const code = await supervisor.done
  Deno.removeSignalListener("SIGTERM", onTerm)
  Deno.removeSignalListener("SIGINT", onInt)
  Deno.removeSignalListener("SIGHUP", onHup)
  return code
}

/**
 * `mailroom serve`: one process, a worker (`MAILROOM_WORKER` set), or the
 * supervisor of `config.workers` workers. Resolves with the exit code when
 * it is not 0; rejects with a `ServeError` when a lone server cannot start.
 */
export const run = async (config: Config.Config, configFile: string | undefined): Promise<number | void> => {
  const worker = Supervisor.parseWorker(Deno.env.get(Supervisor.WORKER_ENV))
  if (worker !== undefined) {
    try {
      return await serve(config, { worker })
    } catch (e) {
      const text = `mailroom: worker ${worker}: ${e instanceof Error ? e.message : String(e)}\n`
      Deno.stderr.writeSync(encoder.encode(text))
      return Supervisor.EXIT_CANNOT_START
    }
  }
  if (config.workers === 1) return serve(config)
  if (configFile === undefined) throw new Compose.ServeError(`workers: ${config.workers} workers need a config file (serve --config FILE)`)
  return supervise(config, configFile)
}
