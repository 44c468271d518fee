/**
 * The client side of SMTP replies (RFC 5321 §4.2): decodes one complete
 * reply, single- or multi-line, from received bytes into a `Reply.Reply`.
 *
 * - A line is `code SP text`, `code` alone, or `code "-" text` for every line
 *   but the last (§4.2.1). Every line must carry the same code, which must be
 *   200-599 (what `Reply.make` accepts; 1xx and 6xx+ are not SMTP replies);
 *   anything else is `Malformed`.
 * - The client is lenient on input: a line may end with a bare LF as well as
 *   CRLF (a CR before the LF is removed). This is a decoder for replies only;
 *   command lines and DATA never accept a bare LF.
 * - The RFC 2034 enhanced status code is split off when every line starts
 *   with the same valid `X.Y.Z` (followed by a space or the end of the line)
 *   whose class matches the code's; otherwise `enhanced` is `undefined` and
 *   each line's text is kept whole.
 * - Text is decoded as UTF-8, invalid sequences becoming U+FFFD.
 * - Bounded: a line longer than `maxLineLength` bytes (line end included) or
 *   a reply of more than `maxLines` lines is `Malformed`, decided as soon as
 *   it is certain, so a hostile server cannot make the client buffer forever.
 *
 * Round trip: `decode(Reply.encode(r))` gives back `r` for replies whose
 * lines hold no CR, LF or NUL (`Reply.encode` replaces those by spaces) and,
 * when `r.enhanced` is undefined, do not all start with an enhanced status
 * code of the code's class (that text would be read as one).
 *
 * Pure and stateless: on `NeedMore` the caller keeps the bytes and calls
 * again with more appended. The decoder does not know which command a reply
 * answers, nor interpret EHLO keywords.
 *
 * @since 0.1.0
 */
import * as Reply from "../smtp/Reply.ts"
import { CR, LF } from "./Bytes.ts"

/** The result of one call. `consumed` counts bytes from `offset`. */
export type ReplyResult =
  | { readonly _tag: "Reply"; readonly reply: Reply.Reply; readonly consumed: number }
  | { readonly _tag: "NeedMore" }
  /** The peer broke the protocol; `consumed` runs through the offending line (or the first `maxLineLength` bytes of an over-long one). */
  | { readonly _tag: "Malformed"; readonly reason: string; readonly consumed: number }

/** Options of `decode`. */
export interface ReplyOptions {
  /** Longest accepted line in bytes, line end included. Default 2048. */
  readonly maxLineLength?: number
  /** Most lines in one reply. Default 128. */
  readonly maxLines?: number
}

const needMore: ReplyResult = { _tag: "NeedMore" }
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true })
const ENHANCED_PREFIX = /^(\d\.\d{1,3}\.\d{1,3})(?: |$)/

const malformed = (reason: string, consumed: number): ReplyResult => ({ _tag: "Malformed", reason, consumed })

const isDigit = (b: number | undefined): boolean => b !== undefined && b >= 0x30 && b <= 0x39

/** Splits off the enhanced status code when every line starts with the same one of the code's class. */
const splitEnhanced = (code: number, texts: ReadonlyArray<string>): Reply.Reply => {
  const first = ENHANCED_PREFIX.exec(texts[0]!)
  const enhanced = first?.[1]
  if (enhanced !== undefined && Reply.isEnhancedStatus(enhanced) && enhanced[0] === String(code)[0]) {
    const lines: Array<string> = []
    let all = true
    for (const t of texts) {
      if (!t.startsWith(enhanced) || (t.length > enhanced.length && t.charCodeAt(enhanced.length) !== 0x20)) {
        all = false
        break
      }
      lines.push(t.slice(enhanced.length + 1))
    }
    if (all) return Reply.make(code, enhanced, lines)
  }
  return Reply.make(code, undefined, texts)
}

/**
 * Decodes the next complete reply in `buf` from `offset`.
 *
 * @example
 * ```ts
 * const r = ReplyDecoder.decode(Bytes.fromString("250-mx.example\r\n250 SIZE 1000\r\n"), 0)
 * // { _tag: "Reply", reply: { code: 250, enhanced: undefined, lines: ["mx.example", "SIZE 1000"] }, consumed: 31 }
 * ```
 */
export const decode = (buf: Uint8Array, offset: number, options?: ReplyOptions): ReplyResult => {
  const maxLineLength = options?.maxLineLength ?? 2048
  const maxLines = options?.maxLines ?? 128
  const end = buf.length
  let code = -1
  const texts: Array<string> = []
  let start = offset
  while (true) {
    if (start >= end) return needMore
    const windowEnd = Math.min(end, start + maxLineLength)
    const lf = buf.indexOf(LF, start)
    if (lf === -1 || lf >= windowEnd) {
      if (end - start >= maxLineLength) {
        return malformed(`reply line longer than ${maxLineLength} bytes`, start + maxLineLength - offset)
      }
      return needMore
    }
    const consumed = lf + 1 - offset
    const lineEnd = lf > start && buf[lf - 1] === CR ? lf - 1 : lf
    const len = lineEnd - start
    const d0 = buf[start]
    const d1 = buf[start + 1]
    const d2 = buf[start + 2]
    if (len < 3 || !isDigit(d0) || !isDigit(d1) || !isDigit(d2)) {
      return malformed("reply line does not start with a three-digit code", consumed)
    }
    const lineCode = (d0! - 0x30) * 100 + (d1! - 0x30) * 10 + (d2! - 0x30)
    if (lineCode < 200 || lineCode > 599) return malformed(`reply code ${lineCode} out of range 200-599`, consumed)
    if (code === -1) code = lineCode
    else if (lineCode !== code) return malformed(`reply code ${lineCode} differs from ${code} in a multiline reply`, consumed)
    let last: boolean
    if (len === 3) {
      last = true
    } else {
      const sep = buf[start + 3]
      if (sep === 0x20) last = true
      else if (sep === 0x2d) last = false
      else return malformed("reply code not followed by space, hyphen or line end", consumed)
    }
    texts.push(len > 4 ? utf8.decode(buf.subarray(start + 4, lineEnd)) : "")
    if (last) return { _tag: "Reply", reply: splitEnhanced(code, texts), consumed }
    if (texts.length >= maxLines) return malformed(`reply of more than ${maxLines} lines`, consumed)
    start = lf + 1
  }
}
