// Deno: the cross-runtime transport scenarios on DenoTransport (the suite is
// TypeScript in packages/deno-adapter/test, type-checked by `deno check`).
import "../../packages/deno-adapter/test/Transport.deno.ts"
