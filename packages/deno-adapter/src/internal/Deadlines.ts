/**
 * Internal to `DenoConnection`: the read deadlines of every connection of
 * the process in one binary min-heap, behind one `setTimeout` armed for the
 * earliest. On Deno a timer costs a JS object, two closures and a native
 * entry (about 1.5 KiB): per idle connection that is as much as the rest of
 * its state. Here a waiting connection costs two numbers and a heap slot, and
 * re-arming a deadline on every read is a heap update, not a new timer.
 *
 * The shared timer fires at the earliest deadline (or a little later: when
 * the earliest deadline is withdrawn, the armed timer is left to fire and
 * re-arm itself for the next one, instead of being cleared and set again
 * on every read). It is cleared when no deadline is left, so an idle
 * process holds no timer.
 *
 * What this module deliberately does not do: anything but reads' deadlines.
 *
 * @internal
 */

/** An entry: a connection while one of its reads has a deadline. */
export interface Waiter {
  /** `performance.now()` time of the deadline. */
  deadlineAt: number
  /** Position in the heap; -1 when not in it. */
  deadlineSlot: number
  /** Called once, when the deadline has passed (the entry has left the heap then). */
  deadlineReached(): void
}

const heap: Array<Waiter> = []
let timer: ReturnType<typeof setTimeout> | undefined = undefined
/** When the armed timer fires (`performance.now()` time), if one is armed. */
let timerAt = Infinity

const swap = (i: number, j: number): void => {
  const a = heap[i]!
  const b = heap[j]!
  heap[i] = b
  heap[j] = a
  b.deadlineSlot = i
  a.deadlineSlot = j
}

const up = (i: number): void => {
  while (i > 0) {
    const parent = (i - 1) >> 1
    if (heap[parent]!.deadlineAt <= heap[i]!.deadlineAt) return
    swap(i, parent)
    i = parent
  }
}

const down = (i: number): void => {
  for (;;) {
    const l = 2 * i + 1
    if (l >= heap.length) return
    const r = l + 1
    const least = r < heap.length && heap[r]!.deadlineAt < heap[l]!.deadlineAt ? r : l
    if (heap[i]!.deadlineAt <= heap[least]!.deadlineAt) return
    swap(i, least)
    i = least
  }
}

const arm = (): void => {
  const first = heap[0]
  if (first === undefined) {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    timerAt = Infinity
    return
  }
  if (timer !== undefined && timerAt <= first.deadlineAt) return
  if (timer !== undefined) clearTimeout(timer)
  timerAt = first.deadlineAt
  timer = setTimeout(fire, Math.max(0, first.deadlineAt - performance.now()))
}

function fire(): void {
  timer = undefined
  timerAt = Infinity
  const now = performance.now()
  const due: Array<Waiter> = []
  while (heap.length > 0 && heap[0]!.deadlineAt <= now) {
    const w = heap[0]!
    remove(w)
    due.push(w)
  }
  arm()
  for (const w of due) w.deadlineReached()
}

/** Adds `w` with a deadline `ms` from now (or moves it there if it is in already). */
export const add = (w: Waiter, ms: number): void => {
  if (w.deadlineSlot >= 0) remove(w)
  w.deadlineAt = performance.now() + ms
  w.deadlineSlot = heap.length
  heap.push(w)
  up(w.deadlineSlot)
  arm()
}

/** Withdraws `w`'s deadline; nothing if it has none. */
export const remove = (w: Waiter): void => {
  const i = w.deadlineSlot
  if (i < 0) return
  const last = heap.pop()!
  w.deadlineSlot = -1
  if (last !== w) {
    heap[i] = last
    last.deadlineSlot = i
    down(i)
    up(last.deadlineSlot)
  }
  // the armed timer stays (see the module header), unless nothing is left to wait for
  if (heap.length === 0) arm()
}

/** How many deadlines are pending (for tests). */
export const size = (): number => heap.length
