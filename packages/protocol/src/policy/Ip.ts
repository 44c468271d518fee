/**
 * IP addresses as policies need them: strict parsing of IPv4 dotted quads
 * and IPv6 text (RFC 4291 §2.2, with an embedded IPv4 tail) into bytes,
 * IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) taken as the IPv4 address
 * they carry (RFC 7208 §5), CIDR matching, the RFC 5952 text form, and the
 * reversed labels of reverse-DNS style names (octets for IPv4, nibbles for
 * IPv6) that SPF's `%{i}` macro and DNS blocklists use.
 *
 * What it deliberately does not do: zone ids (`fe80::1%eth0`), ports, or
 * anything that needs the network.
 *
 * @since 0.1.0
 */

/** An address: 4 bytes (IPv4) or 16 bytes (IPv6). */
export interface Ip {
  readonly family: 4 | 6
  readonly bytes: Uint8Array
}

const QUAD = /^(?:0|[1-9]\d{0,2})$/

/** Parses a dotted quad strictly: four decimal octets 0-255, no leading zeros, nothing else. */
export const parseIpv4 = (text: string): Uint8Array | undefined => {
  const parts = text.split(".")
  if (parts.length !== 4) return undefined
  const out = new Uint8Array(4)
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!
    if (!QUAD.test(p)) return undefined
    const n = Number(p)
    if (n > 255) return undefined
    out[i] = n
  }
  return out
}

const HEXGROUP = /^[0-9A-Fa-f]{1,4}$/

/** Parses IPv6 text (`::` compression, optional trailing dotted quad) into 16 bytes. */
export const parseIpv6 = (text: string): Uint8Array | undefined => {
  if (text.length < 2 || text.length > 45) return undefined
  const doubles = text.split("::")
  if (doubles.length > 2) return undefined
  const groups = (s: string): Array<string> | undefined => (s === "" ? [] : s.split(":"))
  const head = groups(doubles[0]!)
  const tail = doubles.length === 2 ? groups(doubles[1]!) : []
  if (!head || !tail) return undefined
  const words: Array<number> = []
  const all = [...head, ...tail]
  let v4: Uint8Array | undefined
  const last = all[all.length - 1]
  if (last !== undefined && last.includes(".")) {
    v4 = parseIpv4(last)
    if (!v4) return undefined
    if (tail.length > 0) tail.pop()
    else head.pop()
  }
  for (const g of [...head, ...tail]) if (!HEXGROUP.test(g)) return undefined
  const needed = v4 ? 6 : 8
  const present = head.length + tail.length
  if (doubles.length === 2) {
    if (present > needed - 1) return undefined
  } else if (present !== needed) return undefined
  for (const g of head) words.push(parseInt(g, 16))
  for (let i = 0; i < needed - present; i++) words.push(0)
  for (const g of tail) words.push(parseInt(g, 16))
  const out = new Uint8Array(16)
  for (let i = 0; i < needed; i++) {
    out[2 * i] = words[i]! >> 8
    out[2 * i + 1] = words[i]! & 0xff
  }
  if (v4) out.set(v4, 12)
  return out
}

const isMapped = (b: Uint8Array): boolean => {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false
  return b[10] === 0xff && b[11] === 0xff
}

/**
 * Parses a client address: IPv4, IPv6, or IPv6 in brackets (`[2001:db8::1]`,
 * `[IPv6:2001:db8::1]`). IPv4-mapped IPv6 addresses become IPv4.
 */
export const parse = (text: string): Ip | undefined => {
  let t = text.trim()
  if (t.startsWith("[") && t.endsWith("]")) t = t.slice(1, -1)
  if (/^ipv6:/i.test(t)) t = t.slice(5)
  const v4 = parseIpv4(t)
  if (v4) return { family: 4, bytes: v4 }
  const v6 = parseIpv6(t)
  if (!v6) return undefined
  return isMapped(v6) ? { family: 4, bytes: v6.slice(12) } : { family: 6, bytes: v6 }
}

/** True when the first `prefix` bits of `a` and `b` agree (both the same length). */
export const prefixMatch = (a: Uint8Array, b: Uint8Array, prefix: number): boolean => {
  if (a.length !== b.length) return false
  const full = Math.floor(prefix / 8)
  for (let i = 0; i < full; i++) if (a[i] !== b[i]) return false
  const rest = prefix % 8
  if (rest === 0) return true
  const mask = (0xff << (8 - rest)) & 0xff
  return ((a[full]! ^ b[full]!) & mask) === 0
}

/** The address as text: dotted quad, or RFC 5952 IPv6 (lower case, longest zero run compressed). */
export const format = (ip: Ip): string => {
  if (ip.family === 4) return Array.from(ip.bytes).join(".")
  const words: Array<number> = []
  for (let i = 0; i < 16; i += 2) words.push((ip.bytes[i]! << 8) | ip.bytes[i + 1]!)
  let bestStart = -1
  let bestLen = 0
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && words[j] === 0) j++
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = words.map((w) => w.toString(16))
  if (bestStart < 0) return hex.join(":")
  const left = hex.slice(0, bestStart).join(":")
  const right = hex.slice(bestStart + bestLen).join(":")
  return `${left}::${right}`
}

/**
 * The labels of the address in forward order, as used by reverse-DNS style
 * names: the four decimal octets, or the 32 hex nibbles (`upper` for
 * upper-case hex). Reverse them for `in-addr.arpa` / `ip6.arpa` order.
 */
export const labels = (ip: Ip, upper = false): Array<string> => {
  if (ip.family === 4) return Array.from(ip.bytes, (b) => String(b))
  const out: Array<string> = []
  for (const b of ip.bytes) out.push((b >> 4).toString(16), (b & 0xf).toString(16))
  return upper ? out.map((s) => s.toUpperCase()) : out
}

/** The reverse-lookup name: `1.2.0.192.in-addr.arpa` or 32 nibbles + `.ip6.arpa`. */
export const reverseName = (ip: Ip): string =>
  `${labels(ip).reverse().join(".")}.${ip.family === 4 ? "in-addr.arpa" : "ip6.arpa"}`

/** Address equality (same family and bytes). */
export const equals = (a: Ip, b: Ip): boolean => a.family === b.family && prefixMatch(a.bytes, b.bytes, a.bytes.length * 8)
