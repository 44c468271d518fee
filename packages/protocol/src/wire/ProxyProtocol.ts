/**
 * The HAProxy PROXY protocol (v1 text and v2 binary, auto-detected): a pure
 * decoder built for EXACT reads, the matching encoders, and the trusted-peer
 * check (addresses and CIDR blocks, IPv4 and IPv6).
 *
 * `decode` takes every header byte read so far, from the start of the
 * connection, and answers `NeedMore` with the total number of bytes it needs
 * before it can say more. That number never exceeds the length of the
 * shortest header that could still be valid, so an adapter that reads exactly
 * `atLeast - buf.length` bytes at a time never consumes a byte that belongs to
 * the next layer (an SMTP command, a TLS ClientHello). Any inexact input is
 * `Invalid`: the spec says a receiver "MUST not try to guess".
 *
 * Addresses are returned as text: IPv4 dotted-quad, IPv6 in RFC 5952
 * canonical form, and IPv4-mapped IPv6 (`::ffff:192.0.2.1`) as plain IPv4 so
 * that policies see one form per client.
 *
 * What this module deliberately does not do: read sockets, time out, decide
 * whether a listener expects a header, or interpret v2 TLVs (they are
 * skipped). A v2 UNIX-family header is accepted but yields no source (there is
 * no IP to report).
 *
 * @since 0.1.0
 */
import type * as Transport from "../edge/Transport.ts"
import * as Bytes from "./Bytes.ts"

/** The outcome of `decode`. */
export type ProxyResult =
  | {
    readonly _tag: "NeedMore"
    /** Total bytes (counted from the start of the connection) needed before calling again. */
    readonly atLeast: number
  }
  | {
    readonly _tag: "Done"
    readonly header: Transport.ProxiedFacts
    /** Length of the header; the bytes after it belong to the next layer. */
    readonly consumed: number
  }
  | { readonly _tag: "Invalid"; readonly reason: string }

/** A source or destination, as in `ProxiedFacts`. */
export interface Peer {
  readonly address: string
  readonly port: number
}

/** Longest v1 header, CRLF included. */
export const V1_MAX_LENGTH = 107
/** Default cap on the v2 address-and-TLV block (the 16-byte fixed part excluded). */
export const V2_DEFAULT_MAX_LENGTH = 1024
/** The 12-byte v2 signature. */
export const V2_SIGNATURE: Uint8Array = new Uint8Array([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
])

const V1_PREFIX = Bytes.fromLatin1("PROXY ")
/** "PROXY UNKNOWN\r\n": no header of either version is shorter. */
const MIN_HEADER = 15
const V2_FIXED = 16

const needMore = (atLeast: number): ProxyResult => ({ _tag: "NeedMore", atLeast })
const invalid = (reason: string): ProxyResult => ({ _tag: "Invalid", reason })

/** Options of `decode`. */
export interface DecodeOptions {
  /** Largest v2 address-and-TLV block accepted, bytes (default 1024). */
  readonly maxV2Length?: number
}

/**
 * Decodes a PROXY header from the first bytes of a connection. `buf` holds
 * every byte read so far (it may run past the header; `consumed` says where
 * the header ends). Never throws.
 */
export const decode = (buf: Uint8Array, options?: DecodeOptions): ProxyResult => {
  if (buf.length === 0) return needMore(MIN_HEADER)
  const first = buf[0]
  if (first === V2_SIGNATURE[0]) return decodeV2(buf, options?.maxV2Length ?? V2_DEFAULT_MAX_LENGTH)
  if (first === V1_PREFIX[0]) return decodeV1(buf)
  return invalid("not a PROXY protocol header")
}

// ---------------------------------------------------------------------------
// v1
// ---------------------------------------------------------------------------

const decodeV1 = (buf: Uint8Array): ProxyResult => {
  const n = Math.min(buf.length, V1_MAX_LENGTH)
  for (let i = 0; i < n; i++) {
    const c = buf[i]!
    if (i < V1_PREFIX.length) {
      if (c !== V1_PREFIX[i]) return invalid("not a PROXY protocol header")
      continue
    }
    if (c === Bytes.CR) {
      if (i + 2 > V1_MAX_LENGTH) return invalid(`v1 header longer than ${V1_MAX_LENGTH} bytes`)
      if (i + 1 >= buf.length) break
      if (buf[i + 1] !== Bytes.LF) return invalid("v1 header: CR not followed by LF")
      return parseV1Line(Bytes.toLatin1(buf, 0, i), i + 2)
    }
    if (c < 0x20 || c > 0x7e) return invalid("v1 header: byte outside printable ASCII")
  }
  if (buf.length < MIN_HEADER) return needMore(MIN_HEADER)
  if (buf.length >= V1_MAX_LENGTH) return invalid(`v1 header longer than ${V1_MAX_LENGTH} bytes`)
  // No CRLF yet: at least CR LF (or just LF after a trailing CR) must follow.
  const atLeast = buf[buf.length - 1] === Bytes.CR ? buf.length + 1 : buf.length + 2
  if (atLeast > V1_MAX_LENGTH) return invalid(`v1 header longer than ${V1_MAX_LENGTH} bytes`)
  return needMore(atLeast)
}

const PORT = /^(?:0|[1-9][0-9]{0,4})$/

const parsePort = (s: string): number | undefined => {
  if (!PORT.test(s)) return undefined
  const p = Number(s)
  return p <= 65535 ? p : undefined
}

const parseV1Line = (line: string, consumed: number): ProxyResult => {
  const parts = line.split(" ")
  const proto = parts[1]
  if (proto === "UNKNOWN") {
    // "the receiver must ignore anything presented before the CRLF"
    return { _tag: "Done", header: { version: 1, source: undefined, destination: undefined }, consumed }
  }
  if (proto !== "TCP4" && proto !== "TCP6") return invalid(`v1 header: unknown protocol ${JSON.stringify(proto ?? "")}`)
  if (parts.length !== 6) return invalid("v1 header: expected exactly 4 fields after the protocol, single spaces")
  const v6 = proto === "TCP6"
  const src = v6 ? parseIPv6(parts[2]!) : parseIPv4(parts[2]!)
  const dst = v6 ? parseIPv6(parts[3]!) : parseIPv4(parts[3]!)
  if (src === undefined) return invalid(`v1 header: invalid ${proto} source address`)
  if (dst === undefined) return invalid(`v1 header: invalid ${proto} destination address`)
  const sport = parsePort(parts[4]!)
  const dport = parsePort(parts[5]!)
  if (sport === undefined) return invalid("v1 header: invalid source port")
  if (dport === undefined) return invalid("v1 header: invalid destination port")
  return {
    _tag: "Done",
    header: {
      version: 1,
      source: { address: formatAddress(src), port: sport },
      destination: { address: formatAddress(dst), port: dport }
    },
    consumed
  }
}

// ---------------------------------------------------------------------------
// v2
// ---------------------------------------------------------------------------

const decodeV2 = (buf: Uint8Array, maxLength: number): ProxyResult => {
  const n = Math.min(buf.length, V2_SIGNATURE.length)
  for (let i = 0; i < n; i++) {
    if (buf[i] !== V2_SIGNATURE[i]) return invalid("not a PROXY protocol header")
  }
  if (buf.length < V2_FIXED) return needMore(V2_FIXED)
  const verCmd = buf[12]!
  const fam = buf[13]!
  const len = (buf[14]! << 8) | buf[15]!
  if (verCmd >> 4 !== 2) return invalid(`v2 header: unsupported version ${verCmd >> 4}`)
  const command = verCmd & 0x0f
  if (command > 1) return invalid(`v2 header: unknown command ${command}`)
  if (len > maxLength) return invalid(`v2 header: address block of ${len} bytes exceeds ${maxLength}`)
  const total = V2_FIXED + len
  if (buf.length < total) return needMore(total)
  if (command === 0) {
    // LOCAL: "the receiver must ... use the real connection endpoints and discard the protocol block"
    return { _tag: "Done", header: { version: 2, source: undefined, destination: undefined }, consumed: total }
  }
  const family = fam >> 4
  const transport = fam & 0x0f
  if (family === 0) {
    // UNSPEC: forwarded for an unknown protocol; use the real endpoints.
    return { _tag: "Done", header: { version: 2, source: undefined, destination: undefined }, consumed: total }
  }
  if (family > 3) return invalid(`v2 header: unknown address family ${family}`)
  if (transport !== 1) return invalid(`v2 header: transport ${transport} is not STREAM`)
  const need = family === 1 ? 12 : family === 2 ? 36 : 216
  if (len < need) return invalid(`v2 header: address block of ${len} bytes too short for the family (${need})`)
  if (family === 3) {
    return { _tag: "Done", header: { version: 2, source: undefined, destination: undefined }, consumed: total }
  }
  const a = V2_FIXED
  const size = family === 1 ? 4 : 16
  const src = family === 1 ? mapV4(buf.subarray(a, a + 4)) : buf.slice(a, a + 16)
  const dst = family === 1 ? mapV4(buf.subarray(a + 4, a + 8)) : buf.slice(a + 16, a + 32)
  const p = a + 2 * size
  const sport = (buf[p]! << 8) | buf[p + 1]!
  const dport = (buf[p + 2]! << 8) | buf[p + 3]!
  return {
    _tag: "Done",
    header: {
      version: 2,
      source: { address: formatAddress(src), port: sport },
      destination: { address: formatAddress(dst), port: dport }
    },
    consumed: total
  }
}

// ---------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------

const addressOf = (text: string): Uint8Array => {
  const a = parseAddress(text)
  if (a === undefined) throw new RangeError(`invalid IP address ${JSON.stringify(text)}`)
  return a
}

const checkPort = (port: number): number => {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`invalid port ${port}`)
  return port
}

/**
 * Encodes a v1 header. Without a source (or destination) it is
 * `PROXY UNKNOWN\r\n`. Both addresses IPv4 (or IPv4-mapped) give TCP4,
 * otherwise TCP6. Throws a RangeError on an invalid address or port.
 */
export const encodeV1 = (facts: { readonly source: Peer | undefined; readonly destination: Peer | undefined }): Uint8Array => {
  const { destination, source } = facts
  if (source === undefined || destination === undefined) return Bytes.fromLatin1("PROXY UNKNOWN\r\n")
  const s = addressOf(source.address)
  const d = addressOf(destination.address)
  const v4 = isMappedV4(s) && isMappedV4(d)
  const text = v4
    ? `PROXY TCP4 ${formatIPv4(s)} ${formatIPv4(d)}`
    : `PROXY TCP6 ${formatIPv6(s)} ${formatIPv6(d)}`
  return Bytes.fromLatin1(`${text} ${checkPort(source.port)} ${checkPort(destination.port)}\r\n`)
}

/** Options of `encodeV2`. */
export interface EncodeV2Options {
  /** Default: PROXY with a source, LOCAL without. */
  readonly command?: "LOCAL" | "PROXY"
  /** Raw TLV bytes appended after the addresses. */
  readonly tlvs?: Uint8Array
}

/**
 * Encodes a v2 header (STREAM). Without a source (or destination) the family
 * is UNSPEC with no addresses. Both addresses IPv4 (or IPv4-mapped) give
 * INET, otherwise INET6. Throws a RangeError on an invalid address or port.
 */
export const encodeV2 = (
  facts: { readonly source: Peer | undefined; readonly destination: Peer | undefined },
  options?: EncodeV2Options
): Uint8Array => {
  const { destination, source } = facts
  const command = options?.command ?? (source === undefined ? "LOCAL" : "PROXY")
  const tlvs = options?.tlvs ?? Bytes.empty
  let fam = 0x00
  let addr: Uint8Array = Bytes.empty
  if (source !== undefined && destination !== undefined) {
    const s = addressOf(source.address)
    const d = addressOf(destination.address)
    const v4 = isMappedV4(s) && isMappedV4(d)
    const size = v4 ? 4 : 16
    fam = v4 ? 0x11 : 0x21
    addr = new Uint8Array(2 * size + 4)
    addr.set(v4 ? s.subarray(12) : s, 0)
    addr.set(v4 ? d.subarray(12) : d, size)
    const sp = checkPort(source.port)
    const dp = checkPort(destination.port)
    addr[2 * size] = sp >> 8
    addr[2 * size + 1] = sp & 0xff
    addr[2 * size + 2] = dp >> 8
    addr[2 * size + 3] = dp & 0xff
  }
  const len = addr.length + tlvs.length
  if (len > 0xffff) throw new RangeError("v2 header too long")
  const out = new Uint8Array(V2_FIXED + len)
  out.set(V2_SIGNATURE, 0)
  out[12] = 0x20 | (command === "PROXY" ? 1 : 0)
  out[13] = fam
  out[14] = len >> 8
  out[15] = len & 0xff
  out.set(addr, V2_FIXED)
  out.set(tlvs, V2_FIXED + addr.length)
  return out
}

// ---------------------------------------------------------------------------
// Addresses: every address is held as 16 bytes, IPv4 as IPv4-mapped IPv6.
// ---------------------------------------------------------------------------

const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] as const

const mapV4 = (four: Uint8Array): Uint8Array => {
  const out = new Uint8Array(16)
  out[10] = 0xff
  out[11] = 0xff
  out.set(four, 12)
  return out
}

const isMappedV4 = (a: Uint8Array): boolean => {
  for (let i = 0; i < 12; i++) if (a[i] !== V4_MAPPED_PREFIX[i]) return false
  return true
}

const DEC_OCTET = /^(?:0|[1-9][0-9]{0,2})$/

/** Strict dotted-quad: four decimal octets 0-255, no leading zeros, no other forms. */
const parseIPv4Octets = (s: string): Uint8Array | undefined => {
  const parts = s.split(".")
  if (parts.length !== 4) return undefined
  const out = new Uint8Array(4)
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!
    if (!DEC_OCTET.test(p)) return undefined
    const v = Number(p)
    if (v > 255) return undefined
    out[i] = v
  }
  return out
}

const parseIPv4 = (s: string): Uint8Array | undefined => {
  const o = parseIPv4Octets(s)
  return o === undefined ? undefined : mapV4(o)
}

const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/

/** Strict RFC 4291 text: hex groups of 1-4 digits, at most one `::`, optional trailing dotted quad. No zone. */
const parseIPv6 = (s: string): Uint8Array | undefined => {
  if (s.length < 2 || s.length > 45) return undefined
  const dbl = s.indexOf("::")
  if (dbl !== -1 && s.indexOf("::", dbl + 1) !== -1) return undefined
  const headText = dbl === -1 ? s : s.slice(0, dbl)
  const tailText = dbl === -1 ? "" : s.slice(dbl + 2)
  const head = headText === "" ? [] : headText.split(":")
  const tail = tailText === "" ? [] : tailText.split(":")
  const groups: Array<number> = []
  const words = (list: ReadonlyArray<string>, isLast: boolean): Array<number> | undefined => {
    const out: Array<number> = []
    for (let i = 0; i < list.length; i++) {
      const g = list[i]!
      if (isLast && i === list.length - 1 && g.includes(".")) {
        const v4 = parseIPv4Octets(g)
        if (v4 === undefined) return undefined
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!)
      } else {
        if (!HEX_GROUP.test(g)) return undefined
        out.push(parseInt(g, 16))
      }
    }
    return out
  }
  const h = words(head, dbl === -1)
  const t = words(tail, true)
  if (h === undefined || t === undefined) return undefined
  if (dbl === -1) {
    if (h.length !== 8) return undefined
    groups.push(...h)
  } else {
    // "::" stands for at least one group of zeros
    if (h.length + t.length > 7) return undefined
    groups.push(...h)
    for (let i = h.length + t.length; i < 8; i++) groups.push(0)
    groups.push(...t)
  }
  const out = new Uint8Array(16)
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i]! >> 8
    out[2 * i + 1] = groups[i]! & 0xff
  }
  return out
}

/** Parses an IPv4 or IPv6 address (strictly, as above) into 16 bytes. */
const parseAddress = (s: string): Uint8Array | undefined => s.includes(":") ? parseIPv6(s) : parseIPv4(s)

const formatIPv4 = (a: Uint8Array): string => `${a[12]}.${a[13]}.${a[14]}.${a[15]}`

/** RFC 5952: lower case, no leading zeros, the longest run of 2+ zero groups (first on a tie) as `::`. */
const formatIPv6 = (a: Uint8Array): string => {
  const g: Array<number> = []
  for (let i = 0; i < 8; i++) g.push((a[2 * i]! << 8) | a[2 * i + 1]!)
  let bestStart = -1
  let bestLen = 1
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && g[j] === 0) j++
    if (j - i > bestLen) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = (from: number, to: number): string => g.slice(from, to).map((x) => x.toString(16)).join(":")
  if (bestStart === -1) return hex(0, 8)
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`
}

/** IPv4 (and IPv4-mapped IPv6) as dotted quad, the rest as RFC 5952 IPv6. */
const formatAddress = (a: Uint8Array): string => isMappedV4(a) ? formatIPv4(a) : formatIPv6(a)

/**
 * Normalises an IP address text to the form `decode` reports (dotted quad for
 * IPv4 and IPv4-mapped IPv6, RFC 5952 otherwise), or `undefined` when it is
 * not a valid address. A `%zone` suffix is dropped.
 */
export const normalizeAddress = (address: string): string | undefined => {
  const a = parseAddress(stripZone(address))
  return a === undefined ? undefined : formatAddress(a)
}

const stripZone = (s: string): string => {
  const i = s.indexOf("%")
  return i === -1 ? s : s.slice(0, i)
}

// ---------------------------------------------------------------------------
// Trusted peers
// ---------------------------------------------------------------------------

interface Block {
  readonly base: Uint8Array
  readonly bits: number
}

const parseBlock = (entry: string): Block | undefined => {
  const slash = entry.indexOf("/")
  const text = slash === -1 ? entry : entry.slice(0, slash)
  const base = parseAddress(stripZone(text.trim()))
  if (base === undefined) return undefined
  const v4 = !text.includes(":")
  const max = v4 ? 32 : 128
  let bits = max
  if (slash !== -1) {
    const b = entry.slice(slash + 1)
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(b)) return undefined
    bits = Number(b)
    if (bits > max) return undefined
  }
  return { base, bits: v4 ? bits + 96 : bits }
}

const inBlock = (a: Uint8Array, block: Block): boolean => {
  let bits = block.bits
  for (let i = 0; i < 16 && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff
    if ((a[i]! & mask) !== (block.base[i]! & mask)) return false
  }
  return true
}

/** True when `entry` is an address or CIDR block that `isTrusted` understands. */
export const isValidTrustEntry = (entry: string): boolean => parseBlock(entry) !== undefined

/**
 * True when `address` (IPv4, IPv6, IPv4-mapped IPv6, optional `%zone`) lies in
 * one of `trusted`: addresses or CIDR blocks such as `"10.0.0.0/8"` or
 * `"2001:db8::/32"`. IPv4 entries also match IPv4-mapped IPv6 addresses and
 * vice versa. Entries that do not parse never match; an invalid address is
 * never trusted.
 */
export const isTrusted = (address: string, trusted: ReadonlyArray<string>): boolean => {
  const a = parseAddress(stripZone(address))
  if (a === undefined) return false
  for (const entry of trusted) {
    const block = parseBlock(entry)
    if (block !== undefined && inBlock(a, block)) return true
  }
  return false
}
