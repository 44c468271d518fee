/**
 * The users file behind SMTP AUTH and HTTP authentication: one user a line,
 * `name:stored-password`, where the stored password is one of the formats of
 * `Credentials.parseStored` (`pbkdf2-sha256$...`, `{SCRAM-SHA-256}...`,
 * `{PLAIN}secret`). Blank lines and lines starting with `#` are ignored.
 * `mailroom hash-password` prints a `pbkdf2-sha256` line.
 *
 * @since 0.1.0
 */
import * as Credentials from "@mailroom/protocol/auth/Credentials"
import { readFileSync } from "node:fs"

export interface UsersFileError {
  readonly line: number
  readonly message: string
}

/** Parses the text of a users file; every bad line is reported with its number. */
export const parse = (text: string): { readonly users: ReadonlyMap<string, string>; readonly errors: ReadonlyArray<UsersFileError> } => {
  const users = new Map<string, string>()
  const errors: Array<UsersFileError> = []
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim()
    if (line === "" || line.startsWith("#")) return
    const colon = line.indexOf(":")
    if (colon <= 0) {
      errors.push({ line: i + 1, message: "expected name:stored-password" })
      return
    }
    const name = line.slice(0, colon)
    const stored = line.slice(colon + 1)
    if (/[\u0000-\u0020\u007f]/.test(name)) {
      errors.push({ line: i + 1, message: `user name ${JSON.stringify(name)} has spaces or control characters` })
      return
    }
    if (Credentials.parseStored(stored) === undefined) {
      errors.push({ line: i + 1, message: `password of ${name} is not pbkdf2-sha256$..., {SCRAM-SHA-256}... or {PLAIN}...` })
      return
    }
    if (users.has(name)) errors.push({ line: i + 1, message: `user ${name} appears twice` })
    users.set(name, stored)
  })
  return { users, errors }
}

/** Reads and parses a users file; throws an Error naming the file and the bad lines. */
export const load = (path: string): ReadonlyMap<string, string> => {
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch (e) {
    throw new Error(`users file ${path}: ${(e as Error).message}`)
  }
  const { users, errors } = parse(text)
  if (errors.length > 0) throw new Error(errors.map((e) => `users file ${path}:${e.line}: ${e.message}`).join("\n"))
  return users
}
