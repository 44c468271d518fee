/**
 * The leaf values of the config file, as plain text parsers: sizes, durations,
 * host names, `host:port` and listen addresses. `Config` wraps each in a
 * schema that names what it expected; other code (the CLI, a future admin
 * API) may use them directly.
 *
 * Sizes: a whole number of bytes, or a number with a unit: `B`, decimal `KB`
 * `MB` `GB` `TB` (also `K` `M` `G` `T`: powers of 1000) and binary `KiB` `MiB`
 * `GiB` `TiB` (powers of 1024), case-insensitive. Durations: a number of
 * seconds, or `<number><unit>` parts with units `ms` `s` `m` `h` `d` `w`.
 *
 * What this module deliberately does not do: resolve names, or check that an
 * address can be bound.
 *
 * @since 0.1.0
 */
import * as ProxyProtocol from "../wire/ProxyProtocol.ts"

/** C0 and C1 controls, DEL, and the Unicode line and paragraph separators. */
export const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 1024,
  kib: 1024,
  mi: 1024 ** 2,
  mib: 1024 ** 2,
  gi: 1024 ** 3,
  gib: 1024 ** 3,
  ti: 1024 ** 4,
  tib: 1024 ** 4
}

/**
 * Parses a size: a whole number of bytes, or a string such as `"10MB"`
 * (decimal units, 10,000,000), `"25MiB"` (binary units, 26,214,400),
 * `"512KiB"` or `"100"`. Units are case-insensitive. `undefined` when invalid
 * or below one byte.
 */
export const parseSize = (u: number | string): number | undefined => {
  if (typeof u === "number") return Number.isSafeInteger(u) && u >= 1 ? u : undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(u)
  if (m === null) return undefined
  const name = m[2]!.toLowerCase()
  if (!Object.hasOwn(SIZE_UNITS, name)) return undefined
  const unit = SIZE_UNITS[name]!
  const n = Math.round(Number(m[1]) * unit)
  return Number.isSafeInteger(n) && n >= 1 ? n : undefined
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/**
 * Parses a duration in milliseconds: a number of seconds, or a string of one
 * or more `<number><unit>` parts with units `ms`, `s`, `m`, `h`, `d`, `w`
 * (`"30s"`, `"5m"`, `"1h30m"`, `"5d"`); a bare number string is seconds.
 */
export const parseDurationMillis = (u: number | string): number | undefined => {
  if (typeof u === "number") return Number.isFinite(u) && u >= 0 ? u * 1000 : undefined
  const s = u.trim()
  if (/^\d+(?:\.\d+)?$/.test(s)) return Number(s) * 1000
  const part = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*/y
  let total = 0
  let at = 0
  while (at < s.length) {
    part.lastIndex = at
    const m = part.exec(s)
    if (m === null) return undefined
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!
    at = part.lastIndex
  }
  return at === 0 || !Number.isFinite(total) ? undefined : total
}

const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
const DOMAIN = new RegExp(`^${LABEL}(?:\\.${LABEL})*\\.?$`)

/** True when `s` is an ASCII host or domain name (LDH labels, at most 253 characters). */
export const isDomainName = (s: string): boolean => s.length > 0 && s.length <= 254 && DOMAIN.test(s)

/** A listening address: TCP (IP literal or host name, and port) or a UNIX socket path. */
export type ListenAddress =
  | { readonly _tag: "Tcp"; readonly host: string; readonly port: number; readonly text: string }
  | { readonly _tag: "Unix"; readonly path: string; readonly text: string }

const parsePort = (s: string): number | undefined => {
  if (!/^\d{1,5}$/.test(s)) return undefined
  const n = Number(s)
  return n <= 65535 ? n : undefined
}

/**
 * Parses `host:port`, `[v6]:port`, or (when `defaultPort` is given) a bare
 * `host` or `[v6]`. IPv6 hosts come back without brackets, normalised.
 */
export const parseHostPort = (
  s: string,
  defaultPort?: number
): { readonly host: string; readonly port: number } | undefined => {
  let host: string
  let portText: string | undefined
  if (s.startsWith("[")) {
    const close = s.indexOf("]")
    if (close === -1) return undefined
    const v6 = ProxyProtocol.normalizeAddress(s.slice(1, close))
    if (v6 === undefined || !s.slice(1, close).includes(":")) return undefined
    host = v6
    const rest = s.slice(close + 1)
    if (rest === "") portText = undefined
    else if (rest.startsWith(":")) portText = rest.slice(1)
    else return undefined
  } else {
    const colon = s.lastIndexOf(":")
    if (colon !== -1 && s.indexOf(":") !== colon) return undefined // IPv6 without brackets
    host = colon === -1 ? s : s.slice(0, colon)
    portText = colon === -1 ? undefined : s.slice(colon + 1)
    if (/^[\d.]+$/.test(host)) {
      const v4 = ProxyProtocol.normalizeAddress(host)
      if (v4 === undefined || v4 !== host) return undefined
    } else if (!isDomainName(host)) return undefined
  }
  const port = portText === undefined ? defaultPort : parsePort(portText)
  return port === undefined ? undefined : { host, port }
}

/** `host:port`, with brackets around an IPv6 host. */
export const formatHostPort = (host: string, port: number): string => host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`

/** Parses one listen address: `"127.0.0.1:2525"`, `"[::1]:2525"`, `"unix:/run/mailroom/lmtp.sock"`. */
export const parseListenAddress = (s: string): ListenAddress | undefined => {
  if (s.startsWith("unix:")) {
    const path = s.slice(5)
    // sun_path holds 108 bytes on Linux (104 on BSD) including the NUL.
    if (path.length === 0 || CONTROL.test(path) || new TextEncoder().encode(path).length > 103) return undefined
    return { _tag: "Unix", path, text: s }
  }
  const hp = parseHostPort(s)
  return hp === undefined ? undefined : { _tag: "Tcp", host: hp.host, port: hp.port, text: formatHostPort(hp.host, hp.port) }
}

