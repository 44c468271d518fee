/**
 * The pipe relay: delivers by running a local delivery agent (maildrop,
 * dovecot-lda, a script) with the message on its standard input, as slimta's
 * `PipeRelay` and Postfix's pipe(8) do. The agent runs through the
 * `ProcessSpawner` service, so this module stays runtime-neutral.
 *
 * The command is an argument vector. Macros in each element are replaced
 * with envelope facts, and each element stays exactly one argument: nothing
 * is ever joined into a shell command line, so a value such as
 * `a;touch /tmp/x` or `a b` is one harmless argument. Macros:
 *
 * | macro | value |
 * | --- | --- |
 * | `{sender}` | the sender, `""` for the null sender |
 * | `{recipient}` | the recipient (per recipient) or the first recipient |
 * | `{message_id}` | the envelope id (Mailroom's queue id) |
 * | `{client_ip}` `{client_host}` `{client_ehlo}` (alias `{client_helo}`) `{client_protocol}` `{client_auth}` | client facts, `""` when unknown |
 *
 * Unknown `{names}` are left as they are. An address beginning with `-`
 * could be read as an option by the agent, so (like Postfix's
 * `allow_min_user = no`) such a sender or recipient is refused permanently
 * unless `allowLeadingDash` is set; client facts lose control characters and
 * a leading `-` becomes `_`.
 *
 * Exit status, by flavour (`exitCodes`):
 * - every flavour: 0 is delivered; a time-out is `450 4.4.2 Delivery timed
 *   out`; an agent that cannot start or dies of a signal is `451 4.3.0`.
 * - `postfix` (slimta's `PipeRelay`): the agent's first output line (stdout,
 *   else stderr) decides: `5.X.X text` is permanent `550 5.X.X text`,
 *   `4.X.X text` transient `450 4.X.X text`, anything else transient `450
 *   4.3.0 text`. The enhanced code in the output takes precedence over the
 *   exit status, as in Postfix.
 * - `maildrop`, `dovecot`: `75` (EX_TEMPFAIL) is transient `450 4.3.0`, any
 *   other non-zero status permanent `550`, with the enhanced code of the
 *   sysexits value (67 EX_NOUSER gives 5.1.1, 77 EX_NOPERM 5.7.1, ...). The
 *   text is the first output line (without maildrop's `maildrop: ` prefix),
 *   else `Delivery failed` / `LDA delivery failed`.
 *
 * Reply texts are sanitized: decoded leniently as UTF-8, control characters
 * removed, one line, at most 200 characters.
 *
 * The message goes to the agent with LF line ends by default (Unix delivery
 * agents store what they get; Postfix's pipe does the same); `newline:
 * "crlf"` passes the bytes unchanged.
 *
 * What this module deliberately does not do: run a shell, switch users,
 * retry (the queue does), or parse the agent's output beyond its first line.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Envelope from "../envelope/Envelope.ts"
import * as ProcessSpawner from "../process/ProcessSpawner.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Relay from "./Relay.ts"

/** How exit statuses and output are read (see the module header). */
export type ExitCodes = "postfix" | "maildrop" | "dovecot"

/** Pipe relay settings. */
export interface Options {
  /** The program and its arguments, with macros (see the module header). Must not be empty. */
  readonly command: ReadonlyArray<string>
  /** One agent run per recipient (`true`), or one run for all recipients, `{recipient}` being the first. */
  readonly perRecipient: boolean
  /** Time limit of one run, ms. */
  readonly timeoutMs: number
  readonly exitCodes: ExitCodes
  /** The agent's whole environment; default: the spawner's minimal one. */
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly cwd?: string | undefined
  /** Line ends of the message on the agent's stdin. Default `"lf"`. */
  readonly newline?: "lf" | "crlf" | undefined
  /** Allow a sender or recipient that begins with `-`. Default `false`. */
  readonly allowLeadingDash?: boolean | undefined
}

/** EX_TEMPFAIL from sysexits.h. */
export const EX_TEMPFAIL = 75

// sysexits.h values and the enhanced status they mean for a permanent failure
const SYSEXITS: Readonly<Record<number, string>> = {
  64: "5.3.0", // EX_USAGE
  65: "5.6.0", // EX_DATAERR
  66: "5.3.0", // EX_NOINPUT
  67: "5.1.1", // EX_NOUSER
  68: "5.1.2", // EX_NOHOST
  69: "5.3.0", // EX_UNAVAILABLE
  70: "5.3.0", // EX_SOFTWARE
  71: "5.3.0", // EX_OSERR
  72: "5.3.0", // EX_OSFILE
  73: "5.2.0", // EX_CANTCREAT
  74: "5.3.0", // EX_IOERR
  76: "5.5.0", // EX_PROTOCOL
  77: "5.7.1", // EX_NOPERM
  78: "5.3.5" // EX_CONFIG
}

// ---------------------------------------------------------------------------
// Pure helpers (exported for tests and for other relays)
// ---------------------------------------------------------------------------

/** CRLF line ends to LF; a lone CR is kept. Returns the input itself when it has no CRLF. */
export const crlfToLf = (bytes: Uint8Array): Uint8Array => {
  let n = 0
  for (let i = 0; i + 1 < bytes.length; i++) if (bytes[i] === 0x0d && bytes[i + 1] === 0x0a) n++
  if (n === 0) return bytes
  const out = new Uint8Array(bytes.length - n)
  let o = 0
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!
    if (b === 0x0d && bytes[i + 1] === 0x0a) continue
    out[o++] = b
  }
  return out
}

const lenient = new TextDecoder("utf-8", { fatal: false })

/**
 * Makes agent or peer text safe for a reply: control characters (C0, DEL,
 * C1) become spaces, runs of spaces collapse, trimmed, at most `max`
 * characters.
 */
export const sanitizeText = (text: string, max = 200): string => {
  const s = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, " ").replace(/\s+/g, " ").trim()
  return s.length > max ? s.slice(0, max).trimEnd() : s
}

/** The first non-blank line of `bytes`, sanitized, or `""`. Never throws. */
export const firstLine = (bytes: Uint8Array): string => {
  if (bytes.length === 0) return ""
  for (const line of lenient.decode(bytes).split(/\r\n|\r|\n/)) {
    const s = sanitizeText(line)
    if (s !== "") return s
  }
  return ""
}

/** The facts macros can name, from an envelope and one recipient. */
export interface MacroValues {
  readonly sender: string
  readonly recipient: string
  readonly message_id: string
  readonly client_ip: string
  readonly client_host: string
  readonly client_ehlo: string
  readonly client_helo: string
  readonly client_protocol: string
  readonly client_auth: string
}

// control characters out, a leading dash neutralised
const fact = (s: string | undefined): string => (s ?? "").replace(/[\u0000-\u001f\u007f]/g, "").replace(/^-/, "_")

/** Macro values for `recipient` of `envelope` (client facts cleaned, see the module header). */
export const macroValues = (envelope: Envelope.Envelope, recipient: string): MacroValues => {
  const c = envelope.client
  const ehlo = fact(c.ehlo)
  return {
    sender: envelope.sender,
    recipient,
    message_id: fact(envelope.id),
    client_ip: fact(c.address),
    client_host: fact(c.reverseName),
    client_ehlo: ehlo,
    client_helo: ehlo,
    client_protocol: fact(c.protocol),
    client_auth: fact(c.auth)
  }
}

/**
 * Expands the macros of every element of `command`. The result has exactly
 * as many elements as `command`: a value can never add or split an argument.
 */
export const expand = (command: ReadonlyArray<string>, values: MacroValues): ReadonlyArray<string> =>
  command.map((element) =>
    element.replace(/\{([a-z_]+)\}/g, (whole, name: string) =>
      Object.prototype.hasOwnProperty.call(values, name) ? values[name as keyof MacroValues] : whole
    )
  )

const ENHANCED_PREFIX = /^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)/

/**
 * The reply for a finished run (see the module header). `name` names the
 * agent in texts.
 */
export const classify = (flavour: ExitCodes, result: ProcessSpawner.SpawnResult, name: string): Reply.Reply => {
  switch (result._tag) {
    case "TimedOut":
      return Reply.make(450, "4.4.2", "Delivery timed out")
    case "Signaled":
      return Reply.make(451, "4.3.0", `${name} died with signal ${sanitizeText(result.signal, 32)}`)
    case "Exited":
      break
  }
  if (result.exitCode === 0) return Reply.make(250, "2.0.0", `Delivered via ${name}`)
  const out = firstLine(result.stdout)
  const err = firstLine(result.stderr)
  if (flavour === "postfix") {
    const text = out || err || "Delivery failed"
    const m = ENHANCED_PREFIX.exec(text)
    if (m !== null && (m[1] === "5" || m[1] === "4")) {
      const rest = text.slice(m[0].length) || "Delivery failed"
      const enhanced = `${m[1]}.${m[2]}.${m[3]}`
      return m[1] === "5" ? Reply.make(550, enhanced, rest) : Reply.make(450, enhanced, rest)
    }
    return Reply.make(450, "4.3.0", text)
  }
  const strip = (s: string): string => (flavour === "maildrop" ? s.replace(/^maildrop:\s*/, "") : s)
  const text = strip(out) || strip(err) || (flavour === "maildrop" ? "Delivery failed" : "LDA delivery failed")
  if (result.exitCode === EX_TEMPFAIL) return Reply.make(450, "4.3.0", text)
  return Reply.make(550, SYSEXITS[result.exitCode] ?? "5.3.0", text)
}

/** The reply when the agent could not be started. */
export const spawnFailed = (error: ProcessSpawner.SpawnError, name: string): Reply.Reply =>
  Reply.make(451, "4.3.0", `${name} could not be started (${error.reason})`)

// an address refused before any agent runs, or undefined
const refuseAddress = (address: string, kind: "sender" | "recipient", allowLeadingDash: boolean): Reply.Reply | undefined => {
  const code = kind === "sender" ? "5.1.7" : "5.1.3"
  const what = kind === "sender" ? "Sender" : "Recipient"
  if (/[\u0000-\u001f\u007f]/.test(address)) return Reply.make(550, code, `${what} address contains control characters`)
  if (!allowLeadingDash && address.startsWith("-")) return Reply.make(550, code, `${what} address may not begin with '-'`)
  return undefined
}

const basename = (path: string): string => {
  const i = path.lastIndexOf("/")
  return sanitizeText(i >= 0 ? path.slice(i + 1) : path, 64) || "agent"
}

// ---------------------------------------------------------------------------
// The relay
// ---------------------------------------------------------------------------

/**
 * A pipe relay over the `ProcessSpawner` service. A command with no program
 * is a programming error (a defect when the effect runs).
 */
export const make = (options: Options): Effect.Effect<Relay.Relay["Service"], never, ProcessSpawner.ProcessSpawner> =>
  Effect.gen(function*() {
    const program = options.command[0]
    if (program === undefined || program === "") {
      return yield* Effect.die(new RangeError("PipeRelay: command must name a program"))
    }
    const spawner = yield* ProcessSpawner.ProcessSpawner
    const name = basename(program)
    const remote = `pipe; ${program}`
    const allowDash = options.allowLeadingDash ?? false

    const run = (envelope: Envelope.Envelope, stdin: Uint8Array, recipient: string): Effect.Effect<Reply.Reply> => {
      const refused = refuseAddress(envelope.sender, "sender", allowDash) ?? refuseAddress(recipient, "recipient", allowDash)
      if (refused !== undefined) return Effect.succeed(refused)
      const argv = expand(options.command, macroValues(envelope, recipient))
      return spawner.spawn({
        command: argv[0]!,
        args: argv.slice(1),
        stdin,
        timeoutMs: options.timeoutMs,
        env: options.env,
        cwd: options.cwd
      }).pipe(
        Effect.map((result) => classify(options.exitCodes, result, name)),
        Effect.catch((error) => Effect.succeed(spawnFailed(error, name)))
      )
    }

    const attempt = (envelope: Envelope.Envelope): Effect.Effect<Relay.RelayResult> =>
      Effect.gen(function*() {
        if (envelope.recipients.length === 0) return { recipients: [], remote, tls: undefined }
        const stdin = (options.newline ?? "lf") === "lf" ? crlfToLf(envelope.message) : envelope.message
        if (options.perRecipient) {
          const replies = yield* Effect.forEach(envelope.recipients, (r) => run(envelope, stdin, r))
          return {
            recipients: replies.map((reply) => ({ outcome: Relay.outcomeOf(reply), reply })),
            remote,
            tls: undefined
          }
        }
        // one run for everyone; every recipient must pass the address check
        for (const r of envelope.recipients) {
          const refused = refuseAddress(r, "recipient", allowDash)
          if (refused !== undefined) return Relay.all(envelope, refused, remote)
        }
        return Relay.all(envelope, yield* run(envelope, stdin, envelope.recipients[0]!), remote)
      })

    return { attempt }
  })

/** `make` as a layer providing `Relay`. */
export const layer = (options: Options): Layer.Layer<Relay.Relay, never, ProcessSpawner.ProcessSpawner> =>
  Layer.effect(Relay.Relay)(make(options))

// ---------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------

/** Settings common to the presets. */
export interface PresetOptions {
  /** The agent's path. */
  readonly path?: string | undefined
  /** Time limit, ms. Default 5 minutes. */
  readonly timeoutMs?: number | undefined
  /** Arguments appended after the preset's own. */
  readonly extraArgs?: ReadonlyArray<string> | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly newline?: "lf" | "crlf" | undefined
}

const DEFAULT_TIMEOUT_MS = 5 * 60_000

/**
 * Courier maildrop: `maildrop -f {sender} [extraArgs]`, one run for all
 * recipients (maildrop delivers by its filter, not by recipient), flavour
 * `maildrop`. Pass a filter file as an extra argument to deliver without
 * `-d` user lookups. Default path `maildrop` (found on `PATH`).
 */
export const maildropOptions = (options: PresetOptions = {}): Options => ({
  command: [options.path ?? "maildrop", "-f", "{sender}", ...(options.extraArgs ?? [])],
  perRecipient: false,
  timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  exitCodes: "maildrop",
  env: options.env,
  newline: options.newline
})

/**
 * Dovecot's LDA: `dovecot-lda [-c config] -e -f {sender} -d {recipient}
 * [extraArgs]`, one run per recipient, flavour `dovecot`. `-e` makes the LDA
 * report a rejection (quota, Sieve reject) on stderr with a non-zero exit
 * instead of mailing a rejection itself, so the queue bounces as for every
 * other relay. Default path `/usr/lib/dovecot/dovecot-lda` (Debian's).
 */
export const dovecotLdaOptions = (options: PresetOptions & { readonly config?: string | undefined } = {}): Options => ({
  command: [
    options.path ?? "/usr/lib/dovecot/dovecot-lda",
    ...(options.config !== undefined ? ["-c", options.config] : []),
    "-e",
    "-f",
    "{sender}",
    "-d",
    "{recipient}",
    ...(options.extraArgs ?? [])
  ],
  perRecipient: true,
  timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  exitCodes: "dovecot",
  env: options.env,
  newline: options.newline
})

/** A maildrop relay (see `maildropOptions`). */
export const MaildropRelay = (options: PresetOptions = {}): Effect.Effect<Relay.Relay["Service"], never, ProcessSpawner.ProcessSpawner> =>
  make(maildropOptions(options))

/** A dovecot-lda relay (see `dovecotLdaOptions`). */
export const DovecotLdaRelay = (
  options: PresetOptions & { readonly config?: string | undefined } = {}
): Effect.Effect<Relay.Relay["Service"], never, ProcessSpawner.ProcessSpawner> => make(dovecotLdaOptions(options))
