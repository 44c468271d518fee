/**
 * Storage micro-benchmark on Deno, the twin of `bench/storage.mjs`: N writes
 * of 5 KiB envelopes, at concurrency 1 and 20, against DenoDisk and
 * DenoJournal, each in a fresh temporary directory, rounds interleaved;
 * prints writes/s and fsyncs per write (DenoDisk: `FsFile` syncs counted by
 * wrapping `Deno.FsFile.prototype`; DenoJournal: the engine's counters),
 * and the median of the rounds.
 *
 *   deno run --allow-all --no-check bench/storage-deno.ts [--writes 2000] [--rounds 3] [--size 5120] [--only disk|journal] [--relay]
 *
 * `--relay` runs the delivery life cycle after each write as well (claim,
 * read, recordResults, remove), as DurableQueue does per message.
 */
import { parseArgs } from "node:util"
import { Effect } from "effect"
import * as Envelope from "@mailroom/protocol/envelope/Envelope"
import type * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import * as DenoDisk from "../packages/deno-adapter/src/DenoDisk.ts"
import * as DenoJournal from "../packages/deno-adapter/src/DenoJournal.ts"

const { values } = parseArgs({
  args: Deno.args,
  options: {
    writes: { type: "string", default: "2000" },
    rounds: { type: "string", default: "3" },
    size: { type: "string", default: "5120" },
    only: { type: "string" },
    relay: { type: "boolean", default: false }
  }
})
const writes = Number(values.writes)
const rounds = Number(values.rounds)
const size = Number(values.size)

// count FsFile syncs (DenoDisk fsyncs files and directories through FsFile.sync)
let handleSyncs = 0
{
  const proto = Deno.FsFile.prototype as unknown as Record<string, (...args: Array<unknown>) => unknown>
  for (const name of ["sync", "syncData"]) {
    const original = proto[name]!
    proto[name] = function(this: unknown, ...args: Array<unknown>) {
      handleSyncs++
      return original.apply(this, args)
    }
  }
}

const body = new Uint8Array(size)
for (let i = 0; i < size; i++) body[i] = i % 78 === 77 ? 10 : 65 + (i % 26)
let seq = 0
const envelope = () =>
  Envelope.make({
    id: `b${Deno.pid.toString(36)}${(seq++).toString(36).padStart(8, "0")}`,
    sender: "bench@example.org",
    recipients: ["rcpt@example.com"],
    message: body,
    timestamp: 1_795_324_232_000
  })

const lifecycle = (s: QueueStorage.Service, env: Envelope.Envelope) =>
  Effect.gen(function*() {
    yield* s.write(env, { nextAttemptAt: 0 })
    if (!values.relay) return
    yield* s.claim(env.id, "bench", Date.now(), 60_000)
    yield* s.read(env.id)
    yield* s.recordResults(env.id, [{ index: 0, status: "delivered", reply: "250 2.0.0 Ok" }])
    yield* s.remove(env.id)
  })

interface Run {
  readonly rate: number
  readonly fsyncs: number
}

/** One run: `writes` messages at `concurrency`; returns writes/s and fsyncs per message. */
const runOne = (kind: string, concurrency: number): Promise<Run> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const dir = Deno.makeTempDirSync({ prefix: `mailroom-bench-deno-${kind}-` })
    yield* Effect.addFinalizer(() => Effect.sync(() => Deno.removeSync(dir, { recursive: true })))
    let storage: QueueStorage.Service
    let syncs: () => number
    if (kind === "disk") {
      storage = yield* DenoDisk.make({ directory: dir })
      syncs = () => handleSyncs
    } else {
      const j = yield* DenoJournal.open({ directory: dir })
      storage = j.storage
      syncs = () => {
        const s = j.stats()
        return s.syncs + s.dirSyncs
      }
    }
    const envs = Array.from({ length: writes }, envelope)
    const syncs0 = syncs()
    const t0 = performance.now()
    yield* Effect.forEach(envs, (e) => lifecycle(storage, e), { concurrency, discard: true })
    const ms = performance.now() - t0
    return { rate: (writes / ms) * 1000, fsyncs: (syncs() - syncs0) / writes }
  })))

const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

const kinds = values.only === undefined ? ["disk", "journal"] : [values.only]
const results: Record<string, Array<Run>> = {}
const unit = values.relay ? "msgs" : "writes"
for (let round = 0; round < rounds; round++) {
  for (const concurrency of [1, 20]) {
    for (const kind of kinds) {
      const r = await runOne(kind, concurrency)
      const key = `${kind} c=${concurrency}`
      ;(results[key] ??= []).push(r)
      console.log(`round ${round + 1} ${key.padEnd(14)} ${r.rate.toFixed(0).padStart(6)} ${unit}/s  ${r.fsyncs.toFixed(2)} fsyncs/msg`)
    }
  }
}
console.log(`\nDeno ${Deno.version.deno}: medians of ${rounds} rounds, ${writes} × ${size} B${values.relay ? ", with the relay life cycle" : ""}:`)
for (const [key, rs] of Object.entries(results)) {
  console.log(`${key.padEnd(14)} ${median(rs.map((r) => r.rate)).toFixed(0).padStart(6)} /s  ${median(rs.map((r) => r.fsyncs)).toFixed(2)} fsyncs/msg`)
}
