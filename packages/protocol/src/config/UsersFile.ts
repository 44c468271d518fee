/**
 * The users file behind SMTP AUTH and HTTP authentication: one user a line,
 * `name:stored-password`, where the stored password is one of the formats of
 * `Credentials.parseStored` (`pbkdf2-sha256$...`, `{SCRAM-SHA-256}...`,
 * `{PLAIN}secret`). Blank lines and lines starting with `#` are ignored.
 * `mailroom hash-password` prints a line in one of these forms.
 *
 * Pure text parsing: reading the file is the runtime's job (`Compose` takes
 * a `readText` from its platform).
 *
 * What it deliberately does not do: read files, or check passwords.
 *
 * @since 0.1.0
 */
import * as Credentials from "../auth/Credentials.ts"

/** One bad line of a users file. */
export interface UsersFileError {
  /** 1-based line number. */
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

/**
 * Parses `text` read from `path`; throws an `Error` naming the file and
 * every bad line (`users file PATH:LINE: message`, one per line).
 */
export const parseOrThrow = (text: string, path: string): ReadonlyMap<string, string> => {
  const { users, errors } = parse(text)
  if (errors.length > 0) throw new Error(errors.map((e) => `users file ${path}:${e.line}: ${e.message}`).join("\n"))
  return users
}
