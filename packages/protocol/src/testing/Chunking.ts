/**
 * How bytes are split on a simulated link, for tests: every decoder and
 * session must give the same result whether its input arrives whole, one
 * byte at a time, or cut at arbitrary points.
 *
 * A `Chunker` maps one write to the reads the peer sees. `random` is seeded
 * and deterministic (a small mulberry32 generator), so a failing split can be
 * replayed from its seed. Nothing here touches global randomness or time.
 *
 * Deliberately not here: delays between pieces (the `SessionPair` clock
 * handles time) and merging writes (a read never spans two writes).
 *
 * @since 0.1.0
 */

/** Splits one write into the pieces the reader receives, in order, none empty (unless the write is). */
export type Chunker = (bytes: Uint8Array) => ReadonlyArray<Uint8Array>

/**
 * Splits `bytes` at the given offsets (sorted, de-duplicated, clamped to
 * `0..length`; cuts at the ends are ignored). Pieces are views, not copies.
 *
 * @example
 * splitAt(Bytes.fromString("abcdef"), [2, 4]) // "ab", "cd", "ef"
 */
export const splitAt = (bytes: Uint8Array, points: ReadonlyArray<number>): Array<Uint8Array> => {
  const cuts = [...new Set(points.map((p) => Math.max(0, Math.min(bytes.length, Math.floor(p)))))]
    .filter((p) => p > 0 && p < bytes.length)
    .sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let prev = 0
  for (const c of cuts) {
    out.push(bytes.subarray(prev, c))
    prev = c
  }
  out.push(bytes.subarray(prev))
  return out
}

/** Every write arrives as one read. */
export const whole: Chunker = (bytes) => [bytes]

/** Every byte arrives on its own. */
export const bytewise: Chunker = (bytes) => {
  if (bytes.length === 0) return [bytes]
  const out: Array<Uint8Array> = []
  for (let i = 0; i < bytes.length; i++) out.push(bytes.subarray(i, i + 1))
  return out
}

/** Pieces of `n` bytes (the last one shorter). */
export const every = (n: number): Chunker => (bytes) => {
  const size = Math.max(1, Math.floor(n))
  const points: Array<number> = []
  for (let p = size; p < bytes.length; p += size) points.push(p)
  return splitAt(bytes, points)
}

/**
 * A seeded generator of numbers in [0, 1) (mulberry32): the same seed gives
 * the same sequence on every runtime.
 */
export const prng = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Splits `bytes` at up to `maxCuts` points drawn from `next` (a `prng`). */
export const randomSplit = (bytes: Uint8Array, next: () => number, maxCuts = 8): Array<Uint8Array> => {
  if (bytes.length < 2) return [bytes]
  const n = Math.floor(next() * (maxCuts + 1))
  const points: Array<number> = []
  for (let i = 0; i < n; i++) points.push(1 + Math.floor(next() * (bytes.length - 1)))
  return splitAt(bytes, points)
}

/**
 * Cuts every write at random points from one seeded sequence: deterministic
 * for a given seed and sequence of writes.
 *
 * @example
 * const chunker = random(42)
 * chunker(Bytes.fromString("EHLO x\r\n")) // e.g. "EH", "LO x\r", "\n"
 */
export const random = (seed: number, maxCuts = 8): Chunker => {
  const next = prng(seed)
  return (bytes) => randomSplit(bytes, next, maxCuts)
}
