/**
 * The transport seam: the services through which every driver (the SMTP
 * edge, the SMTP/LMTP relays) touches sockets. The protocol package only
 * defines them; `@mailroom/node` implements them over `node:net`/`node:tls`
 * and `@mailroom/deno` over `Deno.listen`/`Deno.connect`.
 *
 * The shape follows the measured "lean" design (see
 * shared/reference/effect-socket-probe.md): reads return every buffered chunk
 * at once (`null` at end of stream, never an error object for a normal
 * close), writes are synchronous unless the socket applies back-pressure, and
 * one fiber serves one connection.
 *
 * Time limits ride on the connection rather than on fibers: `readWithin`
 * carries its own deadline (one timer per connection, re-armed per read) and
 * returns a timeout as a value, `wake` ends a pending `readWithin` from
 * outside (a graceful shutdown), and `write` takes an optional limit for the
 * time it may stay blocked by back-pressure. A driver waiting for its peer
 * thus forks nothing and builds no error.
 *
 * What this module deliberately does not do: framing, SMTP, policy. Which
 * deadline applies when is the driver's business.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/** An endpoint: an IP address (v4 or v6, as text) and port, or a Unix socket path. */
export type Endpoint =
  | { readonly _tag: "Inet"; readonly address: string; readonly port: number }
  | { readonly _tag: "Unix"; readonly path: string }

/** What the TLS handshake established. */
export interface TlsInfo {
  /** e.g. "TLSv1.3" */
  readonly version: string
  /** e.g. "TLS_AES_256_GCM_SHA384" */
  readonly cipher: string
  readonly bits: number | undefined
  /** SNI name the client asked for (server side) or we sent (client side). */
  readonly servername: string | undefined
  /** Client side: whether the peer certificate chain and name verified. */
  readonly authorized: boolean | undefined
  /** Client side: why verification failed, when it did. */
  readonly authorizationError: string | undefined
}

/** Facts reported by a trusted PROXY protocol (v1/v2) header. */
export interface ProxiedFacts {
  readonly version: 1 | 2
  /** The original client, or undefined for PROXY UNKNOWN / v2 LOCAL. */
  readonly source: { readonly address: string; readonly port: number } | undefined
  readonly destination: { readonly address: string; readonly port: number } | undefined
}

/** A transport failure. `reason` says which kind; a normal close is not an error. */
export class TransportError extends Data.TaggedError("TransportError")<{
  readonly reason: "Connect" | "Reset" | "TlsHandshake" | "Timeout" | "Closed" | "Io" | "ProxyHeader" | "Listen"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * What `readWithin` returns: every chunk received since the last read, `null`
 * at end of stream, `"timeout"` when its time ran out first, `"woken"` when
 * `wake` was called first.
 */
export type ReadResult = ReadonlyArray<Uint8Array> | null | "timeout" | "woken"

/** One connection, already past any PROXY header and implicit-TLS handshake. */
export interface Connection {
  /** Process-unique connection number, for logs. */
  readonly id: number
  /** The socket's peer (for a Unix socket, `Unix`). */
  readonly remote: Endpoint
  readonly local: Endpoint
  /** Present when the listener took a trusted PROXY header. Policies use its source. */
  readonly proxied: ProxiedFacts | undefined
  /** TLS facts once TLS is up (implicit TLS or after `startTls`), else undefined. */
  readonly tls: () => TlsInfo | undefined
  /**
   * Every chunk received since the last read, at least one; waits when none
   * is buffered. `null` once the peer has closed its side and all data was read.
   */
  readonly read: Effect.Effect<ReadonlyArray<Uint8Array> | null, TransportError>
  /**
   * `read` with a deadline and a wake-up: waits at most `ms` milliseconds
   * (`undefined`: no limit; `0` or less: a poll of what the adapter holds
   * now, which on a transport that pulls its reads also starts the read
   * that a later poll returns) and then
   * returns `"timeout"`; returns `"woken"` once `wake` was called. Data, end
   * of stream and errors come first: a timeout or a wake-up is reported
   * only while nothing else is. A timed-out read loses nothing: what arrives
   * later is returned by the next read. The adapter keeps one timer per
   * connection, armed only while such a read waits; nothing is forked.
   */
  readonly readWithin: (ms: number | undefined) => Effect.Effect<ReadResult, TransportError>
  /**
   * Makes the pending `readWithin` return `"woken"`, or, when none is
   * pending, the next one (once). Plain `read`s are not affected. Callable
   * from anywhere (it is not an Effect): a driver's shutdown calls it for
   * every connection it serves.
   */
  readonly wake: () => void
  /**
   * Writes bytes; suspends only while the socket applies back-pressure. With
   * `timeoutMs`, a write still blocked after that long fails with reason
   * `"Timeout"` (the connection stays as it is: the caller closes it).
   */
  readonly write: (bytes: Uint8Array, timeoutMs?: number) => Effect.Effect<void, TransportError>
  /**
   * Upgrades the live connection to TLS: the server side with the listener's
   * certificates, the client side with `options`. Every byte received before
   * the handshake and not yet returned by `read` is DISCARDED (STARTTLS
   * injection, CVE-2011-0411): after this, `read` returns only decrypted data.
   */
  readonly startTls: (options?: ClientTlsOptions) => Effect.Effect<TlsInfo, TransportError>
  /** Flushes pending writes, then closes. Idempotent. */
  readonly close: Effect.Effect<void>
  /**
   * Closes after the peer ended the dialogue (QUIT, answered): once every
   * written byte is with the kernel, the socket is closed at once (the
   * kernel still sends those bytes, then FIN) instead of lingering for the
   * peer's FIN. A peer that resets the connection after reading the last
   * reply (smtp-source does, with SO_LINGER 0) then meets a closed socket,
   * not a live read. A TLS connection closes like `close` (its close_notify
   * must be sent). Idempotent.
   */
  readonly closeAfterQuit: Effect.Effect<void>
  /** Closes at once, dropping pending writes. Idempotent. */
  readonly destroy: Effect.Effect<void>
}

/** PEM material for a server certificate. */
export interface CertificatePem {
  readonly key: string
  readonly cert: string
}

/** Server TLS: a default certificate and more chosen by SNI (exact names or `*.example.com`). */
export interface ServerTlsConfig {
  readonly default: CertificatePem
  readonly sni?: ReadonlyArray<{ readonly names: ReadonlyArray<string>; readonly certificate: CertificatePem }>
  readonly minVersion?: "TLSv1.2" | "TLSv1.3"
}

/** Client TLS options. `rejectUnauthorized: false` records the verification result instead of failing. */
export interface ClientTlsOptions {
  readonly servername?: string
  readonly rejectUnauthorized?: boolean
  /** Extra trusted CAs, PEM. */
  readonly ca?: ReadonlyArray<string>
}

/** PROXY protocol settings of a listener. */
export interface ProxyProtocolOptions {
  /** Peers allowed to send a PROXY header: addresses or CIDR blocks ("127.0.0.1", "10.0.0.0/8", "::1"). */
  readonly trusted: ReadonlyArray<string>
  /** How long to wait for a complete header, ms (default 5000). */
  readonly timeoutMs?: number
}

export interface ListenOptions {
  readonly endpoint: Endpoint
  /** TLS certificates: needed for STARTTLS and implicit TLS. */
  readonly tls?: ServerTlsConfig
  /** Handshake before anything else (port 465 style). */
  readonly implicitTls?: boolean
  /** Expect a PROXY header (v1 or v2, detected) before anything else, from trusted peers only. */
  readonly proxyProtocol?: ProxyProtocolOptions
  readonly backlog?: number
  /**
   * Sets SO_REUSEPORT on a TCP listener, so that several processes bind the
   * same address and the kernel spreads new connections over them (worker
   * processes). Ignored for Unix sockets.
   */
  readonly reusePort?: boolean
  /**
   * Connections at once still waiting for their PROXY header or implicit-TLS
   * handshake (they are not sessions yet, so the edge's limits do not see
   * them); more are closed at once [512].
   */
  readonly maxPending?: number
  /**
   * Called for a connection refused before the handler runs (untrusted or
   * malformed PROXY header, failed implicit TLS handshake), for logging.
   */
  readonly onReject?: (info: { readonly remote: Endpoint; readonly reason: string }) => void
}

/** A bound listener. Closing its scope stops accepting; live connections are the handler's. */
export interface BoundListener {
  readonly endpoint: Endpoint
  /** Swaps the certificates; new handshakes use them, live connections keep theirs. */
  readonly setTls: (config: ServerTlsConfig) => Effect.Effect<void, TransportError>
}

/** Accepts connections. */
export class Listener extends Context.Service<Listener, {
  /**
   * Binds and accepts until the scope closes, running `handler` in its own
   * fiber for every connection, with the services of the fiber that called
   * `listen` (the SMTP edge relies on this: its policies' services reach
   * every session without a context built per connection). The handler owns
   * the connection; it is destroyed when the handler ends, whatever happened.
   */
  readonly listen: (
    options: ListenOptions,
    handler: (connection: Connection) => Effect.Effect<void>
  ) => Effect.Effect<BoundListener, TransportError, Scope.Scope>
}>()("@mailroom/protocol/Listener") {}

export interface ConnectOptions {
  readonly endpoint: Endpoint
  /** Implicit TLS (port 465 style). */
  readonly tls?: ClientTlsOptions
  readonly timeoutMs?: number
  /** Local address to bind before connecting. */
  readonly localAddress?: string
}

/** Dials connections. The connection is destroyed when the scope closes. */
export class Connector extends Context.Service<Connector, {
  readonly connect: (options: ConnectOptions) => Effect.Effect<Connection, TransportError, Scope.Scope>
}>()("@mailroom/protocol/Connector") {}

/** Formats an endpoint for logs: `192.0.2.1:25`, `[2001:db8::1]:25`, `unix:/path`. */
export const formatEndpoint = (e: Endpoint): string =>
  e._tag === "Unix" ? `unix:${e.path}` : e.address.includes(":") ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`
