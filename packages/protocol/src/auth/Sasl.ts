/**
 * SASL for SMTP AUTH (RFC 4954), server side: the shared contract (mechanism
 * names, what a machine asks of the credentials service, what it tells the
 * driver) and the server machine for PLAIN (RFC 4616), LOGIN
 * (draft-murchison-sasl-login), CRAM-MD5 (RFC 2195) and SCRAM-SHA-256
 * (RFC 5802, RFC 7677; no channel binding).
 *
 * The machine is immutable data and three functions, `start`, `respond`
 * and `answer`, each returning the next state and one `ServerStep`:
 *
 * - `Challenge`: send `334 <base64(data)>` (`334 ` alone when empty), read
 *   one line, call `respond(state, line)`;
 * - `Ask`: query the credentials service, call `answer(state, answer)`;
 * - `Success`: the client is authenticated as `identity`. When `final` is
 *   set (SCRAM's server-final-message), RFC 4954 §4 has no room for data in
 *   the 235 reply: send `334 <base64(final)>`, read the client's (empty)
 *   line and call `respond` once more, which gives a second `Success` with
 *   `final: undefined` (send 235) or a `Failure`;
 * - `Failure`: send `reply`; the exchange is over.
 *
 * The machine never performs I/O, never reads a clock or a global random
 * source (randomness is the `random` option), checks identities for control
 * characters before any credentials request, and compares secrets in
 * constant time. Remote input (initial responses, lines) never makes it
 * throw; calling a function in a state that does not expect it (a driver
 * bug) throws a `UsageError`.
 *
 * Deliberately not here: which mechanisms to offer (plaintext ones only
 * after TLS, `isPlaintext` helps), the AUTH command parser, line length
 * limits (12288 octets, RFC 4954 §4, are the line decoder's job), the
 * authorization policy (an authzid different from the authcid is passed
 * through), and the 235 / 503 replies around the exchange.
 *
 * @since 0.1.0
 */
import { hmac } from "@noble/hashes/hmac.js"
import { md5 } from "@noble/hashes/legacy.js"
import * as Reply from "../smtp/Reply.ts"
import * as Bytes from "../wire/Bytes.ts"
import * as Base64 from "./Base64.ts"
import * as Credentials from "./Credentials.ts"
import type { ScramCredentials } from "./Credentials.ts"
import * as Scram from "./Scram.ts"

export type { ScramCredentials } from "./Credentials.ts"

// ---------------------------------------------------------------------------
// The contract
// ---------------------------------------------------------------------------

/** The SASL mechanisms Mailroom implements. */
export type Mechanism = "PLAIN" | "LOGIN" | "CRAM-MD5" | "SCRAM-SHA-256"

/** All mechanisms, strongest first. */
export const mechanisms: ReadonlyArray<Mechanism> = ["SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"]

/** The mechanism named `name` (case-insensitive, RFC 4422 §3.1), or `undefined`. */
export const parseMechanism = (name: string): Mechanism | undefined => {
  const upper = name.toUpperCase()
  return mechanisms.find((m) => m === upper)
}

/** True for PLAIN and LOGIN, which send the password in clear: offer them only under TLS. */
export const isPlaintext = (m: Mechanism): boolean => m === "PLAIN" || m === "LOGIN"

/** True for CRAM-MD5, where the server speaks first: an initial response is a 501. */
export const isServerFirst = (m: Mechanism): boolean => m === "CRAM-MD5"

/** What the machine asks of the driver's credentials service. */
export type CredentialRequest =
  /** PLAIN, LOGIN: check this password (the service applies `Credentials.verifyPassword` or its own check). */
  | { readonly _tag: "VerifyPassword"; readonly authcid: string; readonly authzid: string | undefined; readonly password: string }
  /** CRAM-MD5: the clear password, or `undefined` for an unknown user. */
  | { readonly _tag: "LookupSecret"; readonly authcid: string }
  /** SCRAM-SHA-256: the stored salt, iterations, StoredKey and ServerKey. */
  | { readonly _tag: "LookupScram"; readonly authcid: string }

/** The credentials service's answer. */
export type CredentialAnswer =
  /** For `VerifyPassword`. */
  | { readonly _tag: "Verified"; readonly ok: boolean }
  /** For `LookupSecret`. */
  | { readonly _tag: "Secret"; readonly password: string | undefined }
  /** For `LookupScram`. */
  | { readonly _tag: "Scram"; readonly credentials: ScramCredentials | undefined }
  /** The service is down: `454 4.7.0`. */
  | { readonly _tag: "Unavailable" }

/** Who authenticated: the authentication identity and, when the client asked for one, the authorization identity. */
export interface Identity {
  readonly authcid: string
  readonly authzid: string | undefined
}

/** What the machine tells its driver after each call. */
export type ServerStep =
  /** Send `"334 " + base64(data)`, or `"334 "` when `data` is empty, then read one line. */
  | { readonly _tag: "Challenge"; readonly data: Uint8Array }
  /** Query the credentials service, then call `answer`. */
  | { readonly _tag: "Ask"; readonly request: CredentialRequest }
  /** Authenticated. `final` is SCRAM's server-final-message (see the module header). */
  | { readonly _tag: "Success"; readonly identity: Identity; readonly final: Uint8Array | undefined }
  /** Send this reply; the exchange is over. */
  | { readonly _tag: "Failure"; readonly reply: Reply.Reply }

/** Options of `start`. */
export interface ServerOptions {
  /** `n` random bytes (server nonce, CRAM-MD5 challenge). */
  readonly random: (n: number) => Uint8Array
  /** The server's name, in the CRAM-MD5 challenge. */
  readonly hostname: string
}

/** Thrown when the driver calls `respond` or `answer` in a state that does not expect it. */
export class UsageError extends Error {
  override readonly name = "Sasl.UsageError"
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/** `501 5.5.2` for a response that decodes but does not follow the mechanism's grammar (or is not UTF-8). */
export const malformedReply = Reply.make(501, "5.5.2", "Error: malformed authentication response")
/** `501 5.5.2` for control characters in an identity or password (SASL identity injection). */
export const invalidCharactersReply = Reply.make(501, "5.5.2", "Error: invalid characters in authentication data")
/** `501 5.5.2` for an initial response with a server-first mechanism (CRAM-MD5). */
export const initialResponseNotAllowedReply = Reply.make(501, "5.5.2", "Error: initial response not allowed with this mechanism")
/** `535 5.7.8` for a SCRAM client that requires channel binding (`p=`), which Mailroom does not offer. */
export const channelBindingReply = Reply.make(535, "5.7.8", "Error: channel binding not supported")
/** `501 5.5.2` for a SCRAM mandatory extension (`m=`). */
export const extensionReply = Reply.make(501, "5.5.2", "Error: unsupported SCRAM extension")

// ---------------------------------------------------------------------------
// States
// ---------------------------------------------------------------------------

/** The machine's state, named after what it expects next. Immutable. */
export type ServerState =
  | { readonly _tag: "ExpectPlainResponse" }
  | { readonly _tag: "ExpectLoginUsername" }
  | { readonly _tag: "ExpectLoginPassword"; readonly authcid: string }
  | { readonly _tag: "ExpectVerified"; readonly identity: Identity }
  | { readonly _tag: "ExpectCramResponse"; readonly challenge: Uint8Array }
  | {
      readonly _tag: "ExpectSecret"
      readonly challenge: Uint8Array
      readonly authcid: string
      readonly digest: Uint8Array
    }
  | { readonly _tag: "ExpectScramClientFirst"; readonly nonce: string; readonly hostname: string }
  | {
      readonly _tag: "ExpectScramCredentials"
      readonly first: Scram.ClientFirst
      readonly nonce: string
      readonly hostname: string
    }
  | {
      readonly _tag: "ExpectScramClientFinal"
      readonly first: Scram.ClientFirst
      readonly serverFirst: string
      readonly nonce: string
      readonly credentials: ScramCredentials
      readonly known: boolean
    }
  | { readonly _tag: "ExpectFinalAck"; readonly identity: Identity }
  | { readonly _tag: "Done" }

/** A state and the step to carry out. */
export interface Transition {
  readonly state: ServerState
  readonly step: ServerStep
}

const DONE: ServerState = { _tag: "Done" }
const fail = (reply: Reply.Reply): Transition => ({ state: DONE, step: { _tag: "Failure", reply } })
const challenge = (state: ServerState, data: Uint8Array): Transition => ({ state, step: { _tag: "Challenge", data } })
const ask = (state: ServerState, request: CredentialRequest): Transition => ({ state, step: { _tag: "Ask", request } })
const succeed = (identity: Identity): Transition => ({
  state: DONE,
  step: { _tag: "Success", identity, final: undefined }
})

/** True when the machine waits for a client line (`respond`). */
export const expectsLine = (state: ServerState): boolean =>
  state._tag === "ExpectPlainResponse" || state._tag === "ExpectLoginUsername" ||
  state._tag === "ExpectLoginPassword" || state._tag === "ExpectCramResponse" ||
  state._tag === "ExpectScramClientFirst" || state._tag === "ExpectScramClientFinal" ||
  state._tag === "ExpectFinalAck"

/** True when the machine waits for the credentials service (`answer`). */
export const expectsAnswer = (state: ServerState): boolean =>
  state._tag === "ExpectVerified" || state._tag === "ExpectSecret" || state._tag === "ExpectScramCredentials"

// ---------------------------------------------------------------------------
// Field checks
// ---------------------------------------------------------------------------

const CONTROL = /[\u0000-\u001f\u007f]/

/** True when `s` holds a C0 control character or DEL (never allowed in an identity or password). */
export const hasControl = (s: string): boolean => CONTROL.test(s)

const LOGIN_USERNAME = Bytes.fromString("Username:")
const LOGIN_PASSWORD = Bytes.fromString("Password:")

/** Decodes an AUTH payload as strict base64, or a Failure. */
const decodeLine = (line: string): Uint8Array | Transition => Base64.decode(line) ?? fail(Reply.badBase64)

/** Decodes UTF-8 text from a payload, or a Failure. */
const decodeText = (bytes: Uint8Array): string | Transition => Bytes.decodeUtf8(bytes) ?? fail(malformedReply)

// ---------------------------------------------------------------------------
// start
// ---------------------------------------------------------------------------

/**
 * Starts an exchange. `initial` is the initial-response argument of the AUTH
 * command as received (`"="` for an empty response, `undefined` when absent).
 *
 * @example
 * const t = Sasl.start("PLAIN", "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", { random, hostname: "mx.example" })
 * // t.step: { _tag: "Ask", request: { _tag: "VerifyPassword", authcid: "tim", ... } }
 */
export const start = (mechanism: Mechanism, initial: string | undefined, options: ServerOptions): Transition => {
  switch (mechanism) {
    case "PLAIN": {
      const state: ServerState = { _tag: "ExpectPlainResponse" }
      return initial === undefined ? challenge(state, Bytes.empty) : payload(state, initialPayload(initial))
    }
    case "LOGIN": {
      // Common practice (Postfix, Exim, MS-XLOGIN): an initial response is the user name.
      const state: ServerState = { _tag: "ExpectLoginUsername" }
      return initial === undefined ? challenge(state, LOGIN_USERNAME) : payload(state, initialPayload(initial))
    }
    case "CRAM-MD5": {
      if (initial !== undefined) return fail(initialResponseNotAllowedReply)
      const data = cramChallenge(options.random(8), options.hostname)
      return challenge({ _tag: "ExpectCramResponse", challenge: data }, data)
    }
    case "SCRAM-SHA-256": {
      const state: ServerState = {
        _tag: "ExpectScramClientFirst",
        nonce: Scram.makeNonce(options.random(Scram.nonceBytes)),
        hostname: options.hostname
      }
      return initial === undefined ? challenge(state, Bytes.empty) : payload(state, initialPayload(initial))
    }
  }
}

/** The AUTH line's `=` is an empty initial response; anything else is base64 like a continuation line. */
const initialPayload = (initial: string): string => (initial === "=" ? "" : initial)

/** `<random1.random2@hostname>`, in the msg-id form of RFC 2195 §2. */
const cramChallenge = (random: Uint8Array, hostname: string): Uint8Array => {
  let a = 0
  let b = 0
  for (let i = 0; i < 4; i++) a = a * 256 + (random[i] ?? 0)
  for (let i = 4; i < 8; i++) b = b * 256 + (random[i] ?? 0)
  return Bytes.fromString(`<${a}.${b}@${hostname}>`)
}

// ---------------------------------------------------------------------------
// respond
// ---------------------------------------------------------------------------

/**
 * Feeds the client's continuation line (without CRLF). `*` cancels
 * (`501 5.7.0`); undecodable base64 is `501 5.5.2`. Throws `UsageError` when
 * the state does not expect a line.
 */
export const respond = (state: ServerState, line: string): Transition => {
  if (!expectsLine(state)) throw new UsageError(`Sasl.respond called in state ${state._tag}`)
  return line === "*" ? fail(Reply.authCancelled) : payload(state, line)
}

/** A base64 payload: a continuation line, or the initial response (where `*` is only bad base64). */
const payload = (state: ServerState, line: string): Transition => {
  const bytes = decodeLine(line)
  if (!(bytes instanceof Uint8Array)) return bytes
  switch (state._tag) {
    case "ExpectPlainResponse":
      return plainResponse(bytes)
    case "ExpectLoginUsername": {
      const authcid = field(bytes)
      return typeof authcid === "string"
        ? challenge({ _tag: "ExpectLoginPassword", authcid }, LOGIN_PASSWORD)
        : authcid
    }
    case "ExpectLoginPassword": {
      const password = field(bytes)
      if (typeof password !== "string") return password
      const identity: Identity = { authcid: state.authcid, authzid: undefined }
      return ask(
        { _tag: "ExpectVerified", identity },
        { _tag: "VerifyPassword", authcid: state.authcid, authzid: undefined, password }
      )
    }
    case "ExpectCramResponse":
      return cramResponse(state.challenge, bytes)
    case "ExpectScramClientFirst":
      return scramClientFirst(state.nonce, state.hostname, bytes)
    case "ExpectScramClientFinal":
      return scramClientFinal(state, bytes)
    case "ExpectFinalAck":
      return bytes.length === 0 ? succeed(state.identity) : fail(malformedReply)
    default:
      throw new UsageError(`Sasl.respond called in state ${state._tag}`)
  }
}

/** One LOGIN field: non-empty UTF-8 without control characters. */
const field = (bytes: Uint8Array): string | Transition => {
  const s = decodeText(bytes)
  if (typeof s !== "string") return s
  if (s.length === 0) return fail(malformedReply)
  return hasControl(s) ? fail(invalidCharactersReply) : s
}

/** PLAIN: `[authzid] NUL authcid NUL passwd` (RFC 4616 §2). */
const plainResponse = (bytes: Uint8Array): Transition => {
  const first = bytes.indexOf(Bytes.NUL)
  const second = first < 0 ? -1 : bytes.indexOf(Bytes.NUL, first + 1)
  if (second < 0) return fail(malformedReply)
  const authzid = Bytes.decodeUtf8(bytes.subarray(0, first))
  const authcid = Bytes.decodeUtf8(bytes.subarray(first + 1, second))
  const password = Bytes.decodeUtf8(bytes.subarray(second + 1))
  if (authzid === undefined || authcid === undefined || password === undefined) return fail(malformedReply)
  // A third NUL lands in the password and is refused as a control character below.
  if (hasControl(authzid) || hasControl(authcid) || hasControl(password)) return fail(invalidCharactersReply)
  if (authcid.length === 0 || password.length === 0) return fail(malformedReply)
  const identity: Identity = { authcid, authzid: authzid === "" ? undefined : authzid }
  return ask({ _tag: "ExpectVerified", identity }, { _tag: "VerifyPassword", ...identity, password })
}

const HEX_DIGEST = /^[0-9a-fA-F]{32}$/

/** CRAM-MD5: `user SP hex(HMAC-MD5(secret, challenge))` (RFC 2195 §2). The user name may hold spaces. */
const cramResponse = (data: Uint8Array, bytes: Uint8Array): Transition => {
  const s = decodeText(bytes)
  if (typeof s !== "string") return s
  const sp = s.lastIndexOf(" ")
  const authcid = s.slice(0, Math.max(sp, 0))
  const hex = s.slice(sp + 1)
  if (sp <= 0 || !HEX_DIGEST.test(hex)) return hasControl(s) ? fail(invalidCharactersReply) : fail(malformedReply)
  if (hasControl(authcid)) return fail(invalidCharactersReply)
  const digest = new Uint8Array(16)
  for (let i = 0; i < 16; i++) digest[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16)
  return ask({ _tag: "ExpectSecret", challenge: data, authcid, digest }, { _tag: "LookupSecret", authcid })
}

/** HMAC-MD5(secret, challenge): the CRAM-MD5 digest (RFC 2195, RFC 2104). */
export const cramDigest = (password: string, data: Uint8Array): Uint8Array =>
  hmac(md5, Bytes.fromString(password), data)

const scramClientFirst = (nonce: string, hostname: string, bytes: Uint8Array): Transition => {
  const s = decodeText(bytes)
  if (typeof s !== "string") return s
  const parsed = Scram.parseClientFirst(s)
  if (!parsed.ok) {
    return fail(
      parsed.error === "channel-binding" ? channelBindingReply : parsed.error === "extension" ? extensionReply : malformedReply
    )
  }
  const first = parsed.value
  if (hasControl(first.username) || (first.authzid !== undefined && hasControl(first.authzid))) {
    return fail(invalidCharactersReply)
  }
  return ask(
    { _tag: "ExpectScramCredentials", first, nonce, hostname },
    { _tag: "LookupScram", authcid: first.username }
  )
}

const scramClientFinal = (
  state: Extract<ServerState, { _tag: "ExpectScramClientFinal" }>,
  bytes: Uint8Array
): Transition => {
  const s = decodeText(bytes)
  if (typeof s !== "string") return s
  const parsed = Scram.parseClientFinal(s)
  if (!parsed.ok) return fail(parsed.error === "extension" ? extensionReply : malformedReply)
  const final = parsed.value
  const gs2 = Bytes.fromString(state.first.gs2Header)
  if (!Bytes.equals(final.channelBinding, gs2) || final.nonce !== state.nonce) return fail(Reply.invalidCredentials)
  const message = Scram.authMessage(state.first.bare, state.serverFirst, final.withoutProof)
  const valid = Scram.verifyClientProof(state.credentials.storedKey, message, final.proof)
  if (!valid || !state.known) return fail(Reply.invalidCredentials)
  const identity: Identity = { authcid: state.first.username, authzid: state.first.authzid }
  const signature = Scram.serverSignature(state.credentials.serverKey, message)
  return {
    state: { _tag: "ExpectFinalAck", identity },
    step: { _tag: "Success", identity, final: Bytes.fromString(Scram.serverFinal(signature)) }
  }
}

// ---------------------------------------------------------------------------
// answer
// ---------------------------------------------------------------------------

/**
 * Feeds the credentials service's answer to the pending `Ask`. `Unavailable`
 * gives `454 4.7.0`; an unknown user or a wrong password gives `535 5.7.8`
 * (SCRAM carries on with made-up credentials so that an unknown user is
 * indistinguishable until the end). Throws `UsageError` when no answer is
 * expected or the answer does not fit the request.
 */
export const answer = (state: ServerState, ans: CredentialAnswer): Transition => {
  if (ans._tag === "Unavailable" && expectsAnswer(state)) return fail(Reply.authTemporaryFailure)
  switch (state._tag) {
    case "ExpectVerified":
      if (ans._tag !== "Verified") break
      return ans.ok ? succeed(state.identity) : fail(Reply.invalidCredentials)
    case "ExpectSecret": {
      if (ans._tag !== "Secret") break
      // Compute the digest for an unknown user too, so both cost the same.
      const expected = cramDigest(ans.password ?? "", state.challenge)
      const match = Credentials.constantTimeEqual(expected, state.digest)
      return match && ans.password !== undefined
        ? succeed({ authcid: state.authcid, authzid: undefined })
        : fail(Reply.invalidCredentials)
    }
    case "ExpectScramCredentials": {
      if (ans._tag !== "Scram") break
      const known = ans.credentials !== undefined
      const credentials = ans.credentials ?? mockCredentials(state.hostname, state.first.username)
      if (!validCredentials(credentials)) return fail(Reply.authTemporaryFailure)
      const nonce = state.first.nonce + state.nonce
      const serverFirst = Scram.serverFirst(nonce, credentials.salt, credentials.iterations)
      return challenge(
        { _tag: "ExpectScramClientFinal", first: state.first, serverFirst, nonce, credentials, known },
        Bytes.fromString(serverFirst)
      )
    }
    default:
      break
  }
  throw new UsageError(`Sasl.answer: ${ans._tag} does not answer state ${state._tag}`)
}

/** A store that returns broken SCRAM credentials is a temporary failure, not a crash. */
const validCredentials = (c: ScramCredentials): boolean =>
  c.salt.length > 0 && Number.isInteger(c.iterations) && c.iterations >= 1 && c.iterations <= 0x7fffffff &&
  c.storedKey.length === 32 && c.serverKey.length === 32

const MOCK_LABEL = "mailroom SCRAM-SHA-256 mock salt"

/**
 * Made-up credentials for an unknown SCRAM user (RFC 5802 §5.1 allows the
 * server to go on as if the user existed). The salt is derived from the host
 * name and user name, so that it stays the same from one attempt to the next;
 * the iteration count is `Credentials.minIterations`.
 */
const mockCredentials = (hostname: string, username: string): ScramCredentials => ({
  salt: Credentials.hmacSha256(Bytes.fromString(MOCK_LABEL), Bytes.fromString(`${hostname}\u0000${username}`)).subarray(0, 16),
  iterations: Credentials.minIterations,
  storedKey: new Uint8Array(32),
  serverKey: new Uint8Array(32)
})
