/**
 * Serves a web-standard handler (`HttpEdge.Handler`) on `Deno.serve` inside
 * an Effect scope, the Deno twin of `@mailroom/node`'s `NodeHttp`: Deno
 * hands the handler a `Request` whose body is a stream (never buffered
 * here), the peer's address and port go to the handler as `ClientInfo`
 * together with the bound local address, and a rejected handler becomes a
 * plain `500`. With `tls` (PEM key and certificate) it serves HTTPS.
 *
 * Deno's HTTP server does not report the negotiated TLS version or cipher,
 * so an HTTPS request's `ClientInfo.tls` says `TLS` with cipher `unknown`
 * (the Received header still says HTTPS).
 *
 * Closing the scope stops accepting and lets requests in flight finish for
 * at most `shutdownMs`.
 *
 * Needs `--allow-net`.
 *
 * What it deliberately does not do: routing, a PROXY header, or HTTP/2
 * settings (Deno negotiates HTTP/2 over TLS by itself).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as HttpEdge from "@mailroom/protocol/edge/HttpEdge"
import * as Transport from "@mailroom/protocol/edge/Transport"

/** Options of `serve`. */
export interface Options {
  readonly handler: HttpEdge.Handler
  /** Address to bind [127.0.0.1]. */
  readonly host?: string | undefined
  /** Port [8025]; 0 picks a free one. */
  readonly port?: number | undefined
  /** Set SO_REUSEPORT, so that worker processes share the address (needs `--unstable-net`). */
  readonly reusePort?: boolean | undefined
  /** PEM key and certificate: serve HTTPS. */
  readonly tls?: { readonly key: string; readonly cert: string } | undefined
  /** How long closing waits for requests in flight, ms [5 000]. */
  readonly shutdownMs?: number | undefined
}

/** A running server. */
export interface Server {
  readonly host: string
  readonly port: number
  /** `http://127.0.0.1:8025` */
  readonly url: string
}

const unmapped = (a: string): string => {
  const m = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(a)
  return m ? m[1]! : a
}

const plain = (status: number, text: string): Response =>
  new Response(`${text}\n`, { status, headers: { "content-type": "text/plain; charset=utf-8", connection: "close" } })

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/**
 * Serves `handler` until the scope closes. Fails with a `TransportError`
 * (reason `Listen`) when the address cannot be bound.
 */
export const serve = (options: Options): Effect.Effect<Server, Transport.TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const host = options.host ?? "127.0.0.1"
    const requested = options.port ?? 8025
    const scheme = options.tls ? "https" : "http"
    const shutdownMs = options.shutdownMs ?? 5_000
    let local: Transport.Endpoint = { _tag: "Inet", address: host, port: requested }
    const tlsInfo: Transport.TlsInfo | undefined = options.tls
      ? { version: "TLS", cipher: "unknown", bits: undefined, servername: undefined, authorized: undefined, authorizationError: undefined }
      : undefined
    const onRequest = (request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Promise<Response> => {
      const remote = info.remoteAddr
      return options.handler(request, { address: unmapped(remote.hostname), port: remote.port, local, tls: tlsInfo }).catch(() =>
        plain(500, "internal error")
      )
    }
    const server = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          Deno.serve({
            hostname: host,
            port: requested,
            ...(options.reusePort === true ? { reusePort: true } : {}),
            ...(options.tls ? { cert: options.tls.cert, key: options.tls.key } : {}),
            onListen: () => {},
            onError: () => plain(500, "internal error")
          }, onRequest),
        catch: (e) =>
          new Transport.TransportError({ reason: "Listen", message: `cannot listen on ${host}:${requested}: ${messageOf(e)}`, cause: e })
      }),
      (server) =>
        Effect.promise(() => server.shutdown()).pipe(
          Effect.timeoutOrElse({ duration: shutdownMs, orElse: () => Effect.void }),
          Effect.ignore
        )
    )
    const port = server.addr.port
    local = { _tag: "Inet", address: host, port }
    return { host, port, url: `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}` }
  })
