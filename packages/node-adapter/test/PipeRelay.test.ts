/**
 * PipeRelay over NodeProcess with real delivery agents: Courier maildrop
 * with a filter file of the test's own, dovecot-lda against a private Dovecot
 * (its own config, base_dir and passwd-file userdb), and small /bin/sh
 * scripts for exit statuses, argument handling, signals and time-outs.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as nfs from "node:fs"
import * as os from "node:os"
import * as npath from "node:path"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import { simpleParser } from "mailparser"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import type * as ProcessSpawner from "@mailroom/protocol/process/ProcessSpawner"
import * as PipeRelay from "@mailroom/protocol/relay/PipeRelay"
import type * as Relay from "@mailroom/protocol/relay/Relay"
import * as NodeProcess from "../src/NodeProcess.ts"

const enc = new TextEncoder()
const MESSAGE = enc.encode(
  "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: pipe test\r\nMessage-ID: <p1@example.org>\r\n\r\nHello agent.\r\nSecond line.\r\n"
)
const LF_MESSAGE = Buffer.from(new TextDecoder().decode(MESSAGE).replace(/\r\n/g, "\n"))

const env = (recipients: ReadonlyArray<string>, sender = "alice@example.org", client?: Partial<Envelope.ClientFacts>) =>
  Envelope.make({
    sender,
    recipients,
    message: MESSAGE,
    id: "01pipetest",
    client: { ...Envelope.unknownClient, address: "192.0.2.7", ehlo: "client.example", protocol: "ESMTPS", ...client }
  })

const attempt = (
  relay: Effect.Effect<Relay.Relay["Service"], never, ProcessSpawner.ProcessSpawner>,
  envelope: Envelope.Envelope,
  layer: Layer.Layer<ProcessSpawner.ProcessSpawner> = NodeProcess.layer
): Promise<Relay.RelayResult> =>
  Effect.runPromise(Effect.provide(Effect.flatMap(relay, (r) => r.attempt(envelope, 0)), layer))

const reply = (code: number, enhanced: string, text: string) => ({ code, enhanced, lines: [text] })

// running, and not a zombie waiting to be reaped (a container's init may reap late)
const isAlive = (pid: number): boolean => {
  try {
    return !/^\d+ \(.*\) [ZX]/s.test(nfs.readFileSync(`/proc/${pid}/stat`, "utf8"))
  } catch {
    return false
  }
}

let base: string
const script = (name: string, body: string): string => {
  const p = npath.join(base, name)
  nfs.writeFileSync(p, `#!/bin/sh\n${body}\n`, { mode: 0o755 })
  return p
}

beforeAll(() => {
  base = nfs.mkdtempSync(npath.join(os.tmpdir(), "mailroom-pipe-"))
  nfs.chmodSync(base, 0o755)
})
afterAll(() => {
  nfs.rmSync(base, { recursive: true, force: true })
})

// ---------------------------------------------------------------------------

describe("PipeRelay with Courier maildrop", () => {
  const maildir = () => {
    const dir = nfs.mkdtempSync(npath.join(base, "md-"))
    for (const sub of ["tmp", "new", "cur"]) nfs.mkdirSync(npath.join(dir, sub))
    return dir
  }
  const filter = (name: string, text: string): string => {
    const p = npath.join(base, name)
    // maildrop refuses a filter file that others can write
    nfs.writeFileSync(p, text, { mode: 0o600 })
    return p
  }

  it("maildrop is installed", () => {
    expect(() => execFileSync("maildrop", ["-v"], { stdio: "pipe" }), "apt-get install maildrop").not.toThrow()
  })

  it("delivers one copy for all recipients into a Maildir, with LF line ends", async () => {
    const dir = maildir()
    const f = filter("deliver.filter", `to "${dir}/"\n`)
    const result = await attempt(PipeRelay.MaildropRelay({ extraArgs: [f], timeoutMs: 20_000 }), env(["bob@example.com", "carol@example.com"]))
    expect(result.recipients).toEqual([
      { outcome: "delivered", reply: reply(250, "2.0.0", "Delivered via maildrop") },
      { outcome: "delivered", reply: reply(250, "2.0.0", "Delivered via maildrop") }
    ])
    expect(result.remote).toBe("pipe; maildrop")
    const files = nfs.readdirSync(npath.join(dir, "new"))
    expect(files).toHaveLength(1)
    const bytes = nfs.readFileSync(npath.join(dir, "new", files[0]!))
    expect(bytes.equals(LF_MESSAGE)).toBe(true)
    const parsed = await simpleParser(bytes)
    expect(parsed.subject).toBe("pipe test")
    expect(parsed.text).toBe("Hello agent.\nSecond line.\n")
  })

  it("reads EXITCODE 75 as transient and its 'maildrop: ' text as the reply", async () => {
    const f = filter("tempfail.filter", `echo "maildrop: Mailbox is over quota, try later"\nEXITCODE=75\nexit\n`)
    const result = await attempt(PipeRelay.MaildropRelay({ extraArgs: [f], timeoutMs: 20_000 }), env(["bob@example.com"]))
    expect(result.recipients).toEqual([{ outcome: "transient", reply: reply(450, "4.3.0", "Mailbox is over quota, try later") }])
  })

  it("reads any other non-zero status as permanent", async () => {
    const f = filter("reject.filter", `echo "Rejected by local policy"\nEXITCODE=77\nexit\n`)
    const result = await attempt(PipeRelay.MaildropRelay({ extraArgs: [f], timeoutMs: 20_000 }), env(["bob@example.com", "c@example.com"]))
    expect(result.recipients).toEqual([
      { outcome: "permanent", reply: reply(550, "5.7.1", "Rejected by local policy") },
      { outcome: "permanent", reply: reply(550, "5.7.1", "Rejected by local policy") }
    ])
  })

  it("turns maildrop's own failure (a missing Maildir) into a transient reply carrying its message", async () => {
    const f = filter("missing.filter", `to "${npath.join(base, "no-such-maildir")}/"\n`)
    const result = await attempt(PipeRelay.MaildropRelay({ extraArgs: [f], timeoutMs: 20_000 }), env(["bob@example.com"]))
    expect(result.recipients[0]!.outcome).toBe("transient")
    expect(result.recipients[0]!.reply.code).toBe(450)
    expect(result.recipients[0]!.reply.lines[0]).toMatch(/^Unable to /)
  })
})

// ---------------------------------------------------------------------------

describe("PipeRelay with dovecot-lda and a private Dovecot", () => {
  const LDA = "/usr/lib/dovecot/dovecot-lda"
  let dir: string
  let master: ChildProcess | undefined
  let masterLog = ""

  beforeAll(async () => {
    dir = nfs.mkdtempSync(npath.join(base, "dv-"))
    nfs.chmodSync(dir, 0o755)
    const mail = npath.join(dir, "mail")
    nfs.mkdirSync(mail)
    nfs.chownSync(mail, 65534, 65534)
    nfs.writeFileSync(npath.join(dir, "users"), `bob@example.com::65534:65534::${mail}/bob@example.com\n`)
    nfs.writeFileSync(
      npath.join(dir, "dovecot.conf"),
      [
        "protocols =",
        `base_dir = ${dir}/run`,
        `state_dir = ${dir}/state`,
        "log_path = /dev/stderr",
        "info_log_path = /dev/stderr",
        `mail_location = maildir:${mail}/%u`,
        "ssl = no",
        `userdb {\n  driver = passwd-file\n  args = ${dir}/users\n}`,
        "passdb {\n  driver = static\n  args = nopassword=y\n}",
        "service auth {\n  unix_listener auth-userdb {\n    mode = 0666\n  }\n}",
        "service anvil {\n  chroot =\n}",
        ""
      ].join("\n")
    )
    if (!nfs.existsSync(LDA)) throw new Error(`${LDA} is missing: apt-get install dovecot-core`)
    master = spawn("dovecot", ["-F", "-c", npath.join(dir, "dovecot.conf")], { stdio: ["ignore", "pipe", "pipe"] })
    master.stdout!.on("data", (c: Buffer) => (masterLog += c.toString()))
    master.stderr!.on("data", (c: Buffer) => (masterLog += c.toString()))
    const socket = npath.join(dir, "run", "auth-userdb")
    for (let i = 0; i < 100 && !nfs.existsSync(socket); i++) await new Promise((r) => setTimeout(r, 100))
    if (!nfs.existsSync(socket)) throw new Error(`the private Dovecot did not start (no ${socket}):\n${masterLog}`)
  })

  afterAll(async () => {
    if (master?.pid !== undefined && master.exitCode === null) {
      const exited = new Promise((r) => master!.once("exit", r))
      master.kill("SIGTERM")
      await exited
    }
  })

  it("delivers per recipient: bob gets the message, an unknown user is a permanent 5.1.1", async () => {
    const relay = PipeRelay.DovecotLdaRelay({ path: LDA, config: npath.join(dir, "dovecot.conf"), timeoutMs: 20_000 })
    const result = await attempt(relay, env(["bob@example.com", "carol@example.com"]))
    expect(result.recipients[0]).toEqual({ outcome: "delivered", reply: reply(250, "2.0.0", "Delivered via dovecot-lda") })
    expect(result.recipients[1]!.outcome).toBe("permanent")
    expect(result.recipients[1]!.reply.code).toBe(550)
    expect(result.recipients[1]!.reply.enhanced).toBe("5.1.1")
    const inbox = npath.join(dir, "mail", "bob@example.com", "new")
    const files = nfs.readdirSync(inbox)
    expect(files).toHaveLength(1)
    const parsed = await simpleParser(nfs.readFileSync(npath.join(inbox, files[0]!)))
    expect(parsed.subject).toBe("pipe test")
    expect(parsed.messageId).toBe("<p1@example.org>")
    expect(parsed.text).toBe("Hello agent.\nSecond line.\n")
    expect(nfs.existsSync(npath.join(dir, "mail", "carol@example.com"))).toBe(false)
  })

  it("passes the null sender and a hostile recipient as single arguments: no shell runs", async () => {
    const marker = npath.join(base, "pwned-dovecot")
    const relay = PipeRelay.DovecotLdaRelay({ path: LDA, config: npath.join(dir, "dovecot.conf"), timeoutMs: 20_000 })
    const result = await attempt(relay, env([`x;touch ${marker}@example.com`, `$(touch ${marker})@example.com`, "bob@example.com"], ""))
    expect(result.recipients.map((r) => r.outcome)).toEqual(["permanent", "permanent", "delivered"])
    expect(nfs.existsSync(marker)).toBe(false)
  })
})

// ---------------------------------------------------------------------------

describe("PipeRelay with scripts (postfix flavour, arguments, signals, time-outs)", () => {
  it("keeps every macro value one argument, never runs a shell on it, and pipes the message", async () => {
    const out = npath.join(base, "args.out")
    const stdinOut = npath.join(base, "stdin.out")
    const marker = npath.join(base, "pwned")
    const s = script("args.sh", `printf '%s\\0' "$@" > '${out}'\ncat > '${stdinOut}'\nexit 0`)
    const hostile = `x;touch ${marker} $(touch ${marker}) \`touch ${marker}\` | & > ${marker}@example.com`
    const relay = PipeRelay.make({
      command: [s, "--to={recipient}", "{sender}", "{client_ehlo}", "{message_id}/{client_ip}/{client_protocol}/{client_auth}/{client_host}", "{unknown}"],
      perRecipient: true,
      timeoutMs: 10_000,
      exitCodes: "postfix",
      newline: "crlf"
    })
    const result = await attempt(relay, env([hostile], "a b@example.org", { ehlo: "-evil\r\nhelo" }))
    expect(result.recipients).toEqual([{ outcome: "delivered", reply: reply(250, "2.0.0", "Delivered via args.sh") }])
    expect(nfs.readFileSync(out, "utf8").split("\0")).toEqual([
      `--to=${hostile}`,
      "a b@example.org",
      "_evilhelo",
      "01pipetest/192.0.2.7/ESMTPS//",
      "{unknown}",
      ""
    ])
    expect(nfs.readFileSync(stdinOut).equals(Buffer.from(MESSAGE))).toBe(true)
    expect(nfs.existsSync(marker)).toBe(false)
  })

  it("runs once per recipient with perRecipient, once in all without", async () => {
    const log = npath.join(base, "runs.log")
    const s = script("runs.sh", `echo "$1" >> '${log}'`)
    const per = PipeRelay.make({ command: [s, "{recipient}"], perRecipient: true, timeoutMs: 10_000, exitCodes: "postfix" })
    await attempt(per, env(["a@x.example", "b@x.example"]))
    expect(nfs.readFileSync(log, "utf8")).toBe("a@x.example\nb@x.example\n")
    nfs.rmSync(log)
    const once = PipeRelay.make({ command: [s, "{recipient}"], perRecipient: false, timeoutMs: 10_000, exitCodes: "postfix" })
    const result = await attempt(once, env(["a@x.example", "b@x.example"]))
    expect(result.recipients.map((r) => r.outcome)).toEqual(["delivered", "delivered"])
    expect(nfs.readFileSync(log, "utf8")).toBe("a@x.example\n")
  })

  it("maps exit statuses: 75 transient, 1 permanent (maildrop/dovecot flavours); postfix reads 5.X.X text", async () => {
    const exit = (code: number, text: string, to: "out" | "err" = "out") =>
      script(`exit${code}${to}.sh`, `cat > /dev/null\necho '${text}' ${to === "err" ? ">&2" : ""}\nexit ${code}`)
    const run = (flavour: PipeRelay.ExitCodes, path: string) =>
      attempt(PipeRelay.make({ command: [path], perRecipient: true, timeoutMs: 10_000, exitCodes: flavour }), env(["bob@example.com"])).then(
        (r) => r.recipients[0]
      )
    expect(await run("dovecot", exit(75, "Temporary failure"))).toEqual({ outcome: "transient", reply: reply(450, "4.3.0", "Temporary failure") })
    expect(await run("dovecot", exit(1, "Fatal error", "err"))).toEqual({ outcome: "permanent", reply: reply(550, "5.3.0", "Fatal error") })
    expect(await run("maildrop", exit(1, ""))).toEqual({ outcome: "permanent", reply: reply(550, "5.3.0", "Delivery failed") })
    expect(await run("dovecot", exit(67, ""))).toEqual({ outcome: "permanent", reply: reply(550, "5.1.1", "LDA delivery failed") })
    expect(await run("postfix", exit(1, "5.1.1 No such user here"))).toEqual({ outcome: "permanent", reply: reply(550, "5.1.1", "No such user here") })
    expect(await run("postfix", exit(75, "5.2.2 Over quota", "err"))).toEqual({ outcome: "permanent", reply: reply(550, "5.2.2", "Over quota") })
    expect(await run("postfix", exit(1, "4.2.1 Mailbox busy"))).toEqual({ outcome: "transient", reply: reply(450, "4.2.1", "Mailbox busy") })
    expect(await run("postfix", exit(1, "something broke"))).toEqual({ outcome: "transient", reply: reply(450, "4.3.0", "something broke") })
    expect(await run("postfix", exit(3, ""))).toEqual({ outcome: "transient", reply: reply(450, "4.3.0", "Delivery failed") })
  })

  it("sanitizes the agent's output into one line", async () => {
    const s = script("noisy.sh", `printf '\\n\\n  5.7.1 Bad\\tthing\\033[0m\\r\\nsecond line\\n'\nexit 1`)
    const result = await attempt(PipeRelay.make({ command: [s], perRecipient: true, timeoutMs: 10_000, exitCodes: "postfix" }), env(["b@x.example"]))
    expect(result.recipients[0]).toEqual({ outcome: "permanent", reply: reply(550, "5.7.1", "Bad thing [0m") })
    // an escape sequence before the code: no enhanced code at the start, so transient, the text cleaned
    const t = script("noisy2.sh", `printf '\\033[31m5.7.1 Bad\\000thing\\n' >&2\nexit 1`)
    const second = await attempt(PipeRelay.make({ command: [t], perRecipient: true, timeoutMs: 10_000, exitCodes: "postfix" }), env(["b@x.example"]))
    expect(second.recipients[0]).toEqual({ outcome: "transient", reply: reply(450, "4.3.0", "[31m5.7.1 Bad thing") })
  })

  it("times out as transient 450 4.4.2 and kills the agent's whole process group", async () => {
    const pids = npath.join(base, "pids")
    const s = script("slow.sh", `sleep 60 &\necho "$$ $!" > '${pids}'\nwait`)
    const started = Date.now()
    const result = await attempt(PipeRelay.make({ command: [s], perRecipient: true, timeoutMs: 700, exitCodes: "postfix" }), env(["b@x.example"]))
    const took = Date.now() - started
    expect(took).toBeGreaterThanOrEqual(650)
    expect(took).toBeLessThan(2_000)
    expect(result.recipients[0]).toEqual({ outcome: "transient", reply: reply(450, "4.4.2", "Delivery timed out") })
    const [shell, sleeper] = nfs.readFileSync(pids, "utf8").trim().split(" ").map(Number)
    for (let i = 0; i < 50 && (isAlive(shell!) || isAlive(sleeper!)); i++) await new Promise((r) => setTimeout(r, 50))
    expect(isAlive(shell!)).toBe(false)
    expect(isAlive(sleeper!)).toBe(false)
  })

  it("does not wait for a background descendant that keeps the output pipe open", async () => {
    const pidFile = npath.join(base, "bgpid")
    const s = script("bg.sh", `sleep 30 &\necho $! > '${pidFile}'\nexit 0`)
    const started = Date.now()
    const result = await attempt(
      PipeRelay.make({ command: [s], perRecipient: true, timeoutMs: 20_000, exitCodes: "postfix" }),
      env(["b@x.example"]),
      NodeProcess.layerWith({ closeGraceMs: 300 })
    )
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(result.recipients[0]!.outcome).toBe("delivered")
    process.kill(Number(nfs.readFileSync(pidFile, "utf8").trim()), "SIGKILL")
  })

  it("answers 451 4.3.0 when the agent dies of a signal or cannot be started", async () => {
    const s = script("segv.sh", "kill -SEGV $$")
    const killed = await attempt(PipeRelay.make({ command: [s], perRecipient: true, timeoutMs: 10_000, exitCodes: "dovecot" }), env(["b@x.example"]))
    expect(killed.recipients[0]).toEqual({ outcome: "transient", reply: reply(451, "4.3.0", "segv.sh died with signal SIGSEGV") })
    const missing = await attempt(
      PipeRelay.make({ command: [npath.join(base, "no-such-agent")], perRecipient: true, timeoutMs: 10_000, exitCodes: "postfix" }),
      env(["b@x.example"])
    )
    expect(missing.recipients[0]).toEqual({ outcome: "transient", reply: reply(451, "4.3.0", "no-such-agent could not be started (NotFound)") })
    const notExecutable = npath.join(base, "not-executable")
    nfs.writeFileSync(notExecutable, "#!/bin/sh\n", { mode: 0o644 })
    const denied = await attempt(PipeRelay.make({ command: [notExecutable], perRecipient: true, timeoutMs: 10_000, exitCodes: "postfix" }), env(["b@x.example"]))
    expect(denied.recipients[0]).toEqual({ outcome: "transient", reply: reply(451, "4.3.0", "not-executable could not be started (PermissionDenied)") })
  })

  it("refuses addresses that begin with '-' before running anything", async () => {
    const log = npath.join(base, "dash.log")
    const s = script("dash.sh", `echo "$@" >> '${log}'`)
    const relay = PipeRelay.make({ command: [s, "{recipient}"], perRecipient: true, timeoutMs: 10_000, exitCodes: "postfix" })
    const result = await attempt(relay, env(["-oQ/tmp@x.example", "ok@x.example"]))
    expect(result.recipients).toEqual([
      { outcome: "permanent", reply: reply(550, "5.1.3", "Recipient address may not begin with '-'") },
      { outcome: "delivered", reply: reply(250, "2.0.0", "Delivered via dash.sh") }
    ])
    const bySender = await attempt(relay, env(["ok@x.example"], "-f@x.example"))
    expect(bySender.recipients[0]).toEqual({ outcome: "permanent", reply: reply(550, "5.1.7", "Sender address may not begin with '-'") })
    expect(nfs.readFileSync(log, "utf8")).toBe("ok@x.example\n")
  })

  it("gives the agent a minimal environment unless told otherwise", async () => {
    const out = npath.join(base, "env.out")
    const s = script("env.sh", `env | sort > '${out}'`)
    process.env["MAILROOM_SECRET_FOR_TEST"] = "s3cret"
    try {
      await attempt(PipeRelay.make({ command: [s], perRecipient: true, timeoutMs: 10_000, exitCodes: "postfix" }), env(["b@x.example"]))
      const seen = nfs.readFileSync(out, "utf8")
      expect(seen).not.toContain("MAILROOM_SECRET_FOR_TEST")
      expect(seen).toContain("PATH=")
      await attempt(
        PipeRelay.make({ command: [s], perRecipient: true, timeoutMs: 10_000, exitCodes: "postfix", env: { ONLY: "this" } }),
        env(["b@x.example"])
      )
      expect(nfs.readFileSync(out, "utf8").split("\n").filter((l) => l !== "" && !l.startsWith("PWD=") && !l.startsWith("SHLVL=") && !l.startsWith("_="))).toEqual(["ONLY=this"])
    } finally {
      delete process.env["MAILROOM_SECRET_FOR_TEST"]
    }
  })
})
