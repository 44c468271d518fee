/**
 * `@mailroom/deno`: Mailroom's services for Deno 2: the transport
 * (listeners and connectors, TLS, PROXY), the queue storages (disk,
 * journal, Deno KV), DNS, the process spawner, the HTTP server for the
 * HTTP edge (`Deno.serve`), and `serve` for the `mailroom` command on Deno
 * (`main.ts`). Each module is also importable on its own.
 *
 * @since 0.1.0
 */
export * as DenoDisk from "./DenoDisk.ts"
export * as DenoDns from "./DenoDns.ts"
export * as DenoHttp from "./DenoHttp.ts"
export * as DenoJournal from "./DenoJournal.ts"
export * as DenoKvStorage from "./DenoKvStorage.ts"
export * as DenoProcess from "./DenoProcess.ts"
export * as DenoTransport from "./DenoTransport.ts"
