// Node: the cross-runtime ProcessSpawner scenarios (test/scenarios) on NodeProcess.
import { processSpawnerScenarios } from "../scenarios/ProcessSpawnerScenarios.ts"
import { nodeEnv } from "../support/nodeEnv.ts"
import { register } from "../support/vitestScenarios.ts"

register(processSpawnerScenarios(nodeEnv))
