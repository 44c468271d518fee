/**
 * SCRAM-SHA-256 messages (RFC 5802 §7, RFC 7677): parsers and printers for
 * the four messages, `saslname` escaping, nonces, and the proof and
 * signature computations. Shared by the server machine (`Sasl`) and the
 * client machine (`Client`).
 *
 * Parsers take the message as a string (already base64- and UTF-8-decoded)
 * and return a value or an error reason; they never throw.
 *
 * Deliberately not here: channel binding (`-PLUS`; a `p=` flag is parsed and
 * reported as `"channel-binding"`), mandatory extensions (`m=` is reported as
 * `"extension"`), SASLprep of user names (names are compared as sent), and
 * any state: the machines hold it.
 *
 * @since 0.1.0
 */
import * as Bytes from "../wire/Bytes.ts"
import * as Base64 from "./Base64.ts"
import * as Credentials from "./Credentials.ts"

/** A parse result: the value, or why the message was refused. */
export type Parsed<A> =
  | { readonly ok: true; readonly value: A }
  | { readonly ok: false; readonly error: "malformed" | "channel-binding" | "extension" }

const ok = <A>(value: A): Parsed<A> => ({ ok: true, value })
const malformed: Parsed<never> = { ok: false, error: "malformed" }

// ---------------------------------------------------------------------------
// saslname and nonces
// ---------------------------------------------------------------------------

/** Escapes a name for `n=` / `a=`: `=` becomes `=3D`, `,` becomes `=2C`. */
export const escapeName = (name: string): string => name.replace(/=/g, "=3D").replace(/,/g, "=2C")

/** Unescapes a `saslname`; `undefined` when empty or when `=` is not followed by `2C` or `3D`. */
export const unescapeName = (s: string): string | undefined => {
  if (s.length === 0 || /=(?!2C|3D)/.test(s)) return undefined
  return s.replace(/=2C/g, ",").replace(/=3D/g, "=")
}

/** The nonce alphabet: printable ASCII without `,` (RFC 5802 `printable`), 93 characters. */
export const nonceAlphabet: string = (() => {
  let s = ""
  for (let c = 0x21; c <= 0x7e; c++) if (c !== 0x2c) s += String.fromCharCode(c)
  return s
})()

/** The number of random bytes the machines ask for a nonce (one nonce character per byte). */
export const nonceBytes = 24

/** Makes a nonce of one printable character per random byte (about 6.5 bits each). */
export const makeNonce = (random: Uint8Array): string => {
  let s = ""
  for (let i = 0; i < random.length; i++) s += nonceAlphabet[random[i]! % nonceAlphabet.length]
  return s
}

const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/
const EXTENSION = /^[A-Za-z]=[^,]+$/

/** True when `s` is a valid nonce: one or more printable ASCII characters other than `,`. */
export const isNonce = (s: string): boolean => PRINTABLE.test(s)

const attribute = (part: string | undefined, name: string): string | undefined =>
  part !== undefined && part.length >= 2 && part[0] === name && part[1] === "=" ? part.slice(2) : undefined

const extensionsOk = (parts: ReadonlyArray<string>): boolean => parts.every((p) => EXTENSION.test(p))

// ---------------------------------------------------------------------------
// client-first-message
// ---------------------------------------------------------------------------

/** A parsed client-first-message. */
export interface ClientFirst {
  /** The gs2 header as sent, e.g. `"n,,"`; the client echoes it in `c=`. */
  readonly gs2Header: string
  /** `n`: client does not support channel binding; `y`: it does but thinks the server does not. */
  readonly cbindFlag: "n" | "y"
  readonly authzid: string | undefined
  readonly username: string
  readonly nonce: string
  /** client-first-message-bare, part of the AuthMessage. */
  readonly bare: string
}

/** Prints a gs2 header without channel binding: `n,,` or `n,a=<authzid>,`. */
export const gs2Header = (authzid: string | undefined): string =>
  authzid === undefined || authzid === "" ? "n,," : `n,a=${escapeName(authzid)},`

/** Prints client-first-message-bare: `n=<user>,r=<nonce>`. */
export const clientFirstBare = (username: string, nonce: string): string => `n=${escapeName(username)},r=${nonce}`

/** Parses a client-first-message (gs2 header and bare part). */
export const parseClientFirst = (s: string): Parsed<ClientFirst> => {
  const parts = s.split(",")
  if (parts.length < 4) return malformed
  const flag = parts[0]!
  if (flag.startsWith("p=")) return { ok: false, error: "channel-binding" }
  if (flag !== "n" && flag !== "y") return malformed
  let authzid: string | undefined
  if (parts[1] !== "") {
    const a = attribute(parts[1], "a")
    authzid = a === undefined ? undefined : unescapeName(a)
    if (authzid === undefined) return malformed
  }
  if (parts[2]!.startsWith("m=")) return { ok: false, error: "extension" }
  const user = attribute(parts[2], "n")
  const username = user === undefined ? undefined : unescapeName(user)
  const nonce = attribute(parts[3], "r")
  if (username === undefined || nonce === undefined || !isNonce(nonce)) return malformed
  if (!extensionsOk(parts.slice(4))) return malformed
  return ok({
    gs2Header: `${flag},${parts[1]},`,
    cbindFlag: flag,
    authzid,
    username,
    nonce,
    bare: parts.slice(2).join(",")
  })
}

// ---------------------------------------------------------------------------
// server-first-message
// ---------------------------------------------------------------------------

/** A parsed server-first-message. */
export interface ServerFirst {
  /** The combined nonce: the client's nonce followed by the server's. */
  readonly nonce: string
  readonly salt: Uint8Array
  readonly iterations: number
}

/** Prints a server-first-message: `r=<nonce>,s=<b64 salt>,i=<iterations>`. */
export const serverFirst = (nonce: string, salt: Uint8Array, iterations: number): string =>
  `r=${nonce},s=${Base64.encode(salt)},i=${iterations}`

const ITERATIONS = /^[1-9][0-9]{0,9}$/

/** Parses a server-first-message. The salt must be non-empty; the count an integer below 2^31. */
export const parseServerFirst = (s: string): Parsed<ServerFirst> => {
  const parts = s.split(",")
  if (parts.length < 3) return malformed
  if (parts[0]!.startsWith("m=")) return { ok: false, error: "extension" }
  const nonce = attribute(parts[0], "r")
  const salt64 = attribute(parts[1], "s")
  const count = attribute(parts[2], "i")
  if (nonce === undefined || !isNonce(nonce) || salt64 === undefined || count === undefined) return malformed
  const salt = Base64.decode(salt64)
  if (salt === undefined || salt.length === 0 || !ITERATIONS.test(count)) return malformed
  const iterations = Number(count)
  if (iterations > 0x7fffffff || !extensionsOk(parts.slice(3))) return malformed
  return ok({ nonce, salt, iterations })
}

// ---------------------------------------------------------------------------
// client-final-message
// ---------------------------------------------------------------------------

/** A parsed client-final-message. */
export interface ClientFinal {
  /** The decoded `c=` value: the gs2 header (no channel-binding data here). */
  readonly channelBinding: Uint8Array
  readonly nonce: string
  readonly proof: Uint8Array
  /** client-final-message-without-proof, part of the AuthMessage. */
  readonly withoutProof: string
}

/** Prints client-final-message-without-proof: `c=<b64 gs2 header>,r=<nonce>`. */
export const clientFinalWithoutProof = (gs2: string, nonce: string): string =>
  `c=${Base64.encode(Bytes.fromString(gs2))},r=${nonce}`

/** Prints a client-final-message: `<without proof>,p=<b64 proof>`. */
export const clientFinal = (withoutProof: string, proof: Uint8Array): string =>
  `${withoutProof},p=${Base64.encode(proof)}`

/** Parses a client-final-message. */
export const parseClientFinal = (s: string): Parsed<ClientFinal> => {
  const parts = s.split(",")
  if (parts.length < 3) return malformed
  const cb = attribute(parts[0], "c")
  const nonce = attribute(parts[1], "r")
  const proof64 = attribute(parts[parts.length - 1], "p")
  if (cb === undefined || nonce === undefined || !isNonce(nonce) || proof64 === undefined) return malformed
  const channelBinding = Base64.decode(cb)
  const proof = Base64.decode(proof64)
  if (channelBinding === undefined || proof === undefined || !extensionsOk(parts.slice(2, -1))) return malformed
  return ok({ channelBinding, nonce, proof, withoutProof: parts.slice(0, -1).join(",") })
}

// ---------------------------------------------------------------------------
// server-final-message
// ---------------------------------------------------------------------------

/** A parsed server-final-message: the server signature or a server error. */
export type ServerFinal =
  | { readonly _tag: "Verifier"; readonly signature: Uint8Array }
  | { readonly _tag: "Error"; readonly error: string }

/** Prints a server-final-message: `v=<b64 ServerSignature>`. */
export const serverFinal = (signature: Uint8Array): string => `v=${Base64.encode(signature)}`

/** Parses a server-final-message. */
export const parseServerFinal = (s: string): Parsed<ServerFinal> => {
  const parts = s.split(",")
  if (!extensionsOk(parts.slice(1))) return malformed
  const e = attribute(parts[0], "e")
  if (e !== undefined) return e.length > 0 ? ok({ _tag: "Error", error: e }) : malformed
  const v = attribute(parts[0], "v")
  const signature = v === undefined ? undefined : Base64.decode(v)
  return signature === undefined || signature.length === 0 ? malformed : ok({ _tag: "Verifier", signature })
}

// ---------------------------------------------------------------------------
// Proofs and signatures (RFC 5802 §3)
// ---------------------------------------------------------------------------

/** AuthMessage = client-first-message-bare "," server-first-message "," client-final-message-without-proof. */
export const authMessage = (clientFirstBare: string, serverFirstMessage: string, withoutProof: string): Uint8Array =>
  Bytes.fromString(`${clientFirstBare},${serverFirstMessage},${withoutProof}`)

const xor = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = new Uint8Array(a.length)
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!
  return out
}

/** ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage). */
export const clientProof = (clientKey: Uint8Array, storedKey: Uint8Array, message: Uint8Array): Uint8Array =>
  xor(clientKey, Credentials.hmacSha256(storedKey, message))

/** ServerSignature = HMAC(ServerKey, AuthMessage). */
export const serverSignature = (serverKey: Uint8Array, message: Uint8Array): Uint8Array =>
  Credentials.hmacSha256(serverKey, message)

/**
 * The server's check: recovers ClientKey = proof XOR HMAC(StoredKey,
 * AuthMessage) and compares H(ClientKey) with StoredKey in constant time.
 */
export const verifyClientProof = (storedKey: Uint8Array, message: Uint8Array, proof: Uint8Array): boolean => {
  if (proof.length !== storedKey.length) return false
  const clientKey = xor(proof, Credentials.hmacSha256(storedKey, message))
  return Credentials.constantTimeEqual(Credentials.sha256Digest(clientKey), storedKey)
}
