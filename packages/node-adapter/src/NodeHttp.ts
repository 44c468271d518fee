/**
 * Serves a web-standard handler (`HttpEdge.Handler`) on Node's `http` or
 * `https` server inside an Effect scope: each `IncomingMessage` becomes a
 * `Request` whose body is the request stream (`Readable.toWeb`, never
 * buffered here), the peer's address, port and TLS facts go to the handler
 * as `ClientInfo`, and the `Response` is written back with its body
 * streamed under back-pressure.
 *
 * A response sent before the request body was read (413 on a large
 * Content-Length, 401, 415, ...) carries `Connection: close`; the rest of
 * the body is read and discarded for a short while so the client sees the
 * answer instead of a reset, then the socket is closed.
 *
 * Closing the scope stops accepting and closes every connection.
 *
 * What it deliberately does not do: routing, HTTP/2, or a PROXY header.
 *
 * @since 0.1.0
 */
import * as http from "node:http"
import * as https from "node:https"
import type * as net from "node:net"
import { Readable } from "node:stream"
import type * as tls from "node:tls"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as HttpEdge from "@mailroom/protocol/edge/HttpEdge"
import * as Transport from "@mailroom/protocol/edge/Transport"

export interface Options {
  readonly handler: HttpEdge.Handler
  /** Address to bind [127.0.0.1]. */
  readonly host?: string | undefined
  /** Port [8025]; 0 picks a free one. */
  readonly port?: number | undefined
  /** Set SO_REUSEPORT, so that worker processes share the address. */
  readonly reusePort?: boolean | undefined
  /** PEM key and certificate: serve HTTPS. */
  readonly tls?: { readonly key: string; readonly cert: string } | undefined
  /** Time to receive the request headers, ms [30 000]. */
  readonly headersTimeoutMs?: number | undefined
  /** Time to receive the whole request, ms [300 000]. */
  readonly requestTimeoutMs?: number | undefined
  /** Idle keep-alive connections are closed after this, ms [5 000]. */
  readonly keepAliveTimeoutMs?: number | undefined
  /** After an early answer, how long to keep discarding the unread body before closing, ms [2 000]. */
  readonly drainMs?: number | undefined
}

/** A running server. */
export interface Server {
  readonly host: string
  readonly port: number
  /** `http://127.0.0.1:8025` */
  readonly url: string
}

const unmapped = (a: string | undefined): string => {
  if (a === undefined) return "0.0.0.0"
  const m = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(a)
  return m ? m[1]! : a
}

const clientOf = (req: http.IncomingMessage): HttpEdge.ClientInfo => {
  const sock = req.socket as net.Socket & Partial<tls.TLSSocket>
  const tlsInfo: Transport.TlsInfo | undefined = typeof sock.getCipher === "function" && sock.encrypted
    ? {
      version: sock.getProtocol?.() ?? "TLS",
      cipher: sock.getCipher().name,
      bits: undefined,
      servername: (sock as tls.TLSSocket & { servername?: string }).servername || undefined,
      authorized: undefined,
      authorizationError: undefined
    }
    : undefined
  return {
    address: unmapped(sock.remoteAddress),
    port: sock.remotePort,
    local: { _tag: "Inet", address: unmapped(sock.localAddress), port: sock.localPort ?? 0 },
    tls: tlsInfo
  }
}

const toRequest = (req: http.IncomingMessage, scheme: "http" | "https", fallbackHost: string): Request => {
  const host = req.headers.host !== undefined && /^[A-Za-z0-9.:[\]-]{1,255}$/.test(req.headers.host) ? req.headers.host : fallbackHost
  const url = new URL(req.url ?? "/", `${scheme}://${host}`)
  const headers = new Headers()
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i]!, req.rawHeaders[i + 1]!)
  const method = req.method ?? "GET"
  const hasBody = method !== "GET" && method !== "HEAD"
  return new Request(url, {
    method,
    headers,
    body: hasBody ? (Readable.toWeb(req) as unknown as ReadableStream<Uint8Array>) : null,
    duplex: "half"
  } as RequestInit)
}

const plain = (res: http.ServerResponse, status: number, text: string): void => {
  if (res.headersSent) {
    res.destroy()
    return
  }
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", Connection: "close" })
  res.end(text + "\n")
}

const writeResponse = async (req: http.IncomingMessage, res: http.ServerResponse, response: Response, drainMs: number) => {
  const early = !req.complete
  const headers: Record<string, string | Array<string>> = {}
  response.headers.forEach((value, name) => {
    const prev = headers[name]
    headers[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
  })
  if (early) headers["connection"] = "close"
  res.writeHead(response.status, headers)
  if (response.body !== null) {
    const reader = response.body.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      if (!res.write(value)) await new Promise<void>((resolve) => res.once("drain", () => resolve()))
    }
  }
  res.end()
  if (early) {
    // keep reading (and discarding) what the client still sends, so it reads our answer rather than a reset
    req.on("data", () => {})
    req.resume()
    const timer = setTimeout(() => req.socket.destroy(), drainMs)
    timer.unref()
    req.once("end", () => clearTimeout(timer))
    req.socket.once("close", () => clearTimeout(timer))
  }
}

/**
 * Serves `handler` until the scope closes. Fails with a `TransportError`
 * (reason `Listen`) when the address cannot be bound.
 */
export const serve = (options: Options): Effect.Effect<Server, Transport.TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const host = options.host ?? "127.0.0.1"
    const scheme = options.tls ? "https" : "http"
    const drainMs = options.drainMs ?? 2000
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
      let request: Request
      try {
        request = toRequest(req, scheme, `${host.includes(":") ? `[${host}]` : host}:${(server.address() as net.AddressInfo).port}`)
      } catch {
        plain(res, 400, "bad request")
        return
      }
      res.on("error", () => {})
      options.handler(request, clientOf(req))
        .then((response) => writeResponse(req, res, response, drainMs))
        .catch(() => plain(res, 500, "internal error"))
    }
    const server: http.Server = options.tls
      ? https.createServer({ key: options.tls.key, cert: options.tls.cert }, onRequest)
      : http.createServer(onRequest)
    server.headersTimeout = options.headersTimeoutMs ?? 30_000
    server.requestTimeout = options.requestTimeoutMs ?? 300_000
    server.keepAliveTimeout = options.keepAliveTimeoutMs ?? 5_000
    server.on("clientError", (_err, socket) => {
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
      else socket.destroy()
    })
    yield* Effect.acquireRelease(
      Effect.callback<void, Transport.TransportError>((resume) => {
        const onError = (e: Error) =>
          resume(Effect.fail(new Transport.TransportError({ reason: "Listen", message: `cannot listen on ${host}:${options.port ?? 8025}: ${e.message}`, cause: e })))
        server.once("error", onError)
        server.listen({ host, port: options.port ?? 8025, ...(options.reusePort === true ? { reusePort: true } : {}) }, () => {
          server.off("error", onError)
          resume(Effect.void)
        })
      }),
      () =>
        Effect.callback<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    )
    const port = (server.address() as net.AddressInfo).port
    return { host, port, url: `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}` }
  })
