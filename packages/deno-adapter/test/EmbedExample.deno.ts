/**
 * Deno: the README's embedding example for Deno (examples/embed-deno.ts)
 * type-checks with `deno check`, runs as a plain `deno run --allow-net`
 * program, and takes a message from swaks into its durable queue (memory
 * storage, blackhole relay).
 */
import * as Assert from "../../../test/scenarios/Assert.ts"

const root = new URL("../../../", import.meta.url).pathname
const example = `${root}examples/embed-deno.ts`
const decoder = new TextDecoder()

Deno.test({
  name: "examples/embed-deno.ts: deno check passes; it runs and queues a message from swaks",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const check = await new Deno.Command(Deno.execPath(), { args: ["check", example], cwd: root, stdout: "piped", stderr: "piped" }).output()
    Assert.equal(check.code, 0, `deno check: ${decoder.decode(check.stderr)}`)

    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--no-check", example, "0"],
      cwd: root,
      stdout: "piped",
      stderr: "piped"
    }).spawn()
    const errText = new Response(child.stderr).text()
    let out = ""
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader()
    try {
      // it prints the bound address once the edge listens
      const deadline = Date.now() + 15_000
      let port: number | undefined
      while (port === undefined) {
        if (Date.now() > deadline) throw new Error(`no "listening on" line; stdout: ${out}`)
        const { value, done } = await reader.read()
        if (done) throw new Error(`the example exited: ${out}${await errText}`)
        out += value
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out)
        if (m) port = Number(m[1])
      }
      const swaks = await new Deno.Command("swaks", {
        args: ["--server", `127.0.0.1:${port}`, "--from", "alice@example.org", "--to", "bob@example.test", "--header", "Subject: embedded"],
        stdout: "piped",
        stderr: "piped"
      }).output()
      const transcript = decoder.decode(swaks.stdout)
      Assert.equal(swaks.code, 0, `swaks: ${transcript}${decoder.decode(swaks.stderr)}`)
      Assert.match(transcript, /<-  220 mx\.example\.test ESMTP/)
      Assert.match(transcript, /<-  250 2\.6\.0 Ok: queued as [0-9a-z]+/)
      // local_domains: an unauthenticated client may not relay elsewhere
      const relay = await new Deno.Command("swaks", {
        args: ["--server", `127.0.0.1:${port}`, "--from", "alice@example.org", "--to", "bob@elsewhere.example", "--quit-after", "RCPT"],
        stdout: "piped",
        stderr: "piped"
      }).output()
      Assert.match(decoder.decode(relay.stdout), /<\*\* 550 5\.7\.1 /)
    } finally {
      child.kill("SIGTERM")
      await reader.cancel().catch(() => undefined)
      await child.status
      await errText
    }
  }
})
