/**
 * What the Deno tests that run `mailroom serve` share: a free loopback
 * port, a polling `waitFor`, waiting until a listener accepts, and running
 * swaks against it.
 *
 * What it deliberately does not do: start or stop the server (each test
 * spawns its own, with its own config), or assert anything about replies.
 */

/** A loopback port nothing listens on (at the moment of asking). */
export const freePort = (): number => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 })
  const port = l.addr.port
  l.close()
  return port
}

/** Polls `f` every 50 ms until it gives a value, failing after `ms`. */
export const waitFor = async <A>(what: string, f: () => Promise<A | undefined>, ms = 15_000): Promise<A> => {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Waits until 127.0.0.1:`port` accepts a connection. */
export const waitForListener = (port: number): Promise<true> =>
  waitFor("the listener", async () => {
    try {
      ;(await Deno.connect({ hostname: "127.0.0.1", port })).close()
      return true
    } catch {
      return undefined
    }
  })

const decoder = new TextDecoder()

/** Runs swaks with `args`: its exit code, its transcript (stdout) and stderr. */
export const swaks = async (args: ReadonlyArray<string>): Promise<{ readonly code: number; readonly transcript: string; readonly stderr: string }> => {
  const out = await new Deno.Command("swaks", { args: [...args], stdout: "piped", stderr: "piped" }).output()
  return { code: out.code, transcript: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) }
}
