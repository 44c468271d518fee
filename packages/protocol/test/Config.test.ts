import { readFileSync } from "node:fs"
import * as Duration from "effect/Duration"
import * as Result from "effect/Result"
import type * as SchemaAST from "effect/SchemaAST"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as YAML from "yaml"
import * as Config from "../src/config/Config.ts"
import * as ConfigValue from "../src/config/ConfigValue.ts"

const example = (name: string): string => readFileSync(new URL(`../../../examples/${name}`, import.meta.url), "utf8")

const ok = (r: Result.Result<Config.Config, Config.ConfigError>): Config.Config => {
  if (Result.isFailure(r)) throw new Error(`expected a valid config, got:\n${r.failure.message}`)
  return r.success
}

const problems = (r: Result.Result<Config.Config, Config.ConfigError>): Array<string> => {
  if (Result.isSuccess(r)) throw new Error("expected problems, the config decoded")
  return r.failure.problems.map(Config.formatProblem)
}

const ms = (d: Duration.Duration): number => Duration.toMillis(d)

// The "expected" texts, spelled out: they are part of the user interface.
const E = {
  domain: `a domain name such as "example.com"`,
  listen: `an address such as "127.0.0.1:2525", "[::1]:2525" or "unix:/run/mailroom/lmtp.sock"`,
  size: `a size such as "25MiB" or a number of bytes`,
  duration: `a duration such as "30s", "5m", "4h" or "5d", or a number of seconds, above zero`,
  durationOrZero: `a duration such as "30s", "5m", "4h" or "5d", or a number of seconds`,
  bool: "true or false",
  path: "a file or directory path",
  atLeast1: "a whole number of at least 1",
  port: "a whole number from 1 to 65535",
  text: "a single line of text without control characters",
  nonEmpty: "a non-empty string",
  host: `a host name or IP address such as "smtp.example.com"`,
  cidr: `an IP address or CIDR block such as "10.0.0.0/8" or "2001:db8::/32"`,
  mapping: "a mapping of settings",
  list: "a list"
}

describe("Config: the embedded default", () => {
  it("runs SMTP on 127.0.0.1:2525, a disk queue under ./var and Maildir delivery into ./var/mail", () => {
    const c = Config.embeddedDefault
    expect(c.hostname).toBeUndefined()
    expect(c.log).toEqual({ format: "logfmt", level: "info" })
    expect(c.smtp).toHaveLength(1)
    const l = c.smtp[0]!
    expect(l.listen).toEqual([{ _tag: "Tcp", host: "127.0.0.1", port: 2525, text: "127.0.0.1:2525" }])
    expect(l.mode).toBe("smtp")
    expect(l.banner).toBe("ESMTP Mailroom")
    expect(l.tls).toBeUndefined()
    expect(l.implicit_tls).toBe(false)
    expect(l.max_message_size).toBe(25 * 1024 * 1024)
    expect([l.max_recipients, l.max_bad_commands, l.max_connections, l.max_connections_per_client]).toEqual([100, 20, 1000, 20])
    expect([ms(l.command_timeout), ms(l.data_timeout), ms(l.shutdown_grace)]).toEqual([300_000, 180_000, 30_000])
    expect(l.bare_newline).toBe("normalize")
    expect(l.auth).toBeUndefined()
    expect([l.require_auth, l.require_tls]).toEqual([false, false])
    expect(l.local_domains).toEqual([])
    expect(c.queue.storage).toEqual({ type: "disk", path: "./var/queue" })
    expect(c.queue.retry.intervals.map(ms)).toEqual([60_000, 300_000, 900_000, 1_800_000, 3_600_000])
    expect(ms(c.queue.retry.max_interval)).toBe(3_600_000)
    expect(ms(c.queue.retry.max_age)).toBe(5 * 86_400_000)
    expect(ms(c.queue.retry.delay_warning)).toBe(4 * 3_600_000)
    expect(c.queue.policies).toEqual({
      add_date_header: true,
      add_message_id_header: true,
      add_received_header: true,
      split: "domain",
      max_hops: 50,
      forward: []
    })
    expect(c.relay).toEqual({ type: "maildir", path: "./var/mail", folders: "per_recipient" })
    expect(c.http?.listen).toEqual([{ _tag: "Tcp", host: "127.0.0.1", port: 8025, text: "127.0.0.1:8025" }])
    expect([c.http?.path, c.http?.json_path, c.http?.require_auth]).toEqual(["/", "/send", false])
  })

  it("is an empty file plus the HTTP edge; an empty file, an empty object and null decode alike", () => {
    const { http: _http, ...withoutHttp } = Config.embeddedDefault
    for (const empty of [Config.decode({}), Config.decode(null), Config.parse("", "yaml"), Config.parse("# only a comment\n", "yaml"), Config.parse("{}", "json")]) {
      const { http, ...rest } = ok(empty)
      expect(http).toBeUndefined()
      expect(rest).toEqual(withoutHttp)
    }
  })

  it("fills defaults inside a partly written section", () => {
    const c = ok(Config.parse("smtp:\n  - listen: 127.0.0.1:25\n    auth: { users_file: /etc/u }\n", "yaml"))
    expect(c.smtp[0]!.auth).toEqual({
      mechanisms: ["PLAIN", "LOGIN"],
      users_file: "/etc/u",
      allow_plaintext_without_tls: false,
      max_failures_per_client: 10,
      failure_window: Duration.minutes(10)
    })
    const p = ok(Config.parse("smtp:\n  - proxy_protocol: { trusted: [10.0.0.0/8] }\n", "yaml"))
    expect(ms(p.smtp[0]!.proxy_protocol!.timeout)).toBe(5000)
    const r = ok(Config.parse("relay: { type: static, host: smtp.example.net }\n", "yaml"))
    expect(r.relay).toMatchObject({ type: "static", host: "smtp.example.net", port: 25, tls: "opportunistic" })
    const l = ok(Config.parse("relay: { type: lmtp, path: /run/dovecot/lmtp }\n", "yaml"))
    expect(l.relay).toMatchObject({ type: "lmtp", path: "/run/dovecot/lmtp", port: 24 })
  })
})

describe("Config: the full example (examples/mailroom.yaml)", () => {
  const text = example("mailroom.yaml")

  it("decodes, every value as written", () => {
    const c = ok(Config.parse(text, "yaml"))
    expect(c.hostname).toBe("mx.example.com")
    expect(c.smtp).toHaveLength(2)
    const l = c.smtp[0]!
    expect(l.listen.map((a) => a.text)).toEqual(["0.0.0.0:25", "[::1]:25"])
    expect(l.listen[1]).toEqual({ _tag: "Tcp", host: "::1", port: 25, text: "[::1]:25" })
    expect(l.tls).toEqual({
      cert: "/etc/mailroom/tls/mx.example.com.crt",
      key: "/etc/mailroom/tls/mx.example.com.key",
      sni: [{
        names: ["mail.example.org", "*.example.org"],
        cert: "/etc/mailroom/tls/example.org.crt",
        key: "/etc/mailroom/tls/example.org.key"
      }],
      min_version: "TLSv1.2"
    })
    expect(l.proxy_protocol).toEqual({ trusted: ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"], timeout: Duration.seconds(5) })
    expect(l.auth?.mechanisms).toEqual(["PLAIN", "LOGIN"])
    expect(l.local_domains).toEqual(["example.com", "example.org"])
    expect(c.smtp[1]!.listen).toEqual([{ _tag: "Unix", path: "/run/mailroom/lmtp.sock", text: "unix:/run/mailroom/lmtp.sock" }])
    expect(c.smtp[1]!.mode).toBe("lmtp")
    expect(c.queue.policies.forward).toEqual([{ pattern: "^postmaster@(.*)$", replace: "admin@$1" }])
    expect(c.queue.policies.aliases_file).toBe("/etc/mailroom/aliases")
    expect(c.relay).toMatchObject({
      type: "mx",
      ehlo: "mx.example.com",
      tls: "opportunistic",
      resolver: { host: "127.0.0.1", port: 53, text: "127.0.0.1:53" },
      force_mx: { "example.net": { host: "relay.example.net", port: 2525, text: "relay.example.net:2525" } },
      max_connections_per_host: 5
    })
    expect(c.http?.listen.map((a) => a.text)).toEqual(["127.0.0.1:8025"])
    expect(c.http?.auth).toEqual({ users_file: "/etc/mailroom/http-users" })
  })

  it("decodes the same from JSON", () => {
    const json = JSON.stringify(YAML.parse(text))
    expect(ok(Config.parse(json, "json"))).toEqual(ok(Config.parse(text, "yaml")))
  })

  it("mentions every key of the schema", () => {
    const names = new Set<string>()
    const walk = (ast: SchemaAST.AST, seen: Set<SchemaAST.AST>): void => {
      if (seen.has(ast)) return
      seen.add(ast)
      if (ast.encoding !== undefined) for (const link of ast.encoding) walk(link.to, seen)
      if (ast._tag === "Objects") {
        for (const ps of ast.propertySignatures) {
          names.add(String(ps.name))
          walk(ps.type, seen)
        }
        for (const is of ast.indexSignatures) walk(is.type, seen)
      } else if (ast._tag === "Arrays") {
        for (const e of ast.elements) walk(e, seen)
        for (const r of ast.rest) walk(r, seen)
      } else if (ast._tag === "Union") for (const m of ast.types) walk(m, seen)
    }
    walk(Config.ConfigSchema.ast, new Set())
    expect(names.size).toBeGreaterThan(60)
    const missing = [...names].filter((n) => !new RegExp(`(^|[\\s{,])${n}:`, "m").test(text))
    expect(missing).toEqual([])
  })

  it("the submission example is an MSA on 587 with STARTTLS, AUTH and require_auth", () => {
    const c = ok(Config.parse(example("submission.yaml"), "yaml"))
    const msa = c.smtp[0]!
    expect(msa.listen).toEqual([{ _tag: "Tcp", host: "::", port: 587, text: "[::]:587" }])
    expect(msa.tls).toBeDefined()
    expect(msa.implicit_tls).toBe(false)
    expect(msa.require_auth).toBe(true)
    expect(msa.require_tls).toBe(true)
    expect(msa.auth?.mechanisms).toEqual(["PLAIN", "LOGIN", "SCRAM-SHA-256"])
    expect(c.smtp[1]!.implicit_tls).toBe(true)
    expect(c.smtp[1]!.listen[0]!.text).toBe("[::]:465")
  })
})

/** Builds `{ a: [ { b: value } ] }` from `["a", 0, "b"]`, merged over `base`. */
const setIn = (base: unknown, path: ReadonlyArray<string | number>, value: unknown): unknown => {
  if (path.length === 0) return value
  const [head, ...rest] = path
  if (typeof head === "number") {
    const arr = Array.isArray(base) ? [...base] : []
    arr[head] = setIn(arr[head], rest, value)
    return arr
  }
  const obj = typeof base === "object" && base !== null && !Array.isArray(base) ? { ...base } : {}
  ;(obj as Record<string, unknown>)[head!] = setIn((obj as Record<string, unknown>)[head!], rest, value)
  return obj
}

type Case = readonly [path: ReadonlyArray<string | number>, bad: unknown, expected: string, base?: unknown]

const oneOf = (...v: Array<string>) => `one of ${v.map((x) => JSON.stringify(x)).join(", ")}`
const maildir = { relay: { type: "maildir" } }
const mx = { relay: { type: "mx" } }
const stat = { relay: { type: "static", host: "smtp.example.net" } }
const lmtp = { relay: { type: "lmtp", host: "127.0.0.1" } }
const pipe = { relay: { type: "pipe", command: ["/usr/bin/true"] } }
const httpRelay = { relay: { type: "http", url: "https://example.com/" } }
const tls = { smtp: [{ tls: { cert: "c", key: "k" } }] }
const sni = { smtp: [{ tls: { cert: "c", key: "k", sni: [{ names: ["a.example"], cert: "c", key: "k" }] } }] }
const auth = { smtp: [{ auth: { users_file: "/u" } }] }
const proxy = { smtp: [{ proxy_protocol: { trusted: ["10.0.0.0/8"] } }] }
const fwd = { queue: { policies: { forward: [{ pattern: "a", replace: "b" }] } } }
const sauth = { relay: { type: "static", host: "h.example", auth: { username: "u", password: "p" } } }

const cases: ReadonlyArray<Case> = [
  [["hostname"], "not a host!", E.domain],
  [["log"], "loud", E.mapping],
  [["log", "format"], "xml", oneOf("logfmt", "json")],
  [["log", "level"], "verbose", oneOf("debug", "info", "warning", "error")],
  [["smtp"], { listen: "x" }, E.list],
  [["smtp", 0, "listen"], 25, `${E.listen}, or a list of them`],
  [["smtp", 0, "listen"], "localhost", E.listen],
  [["smtp", 0, "listen", 0], "127.0.0.1:65536", E.listen],
  [["smtp", 0, "listen", 0], "[::1]", E.listen],
  [["smtp", 0, "listen", 0], "::1:25", E.listen],
  [["smtp", 0, "listen", 0], "unix:", E.listen],
  [["smtp", 0, "listen", 0], "300.1.1.1:25", E.listen],
  [["smtp", 0, "mode"], "esmtp", oneOf("smtp", "lmtp")],
  [["smtp", 0, "banner"], "hi\r\n250 ok", E.text],
  [["smtp", 0, "tls"], "yes", E.mapping],
  [["smtp", 0, "tls", "cert"], 5, E.path, tls],
  [["smtp", 0, "tls", "key"], "", E.path, tls],
  [["smtp", 0, "tls", "sni"], {}, E.list, tls],
  [["smtp", 0, "tls", "sni", 0, "names", 0], "bad name", `a domain name such as "mail.example.com" or "*.example.com"`, sni],
  [["smtp", 0, "tls", "sni", 0, "cert"], null, E.path, sni],
  [["smtp", 0, "tls", "sni", 0, "key"], 1, E.path, sni],
  [["smtp", 0, "tls", "min_version"], "TLSv1.1", oneOf("TLSv1.2", "TLSv1.3"), tls],
  [["smtp", 0, "implicit_tls"], "yes", E.bool, tls],
  [["smtp", 0, "proxy_protocol", "trusted", 0], "10.0.0.0/33", E.cidr, proxy],
  [["smtp", 0, "proxy_protocol", "timeout"], "soon", E.duration, proxy],
  [["smtp", 0, "max_message_size"], "lots", E.size],
  [["smtp", 0, "max_message_size"], 0, E.size],
  [["smtp", 0, "max_message_size"], "10 parsecs", E.size],
  [["smtp", 0, "max_recipients"], 0, E.atLeast1],
  [["smtp", 0, "max_bad_commands"], 1.5, E.atLeast1],
  [["smtp", 0, "max_connections"], -1, E.atLeast1],
  [["smtp", 0, "max_connections_per_client"], "20", E.atLeast1],
  [["smtp", 0, "command_timeout"], "5 minutes", E.duration],
  [["smtp", 0, "data_timeout"], 0, E.duration],
  [["smtp", 0, "bare_newline"], "allow", oneOf("normalize", "reject")],
  [["smtp", 0, "auth"], [], E.mapping],
  [["smtp", 0, "auth", "mechanisms", 0], "NTLM", oneOf("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"), auth],
  [["smtp", 0, "auth", "users_file"], 5, E.path, auth],
  [["smtp", 0, "auth", "allow_plaintext_without_tls"], 1, E.bool, auth],
  [["smtp", 0, "auth", "max_failures_per_client"], 0, E.atLeast1, auth],
  [["smtp", 0, "auth", "failure_window"], "x", E.duration, auth],
  [["smtp", 0, "require_auth"], "no", E.bool],
  [["smtp", 0, "require_tls"], null, E.bool],
  [["smtp", 0, "local_domains", 0], "-bad-.example", E.domain],
  [["smtp", 0, "shutdown_grace"], -1, E.durationOrZero],
  [["queue"], 1, E.mapping],
  [["queue", "storage", "path"], 5, E.path, { queue: { storage: { type: "disk" } } }],
  [["queue", "storage", "url"], "http://localhost/", "a URL starting with redis:// or rediss:// or unix://", {
    queue: { storage: { type: "redis" } }
  }],
  [["queue", "retry", "intervals", 1], "never", E.duration, { queue: { retry: { intervals: ["1m"] } } }],
  [["queue", "retry", "max_interval"], "1 hour", E.duration],
  [["queue", "retry", "max_age"], false, E.duration],
  [["queue", "retry", "delay_warning"], "4x", E.duration],
  [["queue", "policies", "add_date_header"], "true", E.bool],
  [["queue", "policies", "add_message_id_header"], 0, E.bool],
  [["queue", "policies", "add_received_header"], "off", E.bool],
  [["queue", "policies", "split"], "sender", oneOf("none", "recipient", "domain")],
  [["queue", "policies", "max_hops"], 0, E.atLeast1],
  [["queue", "policies", "forward", 0, "pattern"], "(", "a regular expression", fwd],
  [["queue", "policies", "forward", 0, "replace"], 5, "a string", fwd],
  [["queue", "policies", "aliases_file"], "", E.path],
  [["relay", "path"], "", E.path, maildir],
  [["relay", "folders"], "nested", oneOf("per_recipient", "single"), maildir],
  [["relay", "ehlo"], "bad ehlo", E.domain, mx],
  [["relay", "tls"], "always", oneOf("opportunistic", "required", "none"), mx],
  [["relay", "resolver"], "dns.example:99999", `an address such as "127.0.0.1:53"`, mx],
  [["relay", "force_mx", "example.com"], "a:b:c", `an address such as "smtp.example.net:2525"`, mx],
  [["relay", "connect_timeout"], "x", E.duration, mx],
  [["relay", "command_timeout"], "x", E.duration, mx],
  [["relay", "data_timeout"], "x", E.duration, mx],
  [["relay", "idle_timeout"], "x", E.duration, mx],
  [["relay", "max_connections_per_host"], 0, E.atLeast1, mx],
  [["relay", "host"], "bad host", E.host, stat],
  [["relay", "port"], 0, E.port, stat],
  [["relay", "tls"], "starttls", oneOf("opportunistic", "required", "implicit", "none"), stat],
  [["relay", "auth", "username"], "", E.nonEmpty, sauth],
  [["relay", "auth", "password"], 5, E.nonEmpty, sauth],
  [["relay", "ehlo"], 5, E.domain, stat],
  [["relay", "connect_timeout"], "x", E.duration, stat],
  [["relay", "host"], "a b", E.host, lmtp],
  [["relay", "port"], 70000, E.port, lmtp],
  [["relay", "command"], "maildrop", E.list, pipe],
  [["relay", "command", 0], "", E.nonEmpty, pipe],
  [["relay", "per_recipient"], "yes", E.bool, pipe],
  [["relay", "timeout"], "x", E.duration, pipe],
  [["relay", "url"], "ftp://example.com/", "a URL starting with http:// or https://", httpRelay],
  [["relay", "timeout"], "x", E.duration, httpRelay],
  [["http"], true, E.mapping],
  [["http", "listen"], "x", E.listen],
  [["http", "tls", "cert"], 5, E.path, { http: { tls: { cert: "c", key: "k" } } }],
  [["http", "max_message_size"], "big", E.size],
  [["http", "auth", "users_file"], 5, E.path, { http: { auth: { users_file: "u" } } }]
]

describe("Config: a bad value names its key, the value and what was expected", () => {
  it.each(cases.map((c) => [Config.formatPath(c[0]), ...c] as const))("%s", (_name, path, bad, expected, base) => {
    const input = setIn(base ?? {}, path, bad)
    expect(problems(Config.decode(input))).toEqual([`${Config.formatPath(path)}: expected ${expected}, got ${Config.formatValue(bad)}`])
  })

  it("prints the documented line for a bad size", () => {
    expect(problems(Config.parse("smtp:\n  - max_message_size: lots\n", "yaml"))).toEqual([
      `smtp[0].max_message_size: expected a size such as "25MiB" or a number of bytes, got "lots"`
    ])
  })

  it("reports every problem at once, even when some are type errors and others value errors", () => {
    const r = Config.parse(
      [
        "hostname: 5",
        "log: { level: loud }",
        "smtp:",
        "  - listen: [x, 1]",
        "    banner: \"a\\nb\"",
        "    command_timeout: 0",
        "queue: { retry: { max_age: never } }",
        "relay: { type: static }"
      ].join("\n"),
      "yaml"
    )
    expect(problems(r)).toEqual([
      `hostname: expected ${E.domain}, got 5`,
      `log.level: expected one of "debug", "info", "warning", "error", got "loud"`,
      `smtp[0].listen[0]: expected ${E.listen}, got "x"`,
      `smtp[0].listen[1]: expected ${E.listen}, got 1`,
      `smtp[0].banner: expected ${E.text}, got "a\\nb"`,
      `smtp[0].command_timeout: expected ${E.duration}, got 0`,
      `queue.retry.max_age: expected ${E.duration}, got "never"`,
      `relay.host: expected ${E.host}, got nothing (this key is required)`
    ])
    expect(Result.isFailure(r) && r.failure.problems.map((p) => p.line)).toEqual([1, 2, 4, 4, 5, 6, 7, 8])
  })

  it("names a missing required key and what it needs", () => {
    expect(problems(Config.decode({ smtp: [{ tls: { cert: "/c" } }] }))).toEqual([
      `smtp[0].tls.key: expected ${E.path}, got nothing (this key is required)`
    ])
    expect(problems(Config.decode({ queue: { storage: { type: "redis" } } }))).toEqual([
      `queue.storage.url: expected a URL starting with redis:// or rediss:// or unix://, got nothing (this key is required)`
    ])
  })

  it("names the tag of a tagged section: unknown type, missing type, not a mapping", () => {
    const relays = `"maildir", "mx", "static", "lmtp", "pipe", "http", "blackhole"`
    expect(problems(Config.decode({ relay: { type: "smtp" } }))).toEqual([`relay.type: expected one of ${relays}, got "smtp"`])
    expect(problems(Config.decode({ relay: { path: "/x" } }))).toEqual([`relay.type: expected one of ${relays}, got nothing`])
    expect(problems(Config.decode({ relay: "maildir" }))).toEqual([
      `relay: expected a mapping with a "type" key (one of ${relays}), got "maildir"`
    ])
    expect(problems(Config.decode({ queue: { storage: { type: "s3" } } }))).toEqual([
      `queue.storage.type: expected one of "disk", "journal", "memory", "redis", "kv", got "s3"`
    ])
  })

  it("decodes Deno KV storage with its default path, and names it in the summary", () => {
    const kv = ok(Config.parse("queue:\n  storage: { type: kv }\n", "yaml"))
    expect(kv.queue.storage).toEqual({ type: "kv", path: "./var/queue.kv" })
    expect(Config.summary(kv)).toContain("queue kv ./var/queue.kv")
    expect(ok(Config.parse("queue:\n  storage: { type: kv, path: /srv/q.kv }\n", "yaml")).queue.storage).toEqual({ type: "kv", path: "/srv/q.kv" })
    expect(problems(Config.decode({ queue: { storage: { type: "kv", url: "redis://x" } } }))).toEqual([
      "queue.storage.url: unknown key; expected one of: type, path"
    ])
  })

  it("quotes keys that are not identifiers and escapes values", () => {
    expect(problems(Config.decode({ relay: { type: "mx", force_mx: { "bad domain": "x.example" } } }))).toEqual([
      `relay.force_mx["bad domain"]: expected a domain name such as "example.com" as the key, got "bad domain"`
    ])
    expect(Config.formatValue("a\r\nb\u0000")).toBe(`"a\\r\\nb\\u0000"`)
    expect(Config.formatValue("x".repeat(200))).toBe(`"${"x".repeat(76)}...`)
    expect(Config.formatValue(undefined)).toBe("nothing")
    expect(Config.formatValue({ a: [1] })).toBe(`{"a":[1]}`)
  })

  it("never throws, whatever it is given", () => {
    fc.assert(fc.property(fc.anything(), (u) => {
      const r = Config.decode(u)
      if (Result.isFailure(r)) expect(r.failure.problems.length).toBeGreaterThan(0)
    }))
    fc.assert(fc.property(fc.string(), (s) => {
      Config.parse(s, "yaml")
      Config.parse(s, "json")
    }))
  })
})

describe("Config: unknown keys are errors", () => {
  it("at the top level, in sections, in list items and in tagged sections, with a suggestion", () => {
    expect(problems(Config.decode({ hostnme: "a.example" }))).toEqual([
      "hostnme: unknown key (did you mean hostname?); expected one of: hostname, workers, log, smtp, queue, relay, http, dns"
    ])
    expect(problems(Config.decode({ log: { fromat: "json" } }))).toEqual([
      "log.fromat: unknown key (did you mean format?); expected one of: format, level"
    ])
    const [smtp] = problems(Config.decode({ smtp: [{ max_mesage_size: 10 }] }))
    expect(smtp).toMatch(/^smtp\[0\]\.max_mesage_size: unknown key \(did you mean max_message_size\?\); expected one of: listen, mode, banner, /)
    expect(problems(Config.decode({ relay: { type: "blackhole", path: "/x" } }))).toEqual([
      "relay.path: unknown key; expected one of: type"
    ])
    expect(problems(Config.decode({ queue: { storage: { type: "memory", path: "/x" } } }))).toEqual([
      "queue.storage.path: unknown key; expected one of: type"
    ])
    expect(problems(Config.decode({ smtp: [{ tls: { cert: "c", key: "k", ca: "x" } }] }))).toEqual([
      "smtp[0].tls.ca: unknown key; expected one of: cert, key, sni, min_version"
    ])
  })

  it("points at the line of the unknown key in YAML", () => {
    const r = Config.parse("log:\n  format: json\n  colour: true\n", "yaml")
    expect(Result.isFailure(r) && r.failure.problems).toEqual([
      { path: "log.colour", message: "unknown key; expected one of: format, level", line: 3 }
    ])
  })
})

describe("Config: sizes and durations", () => {
  it.each([
    [1, 1],
    [1024, 1024],
    ["100", 100],
    ["100B", 100],
    ["10MB", 10_000_000],
    ["10mb", 10_000_000],
    ["10M", 10_000_000],
    ["25MiB", 26_214_400],
    ["512KiB", 524_288],
    ["1.5KiB", 1536],
    ["1GB", 1e9],
    ["2GiB", 2 * 1024 ** 3],
    ["1TiB", 1024 ** 4],
    [" 3 kB ", 3000]
  ] as const)("size %j is %d bytes", (input, bytes) => {
    expect(ConfigValue.parseSize(input)).toBe(bytes)
  })

  it.each([0, -1, 1.5, Number.NaN, Infinity, "", "MB", "-1MB", "1.2.3MB", "10 parsecs", "1e6", "0", "0.1B", "1constructor", "1toString"])("size %j is invalid", (input) => {
    expect(ConfigValue.parseSize(input)).toBeUndefined()
  })

  it.each([
    [30, 30_000],
    [0.5, 500],
    ["30", 30_000],
    ["30s", 30_000],
    ["5m", 300_000],
    ["4h", 14_400_000],
    ["5d", 432_000_000],
    ["1w", 604_800_000],
    ["250ms", 250],
    ["1h30m", 5_400_000],
    ["1h 30m", 5_400_000],
    ["1.5h", 5_400_000],
    ["0s", 0]
  ] as const)("duration %j is %d ms", (input, millis) => {
    expect(ConfigValue.parseDurationMillis(input)).toBe(millis)
  })

  it.each([-1, Number.NaN, Infinity, "", "s", "5 minutes", "5x", "m5", "1h-30m", "1e3s"])("duration %j is invalid", (input) => {
    expect(ConfigValue.parseDurationMillis(input)).toBeUndefined()
  })

  it("decodes sizes to bytes and durations to Duration in the config", () => {
    const c = ok(Config.parse("smtp:\n  - max_message_size: 10MB\n    command_timeout: 90\n    data_timeout: 1h30m\n", "yaml"))
    expect(c.smtp[0]!.max_message_size).toBe(10_000_000)
    expect(ms(c.smtp[0]!.command_timeout)).toBe(90_000)
    expect(ms(c.smtp[0]!.data_timeout)).toBe(5_400_000)
  })

  it("any whole number of bytes and of seconds round-trips", () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 2 ** 40 }), (n) => {
      expect(ConfigValue.parseSize(n)).toBe(n)
      expect(ConfigValue.parseSize(String(n))).toBe(n)
      expect(ConfigValue.parseSize(`${n}KiB`)).toBe(n * 1024)
    }))
    fc.assert(fc.property(fc.nat({ max: 10 ** 7 }), (n) => {
      expect(ConfigValue.parseDurationMillis(n)).toBe(n * 1000)
      expect(ConfigValue.parseDurationMillis(`${n}s`)).toBe(n * 1000)
      expect(ConfigValue.parseDurationMillis(`${n}m`)).toBe(n * 60_000)
    }))
  })

  it("never throws on arbitrary text", () => {
    fc.assert(fc.property(fc.string(), (s) => {
      ConfigValue.parseSize(s)
      ConfigValue.parseDurationMillis(s)
      ConfigValue.parseListenAddress(s)
      ConfigValue.parseHostPort(s, 25)
    }))
  })
})

describe("Config: listen addresses", () => {
  it.each([
    ["127.0.0.1:2525", { _tag: "Tcp", host: "127.0.0.1", port: 2525, text: "127.0.0.1:2525" }],
    ["0.0.0.0:0", { _tag: "Tcp", host: "0.0.0.0", port: 0, text: "0.0.0.0:0" }],
    ["[::1]:25", { _tag: "Tcp", host: "::1", port: 25, text: "[::1]:25" }],
    ["[2001:DB8:0:0::1]:587", { _tag: "Tcp", host: "2001:db8::1", port: 587, text: "[2001:db8::1]:587" }],
    ["localhost:25", { _tag: "Tcp", host: "localhost", port: 25, text: "localhost:25" }],
    ["unix:/run/mailroom/lmtp.sock", { _tag: "Unix", path: "/run/mailroom/lmtp.sock", text: "unix:/run/mailroom/lmtp.sock" }]
  ] as const)("%s", (input, expected) => {
    expect(ConfigValue.parseListenAddress(input)).toEqual(expected)
  })

  it.each(["127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "1.2.3:25", "01.2.3.4:25", "[::1]", "[::1]x25", "::1:25", "[1.2.3.4]:25", "host name:25", "unix:", `unix:/${"x".repeat(120)}`, "unix:/a\nb"])(
    "%j is refused",
    (input) => {
      expect(ConfigValue.parseListenAddress(input)).toBeUndefined()
    }
  )
})

describe("Config: cross-field checks", () => {
  it("implicit_tls and require_tls need a tls section", () => {
    expect(problems(Config.decode({ smtp: [{ implicit_tls: true, require_tls: true }] }))).toEqual([
      "smtp[0].implicit_tls: expected a tls section (cert and key) when implicit_tls is true, got true",
      "smtp[0].require_tls: expected a tls section (cert and key) when require_tls is true, got true"
    ])
  })

  it("require_auth needs an auth section, and a way to authenticate", () => {
    expect(problems(Config.decode({ smtp: [{ require_auth: true }] }))).toEqual([
      "smtp[0].require_auth: expected an auth section when require_auth is true, got true"
    ])
    expect(problems(Config.decode({ smtp: [{ require_auth: true, auth: { users_file: "/u" } }] }))).toEqual([
      "smtp[0].require_auth: expected a tls section or auth.allow_plaintext_without_tls: true (AUTH is only offered over TLS, so no client could send), got true"
    ])
    ok(Config.decode({ smtp: [{ require_auth: true, auth: { users_file: "/u", allow_plaintext_without_tls: true } }] }))
    ok(Config.decode({ smtp: [{ require_auth: true, auth: { users_file: "/u" }, tls: { cert: "c", key: "k" } }] }))
  })

  it("unknown auth mechanisms are named", () => {
    expect(problems(Config.decode({ smtp: [{ auth: { users_file: "/u", mechanisms: ["PLAIN", "XOAUTH2", "plain"] } }] }))).toEqual([
      `smtp[0].auth.mechanisms[1]: expected one of "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", got "XOAUTH2"`,
      `smtp[0].auth.mechanisms[2]: expected one of "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", got "plain"`
    ])
    expect(problems(Config.decode({ smtp: [{ auth: { users_file: "/u", mechanisms: [] } }] }))).toEqual([
      "smtp[0].auth.mechanisms: expected at least one mechanism, got []"
    ])
  })

  it("a listen address may be used once, across SMTP and HTTP listeners", () => {
    expect(problems(Config.decode({
      smtp: [{ listen: ["127.0.0.1:25", "[::1]:25"] }, { listen: ["127.0.0.1:25", "unix:/s"] }],
      http: { listen: ["unix:/s", "[0:0::1]:25"] }
    }))).toEqual([
      `smtp[1].listen[0]: expected an address no other listener uses, got "127.0.0.1:25" (also at smtp[0].listen[0])`,
      `http.listen[0]: expected an address no other listener uses, got "unix:/s" (also at smtp[1].listen[1])`,
      `http.listen[1]: expected an address no other listener uses, got "[::1]:25" (also at smtp[0].listen[1])`
    ])
  })

  it("wildcards clash with what they cover; port 0 never clashes", () => {
    expect(problems(Config.decode({ smtp: [{ listen: ["0.0.0.0:25", "192.0.2.1:25"] }] }))).toEqual([
      `smtp[0].listen[1]: expected an address no other listener uses, got "192.0.2.1:25" (also at smtp[0].listen[0])`
    ])
    expect(problems(Config.decode({ smtp: [{ listen: ["[::]:25", "0.0.0.0:25"] }] }))).toEqual([
      `smtp[0].listen[1]: expected an address no other listener uses, got "0.0.0.0:25" (also at smtp[0].listen[0])`
    ])
    ok(Config.decode({ smtp: [{ listen: ["0.0.0.0:25", "[::1]:25", "0.0.0.0:587"] }] }))
    ok(Config.decode({ smtp: [{ listen: "127.0.0.1:0" }, { listen: "127.0.0.1:0" }] }))
  })

  it("workers: 1 to 64; several workers need TCP listeners on fixed ports and storage they can share", () => {
    expect(ok(Config.decode({})).workers).toBe(1)
    expect(problems(Config.decode({ workers: 0 }))).toEqual(["workers: expected a whole number from 1 to 64, got 0"])
    expect(problems(Config.decode({ workers: 2.5 }))).toEqual(["workers: expected a whole number from 1 to 64, got 2.5"])
    expect(problems(Config.decode({
      workers: 2,
      smtp: [{ listen: ["127.0.0.1:2525", "unix:/run/lmtp.sock"] }],
      http: { listen: "127.0.0.1:0" },
      queue: { storage: { type: "journal" } }
    }))).toEqual([
      `smtp[0].listen[1]: expected a TCP address when workers is 2 (one process binds a Unix socket), got "unix:/run/lmtp.sock"`,
      `http.listen[0]: expected a fixed port when workers is 2 (port 0 gives each worker a port of its own), got "127.0.0.1:0"`,
      `queue.storage.type: expected storage several processes can share (disk, or kv on Deno) when workers is 2, got "journal" (one process owns a journal)`
    ])
    const four = ok(Config.decode({ workers: 4, smtp: [{ listen: "0.0.0.0:25" }], queue: { storage: { type: "disk" } } }))
    expect(Config.summary(four)).toBe("SMTP 0.0.0.0:25; queue disk ./var/queue; relay maildir ./var/mail; 4 workers")
    ok(Config.decode({ workers: 1, smtp: [{ listen: "unix:/s" }], queue: { storage: { type: "journal" } } }))
  })

  it("other structural rules", () => {
    expect(problems(Config.decode({ smtp: [{ listen: [] }] }))).toEqual(["smtp[0].listen: expected at least one address, got []"])
    expect(problems(Config.decode({ smtp: [{ proxy_protocol: { trusted: [] } }] }))).toEqual([
      "smtp[0].proxy_protocol.trusted: expected at least one address or CIDR block, got []"
    ])
    expect(problems(Config.decode({ queue: { retry: { intervals: [] } } }))).toEqual([
      "queue.retry.intervals: expected at least one duration, got []"
    ])
    expect(problems(Config.decode({ relay: { type: "lmtp" } }))).toEqual([
      "relay.host: expected either host (with port) or path (a UNIX socket), got nothing"
    ])
    expect(problems(Config.decode({ relay: { type: "lmtp", host: "a.example", path: "/s" } }))).toEqual([
      "relay.path: expected either host or path, not both, got both"
    ])
    expect(problems(Config.decode({ relay: { type: "pipe", command: [] } }))).toEqual([
      `relay.command: expected a program and its arguments such as ["/usr/bin/maildrop"], got []`
    ])
    expect(problems(Config.decode({ smtp: [{ tls: { cert: "c", key: "k", sni: [{ names: [], cert: "c", key: "k" }] } }] }))).toEqual([
      "smtp[0].tls.sni[0].names: expected at least one name, got []"
    ])
  })
})

describe("Config: YAML and JSON text", () => {
  it("YAML syntax errors, duplicate keys and unknown tags are problems with a line", () => {
    expect(problems(Config.parse("smtp: [\n", "yaml"))[0]).toMatch(/^YAML error at line 2, column 1: /)
    const dup = Config.parse("log:\n  level: info\n  level: debug\n", "yaml")
    expect(Result.isFailure(dup) && dup.failure.problems).toEqual([
      { path: "", message: "YAML error at line 3, column 3: Map keys must be unique", line: 3 }
    ])
    expect(problems(Config.parse("hostname: !env HOST\n", "yaml"))).toEqual(["YAML error at line 1, column 11: Unresolved tag: !env"])
  })

  it("YAML 1.2: yes/no/on/off are strings, so a boolean key refuses them", () => {
    expect(problems(Config.parse("smtp:\n  - require_tls: yes\n", "yaml"))).toEqual([`smtp[0].require_tls: expected true or false, got "yes"`])
  })

  it("YAML merge keys and anchors work", () => {
    const c = ok(Config.parse(
      "smtp:\n  - &a { listen: 127.0.0.1:25, max_message_size: 10MB }\n  - { <<: *a, listen: 127.0.0.1:587 }\n",
      "yaml"
    ))
    expect(c.smtp.map((l) => [l.listen[0]!.text, l.max_message_size])).toEqual([["127.0.0.1:25", 10_000_000], ["127.0.0.1:587", 10_000_000]])
  })

  it("a top-level value that is not a mapping is refused", () => {
    expect(problems(Config.parse("- a\n- b\n", "yaml"))).toEqual([`expected a mapping of settings, got ["a","b"]`])
    expect(problems(Config.parse("42", "json"))).toEqual(["expected a mapping of settings, got 42"])
  })

  it("JSON syntax errors are problems; JSON problems have no line", () => {
    expect(problems(Config.parse(`{"smtp": `, "json"))[0]).toMatch(/^JSON syntax error: /)
    const r = Config.parse(`{"smtp": [{"max_message_size": "lots"}]}`, "json")
    expect(Result.isFailure(r) && r.failure.problems).toEqual([
      { path: "smtp[0].max_message_size", message: `expected ${E.size}, got "lots"` }
    ])
  })

  it("ConfigError's message lists every problem, one per line", () => {
    const r = Config.decode({ log: { level: "x", format: "y" } })
    expect(Result.isFailure(r) && r.failure._tag).toBe("ConfigError")
    expect(Result.isFailure(r) && r.failure.message).toBe(
      `log.format: expected one of "logfmt", "json", got "y"\nlog.level: expected one of "debug", "info", "warning", "error", got "x"`
    )
  })
})

describe("Config: helpers", () => {
  it("formatOf picks the format from the file name", () => {
    expect(["a.yaml", "A.YML", "b.json", "c.conf"].map(Config.formatOf)).toEqual(["yaml", "yaml", "json", undefined])
  })

  it("withHostname fills the host name only when the file had none", () => {
    expect(Config.withHostname(Config.embeddedDefault, "mx.example").hostname).toBe("mx.example")
    const c = ok(Config.decode({ hostname: "Set.Example" }))
    expect(Config.withHostname(c, "other.example").hostname).toBe("set.example")
  })

  it("summary is one line describing listeners, queue, relay and HTTP", () => {
    expect(Config.summary(Config.embeddedDefault)).toBe("SMTP 127.0.0.1:2525; queue disk ./var/queue; relay maildir ./var/mail; HTTP 127.0.0.1:8025")
    expect(Config.summary(ok(Config.parse(example("submission.yaml"), "yaml")))).toBe(
      "SMTP [::]:587 (STARTTLS) auth required; SMTP [::]:465 (TLS) auth required; queue disk /var/spool/mailroom; relay mx"
    )
    expect(Config.summary(ok(Config.decode({ smtp: [], relay: { type: "http", url: "https://u:p@hooks.example/x" } })))).toBe(
      "no SMTP listener; queue disk ./var/queue; relay http hooks.example"
    )
  })
})
