/**
 * Deno: the process-wide heap of read deadlines behind `DenoConnection`'s
 * `readWithin` (internal/Deadlines.ts): every deadline fires once, in order,
 * not before its time; a withdrawn or moved one does not fire at its old
 * time; and no timer is left once no deadline is pending.
 */
import * as Assert from "../../../test/scenarios/Assert.ts"
import * as Deadlines from "../src/internal/Deadlines.ts"

interface Probe extends Deadlines.Waiter {
  readonly name: string
}

const probe = (name: string, fired: Array<{ readonly name: string; readonly late: number }>): Probe => {
  const p: Probe = {
    name,
    deadlineAt: 0,
    deadlineSlot: -1,
    deadlineReached() {
      fired.push({ name, late: performance.now() - p.deadlineAt })
    }
  }
  return p
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

Deno.test("Deadlines: 200 deadlines in random order fire once each, in order, none early; withdrawn ones never", async () => {
  const fired: Array<{ readonly name: string; readonly late: number }> = []
  const all: Array<{ readonly p: Probe; readonly ms: number }> = []
  // a fixed pseudo-random order (no flakiness from the seed)
  let seed = 12345
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
  for (let i = 0; i < 200; i++) {
    const p = probe(`p${i}`, fired)
    const ms = Math.floor(next() * 150)
    Deadlines.add(p, ms)
    all.push({ p, ms })
  }
  Assert.equal(Deadlines.size(), 200)
  // withdraw every third one, and move every fifth one later
  const withdrawn = new Set<string>()
  for (let i = 0; i < 200; i += 3) {
    Deadlines.remove(all[i]!.p)
    withdrawn.add(all[i]!.p.name)
  }
  for (let i = 1; i < 200; i += 5) if (i % 3 !== 0) Deadlines.add(all[i]!.p, 160)
  Deadlines.remove(all[0]!.p) // twice: nothing
  const expected = 200 - withdrawn.size
  for (let waited = 0; fired.length < expected && waited < 3_000; waited += 20) await sleep(20)
  await sleep(50)
  Assert.equal(fired.length, expected, "each pending deadline fired once")
  Assert.equal(fired.filter((f) => withdrawn.has(f.name)).length, 0, "withdrawn deadlines never fire")
  Assert.equal(new Set(fired.map((f) => f.name)).size, expected)
  for (const f of fired) Assert.atLeast(f.late, -1, `${f.name} fired early`)
  // in deadline order: a later deadline never fires before an earlier one
  const at = new Map(all.map(({ p }) => [p.name, p.deadlineAt]))
  for (let i = 1; i < fired.length; i++) Assert.ok(at.get(fired[i - 1]!.name)! <= at.get(fired[i]!.name)! + 1e-9, "in order")
  Assert.equal(Deadlines.size(), 0)
  for (const { p } of all) Assert.equal(p.deadlineSlot, -1)
})

Deno.test("Deadlines: moving the earliest deadline later re-arms for the next one; emptying the heap leaves no timer", async () => {
  const fired: Array<{ readonly name: string; readonly late: number }> = []
  const a = probe("a", fired)
  const b = probe("b", fired)
  Deadlines.add(a, 30)
  Deadlines.add(b, 80)
  Deadlines.add(a, 200) // a moves behind b: b fires first, then a
  await sleep(130)
  Assert.equal(fired.map((f) => f.name), ["b"])
  await sleep(150)
  Assert.equal(fired.map((f) => f.name), ["b", "a"])
  // a deadline withdrawn at once leaves nothing armed (the test sanitizers check the timer)
  Deadlines.add(a, 10_000)
  Deadlines.remove(a)
  Assert.equal(Deadlines.size(), 0)
})
