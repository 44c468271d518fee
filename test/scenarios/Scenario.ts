/**
 * The shape of a cross-runtime scenario, and the small environment a
 * runtime gives it. A scenario is a plain async function that uses only web
 * APIs, `effect`, the protocol package and what `Env` provides; thin
 * wrappers register the same scenarios with vitest (`test/node/`, and
 * `test/conformance/QueueStorageSuite.ts`) and with `Deno.test`
 * (`test/deno/` → `packages/deno-adapter/test/`).
 *
 * What it deliberately does not do: assertions (see `Assert.ts`) or any
 * runtime API: a scenario that needs a socket, a process or a file asks
 * `Env` for it.
 */
import type * as Layer from "effect/Layer"
import type * as Transport from "../../packages/protocol/src/edge/Transport.ts"
import type * as ProcessSpawner from "../../packages/protocol/src/process/ProcessSpawner.ts"

/** One named check. */
export interface Scenario {
  readonly name: string
  readonly run: () => Promise<void>
  /** Per-scenario time limit in ms (default: the runner's). */
  readonly timeoutMs?: number | undefined
}

/** Scenarios that share a set-up (e.g. certificates). */
export interface ScenarioSuite {
  readonly name: string
  /** Runs once, before the first scenario. */
  readonly setup?: (() => Promise<void>) | undefined
  /** Runs once, after the last scenario (also when scenarios failed). */
  readonly teardown?: (() => Promise<void>) | undefined
  readonly scenarios: ReadonlyArray<Scenario>
}

/** Files, for scenarios that need a temporary directory (paths use `/`). */
export interface Files {
  /** A fresh, empty temporary directory. */
  readonly tempDir: (prefix: string) => Promise<string>
  readonly writeFile: (path: string, data: string | Uint8Array) => Promise<void>
  readonly readTextFile: (path: string) => Promise<string>
  readonly readFile: (path: string) => Promise<Uint8Array>
  readonly exists: (path: string) => Promise<boolean>
  /** Removes a directory tree; a missing one is fine. */
  readonly removeDir: (path: string) => Promise<void>
}

/** What a runtime provides to the scenarios. */
export interface Env {
  readonly runtime: "node" | "deno"
  /** The runtime's `Listener` and `Connector`, with an optional read high-water mark (bytes). */
  readonly transport: (options?: { readonly highWaterMark?: number }) => Layer.Layer<Transport.Listener | Transport.Connector>
  /** The runtime's `ProcessSpawner` (real programs: openssl, swaks, python3). */
  readonly spawner: Layer.Layer<ProcessSpawner.ProcessSpawner>
  readonly files: Files
}

/** A promise and the function that resolves it. */
export interface Signal<A> {
  readonly promise: Promise<A>
  readonly resolve: (a: A) => void
}

/** Makes a `Signal`. */
export const signal = <A = void>(): Signal<A> => {
  let resolve!: (a: A) => void
  const promise = new Promise<A>((r) => (resolve = r))
  return { promise, resolve }
}

/** Waits `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
