import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Bytes from "../src/wire/Bytes.ts"
import * as DataDecoder from "../src/wire/DataDecoder.ts"

const b = (s: string): Uint8Array => Bytes.fromLatin1(s)
const s = (u: Uint8Array): string => Bytes.toLatin1(u)

const NORMALIZE: DataDecoder.DataOptions = { maxSize: 0, bareNewline: "normalize" }
const REJECT: DataDecoder.DataOptions = { maxSize: 0, bareNewline: "reject" }

interface Driven {
  readonly content: string
  readonly done: boolean
  readonly state: DataDecoder.DataState
  /** Bytes not consumed: after the terminator, or an incomplete tail. */
  readonly rest: string
  readonly maxPending: number
  readonly chunkCallsAfterExceeded: number
}

/** Feeds chunks as the session would: unconsumed bytes are presented again with the next chunk. */
const drive = (chunks: ReadonlyArray<Uint8Array>, options: DataDecoder.DataOptions): Driven => {
  let state = DataDecoder.initial
  let pending: Uint8Array = Bytes.empty
  const parts: Array<Uint8Array> = []
  let done = false
  let maxPending = 0
  let chunkCallsAfterExceeded = 0
  let k = 0
  for (; k < chunks.length && !done; k++) {
    pending = Bytes.concat([pending, chunks[k]!])
    const wasExceeded = state.exceeded
    const r = DataDecoder.decode(state, pending, 0, options)
    if (wasExceeded && r.chunks.length > 0) chunkCallsAfterExceeded++
    expect(r.chunks.length).toBeLessThanOrEqual(1)
    parts.push(...r.chunks)
    state = r.state
    done = r.done
    pending = pending.slice(r.consumed)
    if (!done) maxPending = Math.max(maxPending, pending.length)
  }
  const rest = Bytes.concat([pending, ...chunks.slice(k)])
  return { content: s(DataDecoder.join(parts)), done, state, rest: s(rest), maxPending, chunkCallsAfterExceeded }
}

/**
 * A reference model written from RFC 5321 §4.5.2 as a line tokenizer: lines end with CRLF, a bare
 * CR or a bare LF; only a "." line between two real CRLFs ends the data; a "." starting a line that
 * follows a real CRLF is removed. Works on complete input only.
 */
const reference = (input: string, options: DataDecoder.DataOptions) => {
  let content = ""
  let afterCrlf = true
  let bare = false
  let i = 0
  while (i < input.length) {
    const m = /\r\n|\r|\n/g
    m.lastIndex = i
    const hit = m.exec(input)
    if (hit === null) {
      content += afterCrlf && input[i] === "." ? input.slice(i + 1) : input.slice(i)
      i = input.length
      break
    }
    const line = input.slice(i, hit.index)
    const eol = hit[0]
    if (afterCrlf && line === "." && eol === "\r\n") {
      i = hit.index + 2
      const cap = options.maxSize > 0 ? options.maxSize : Infinity
      return {
        done: true,
        content: content.slice(0, cap),
        size: content.length,
        exceeded: content.length > cap,
        bare,
        rest: input.slice(i)
      }
    }
    if (eol !== "\r\n") bare = true
    content += (afterCrlf && line.startsWith(".") ? line.slice(1) : line) +
      (eol === "\r\n" || options.bareNewline === "normalize" ? "\r\n" : eol)
    afterCrlf = eol === "\r\n"
    i = hit.index + eol.length
  }
  return { done: false, content, size: content.length, exceeded: false, bare, rest: "" }
}

const splitAt = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => (bytes.length === 0 ? 0 : c % (bytes.length + 1))))].sort((x, y) => x - y)
  const out: Array<Uint8Array> = []
  let prev = 0
  for (const p of points) {
    out.push(bytes.subarray(prev, p))
    prev = p
  }
  out.push(bytes.subarray(prev))
  return out
}
const oneByOne = (bytes: Uint8Array): Array<Uint8Array> => Array.from(bytes, (x) => Uint8Array.of(x))

/** The smuggling variants of reference/security.md §2, and then some. */
const SMUGGLING = [
  "\n.\n",
  "\r.\r",
  "\r.\n",
  "\n.\r",
  "\r.\r\n",
  "\r\n.\r",
  "\r\n.\n",
  "\r\n\x00.\r\n",
  "\n.\r\n",
  "\n\n.\r\n",
  "\r\r.\r\n",
  "\r\n .\r\n",
  "\r\n.\x00\r\n",
  "\r\n.\r\r\n",
  "\r\n.\n\r\n",
  "\n\r.\r\n"
]

const framingBytes = fc
  .array(fc.oneof(fc.constantFrom(0x0d, 0x0a, 0x2e, 0x61, 0x00), fc.integer({ min: 0, max: 255 })), { maxLength: 200 })
  .map((a) => Uint8Array.from(a))

describe("DataDecoder.decode", () => {
  it("reads a message up to CRLF.CRLF; the final CRLF belongs to the message", () => {
    const input = b("Subject: hi\r\n\r\nbody\r\n.\r\n")
    const r = DataDecoder.decode(DataDecoder.initial, input, 0, NORMALIZE)
    expect(r.done).toBe(true)
    expect(r.consumed).toBe(input.length)
    expect(s(DataDecoder.join(r.chunks))).toBe("Subject: hi\r\n\r\nbody\r\n")
    expect(r.state).toEqual({ atLineStart: true, size: 21, exceeded: false, bareNewline: false })
  })

  it("takes the DATA command's CRLF as the first half of the terminator", () => {
    const r = DataDecoder.decode(DataDecoder.initial, b(".\r\n"), 0, NORMALIZE)
    expect(r).toEqual({
      state: { atLineStart: true, size: 0, exceeded: false, bareNewline: false },
      chunks: [],
      consumed: 3,
      done: true
    })
  })

  it("leaves pipelined bytes after the terminator unconsumed", () => {
    const input = b("x\r\n.\r\nQUIT\r\n")
    const r = DataDecoder.decode(DataDecoder.initial, input, 0, NORMALIZE)
    expect(r.done).toBe(true)
    expect(r.consumed).toBe(6)
    expect(s(input.subarray(r.consumed))).toBe("QUIT\r\n")
  })

  it("starts at `offset`", () => {
    const input = b("DATA\r\nhello\r\n.\r\n")
    const r = DataDecoder.decode(DataDecoder.initial, input, 6, NORMALIZE)
    expect(r.done).toBe(true)
    expect(r.consumed).toBe(10)
    expect(s(DataDecoder.join(r.chunks))).toBe("hello\r\n")
  })

  it("removes one leading dot of a line", () => {
    const r = DataDecoder.decode(DataDecoder.initial, b("..leading\r\na\r\n..\r\n...\r\nmid.dot\r\n.\r\n"), 0, NORMALIZE)
    expect(r.done).toBe(true)
    expect(s(DataDecoder.join(r.chunks))).toBe(".leading\r\na\r\n.\r\n..\r\nmid.dot\r\n")
  })

  it("returns content as a view of the caller's buffer when nothing changes", () => {
    const input = b("plain text\r\nmore\r\n.\r\n")
    const r = DataDecoder.decode(DataDecoder.initial, input, 0, NORMALIZE)
    expect(r.chunks.length).toBe(1)
    expect(r.chunks[0]!.buffer).toBe(input.buffer)
    expect(r.chunks[0]!.length).toBe(18)
  })

  it("never consumes an incomplete tail that may start a CRLF or the terminator", () => {
    const cases: Array<[string, number, boolean]> = [
      ["abc\r", 3, false],
      ["abc\r\n.", 5, true],
      ["abc\r\n.\r", 5, true],
      [".", 0, true],
      [".\r", 0, true],
      ["abc\r\n", 5, true]
    ]
    for (const [input, consumed, atLineStart] of cases) {
      const r = DataDecoder.decode(DataDecoder.initial, b(input), 0, NORMALIZE)
      expect([input, r.consumed, r.state.atLineStart, r.done]).toEqual([input, consumed, atLineStart, false])
      expect(s(DataDecoder.join(r.chunks))).toBe(input.slice(0, consumed))
    }
  })

  for (const variant of SMUGGLING) {
    const label = JSON.stringify(variant)
    it(`does not end the data at ${label}`, () => {
      const smuggled = "MAIL FROM:<ceo@victim.example>\r\nRCPT TO:<x@us.example>\r\nDATA\r\n"
      const input = b("Subject: x\r\n\r\nhi" + variant + smuggled)
      for (const options of [NORMALIZE, REJECT]) {
        for (const chunks of [[input], oneByOne(input)]) {
          const d = drive(chunks, options)
          expect(d.done).toBe(false)
          expect(d.rest).toBe("")
          expect(d.content).toContain("MAIL FROM:<ceo@victim.example>\r\nRCPT TO:<x@us.example>\r\nDATA\r\n")
          expect(d.state.bareNewline).toBe(/\r(?!\n)|(?<!\r)\n/.test(variant))
        }
        // the real terminator still ends it
        const d = drive([input, b(".\r\n")], options)
        expect(d.done).toBe(true)
        expect(d.rest).toBe("")
      }
    })
  }

  it("normalizes bare LF and bare CR to CRLF, and a '.' line after a bare newline stays content", () => {
    const d = drive([b("a\nb\rc\r\r\nd\n.\r\n.\r\nQUIT\r\n")], NORMALIZE)
    expect(d).toMatchObject({ done: true, content: "a\r\nb\r\nc\r\n\r\nd\r\n.\r\n", rest: "QUIT\r\n" })
    expect(d.state.bareNewline).toBe(true)
    expect(d.state.size).toBe(17)
  })

  it("under reject, passes bare newlines through unchanged and flags the message", () => {
    const d = drive([b("a\nb\rc\r\r\nd\n.\r\n.\r\nQUIT\r\n")], REJECT)
    expect(d).toMatchObject({ done: true, content: "a\nb\rc\r\r\nd\n.\r\n", rest: "QUIT\r\n" })
    expect(d.state.bareNewline).toBe(true)
  })

  it("unstuffs a dot before a bare newline at a real line start, and never ends there", () => {
    expect(drive([b("a\r\n.\nb\r\n.\r\n")], NORMALIZE).content).toBe("a\r\n\r\nb\r\n")
    expect(drive([b("a\r\n.\rb\r\n.\r\n")], NORMALIZE).content).toBe("a\r\n\r\nb\r\n")
    expect(drive([b("a\r\n.\nb\r\n.\r\n")], REJECT).content).toBe("a\r\n\nb\r\n")
  })

  it("caps the size: counts every byte, emits only the first maxSize, keeps scanning to the end", () => {
    const body = "0123456789".repeat(10) + "\r\n"
    const input = b(body + ".\r\nRSET\r\n")
    const options = { maxSize: 10, bareNewline: "normalize" } as const
    const d = drive([input.subarray(0, 50), input.subarray(50)], options)
    expect(d.done).toBe(true)
    expect(d.content).toBe("0123456789")
    expect(d.state).toEqual({ atLineStart: true, size: 102, exceeded: true, bareNewline: false })
    expect(d.rest).toBe("RSET\r\n")
    expect(d.chunkCallsAfterExceeded).toBe(0)
    // the second call emits nothing
    const first = DataDecoder.decode(DataDecoder.initial, input.subarray(0, 50), 0, options)
    const second = DataDecoder.decode(first.state, input, 50, options)
    expect(second.chunks).toEqual([])
    expect(second.done).toBe(true)
  })

  it("is not exceeded at exactly maxSize", () => {
    const d = drive([b("12345678\r\n.\r\n")], { maxSize: 10, bareNewline: "normalize" })
    expect(d.state).toMatchObject({ size: 10, exceeded: false })
    expect(d.content).toBe("12345678\r\n")
  })

  it("treats maxSize 0 and Infinity as no cap", () => {
    const big = "x".repeat(100_000) + "\r\n.\r\n"
    for (const maxSize of [0, Infinity]) {
      const d = drive([b(big)], { maxSize, bareNewline: "normalize" })
      expect(d.state.exceeded).toBe(false)
      expect(d.content.length).toBe(100_002)
    }
  })

  it("keeps memory bounded while discarding a huge message over the cap", () => {
    const options = { maxSize: 1000, bareNewline: "normalize" } as const
    let state = DataDecoder.initial
    let pending: Uint8Array = Bytes.empty
    const block = b(("y".repeat(998) + "\r\n").repeat(64))
    let emitted = 0
    for (let k = 0; k < 200; k++) {
      pending = Bytes.concat([pending, block])
      const r = DataDecoder.decode(state, pending, 0, options)
      for (const c of r.chunks) emitted += c.length
      state = r.state
      pending = pending.slice(r.consumed)
      expect(pending.length).toBeLessThanOrEqual(2)
    }
    expect(emitted).toBe(1000)
    expect(state.size).toBe(200 * 64 * 1000)
    const end = DataDecoder.decode(state, b(".\r\n"), 0, options)
    expect(end.done).toBe(true)
  })

  it("property: whole, one byte at a time and arbitrary splits agree with the reference model", () => {
    fc.assert(
      fc.property(
        framingBytes,
        fc.array(fc.nat(), { maxLength: 12 }),
        fc.constantFrom<DataDecoder.BareNewlinePolicy>("normalize", "reject"),
        fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 120 })),
        fc.boolean(),
        (body, cuts, bareNewline, maxSize, terminate) => {
          const options = { maxSize, bareNewline }
          const input = terminate ? Bytes.concat([body, b("\r\n.\r\nNEXT")]) : body
          const whole = drive([input], options)
          const single = drive(oneByOne(input), options)
          const pieces = drive(splitAt(input, cuts), options)
          for (const d of [single, pieces]) {
            expect(d.content).toBe(whole.content)
            expect(d.done).toBe(whole.done)
            expect(d.state).toEqual(whole.state)
            expect(d.rest).toBe(whole.rest)
            expect(d.chunkCallsAfterExceeded).toBe(0)
          }
          expect(single.maxPending).toBeLessThanOrEqual(2)
          if (terminate) {
            const ref = reference(s(input), options)
            expect(whole.done).toBe(true)
            expect(whole.content).toBe(ref.content)
            expect(whole.rest).toBe(ref.rest)
            expect(whole.state.size).toBe(ref.size)
            expect(whole.state.exceeded).toBe(ref.exceeded)
            expect(whole.state.bareNewline).toBe(ref.bare)
          }
        }
      ),
      { numRuns: 500 }
    )
  })

  it("property: no smuggling variant inserted anywhere ends the data", () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 30 }).map((x) => x.replace(/[\r\n]/g, "")),
        fc.constantFrom(...SMUGGLING),
        fc.array(fc.nat(), { maxLength: 6 }),
        (text, variant, cuts) => {
          // "x" first: a text of just "." at the very start would itself be a line "." (the real terminator)
          const input = b("x" + text + variant + "MAIL FROM:<x@y>\r\n")
          const d = drive(splitAt(input, cuts), NORMALIZE)
          expect(d.done).toBe(false)
        }
      ),
      { numRuns: 300 }
    )
  })

  it("property: arbitrary bytes and states never throw and consume within bounds", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.nat(),
        fc.record({ atLineStart: fc.boolean(), size: fc.nat(), exceeded: fc.boolean(), bareNewline: fc.boolean() }),
        fc.record({
          maxSize: fc.oneof(fc.integer({ min: -10, max: 500 }), fc.constant(Infinity), fc.constant(NaN)),
          bareNewline: fc.constantFrom<DataDecoder.BareNewlinePolicy>("normalize", "reject")
        }),
        (buf, off, state, options) => {
          const offset = buf.length === 0 ? 0 : off % (buf.length + 1)
          const r = DataDecoder.decode(state, buf, offset, options)
          expect(r.consumed).toBeGreaterThanOrEqual(0)
          expect(offset + r.consumed).toBeLessThanOrEqual(buf.length)
          expect(r.state.size).toBeGreaterThanOrEqual(state.size)
        }
      ),
      { numRuns: 500 }
    )
  })
})
