// Deno: the embedding example examples/embed-deno.ts (suite in packages/deno-adapter/test).
import "../../packages/deno-adapter/test/EmbedExample.deno.ts"
