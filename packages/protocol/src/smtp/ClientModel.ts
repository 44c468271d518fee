/**
 * The values of the client session (the sending side of SMTP and LMTP): its
 * configuration, the message it is asked to send, the per-recipient result,
 * its state, inputs and outputs. The transition rules that move between these
 * values are all in `ClientSession.ts`.
 *
 * Phases are named after what the session expects next (`Banner`, `Hello`,
 * `StartTls`, `TlsHandshake`, `Auth`, `Ready`, `Transaction`, `Reset`,
 * `Quitting`, `Closed`), and data lives only in the phase that owns it.
 *
 * Deliberately not here: MX lookup, connection pooling and the downgrade of
 * 8-bit or UTF-8 messages for servers that lack the extension (the relay's
 * decisions), and certificate checks (the connector's).
 *
 * @since 0.1.0
 */
import type * as SaslClient from "../auth/Client.ts"
import type * as Sasl from "../auth/Sasl.ts"
import type * as Transport from "../edge/Transport.ts"
import type * as Extensions from "./Extensions.ts"
import type * as Params from "./Params.ts"
import type * as Reply from "./Reply.ts"

/** SMTP AUTH credentials for a smarthost or submission server. */
export interface AuthConfig {
  readonly authcid: string
  /** Authorization identity, when different from `authcid` (PLAIN and SCRAM carry it). */
  readonly authzid?: string | undefined
  readonly password: string
  /** Force a mechanism; otherwise the best offered: SCRAM-SHA-256 > CRAM-MD5 > PLAIN > LOGIN. */
  readonly mechanism?: Sasl.Mechanism | undefined
}

/** Client session configuration. Build with `ClientSession.config({...})`. */
export interface Config {
  /** Our name, sent with EHLO/HELO/LHLO: a domain or an address literal. */
  readonly hostname: string
  /** SMTP (RFC 5321) or LMTP (RFC 2033: LHLO, one final reply per recipient). */
  readonly mode: "smtp" | "lmtp"
  /**
   * STARTTLS: never, when offered, or always (a server that does not offer it,
   * or refuses it, fails the session with a transient `421 4.7.10`).
   */
  readonly tls: "none" | "opportunistic" | "required"
  /** The connection is already TLS when the session starts (port 465). */
  readonly implicitTls: boolean
  readonly auth: AuthConfig | undefined
  /** Never send PLAIN or LOGIN over plaintext (default true). */
  readonly authRequireTls: boolean
  /** Wait for the banner, EHLO, STARTTLS, AUTH, MAIL, RCPT, RSET replies (RFC 5321 §4.5.3.2: 5 minutes). */
  readonly commandTimeoutMs: number
  /** Wait for the 354 to DATA (§4.5.3.2.3: 2 minutes). */
  readonly dataInitTimeoutMs: number
  /** Wait for the final reply after the body (§4.5.3.2.6: 10 minutes). */
  readonly dataTimeoutMs: number
  /** Wait for the 221 after QUIT before closing anyway. */
  readonly quitTimeoutMs: number
  /** Randomness for the SCRAM client nonce (the driver passes `crypto.getRandomValues`). */
  readonly random: (n: number) => Uint8Array
  /** Send with `BDAT n LAST` when the server offers CHUNKING even for text bodies. */
  readonly preferChunking: boolean
}

/** One recipient of a message to send. Addresses are plain text `local@domain`. */
export interface Recipient {
  readonly address: string
  /** DSN NOTIFY (RFC 3461), sent when the server offers DSN. */
  readonly notify?: ReadonlyArray<Params.Notify> | undefined
  /** DSN ORCPT, sent when the server offers DSN. */
  readonly orcpt?: { readonly addrType: string; readonly address: string } | undefined
}

/** A message to send: the `Send` input. */
export interface Message {
  /** The reverse-path as `local@domain`; `""` is the null sender `<>`. */
  readonly sender: string
  readonly recipients: ReadonlyArray<Recipient>
  /** The whole message. Line ends are normalised to CRLF unless the body is BINARYMIME. */
  readonly data: Uint8Array
  readonly ret?: "FULL" | "HDRS" | undefined
  readonly envid?: string | undefined
  /** The declared body type; 8-bit bytes in `data` need 8BITMIME whatever is declared. */
  readonly body?: Params.Body | undefined
  /** The message needs SMTPUTF8 (UTF-8 headers) even if every address is ASCII. */
  readonly smtputf8?: boolean | undefined
}

/** What happened to one recipient. */
export type Outcome = "delivered" | "transient" | "permanent"

export interface RecipientResult {
  readonly address: string
  readonly outcome: Outcome
  /** The server's reply, or a local one when nothing was sent or the connection failed. */
  readonly reply: Reply.Reply
}

/** The result of one transaction, in the order of the `Send` inputs. */
export interface Result {
  /** One per recipient of the message, in its order. The outcome is authoritative; the reply explains it. */
  readonly recipients: ReadonlyArray<RecipientResult>
  readonly tls: Transport.TlsInfo | undefined
  /** The authenticated user name, when AUTH was done. */
  readonly auth: string | undefined
  /**
   * The body went out (after a 354, or with BDAT). When a recipient is
   * transient and this is set, the server may have delivered the message
   * anyway (a lost final reply): a retry may duplicate it.
   */
  readonly dataSent: boolean
  /** Nothing of this transaction was sent: it was refused locally. */
  readonly local: boolean
}

/** Why the session ended early. */
export type FailureReason =
  /** Bad configuration (EHLO name, AUTH fields): nothing was sent. */
  | "local"
  /** The banner or the EHLO/HELO/LHLO reply was negative (not 421). */
  | "rejected"
  /** TLS is required and the server does not offer it, or refused STARTTLS. */
  | "tls-unavailable"
  /** The TLS handshake failed. */
  | "tls-failed"
  /** AUTH could not be done or was refused. */
  | "auth"
  /** The server sent 421: it is closing the connection. */
  | "server-closed"
  /** The connection closed under us. */
  | "connection-lost"
  | "timeout"
  /** A reply broke the grammar of RFC 5321 §4.2. */
  | "malformed"
  /** Bytes arrived while idle (typically a 421 of a server that timed us out). */
  | "stale"

export interface Failure {
  readonly reason: FailureReason
  /** The server's reply, or a local one (`421 4.4.2`, `451 4.3.0`, `421 4.7.10`, ...). */
  readonly reply: Reply.Reply
}

export type CloseReason = "quit" | FailureReason

/** Inputs. `now` is milliseconds on the driver's clock, passed to `step`. */
export type Input =
  | { readonly _tag: "Received"; readonly bytes: Uint8Array }
  /** The server closed its side. */
  | { readonly _tag: "Eof" }
  /** The handshake the session asked for with `StartTls` succeeded. */
  | { readonly _tag: "TlsEstablished"; readonly tls: Transport.TlsInfo }
  | { readonly _tag: "TlsFailed"; readonly reason: string }
  /** The deadline named by `deadline(state)` passed. */
  | { readonly _tag: "Timeout" }
  /** Send a message: started at once when `Ready`, else queued; answered by one `Result`. */
  | { readonly _tag: "Send"; readonly message: Message }
  /** Finish what is queued, then QUIT, wait for the 221 (bounded) and close. */
  | { readonly _tag: "Quit" }

export type Event =
  /** EHLO was refused with 500/502: the session goes on with HELO and no extensions. */
  | { readonly _tag: "HeloFallback"; readonly reply: Reply.Reply }
  | { readonly _tag: "TlsStarted"; readonly tls: Transport.TlsInfo }
  /** Opportunistic TLS was not used: not offered, or STARTTLS refused (with the reply). */
  | { readonly _tag: "TlsSkipped"; readonly reply: Reply.Reply | undefined }
  | { readonly _tag: "Authenticated"; readonly mechanism: Sasl.Mechanism }

/**
 * Outputs, in the order the driver must perform them: at most one `Send`,
 * always first (every byte of a step in one write, so a pipelined batch is
 * one write); `StartTls` and `Close` are always last.
 */
export type Output =
  | { readonly _tag: "Send"; readonly bytes: Uint8Array }
  /** Flush what was sent, run the client-side TLS handshake, feed `TlsEstablished`/`TlsFailed`. */
  | { readonly _tag: "StartTls" }
  /** Idle: the next `Send` is started at once. */
  | { readonly _tag: "Ready" }
  | { readonly _tag: "Result"; readonly result: Result }
  /** The session cannot go on; `Close` follows (after a QUIT exchange when the connection is sane). */
  | { readonly _tag: "Failed"; readonly failure: Failure }
  /** Close the connection. Always the last output. */
  | { readonly _tag: "Close"; readonly reason: CloseReason }
  | { readonly _tag: "Event"; readonly event: Event }

/** A reply the open transaction still waits for, in the order they will come. */
export type Expect =
  | { readonly _tag: "Mail" }
  /** The reply to the RCPT of recipient `index` (of the message). */
  | { readonly _tag: "Rcpt"; readonly index: number }
  | { readonly _tag: "Data" }
  /** A final reply after the body: for all accepted recipients (SMTP, `index` undefined) or one (LMTP). */
  | { readonly _tag: "Final"; readonly index: number | undefined }
  /** The reply to a lone "." sent after a 354 that came when no recipient was accepted. */
  | { readonly _tag: "Dot" }

/** Where one recipient stands. */
export type RecipientStatus =
  /** Not answered yet (or not sent yet). */
  | { readonly _tag: "Pending" }
  /** RCPT accepted; the final reply is still to come. */
  | { readonly _tag: "Accepted" }
  | { readonly _tag: "Done"; readonly outcome: Outcome; readonly reply: Reply.Reply }

/** The open transaction. */
export interface Transaction {
  readonly message: Message
  /** The printed MAIL command, CRLF included. */
  readonly mail: string
  /** The printed RCPT commands, CRLF included, with the index of their recipient in the message. */
  readonly rcpts: ReadonlyArray<{ readonly index: number; readonly line: string }>
  readonly statuses: ReadonlyArray<RecipientStatus>
  readonly expect: ReadonlyArray<Expect>
  /** MAIL's reply: undefined until it came. */
  readonly mailOk: boolean | undefined
  /** RCPT commands sent so far (all of them at once with PIPELINING). */
  readonly rcptsSent: number
  /** DATA or BDAT was sent. */
  readonly dataIssued: boolean
  readonly dataSent: boolean
  /** Every final reply was read: the server closed the transaction itself. */
  readonly completed: boolean
  readonly pipelining: boolean
  /** Send the body with `BDAT n LAST` instead of DATA. */
  readonly chunking: boolean
  /** BODY=BINARYMIME: the bytes go out as they are. */
  readonly binary: boolean
}

export type Phase =
  /** Before `start`. */
  | { readonly _tag: "Initial" }
  | { readonly _tag: "Banner" }
  | { readonly _tag: "Hello"; readonly verb: "EHLO" | "HELO" | "LHLO" }
  | { readonly _tag: "StartTls" }
  | { readonly _tag: "TlsHandshake" }
  | { readonly _tag: "Auth"; readonly mechanism: Sasl.Mechanism; readonly sasl: SaslClient.ClientState }
  | { readonly _tag: "Ready" }
  | { readonly _tag: "Transaction"; readonly transaction: Transaction }
  /** Waiting for the reply to RSET after a failed transaction. */
  | { readonly _tag: "Reset" }
  /** Part of an unsolicited reply arrived while idle: waiting for the rest, then closing. */
  | { readonly _tag: "Stale" }
  /** QUIT sent; waiting for the 221, then `Close` with `reason`. */
  | { readonly _tag: "Quitting"; readonly reason: CloseReason }
  | { readonly _tag: "Closed"; readonly reason: CloseReason }

export interface State {
  readonly config: Config
  readonly phase: Phase
  /** Received bytes not consumed yet. */
  readonly buffer: Uint8Array
  readonly tls: Transport.TlsInfo | undefined
  /** The verb that was accepted and the server's greeting line, once a hello succeeded. */
  readonly hello: { readonly verb: "EHLO" | "HELO" | "LHLO"; readonly greeting: string } | undefined
  /** What the server advertised in its last EHLO/LHLO reply (empty after HELO). */
  readonly extensions: Extensions.Extensions
  readonly auth: { readonly mechanism: Sasl.Mechanism; readonly authcid: string } | undefined
  /** Messages waiting for the session to be ready. */
  readonly queue: ReadonlyArray<Message>
  /** `Quit` was asked: QUIT once the queue is empty. */
  readonly quitRequested: boolean
  /** Why the session ended, once it has: later `Send`s are answered with this. */
  readonly failure: Failure | undefined
  /** The deadline the driver sleeps on, ms on the driver's clock. */
  readonly deadline: { readonly name: "command" | "data-init" | "data" | "quit"; readonly at: number } | undefined
}
