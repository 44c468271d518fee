/**
 * The HTTP edge: a web-standard `(Request) => Promise<Response>` handler
 * that takes messages over HTTP, runs the same validators as the SMTP edge,
 * and answers only after the queue did. It speaks slimta's `WsgiEdge`
 * protocol and adds a JSON endpoint.
 *
 * ## `POST <path>` (default `/`), `Content-Type: message/rfc822`
 *
 * - `X-Envelope-Sender`: base64 of the UTF-8 sender; missing or empty is the
 *   null sender `<>`.
 * - `X-Envelope-Recipient`: base64 of one UTF-8 recipient; repeated, or
 *   comma-joined (`a, b` as fetch and WSGI join repeats; `;` also splits).
 * - `X-Ehlo`: the client's name (default `[address]`).
 * - The body is the message; bare LF and bare CR become CRLF.
 *
 * ## `POST <jsonPath>` (default `/send`), `Content-Type: application/json`
 *
 * - `{ "sender": "a@x", "recipients": ["b@y"], "raw": "<message>", "encoding": "base64"? }`, or
 * - `{ "from": "Alice <a@x>", "to": [...], "cc"?, "bcc"?, "replyTo"?, "subject", "text"?, "html"?,
 *    "attachments"?: [{ "filename", "contentType", "content": "<base64>" }], "sender"? }`,
 *   composed into a MIME message (see `Mime`) with `Date` and `Message-ID`.
 *
 * ## Answers
 *
 * Every answer carries `X-Smtp-Reply: 250; message="2.6.0 Ok: queued as …"`
 * (plus `; command="RCPT"` for a refusal at a stage) and a JSON body:
 * `{ "id", "ids", "reply" }` on success, `{ "error", "reply"? }` otherwise.
 *
 * | condition | status |
 * | --- | --- |
 * | queued (SMTP 2xx) | 200 |
 * | another path | 404 |
 * | another method | 405, `Allow: POST` |
 * | no or bad credentials (SMTP 530/535) | 401, `WWW-Authenticate` |
 * | another content type | 415 |
 * | Content-Length or body over the limit, SMTP 552 | 413 (the body is never buffered past the limit) |
 * | CR/LF/NUL in a header value, bad base64 or UTF-8, no recipients, a bad address, bad JSON, SMTP 500/501/5.5.x/5.1.x | 400 |
 * | any other SMTP 4xx (policy, queue, storage) | 503 |
 * | SMTP 5.7.x refusal (policy, SPF, DNSBL) | 403 |
 * | any other SMTP 5xx (content rejected) | 422 |
 *
 * Nothing is queued unless the answer is 200. The one promise holds: 200
 * only after the queue answered `Queued` (or a proxy queue relayed it).
 *
 * Authentication: `Authorization: Basic` (user and password) or `Bearer
 * <user>.<secret>` (split at the last dot; or the whole token is the
 * password of `bearerUser` when that is set), checked with the credentials
 * service (`VerifyPassword`), then the `auth` validator.
 *
 * What it deliberately does not do: listen (a runtime adapter serves the
 * handler, e.g. `NodeHttp`), TLS, rate-limit, or add trace headers (queue
 * policies do).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Base64 from "../auth/Base64.ts"
import * as CredentialsService from "../auth/CredentialsService.ts"
import * as Envelope from "../envelope/Envelope.ts"
import * as Headers from "../envelope/Headers.ts"
import * as Mime from "../envelope/Mime.ts"
import type * as Decision from "../policy/Decision.ts"
import type * as Validators from "../policy/Validators.ts"
import * as Queue from "../queue/Queue.ts"
import * as Address from "../smtp/Address.ts"
import * as Params from "../smtp/Params.ts"
import * as Reply from "../smtp/Reply.ts"
import type { Facts } from "../smtp/ServerModel.ts"
import * as Bytes from "../wire/Bytes.ts"
import * as HttpSubmission from "./HttpSubmission.ts"
import type * as Transport from "./Transport.ts"

/** What the server knows about the peer (the adapter passes it with each request). */
export interface ClientInfo {
  readonly address: string
  readonly port?: number | undefined
  readonly local?: Transport.Endpoint | undefined
  /** Present for HTTPS. */
  readonly tls?: Transport.TlsInfo | undefined
}

/** The handler an adapter serves. */
export type Handler = (request: Request, client?: ClientInfo) => Promise<Response>

export interface Options<R = never> {
  /** Our hostname: the envelope's receiver, Message-ID domain. */
  readonly hostname: string
  readonly queue: Queue.Queue["Service"]
  /** Checks passwords; without it, credentials are refused. */
  readonly credentials?: CredentialsService.CredentialsService["Service"] | undefined
  readonly validators?: Validators.Validators<R> | undefined
  /** Runs one request's Effect with the services `R` (e.g. `Effect.runPromiseWith(context)`). */
  readonly run: <A>(effect: Effect.Effect<A, never, R>) => Promise<A>
  /** The message/rfc822 endpoint [`/`]. */
  readonly path?: string | undefined
  /** The JSON endpoint [`/send`]; `null` turns it off. */
  readonly jsonPath?: string | null | undefined
  /** Refuse requests without valid credentials [false]. */
  readonly requireAuth?: boolean | undefined
  /** Largest message, in bytes [25 MiB]. */
  readonly maxSize?: number | undefined
  /** Most recipients per request [1000]. */
  readonly maxRecipients?: number | undefined
  /** The Basic realm [mailroom]. */
  readonly realm?: string | undefined
  /** Check a Bearer token as the password of this user (instead of `<user>.<secret>`). */
  readonly bearerUser?: string | undefined
  /** Random bytes for ids and MIME boundaries [crypto.getRandomValues]. */
  readonly random?: ((n: number) => Uint8Array) | undefined
}

const defaultRandom = (n: number): Uint8Array => {
  const out = new Uint8Array(n)
  globalThis.crypto.getRandomValues(out)
  return out
}

// ---------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------

/** The HTTP status for an SMTP reply (see the table in the module header). */
export const statusFor = (r: Reply.Reply): number => {
  if (r.code < 400) return 200
  if (r.code === 530 || r.code === 535) return 401
  if (r.code < 500) return 503
  if (r.code === 552) return 413
  const e = r.enhanced ?? ""
  if (r.code === 500 || r.code === 501 || e.startsWith("5.5.") || e.startsWith("5.1.")) return 400
  if (e.startsWith("5.7.")) return 403
  return 422
}

const headerSafe = (s: string): string => s.replace(/[\u0000-\u001f\u007f-\uffff]/g, "?")

/** The `X-Smtp-Reply` value: `250; message="2.6.0 Message accepted for delivery"[; command="RCPT"]`. */
export const smtpReplyHeader = (r: Reply.Reply, command?: string): string => {
  const text = `${r.enhanced ? r.enhanced + " " : ""}${r.lines.join(" ")}`.trim()
  const q = (s: string) => `"${headerSafe(s).replace(/[\\"]/g, (c) => "\\" + c)}"`
  return `${r.code}; message=${q(text)}${command ? `; command=${q(command)}` : ""}`
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store", ...headers }
  })

/** A refusal carrying an SMTP reply. */
const refuse = (reply: Reply.Reply, command?: string, extra: Record<string, string> = {}): Response =>
  json(statusFor(reply), { error: Reply.toString(reply), reply: Reply.toString(reply) }, {
    "X-Smtp-Reply": smtpReplyHeader(reply, command),
    ...extra
  })

/** A refusal of the HTTP request itself (no SMTP meaning beyond "bad request"). */
const badRequest = (error: string): Response =>
  json(400, { error }, { "X-Smtp-Reply": smtpReplyHeader(Reply.make(501, "5.5.4", error)) })

const tooLarge = (): Response =>
  json(413, { error: "message too large" }, { "X-Smtp-Reply": smtpReplyHeader(Reply.messageTooBig) })

const temporaryProblem = Reply.make(451, "4.3.0", "Error: temporary local problem")

// ---------------------------------------------------------------------------
// The request body
// ---------------------------------------------------------------------------

class Bad {
  readonly response: Response
  constructor(response: Response) {
    this.response = response
  }
}

const mediaType = (h: string | null): string | undefined => h?.split(";")[0]?.trim().toLowerCase()

/** Reads at most `max` bytes of the body; more gives "TooLarge" and cancels the stream. */
const readBody = (
  body: ReadableStream<Uint8Array> | null,
  max: number
): Effect.Effect<{ readonly _tag: "Ok"; readonly bytes: Uint8Array } | { readonly _tag: "TooLarge" } | { readonly _tag: "Failed" }> =>
  Effect.gen(function*() {
    if (body === null) return { _tag: "Ok", bytes: Bytes.empty } as const
    const reader = body.getReader()
    const chunks: Array<Uint8Array> = []
    let total = 0
    for (;;) {
      const next = yield* Effect.tryPromise(() => reader.read()).pipe(Effect.orElseSucceed(() => undefined))
      if (next === undefined) return { _tag: "Failed" } as const
      if (next.done) break
      total += next.value.length
      if (total > max) {
        yield* Effect.promise(() => reader.cancel().catch(() => undefined))
        return { _tag: "TooLarge" } as const
      }
      chunks.push(next.value)
    }
    return { _tag: "Ok", bytes: Bytes.concat(chunks) } as const
  })

// ---------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------

type AuthResult =
  | { readonly _tag: "Anonymous" }
  | { readonly _tag: "Authenticated"; readonly authcid: string; readonly mechanism: string }
  | { readonly _tag: "Refused"; readonly reply: Reply.Reply }

/** Makes the handler (see the module header). */
export const make = <R = never>(options: Options<R>): Handler => {
  const path = options.path ?? "/"
  const jsonPath = options.jsonPath === null ? undefined : options.jsonPath ?? "/send"
  const maxSize = options.maxSize ?? 25 * 1024 * 1024
  const maxRecipients = options.maxRecipients ?? 1000
  const random = options.random ?? defaultRandom
  const validators: Validators.Validators<R> = options.validators ?? {}
  const realm = (options.realm ?? "mailroom").replace(/["\\\r\n]/g, "")
  const challenge = `Basic realm="${realm}", charset="UTF-8", Bearer realm="${realm}"`

  const authenticate = (request: Request): Effect.Effect<AuthResult> =>
    Effect.gen(function*() {
      const h = request.headers.get("authorization")
      if (h === null) {
        return options.requireAuth === true ? { _tag: "Refused", reply: Reply.authRequired } : { _tag: "Anonymous" }
      }
      const m = /^(Basic|Bearer)\s+(\S+)\s*$/i.exec(h)
      let authcid: string | undefined
      let password: string | undefined
      let mechanism = "HTTP-BASIC"
      if (m && m[1]!.toLowerCase() === "basic") {
        const decoded = Base64.decode(m[2]!)
        const text = decoded ? HttpSubmission.decodeUtf8(decoded) : undefined
        const colon = text?.indexOf(":") ?? -1
        if (text !== undefined && colon > 0) {
          authcid = text.slice(0, colon)
          password = text.slice(colon + 1)
        }
      } else if (m) {
        mechanism = "HTTP-BEARER"
        const token = m[2]!
        if (options.bearerUser !== undefined) {
          authcid = options.bearerUser
          password = token
        } else {
          const dot = token.lastIndexOf(".")
          if (dot > 0 && dot < token.length - 1) {
            authcid = token.slice(0, dot)
            password = token.slice(dot + 1)
          }
        }
      }
      if (authcid === undefined || password === undefined || options.credentials === undefined || HttpSubmission.hasControl(authcid)) {
        return { _tag: "Refused", reply: Reply.invalidCredentials }
      }
      const answer = yield* options.credentials.answer({ _tag: "VerifyPassword", authcid, authzid: undefined, password })
      if (answer._tag !== "Verified" || !answer.ok) return { _tag: "Refused", reply: Reply.invalidCredentials }
      return { _tag: "Authenticated", authcid, mechanism }
    })

  const process = (request: Request, client: ClientInfo): Effect.Effect<Response, Bad, R> =>
    Effect.gen(function*() {
      let url: URL
      try {
        url = new URL(request.url)
      } catch {
        return badRequest("bad request URL")
      }
      const kind = url.pathname === path ? "rfc822" : jsonPath !== undefined && url.pathname === jsonPath ? "json" : undefined
      if (kind === undefined) return json(404, { error: "not found" })
      if (request.method !== "POST") return json(405, { error: "method not allowed" }, { Allow: "POST" })
      for (const name of ["x-envelope-sender", "x-envelope-recipient", "x-ehlo", "content-type", "authorization"]) {
        const v = request.headers.get(name)
        if (v !== null && /[\r\n\0]/.test(v)) return badRequest(`${name}: CR, LF or NUL in the value`)
      }
      const https = url.protocol === "https:" || client.tls !== undefined
      const remote: Transport.Endpoint = { _tag: "Inet", address: client.address, port: client.port ?? 0 }
      let facts: Facts = {
        remote,
        local: client.local ?? { _tag: "Inet", address: "0.0.0.0", port: 0 },
        proxied: undefined,
        hello: undefined,
        tls: client.tls,
        auth: undefined,
        protocol: https ? "HTTPS" : "HTTP",
        sender: undefined,
        mailParams: undefined,
        recipients: []
      }
      const ask = (e: Effect.Effect<Decision.Decision, never, R> | undefined, command: string): Effect.Effect<void, Bad, R> =>
        e === undefined
          ? Effect.void
          : Effect.flatMap(e, (d) => (d._tag === "Reject" ? Effect.fail(new Bad(refuse(d.reply, command))) : Effect.void))

      yield* ask(validators.connect?.(facts), "CONNECT")

      // credentials, before any body byte is read
      const auth = yield* authenticate(request)
      if (auth._tag === "Refused") {
        return refuse(auth.reply, "AUTH", { "WWW-Authenticate": challenge })
      }
      if (auth._tag === "Authenticated") {
        if (validators.auth) {
          const d = yield* validators.auth(facts, { mechanism: auth.mechanism, authcid: auth.authcid, authzid: undefined })
          if (d._tag === "Reject") return refuse(Reply.invalidCredentials, "AUTH", { "WWW-Authenticate": challenge })
        }
        facts = { ...facts, auth: { authcid: auth.authcid, authzid: undefined } }
      }

      const type = mediaType(request.headers.get("content-type"))
      if (kind === "rfc822" && type !== undefined && type !== "message/rfc822") {
        return json(415, { error: "unsupported media type: use message/rfc822" }, { Accept: "message/rfc822" })
      }
      if (kind === "json" && type !== "application/json") {
        return json(415, { error: "unsupported media type: use application/json" }, { Accept: "application/json" })
      }
      const limit = kind === "json" ? Math.ceil(maxSize * 4 / 3) + 65536 : maxSize
      const lengthHeader = request.headers.get("content-length")
      if (lengthHeader !== null) {
        if (!/^\d{1,15}$/.test(lengthHeader.trim())) return badRequest("bad Content-Length")
        if (Number(lengthHeader) > limit) return tooLarge()
      }

      const now = yield* Clock.currentTimeMillis
      let submission: HttpSubmission.Submission
      const ehloHeader = request.headers.get("x-ehlo")
      const ehlo = ehloHeader !== null && ehloHeader.trim().length > 0 ? ehloHeader.trim() : `[${client.address}]`
      const factsFor = (sender: Address.Mailbox | null, recipients: ReadonlyArray<Address.Mailbox>): Facts => {
        const utf8 = [sender, ...recipients].some((m) => m !== null && !Address.isAscii(m))
        return {
          ...facts,
          hello: { verb: "EHLO", domain: ehlo },
          sender,
          mailParams: { ...Params.emptyMail, smtputf8: utf8 },
          recipients
        }
      }

      const runEnvelopeHooks = (
        sender: Address.Mailbox | null,
        recipients: ReadonlyArray<Address.Mailbox>
      ): Effect.Effect<void, Bad, R> =>
        Effect.gen(function*() {
          const hello = { ...facts, hello: { verb: "EHLO" as const, domain: ehlo } }
          yield* ask(validators.ehlo?.(hello, ehlo), "EHLO")
          const utf8 = [sender, ...recipients].some((m) => m !== null && !Address.isAscii(m))
          const mailParams = { ...Params.emptyMail, smtputf8: utf8 }
          yield* ask(validators.mail?.(hello, sender, mailParams), "MAIL")
          const accepted: Array<Address.Mailbox> = []
          for (const r of recipients) {
            const f: Facts = { ...hello, sender, mailParams, recipients: accepted }
            yield* ask(validators.rcpt?.(f, r, Params.emptyRcpt), "RCPT")
            accepted.push(r)
          }
        })

      if (kind === "rfc822") {
        const senderHeader = request.headers.get("x-envelope-sender")
        let sender: Address.Mailbox | null = null
        if (senderHeader !== null && senderHeader.trim().length > 0) {
          const text = HttpSubmission.base64Text(senderHeader, "X-Envelope-Sender")
          if (text instanceof HttpSubmission.Problem) return badRequest(text.message)
          const s = HttpSubmission.parseAddress(text, true, "X-Envelope-Sender")
          if (s instanceof HttpSubmission.Problem) return badRequest(s.message)
          sender = s
        }
        const rcptHeader = request.headers.get("x-envelope-recipient")
        const values = rcptHeader === null ? [] : rcptHeader.split(/\s*[,;]\s*/).filter((v) => v.length > 0)
        if (values.length === 0) return badRequest("X-Envelope-Recipient: no recipients")
        if (values.length > maxRecipients) return badRequest(`X-Envelope-Recipient: more than ${maxRecipients} recipients`)
        const recipients: Array<Address.Mailbox> = []
        for (const v of values) {
          const text = HttpSubmission.base64Text(v, "X-Envelope-Recipient")
          if (text instanceof HttpSubmission.Problem) return badRequest(text.message)
          const r = HttpSubmission.parseAddress(text, false, "X-Envelope-Recipient")
          if (r instanceof HttpSubmission.Problem) return badRequest(r.message)
          recipients.push(r!)
        }
        if (ehlo.length > 255) return badRequest("X-Ehlo: too long")
        // the envelope policies run before the body is read (slimta's order)
        yield* runEnvelopeHooks(sender, recipients)
        const body = yield* readBody(request.body, maxSize)
        if (body._tag === "TooLarge") return tooLarge()
        if (body._tag === "Failed") return badRequest("the request body could not be read")
        if (body.bytes.length === 0) return badRequest("empty message")
        submission = { sender, recipients, message: HttpSubmission.normalizeLineEnds(body.bytes) }
      } else {
        const body = yield* readBody(request.body, limit)
        if (body._tag === "TooLarge") return tooLarge()
        if (body._tag === "Failed") return badRequest("the request body could not be read")
        const text = HttpSubmission.decodeUtf8(body.bytes)
        if (text === undefined) return badRequest("the body is not UTF-8")
        let value: unknown
        try {
          value = JSON.parse(text)
        } catch {
          return badRequest("the body is not valid JSON")
        }
        const s = HttpSubmission.fromJson(value, (m) =>
          Mime.compose({
            ...m,
            date: Headers.date(now),
            messageId: Headers.messageId(random, now, options.hostname),
            random
          }))
        if (s instanceof HttpSubmission.Problem) return badRequest(s.message)
        if (s.recipients.length === 0) return badRequest("no recipients")
        if (s.recipients.length > maxRecipients) return badRequest(`more than ${maxRecipients} recipients`)
        if (s.message.length === 0) return badRequest("empty message")
        submission = { ...s, message: HttpSubmission.normalizeLineEnds(s.message) }
        if (submission.message.length > maxSize) return tooLarge()
        yield* runEnvelopeHooks(submission.sender, submission.recipients)
      }

      const problem = Headers.checkHeaderBlock(submission.message)
      if (problem) return refuse(Headers.problemReply(problem), "DATA")
      yield* ask(validators.data?.(factsFor(submission.sender, submission.recipients)), "DATA")

      const utf8 = [submission.sender, ...submission.recipients].some((m) => m !== null && !Address.isAscii(m))
      let envelope = Envelope.make({
        id: Envelope.newId(random, now),
        sender: Address.print(submission.sender),
        recipients: submission.recipients.map((r) => Address.print(r)),
        message: submission.message,
        client: {
          address: client.address,
          port: client.port,
          reverseName: undefined,
          ehlo,
          protocol: facts.protocol,
          tls: client.tls
            ? { version: client.tls.version, cipher: client.tls.cipher, ...(client.tls.bits ? { bits: client.tls.bits } : {}) }
            : undefined,
          auth: facts.auth?.authcid
        },
        receiver: options.hostname,
        timestamp: now,
        body: Envelope.has8Bit(submission.message) ? "8BITMIME" : undefined,
        smtputf8: utf8
      })
      const full = factsFor(submission.sender, submission.recipients)
      if (validators.message) {
        const d = yield* validators.message(full, envelope)
        if (d._tag === "Reject") return refuse(d.reply, "DATA")
        for (const [name, value] of [...d.headers].reverse()) envelope = Envelope.prependHeader(envelope, name, value)
      }
      const result = yield* options.queue.enqueue(envelope)
      const reply = Queue.smtpReply(result)
      if (validators.queued) {
        yield* validators.queued(full, envelope, { replies: [reply], ids: result._tag === "Queued" ? result.ids : [] })
      }
      yield* Effect.logInfo("message").pipe(
        Effect.annotateLogs({
          edge: "http",
          client: client.address,
          id: result._tag === "Queued" ? result.ids.join(",") : "-",
          from: envelope.sender,
          to: envelope.recipients.join(","),
          size: envelope.message.length,
          protocol: envelope.client.protocol,
          reply: Reply.toString(reply)
        })
      )
      if (reply.code >= 400) return refuse(reply, "DATA")
      const ids = result._tag === "Queued" ? result.ids : [envelope.id]
      return json(200, { id: ids.join(","), ids, reply: Reply.toString(reply) }, { "X-Smtp-Reply": smtpReplyHeader(reply) })
    })

  return async (request, client = { address: "0.0.0.0" }) => {
    const program = process(request, client).pipe(
      Effect.catch((b: Bad) => Effect.succeed(b.response)),
      Effect.catchCause((cause) =>
        Effect.as(
          Effect.logError("http request failed").pipe(Effect.annotateLogs({ client: client.address, cause: String(cause) })),
          refuse(temporaryProblem)
        )
      ),
      Effect.ensuring(
        validators.close
          ? validators.close({
            remote: { _tag: "Inet", address: client.address, port: client.port ?? 0 },
            local: client.local ?? { _tag: "Inet", address: "0.0.0.0", port: 0 },
            proxied: undefined,
            hello: undefined,
            tls: client.tls,
            auth: undefined,
            protocol: "HTTP",
            sender: undefined,
            mailParams: undefined,
            recipients: []
          })
          : Effect.void
      )
    )
    try {
      return await options.run(program)
    } catch {
      return refuse(temporaryProblem)
    }
  }
}

/**
 * Makes the handler with the queue, credentials and validator services of
 * the current context; requests run with that context.
 */
export const fromContext = <R = never>(
  options: Omit<Options<R>, "queue" | "credentials" | "run">
): Effect.Effect<Handler, never, Queue.Queue | CredentialsService.CredentialsService | R> =>
  Effect.gen(function*() {
    const queue = yield* Queue.Queue
    const credentials = yield* CredentialsService.CredentialsService
    const context = yield* Effect.context<R>()
    const run = Effect.runPromiseWith(context)
    return make<R>({ ...options, queue, credentials, run: (e) => run(e) })
  })
