/**
 * Queue policies and relay policies (slimta's `QueuePolicy` and
 * `RelayPolicy`), and the built-in ones.
 *
 * - A **queue policy** runs once, before the message is stored; what it
 *   returns is what gets stored. It may return several envelopes in place
 *   of one (that is how splitting works). `run` applies a list of them in
 *   order, each to every envelope the previous ones produced.
 * - A **relay policy** runs before every delivery attempt; its changes are
 *   for that attempt only and never persisted. It may fail the whole
 *   message with a reply (`Fail`), which the queue treats like a relay's
 *   answer for every recipient (4xx retry, 5xx bounce).
 *
 * Built-ins: `addDateHeader`, `addMessageIdHeader`, `addReceivedHeader`,
 * `recipientSplit`, `recipientDomainSplit`, `forward` (regex rewrite),
 * `aliases` (table expansion, with `parseAliasesFile`), and `maxHops`
 * (loop detection by counting `Received` fields, RFC 5321 §6.3).
 *
 * ## Ids of split envelopes
 *
 * A split envelope's id is derived from the original's, deterministically:
 * `<id>-<n>`, `n` counting from 1 in recipient order (`01k…-1`, `01k…-2`),
 * so a write retried after a crash produces the same ids and overwrites
 * rather than duplicates. Ids stay within the storage alphabet
 * `[0-9A-Za-z_-]`; a derived id that would pass 128 characters is replaced
 * by a 26-character hash of it. An envelope that needs no split keeps its
 * id, and an envelope without an id (`""`) gives split envelopes without one.
 *
 * Policies are Effects that never fail: whatever they cannot do, they leave
 * as it was. Time comes from Effect's `Clock`, randomness from its `Random`
 * (or a function given), so tests control both.
 *
 * What it deliberately does not do: SpamAssassin or DKIM (those need
 * services and live in their own modules), per-command SMTP validation
 * (`Validators`), or deliver to pipes and files named in an aliases file.
 *
 * @since 0.1.0
 */
import { sha256 } from "@noble/hashes/sha2.js"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as Envelope from "../envelope/Envelope.ts"
import * as Headers from "../envelope/Headers.ts"
import * as Reply from "../smtp/Reply.ts"
import * as Bytes from "../wire/Bytes.ts"

// ---------------------------------------------------------------------------
// Queue policies
// ---------------------------------------------------------------------------

/** Runs once before storage; returns the envelopes to store in place of the one given. */
export type QueuePolicy<R = never> = (envelope: Envelope.Envelope) => Effect.Effect<ReadonlyArray<Envelope.Envelope>, never, R>

/**
 * Applies `policies` in order: each one to every envelope the previous ones
 * produced, the results concatenated in order.
 */
export const run = <R>(
  policies: ReadonlyArray<QueuePolicy<R>>,
  envelope: Envelope.Envelope
): Effect.Effect<ReadonlyArray<Envelope.Envelope>, never, R> =>
  Effect.gen(function*() {
    let current: ReadonlyArray<Envelope.Envelope> = [envelope]
    for (const policy of policies) {
      const next: Array<Envelope.Envelope> = []
      for (const env of current) next.push(...(yield* policy(env)))
      current = next
    }
    return current
  })

/** A queue policy from a pure function of one envelope to one envelope. */
export const map = (f: (envelope: Envelope.Envelope) => Envelope.Envelope): QueuePolicy =>
(envelope) => Effect.succeed([f(envelope)])

/**
 * Appends a `Date` field when the message has none (RFC 5322 requires one;
 * RFC 6409 §8.1 lets a submission server add it). The date is when the
 * message was received (`envelope.timestamp`), or the `Clock`'s time when
 * that is unknown (0); `offsetMinutes` is the zone shown, UTC by default.
 */
export const addDateHeader = (options?: { readonly offsetMinutes?: number | undefined }): QueuePolicy => (envelope) =>
  Effect.gen(function*() {
    if (Headers.hasHeader(envelope.message, "Date")) return [envelope]
    const now = envelope.timestamp > 0 ? envelope.timestamp : yield* Clock.currentTimeMillis
    return [Envelope.withMessage(envelope, Headers.ensureDate(envelope.message, now, options?.offsetMinutes ?? 0))]
  })

const randomBytes = (n: number): Effect.Effect<Uint8Array> =>
  Effect.gen(function*() {
    const r = yield* Random.Random
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i++) out[i] = Math.floor(r.nextDoubleUnsafe() * 256) & 255
    return out
  })

/**
 * Appends a `Message-Id` field, `<ulid@hostname>` (see `Headers.messageId`),
 * when the message has none. The time comes from the `Clock`, the random
 * part from `options.random` or else Effect's `Random` service.
 */
export const addMessageIdHeader = (
  hostname: string,
  options?: { readonly random?: ((n: number) => Uint8Array) | undefined }
): QueuePolicy =>
(envelope) =>
  Effect.gen(function*() {
    if (Headers.hasHeader(envelope.message, "Message-Id")) return [envelope]
    const now = yield* Clock.currentTimeMillis
    const bytes = options?.random !== undefined ? options.random(10) : yield* randomBytes(10)
    return [Envelope.appendHeader(envelope, "Message-Id", Headers.messageId(() => bytes, now, hostname))]
  })

/**
 * Prepends a `Received` field (RFC 5321 §4.4, see `Headers.received`) from
 * the envelope's client facts, id and timestamp; `by` is `hostname`, else
 * the envelope's receiver, else `localhost`. A `for <x>` clause is written
 * only when the envelope has exactly one recipient, so the other recipients
 * of a message are not disclosed.
 */
export const addReceivedHeader = (options?: {
  readonly hostname?: string | undefined
  readonly showAuth?: boolean | undefined
  readonly offsetMinutes?: number | undefined
}): QueuePolicy =>
  map((envelope) =>
    Envelope.prependHeader(
      envelope,
      "Received",
      Headers.received({
        client: envelope.client,
        receiver: options?.hostname ?? envelope.receiver ?? "localhost",
        recipients: envelope.recipients,
        id: envelope.id,
        timestamp: envelope.timestamp,
        showAuth: options?.showAuth,
        offsetMinutes: options?.offsetMinutes
      })
    )
  )

// --- splitting -------------------------------------------------------------

const CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"

/** 26 base32 characters of the SHA-256 of `s` (130 bits). */
const hashId = (s: string): string => {
  const h = sha256(Bytes.fromString(s))
  let out = ""
  let acc = 0
  let bits = 0
  for (let i = 0; out.length < 26; i++) {
    acc = (acc << 8) | h[i]!
    bits += 8
    while (bits >= 5 && out.length < 26) {
      bits -= 5
      out += CROCKFORD[(acc >> bits) & 31]!
    }
    acc &= (1 << bits) - 1
  }
  return out
}

/**
 * The id of the `n`th envelope (from 1) split off the envelope `id`:
 * `<id>-<n>`, or a 26-character hash of that when it would pass 128
 * characters; `""` stays `""`.
 */
export const splitId = (id: string, n: number): string => {
  if (id === "") return ""
  const derived = `${id}-${n}`
  return derived.length <= 128 ? derived : hashId(derived)
}

const splitBy = (envelope: Envelope.Envelope, groups: ReadonlyArray<ReadonlyArray<number>>): ReadonlyArray<Envelope.Envelope> =>
  groups.length <= 1
    ? [envelope]
    : groups.map((indexes, k) => ({ ...Envelope.withRecipients(envelope, indexes), id: splitId(envelope.id, k + 1) }))

/** One envelope per recipient, with its DSN parameters (see the module header for ids). */
export const recipientSplit: QueuePolicy = (envelope) =>
  Effect.succeed(splitBy(envelope, envelope.recipients.map((_, i) => [i])))

/** The domain of an address, lower-cased: what follows the last `@`; `undefined` when there is none. */
export const domainOf = (address: string): string | undefined => {
  const at = address.lastIndexOf("@")
  return at < 0 || at === address.length - 1 ? undefined : address.slice(at + 1).toLowerCase()
}

/**
 * One envelope per recipient domain (compared case-insensitively), in the
 * order the domains first appear; a recipient without a domain gets an
 * envelope of its own.
 */
export const recipientDomainSplit: QueuePolicy = (envelope) => {
  const groups: Array<Array<number>> = []
  const byDomain = new Map<string, Array<number>>()
  envelope.recipients.forEach((r, i) => {
    const d = domainOf(r)
    if (d === undefined) return groups.push([i])
    const g = byDomain.get(d)
    if (g !== undefined) return g.push(i)
    const fresh = [i]
    byDomain.set(d, fresh)
    groups.push(fresh)
  })
  return Effect.succeed(splitBy(envelope, groups))
}

// --- rewriting -------------------------------------------------------------

const NON_ASCII = /[^\x00-\x7f]/

/** The key under which two addresses are the same: local part as is, domain lower-cased. */
const sameKey = (address: string): string => {
  const at = address.lastIndexOf("@")
  return at < 0 ? address : address.slice(0, at + 1) + address.slice(at + 1).toLowerCase()
}

/**
 * Replaces the recipients with `rewritten[i]` (a list per original
 * recipient), each new one inheriting the original's NOTIFY, and ORCPT set
 * to the original address when it had none and the address changed (RFC
 * 3461 §4.2: so that a DSN can name the address the client gave). Later
 * duplicates are dropped, keeping the first one's DSN parameters.
 */
const rewrite = (envelope: Envelope.Envelope, rewritten: ReadonlyArray<ReadonlyArray<string>>): Envelope.Envelope => {
  const recipients: Array<string> = []
  const notify: Array<ReadonlyArray<Envelope.NotifyKeyword> | undefined> = []
  const orcpt: Array<Envelope.OriginalRecipient | undefined> = []
  const seen = new Set<string>()
  let changed = false
  envelope.recipients.forEach((original, i) => {
    for (const r of rewritten[i] ?? [original]) {
      if (r !== original) changed = true
      const key = sameKey(r)
      if (seen.has(key)) {
        changed = true
        continue
      }
      seen.add(key)
      recipients.push(r)
      notify.push(envelope.dsn.notify[i])
      const o = envelope.dsn.orcpt[i]
      orcpt.push(
        o !== undefined || r === original ? o : { addrType: NON_ASCII.test(original) ? "utf-8" : "rfc822", address: original }
      )
    }
  })
  if (!changed) return envelope
  return { ...envelope, recipients, dsn: { ...envelope.dsn, notify, orcpt } }
}

/** A `forward` rule: a recipient matching `pattern` is rewritten with `replace` (`$1`, `$&`… work). */
export interface ForwardRule {
  /** A RegExp, or a string compiled as one (as slimta's `Forward`); it need not match the whole address. */
  readonly pattern: RegExp | string
  readonly replace: string
}

/**
 * Rewrites recipients by regular expressions (slimta's `Forward`): for each
 * recipient the first rule whose pattern matches replaces the first match
 * (`String.prototype.replace`); the `g` and `y` flags are ignored. A rewrite
 * to the empty string is ignored. Recipients that become duplicates are
 * merged (the first keeps its DSN parameters); a rewritten recipient
 * without ORCPT gets the original address as ORCPT.
 */
export const forward = (rules: ReadonlyArray<ForwardRule>): QueuePolicy => {
  const compiled = rules.map((r) => ({
    re: typeof r.pattern === "string" ? new RegExp(r.pattern) : new RegExp(r.pattern.source, r.pattern.flags.replace(/[gy]/g, "")),
    replace: r.replace
  }))
  return map((envelope) =>
    rewrite(
      envelope,
      envelope.recipients.map((r) => {
        for (const rule of compiled) {
          if (rule.re.test(r)) {
            const out = r.replace(rule.re, rule.replace)
            return [out === "" ? r : out]
          }
        }
        return [r]
      })
    )
  )
}

// --- aliases ---------------------------------------------------------------

/** Expansion depth limit of `aliases` by default. */
export const defaultAliasDepth = 10

/**
 * Expands one address through the table (see `aliases`); keys are
 * lower-cased.
 */
const expandAlias = (table: ReadonlyMap<string, ReadonlyArray<string>>, address: string, maxDepth: number): Array<string> => {
  const out: Array<string> = []
  const expanded = new Set<string>()
  const lookup = (addr: string): ReadonlyArray<string> | undefined => {
    const exact = table.get(addr.toLowerCase())
    if (exact !== undefined) return exact
    const d = domainOf(addr)
    return d === undefined ? undefined : table.get("@" + d)
  }
  const visit = (addr: string, path: ReadonlyArray<string>, depth: number): void => {
    const key = addr.toLowerCase()
    // on its own expansion path: a loop, or the usual "bob: bob, bob@archive" (deliver as is)
    if (path.includes(key) || depth >= maxDepth) return void out.push(addr)
    const targets = lookup(addr)
    if (targets === undefined || targets.length === 0) return void out.push(addr)
    // reached again by another path: its addresses are already there
    if (expanded.has(key)) return
    expanded.add(key)
    const at = addr.lastIndexOf("@")
    const local = at < 0 ? addr : addr.slice(0, at)
    for (const t of targets) visit(t.startsWith("@") ? local + t : t, [...path, key], depth + 1)
  }
  visit(address, [], 0)
  return out
}

/**
 * Expands recipients through an alias table. A recipient is looked up by
 * its whole address, then by `@domain` (a catch-all), case-insensitively;
 * a target `@other.example` keeps the local part (`bob@example.com` to
 * `bob@other.example`). Targets are expanded again, up to `maxDepth` (10)
 * levels; an address met again on its own expansion path is delivered as it
 * is, so `bob: bob, bob@archive.example` keeps a copy for bob and a loop
 * ends. Expanded recipients inherit NOTIFY and get the original address as
 * ORCPT; duplicates are merged.
 */
export const aliases = (
  table: ReadonlyMap<string, ReadonlyArray<string>>,
  options?: { readonly maxDepth?: number | undefined }
): QueuePolicy => {
  const lower = new Map<string, ReadonlyArray<string>>()
  for (const [k, v] of table) if (!lower.has(k.toLowerCase())) lower.set(k.toLowerCase(), v)
  const maxDepth = options?.maxDepth ?? defaultAliasDepth
  return map((envelope) => rewrite(envelope, envelope.recipients.map((r) => expandAlias(lower, r, maxDepth))))
}

/** A problem in an aliases file, with its line number (from 1). */
export interface AliasFileError {
  readonly line: number
  readonly message: string
}

const ADDRESS = /^[^\s@,;:"<>()[\]\\]*@[^\s@,;:"<>()[\]\\]+$/

/**
 * Parses an aliases file: one entry per line, `address: target, target`;
 * a line starting with a space or tab continues the entry above; empty
 * lines and lines whose first non-blank character is `#` are ignored.
 * Addresses are `local@domain` (no quoted local parts), a key may be
 * `@domain` (catch-all) and a target `@domain` (same local part there);
 * a target may be written `<local@domain>`. Keys are lower-cased. Pipes,
 * files and `:include:` are refused. A repeated key is an error; the first
 * entry is kept. Entries with errors are left out; the rest is usable.
 */
export const parseAliasesFile = (text: string): {
  readonly table: ReadonlyMap<string, ReadonlyArray<string>>
  readonly errors: ReadonlyArray<AliasFileError>
} => {
  const table = new Map<string, ReadonlyArray<string>>()
  const firstLine = new Map<string, number>()
  const errors: Array<AliasFileError> = []
  let current: { key: string; line: number; targets: Array<string>; bad: boolean } | undefined
  let skipping = false
  const finish = (): void => {
    if (current === undefined) return
    const c = current
    current = undefined
    if (c.bad) return
    if (c.targets.length === 0) return void errors.push({ line: c.line, message: `${c.key}: no targets` })
    const first = firstLine.get(c.key)
    if (first !== undefined) return void errors.push({ line: c.line, message: `${c.key}: duplicate entry (first at line ${first})` })
    firstLine.set(c.key, c.line)
    table.set(c.key, c.targets)
  }
  const addTargets = (list: string, line: number): void => {
    for (const raw of list.split(",")) {
      let t = raw.trim()
      if (t === "") continue
      if (t.startsWith("<") && t.endsWith(">")) t = t.slice(1, -1)
      if (t.startsWith("|") || t.startsWith("/") || t.toLowerCase().startsWith(":include:")) {
        errors.push({ line, message: `${JSON.stringify(t)}: pipes, files and :include: are not supported` })
        current!.bad = true
      } else if (!ADDRESS.test(t)) {
        errors.push({ line, message: `${JSON.stringify(t)}: expected an address (local@domain or @domain)` })
        current!.bad = true
      } else {
        current!.targets.push(t)
      }
    }
  }
  text.split(/\r?\n/).forEach((content, i) => {
    const line = i + 1
    const trimmed = content.trim()
    if (trimmed === "" || trimmed.startsWith("#")) return
    if (content.startsWith(" ") || content.startsWith("\t")) {
      if (current !== undefined) addTargets(trimmed, line)
      else if (!skipping) errors.push({ line, message: "continuation line without an entry above" })
      return
    }
    finish()
    skipping = false
    const colon = content.indexOf(":")
    if (colon < 0) {
      skipping = true
      return void errors.push({ line, message: `expected "address: target, target", found no colon` })
    }
    const key = content.slice(0, colon).trim().toLowerCase()
    if (!ADDRESS.test(key)) {
      skipping = true
      return void errors.push({ line, message: `${JSON.stringify(key)}: expected an address (local@domain or @domain)` })
    }
    current = { key, line, targets: [], bad: false }
    addTargets(content.slice(colon + 1), line)
  })
  finish()
  return { table, errors }
}

// ---------------------------------------------------------------------------
// Relay policies
// ---------------------------------------------------------------------------

/** What a relay policy decided: go on (with this envelope, for this attempt only) or fail the message. */
export type RelayPolicyResult =
  | { readonly _tag: "Continue"; readonly envelope: Envelope.Envelope }
  | { readonly _tag: "Fail"; readonly reply: Reply.Reply }

/** Runs before every delivery attempt; its changes are not persisted. */
export type RelayPolicy<R = never> = (envelope: Envelope.Envelope) => Effect.Effect<RelayPolicyResult, never, R>

/** Go on with `envelope`. */
export const proceed = (envelope: Envelope.Envelope): RelayPolicyResult => ({ _tag: "Continue", envelope })

/** Fail the whole message with `reply` (4xx: retry later, 5xx: bounce). */
export const fail = (reply: Reply.Reply): RelayPolicyResult => ({ _tag: "Fail", reply })

/** Applies relay policies in order, each to the envelope the previous one passed on; stops at the first `Fail`. */
export const runRelay = <R>(
  policies: ReadonlyArray<RelayPolicy<R>>,
  envelope: Envelope.Envelope
): Effect.Effect<RelayPolicyResult, never, R> =>
  Effect.gen(function*() {
    let env = envelope
    for (const policy of policies) {
      const result = yield* policy(env)
      if (result._tag === "Fail") return result
      env = result.envelope
    }
    return proceed(env)
  })

/** Postfix's `hopcount_limit`: 50 `Received` fields. */
export const defaultMaxHops = 50

/** The number of `Received` fields: the hops the message has made (RFC 5321 §6.3). */
export const hopCount = (envelope: Envelope.Envelope): number => Headers.countHeaders(envelope.message, "Received")

/** True when the message has more than `limit` `Received` fields: it is probably looping. */
export const tooManyHops = (envelope: Envelope.Envelope, limit: number = defaultMaxHops): boolean =>
  hopCount(envelope) > limit

/**
 * Fails a message with more than `limit` `Received` fields with `554 5.4.6
 * Too many hops` (`Reply.loopDetected`), a permanent failure: a mail loop
 * (RFC 5321 §6.3) is bounced rather than relayed for ever.
 */
export const maxHops = (limit: number = defaultMaxHops): RelayPolicy => (envelope) =>
  Effect.succeed(tooManyHops(envelope, limit) ? fail(Reply.loopDetected) : proceed(envelope))
