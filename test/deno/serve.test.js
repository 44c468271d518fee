// Deno: `mailroom serve` end to end on Deno (suite in packages/deno-adapter/test).
import "../../packages/deno-adapter/test/Serve.deno.ts"
