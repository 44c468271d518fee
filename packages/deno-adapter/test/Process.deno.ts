/**
 * Deno: the cross-runtime ProcessSpawner scenarios (test/scenarios) on
 * `DenoProcess` (`Deno.Command`), and the protocol's README example
 * (examples/protocol-session.ts) run unchanged under Deno.
 */
import * as Assert from "../../../test/scenarios/Assert.ts"
import { processSpawnerScenarios } from "../../../test/scenarios/ProcessSpawnerScenarios.ts"
import { denoEnv } from "./DenoEnv.ts"
import { register } from "./DenoScenarios.ts"

register(processSpawnerScenarios(denoEnv))

Deno.test("the protocol example (examples/protocol-session.ts) runs under Deno", async () => {
  const mod = await import("../../../examples/protocol-session.ts")
  Assert.match(mod.transcript, /^220 mx\.example\.test ESMTP Mailroom\r\n250-mx\.example\.test\r\n/)
  Assert.includes(mod.transcript, "250 2.6.0 Ok: queued as 0001\r\n221 2.0.0 Bye\r\n")
})
