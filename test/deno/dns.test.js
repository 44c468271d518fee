// Deno: DenoDns against a real dnsmasq on a loopback port (suite in packages/deno-adapter/test).
import "../../packages/deno-adapter/test/Dns.deno.ts"
