/**
 * Config errors: a `ConfigError` carries every problem found in a config,
 * each as `<key path>: <what was expected>, got <value>`; this module also
 * turns an Effect Schema issue tree into such problems.
 *
 * The walk reads the `expected` annotation that `Config`'s leaf schemas carry,
 * describes structure itself (`a mapping of settings`, `a list`), reports an
 * unknown key with the closest known key and the list of known keys, a
 * missing key with what it needed, and a union tagged by `type` as a problem
 * at `<path>.type`. Values are shown as JSON (strings quoted, control
 * characters escaped) and cut at 80 characters.
 *
 * What this module deliberately does not do: decide what is valid (the
 * schema does) or know about YAML (`Config.parse` adds line numbers).
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as SchemaAST from "effect/SchemaAST"
import * as SchemaIssue from "effect/SchemaIssue"


/** One problem in a config: where (a key path such as `smtp[0].tls.cert`), what, and the source line when known. */
export interface Problem {
  readonly path: string
  readonly message: string
  readonly line?: number | undefined
}

/** A config that does not decode. `message` lists every problem, one per line. */
export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly problems: ReadonlyArray<Problem>
  readonly message: string
}> {}

/** Formats one problem as `<key path>: <message>`. */
export const formatProblem = (p: Problem): string => p.path === "" ? p.message : `${p.path}: ${p.message}`

/** Makes the error from its problems. */
export const make = (problems: ReadonlyArray<Problem>): ConfigError =>
  new ConfigError({ problems, message: problems.map(formatProblem).join("\n") })

/** A key path as a list: `["smtp", 0, "tls", "cert"]`. */
export type Path = ReadonlyArray<PropertyKey>

/** Renders a key path: `smtp[0].tls.cert`, `relay.force_mx["example.com"]`. */
export const formatPath = (path: Path): string => {
  let out = ""
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`
    else if (typeof key === "string" && /^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) out += out === "" ? key : `.${key}`
    else out += `[${JSON.stringify(String(key))}]`
  }
  return out
}

/** Shows a value the way the file would: strings quoted and escaped, long values cut. */
export const formatValue = (u: unknown): string => {
  if (u === undefined) return "nothing"
  let s: string
  try {
    s = typeof u === "string" ? JSON.stringify(u) : typeof u === "bigint" ? String(u) : JSON.stringify(u) ?? String(u)
  } catch {
    s = String(u)
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s
}

/** Describes what a schema accepts, e.g. `a list` or the `expected` annotation of a leaf. */
export const expectedOf = (ast: SchemaAST.AST): string => {
  const expected = ast.annotations?.expected
  if (typeof expected === "string") return expected
  // The input is on the encoded side of a transformation: describe that side.
  if (ast.encoding !== undefined) return expectedOf(SchemaAST.toEncoded(ast))
  switch (ast._tag) {
    case "Objects":
      return ast.propertySignatures.length === 0 && ast.indexSignatures.length > 0 ? "a mapping" : "a mapping of settings"
    case "Arrays":
      return "a list"
    case "String":
      return "a string"
    case "Number":
      return "a number"
    case "Boolean":
      return "true or false"
    case "Literal":
      return JSON.stringify(ast.literal)
    case "Union": {
      const tags = unionTags(ast)
      if (tags !== undefined) return `a mapping with a "type" key (one of ${tags.map((t) => JSON.stringify(t)).join(", ")})`
      const members = ast.types.map(expectedOf)
      // ArrayEnsure: [item, list of item]
      if (ast.types.length === 2 && ast.types[1]!._tag === "Arrays") return `${members[0]}, or a list of them`
      return members.join(" or ")
    }
    default:
      return "a valid value"
  }
}

/** The `type` literals of a union of structs tagged by `type`, if it is one. */
const unionTags = (ast: SchemaAST.Union): ReadonlyArray<string> | undefined => {
  const tags: Array<string> = []
  for (const member of ast.types) {
    if (member._tag !== "Objects") return undefined
    const type = member.propertySignatures.find((ps) => ps.name === "type")?.type
    if (type?._tag !== "Literal" || typeof type.literal !== "string") return undefined
    tags.push(type.literal)
  }
  return tags
}

const editDistance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = tmp
    }
  }
  return row[b.length]!
}

const unknownKey = (key: PropertyKey, ast: SchemaAST.AST): string => {
  const known = ast._tag === "Objects" ? ast.propertySignatures.map((ps) => String(ps.name)) : []
  const name = String(key)
  const close = known
    .map((k) => [k, editDistance(name.toLowerCase(), k)] as const)
    .filter(([k, d]) => d <= Math.max(1, Math.floor(k.length / 3)))
    .sort((a, b) => a[1] - b[1])[0]
  const hint = close === undefined ? "" : ` (did you mean ${close[0]}?)`
  return known.length === 0
    ? "unknown key: no keys are allowed here"
    : `unknown key${hint}; expected one of: ${known.join(", ")}`
}

/** A problem whose path is still a list (so that a YAML locator can follow it). */
export interface RawProblem {
  readonly path: Path
  readonly message: string
}

const expectedGot = (expected: string, issue: SchemaIssue.Issue): string =>
  `expected ${expected}, got ${formatValue(SchemaIssue.hasInput(issue) ? issue.input : undefined)}`

/** Flattens a Schema issue tree into problems with key paths. */
const collect = (
  issue: SchemaIssue.Issue,
  path: Path,
  parent: SchemaAST.AST | undefined,
  out: Array<RawProblem>
): void => {
  switch (issue._tag) {
    case "Pointer":
      return collect(issue.issue, [...path, ...issue.path], parent, out)
    case "Composite":
      for (const child of issue.issues) collect(child, path, issue.ast, out)
      return
    case "Encoding":
      return collect(issue.issue, path, parent, out)
    case "Filter": {
      const expected = issue.filter.annotations?.expected
      if (typeof expected === "string") out.push({ path, message: expectedGot(expected, issue) })
      else collect(issue.issue, path, parent, out)
      return
    }
    case "AnyOf": {
      if (issue.issues.length > 0) {
        for (const child of issue.issues) collect(child, path, parent, out)
        return
      }
      const input = SchemaIssue.hasInput(issue) ? issue.input : undefined
      const tags = unionTags(issue.ast)
      if (tags !== undefined && typeof input === "object" && input !== null && !Array.isArray(input)) {
        const type = (input as Record<string, unknown>).type
        out.push({
          path: [...path, "type"],
          message: `expected one of ${tags.map((t) => JSON.stringify(t)).join(", ")}, got ${formatValue(type)}`
        })
        return
      }
      out.push({ path, message: expectedGot(expectedOf(issue.ast), issue) })
      return
    }
    case "InvalidType":
      out.push({ path, message: expectedGot(expectedOf(issue.ast), issue) })
      return
    case "InvalidValue": {
      const expected = issue.annotations?.expected
      const message = issue.annotations?.message
      out.push({
        path,
        message: typeof expected === "string"
          ? expectedGot(expected, issue)
          : typeof message === "string"
          ? message
          : expectedGot("a valid value", issue)
      })
      return
    }
    case "MissingKey": {
      const key = path[path.length - 1]
      const ps = parent?._tag === "Objects" ? parent.propertySignatures.find((p) => p.name === key) : undefined
      out.push({ path, message: `expected ${ps === undefined ? "a value" : expectedOf(ps.type)}, got nothing (this key is required)` })
      return
    }
    case "UnexpectedKey":
      out.push({ path, message: unknownKey(path[path.length - 1] ?? "", issue.ast) })
      return
    case "Forbidden":
    case "OneOf":
      out.push({ path, message: expectedGot("a valid value", issue) })
      return
  }
}

/** Flattens a Schema issue tree into problems with key paths, in the order the schema reports them. */
export const fromIssue = (issue: SchemaIssue.Issue): Array<RawProblem> => {
  const out: Array<RawProblem> = []
  collect(issue, [], undefined, out)
  return out
}
