/**
 * Password and SCRAM credential helpers: pure functions that a credentials
 * store (file, database) and the SASL machines share.
 *
 * - `saslPrep`: the password normalisation used before any hashing.
 * - `saltedPassword`, `scramKeys`, `scramCredentials`: RFC 5802 §3 key
 *   derivation for SCRAM-SHA-256 (RFC 7677).
 * - `constantTimeEqual`: comparison of secrets.
 * - Stored password strings, one per line of a credentials file:
 *
 *   | format | meaning | usable for |
 *   | --- | --- | --- |
 *   | `pbkdf2-sha256$<iterations>$<b64 salt>$<b64 hash>` | `hash` = PBKDF2-HMAC-SHA256(saslPrep(password), salt, iterations), 32 bytes; this is SCRAM's SaltedPassword | PLAIN, LOGIN, SCRAM-SHA-256 |
 *   | `{SCRAM-SHA-256}<iterations>,<b64 salt>,<b64 StoredKey>,<b64 ServerKey>` | Dovecot's SCRAM format | PLAIN, LOGIN, SCRAM-SHA-256 |
 *   | `{PLAIN}<password>` | the clear password (Dovecot's scheme name) | all, including CRAM-MD5 |
 *
 *   Base64 is strict RFC 4648 with padding; iterations are decimal without
 *   leading zeros, 1 to `maxIterations`; salts are at least one byte (16
 *   recommended); hashes and keys are exactly 32 bytes. Anything else does
 *   not parse.
 *
 * Deliberately not here: reading files, choosing salts (the caller passes
 * random bytes), bidi checks and unassigned code point rejection of full
 * SASLprep (RFC 4013), and other hash schemes (crypt, bcrypt, argon2).
 *
 * @since 0.1.0
 */
import { hmac } from "@noble/hashes/hmac.js"
import { pbkdf2 } from "@noble/hashes/pbkdf2.js"
import { sha256 } from "@noble/hashes/sha2.js"
import * as Bytes from "../wire/Bytes.ts"
import * as Base64 from "./Base64.ts"

/** Salt, iteration count, StoredKey and ServerKey of one SCRAM-SHA-256 user (RFC 5802 §3). */
export interface ScramCredentials {
  readonly salt: Uint8Array
  readonly iterations: number
  readonly storedKey: Uint8Array
  readonly serverKey: Uint8Array
}

/** RFC 7677 §4: the iteration count SHOULD be at least 4096. */
export const minIterations = 4096
/** The largest iteration count this module accepts in a stored string or derives with. */
export const maxIterations = 10_000_000

/** True when `n` is an acceptable iteration count (an integer in 1..`maxIterations`). */
export const isValidIterations = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= maxIterations

// ---------------------------------------------------------------------------
// SASLprep (RFC 4013), the mapping and normalisation steps
// ---------------------------------------------------------------------------

// RFC 3454 B.1: commonly mapped to nothing.
const MAPPED_TO_NOTHING = /[\u00ad\u034f\u1806\u180b-\u180d\u200b-\u200d\u2060\ufe00-\ufe0f\ufeff]/g
// RFC 3454 C.1.2: non-ASCII space characters, mapped to SPACE.
const NON_ASCII_SPACE = /[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]/g
// Prohibited output, the subset checked here: controls (C.2.1, C.2.2), private use (C.3),
// lone surrogates (C.5), non-characters U+FFFE/U+FFFF (C.4, BMP part).
const PROHIBITED = /[\u0000-\u001f\u007f-\u009f\ue000-\uf8ff\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/**
 * SASLprep without the bidi and unassigned-code-point checks: maps RFC 3454
 * B.1 characters to nothing and non-ASCII spaces to U+0020, applies NFKC,
 * and returns `undefined` when the result holds a control character, a
 * private-use character or a lone surrogate.
 */
export const saslPrep = (s: string): string | undefined => {
  const mapped = s.replace(MAPPED_TO_NOTHING, "").replace(NON_ASCII_SPACE, " ")
  if (PROHIBITED.test(mapped)) return undefined
  const out = mapped.normalize("NFKC")
  return PROHIBITED.test(out) ? undefined : out
}

/**
 * The password as it enters every hash: `saslPrep(password)`, or the password
 * unchanged when SASLprep refuses it (both sides of an exchange then agree).
 */
export const normalizePassword = (password: string): string => saslPrep(password) ?? password

// ---------------------------------------------------------------------------
// SCRAM-SHA-256 key derivation
// ---------------------------------------------------------------------------

const CLIENT_KEY = Bytes.fromString("Client Key")
const SERVER_KEY = Bytes.fromString("Server Key")

/** HMAC-SHA-256. */
export const hmacSha256 = (key: Uint8Array, message: Uint8Array): Uint8Array => hmac(sha256, key, message)

/** SHA-256. */
export const sha256Digest = (message: Uint8Array): Uint8Array => sha256(message)

/**
 * SCRAM's SaltedPassword = Hi(Normalize(password), salt, i), i.e.
 * PBKDF2-HMAC-SHA-256 with a 32-byte output. Throws a `RangeError` when
 * `iterations` is not valid (a programming error: validate input first).
 */
export const saltedPassword = (password: string, salt: Uint8Array, iterations: number): Uint8Array => {
  if (!isValidIterations(iterations)) throw new RangeError(`invalid iteration count ${iterations}`)
  return pbkdf2(sha256, Bytes.fromString(normalizePassword(password)), salt, { c: iterations, dkLen: 32 })
}

/** ClientKey, StoredKey and ServerKey from a SaltedPassword (RFC 5802 §3). */
export const scramKeys = (salted: Uint8Array): {
  readonly clientKey: Uint8Array
  readonly storedKey: Uint8Array
  readonly serverKey: Uint8Array
} => {
  const clientKey = hmacSha256(salted, CLIENT_KEY)
  return { clientKey, storedKey: sha256(clientKey), serverKey: hmacSha256(salted, SERVER_KEY) }
}

/**
 * The credentials a server stores for SCRAM-SHA-256. `salt` should be 16
 * random bytes; `iterations` at least `minIterations`.
 *
 * @example
 * const stored = scramCredentials("pencil", random(16), 4096)
 */
export const scramCredentials = (password: string, salt: Uint8Array, iterations: number): ScramCredentials => {
  const { storedKey, serverKey } = scramKeys(saltedPassword(password, salt, iterations))
  return { salt, iterations, storedKey, serverKey }
}

/**
 * Compares two byte arrays in time that depends only on their lengths (the
 * lengths of the secrets compared here are public: digest sizes).
 */
export const constantTimeEqual = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!
  return diff === 0
}

/** Compares two strings' UTF-8 bytes in constant time (see `constantTimeEqual`). */
export const constantTimeEqualString = (a: string, b: string): boolean =>
  constantTimeEqual(Bytes.fromString(a), Bytes.fromString(b))

// ---------------------------------------------------------------------------
// Stored password strings
// ---------------------------------------------------------------------------

/** A parsed stored password (see the module header for the string formats). */
export type StoredPassword =
  | { readonly _tag: "Pbkdf2Sha256"; readonly iterations: number; readonly salt: Uint8Array; readonly hash: Uint8Array }
  | { readonly _tag: "ScramSha256"; readonly credentials: ScramCredentials }
  | { readonly _tag: "Plain"; readonly password: string }

const ITERATIONS = /^[1-9][0-9]{0,7}$/

const parseIterations = (s: string): number | undefined => {
  if (!ITERATIONS.test(s)) return undefined
  const n = Number(s)
  return isValidIterations(n) ? n : undefined
}

const parseBytes = (s: string, length?: number): Uint8Array | undefined => {
  const b = Base64.decode(s)
  if (b === undefined || b.length === 0) return undefined
  return length === undefined || b.length === length ? b : undefined
}

/**
 * Parses a stored password string, or returns `undefined` when it is not one
 * of the formats in the module header. Never throws.
 */
export const parseStored = (s: string): StoredPassword | undefined => {
  if (s.startsWith("pbkdf2-sha256$")) {
    const parts = s.split("$")
    if (parts.length !== 4) return undefined
    const iterations = parseIterations(parts[1]!)
    const salt = parseBytes(parts[2]!)
    const hash = parseBytes(parts[3]!, 32)
    if (iterations === undefined || salt === undefined || hash === undefined) return undefined
    return { _tag: "Pbkdf2Sha256", iterations, salt, hash }
  }
  if (s.startsWith("{SCRAM-SHA-256}")) {
    const parts = s.slice("{SCRAM-SHA-256}".length).split(",")
    if (parts.length !== 4) return undefined
    const iterations = parseIterations(parts[0]!)
    const salt = parseBytes(parts[1]!)
    const storedKey = parseBytes(parts[2]!, 32)
    const serverKey = parseBytes(parts[3]!, 32)
    if (iterations === undefined || salt === undefined || storedKey === undefined || serverKey === undefined) {
      return undefined
    }
    return { _tag: "ScramSha256", credentials: { salt, iterations, storedKey, serverKey } }
  }
  if (s.startsWith("{PLAIN}")) {
    const password = s.slice("{PLAIN}".length)
    return password.length > 0 && !/[\u0000-\u001f\u007f]/.test(password) ? { _tag: "Plain", password } : undefined
  }
  return undefined
}

/** Formats a stored password as its string (the inverse of `parseStored`). */
export const formatStored = (p: StoredPassword): string => {
  switch (p._tag) {
    case "Pbkdf2Sha256":
      return `pbkdf2-sha256$${p.iterations}$${Base64.encode(p.salt)}$${Base64.encode(p.hash)}`
    case "ScramSha256": {
      const c = p.credentials
      return `{SCRAM-SHA-256}${c.iterations},${Base64.encode(c.salt)},${Base64.encode(c.storedKey)},${Base64.encode(c.serverKey)}`
    }
    case "Plain":
      return `{PLAIN}${p.password}`
  }
}

/**
 * Hashes a password into the `pbkdf2-sha256$...` format. `salt` should be 16
 * random bytes, `iterations` at least `minIterations`.
 */
export const hashPassword = (password: string, salt: Uint8Array, iterations: number): string =>
  formatStored({ _tag: "Pbkdf2Sha256", iterations, salt, hash: saltedPassword(password, salt, iterations) })

/**
 * True when `password` matches the stored password (a parsed value or a
 * string; an unparsable string never matches). Compares in constant time;
 * costs one PBKDF2 run for the hashed formats.
 */
export const verifyPassword = (stored: StoredPassword | string, password: string): boolean => {
  const p = typeof stored === "string" ? parseStored(stored) : stored
  if (p === undefined) return false
  switch (p._tag) {
    case "Plain":
      return constantTimeEqualString(normalizePassword(p.password), normalizePassword(password))
    case "Pbkdf2Sha256":
      return constantTimeEqual(saltedPassword(password, p.salt, p.iterations), p.hash)
    case "ScramSha256": {
      const c = p.credentials
      const keys = scramKeys(saltedPassword(password, c.salt, c.iterations))
      return constantTimeEqual(keys.storedKey, c.storedKey) && constantTimeEqual(keys.serverKey, c.serverKey)
    }
  }
}

/**
 * The SCRAM-SHA-256 credentials a stored password yields: direct for
 * `{SCRAM-SHA-256}`, derived from the hash for `pbkdf2-sha256` (it is the
 * SaltedPassword), and `undefined` for `{PLAIN}` (the store must choose a salt
 * and call `scramCredentials` itself).
 */
export const scramFromStored = (p: StoredPassword): ScramCredentials | undefined => {
  switch (p._tag) {
    case "ScramSha256":
      return p.credentials
    case "Pbkdf2Sha256": {
      const { storedKey, serverKey } = scramKeys(p.hash)
      return { salt: p.salt, iterations: p.iterations, storedKey, serverKey }
    }
    case "Plain":
      return undefined
  }
}

/** The clear password (`{PLAIN}` only), which CRAM-MD5 needs; `undefined` for hashed formats. */
export const clearPassword = (p: StoredPassword): string | undefined => (p._tag === "Plain" ? p.password : undefined)
