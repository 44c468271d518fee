/**
 * Registers a runtime-neutral `ScenarioSuite` (test/scenarios) with vitest:
 * one `describe` per suite, one `it` per scenario, `setup`/`teardown` as
 * `beforeAll`/`afterAll`. The Deno twin is
 * packages/deno-adapter/test/DenoScenarios.ts.
 */
import { afterAll, beforeAll, describe, it } from "vitest"
import type { ScenarioSuite } from "../scenarios/Scenario.ts"

/** Registers every scenario of `suite` as a vitest test. */
export const register = (suite: ScenarioSuite, defaultTimeoutMs?: number): void => {
  describe(suite.name, () => {
    if (suite.setup !== undefined) beforeAll(suite.setup, 120_000)
    if (suite.teardown !== undefined) afterAll(suite.teardown, 60_000)
    for (const s of suite.scenarios) it(s.name, s.run, s.timeoutMs ?? defaultTimeoutMs)
  })
}
