/**
 * Reply templates: the SMTP replies policies are configured with, written as
 * one line, `"550 5.7.23 SPF check failed: {reason}"`, where `{name}`
 * placeholders are filled when the reply is sent. Configuration is checked
 * once (`parse`), so a bad code or enhanced status fails at start-up rather
 * than on the first message.
 *
 * Values put into a template come from the network (SPF explanations,
 * DNSBL TXT records, spamd symbols), so every value is reduced to printable
 * text without CR, LF or NUL and cut to a bounded length: a value can never
 * forge a second reply line.
 *
 * What it deliberately does not do: multi-line replies, or escaping of
 * braces (an unknown `{name}` is left as written).
 *
 * @since 0.1.0
 */
import * as Reply from "../smtp/Reply.ts"

/** A checked template. */
export interface Template {
  readonly code: number
  readonly enhanced: string | undefined
  readonly text: string
  /** The template as written. */
  readonly source: string
}

const SHAPE = /^([2-5]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3}))?(?:[ -](.*))?$/s

/**
 * Parses `"code [x.y.z] text"`. Returns an error message for a template
 * whose code is not 200-599, whose enhanced status does not agree with the
 * code, or that holds CR, LF or NUL.
 */
export const parse = (source: string): Template | string => {
  if (/[\r\n\0]/.test(source)) return "a reply template must be one line"
  const m = SHAPE.exec(source.trim())
  if (!m) return `expected "<code> [<x.y.z>] <text>", got ${JSON.stringify(source)}`
  const code = Number(m[1])
  const enhanced = m[2]
  if (enhanced !== undefined && enhanced[0] !== m[1]![0]) {
    return `enhanced status ${enhanced} does not fit reply code ${code}`
  }
  return { code, enhanced, text: (m[3] ?? "").trim(), source }
}

/** Like `parse`, but throws `RangeError` on a bad template (for templates written in code). */
export const make = (source: string): Template => {
  const t = parse(source)
  if (typeof t === "string") throw new RangeError(t)
  return t
}

/** Accepts a template given as text or as one already parsed. */
export const from = (t: Template | string): Template => (typeof t === "string" ? make(t) : t)

/** Longest value put into a placeholder, in characters. */
export const maxValueLength = 300

/** Makes a value safe for one reply line: controls become spaces, runs of space collapse, length is capped. */
export const sanitize = (value: string, max = maxValueLength): string => {
  const s = value.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, " ").replace(/ {2,}/g, " ").trim()
  return s.length > max ? s.slice(0, max - 3) + "..." : s
}

/** Fills the `{name}` placeholders (missing values leave the placeholder as written) and makes the reply. */
export const render = (t: Template, values: Readonly<Record<string, string | undefined>> = {}): Reply.Reply => {
  const text = t.text.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (whole, name: string) => {
    const v = Object.prototype.hasOwnProperty.call(values, name) ? values[name] : undefined
    return v === undefined ? whole : sanitize(v)
  })
  return Reply.make(t.code, t.enhanced, text.replace(/ {2,}/g, " ").trim())
}
