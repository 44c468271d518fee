import { describe, expect, it } from "vitest"
import * as Reply from "../src/smtp/Reply.ts"

describe("Reply", () => {
  it("encodes single and multi-line replies with the enhanced code on every line", () => {
    expect(Reply.encodeString(Reply.ok)).toBe("250 2.0.0 Ok\r\n")
    expect(Reply.encodeString(Reply.make(250, undefined, ["mx.example", "PIPELINING", "SIZE 10"]))).toBe(
      "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
    )
    expect(Reply.encodeString(Reply.make(550, "5.1.1", ["No such", "user"]))).toBe("550-5.1.1 No such\r\n550 5.1.1 user\r\n")
  })
  it("never lets reply text forge a line break", () => {
    expect(Reply.encodeString(Reply.make(550, "5.7.1", ["a\r\n250 ok"]))).toBe("550 5.7.1 a  250 ok\r\n")
  })
  it("refuses an enhanced code of the wrong class", () => {
    expect(() => Reply.make(250, "5.0.0", "x")).toThrow(RangeError)
    expect(() => Reply.make(99, undefined, "x")).toThrow(RangeError)
  })
  it("classifies", () => {
    expect(Reply.isTransient(Reply.queueError)).toBe(true)
    expect(Reply.isPermanent(Reply.relayDenied)).toBe(true)
    expect(Reply.toString(Reply.relayDenied)).toBe("550 5.7.1 Relaying denied")
  })
})
