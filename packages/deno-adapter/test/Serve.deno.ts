/**
 * Deno: `mailroom serve` end to end on Deno (packages/deno-adapter/src/main.ts
 * in a child `deno run`): a config file with an SMTP listener, the disk queue
 * and Maildir delivery; swaks sends a message; it is queued, relayed into
 * the Maildir, and SIGTERM stops the server with exit code 0. Also
 * `check-config` reporting a bad key, the same as on Node.
 */
import * as Assert from "../../../test/scenarios/Assert.ts"

const main = new URL("../src/main.ts", import.meta.url).pathname
const root = new URL("../../../", import.meta.url).pathname
const decoder = new TextDecoder()

const freePort = (): number => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 })
  const port = l.addr.port
  l.close()
  return port
}

const files = async (dir: string): Promise<Array<string>> => {
  const out: Array<string> = []
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`)
      else out.push(`${d}/${e.name}`)
    }
  }
  await walk(dir).catch(() => undefined)
  return out
}

const waitFor = async <A>(what: string, f: () => Promise<A | undefined>, ms = 15_000): Promise<A> => {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

Deno.test({
  name: "mailroom serve on Deno: swaks → SMTP edge → disk queue → Maildir; SIGTERM stops it cleanly",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "mailroom-deno-serve-" })
    try {
      const port = freePort()
      await Deno.writeTextFile(`${dir}/mailroom.yaml`, [
        "hostname: mx.example.test",
        "log: { level: info }",
        "smtp:",
        `  - listen: 127.0.0.1:${port}`,
        "    local_domains: [example.test]",
        "queue:",
        `  storage: { type: disk, path: ${dir}/queue }`,
        "relay:",
        `  type: maildir`,
        `  path: ${dir}/mail`,
        ""
      ].join("\n"))
      const server = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--no-check", main, "serve", "--config", `${dir}/mailroom.yaml`],
        cwd: root,
        stdout: "piped",
        stderr: "piped"
      }).spawn()
      let log = ""
      const logDone = (async () => {
        for await (const chunk of server.stdout.pipeThrough(new TextDecoderStream())) log += chunk
      })()
      const errText = new Response(server.stderr).text()
      try {
        await waitFor("the listener", async () => {
          try {
            const c = await Deno.connect({ hostname: "127.0.0.1", port })
            c.close()
            return true
          } catch {
            return undefined
          }
        })
        const swaks = await new Deno.Command("swaks", {
          args: [
            "--server", `127.0.0.1:${port}`, "--ehlo", "client.example",
            "--from", "alice@example.org", "--to", "bob@example.test",
            "--header", "Subject: served by Deno", "--body", "caf\u00e9 from swaks"
          ],
          stdout: "piped",
          stderr: "piped"
        }).output()
        const transcript = decoder.decode(swaks.stdout)
        Assert.equal(swaks.code, 0, `swaks: ${transcript}${decoder.decode(swaks.stderr)}`)
        Assert.match(transcript, /<-  250 2\.6\.0 Ok: queued as [0-9a-z]+/)
        const delivered = await waitFor("the Maildir delivery", async () => {
          const all = await files(`${dir}/mail`)
          for (const f of all) {
            const text = await Deno.readTextFile(f)
            if (text.includes("served by Deno")) return text
          }
          return undefined
        })
        Assert.includes(delivered, "caf\u00e9 from swaks")
        Assert.match(delivered, /Received: from client\.example/)
        Assert.includes(delivered, "by mx.example.test")
        // the queue is empty again once delivered
        await waitFor("an empty queue", async () => ((await files(`${dir}/queue/meta`)).length === 0 ? true : undefined))
        // an open relay is refused: bob@elsewhere.example is not local
        const refused = await new Deno.Command("swaks", {
          args: ["--server", `127.0.0.1:${port}`, "--from", "alice@example.org", "--to", "bob@elsewhere.example", "--quit-after", "RCPT"],
          stdout: "piped",
          stderr: "piped"
        }).output()
        Assert.match(decoder.decode(refused.stdout), /<\*\* 550 5\.7\.1 /)
      } finally {
        server.kill("SIGTERM")
      }
      const status = await server.status
      await logDone
      const stderr = await errText
      Assert.equal(status.code, 0, `exit ${status.code}: ${stderr}`)
      Assert.match(log, /shutting down/)
      Assert.match(log, /listening/)
    } finally {
      await Deno.remove(dir, { recursive: true })
    }
  }
})

Deno.test({
  name: "mailroom check-config on Deno names the bad key; --version prints the package version",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "mailroom-deno-cfg-" })
    try {
      await Deno.writeTextFile(`${dir}/bad.yaml`, "smtp:\n  - listen: 127.0.0.1:2525\n    max_message_size: lots\n")
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--no-check", main, "check-config", `${dir}/bad.yaml`],
        stdout: "piped",
        stderr: "piped"
      }).output()
      Assert.equal(out.code, 1)
      Assert.includes(decoder.decode(out.stderr), `${dir}/bad.yaml:3: smtp[0].max_message_size: expected a size`)
      const version = await new Deno.Command(Deno.execPath(), { args: ["run", "--allow-all", "--no-check", main, "--version"], stdout: "piped" }).output()
      Assert.equal(decoder.decode(version.stdout), "mailroom 0.1.0\n")
    } finally {
      await Deno.remove(dir, { recursive: true })
    }
  }
})
