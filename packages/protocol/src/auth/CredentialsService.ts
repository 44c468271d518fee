/**
 * The credentials service SASL asks through the edge: verify a password,
 * give the secret for CRAM-MD5, or the stored SCRAM keys. The built-in
 * implementation is a table of users with stored passwords (see
 * `Credentials.parseStored` for the formats); the Node and Deno adapters load
 * it from a users file. Swap the layer to check credentials elsewhere.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Credentials from "./Credentials.ts"
import type * as Sasl from "./Sasl.ts"

export class CredentialsService extends Context.Service<CredentialsService, {
  readonly answer: (request: Sasl.CredentialRequest) => Effect.Effect<Sasl.CredentialAnswer>
}>()("@mailroom/protocol/CredentialsService") {}

const scramCache = new Map<string, Credentials.ScramCredentials>()

/** SCRAM keys for a user: stored ones, or derived from a clear password with a per-user salt (cached). */
const scramOf = (user: string, stored: Credentials.StoredPassword): Credentials.ScramCredentials | undefined => {
  const direct = Credentials.scramFromStored(stored)
  if (direct) return direct
  const clear = Credentials.clearPassword(stored)
  if (clear === undefined) return undefined
  const key = `${user}\u0000${clear}`
  let derived = scramCache.get(key)
  if (!derived) {
    const salt = Credentials.sha256Digest(new TextEncoder().encode(`mailroom-scram-salt:${user}`)).slice(0, 16)
    derived = Credentials.scramCredentials(clear, salt, Credentials.minIterations)
    scramCache.set(key, derived)
  }
  return derived
}

/**
 * Answers from a table of users: name → stored password string
 * (`pbkdf2-sha256$...`, `{SCRAM-SHA-256}...`, or `{PLAIN}secret`). Unknown
 * users and wrong passwords take the same path (no user enumeration by timing
 * beyond the hash itself).
 */
export const fromTable = (users: ReadonlyMap<string, string>): CredentialsService["Service"] => {
  const parsed = new Map<string, Credentials.StoredPassword>()
  for (const [name, stored] of users) {
    const p = Credentials.parseStored(stored)
    if (p) parsed.set(name, p)
  }
  return {
    answer: (request) =>
      Effect.sync((): Sasl.CredentialAnswer => {
        const stored = parsed.get(request.authcid)
        switch (request._tag) {
          case "VerifyPassword":
            return { _tag: "Verified", ok: stored !== undefined && Credentials.verifyPassword(stored, request.password) }
          case "LookupSecret":
            return { _tag: "Secret", password: stored ? Credentials.clearPassword(stored) : undefined }
          case "LookupScram":
            return { _tag: "Scram", credentials: stored ? scramOf(request.authcid, stored) : undefined }
        }
      })
  }
}

/** A layer over a table of users. */
export const layerTable = (users: ReadonlyMap<string, string>): Layer.Layer<CredentialsService> =>
  Layer.succeed(CredentialsService)(fromTable(users))

/** No users: every AUTH fails with 535. */
export const none: Layer.Layer<CredentialsService> = layerTable(new Map())
