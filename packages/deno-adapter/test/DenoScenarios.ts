/**
 * Registers a runtime-neutral `ScenarioSuite` (test/scenarios) with
 * `Deno.test`: one test per scenario (so `deno test` counts them one by
 * one), the suite's `setup` run once before the first, its `teardown` after
 * the last. The vitest twin is test/support/vitestScenarios.ts.
 *
 * Deno's op and resource sanitizers are off: a listener's linger timer or a
 * socket closed by the peer a moment after the scenario ended is not a
 * leak of the code under test, and the scenarios check closing themselves.
 */
import type { ScenarioSuite } from "../../../test/scenarios/Scenario.ts"

const withTimeout = async (p: Promise<void>, ms: number, what: string): Promise<void> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
      })
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** Registers every scenario of `suite` as a `Deno.test`. */
export const register = (suite: ScenarioSuite, defaultTimeoutMs = 30_000): void => {
  let ready: Promise<void> | undefined
  const setup = () => (ready ??= suite.setup?.() ?? Promise.resolve())
  const last = suite.scenarios.length - 1
  suite.scenarios.forEach((s, i) => {
    Deno.test({
      name: `${suite.name} › ${s.name}`,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => {
        try {
          await withTimeout(setup(), 120_000, "setup")
          await withTimeout(s.run(), s.timeoutMs ?? defaultTimeoutMs, s.name)
        } finally {
          if (i === last && suite.teardown !== undefined) await suite.teardown()
        }
      }
    })
  })
}
