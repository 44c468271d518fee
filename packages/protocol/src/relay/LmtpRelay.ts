/**
 * The LMTP relay (RFC 2033, slimta's `LmtpRelay`): hands envelopes to a
 * local delivery agent such as Dovecot's LMTP server, over TCP or a Unix
 * socket. LMTP answers once per accepted recipient after the body, so one
 * mailbox can be over quota (transient) or unknown (permanent) while the
 * others are delivered: every recipient gets its own result.
 *
 * It is the static relay in LMTP mode (`LHLO`, no HELO fallback), with
 * connection pooling; TLS is off by default (`tls: "none"`), since LMTP
 * normally runs on the same host or a trusted network, and can be turned on
 * like the static relay's.
 *
 * What it deliberately does not do: MX or DNS lookups beyond the endpoint's
 * own name, or mailbox logic (the LMTP server's job).
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Dns from "effect/net/Dns"
import type * as Scope from "effect/Scope"
import type * as Transport from "../edge/Transport.ts"
import * as Relay from "./Relay.ts"
import * as StaticRelay from "./StaticRelay.ts"

/** Where the LMTP server listens: host and port (default 24), or a Unix socket path. */
export type Endpoint =
  | { readonly host: string; readonly port?: number | undefined }
  | { readonly path: string }

/** LMTP relay settings: the static relay's, with an endpoint and no TLS by default. */
export interface Options extends Omit<StaticRelay.CommonOptions, "tls"> {
  readonly endpoint: Endpoint
  /** Default `none`. */
  readonly tls?: "none" | "opportunistic" | "required" | undefined
}

/** An LMTP relay (see the module header); the pool lives in the current scope. */
export const make = (
  options: Options
): Effect.Effect<Relay.Relay["Service"], never, Scope.Scope | Transport.Connector | Dns.Dns> => {
  const e = options.endpoint
  const target: StaticRelay.Target = "path" in e
    ? { _tag: "Unix", path: e.path }
    : { _tag: "Host", host: e.host, port: e.port ?? 24 }
  return StaticRelay.makeFixed(target, { ...options, tls: options.tls ?? "none" }, "lmtp")
}

/** `make` as a layer providing `Relay`. */
export const layer = (options: Options): Layer.Layer<Relay.Relay, never, Transport.Connector | Dns.Dns> =>
  Layer.effect(Relay.Relay, make(options))
