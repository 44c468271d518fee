// Deno: QueueStorage conformance on DenoDisk and Deno KV. The suite is
// TypeScript in packages/deno-adapter/test (type-checked by `deno check`,
// out of reach of the repo's Node-typed tsc, which includes test/).
import "../../packages/deno-adapter/test/Storage.deno.ts"
// Deno: the journal storage (DenoJournal), its Node interop, kill -9, and `mailroom serve`/`queue` on a journal.
import "../../packages/deno-adapter/test/DenoJournal.deno.ts"
