/**
 * SPF (RFC 7208): the `check_host()` evaluator over effect's `Dns` service,
 * the `Received-SPF` header field (§9.1), and an enforcing validator in the
 * manner of slimta's `EnforceSpf` (an action per result, at MAIL or RCPT).
 *
 * The evaluator implements every mechanism (`all`, `include`, `a`, `mx`,
 * `ptr`, `ip4`, `ip6`, `exists`) with dual CIDR lengths, the `redirect` and
 * `exp` modifiers, macro expansion (§7: transformers, delimiters, URL
 * escaping of upper-case macros, `%{p}` validated names, 253-octet
 * truncation), the limit of 10 terms that query DNS, 10 MX names, 10 PTR
 * names, 2 void lookups, and an overall time limit (temperror). It passes
 * the whole RFC 7208 test suite (`test/SpfSuite.test.ts`).
 *
 * Decisions where the RFC leaves room:
 * - A target name that cannot be a DNS name (an empty label, a label over 63
 *   octets, or a name the `Dns` service refuses as `BadName`) is treated as
 *   a name that does not exist: the mechanism does not match and the lookup
 *   counts as void. Initial processing of such a domain gives `none`.
 * - `%{i}` writes IPv6 nibbles in upper case (as the suite expects); DNS
 *   names are case-insensitive, so queries are unaffected.
 * - A `Dns` answer that could not be read (`InvalidResponse`, `Unsupported`)
 *   is a `temperror`, like a timeout or SERVFAIL.
 * - Address lookups use `resolve` (A/AAAA records), never `lookup`, so the
 *   configured resolver is asked and the hosts file is not.
 *
 * What it deliberately does not do: cache answers (the resolver does), check
 * the HELO identity separately when MAIL FROM is not null (call `check` with
 * `sender: ""` for that), or DMARC.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Dns from "effect/net/Dns"
import * as NetAddress from "effect/net/NetAddress"
import type * as Envelope from "../envelope/Envelope.ts"
import * as Headers from "../envelope/Headers.ts"
import type * as Address from "../smtp/Address.ts"
import type { Facts } from "../smtp/ServerModel.ts"
import * as Decision from "./Decision.ts"
import * as Ip from "./Ip.ts"
import * as ReplyTemplate from "./ReplyTemplate.ts"
import * as SpfRecord from "./SpfRecord.ts"
import type * as Validators from "./Validators.ts"

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/** The seven results of RFC 7208 §2.6. */
export type Result = "none" | "neutral" | "pass" | "fail" | "softfail" | "temperror" | "permerror"

/** Every result, in RFC order. */
export const results: ReadonlyArray<Result> = ["none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"]

/** The question: who connected, what they said. */
export interface CheckInput {
  /** The client's IP address (IPv4-mapped IPv6 counts as IPv4). */
  readonly ip: string
  /** MAIL FROM, `local@domain`; `""` (the null sender) checks the HELO identity. */
  readonly sender: string
  /** The HELO/EHLO name. */
  readonly helo: string
  /** Our hostname, for `%{r}` and `Received-SPF` (default `unknown`). */
  readonly receiver?: string | undefined
}

export interface CheckOptions {
  /** Explanation for `fail` when the record has no usable `exp=`; a macro string. */
  readonly defaultExplanation?: string | undefined
  /** Overall time limit; past it the result is `temperror` [20 s, RFC 7208 §4.6.4]. */
  readonly timeoutMs?: number | undefined
  /** Terms that query DNS [10]. */
  readonly maxLookups?: number | undefined
  /** Lookups that find nothing [2]. */
  readonly maxVoidLookups?: number | undefined
}

/** The answer. */
export interface Outcome {
  readonly result: Result
  /** The identity checked: MAIL FROM, or HELO for the null sender. */
  readonly identity: "mailfrom" | "helo"
  /** The domain checked (the sender's or the HELO name). */
  readonly domain: string
  /** The directive that matched, as written (`-all`, `ip4:192.0.2.0/24`). */
  readonly mechanism?: string | undefined
  /** For `fail`: the domain's `exp=` text, or the default explanation. */
  readonly explanation?: string | undefined
  /** For `permerror`, `temperror` and a `none` on bad input: what went wrong. */
  readonly problem?: string | undefined
}

/** The default explanation (RFC 7208 §6.2 leaves it to the receiver). */
export const defaultExplanation = "%{i} is not one of %{d}'s designated mail servers"

// ---------------------------------------------------------------------------
// Evaluation context
// ---------------------------------------------------------------------------

class Abort {
  readonly result: "permerror" | "temperror"
  readonly problem: string
  constructor(result: "permerror" | "temperror", problem: string) {
    this.result = result
    this.problem = problem
  }
}

interface Ctx {
  readonly dns: Dns.Dns["Service"]
  readonly ip: Ip.Ip
  readonly sender: string
  readonly local: string
  readonly senderDomain: string
  readonly helo: string
  readonly receiver: string
  readonly now: number
  readonly maxLookups: number
  readonly maxVoid: number
  lookups: number
  voids: number
  validated: { readonly names: ReadonlyArray<string>; readonly void: boolean } | undefined
}

type Answer<T> =
  | { readonly _tag: "Records"; readonly records: ReadonlyArray<T> }
  | { readonly _tag: "Void" }
  | { readonly _tag: "Error"; readonly problem: string }

const VOID: Answer<never> = { _tag: "Void" }

/** Strips one trailing dot; true when every label is 1-63 octets and the name is at most 253. */
const dnsName = (name: string): string | undefined => {
  const n = name.endsWith(".") ? name.slice(0, -1) : name
  if (n.length === 0 || n.length > 253) return undefined
  for (const label of n.split(".")) if (label.length === 0 || label.length > 63) return undefined
  return n
}

/** One DNS query: records, nothing (NXDOMAIN, no data, or a name DNS cannot carry), or an error. */
const query = <T extends "A" | "AAAA" | "MX" | "TXT" | "PTR">(
  ctx: Ctx,
  name: string,
  type: T
): Effect.Effect<Answer<Dns.RecordFor<T>>> => {
  const n = dnsName(name)
  if (n === undefined) return Effect.succeed(VOID)
  return ctx.dns.resolve(n, type).pipe(
    Effect.map((records): Answer<Dns.RecordFor<T>> => ({ _tag: "Records", records })),
    Effect.catch((e: Dns.DnsError) =>
      Effect.succeed<Answer<Dns.RecordFor<T>>>(
        e.reason === "NotFound" || e.reason === "BadName" ? VOID : { _tag: "Error", problem: `${e.reason} looking up ${type} ${n}` }
      )
    ),
    Effect.catchDefect(() => Effect.succeed<Answer<Dns.RecordFor<T>>>({ _tag: "Error", problem: `failure looking up ${type} ${n}` }))
  )
}

const countLookup = (ctx: Ctx): Effect.Effect<void, Abort> => {
  ctx.lookups += 1
  return ctx.lookups > ctx.maxLookups
    ? Effect.fail(new Abort("permerror", `more than ${ctx.maxLookups} DNS lookups`))
    : Effect.void
}

const countVoid = (ctx: Ctx): Effect.Effect<void, Abort> => {
  ctx.voids += 1
  return ctx.voids > ctx.maxVoid
    ? Effect.fail(new Abort("permerror", `more than ${ctx.maxVoid} void DNS lookups`))
    : Effect.void
}

const addressBytes = (r: Dns.A | Dns.Aaaa): Uint8Array =>
  r._tag === "A" ? Uint8Array.from(NetAddress.ipv4ToOctets(r.address)) : Uint8Array.from(NetAddress.ipv6ToOctets(r.address))

/** The address records of `name` in the client's family. */
const addresses = (ctx: Ctx, name: string): Effect.Effect<Answer<Uint8Array>> =>
  Effect.map(
    ctx.ip.family === 4 ? query(ctx, name, "A") : (query(ctx, name, "AAAA") as Effect.Effect<Answer<Dns.A | Dns.Aaaa>>),
    (a): Answer<Uint8Array> => (a._tag === "Records" ? { _tag: "Records", records: a.records.map(addressBytes) } : a)
  )

const bareName = (name: string): string => (name.endsWith(".") ? name.slice(0, -1) : name).toLowerCase()

/** The validated names of the client address (RFC 7208 §5.5): PTR names (first 10) whose addresses include it. */
const validatedNames = (ctx: Ctx): Effect.Effect<{ readonly names: ReadonlyArray<string>; readonly void: boolean }> =>
  Effect.gen(function*() {
    if (ctx.validated) return ctx.validated
    const ptr = yield* query(ctx, Ip.reverseName(ctx.ip), "PTR")
    const names: Array<string> = []
    if (ptr._tag === "Records") {
      for (const record of ptr.records.slice(0, 10)) {
        const name = bareName(record.host)
        const a = yield* addresses(ctx, name)
        if (a._tag === "Records" && a.records.some((b) => Ip.prefixMatch(b, ctx.ip.bytes, b.length * 8))) names.push(name)
      }
    }
    ctx.validated = { names, void: ptr._tag === "Void" }
    return ctx.validated
  })

const isSubdomain = (name: string, domain: string): boolean => {
  const d = bareName(domain)
  return name === d || name.endsWith("." + d)
}

// ---------------------------------------------------------------------------
// Macro expansion (RFC 7208 §7)
// ---------------------------------------------------------------------------

const UNRESERVED = /[A-Za-z0-9\-._~]/

const urlEscape = (s: string): string => {
  let out = ""
  for (const ch of s) {
    if (UNRESERVED.test(ch)) out += ch
    else for (const b of new TextEncoder().encode(ch)) out += "%" + b.toString(16).toUpperCase().padStart(2, "0")
  }
  return out
}

const macroValue = (ctx: Ctx, letter: SpfRecord.MacroLetter, domain: string): Effect.Effect<string> => {
  switch (letter) {
    case "s":
      return Effect.succeed(ctx.sender)
    case "l":
      return Effect.succeed(ctx.local)
    case "o":
      return Effect.succeed(ctx.senderDomain)
    case "d":
      return Effect.succeed(domain)
    case "i":
      return Effect.succeed(Ip.labels(ctx.ip, true).join("."))
    case "c":
      return Effect.succeed(Ip.format(ctx.ip))
    case "v":
      return Effect.succeed(ctx.ip.family === 4 ? "in-addr" : "ip6")
    case "h":
      return Effect.succeed(ctx.helo)
    case "r":
      return Effect.succeed(ctx.receiver)
    case "t":
      return Effect.succeed(String(ctx.now))
    case "p":
      return Effect.map(validatedNames(ctx), (v) => v.names.find((n) => isSubdomain(n, domain)) ?? v.names[0] ?? "unknown")
  }
}

const transform = (value: string, part: Extract<SpfRecord.MacroPart, { _tag: "Macro" }>): string => {
  if (part.digits === undefined && !part.reverse && part.delimiters === ".") return value
  const delims = new Set(part.delimiters)
  let pieces: Array<string> = [""]
  for (const ch of value) {
    if (delims.has(ch)) pieces.push("")
    else pieces[pieces.length - 1] += ch
  }
  if (part.reverse) pieces.reverse()
  if (part.digits !== undefined && part.digits < pieces.length) pieces = pieces.slice(pieces.length - part.digits)
  return pieces.join(".")
}

/** Expands a macro string in the context of `domain`. */
const expand = (ctx: Ctx, ms: SpfRecord.MacroString, domain: string): Effect.Effect<string> =>
  Effect.gen(function*() {
    let out = ""
    for (const part of ms.parts) {
      if (part._tag === "Literal") {
        out += part.text
        continue
      }
      const v = transform(yield* macroValue(ctx, part.letter, domain), part)
      out += part.escape ? urlEscape(v) : v
    }
    return out
  })

/** A name to query from an expanded domain-spec: trailing dot dropped, left labels removed past 253 octets (§7.3). */
const targetName = (expanded: string): string => {
  let n = expanded.endsWith(".") ? expanded.slice(0, -1) : expanded
  while (n.length > 253) {
    const dot = n.indexOf(".")
    if (dot < 0) break
    n = n.slice(dot + 1)
  }
  return n
}

const target = (ctx: Ctx, spec: SpfRecord.MacroString | undefined, domain: string): Effect.Effect<string> =>
  spec === undefined ? Effect.succeed(domain) : Effect.map(expand(ctx, spec, domain), targetName)

// ---------------------------------------------------------------------------
// check_host()
// ---------------------------------------------------------------------------

interface Inner {
  readonly result: Result
  readonly domain: string
  readonly mechanism: string | undefined
  /** Computes the explanation (only asked for a final `fail`). */
  readonly explain: Effect.Effect<string> | undefined
}

/** RFC 7208 §4.3: a domain check_host() can work on (multi-label, every label 1-63 octets, no literal). */
const isCheckableDomain = (domain: string): boolean => {
  const n = dnsName(domain)
  return n !== undefined && n.includes(".") && !/[\s[\]@]/.test(n)
}

const qualifierResult: Record<SpfRecord.Qualifier, Result> = { "+": "pass", "-": "fail", "~": "softfail", "?": "neutral" }

const checkHost = (ctx: Ctx, domain: string, defaultExp: SpfRecord.MacroString): Effect.Effect<Inner, Abort> =>
  Effect.gen(function*() {
    const none: Inner = { result: "none", domain, mechanism: undefined, explain: undefined }
    if (!isCheckableDomain(domain)) return none
    const txt = yield* query(ctx, domain, "TXT")
    if (txt._tag === "Error") return yield* Effect.fail(new Abort("temperror", txt.problem))
    if (txt._tag === "Void") return none
    const spf = txt.records.map((r) => r.chunks.join("")).filter(SpfRecord.isSpfRecord)
    if (spf.length === 0) return none
    if (spf.length > 1) return yield* Effect.fail(new Abort("permerror", `${domain} has ${spf.length} SPF records`))
    const record = SpfRecord.parse(spf[0]!)
    if (record instanceof SpfRecord.SyntaxError) {
      return yield* Effect.fail(new Abort("permerror", `${domain}: ${record.message}`))
    }
    for (const directive of record.directives) {
      if (yield* matches(ctx, domain, directive.mechanism, defaultExp)) {
        const result = qualifierResult[directive.qualifier]
        return {
          result,
          domain,
          mechanism: directive.text,
          explain: result === "fail" ? explanation(ctx, domain, record.exp, defaultExp) : undefined
        }
      }
    }
    if (record.redirect !== undefined) {
      yield* countLookup(ctx)
      const name = yield* target(ctx, record.redirect, domain)
      const inner = yield* checkHost(ctx, name, defaultExp)
      if (inner.result === "none") return yield* Effect.fail(new Abort("permerror", `redirect to ${name}: no SPF record`))
      return inner
    }
    return { result: "neutral", domain, mechanism: undefined, explain: undefined }
  })

const matches = (
  ctx: Ctx,
  domain: string,
  m: SpfRecord.Mechanism,
  defaultExp: SpfRecord.MacroString
): Effect.Effect<boolean, Abort> =>
  Effect.gen(function*() {
    switch (m._tag) {
      case "all":
        return true
      case "ip4":
      case "ip6":
        return ctx.ip.family === (m._tag === "ip4" ? 4 : 6) && Ip.prefixMatch(ctx.ip.bytes, m.network, m.prefix)
      case "a": {
        yield* countLookup(ctx)
        const name = yield* target(ctx, m.domain, domain)
        const a = yield* addresses(ctx, name)
        if (a._tag === "Error") return yield* Effect.fail(new Abort("temperror", a.problem))
        if (a._tag === "Void") return yield* Effect.as(countVoid(ctx), false)
        const prefix = ctx.ip.family === 4 ? m.cidr4 : m.cidr6
        return a.records.some((b) => Ip.prefixMatch(b, ctx.ip.bytes, prefix))
      }
      case "mx": {
        yield* countLookup(ctx)
        const name = yield* target(ctx, m.domain, domain)
        const mx = yield* query(ctx, name, "MX")
        if (mx._tag === "Error") return yield* Effect.fail(new Abort("temperror", mx.problem))
        if (mx._tag === "Void") return yield* Effect.as(countVoid(ctx), false)
        if (mx.records.length > 10) return yield* Effect.fail(new Abort("permerror", `${name} has more than 10 MX records`))
        const prefix = ctx.ip.family === 4 ? m.cidr4 : m.cidr6
        const hosts = [...mx.records].sort((x, y) => x.priority - y.priority).map((r) => bareName(r.exchange))
        for (const host of hosts) {
          if (host === "") continue // null MX (RFC 7505)
          const a = yield* addresses(ctx, host)
          if (a._tag === "Error") return yield* Effect.fail(new Abort("temperror", a.problem))
          if (a._tag === "Records" && a.records.some((b) => Ip.prefixMatch(b, ctx.ip.bytes, prefix))) return true
        }
        return false
      }
      case "ptr": {
        yield* countLookup(ctx)
        const name = yield* target(ctx, m.domain, domain)
        const v = yield* validatedNames(ctx)
        if (v.void) yield* countVoid(ctx)
        return v.names.some((n) => isSubdomain(n, name))
      }
      case "exists": {
        yield* countLookup(ctx)
        const name = yield* target(ctx, m.domain, domain)
        const a = yield* query(ctx, name, "A")
        if (a._tag === "Error") return yield* Effect.fail(new Abort("temperror", a.problem))
        if (a._tag === "Void") return yield* Effect.as(countVoid(ctx), false)
        return true
      }
      case "include": {
        yield* countLookup(ctx)
        const name = yield* target(ctx, m.domain, domain)
        const inner = yield* checkHost(ctx, name, defaultExp)
        switch (inner.result) {
          case "pass":
            return true
          case "fail":
          case "softfail":
          case "neutral":
            return false
          case "none":
            return yield* Effect.fail(new Abort("permerror", `include:${name} has no SPF record`))
          default:
            return yield* Effect.fail(new Abort(inner.result, `include:${name}: ${inner.result}`))
        }
      }
    }
  })

/** RFC 7208 §6.2: the `exp=` text, or the default when anything about it is wrong. */
const explanation = (
  ctx: Ctx,
  domain: string,
  exp: SpfRecord.MacroString | undefined,
  defaultExp: SpfRecord.MacroString
): Effect.Effect<string> =>
  Effect.gen(function*() {
    if (exp !== undefined) {
      const name = yield* target(ctx, exp, domain)
      const txt = yield* query(ctx, name, "TXT")
      if (txt._tag === "Records" && txt.records.length === 1) {
        const parsed = SpfRecord.parseExplanation(txt.records[0]!.chunks.join(""))
        if (!(parsed instanceof SpfRecord.SyntaxError)) return yield* expand(ctx, parsed, domain)
      }
    }
    return yield* expand(ctx, defaultExp, domain)
  })

/**
 * Evaluates SPF for a client (RFC 7208 `check_host()` on the MAIL FROM
 * domain, or on the HELO name for the null sender). Never fails: DNS
 * trouble is `temperror`, a broken record `permerror`.
 *
 * @example
 * Spf.check({ ip: "192.0.2.1", sender: "a@example.org", helo: "mx.example.org" })
 * // Effect<{ result: "pass", identity: "mailfrom", domain: "example.org", mechanism: "ip4:192.0.2.0/24" }>
 */
export const check = (input: CheckInput, options: CheckOptions = {}): Effect.Effect<Outcome, never, Dns.Dns> =>
  Effect.gen(function*() {
    const dns = yield* Dns.Dns
    const helo = input.helo
    let identity: Outcome["identity"] = "mailfrom"
    let sender = input.sender
    if (sender === "") {
      identity = "helo"
      sender = `postmaster@${helo}`
    }
    const at = sender.lastIndexOf("@")
    const local = at > 0 ? sender.slice(0, at) : "postmaster"
    const senderDomain = at >= 0 ? sender.slice(at + 1) : sender
    if (at <= 0) sender = `${local}@${senderDomain}`
    const domain = senderDomain
    const ip = Ip.parse(input.ip)
    if (!ip) return { result: "none", identity, domain, problem: `invalid client address ${JSON.stringify(input.ip)}` }
    if (!isCheckableDomain(domain)) return { result: "none", identity, domain, problem: "not a checkable domain" }
    const defaultExp = SpfRecord.parseExplanation(options.defaultExplanation ?? defaultExplanation)
    const fallback = SpfRecord.parseExplanation(defaultExplanation) as SpfRecord.MacroString
    const ctx: Ctx = {
      dns,
      ip,
      sender,
      local,
      senderDomain,
      helo,
      receiver: input.receiver ?? "unknown",
      now: Math.floor((yield* Clock.currentTimeMillis) / 1000),
      maxLookups: options.maxLookups ?? 10,
      maxVoid: options.maxVoidLookups ?? 2,
      lookups: 0,
      voids: 0,
      validated: undefined
    }
    const run = Effect.gen(function*() {
      const inner = yield* checkHost(ctx, domain, defaultExp instanceof SpfRecord.SyntaxError ? fallback : defaultExp)
      const explanationText = inner.result === "fail" && inner.explain ? yield* inner.explain : undefined
      return {
        result: inner.result,
        identity,
        domain,
        ...(inner.mechanism !== undefined ? { mechanism: inner.mechanism } : {}),
        ...(explanationText !== undefined ? { explanation: explanationText } : {})
      } satisfies Outcome
    }).pipe(
      Effect.catch((a: Abort) => Effect.succeed<Outcome>({ result: a.result, identity, domain, problem: a.problem }))
    )
    const limited = yield* Effect.timeoutOption(run, options.timeoutMs ?? 20_000)
    return limited._tag === "Some"
      ? limited.value
      : { result: "temperror", identity, domain, problem: "time limit exceeded" } satisfies Outcome
  })

// ---------------------------------------------------------------------------
// Received-SPF (RFC 7208 §9.1)
// ---------------------------------------------------------------------------

/** The usual human-readable sentence for a result (pyspf's wording), used in comments and replies. */
export const describe = (outcome: Outcome, input: CheckInput): string => {
  const ip = Ip.parse(input.ip)
  const client = ip ? Ip.format(ip) : input.ip
  const who = outcome.identity === "helo" ? `${input.helo}` : `${input.sender}`
  switch (outcome.result) {
    case "pass":
      return `domain of ${who} designates ${client} as permitted sender`
    case "fail":
      return `domain of ${who} does not designate ${client} as permitted sender`
    case "softfail":
      return `domain of transitioning ${who} does not designate ${client} as permitted sender`
    case "neutral":
      return `${client} is neither permitted nor denied by domain of ${who}`
    case "none":
      return `domain of ${who} does not designate permitted sender hosts`
    case "permerror":
      return `permanent error in processing domain of ${who}: ${outcome.problem ?? "invalid record"}`
    case "temperror":
      return `temporary error in processing during lookup of ${who}: ${outcome.problem ?? "DNS error"}`
  }
}

const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/

const kvValue = (v: string): string => {
  const clean = v.replace(/[\u0000-\u001f\u007f]/g, " ").slice(0, 255)
  return DOT_ATOM.test(clean) ? clean : `"${clean.replace(/[\\"]/g, (c) => "\\" + c)}"`
}

/**
 * The value of a `Received-SPF` field: the result, a comment with the
 * receiver and the sentence of `describe`, then `client-ip`,
 * `envelope-from`, `helo`, `receiver`, `identity`, and `mechanism` or
 * `problem` when known. Every value comes from the network and is quoted
 * and stripped of control characters.
 *
 * @example
 * // pass (mx.example.com: domain of a@example.org designates 192.0.2.1 as permitted sender)
 * //  client-ip=192.0.2.1; envelope-from="a@example.org"; helo=mail.example.org;
 * //  receiver=mx.example.com; identity=mailfrom; mechanism="ip4:192.0.2.0/24"
 */
export const receivedSpf = (outcome: Outcome, input: CheckInput): string => {
  const receiver = input.receiver ?? "unknown"
  const ip = Ip.parse(input.ip)
  const pairs: Array<string> = [
    `client-ip=${kvValue(ip ? Ip.format(ip) : input.ip)}`,
    `envelope-from=${kvValue(input.sender)}`,
    `helo=${kvValue(input.helo)}`,
    `receiver=${kvValue(receiver)}`,
    `identity=${outcome.identity}`
  ]
  if (outcome.mechanism !== undefined) pairs.push(`mechanism=${kvValue(outcome.mechanism)}`)
  if (outcome.problem !== undefined) pairs.push(`problem=${kvValue(outcome.problem)}`)
  const comment = Headers.sanitizeComment(`${Headers.sanitizeToken(receiver)}: ${describe(outcome, input)}`, 400)
  return `${outcome.result} (${comment}) ${pairs.join("; ")}`
}

// ---------------------------------------------------------------------------
// Enforcement (slimta's EnforceSpf) as validators
// ---------------------------------------------------------------------------

/** What to do for one result: refuse (4xx/5xx) with this reply; `{reason}`, `{result}`, `{sender}`, `{domain}`, `{ip}` are filled. */
export interface Action {
  readonly reply: string | ReplyTemplate.Template
}

export interface EnforceOptions {
  /**
   * Refusals per result, e.g. `{ fail: { reply: "550 5.7.23 SPF check failed: {reason}" },
   * temperror: { reply: "451 4.4.3 SPF temporary error: {reason}" } }`. Results without an
   * action are accepted.
   */
  readonly actions: Partial<Record<Result, Action>>
  /** The command that refuses: MAIL (default) or each RCPT (slimta allows both). */
  readonly at?: "mail" | "rcpt" | undefined
  /** Our hostname, for `%{r}` and `Received-SPF` [unknown]. */
  readonly receiver?: string | undefined
  /** Prepend `Received-SPF` to accepted messages [true]. */
  readonly header?: boolean | undefined
  /** Leave authenticated clients alone (submission) [true]. */
  readonly skipAuthenticated?: boolean | undefined
  readonly check?: CheckOptions | undefined
  /** Sessions whose result is remembered between MAIL and the message [10000]. */
  readonly cacheSize?: number | undefined
}

/** The values a reply template can use. */
export const templateValues = (outcome: Outcome, input: CheckInput): Record<string, string> => ({
  reason: outcome.explanation ?? describe(outcome, input),
  result: outcome.result,
  sender: input.sender,
  domain: outcome.domain,
  ip: input.ip,
  mechanism: outcome.mechanism ?? "",
  problem: outcome.problem ?? ""
})

const sessionKey = (facts: Facts): string | undefined => {
  const r = facts.remote
  if (r._tag !== "Inet") return undefined
  const l = facts.local
  return `${r.address}|${r.port}|${l._tag === "Inet" ? `${l.address}|${l.port}` : "unix"}`
}

const printSender = (m: Address.Mailbox | null | undefined): string => (m ? `${m.local}@${m.domain}` : "")

/**
 * Validators that check SPF at MAIL (or RCPT), refuse with the configured
 * action for the result, and prepend `Received-SPF` to accepted messages.
 * Clients on a Unix socket, and authenticated ones unless
 * `skipAuthenticated: false`, are not checked.
 *
 * The result found at MAIL is remembered per session (bounded, dropped at
 * `close`) so the message hook does not query DNS again.
 */
export const enforce = (options: EnforceOptions): Validators.Validators<Dns.Dns> => {
  const actions = new Map<Result, ReplyTemplate.Template>()
  for (const r of results) {
    const a = options.actions[r]
    if (a) actions.set(r, ReplyTemplate.from(a.reply))
  }
  const at = options.at ?? "mail"
  const skipAuth = options.skipAuthenticated ?? true
  const cacheSize = options.cacheSize ?? 10_000
  const cache = new Map<string, { readonly input: CheckInput; readonly outcome: Outcome }>()

  const inputOf = (facts: Facts, sender: string): CheckInput | undefined => {
    if (facts.remote._tag !== "Inet") return undefined
    if (skipAuth && facts.auth !== undefined) return undefined
    const address = facts.remote.address
    return { ip: address, sender, helo: facts.hello?.domain ?? "", receiver: options.receiver }
  }

  const outcomeFor = (facts: Facts, input: CheckInput): Effect.Effect<Outcome, never, Dns.Dns> => {
    const key = sessionKey(facts)
    const hit = key === undefined ? undefined : cache.get(key)
    if (hit && hit.input.sender === input.sender && hit.input.helo === input.helo && hit.input.ip === input.ip) {
      return Effect.succeed(hit.outcome)
    }
    return Effect.tap(check(input, options.check), (outcome) =>
      Effect.sync(() => {
        if (key === undefined) return
        cache.delete(key)
        cache.set(key, { input, outcome })
        while (cache.size > cacheSize) {
          const oldest = cache.keys().next()
          if (oldest.done) break
          cache.delete(oldest.value)
        }
      }))
  }

  const decide = (facts: Facts, sender: string): Effect.Effect<Decision.Decision, never, Dns.Dns> => {
    const input = inputOf(facts, sender)
    if (input === undefined) return Effect.succeed(Decision.accept)
    return Effect.map(outcomeFor(facts, input), (outcome) => {
      const t = actions.get(outcome.result)
      return t ? Decision.reject(ReplyTemplate.render(t, templateValues(outcome, input))) : Decision.accept
    })
  }

  const v: {
    -readonly [K in keyof Validators.Validators<Dns.Dns>]: Validators.Validators<Dns.Dns>[K]
  } = {
    close: (facts) =>
      Effect.sync(() => {
        const key = sessionKey(facts)
        if (key !== undefined) cache.delete(key)
      })
  }
  if (at === "mail") v.mail = (facts, sender) => decide(facts, printSender(sender))
  else v.rcpt = (facts) => decide(facts, printSender(facts.sender))
  if (options.header ?? true) {
    v.message = (facts: Facts, envelope: Envelope.Envelope) => {
      const input = inputOf(facts, envelope.sender)
      if (input === undefined) return Effect.succeed<Validators.MessageDecision>({ _tag: "Accept", reply: undefined, headers: [] })
      return Effect.map(outcomeFor(facts, input), (outcome): Validators.MessageDecision => ({
        _tag: "Accept",
        reply: undefined,
        headers: [["Received-SPF", receivedSpf(outcome, input)]]
      }))
    }
  }
  return v
}
