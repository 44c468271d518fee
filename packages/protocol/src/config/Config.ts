/**
 * The `mailroom` config file: its schema (Effect `Schema`), the decoded
 * `Config` value with every default filled in, the embedded default, and
 * errors that name the key, the value and what was expected:
 *
 * ```text
 * smtp[0].max_message_size: expected a size such as "25MiB" or a number of bytes, got "lots"
 * ```
 *
 * Keys are snake_case in the file and stay snake_case in the decoded value, so
 * an error path is also the path into `Config`. Unknown keys are errors (a
 * typo must not silently fall back to a default). Sizes decode to a number of
 * bytes (`"10MB"` is 10,000,000, `"25MiB"` is 26,214,400); durations decode to
 * an Effect `Duration` (numbers are seconds; strings such as `"30s"`, `"5m"`,
 * `"1h30m"`, `"5d"`). Listen addresses decode to a `ListenAddress` union.
 *
 * What this module deliberately does not do: read files, look up the OS host
 * name (`hostname` stays optional; the runtime fills it with `withHostname`),
 * check that certificate or users files exist, or start anything. Both the
 * Node and Deno entry points share it.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as SchemaTransformation from "effect/SchemaTransformation"
import * as YAML from "yaml"
import * as ProxyProtocol from "../wire/ProxyProtocol.ts"
import * as ConfigError from "./ConfigError.ts"
import * as ConfigValue from "./ConfigValue.ts"

// ---------------------------------------------------------------------------
// Leaf values: one parser each, with the text an error shows as "expected".
// ---------------------------------------------------------------------------

/**
 * A leaf schema: `from` checks the primitive type, `parse` the value. Every
 * failure carries `expected`, which the error formatter prints.
 */
const leaf = <E, T>(from: Schema.Codec<E>, expected: string, parse: (e: E) => T | undefined) =>
  from.annotate({ expected }).pipe(
    Schema.decodeTo(
      Schema.declare((_u): _u is T => true, { expected }),
      SchemaTransformation.transformEffect<T, E>({
        decode: (e, options) => {
          const v = parse(e)
          return v === undefined
            ? Effect.fail(new SchemaIssue.InvalidValue({ expected }, e, options))
            : Effect.succeed(v)
        },
        encode: (t) => Effect.succeed(t as unknown as E)
      })
    )
  )

const NumberOrString = Schema.Union([Schema.Number, Schema.String])
const CONTROL = ConfigValue.CONTROL

const oneOf = <const V extends string>(values: ReadonlyArray<V>) =>
  leaf(
    Schema.String,
    `one of ${values.map((v) => JSON.stringify(v)).join(", ")}`,
    (s) => (values as ReadonlyArray<string>).includes(s) ? s as V : undefined
  )

const Bool = leaf(Schema.Boolean, "true or false", (b) => b)

const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  leaf(
    Schema.Number,
    max === Number.MAX_SAFE_INTEGER ? `a whole number of at least ${min}` : `a whole number from ${min} to ${max}`,
    (n) => Number.isInteger(n) && n >= min && n <= max ? n : undefined
  )

const NonEmpty = leaf(Schema.String, "a non-empty string", (s) => s.length > 0 ? s : undefined)

const FilePath = leaf(
  Schema.String,
  "a file or directory path",
  (s) => s.length > 0 && !CONTROL.test(s) ? s : undefined
)

const Text = leaf(
  Schema.String,
  "a single line of text without control characters",
  (s) => s.length <= 200 && !CONTROL.test(s) ? s : undefined
)

const DURATION_EXPECTED = `a duration such as "30s", "5m", "4h" or "5d", or a number of seconds`

const duration = (allowZero: boolean) =>
  leaf(
    NumberOrString,
    allowZero ? DURATION_EXPECTED : `${DURATION_EXPECTED}, above zero`,
    (u) => {
      const ms = ConfigValue.parseDurationMillis(u)
      return ms === undefined || (!allowZero && ms === 0) ? undefined : Duration.millis(ms)
    }
  )
const Dur = duration(false)
const DurOrZero = duration(true)

const Size = leaf(NumberOrString, `a size such as "25MiB" or a number of bytes`, ConfigValue.parseSize)

const Domain = leaf(
  Schema.String,
  `a domain name such as "example.com"`,
  (s) => ConfigValue.isDomainName(s) ? s.toLowerCase() : undefined
)
const DomainPattern = leaf(
  Schema.String,
  `a domain name such as "mail.example.com" or "*.example.com"`,
  (s) => ConfigValue.isDomainName(s.startsWith("*.") ? s.slice(2) : s) ? s.toLowerCase() : undefined
)

/** A listening address: TCP (IP literal or host name, and port) or a UNIX socket path. */
export type ListenAddress = ConfigValue.ListenAddress

const Listen = leaf(
  Schema.String,
  `an address such as "127.0.0.1:2525", "[::1]:2525" or "unix:/run/mailroom/lmtp.sock"`,
  ConfigValue.parseListenAddress
)

const hostPort = (defaultPort: number, example: string) =>
  leaf(Schema.String, `an address such as "${example}"`, (s) => {
    const hp = ConfigValue.parseHostPort(s, defaultPort)
    return hp === undefined ? undefined : { ...hp, text: ConfigValue.formatHostPort(hp.host, hp.port) }
  })

const Host = leaf(
  Schema.String,
  `a host name or IP address such as "smtp.example.com"`,
  (s) => {
    const hp = ConfigValue.parseHostPort(s.includes(":") && !s.startsWith("[") ? `[${s}]` : s, 0)
    return hp === undefined ? undefined : hp.host
  }
)

const Cidr = leaf(
  Schema.String,
  `an IP address or CIDR block such as "10.0.0.0/8" or "2001:db8::/32"`,
  (s) => ProxyProtocol.isValidTrustEntry(s) ? s : undefined
)

const Regex = leaf(Schema.String, "a regular expression", (s) => {
  try {
    new RegExp(s)
    return s
  } catch {
    return undefined
  }
})

const url = (schemes: ReadonlyArray<string>) =>
  leaf(
    Schema.String,
    `a URL starting with ${schemes.map((s) => `${s}://`).join(" or ")}`,
    (s) => {
      try {
        return schemes.includes(new URL(s).protocol.slice(0, -1)) ? s : undefined
      } catch {
        return undefined
      }
    }
  )

/** The SASL mechanisms the SMTP edge can offer. */
export const mechanisms = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"] as const

// ---------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------

/**
 * A default, written as it would be in the file. It is decoded once, lazily,
 * and used as a decoded value, so that the key's own value is decoded in one
 * pass (`withDecodingDefaultKey` would first check the whole subtree against
 * its encoded form and hide value errors behind type errors elsewhere).
 */
const withDefault = <S extends Schema.Top & { readonly DecodingServices: never }>(encoded: S["Encoded"]) =>
(self: S) => {
  let cached: S["Type"] | undefined
  return self.pipe(
    Schema.withDecodingDefaultTypeKey(Effect.sync(() => (cached ??= Schema.decodeUnknownSync(self)(encoded))))
  )
}

const oneOrMany = <S extends Schema.Top>(item: S) => Schema.ArrayEnsure(item)

const Log = Schema.Struct({
  format: oneOf(["logfmt", "json"]).pipe(withDefault("logfmt")),
  level: oneOf(["debug", "info", "warning", "error"]).pipe(withDefault("info"))
})

const Sni = Schema.Struct({
  names: Schema.Array(DomainPattern),
  cert: FilePath,
  key: FilePath
})

const Tls = Schema.Struct({
  cert: FilePath,
  key: FilePath,
  sni: Schema.Array(Sni).pipe(withDefault([])),
  min_version: oneOf(["TLSv1.2", "TLSv1.3"]).pipe(withDefault("TLSv1.2"))
})

const ProxyProtocolSettings = Schema.Struct({
  trusted: Schema.Array(Cidr),
  timeout: Dur.pipe(withDefault("5s"))
})

/** An address pattern of an allow/deny list: `user@example.com`, `@example.com` (a domain) or `/regex/` (case-insensitive). */
const AddressPattern = leaf(
  Schema.String,
  `an address such as "user@example.com", a domain as "@example.com", or a regular expression as "/^.*@example\\.com$/"`,
  (s) => {
    if (s.length < 2 || CONTROL.test(s)) return undefined
    if (s.startsWith("/") && s.endsWith("/") && s.length > 2) {
      try {
        new RegExp(s.slice(1, -1), "i")
        return s
      } catch {
        return undefined
      }
    }
    return s.includes("@") ? s.toLowerCase() : undefined
  }
)

/** An SMTP reply as text: `550 5.7.1 Some text`, with `{placeholders}`. */
const ReplyText = leaf(
  Schema.String,
  `a reply such as "550 5.7.1 Access denied; {reason}"`,
  (s) => /^[245]\d\d( [245]\.\d{1,3}\.\d{1,3})? \S/.test(s) && s.length <= 300 && !CONTROL.test(s) ? s : undefined
)

const spfResults = ["none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"] as const

const Rules = Schema.Struct({
  spf: Schema.optionalKey(Schema.Struct({
    at: oneOf(["mail", "rcpt"]).pipe(withDefault("mail")),
    reject: Schema.Array(oneOf(spfResults)).pipe(withDefault(["fail"])),
    reject_reply: ReplyText.pipe(withDefault("550 5.7.23 SPF check failed: {reason}")),
    defer: Schema.Array(oneOf(spfResults)).pipe(withDefault(["temperror"])),
    defer_reply: ReplyText.pipe(withDefault("451 4.7.24 SPF temporary error: {reason}")),
    header: Bool.pipe(withDefault(true))
  })),
  dnsbl: Schema.optionalKey(Schema.Struct({
    zones: Schema.Array(Domain),
    at: oneOf(["connect", "mail", "rcpt"]).pipe(withDefault("connect")),
    reply: Schema.optionalKey(ReplyText)
  })),
  spamassassin: Schema.optionalKey(Schema.Struct({
    host: Host.pipe(withDefault("127.0.0.1")),
    port: int(1, 65535).pipe(withDefault(783)),
    path: Schema.optionalKey(FilePath),
    reject_at: Schema.optionalKey(leaf(NumberOrString, `a score such as 10, or "spam"`, (u) =>
      u === "spam" ? "spam" as const : typeof u === "number" && Number.isFinite(u) ? u : undefined)),
    on_error: oneOf(["accept", "tempfail"]).pipe(withDefault("accept")),
    timeout: Dur.pipe(withDefault("10s")),
    max_size: Size.pipe(withDefault("500KiB"))
  })),
  senders: Schema.optionalKey(Schema.Struct({
    allow: Schema.optionalKey(Schema.Array(AddressPattern)),
    deny: Schema.Array(AddressPattern).pipe(withDefault([]))
  })),
  recipients: Schema.optionalKey(Schema.Struct({
    allow: Schema.optionalKey(Schema.Array(AddressPattern)),
    deny: Schema.Array(AddressPattern).pipe(withDefault([]))
  }))
})

const SmtpAuth = Schema.Struct({
  mechanisms: Schema.Array(oneOf(mechanisms)).pipe(withDefault(["PLAIN", "LOGIN"])),
  users_file: FilePath,
  allow_plaintext_without_tls: Bool.pipe(withDefault(false)),
  max_failures_per_client: int(1).pipe(withDefault(10)),
  failure_window: Dur.pipe(withDefault("10m"))
})

const Smtp = Schema.Struct({
  listen: oneOrMany(Listen).pipe(withDefault(["127.0.0.1:2525"])),
  mode: oneOf(["smtp", "lmtp"]).pipe(withDefault("smtp")),
  banner: Text.pipe(withDefault("ESMTP Mailroom")),
  tls: Schema.optionalKey(Tls),
  implicit_tls: Bool.pipe(withDefault(false)),
  proxy_protocol: Schema.optionalKey(ProxyProtocolSettings),
  max_message_size: Size.pipe(withDefault("25MiB")),
  max_recipients: int(1).pipe(withDefault(100)),
  max_bad_commands: int(1).pipe(withDefault(20)),
  max_connections: int(1).pipe(withDefault(1000)),
  max_connections_per_client: int(1).pipe(withDefault(20)),
  command_timeout: Dur.pipe(withDefault("5m")),
  data_timeout: Dur.pipe(withDefault("3m")),
  bare_newline: oneOf(["normalize", "reject"]).pipe(withDefault("normalize")),
  auth: Schema.optionalKey(SmtpAuth),
  require_auth: Bool.pipe(withDefault(false)),
  require_tls: Bool.pipe(withDefault(false)),
  local_domains: Schema.Array(Domain).pipe(withDefault([])),
  shutdown_grace: DurOrZero.pipe(withDefault("30s")),
  rules: Rules.pipe(withDefault({}))
})

const Storage = Schema.Union([
  Schema.Struct({ type: Schema.Literal("disk"), path: FilePath.pipe(withDefault("./var/queue")) }),
  /** An append-only journal with group commit, owned by one process (see docs/queue.md). */
  Schema.Struct({ type: Schema.Literal("journal"), path: FilePath.pipe(withDefault("./var/queue.journal")) }),
  Schema.Struct({ type: Schema.Literal("memory") }),
  Schema.Struct({ type: Schema.Literal("redis"), url: url(["redis", "rediss", "unix"]) }),
  /** Deno KV (Deno only; refused at startup on Node). */
  Schema.Struct({ type: Schema.Literal("kv"), path: FilePath.pipe(withDefault("./var/queue.kv")) })
])

const Retry = Schema.Struct({
  intervals: Schema.Array(Dur).pipe(withDefault(["1m", "5m", "15m", "30m", "1h"])),
  max_interval: Dur.pipe(withDefault("1h")),
  max_age: Dur.pipe(withDefault("5d")),
  delay_warning: Dur.pipe(withDefault("4h"))
})

const Policies = Schema.Struct({
  add_date_header: Bool.pipe(withDefault(true)),
  add_message_id_header: Bool.pipe(withDefault(true)),
  add_received_header: Bool.pipe(withDefault(true)),
  split: oneOf(["none", "recipient", "domain"]).pipe(withDefault("domain")),
  max_hops: int(1).pipe(withDefault(50)),
  forward: Schema.Array(Schema.Struct({ pattern: Regex, replace: Schema.String.annotate({ expected: "a string" }) })).pipe(
    withDefault([])
  ),
  aliases_file: Schema.optionalKey(FilePath)
})

const Queue = Schema.Struct({
  storage: Storage.pipe(withDefault({ type: "disk" })),
  retry: Retry.pipe(withDefault({})),
  policies: Policies.pipe(withDefault({}))
})

const clientTimeouts = {
  connect_timeout: Dur.pipe(withDefault("30s")),
  command_timeout: Dur.pipe(withDefault("5m")),
  data_timeout: Dur.pipe(withDefault("10m"))
}

const Relay = Schema.Union([
  Schema.Struct({
    type: Schema.Literal("maildir"),
    path: FilePath.pipe(withDefault("./var/mail")),
    folders: oneOf(["per_recipient", "single"]).pipe(withDefault("per_recipient"))
  }),
  Schema.Struct({
    type: Schema.Literal("mx"),
    ehlo: Schema.optionalKey(Domain),
    tls: oneOf(["opportunistic", "required", "none"]).pipe(withDefault("opportunistic")),
    tls_policy: Schema.optionalKey(Schema.Record(Schema.String, oneOf(["none", "opportunistic", "required", "verify"]))),
    port: int(1, 65535).pipe(withDefault(25)),
    resolver: Schema.optionalKey(hostPort(53, "127.0.0.1:53")),
    force_mx: Schema.optionalKey(Schema.Record(Schema.String, hostPort(25, "smtp.example.net:2525"))),
    ...clientTimeouts,
    idle_timeout: Dur.pipe(withDefault("10s")),
    max_connections_per_host: int(1).pipe(withDefault(5))
  }),
  Schema.Struct({
    type: Schema.Literal("static"),
    host: Host,
    port: int(1, 65535).pipe(withDefault(25)),
    tls: oneOf(["opportunistic", "required", "implicit", "none"]).pipe(withDefault("opportunistic")),
    tls_verify: Bool.pipe(withDefault(true)),
    ca: Schema.optionalKey(FilePath),
    max_connections: int(1).pipe(withDefault(10)),
    auth: Schema.optionalKey(Schema.Struct({ username: NonEmpty, password: NonEmpty })),
    ehlo: Schema.optionalKey(Domain),
    ...clientTimeouts
  }),
  Schema.Struct({
    type: Schema.Literal("lmtp"),
    host: Schema.optionalKey(Host),
    port: int(1, 65535).pipe(withDefault(24)),
    path: Schema.optionalKey(FilePath),
    ...clientTimeouts
  }),
  Schema.Struct({
    type: Schema.Literal("pipe"),
    command: Schema.Array(NonEmpty),
    per_recipient: Bool.pipe(withDefault(true)),
    timeout: Dur.pipe(withDefault("60s"))
  }),
  Schema.Struct({ type: Schema.Literal("http"), url: url(["http", "https"]), timeout: Dur.pipe(withDefault("60s")) }),
  Schema.Struct({ type: Schema.Literal("blackhole") })
])

const Http = Schema.Struct({
  listen: oneOrMany(Listen).pipe(withDefault(["127.0.0.1:8025"])),
  tls: Schema.optionalKey(Tls),
  max_message_size: Size.pipe(withDefault("25MiB")),
  max_recipients: int(1).pipe(withDefault(1000)),
  path: NonEmpty.pipe(withDefault("/")),
  json_path: Schema.optionalKey(NonEmpty),
  auth: Schema.optionalKey(Schema.Struct({ users_file: FilePath })),
  require_auth: Bool.pipe(withDefault(false)),
  rules: Rules.pipe(withDefault({}))
})

const DnsSettings = Schema.Struct({
  resolver: Schema.optionalKey(oneOrMany(hostPort(53, "127.0.0.1:53"))),
  timeout: Dur.pipe(withDefault("5s")),
  tries: int(1, 10).pipe(withDefault(2))
})

/** The schema of the whole file; decode with `decode` or `parse` to get the cross-field checks too. */
export const ConfigSchema = Schema.Struct({
  hostname: Schema.optionalKey(Domain),
  /**
   * Server processes sharing the listeners (SO_REUSEPORT: the kernel spreads
   * connections over them) and the queue storage, run and restarted by one
   * supervising process. 1 runs everything in one process.
   */
  workers: int(1, 64).pipe(withDefault(1)),
  log: Log.pipe(withDefault({})),
  smtp: Schema.Array(Smtp).pipe(withDefault([{}])),
  queue: Queue.pipe(withDefault({})),
  relay: Relay.pipe(withDefault({ type: "maildir" })),
  http: Schema.optionalKey(Http),
  dns: DnsSettings.pipe(withDefault({}))
})

/** A decoded config: defaults filled, sizes in bytes, durations as `Duration`. */
export type Config = typeof ConfigSchema.Type
/** One SMTP or LMTP listener. */
export type SmtpListener = Config["smtp"][number]
/** TLS settings of a listener. */
export type TlsSettings = NonNullable<SmtpListener["tls"]>
/** The queue's storage backend, tagged by `type`. */
export type StorageSettings = Config["queue"]["storage"]
/** The relay, tagged by `type`. */
export type RelaySettings = Config["relay"]
/** The optional HTTP edge. */
export type HttpSettings = NonNullable<Config["http"]>
/** Policies of an edge: SPF, DNSBL, SpamAssassin, sender and recipient lists. */
export type RulesSettings = SmtpListener["rules"]
/** The resolver used by the MX relay, SPF and DNSBL. */
export type DnsSettings = Config["dns"]

// The error type and its formatting live in ConfigError.ts; re-exported here so
// that `Config` alone is enough to decode a file and print what is wrong with it.
export { ConfigError, formatPath, formatProblem, formatValue, type Problem } from "./ConfigError.ts"

// ---------------------------------------------------------------------------
// Cross-field checks (on the decoded value)
// ---------------------------------------------------------------------------

const isIPv4 = (host: string): boolean => /^[\d.]+$/.test(host)

/**
 * True when two TCP listeners cannot both bind: same host, or a wildcard that
 * covers the other (`::` is dual-stack on Node and covers IPv4 too;
 * `0.0.0.0` covers IPv4 only). Port 0 (ephemeral) never clashes.
 */
const tcpClash = (a: { host: string; port: number }, b: { host: string; port: number }): boolean =>
  a.port !== 0 && a.port === b.port && (
    a.host.toLowerCase() === b.host.toLowerCase() || a.host === "::" || b.host === "::" ||
    (a.host === "0.0.0.0" && isIPv4(b.host)) || (b.host === "0.0.0.0" && isIPv4(a.host))
  )

/**
 * What several worker processes cannot share: a Unix socket (one process
 * binds it), port 0 (each worker would get its own port) and the journal
 * (owned by one process).
 */
const workersCheck = (config: Config): Array<ConfigError.RawProblem> => {
  const out: Array<ConfigError.RawProblem> = []
  const listeners = (listen: ReadonlyArray<ListenAddress>, base: ConfigError.Path) =>
    listen.forEach((address, j) => {
      if (address._tag === "Unix") {
        out.push({
          path: [...base, "listen", j],
          message: `expected a TCP address when workers is ${config.workers} (one process binds a Unix socket), got ${
            ConfigError.formatValue(address.text)
          }`
        })
      } else if (address.port === 0) {
        out.push({
          path: [...base, "listen", j],
          message: `expected a fixed port when workers is ${config.workers} (port 0 gives each worker a port of its own), got ${
            ConfigError.formatValue(address.text)
          }`
        })
      }
    })
  config.smtp.forEach((l, i) => listeners(l.listen, ["smtp", i]))
  if (config.http !== undefined) listeners(config.http.listen, ["http"])
  if (config.queue.storage.type === "journal") {
    out.push({
      path: ["queue", "storage", "type"],
      message: `expected storage several processes can share (disk, or kv on Deno) when workers is ${config.workers}, got "journal" (one process owns a journal)`
    })
  }
  return out
}

const crossCheck = (config: Config): Array<ConfigError.RawProblem> => {
  const out: Array<ConfigError.RawProblem> = []
  const seen: Array<{ readonly address: ListenAddress; readonly path: ConfigError.Path }> = []
  const checkListen = (listen: ReadonlyArray<ListenAddress>, base: ConfigError.Path) => {
    listen.forEach((address, j) => {
      const path = [...base, "listen", j]
      const clash = seen.find(({ address: other }) =>
        address._tag === "Unix"
          ? other._tag === "Unix" && other.path === address.path
          : other._tag === "Tcp" && tcpClash(address, other)
      )
      if (clash !== undefined) {
        out.push({
          path,
          message: `expected an address no other listener uses, got ${ConfigError.formatValue(address.text)} (also at ${
            ConfigError.formatPath(clash.path)
          })`
        })
      }
      seen.push({ address, path })
    })
  }
  config.smtp.forEach((l, i) => {
    const at = (...keys: Array<PropertyKey>): ConfigError.Path => ["smtp", i, ...keys]
    checkListen(l.listen, ["smtp", i])
    if (l.listen.length === 0) out.push({ path: at("listen"), message: "expected at least one address, got []" })
    if (l.implicit_tls && l.tls === undefined) {
      out.push({ path: at("implicit_tls"), message: "expected a tls section (cert and key) when implicit_tls is true, got true" })
    }
    if (l.require_tls && l.tls === undefined) {
      out.push({ path: at("require_tls"), message: "expected a tls section (cert and key) when require_tls is true, got true" })
    }
    if (l.require_auth && l.auth === undefined) {
      out.push({ path: at("require_auth"), message: "expected an auth section when require_auth is true, got true" })
    }
    if (l.require_auth && l.auth !== undefined && l.tls === undefined && !l.auth.allow_plaintext_without_tls) {
      out.push({
        path: at("require_auth"),
        message:
          "expected a tls section or auth.allow_plaintext_without_tls: true (AUTH is only offered over TLS, so no client could send), got true"
      })
    }
    if (l.auth !== undefined && l.auth.mechanisms.length === 0) {
      out.push({ path: at("auth", "mechanisms"), message: "expected at least one mechanism, got []" })
    }
    if (l.proxy_protocol !== undefined && l.proxy_protocol.trusted.length === 0) {
      out.push({ path: at("proxy_protocol", "trusted"), message: "expected at least one address or CIDR block, got []" })
    }
    l.tls?.sni.forEach((s, k) => {
      if (s.names.length === 0) out.push({ path: at("tls", "sni", k, "names"), message: "expected at least one name, got []" })
    })
  })
  if (config.http !== undefined) checkListen(config.http.listen, ["http"])
  if (config.workers > 1) out.push(...workersCheck(config))
  if (config.queue.retry.intervals.length === 0) {
    out.push({ path: ["queue", "retry", "intervals"], message: "expected at least one duration, got []" })
  }
  const relay = config.relay
  if (relay.type === "lmtp" && (relay.host === undefined) === (relay.path === undefined)) {
    out.push({
      path: ["relay", relay.host === undefined ? "host" : "path"],
      message: relay.host === undefined
        ? "expected either host (with port) or path (a UNIX socket), got nothing"
        : "expected either host or path, not both, got both"
    })
  }
  if (relay.type === "pipe" && relay.command.length === 0) {
    out.push({ path: ["relay", "command"], message: `expected a program and its arguments such as ["/usr/bin/maildrop"], got []` })
  }
  if (relay.type === "mx" && relay.force_mx !== undefined) {
    for (const domain of Object.keys(relay.force_mx)) {
      if (!ConfigValue.isDomainName(domain)) {
        out.push({
          path: ["relay", "force_mx", domain],
          message: `expected a domain name such as "example.com" as the key, got ${ConfigError.formatValue(domain)}`
        })
      }
    }
  }
  return out
}

// ---------------------------------------------------------------------------
// Decoding and parsing
// ---------------------------------------------------------------------------

const decodeRaw = Schema.decodeUnknownResult(ConfigSchema)
const PARSE_OPTIONS = { errors: "all", onExcessProperty: "error", reportInput: true } as const

type Locate = (path: ConfigError.Path) => number | undefined

const toProblems = (raw: ReadonlyArray<ConfigError.RawProblem>, locate?: Locate): Array<ConfigError.Problem> =>
  raw.map((p) => {
    const path = ConfigError.formatPath(p.path)
    const line = locate?.(p.path)
    return line === undefined ? { path, message: p.message } : { path, message: p.message, line }
  })

const decodeWith = (u: unknown, locate?: Locate): Result.Result<Config, ConfigError.ConfigError> => {
  const decoded = decodeRaw(u === null || u === undefined ? {} : u, PARSE_OPTIONS)
  if (Result.isFailure(decoded)) {
    return Result.fail(ConfigError.make(toProblems(ConfigError.fromIssue(decoded.failure.issue), locate)))
  }
  const raw = crossCheck(decoded.success)
  return raw.length === 0 ? Result.succeed(decoded.success) : Result.fail(ConfigError.make(toProblems(raw, locate)))
}

/**
 * Decodes an already-parsed value (e.g. from `JSON.parse`) into a `Config`,
 * filling defaults and running the cross-field checks. `null`/`undefined`
 * decode as an empty file (the embedded default).
 */
export const decode = (u: unknown): Result.Result<Config, ConfigError.ConfigError> => decodeWith(u)

/** Finds the line of the deepest YAML node along `path`. */
const yamlLocator = (doc: YAML.Document.Parsed, lines: YAML.LineCounter): Locate => (path) => {
  let node: unknown = doc.contents
  let offset: number | undefined = (node as { range?: [number, number, number] } | null)?.range?.[0]
  for (const key of path) {
    if (YAML.isMap(node)) {
      const pair = node.items.find((p) => YAML.isScalar(p.key) && String(p.key.value) === String(key))
      if (pair === undefined) break
      const keyNode = pair.key as { range?: [number, number, number] }
      offset = keyNode.range?.[0] ?? offset
      node = pair.value
    } else if (YAML.isSeq(node) && typeof key === "number") {
      const item = node.items[key] as { range?: [number, number, number] } | undefined
      if (item === undefined) break
      offset = item.range?.[0] ?? offset
      node = item
    } else break
  }
  return offset === undefined ? undefined : lines.linePos(offset).line
}

/**
 * Parses config text (YAML 1.2 core schema, merge keys `<<` allowed; or
 * JSON) and decodes it. Syntax errors, duplicate keys and unknown YAML tags
 * are problems too. Problems from YAML text carry the line they point at.
 */
export const parse = (text: string, format: "yaml" | "json"): Result.Result<Config, ConfigError.ConfigError> => {
  if (format === "json") {
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (e) {
      return Result.fail(ConfigError.make([{ path: "", message: `JSON syntax error: ${(e as Error).message}` }]))
    }
    return decodeWith(value)
  }
  const lines = new YAML.LineCounter()
  const doc = YAML.parseDocument(text, { lineCounter: lines, prettyErrors: false, merge: true, stringKeys: true, uniqueKeys: true })
  const bad = [...doc.errors, ...doc.warnings]
  if (bad.length > 0) {
    return Result.fail(ConfigError.make(bad.map((e) => {
      const { line, col } = lines.linePos(e.pos[0])
      return { path: "", message: `YAML error at line ${line}, column ${col}: ${e.message.split("\n")[0]}`, line }
    })))
  }
  let value: unknown
  try {
    value = doc.toJS({ maxAliasCount: 100 })
  } catch (e) {
    return Result.fail(ConfigError.make([{ path: "", message: `YAML error: ${(e as Error).message}` }]))
  }
  return decodeWith(value, yamlLocator(doc, lines))
}

/** The format a file name implies: `.yaml`/`.yml` → YAML, `.json` → JSON, otherwise `undefined`. */
export const formatOf = (fileName: string): "yaml" | "json" | undefined => {
  const lower = fileName.toLowerCase()
  return lower.endsWith(".yaml") || lower.endsWith(".yml") ? "yaml" : lower.endsWith(".json") ? "json" : undefined
}

/**
 * The config used when no file is given: SMTP on 127.0.0.1:2525, the HTTP
 * edge on 127.0.0.1:8025 (slimta's protocol on `/`, JSON on `/send`), a disk
 * queue under ./var, Maildir delivery into ./var/mail. (An empty config file
 * is the schema's defaults: the same, without the HTTP edge.)
 */
export const embeddedDefaultInput = { http: { json_path: "/send" } } as const

export const embeddedDefault: Config = (() => {
  const r = decode(embeddedDefaultInput)
  if (Result.isFailure(r)) throw new Error(`embedded default config is invalid: ${r.failure.message}`)
  return r.success
})()

/** Fills `hostname` when the file left it out (the runtime passes the OS host name). */
export const withHostname = (config: Config, hostname: string): Config =>
  config.hostname === undefined ? { ...config, hostname } : config

/** A one-line summary: listeners, queue storage, relay, HTTP edge. */
export const summary = (config: Config): string => {
  const listeners = config.smtp.map((l) =>
    `${l.mode.toUpperCase()} ${l.listen.map((a) => a.text).join(",")}${l.implicit_tls ? " (TLS)" : l.tls ? " (STARTTLS)" : ""}${
      l.require_auth ? " auth required" : ""
    }`
  )
  const storage = config.queue.storage
  const queue = storage.type === "disk"
    ? `disk ${storage.path}`
    : storage.type === "journal"
    ? `journal ${storage.path}`
    : storage.type === "kv"
    ? `kv ${storage.path}`
    : storage.type === "redis"
    ? "redis"
    : "memory"
  const relay = config.relay
  const relayText = relay.type === "maildir"
    ? `maildir ${relay.path}`
    : relay.type === "static"
    ? `static ${ConfigValue.formatHostPort(relay.host, relay.port)}`
    : relay.type === "lmtp"
    ? `lmtp ${relay.path ?? ConfigValue.formatHostPort(relay.host ?? "", relay.port)}`
    : relay.type === "http"
    ? `http ${new URL(relay.url).host}`
    : relay.type
  const http = config.http === undefined ? "" : `; HTTP ${config.http.listen.map((a) => a.text).join(",")}`
  const workers = config.workers > 1 ? `; ${config.workers} workers` : ""
  return `${listeners.length === 0 ? "no SMTP listener" : listeners.join("; ")}; queue ${queue}; relay ${relayText}${http}${workers}`
}
