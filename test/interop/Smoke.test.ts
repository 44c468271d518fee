import { it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { expect } from "vitest"
import nodemailer from "nodemailer"
import { startEdge, text, sendOne } from "./EdgeHarness.ts"

it.live("smoke", () =>
  Effect.gen(function*() {
    const e = yield* startEdge()
    const out = yield* Effect.promise(() => sendOne(e.port, "a@b.example", "c@d.example", "Subject: x\r\n\r\nhello"))
    console.log(out)
    const t = nodemailer.createTransport({ host: "127.0.0.1", port: e.port, secure: false, ignoreTLS: true })
    const info = yield* Effect.promise(() => t.sendMail({ envelope: { from: "a@b.example", to: ["x@y.example"] }, raw: "Subject: y\r\n\r\n..dot\r\nbody\r\n" }))
    console.log(info)
    const got = yield* Effect.promise(() => e.received())
    console.log(got.map((g) => [g.sender, g.recipients, text(g.message), g.client]))
  }))
