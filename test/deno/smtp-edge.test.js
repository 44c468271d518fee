// Deno: the cross-runtime SMTP edge scenarios (SmtpEdge over DenoTransport,
// real smtplib and swaks clients). The suite is TypeScript in
// packages/deno-adapter/test, type-checked by `deno check`.
import "../../packages/deno-adapter/test/SmtpEdge.deno.ts"
