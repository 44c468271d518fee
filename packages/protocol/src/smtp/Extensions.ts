/**
 * The EHLO keyword table (RFC 5321 §4.1.1.1): building the server's
 * multi-line 250 reply, and reading a server's reply on the client side
 * (`SIZE 10240000`, `AUTH PLAIN LOGIN`, `PIPELINING`, ...).
 *
 * Keywords are case-insensitive and stored upper-cased; parameters keep their
 * case. A line that is not `ehlo-keyword *(SP ehlo-param)` is ignored, as is
 * a repeated keyword (the first one wins). The pre-standard `AUTH=PLAIN LOGIN`
 * form some servers still send is merged into `AUTH`.
 *
 * It deliberately does not decide what to advertise (that is the server
 * session's configuration) nor which extensions a client uses.
 *
 * @since 0.1.0
 */
import * as Reply from "./Reply.ts"

/** The keywords a server advertised, each with its parameters. */
export interface Extensions {
  /** Upper-cased keyword → parameters (possibly empty). */
  readonly keywords: ReadonlyMap<string, ReadonlyArray<string>>
}

/** No extensions (the answer to HELO, or an EHLO reply without keywords). */
export const empty: Extensions = { keywords: new Map() }

const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/

/** Makes a table from `[keyword, params]` pairs (keywords upper-cased, first one wins). */
export const make = (entries: ReadonlyArray<readonly [string, ReadonlyArray<string>]>): Extensions => {
  const keywords = new Map<string, ReadonlyArray<string>>()
  for (const [k, p] of entries) {
    const key = k.toUpperCase()
    if (!keywords.has(key)) keywords.set(key, [...p])
  }
  return { keywords }
}

/**
 * Reads an EHLO reply: the first line is the greeting (`mx.example Hello`),
 * every further line a keyword with its space-separated parameters. Never
 * throws; malformed lines are skipped.
 */
export const parseEhlo = (reply: Reply.Reply): { readonly greeting: string; readonly extensions: Extensions } => {
  const keywords = new Map<string, ReadonlyArray<string>>()
  let legacyAuth: Array<string> | undefined
  for (let i = 1; i < reply.lines.length; i++) {
    const words = reply.lines[i]!.split(" ").filter((w) => w.length > 0)
    const first = words[0]
    if (first === undefined) continue
    const params = words.slice(1)
    if (first.length > 5 && first.slice(0, 5).toUpperCase() === "AUTH=") {
      legacyAuth ??= []
      for (const m of [first.slice(5), ...params]) if (m.length > 0) legacyAuth.push(m)
      continue
    }
    if (!KEYWORD.test(first)) continue
    const key = first.toUpperCase()
    if (!keywords.has(key)) keywords.set(key, params)
  }
  if (legacyAuth !== undefined) {
    const current = keywords.get("AUTH") ?? []
    const merged = [...current]
    for (const m of legacyAuth) if (!merged.some((x) => x.toUpperCase() === m.toUpperCase())) merged.push(m)
    keywords.set("AUTH", merged)
  }
  return { greeting: reply.lines[0] ?? "", extensions: { keywords } }
}

/** True when `keyword` (any case) was advertised. */
export const has = (e: Extensions, keyword: string): boolean => e.keywords.has(keyword.toUpperCase())

/** The parameters of `keyword` (any case), or `undefined` when it was not advertised. */
export const params = (e: Extensions, keyword: string): ReadonlyArray<string> | undefined =>
  e.keywords.get(keyword.toUpperCase())

/**
 * The fixed message size limit of `SIZE n` (RFC 1870), or `undefined` when
 * SIZE is absent, has no parameter, is `0` ("no fixed limit") or is not a
 * safe integer. Use `has(e, "SIZE")` to know whether the SIZE parameter may be sent.
 */
export const sizeLimit = (e: Extensions): number | undefined => {
  const p = e.keywords.get("SIZE")?.[0]
  if (p === undefined || !/^[0-9]{1,20}$/.test(p)) return undefined
  const n = Number(p)
  return Number.isSafeInteger(n) && n > 0 ? n : undefined
}

/** The advertised SASL mechanisms, upper-cased, in the server's order (`[]` without AUTH). */
export const authMechanisms = (e: Extensions): ReadonlyArray<string> => {
  const out: Array<string> = []
  for (const m of e.keywords.get("AUTH") ?? []) {
    const u = m.toUpperCase()
    if (!out.includes(u)) out.push(u)
  }
  return out
}

/**
 * Builds the server's EHLO reply: `250-<greeting>` then one line per keyword
 * with its parameters, as a multi-line 250 without an enhanced code (RFC 2034
 * §4: the EHLO reply carries none).
 *
 * @example
 * Reply.encodeString(build("mx.example Hello", [["PIPELINING", []], ["SIZE", ["1000"]]]))
 * // "250-mx.example Hello\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
 */
export const build = (
  greeting: string,
  keywords: ReadonlyArray<readonly [string, ReadonlyArray<string>]>
): Reply.Reply =>
  Reply.make(250, undefined, [greeting, ...keywords.map(([k, p]) => (p.length === 0 ? k : `${k} ${p.join(" ")}`))])

/** The table's `[keyword, params]` entries in the order they were advertised (feeds `build`). */
export const toEntries = (e: Extensions): ReadonlyArray<readonly [string, ReadonlyArray<string>]> => [
  ...e.keywords.entries()
]
