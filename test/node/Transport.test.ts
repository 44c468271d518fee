// Node: the cross-runtime transport scenarios (test/scenarios) on NodeTransport.
import { transportScenarios } from "../scenarios/TransportScenarios.ts"
import { nodeEnv } from "../support/nodeEnv.ts"
import { register } from "../support/vitestScenarios.ts"

register(transportScenarios(nodeEnv), 20_000)
