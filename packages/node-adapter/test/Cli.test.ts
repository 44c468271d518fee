import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Config from "@mailroom/protocol/config/Config"
import * as Cli from "../src/cli/Cli.ts"
import { canConnect, freePort, removeDir, tempDir } from "../../../test/support/ports.ts"

const root = new URL("../../../", import.meta.url).pathname
const bin = path.join(root, "packages/node-adapter/bin/mailroom.mjs")
const version = (JSON.parse(fs.readFileSync(path.join(root, "packages/node-adapter/package.json"), "utf8")) as { version: string })
  .version

interface Ran {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the real `mailroom` bin with this Node, from the repository root. */
const mailroom = (...args: Array<string>): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

let dir: string
beforeAll(() => {
  dir = tempDir("mailroom-cli-")
})
afterAll(() => removeDir(dir))

const write = (name: string, text: string): string => {
  const file = path.join(dir, name)
  fs.writeFileSync(file, text)
  return file
}

describe("mailroom (the real bin)", () => {
  it("--help prints the usage with every command and option, exit 0", async () => {
    const r = await mailroom("--help")
    expect(r.code).toBe(0)
    expect(r.stderr).toBe("")
    expect(r.stdout).toBe(Cli.usage())
    expect(r.stdout).toMatch(/^Usage: mailroom <command> \[options\]\n/)
    for (const s of ["serve [--config FILE]", "check-config FILE", "-c, --config FILE", "-h, --help", "-V, --version"]) {
      expect(r.stdout).toContain(s)
    }
  })

  it("--version prints the package version, exit 0", async () => {
    expect(await mailroom("--version")).toEqual({ code: 0, stdout: `mailroom ${version}\n`, stderr: "" })
    expect((await mailroom("-V")).stdout).toBe(`mailroom ${version}\n`)
  })

  it("check-config accepts both examples and prints ok with a summary", async () => {
    const full = await mailroom("check-config", "examples/mailroom.yaml")
    expect(full).toEqual({
      code: 0,
      stdout:
        "ok: SMTP 0.0.0.0:25,[::1]:25 (STARTTLS); LMTP unix:/run/mailroom/lmtp.sock; queue disk ./var/queue; relay mx; HTTP 127.0.0.1:8025\n",
      stderr: ""
    })
    const msa = await mailroom("check-config", "examples/submission.yaml")
    expect(msa.code).toBe(0)
    expect(msa.stdout).toBe(
      "ok: SMTP [::]:587 (STARTTLS) auth required; SMTP [::]:465 (TLS) auth required; queue disk /var/spool/mailroom; relay mx\n"
    )
  })

  it("check-config of a bad YAML file prints every problem with file and line, exit 1", async () => {
    const file = write("bad.yaml", "hostname: mx.example.com\nsmtp:\n  - max_message_size: lots\n    modee: smtp\n")
    const r = await mailroom("check-config", file)
    expect(r.code).toBe(1)
    expect(r.stdout).toBe("")
    expect(r.stderr.split("\n")).toEqual([
      `${file}:4: smtp[0].modee: unknown key (did you mean mode?); expected one of: listen, mode, banner, tls, implicit_tls, proxy_protocol, max_message_size, max_recipients, max_bad_commands, max_connections, max_connections_per_client, command_timeout, data_timeout, bare_newline, auth, require_auth, require_tls, local_domains, shutdown_grace, rules`,
      `${file}:3: smtp[0].max_message_size: expected a size such as "25MiB" or a number of bytes, got "lots"`,
      `mailroom: ${file}: 2 problems`,
      ""
    ])
  })

  it("check-config of a bad JSON file, a missing file, and a missing argument", async () => {
    const json = write("bad.json", `{"relay": {"type": "smarthost"}}`)
    const r = await mailroom("check-config", json)
    expect(r.code).toBe(1)
    expect(r.stderr).toBe(
      `${json}: relay.type: expected one of "maildir", "mx", "static", "lmtp", "pipe", "http", "blackhole", got "smarthost"\n` +
        `mailroom: ${json}: 1 problem\n`
    )
    const missing = await mailroom("check-config", path.join(dir, "nope.yaml"))
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/^mailroom: cannot read .*nope\.yaml: ENOENT/)
    const none = await mailroom("check-config")
    expect(none.code).toBe(2)
    expect(none.stderr).toBe(`mailroom: missing FILE\n\n${Cli.usage()}`)
  })

  it("an unknown command or flag prints the usage on stderr, exit 2", async () => {
    const cmd = await mailroom("frobnicate")
    expect(cmd).toEqual({ code: 2, stdout: "", stderr: `mailroom: unknown command "frobnicate"\n\n${Cli.usage()}` })
    const flag = await mailroom("--frobnicate")
    expect(flag).toEqual({ code: 2, stdout: "", stderr: `mailroom: unknown option "--frobnicate"\n\n${Cli.usage()}` })
    const sub = await mailroom("serve", "--port", "25")
    expect(sub.code).toBe(2)
    expect(sub.stderr).toMatch(/^mailroom: Unknown option '--port'\n\nUsage: mailroom/)
    const none = await mailroom()
    expect(none.code).toBe(2)
    expect(none.stderr).toBe(`mailroom: missing command\n\n${Cli.usage()}`)
  })

  it("serve with a bad config prints the problems and exits 1 before anything listens", async () => {
    const port = await freePort()
    const file = write("serve-bad.yaml", `smtp:\n  - listen: 127.0.0.1:${port}\n    max_recipients: many\n`)
    const r = await mailroom("serve", "--config", file)
    expect(r.code).toBe(1)
    expect(r.stdout).toBe("")
    expect(r.stderr).toBe(
      `${file}:3: smtp[0].max_recipients: expected a whole number of at least 1, got "many"\n` +
        `mailroom: ${file}: 1 problem\nmailroom: not starting\n`
    )
    expect(await canConnect("127.0.0.1", port)).toBe(false)
  })

  it("a command's --help", async () => {
    const r = await mailroom("serve", "--help")
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^Usage: mailroom serve \[--config FILE\]\n/)
    expect((await mailroom("help", "check-config")).stdout).toMatch(/^Usage: mailroom check-config FILE\n/)
  })
})

describe("Cli.run (in-process)", () => {
  const io = (over: Partial<Cli.Io> & { files?: Record<string, string> } = {}) => {
    const out = { stdout: "", stderr: "", served: [] as Array<Config.Config> }
    const files = over.files ?? {}
    const value: Cli.Io = {
      stdout: (t) => void (out.stdout += t),
      stderr: (t) => void (out.stderr += t),
      readFile: async (p) => {
        const text = files[p]
        if (text === undefined) throw new Error(`ENOENT: no such file or directory, open '${p}'`)
        return text
      },
      hostname: () => "host.example",
      version: () => "9.9.9",
      serve: async (config) => void out.served.push(config),
      ...over
    }
    return { io: value, out }
  }

  it("serve without --config runs the embedded default with the OS host name filled in", async () => {
    const { io: i, out } = io()
    expect(await Cli.run(["serve"], i)).toBe(0)
    expect(out.served).toEqual([Config.withHostname(Config.embeddedDefault, "host.example")])
  })

  it("serve --config FILE / -c FILE / --config=FILE decode YAML and JSON by extension", async () => {
    const files = { "a.yaml": "hostname: a.example\n", "b.json": `{"hostname": "b.example"}`, "c.conf": "hostname: c.example" }
    for (const args of [["--config", "a.yaml"], ["-c", "b.json"], ["--config=c.conf"]]) {
      const { io: i, out } = io({ files })
      expect(await Cli.run(["serve", ...args], i)).toBe(0)
      expect(out.served.map((c) => c.hostname)).toHaveLength(1)
    }
    const { io: i, out } = io({ files })
    await Cli.run(["serve", "-c", "b.json"], i)
    expect(out.served[0]!.hostname).toBe("b.example")
  })

  it("an OS host name that is not a domain name falls back to localhost, with a warning", async () => {
    const { io: i, out } = io({ hostname: () => "my_host" })
    expect(await Cli.run(["serve"], i)).toBe(0)
    expect(out.served[0]!.hostname).toBe("localhost")
    expect(out.stderr).toBe(`mailroom: the OS host name "my_host" is not a valid domain name; using "localhost" (set hostname in the config)\n`)
  })

  it("a failing serve exits 1 with its message", async () => {
    const { io: i, out } = io({ serve: () => Promise.reject(new Error("listen EADDRINUSE 127.0.0.1:2525")) })
    expect(await Cli.run(["serve"], i)).toBe(1)
    expect(out.stderr).toBe("mailroom: listen EADDRINUSE 127.0.0.1:2525\n")
  })

  it("serve hands the config file on (workers re-read it) and exits with the code serve() gives", async () => {
    const seen: Array<string | undefined> = []
    const { io: i } = io({ files: { "w.yaml": "workers: 2\n" }, serve: async (config, file) => (seen.push(file), config.workers === 2 ? 1 : undefined) })
    expect(await Cli.run(["serve", "-c", "w.yaml"], i)).toBe(1)
    expect(await Cli.run(["serve"], i)).toBe(0)
    expect(seen).toEqual(["w.yaml", undefined])
  })

  it("serve never calls serve() when the config is bad", async () => {
    const { io: i, out } = io({ files: { "x.yaml": "relay: { type: nope }" } })
    expect(await Cli.run(["serve", "-c", "x.yaml"], i)).toBe(1)
    expect(out.served).toEqual([])
  })

  it("serve rejects stray arguments", async () => {
    const { io: i, out } = io()
    expect(await Cli.run(["serve", "extra"], i)).toBe(2)
    expect(out.stderr).toMatch(/^mailroom: unexpected argument "extra"\n/)
  })
})
