// Node: the cross-runtime SMTP edge scenarios (test/scenarios) on NodeTransport, with real clients.
import { smtpEdgeScenarios } from "../scenarios/SmtpEdgeScenarios.ts"
import { nodeEnv } from "../support/nodeEnv.ts"
import { register } from "../support/vitestScenarios.ts"

register(smtpEdgeScenarios(nodeEnv))
