// Deno: the ProcessSpawner scenarios on DenoProcess, and the protocol example
// under Deno (suite in packages/deno-adapter/test).
import "../../packages/deno-adapter/test/Process.deno.ts"
