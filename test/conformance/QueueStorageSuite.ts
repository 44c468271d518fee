/**
 * The conformance suite every `QueueStorage` passes, for vitest: call
 * `suite(name, layer, options)` from an implementation's test file.
 *
 * The checks themselves are the runtime-neutral scenarios of
 * `test/scenarios/QueueStorageScenarios.ts`, which Deno registers with
 * `Deno.test` too (packages/deno-adapter/test/Storage.deno.ts); this file
 * only registers them with vitest and re-exports the envelope helpers.
 */
import type { Layer } from "effect"
import type * as QueueStorage from "../../packages/protocol/src/queue/QueueStorage.ts"
import { queueStorageScenarios, type SuiteOptions } from "../scenarios/QueueStorageScenarios.ts"
import { register } from "../support/vitestScenarios.ts"

export { eightBitBody, freshId, fullEnvelope, simpleEnvelope, type SuiteOptions } from "../scenarios/QueueStorageScenarios.ts"

/**
 * Runs the conformance suite against `layer` (one vitest test per scenario).
 *
 * @example
 * suite("memory", QueueStorage.memory)
 * suite("disk", DiskStorage.layer({ directory }), { reopen: DiskStorage.layer({ directory }) })
 */
export const suite = (
  name: string,
  layer: Layer.Layer<QueueStorage.QueueStorage, unknown>,
  options: SuiteOptions = {}
): void => register(queueStorageScenarios(name, layer, options))
