import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Envelope from "../src/envelope/Envelope.ts"
import * as ProcessSpawner from "../src/process/ProcessSpawner.ts"
import * as PipeRelay from "../src/relay/PipeRelay.ts"
import type * as Relay from "../src/relay/Relay.ts"
import * as Bytes from "../src/wire/Bytes.ts"

const b = Bytes.fromLatin1
const reply = (code: number, enhanced: string, text: string) => ({ code, enhanced, lines: [text] })

const sample = Envelope.make({
  id: "01kaq8x2r0zzzzzzzzzzzzzzzz",
  sender: "alice@example.org",
  recipients: ["bob@example.com", "carol@example.com"],
  message: b("Subject: hi\r\n\r\nbody\r\n"),
  client: {
    address: "192.0.2.1",
    port: 2525,
    reverseName: "mail.example.org",
    ehlo: "mail.example.org",
    protocol: "ESMTPSA",
    tls: undefined,
    auth: "alice"
  }
})

const like = (fields: { readonly recipients?: ReadonlyArray<string>; readonly sender?: string }): Envelope.Envelope =>
  Envelope.make({
    id: sample.id,
    sender: fields.sender ?? sample.sender,
    recipients: fields.recipients ?? sample.recipients,
    message: sample.message,
    client: sample.client
  })

const run = (
  options: PipeRelay.Options,
  answer: (r: ProcessSpawner.SpawnRequest) => ProcessSpawner.SpawnResult | ProcessSpawner.SpawnError,
  envelope: Envelope.Envelope = sample
): { readonly result: Relay.RelayResult; readonly calls: Array<ProcessSpawner.SpawnRequest> } => {
  const calls: Array<ProcessSpawner.SpawnRequest> = []
  const result = Effect.runSync(
    Effect.provide(
      Effect.flatMap(PipeRelay.make(options), (r) => r.attempt(envelope, 0)),
      ProcessSpawner.layerScripted(answer, calls)
    )
  )
  return { result, calls }
}

const postfix = (command: ReadonlyArray<string>, perRecipient = true): PipeRelay.Options => ({
  command,
  perRecipient,
  timeoutMs: 1000,
  exitCodes: "postfix"
})

describe("PipeRelay helpers", () => {
  it("crlfToLf turns CRLF into LF and keeps lone CR and LF", () => {
    expect(Bytes.toLatin1(PipeRelay.crlfToLf(b("a\r\nb\rc\nd\r\n\r\r\n")))).toBe("a\nb\rc\nd\n\r\n")
    const plain = b("no line ends")
    expect(PipeRelay.crlfToLf(plain)).toBe(plain)
    expect(PipeRelay.crlfToLf(b("\r"))).toEqual(b("\r"))
  })

  it("crlfToLf removes exactly one byte per CRLF (property)", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      let pairs = 0
      for (let i = 0; i + 1 < bytes.length; i++) if (bytes[i] === 13 && bytes[i + 1] === 10) pairs++
      const out = PipeRelay.crlfToLf(bytes)
      expect(out.length).toBe(bytes.length - pairs)
    }))
  })

  it("firstLine takes the first non-blank line, cleaned, and never throws (property)", () => {
    expect(PipeRelay.firstLine(b("\n  \r\n\tfirst\x07 line \r\nsecond"))).toBe("first line")
    expect(PipeRelay.firstLine(b("\xff\xfe bad utf8"))).toBe("\ufffd\ufffd bad utf8")
    expect(PipeRelay.firstLine(new Uint8Array(0))).toBe("")
    expect(PipeRelay.firstLine(b("x".repeat(500)))).toBe("x".repeat(200))
    fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
      const s = PipeRelay.firstLine(bytes)
      expect(s.length).toBeLessThanOrEqual(200)
      expect(/[\u0000-\u001f\u007f-\u009f]/.test(s)).toBe(false)
    }))
  })

  it("macroValues cleans client facts and neutralises a leading dash", () => {
    const env = Envelope.make({
      ...sample,
      client: { ...sample.client, ehlo: "-x\r\ny", auth: undefined, reverseName: undefined }
    })
    expect(PipeRelay.macroValues(env, "bob@example.com")).toEqual({
      sender: "alice@example.org",
      recipient: "bob@example.com",
      message_id: "01kaq8x2r0zzzzzzzzzzzzzzzz",
      client_ip: "192.0.2.1",
      client_host: "",
      client_ehlo: "_xy",
      client_helo: "_xy",
      client_protocol: "ESMTPSA",
      client_auth: ""
    })
  })

  it("expand replaces macros inside each element and leaves unknown ones", () => {
    const values = PipeRelay.macroValues(sample, "bob@example.com")
    expect(PipeRelay.expand(["/bin/agent", "-f", "{sender}", "--to={recipient}", "{client_ip}:{client_protocol}", "{nope}", "{SENDER}"], values))
      .toEqual(["/bin/agent", "-f", "alice@example.org", "--to=bob@example.com", "192.0.2.1:ESMTPSA", "{nope}", "{SENDER}"])
  })

  it("expand never adds, removes or merges arguments, and never expands a macro inside a value (property)", () => {
    const names = ["sender", "recipient", "message_id", "client_ip", "client_ehlo", "client_auth", "x"]
    const element = fc.array(fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom(...names.map((n) => `{${n}}`))), { maxLength: 5 }).map((p) => p.join(""))
    fc.assert(fc.property(fc.array(element, { minLength: 1, maxLength: 6 }), fc.string(), fc.string(), (command, sender, recipient) => {
      const values = PipeRelay.macroValues(Envelope.make({ sender: `${sender}{recipient}`, recipients: [recipient], message: b("") }), `${recipient} ;{sender}`)
      const out = PipeRelay.expand(command, values)
      expect(out.length).toBe(command.length)
      for (let i = 0; i < command.length; i++) {
        if (!command[i]!.includes("{")) expect(out[i]).toBe(command[i])
      }
    }))
  })
})

describe("PipeRelay.classify", () => {
  const exited = ProcessSpawner.exited
  it("reads exit 0 as delivered in every flavour", () => {
    for (const f of ["postfix", "maildrop", "dovecot"] as const) {
      expect(PipeRelay.classify(f, exited(0, "noise"), "agent")).toEqual(reply(250, "2.0.0", "Delivered via agent"))
    }
  })

  it("postfix: 5.X.X text is permanent, 4.X.X and anything else transient, whatever the status", () => {
    expect(PipeRelay.classify("postfix", exited(1, "5.1.1 User unknown\nmore"), "a")).toEqual(reply(550, "5.1.1", "User unknown"))
    expect(PipeRelay.classify("postfix", exited(75, "", "5.2.2 Mailbox full"), "a")).toEqual(reply(550, "5.2.2", "Mailbox full"))
    expect(PipeRelay.classify("postfix", exited(67, "4.2.1 busy"), "a")).toEqual(reply(450, "4.2.1", "busy"))
    expect(PipeRelay.classify("postfix", exited(67, "5.1.1"), "a")).toEqual(reply(550, "5.1.1", "Delivery failed"))
    expect(PipeRelay.classify("postfix", exited(1, "5.1.1x no space"), "a")).toEqual(reply(450, "4.3.0", "5.1.1x no space"))
    expect(PipeRelay.classify("postfix", exited(1, "2.0.0 odd"), "a")).toEqual(reply(450, "4.3.0", "2.0.0 odd"))
    expect(PipeRelay.classify("postfix", exited(1), "a")).toEqual(reply(450, "4.3.0", "Delivery failed"))
    expect(PipeRelay.classify("postfix", exited(1, "", "oops"), "a")).toEqual(reply(450, "4.3.0", "oops"))
  })

  it("maildrop and dovecot: 75 transient, other statuses permanent with the sysexits enhanced code", () => {
    expect(PipeRelay.classify("maildrop", exited(75, "maildrop: Timeout quota exceeded"), "m")).toEqual(reply(450, "4.3.0", "Timeout quota exceeded"))
    expect(PipeRelay.classify("maildrop", exited(75, "", "maildrop: Unable to lock"), "m")).toEqual(reply(450, "4.3.0", "Unable to lock"))
    expect(PipeRelay.classify("maildrop", exited(77), "m")).toEqual(reply(550, "5.7.1", "Delivery failed"))
    expect(PipeRelay.classify("maildrop", exited(1, "maildrop: "), "m")).toEqual(reply(550, "5.3.0", "Delivery failed"))
    expect(PipeRelay.classify("dovecot", exited(67), "d")).toEqual(reply(550, "5.1.1", "LDA delivery failed"))
    expect(PipeRelay.classify("dovecot", exited(75, "", "lda: Error: quota"), "d")).toEqual(reply(450, "4.3.0", "lda: Error: quota"))
    expect(PipeRelay.classify("dovecot", exited(78, "maildrop: not stripped"), "d")).toEqual(reply(550, "5.3.5", "maildrop: not stripped"))
    expect(PipeRelay.classify("dovecot", exited(255), "d")).toEqual(reply(550, "5.3.0", "LDA delivery failed"))
  })

  it("times out as 450 4.4.2 and dies by signal as 451 4.3.0", () => {
    const empty = new Uint8Array(0)
    expect(PipeRelay.classify("maildrop", { _tag: "TimedOut", stdout: empty, stderr: empty }, "m")).toEqual(reply(450, "4.4.2", "Delivery timed out"))
    expect(PipeRelay.classify("dovecot", { _tag: "Signaled", signal: "SIGSEGV", stdout: empty, stderr: empty }, "d"))
      .toEqual(reply(451, "4.3.0", "d died with signal SIGSEGV"))
  })
})

describe("PipeRelay.make over a scripted spawner", () => {
  it("runs once per recipient with expanded arguments and LF line ends", () => {
    const { result, calls } = run(postfix(["/usr/bin/agent", "-f", "{sender}", "-d", "{recipient}"]), (r) =>
      ProcessSpawner.exited(r.args[3] === "bob@example.com" ? 0 : 1, r.args[3] === "bob@example.com" ? "" : "5.1.1 unknown"))
    expect(calls.map((c) => [c.command, ...c.args])).toEqual([
      ["/usr/bin/agent", "-f", "alice@example.org", "-d", "bob@example.com"],
      ["/usr/bin/agent", "-f", "alice@example.org", "-d", "carol@example.com"]
    ])
    expect(Bytes.toLatin1(calls[0]!.stdin)).toBe("Subject: hi\n\nbody\n")
    expect(calls[0]!.timeoutMs).toBe(1000)
    expect(result).toEqual({
      recipients: [
        { outcome: "delivered", reply: reply(250, "2.0.0", "Delivered via agent") },
        { outcome: "permanent", reply: reply(550, "5.1.1", "unknown") }
      ],
      remote: "pipe; /usr/bin/agent",
      tls: undefined
    })
  })

  it("runs once for all recipients without perRecipient, with the first as {recipient}, bytes unchanged with crlf", () => {
    const { result, calls } = run({ ...postfix(["agent", "{recipient}"], false), newline: "crlf", env: { A: "1" }, cwd: "/srv" }, () => ProcessSpawner.exited(75, "4.4.1 later"))
    expect(calls).toHaveLength(1)
    expect(calls[0]!.args).toEqual(["bob@example.com"])
    expect(calls[0]!.env).toEqual({ A: "1" })
    expect(calls[0]!.cwd).toBe("/srv")
    expect(calls[0]!.stdin).toBe(sample.message)
    expect(result.recipients).toEqual([
      { outcome: "transient", reply: reply(450, "4.4.1", "later") },
      { outcome: "transient", reply: reply(450, "4.4.1", "later") }
    ])
  })

  it("turns a spawn failure into 451 4.3.0", () => {
    const { result } = run(postfix(["/opt/agent"]), (r) => new ProcessSpawner.SpawnError({ reason: "NotFound", command: r.command, message: "nope" }))
    expect(result.recipients[0]).toEqual({ outcome: "transient", reply: reply(451, "4.3.0", "agent could not be started (NotFound)") })
  })

  it("refuses leading-dash and control-character addresses without running anything", () => {
    const env = like({ recipients: ["-oQ@x", "ok@x", "a\nb@x"] })
    const { result, calls } = run(postfix(["agent", "{recipient}"]), () => ProcessSpawner.exited(0), env)
    expect(calls.map((c) => c.args)).toEqual([["ok@x"]])
    expect(result.recipients).toEqual([
      { outcome: "permanent", reply: reply(550, "5.1.3", "Recipient address may not begin with '-'") },
      { outcome: "delivered", reply: reply(250, "2.0.0", "Delivered via agent") },
      { outcome: "permanent", reply: reply(550, "5.1.3", "Recipient address contains control characters") }
    ])
    const whole = run(postfix(["agent"], false), () => ProcessSpawner.exited(0), env)
    expect(whole.calls).toHaveLength(0)
    expect(whole.result.recipients.map((r) => r.reply.enhanced)).toEqual(["5.1.3", "5.1.3", "5.1.3"])
    const bySender = run(postfix(["agent"]), () => ProcessSpawner.exited(0), like({ sender: "-x@y" }))
    expect(bySender.calls).toHaveLength(0)
    expect(bySender.result.recipients[0]!.reply).toEqual(reply(550, "5.1.7", "Sender address may not begin with '-'"))
    const allowed = run({ ...postfix(["agent", "{recipient}"]), allowLeadingDash: true }, () => ProcessSpawner.exited(0), like({ recipients: ["-x@y"] }))
    expect(allowed.calls.map((c) => c.args)).toEqual([["-x@y"]])
  })

  it("answers an envelope without recipients with no results and no run", () => {
    const { result, calls } = run(postfix(["agent"]), () => ProcessSpawner.exited(0), like({ recipients: [] }))
    expect(result.recipients).toEqual([])
    expect(calls).toHaveLength(0)
  })

  it("dies on a command without a program", () => {
    const exit = Effect.runSyncExit(Effect.provide(PipeRelay.make(postfix([])), ProcessSpawner.layerScripted(() => ProcessSpawner.exited(0))))
    expect(Exit.isFailure(exit)).toBe(true)
  })

  it("builds slimta's presets", () => {
    expect(PipeRelay.maildropOptions({ extraArgs: ["/etc/mailfilter"] })).toEqual({
      command: ["maildrop", "-f", "{sender}", "/etc/mailfilter"],
      perRecipient: false,
      timeoutMs: 300_000,
      exitCodes: "maildrop",
      env: undefined,
      newline: undefined
    })
    expect(PipeRelay.dovecotLdaOptions({ config: "/etc/dovecot/lda.conf", timeoutMs: 5000 })).toEqual({
      command: ["/usr/lib/dovecot/dovecot-lda", "-c", "/etc/dovecot/lda.conf", "-e", "-f", "{sender}", "-d", "{recipient}"],
      perRecipient: true,
      timeoutMs: 5000,
      exitCodes: "dovecot",
      env: undefined,
      newline: undefined
    })
    const { calls } = (() => {
      const calls: Array<ProcessSpawner.SpawnRequest> = []
      Effect.runSync(Effect.provide(
        Effect.flatMap(PipeRelay.DovecotLdaRelay({ path: "dovecot-lda" }), (r) => r.attempt(sample, 0)),
        ProcessSpawner.layerScripted(() => ProcessSpawner.exited(0), calls)
      ))
      return { calls }
    })()
    expect(calls.map((c) => c.args)).toEqual([
      ["-e", "-f", "alice@example.org", "-d", "bob@example.com"],
      ["-e", "-f", "alice@example.org", "-d", "carol@example.com"]
    ])
  })
})
