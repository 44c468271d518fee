/**
 * Deno: the cross-runtime SMTP edge scenarios (test/scenarios):
 * `SmtpEdge.make` from the protocol package over `DenoTransport`, driven by
 * Python's smtplib and swaks, run through `DenoProcess`.
 */
import { smtpEdgeScenarios } from "../../../test/scenarios/SmtpEdgeScenarios.ts"
import { denoEnv } from "./DenoEnv.ts"
import { register } from "./DenoScenarios.ts"

register(smtpEdgeScenarios(denoEnv))
