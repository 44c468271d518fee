/**
 * Runtime-neutral assertions for the cross-runtime scenarios: the same
 * checks run under vitest (Node) and `deno test`, so they cannot use
 * vitest's `expect` (which needs the vitest runner) nor `node:assert`.
 *
 * `equal` follows vitest's `toEqual`: deep and structural, properties whose
 * value is `undefined` count as absent, typed arrays compare element-wise,
 * class instances compare by their own enumerable properties. `matches`
 * follows `toMatchObject`: every property of `expected` must be present and
 * equal, extra properties are fine.
 *
 * What it deliberately does not do: pretty diffs. A failure message shows
 * both values as JSON (bytes as arrays), which is enough to debug a
 * scenario.
 */

/** Thrown by every failed assertion. */
export class AssertionError extends Error {
  override readonly name = "AssertionError"
}

const show = (u: unknown): string => {
  try {
    const s = JSON.stringify(u, (_k, v: unknown) =>
      v instanceof Uint8Array
        ? `<${v.length} bytes: ${Array.from(v.subarray(0, 32)).join(",")}${v.length > 32 ? ",…" : ""}>`
        : typeof v === "bigint"
        ? `${v}n`
        : v === undefined
        ? "<undefined>"
        : v)
    return s === undefined ? String(u) : s.length > 600 ? `${s.slice(0, 600)}…` : s
  } catch {
    return String(u)
  }
}

const fail = (message: string | undefined, detail: string): never => {
  throw new AssertionError(message === undefined ? detail : `${message}: ${detail}`)
}

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

/** Deep equality with `toEqual` semantics (see the module header). */
export const isEqual = (a: unknown, b: unknown): boolean => {
  if (Object.is(a, b)) return true
  if (ArrayBuffer.isView(a) && ArrayBuffer.isView(b)) {
    const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
    const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
    if (x.length !== y.length) return false
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false
    return true
  }
  if (!isObject(a) || !isObject(b)) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!isEqual(a[i], b[i])) return false
    return true
  }
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime()
  if (a instanceof Map || b instanceof Map || a instanceof Set || b instanceof Set) {
    return isEqual([...(a as unknown as Iterable<unknown>)], [...(b as unknown as Iterable<unknown>)])
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)])
  for (const k of keys) if (!isEqual(a[k], b[k])) return false
  return true
}

const isMatch = (actual: unknown, expected: unknown): boolean => {
  if (!isObject(expected) || ArrayBuffer.isView(expected)) return isEqual(actual, expected)
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((e, i) => isMatch(actual[i], e))
  }
  if (!isObject(actual)) return false
  return Object.keys(expected).every((k) => isMatch(actual[k], expected[k]))
}

/** `actual` deeply equals `expected` (vitest `toEqual`). */
export const equal = <A>(actual: unknown, expected: A, message?: string): void => {
  if (!isEqual(actual, expected)) fail(message, `expected ${show(expected)}, got ${show(actual)}`)
}

/** `actual` has every property of `expected`, deeply (vitest `toMatchObject`). */
export const matches = (actual: unknown, expected: Record<string, unknown>, message?: string): void => {
  if (!isMatch(actual, expected)) fail(message, `expected an object matching ${show(expected)}, got ${show(actual)}`)
}

/** `condition` is true. */
export const ok = (condition: boolean, message = "expected true"): void => {
  if (!condition) fail(undefined, message)
}

/** `text` matches `pattern`. */
export const match = (text: string | undefined, pattern: RegExp, message?: string): void => {
  if (text === undefined || !pattern.test(text)) fail(message, `expected ${show(text)} to match ${pattern}`)
}

/** `text` contains `needle`. */
export const includes = (text: string | undefined, needle: string, message?: string): void => {
  if (text === undefined || !text.includes(needle)) fail(message, `expected ${show(text)} to contain ${show(needle)}`)
}

/** `a >= b`. */
export const atLeast = (a: number, b: number, message?: string): void => {
  if (!(a >= b)) fail(message, `expected ${a} >= ${b}`)
}

/** `a <= b`. */
export const atMost = (a: number, b: number, message?: string): void => {
  if (!(a <= b)) fail(message, `expected ${a} <= ${b}`)
}

/** Byte-exact equality of two byte arrays, with the first differing offset on failure. */
export const bytesEqual = (actual: Uint8Array, expected: Uint8Array, message?: string): void => {
  if (actual.length !== expected.length) fail(message, `expected ${expected.length} bytes, got ${actual.length}`)
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) fail(message, `bytes differ at offset ${i}: ${actual[i]} != ${expected[i]}`)
  }
}
