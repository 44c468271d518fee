// Deno: the read-deadline heap behind DenoConnection's readWithin (suite in packages/deno-adapter/test).
import "../../packages/deno-adapter/test/Deadlines.deno.ts"
