/**
 * The users file behind SMTP AUTH and HTTP authentication on Node: the pure
 * parser lives in `@mailroom/protocol/config/UsersFile` (re-exported here so
 * existing imports keep working); this module adds `load`, which reads the
 * file with `node:fs`.
 *
 * @since 0.1.0
 */
import * as UsersFile from "@mailroom/protocol/config/UsersFile"
import { readFileSync } from "node:fs"

export { parse, type UsersFileError } from "@mailroom/protocol/config/UsersFile"

/** Reads and parses a users file; throws an Error naming the file and the bad lines. */
export const load = (path: string): ReadonlyMap<string, string> => {
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch (e) {
    throw new Error(`users file ${path}: ${(e as Error).message}`)
  }
  return UsersFile.parseOrThrow(text, path)
}
