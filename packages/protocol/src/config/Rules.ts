/**
 * Turns the `rules` section of a listener (SMTP or HTTP) into composed
 * `Validators`: sender and recipient allow/deny lists (slimta's
 * `only_senders`, `regex_senders`, `only_recipients`...), DNS blocklists,
 * SPF enforcement and SpamAssassin, in that order (cheap local checks first,
 * content scanning last). Runtime-neutral: the services it needs (`Dns`,
 * `Connector`) come from the caller's layers.
 *
 * @since 0.1.0
 */
import type * as Dns from "effect/net/Dns"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Transport from "../edge/Transport.ts"
import * as Decision from "../policy/Decision.ts"
import * as Dnsbl from "../policy/Dnsbl.ts"
import * as SpamAssassin from "../policy/SpamAssassin.ts"
import * as Spf from "../policy/Spf.ts"
import * as Validators from "../policy/Validators.ts"
import * as Address from "../smtp/Address.ts"
import * as Reply from "../smtp/Reply.ts"
import type * as Config from "./Config.ts"

/** A compiled address pattern: exact address, `@domain`, or `/regex/` (case-insensitive). */
export const matcher = (pattern: string): ((address: string) => boolean) => {
  if (pattern.startsWith("/") && pattern.endsWith("/") && pattern.length > 2) {
    const re = new RegExp(pattern.slice(1, -1), "i")
    return (a) => re.test(a)
  }
  const p = pattern.toLowerCase()
  if (p.startsWith("@")) return (a) => a.toLowerCase().endsWith(p)
  return (a) => a.toLowerCase() === p
}

type List = { readonly allow?: ReadonlyArray<string> | undefined; readonly deny: ReadonlyArray<string> } | undefined

/**
 * Compiles a list once into a test: `address` passes when it is not denied,
 * and is allowed when an allow list exists. No list: everything passes.
 */
export const compileList = (list: List): ((address: string) => boolean) => {
  if (list === undefined) return () => true
  const deny = list.deny.map(matcher)
  const allow = list.allow?.map(matcher)
  return (address) => !deny.some((m) => m(address)) && (allow === undefined || allow.some((m) => m(address)))
}

/** The sender and recipient lists as validators. The null sender and `<Postmaster>` always pass (RFC 5321 §4.5.1, §6.1). */
export const lists = (rules: Config.RulesSettings): Validators.Validators => {
  const out: { -readonly [K in keyof Validators.Validators]: Validators.Validators[K] } = {}
  const senders = rules.senders
  const recipients = rules.recipients
  if (senders) {
    const senderPasses = compileList(senders)
    out.mail = (_facts, sender) => {
      if (sender === null) return Effect.succeed(Decision.accept)
      const address = Address.print(sender)
      return Effect.succeed(
        senderPasses(address) ? Decision.accept : Decision.reject(Reply.make(550, "5.7.1", `Sender <${address}> not allowed`))
      )
    }
  }
  if (recipients) {
    const recipientPasses = compileList(recipients)
    out.rcpt = (_facts, recipient) => {
      if (recipient.domain === "" && Address.isPostmaster(recipient)) return Effect.succeed(Decision.accept)
      const address = Address.print(recipient)
      return Effect.succeed(
        recipientPasses(address) ? Decision.accept : Decision.reject(Reply.make(550, "5.7.1", `Recipient <${address}> not allowed`))
      )
    }
  }
  return out
}

/**
 * Every configured policy of a listener, composed. `hostname` is our name
 * (SPF's `%{r}` and Received-SPF).
 */
export const validators = (
  rules: Config.RulesSettings,
  hostname: string
): Validators.Validators<Dns.Dns | Transport.Connector> => {
  const all: Array<Validators.Validators<Dns.Dns | Transport.Connector>> = [lists(rules)]
  if (rules.dnsbl) {
    all.push(Dnsbl.validators({ zones: rules.dnsbl.zones, at: rules.dnsbl.at, ...(rules.dnsbl.reply ? { reply: rules.dnsbl.reply } : {}) }))
  }
  if (rules.spf) {
    const spf = rules.spf
    const actions: Partial<Record<Spf.Result, Spf.Action>> = {}
    for (const r of spf.defer) actions[r] = { reply: spf.defer_reply }
    for (const r of spf.reject) actions[r] = { reply: spf.reject_reply }
    all.push(Spf.enforce({ actions, at: spf.at, receiver: hostname, header: spf.header }))
  }
  if (rules.spamassassin) {
    const sa = rules.spamassassin
    all.push(SpamAssassin.validators({
      spamd: {
        endpoint: sa.path !== undefined ? { _tag: "Unix", path: sa.path } : { _tag: "Inet", address: sa.host, port: sa.port },
        timeoutMs: Duration.toMillis(sa.timeout)
      },
      ...(sa.reject_at !== undefined ? { rejectAt: sa.reject_at } : {}),
      onError: sa.on_error,
      maxSize: sa.max_size
    }))
  }
  return Validators.compose(...all)
}
