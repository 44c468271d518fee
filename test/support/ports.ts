/**
 * Test helpers: free loopback ports and temporary directories.
 *
 * A free port is found by binding port 0 and closing the socket again; there
 * is a small window in which another process may take it, which is accepted
 * for tests that hand the port to a child process (haproxy, redis, ...).
 * Servers of our own should listen on port 0 and read the bound port instead.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

/** A port that was free on `host` a moment ago. */
export const freePort = (host = "127.0.0.1"): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once("error", reject)
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** True when `host:port` accepts a TCP connection. */
export const canConnect = (host: string, port: number, timeoutMs = 500): Promise<boolean> =>
  new Promise((resolve) => {
    const sock = net.connect({ host, port })
    const done = (ok: boolean) => {
      clearTimeout(timer)
      sock.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    sock.once("connect", () => done(true))
    sock.once("error", () => done(false))
  })

/** Polls until `host:port` accepts connections, or throws after `timeoutMs`. */
export const waitForPort = async (host: string, port: number, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await canConnect(host, port)) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`nothing is listening on ${host}:${port} after ${timeoutMs} ms`)
}

/** True when some process has bound `host:port` (checked by failing to bind it, without connecting). */
export const isBound = (host: string, port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = net.createServer()
    server.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "EADDRINUSE"))
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(false)))
  })

/**
 * Polls until a process has bound `host:port`, without ever connecting (a
 * probe connection would reach the server behind a proxy). Throws after
 * `timeoutMs`.
 */
export const waitForBound = async (host: string, port: number, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await isBound(host, port)) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`nothing bound ${host}:${port} after ${timeoutMs} ms`)
}

/** Makes a fresh temporary directory; remove it with `removeDir`. */
export const tempDir = (prefix = "mailroom-test-"): string => fs.mkdtempSync(path.join(os.tmpdir(), prefix))

/** Removes a directory tree, ignoring a missing one. */
export const removeDir = (dir: string): void => fs.rmSync(dir, { recursive: true, force: true })

/** True when IPv6 loopback (`::1`) can be bound on this machine. */
export const hasIPv6Loopback = (): Promise<boolean> =>
  new Promise((resolve) => {
    const server = net.createServer()
    server.once("error", () => resolve(false))
    server.listen({ host: "::1", port: 0 }, () => server.close(() => resolve(true)))
  })
