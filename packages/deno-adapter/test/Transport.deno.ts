/**
 * Deno: the cross-runtime transport scenarios (test/scenarios) on
 * `DenoTransport`: native `Deno.listen`/`Deno.connect` connections, PROXY
 * headers read exactly from a `Deno.Conn`, listeners with certificates on
 * Deno's `node:tls`, client TLS on `Deno.startTls` and, without
 * verification, on `node:tls`.
 */
import { transportScenarios } from "../../../test/scenarios/TransportScenarios.ts"
import { denoEnv } from "./DenoEnv.ts"
import { register } from "./DenoScenarios.ts"

register(transportScenarios(denoEnv), 20_000)
