// The README's protocol example is the file examples/protocol-session.ts,
// included verbatim; this test checks they agree and that the example runs.
import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"

const root = new URL("..", import.meta.url).pathname

describe("README", () => {
  it("opens with the two set-up commands", () => {
    const head = readFileSync(`${root}README.md`, "utf8").split("\n").slice(0, 25).join("\n")
    expect(head).toMatch(/npm install && npm start/)
    expect(head).toMatch(/\.ci\/install-system\.sh && npm install && npm test/)
  })

  it("shows the protocol example verbatim, and the example runs", async () => {
    const readme = readFileSync(`${root}README.md`, "utf8")
    const example = readFileSync(`${root}examples/protocol-session.ts`, "utf8").trim()
    expect(readme).toContain(example)
    const mod = await import("../examples/protocol-session.ts")
    expect(mod.transcript).toMatch(/^220 mx\.example\.test ESMTP Mailroom\r\n250-mx\.example\.test\r\n/)
    expect(mod.transcript).toContain("250 2.6.0 Ok: queued as 0001\r\n221 2.0.0 Bye\r\n")
  })

  it("shows the Node embedding example verbatim (it is typechecked with the repository)", () => {
    const readme = readFileSync(`${root}README.md`, "utf8")
    expect(readme).toContain(readFileSync(`${root}examples/embed-node.ts`, "utf8").trim())
  })

  it("shows the Deno embedding example verbatim (deno check and a Deno test run it)", () => {
    const readme = readFileSync(`${root}README.md`, "utf8")
    expect(readme).toContain(readFileSync(`${root}examples/embed-deno.ts`, "utf8").trim())
  })
})
