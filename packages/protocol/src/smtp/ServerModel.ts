/**
 * The values of the server session: its configuration, state, inputs,
 * outputs and the questions it asks. The transition rules that move between
 * these values are all in `ServerSession.ts`.
 *
 * States are named after what the session expects next (`Greeting`,
 * `Command`, `Data`, `Bdat`, `Auth`, `Waiting`, `TlsHandshake`, `Closed`), and
 * data lives only in the phase that owns it.
 *
 * @since 0.1.0
 */
import type * as Sasl from "../auth/Sasl.ts"
import type * as Transport from "../edge/Transport.ts"
import type * as Decision from "../policy/Decision.ts"
import type * as DataDecoder from "../wire/DataDecoder.ts"
import type * as LineDecoder from "../wire/LineDecoder.ts"
import type * as Address from "./Address.ts"
import type * as Params from "./Params.ts"
import type * as Reply from "./Reply.ts"

/** Which policy hooks the driver wants to be asked. Unasked hooks accept. */
export interface AskHooks {
  readonly connect: boolean
  readonly ehlo: boolean
  readonly mail: boolean
  readonly rcpt: boolean
  readonly data: boolean
}

/** Server session configuration. Build with `ServerSession.config({...})`. */
export interface Config {
  /** Our name, in the banner, EHLO reply and 421s. */
  readonly hostname: string
  /** Banner text after the hostname. */
  readonly bannerText: string
  /** SMTP (RFC 5321) or LMTP (RFC 2033: LHLO, one DATA reply per recipient). */
  readonly mode: "smtp" | "lmtp"
  /** Message size cap in bytes, advertised with SIZE and enforced while bytes arrive; 0 = none. */
  readonly maxMessageSize: number
  /** Recipients per message; the ones beyond get 452 4.5.3 (RFC 5321 §4.5.3.1.10). */
  readonly maxRecipients: number
  /** Bad commands (5xx syntax/sequence errors) tolerated before 421 and close. */
  readonly maxBadCommands: number
  /** AUTH failures tolerated per session before 421 and close. */
  readonly maxAuthFailures: number
  /** Command line limit in bytes including CRLF (RFC 5321: 512; +500 is added when DSN is on, RFC 3461 §5). */
  readonly maxLineLength: number
  /** AUTH continuation line limit (RFC 4954 §4: 12288 is sufficient). */
  readonly maxAuthLineLength: number
  /** Received headers above which a message is refused as a loop (554 5.4.6); 0 = no check. */
  readonly maxHops: number
  /** SASL mechanisms offered; empty = no AUTH. */
  readonly authMechanisms: ReadonlyArray<Sasl.Mechanism>
  /** Offer PLAIN/LOGIN without TLS (RFC 4954 §4 wants a configuration without; default false). */
  readonly allowPlaintextAuthWithoutTls: boolean
  /** STARTTLS is offered (the listener has certificates). */
  readonly startTls: boolean
  /** MAIL and AUTH need TLS first (530 5.7.0). */
  readonly requireTls: boolean
  /** MAIL needs AUTH first (530 5.7.0): the submission profile. */
  readonly requireAuth: boolean
  readonly pipelining: boolean
  readonly chunking: boolean
  readonly smtputf8: boolean
  readonly eightBitMime: boolean
  readonly dsn: boolean
  readonly enhancedStatusCodes: boolean
  /** What a bare CR or LF inside message data does (commands always refuse them). */
  readonly bareNewline: DataDecoder.BareNewlinePolicy
  /** Answer VRFY with 252 (true) or 502 (false). */
  readonly vrfy: boolean
  /** Refuse clients that talk before the banner (554 5.5.0) — RFC 5321 §4.3.1. */
  readonly rejectEarlyTalkers: boolean
  /** Milliseconds to wait for a command (RFC 5321 §4.5.3.2.7: at least 5 minutes). */
  readonly commandTimeoutMs: number
  /** Milliseconds to wait for the next data block in DATA/BDAT (§4.5.3.2.5: 3 minutes). */
  readonly dataTimeoutMs: number
  readonly ask: AskHooks
  /** Randomness for SASL challenges and nonces (the driver passes `crypto.getRandomValues`). */
  readonly random: (n: number) => Uint8Array
}

/** Facts about the client given to every policy question. Read-only snapshots. */
export interface Facts {
  /** The client's address as policies should see it: the PROXY source when there is one. */
  readonly remote: Transport.Endpoint
  readonly local: Transport.Endpoint
  readonly proxied: Transport.ProxiedFacts | undefined
  readonly hello: { readonly verb: "EHLO" | "HELO" | "LHLO"; readonly domain: string } | undefined
  readonly tls: Transport.TlsInfo | undefined
  readonly auth: { readonly authcid: string; readonly authzid: string | undefined } | undefined
  /** RFC 3848 / RFC 6531 protocol name for Received: ESMTPSA, LMTP, UTF8SMTPS, ... */
  readonly protocol: string
  readonly sender: Address.Mailbox | null | undefined
  readonly mailParams: Params.MailParams | undefined
  readonly recipients: ReadonlyArray<Address.Mailbox>
}

/** What the session hands the driver once a whole message has arrived. */
export interface Message {
  readonly sender: Address.Mailbox | null
  readonly mailParams: Params.MailParams
  readonly recipients: ReadonlyArray<{ readonly mailbox: Address.Mailbox; readonly params: Params.RcptParams }>
  /** The whole message, CRLF line ends (BINARYMIME: as sent). */
  readonly data: Uint8Array
}

/** A question to the driver. The session waits for the matching answer input. */
export type Question =
  | { readonly _tag: "Connect"; readonly facts: Facts }
  | { readonly _tag: "Ehlo"; readonly facts: Facts; readonly verb: "EHLO" | "HELO" | "LHLO"; readonly domain: string }
  | { readonly _tag: "Mail"; readonly facts: Facts; readonly sender: Address.Mailbox | null; readonly params: Params.MailParams }
  | { readonly _tag: "Rcpt"; readonly facts: Facts; readonly recipient: Address.Mailbox; readonly params: Params.RcptParams }
  | { readonly _tag: "Data"; readonly facts: Facts }
  /** A credentials lookup for SASL; answer with `Credentials`. */
  | { readonly _tag: "Auth"; readonly facts: Facts; readonly mechanism: Sasl.Mechanism; readonly request: Sasl.CredentialRequest }
  /** The whole message: run the message policies, hand it to the queue, answer with `Delivered`. */
  | { readonly _tag: "Message"; readonly facts: Facts; readonly message: Message }

/** Inputs. `now` is milliseconds on the driver's clock, passed to `step`. */
export type Input =
  /** Bytes from the client. */
  | { readonly _tag: "Received"; readonly bytes: Uint8Array }
  /** The client closed its side. */
  | { readonly _tag: "Eof" }
  /** Answer to Connect/Ehlo/Mail/Rcpt/Data. */
  | { readonly _tag: "Decision"; readonly decision: Decision.Decision }
  /** Answer to Auth. */
  | { readonly _tag: "Credentials"; readonly answer: Sasl.CredentialAnswer }
  /**
   * Answer to Message: in SMTP one reply; in LMTP one per accepted recipient,
   * in order (a single reply is repeated for every recipient).
   */
  | { readonly _tag: "Delivered"; readonly replies: ReadonlyArray<Reply.Reply> }
  /** The handshake the session asked for with `StartTls` succeeded. */
  | { readonly _tag: "TlsEstablished"; readonly tls: Transport.TlsInfo }
  /** It failed: the connection is unusable. */
  | { readonly _tag: "TlsFailed"; readonly reason: string }
  /** The deadline named by `deadline(state)` passed. */
  | { readonly _tag: "Timeout" }
  /** The server is shutting down: finish a message in flight, then 421. */
  | { readonly _tag: "Shutdown" }

/** Outputs, in the order the driver must perform them. */
export type Output =
  /** Bytes to write (all replies of one step in one write). */
  | { readonly _tag: "Send"; readonly bytes: Uint8Array }
  /** Flush what was sent, then run the server-side TLS handshake and feed `TlsEstablished`/`TlsFailed`. */
  | { readonly _tag: "StartTls" }
  /** Ask the driver; the session waits for the answer. At most one per step, always last but `Close`. */
  | { readonly _tag: "Ask"; readonly question: Question }
  /** Flush, then close the connection. Always the last output. */
  | { readonly _tag: "Close"; readonly reason: CloseReason }
  /** Something worth a log line (a refused command, a transaction). */
  | { readonly _tag: "Event"; readonly event: Event }

export type CloseReason = "quit" | "eof" | "timeout" | "errors" | "rejected" | "shutdown" | "tls-failed" | "early-talker" | "auth-failures"

export type Event =
  | { readonly _tag: "CommandRejected"; readonly command: string; readonly reply: Reply.Reply }
  | { readonly _tag: "AuthSucceeded"; readonly mechanism: Sasl.Mechanism; readonly authcid: string }
  | { readonly _tag: "AuthFailed"; readonly mechanism: Sasl.Mechanism; readonly reply: Reply.Reply }
  | { readonly _tag: "MessageRefused"; readonly reply: Reply.Reply; readonly size: number }
  | { readonly _tag: "TlsStarted" }

/** The open mail transaction (after a successful MAIL). */
export interface Transaction {
  readonly sender: Address.Mailbox | null
  readonly mailParams: Params.MailParams
  readonly recipients: ReadonlyArray<{ readonly mailbox: Address.Mailbox; readonly params: Params.RcptParams }>
  /** BDAT chunks received so far (CHUNKING). */
  readonly chunks: ReadonlyArray<Uint8Array>
  readonly size: number
  /** BDAT was used in this transaction (DATA is then refused). */
  readonly bdat: boolean
  /** A BDAT chunk failed: later chunks are read, dropped and answered with this. */
  readonly failed: Reply.Reply | undefined
}

/** What the session is waiting for while a question is out. */
export type Awaiting =
  | { readonly _tag: "Connect" }
  | { readonly _tag: "Ehlo"; readonly verb: "EHLO" | "HELO" | "LHLO"; readonly domain: string }
  | { readonly _tag: "Mail"; readonly sender: Address.Mailbox | null; readonly params: Params.MailParams }
  | { readonly _tag: "Rcpt"; readonly recipient: Address.Mailbox; readonly params: Params.RcptParams }
  | { readonly _tag: "Data" }
  | { readonly _tag: "Auth"; readonly mechanism: Sasl.Mechanism; readonly sasl: Sasl.ServerState }
  | { readonly _tag: "Message"; readonly recipients: number }

export type Phase =
  /** Waiting for the connect decision; no banner yet. */
  | { readonly _tag: "Greeting" }
  | { readonly _tag: "Command" }
  | { readonly _tag: "Data"; readonly data: DataDecoder.DataState; readonly chunks: ReadonlyArray<Uint8Array> }
  /** Reading a BDAT chunk; when `refused` is set its bytes are dropped and that reply sent after them. */
  | {
    readonly _tag: "Bdat"
    readonly remaining: number
    readonly last: boolean
    readonly chunk: ReadonlyArray<Uint8Array>
    readonly refused: Reply.Reply | undefined
  }
  | { readonly _tag: "Auth"; readonly mechanism: Sasl.Mechanism; readonly sasl: Sasl.ServerState }
  | { readonly _tag: "Waiting"; readonly awaiting: Awaiting }
  | { readonly _tag: "TlsHandshake" }
  | { readonly _tag: "Closed" }

export interface State {
  readonly config: Config
  readonly remote: Transport.Endpoint
  readonly local: Transport.Endpoint
  readonly proxied: Transport.ProxiedFacts | undefined
  readonly phase: Phase
  /** Received bytes not consumed yet. */
  readonly buffer: Uint8Array
  readonly line: LineDecoder.LineState
  readonly hello: { readonly verb: "EHLO" | "HELO" | "LHLO"; readonly domain: string } | undefined
  readonly tls: Transport.TlsInfo | undefined
  readonly auth: { readonly authcid: string; readonly authzid: string | undefined } | undefined
  readonly transaction: Transaction | undefined
  readonly badCommands: number
  readonly authFailures: number
  /** Bytes arrived before the banner. */
  readonly earlyTalker: boolean
  /** Shutdown was requested: close after the message in flight. */
  readonly shuttingDown: boolean
  /** The named deadline the driver sleeps on, ms on the driver's clock. */
  readonly deadline: { readonly name: "command" | "data"; readonly at: number } | undefined
}
