/**
 * SASL for SMTP AUTH (RFC 4954), client side: the machine a relay runs to
 * authenticate to a smarthost with PLAIN, LOGIN, CRAM-MD5 or SCRAM-SHA-256.
 *
 * `start` gives the AUTH command line (with an initial response where the
 * mechanism allows one and it fits in 512 octets, RFC 4954 §4); `receive`
 * takes each reply of the server and gives the next line to send, success or
 * failure. Lines are given without CRLF; `*` is the cancel line. When the
 * server sends something the mechanism cannot accept (bad base64, a wrong
 * nonce, a bad SCRAM server signature), the machine cancels with `*` and
 * fails on the server's answer.
 *
 * Failures carry `transient`: 4xx replies, a bad or missing SCRAM server
 * signature (a possible impostor) and unexpected replies are transient; 5xx
 * replies and local errors (a credential the mechanism cannot carry) are
 * permanent.
 *
 * Deliberately not here: reading EHLO (see `choose`), TLS decisions, I/O,
 * and SASLprep of user names.
 *
 * @since 0.1.0
 */
import * as Reply from "../smtp/Reply.ts"
import * as Bytes from "../wire/Bytes.ts"
import * as Base64 from "./Base64.ts"
import * as Credentials from "./Credentials.ts"
import * as Sasl from "./Sasl.ts"
import * as Scram from "./Scram.ts"

/** What the client authenticates with. */
export interface ClientCredentials {
  readonly authcid: string
  /** Authorization identity; PLAIN and SCRAM carry it, LOGIN and CRAM-MD5 only accept it equal to `authcid`. */
  readonly authzid?: string | undefined
  readonly password: string
  /** `n` random bytes (the SCRAM client nonce). */
  readonly random: (n: number) => Uint8Array
}

/** Options of `start`. */
export interface ClientOptions {
  /** Send an initial response with PLAIN and SCRAM-SHA-256 (default `true`; LOGIN never sends one). */
  readonly initialResponse?: boolean
  /** The longest AUTH command line with an initial response, CRLF included (default 512, RFC 5321 §4.5.3.1.4). */
  readonly maxLineLength?: number
  /** Refuse a SCRAM iteration count below this (default `Credentials.minIterations`, 4096). */
  readonly minIterations?: number
  /** Refuse a SCRAM iteration count above this (default 1,000,000), so a server cannot make us burn CPU. */
  readonly maxIterations?: number
}

/** What the machine tells its driver. */
export type ClientStep =
  /** Send this line (CRLF is the driver's), then pass the server's reply to `receive`. */
  | { readonly _tag: "Send"; readonly line: string }
  /** Authenticated (the server said 235, and for SCRAM proved it knows the password). */
  | { readonly _tag: "Success" }
  /** Not authenticated. `reply` is the server's reply, when there was one. */
  | { readonly _tag: "Failure"; readonly reason: string; readonly transient: boolean; readonly reply: Reply.Reply | undefined }

/** The client machine's state, named after what it expects next. Immutable. */
export type ClientState =
  | { readonly _tag: "ExpectPlainChallenge"; readonly response: string }
  | {
      readonly _tag: "ExpectLoginPrompt"
      readonly authcid: string
      readonly password: string
      readonly sentUsername: boolean
      readonly sentPassword: boolean
    }
  | { readonly _tag: "ExpectCramChallenge"; readonly authcid: string; readonly password: string }
  | { readonly _tag: "ExpectScramStart"; readonly scram: ScramStart }
  | { readonly _tag: "ExpectScramServerFirst"; readonly scram: ScramStart }
  | { readonly _tag: "ExpectScramServerFinal"; readonly signature: Uint8Array }
  | { readonly _tag: "ExpectOutcome" }
  | { readonly _tag: "ExpectCancelReply"; readonly reason: string; readonly transient: boolean }
  | { readonly _tag: "Done" }

/** SCRAM data kept between messages. */
export interface ScramStart {
  readonly gs2Header: string
  readonly bare: string
  readonly nonce: string
  readonly password: string
  readonly minIterations: number
  readonly maxIterations: number
}

/** A state and the step to carry out. */
export interface Transition {
  readonly state: ClientState
  readonly step: ClientStep
}

const DONE: ClientState = { _tag: "Done" }
const send = (state: ClientState, line: string): Transition => ({ state, step: { _tag: "Send", line } })
const sendData = (state: ClientState, data: string): Transition => send(state, Base64.encode(Bytes.fromString(data)))
const failure = (reason: string, transient: boolean, reply?: Reply.Reply): Transition => ({
  state: DONE,
  step: { _tag: "Failure", reason, transient, reply }
})
const cancel = (reason: string, transient = true): Transition => send({ _tag: "ExpectCancelReply", reason, transient }, "*")

/**
 * The mechanism to use among those a server advertised (EHLO `AUTH` keywords,
 * any case): SCRAM-SHA-256, then PLAIN and LOGIN when `plaintextAllowed`
 * (under TLS), then CRAM-MD5. `undefined` when none fits.
 */
export const choose = (
  advertised: ReadonlyArray<string>,
  options: { readonly plaintextAllowed: boolean }
): Sasl.Mechanism | undefined => {
  const offered = new Set(advertised.map((a) => a.toUpperCase()))
  const order: ReadonlyArray<Sasl.Mechanism> = ["SCRAM-SHA-256", "PLAIN", "LOGIN", "CRAM-MD5"]
  return order.find((m) => offered.has(m) && (options.plaintextAllowed || !Sasl.isPlaintext(m)))
}

/**
 * Starts an exchange: validates the credentials for the mechanism and gives
 * the AUTH command line to send (or a permanent local failure).
 *
 * @example
 * Client.start("PLAIN", { authcid: "tim", password: "tanstaaftanstaaf", random })
 * // step: { _tag: "Send", line: "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm" }
 */
export const start = (
  mechanism: Sasl.Mechanism,
  credentials: ClientCredentials,
  options: ClientOptions = {}
): Transition => {
  const { authcid, password } = credentials
  const authzid = credentials.authzid === "" ? undefined : credentials.authzid
  if (authcid.length === 0 || password.length === 0) return failure("empty user name or password", false)
  if (Sasl.hasControl(authcid) || Sasl.hasControl(password) || (authzid !== undefined && Sasl.hasControl(authzid))) {
    return failure("control character in user name, authorization identity or password", false)
  }
  if (authzid !== undefined && authzid !== authcid && (mechanism === "LOGIN" || mechanism === "CRAM-MD5")) {
    return failure(`${mechanism} cannot carry an authorization identity`, false)
  }
  const useInitial = options.initialResponse ?? true
  const maxLine = options.maxLineLength ?? 512
  const withInitial = (state: ClientState, payload: string, fallback: ClientState): Transition => {
    const line = `AUTH ${mechanism} ${payload === "" ? "=" : payload}`
    return useInitial && line.length + 2 <= maxLine ? send(state, line) : send(fallback, `AUTH ${mechanism}`)
  }
  switch (mechanism) {
    case "PLAIN": {
      const response = Base64.encode(Bytes.fromString(`${authzid ?? ""}\u0000${authcid}\u0000${password}`))
      return withInitial({ _tag: "ExpectOutcome" }, response, { _tag: "ExpectPlainChallenge", response })
    }
    case "LOGIN":
      return send(
        { _tag: "ExpectLoginPrompt", authcid, password, sentUsername: false, sentPassword: false },
        "AUTH LOGIN"
      )
    case "CRAM-MD5":
      return send({ _tag: "ExpectCramChallenge", authcid, password }, "AUTH CRAM-MD5")
    case "SCRAM-SHA-256": {
      const gs2Header = Scram.gs2Header(authzid)
      const nonce = Scram.makeNonce(credentials.random(Scram.nonceBytes))
      const bare = Scram.clientFirstBare(authcid, nonce)
      const scram: ScramStart = {
        gs2Header,
        bare,
        nonce,
        password,
        minIterations: options.minIterations ?? Credentials.minIterations,
        maxIterations: options.maxIterations ?? 1_000_000
      }
      const first = Base64.encode(Bytes.fromString(gs2Header + bare))
      return withInitial({ _tag: "ExpectScramServerFirst", scram }, first, { _tag: "ExpectScramStart", scram })
    }
  }
}

/**
 * Takes the server's reply to the last line sent. Never throws on a reply
 * from the network; throws `Sasl.UsageError` when called after the exchange
 * ended.
 */
export const receive = (state: ClientState, reply: Reply.Reply): Transition => {
  switch (state._tag) {
    case "Done":
      throw new Sasl.UsageError("Client.receive called after the exchange ended")
    case "ExpectCancelReply":
      return failure(state.reason, state.transient, reply)
  }
  if (reply.code === 235) return accepted(state, reply)
  if (reply.code >= 400 && reply.code < 600) {
    return failure(`server refused authentication: ${Reply.toString(reply)}`, reply.code < 500, reply)
  }
  if (reply.code !== 334) return failure(`unexpected reply ${reply.code} during authentication`, true, reply)
  const data = Base64.decode(reply.lines.join(""))
  if (data === undefined) return cancel("server challenge is not valid base64")
  return challenged(state, data)
}

/** A 235 reply: success, unless SCRAM has not seen a valid server signature. */
const accepted = (state: ClientState, reply: Reply.Reply): Transition => {
  switch (state._tag) {
    case "ExpectScramServerFinal": {
      // A server that puts the server-final-message in the 235 text (not RFC 4954, but seen).
      for (const word of reply.lines.join(" ").split(" ")) {
        const bytes = Base64.decode(word)
        const text = bytes === undefined || bytes.length === 0 ? undefined : Bytes.decodeUtf8(bytes)
        const parsed = text === undefined ? undefined : Scram.parseServerFinal(text)
        if (parsed?.ok && parsed.value._tag === "Verifier") {
          return Credentials.constantTimeEqual(parsed.value.signature, state.signature)
            ? { state: DONE, step: { _tag: "Success" } }
            : failure("SCRAM server signature does not match", true, reply)
        }
      }
      return failure("server accepted SCRAM authentication without proving it knows the password", true, reply)
    }
    case "ExpectScramStart":
    case "ExpectScramServerFirst":
      return failure("server accepted SCRAM authentication without proving it knows the password", true, reply)
    default:
      return { state: DONE, step: { _tag: "Success" } }
  }
}

/** A 334 challenge with its decoded data. */
const challenged = (state: ClientState, data: Uint8Array): Transition => {
  switch (state._tag) {
    case "ExpectPlainChallenge":
      return send({ _tag: "ExpectOutcome" }, state.response)
    case "ExpectLoginPrompt":
      return loginPrompt(state, data)
    case "ExpectCramChallenge": {
      if (data.length === 0) return cancel("empty CRAM-MD5 challenge")
      const digest = Sasl.cramDigest(state.password, data)
      let hex = ""
      for (const b of digest) hex += b.toString(16).padStart(2, "0")
      return sendData({ _tag: "ExpectOutcome" }, `${state.authcid} ${hex}`)
    }
    case "ExpectScramStart":
      return sendData({ _tag: "ExpectScramServerFirst", scram: state.scram }, state.scram.gs2Header + state.scram.bare)
    case "ExpectScramServerFirst":
      return scramServerFirst(state.scram, data)
    case "ExpectScramServerFinal":
      return scramServerFinal(state.signature, data)
    default:
      return cancel("unexpected challenge from the server")
  }
}

/** LOGIN: answer `Username:` / `Password:` prompts, by their text or else by their order (MS-XLOGIN §3.1.5.1). */
const loginPrompt = (state: Extract<ClientState, { _tag: "ExpectLoginPrompt" }>, data: Uint8Array): Transition => {
  const prompt = Bytes.toLatin1(data).toLowerCase()
  const wantsUser = prompt.startsWith("user") ? true : prompt.startsWith("pass") ? false : !state.sentUsername
  if (wantsUser ? state.sentUsername : state.sentPassword) return cancel("unexpected LOGIN prompt")
  return wantsUser
    ? sendData({ ...state, sentUsername: true }, state.authcid)
    : sendData({ ...state, sentPassword: true }, state.password)
}

const scramServerFirst = (scram: ScramStart, data: Uint8Array): Transition => {
  const text = Bytes.decodeUtf8(data)
  const parsed = text === undefined ? undefined : Scram.parseServerFirst(text)
  if (text === undefined || parsed === undefined || !parsed.ok) return cancel("malformed SCRAM server-first-message")
  const { nonce, salt, iterations } = parsed.value
  if (!nonce.startsWith(scram.nonce) || nonce.length === scram.nonce.length) {
    return cancel("SCRAM server nonce does not extend the client nonce")
  }
  if (iterations < scram.minIterations || iterations > scram.maxIterations) {
    return cancel(`SCRAM iteration count ${iterations} outside ${scram.minIterations}..${scram.maxIterations}`)
  }
  const keys = Credentials.scramKeys(Credentials.saltedPassword(scram.password, salt, iterations))
  const withoutProof = Scram.clientFinalWithoutProof(scram.gs2Header, nonce)
  const message = Scram.authMessage(scram.bare, text, withoutProof)
  const proof = Scram.clientProof(keys.clientKey, keys.storedKey, message)
  return sendData(
    { _tag: "ExpectScramServerFinal", signature: Scram.serverSignature(keys.serverKey, message) },
    Scram.clientFinal(withoutProof, proof)
  )
}

const scramServerFinal = (signature: Uint8Array, data: Uint8Array): Transition => {
  const text = Bytes.decodeUtf8(data)
  const parsed = text === undefined ? undefined : Scram.parseServerFinal(text)
  if (parsed === undefined || !parsed.ok) return cancel("malformed SCRAM server-final-message")
  if (parsed.value._tag === "Error") return cancel(`SCRAM server error: ${parsed.value.error}`, false)
  if (!Credentials.constantTimeEqual(parsed.value.signature, signature)) {
    return cancel("SCRAM server signature does not match")
  }
  return send({ _tag: "ExpectOutcome" }, "")
}
