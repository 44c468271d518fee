/**
 * Every case of the RFC 7208 test suite (OpenSPF, shared/conformance/spf)
 * through `Spf.check`, each scenario answered by a `Dns` service built from
 * its zone data (see support/SpfZone.ts for the driver semantics).
 */
import { readFileSync } from "node:fs"
import * as Effect from "effect/Effect"
import * as Dns from "effect/net/Dns"
import { parseAllDocuments } from "yaml"
import { describe, expect, it } from "vitest"
import * as Spf from "../src/policy/Spf.ts"
import * as SpfZone from "./support/SpfZone.ts"

const FILE = "/work/shared/conformance/spf/rfc7208-tests.yml"

interface Case {
  readonly helo: string
  readonly host: string
  readonly mailfrom: string
  readonly result: string | ReadonlyArray<string>
  readonly explanation?: string
}

interface Scenario {
  readonly description: string
  readonly tests: Record<string, Case>
  readonly zonedata: Record<string, ReadonlyArray<unknown>>
}

const scenarios: ReadonlyArray<Scenario> = parseAllDocuments(readFileSync(FILE, "utf8")).map((d) => {
  if (d.errors.length > 0) throw new Error(String(d.errors[0]))
  return d.toJS() as Scenario
})

const allCases = scenarios.flatMap((s) => Object.entries(s.tests).map(([id, c]) => ({ scenario: s, id, c })))

const run = (zone: SpfZone.Zone, c: Case): Promise<Spf.Outcome> =>
  Effect.runPromise(
    Spf.check({ ip: c.host, sender: c.mailfrom, helo: c.helo }, { defaultExplanation: "DEFAULT" }).pipe(
      Effect.provideService(Dns.Dns, SpfZone.service(zone))
    )
  )

describe("RFC 7208 test suite", () => {
  it("has the 16 scenarios and 203 cases the README counts", () => {
    expect(scenarios.length).toBe(16)
    expect(allCases.length).toBe(203)
  })

  for (const scenario of scenarios) {
    const zone = SpfZone.fromZonedata(scenario.zonedata)
    describe(scenario.description, () => {
      for (const [id, c] of Object.entries(scenario.tests)) {
        it(id, async () => {
          const outcome = await run(zone, c)
          const accepted = typeof c.result === "string" ? [c.result] : c.result
          expect(accepted, `${id}: got ${outcome.result} (${outcome.problem ?? outcome.mechanism ?? ""})`).toContain(
            outcome.result
          )
          if (c.explanation !== undefined) expect(outcome.explanation).toBe(c.explanation)
        })
      }
    })
  }
})
