/**
 * `@mailroom/protocol`: Mailroom's pure, I/O-free core. Every module is a
 * namespace; import the ones you need:
 *
 * ```ts
 * import { ServerSession, Command, Reply } from "@mailroom/protocol"
 * ```
 *
 * Runtime adapters (`@mailroom/node`, `@mailroom/deno`) provide the services
 * declared here (`Listener`, `Connector`, `QueueStorage`, DNS, processes).
 *
 * @since 0.1.0
 */
export * as Bytes from "./wire/Bytes.ts"
export * as LineDecoder from "./wire/LineDecoder.ts"
export * as DataDecoder from "./wire/DataDecoder.ts"
export * as DataEncoder from "./wire/DataEncoder.ts"
export * as BdatDecoder from "./wire/BdatDecoder.ts"
export * as ReplyDecoder from "./wire/ReplyDecoder.ts"
export * as ProxyProtocol from "./wire/ProxyProtocol.ts"

export * as Reply from "./smtp/Reply.ts"
export * as Address from "./smtp/Address.ts"
export * as Params from "./smtp/Params.ts"
export * as Command from "./smtp/Command.ts"
export * as Extensions from "./smtp/Extensions.ts"
export * as ServerSession from "./smtp/ServerSession.ts"
export * as ClientSession from "./smtp/ClientSession.ts"

export * as Base64 from "./auth/Base64.ts"
export * as Sasl from "./auth/Sasl.ts"
export * as Credentials from "./auth/Credentials.ts"
export * as CredentialsService from "./auth/CredentialsService.ts"

export * as Envelope from "./envelope/Envelope.ts"
export * as Headers from "./envelope/Headers.ts"
export * as Mime from "./envelope/Mime.ts"

export * as Decision from "./policy/Decision.ts"
export * as Validators from "./policy/Validators.ts"

export * as QueuePolicy from "./policy/QueuePolicy.ts"
export * as Spf from "./policy/Spf.ts"
export * as SpfRecord from "./policy/SpfRecord.ts"
export * as Dnsbl from "./policy/Dnsbl.ts"
export * as SpamdClient from "./policy/SpamdClient.ts"
export * as SpamAssassin from "./policy/SpamAssassin.ts"
export * as Ip from "./policy/Ip.ts"
export * as ReplyTemplate from "./policy/ReplyTemplate.ts"

export * as Queue from "./queue/Queue.ts"
export * as QueueStorage from "./queue/QueueStorage.ts"
export * as DurableQueue from "./queue/DurableQueue.ts"
export * as Bounce from "./queue/Bounce.ts"
export * as DiskLayout from "./queue/DiskLayout.ts"

export * as Relay from "./relay/Relay.ts"
export * as MaildirRelay from "./relay/MaildirRelay.ts"
export * as PipeRelay from "./relay/PipeRelay.ts"
export * as HttpRelay from "./relay/HttpRelay.ts"
export * as SmtpConnection from "./relay/SmtpConnection.ts"
export * as Pool from "./relay/Pool.ts"
export * as SmtpDelivery from "./relay/SmtpDelivery.ts"
export * as Downgrade from "./relay/Downgrade.ts"
export * as StaticRelay from "./relay/StaticRelay.ts"
export * as LmtpRelay from "./relay/LmtpRelay.ts"
export * as MxRelay from "./relay/MxRelay.ts"
export * as ProcessSpawner from "./process/ProcessSpawner.ts"

export * as SessionPair from "./testing/SessionPair.ts"
export * as Chunking from "./testing/Chunking.ts"

export * as Config from "./config/Config.ts"
export * as Rules from "./config/Rules.ts"
export * as Compose from "./config/Compose.ts"
export * as UsersFile from "./config/UsersFile.ts"
export * as Log from "./observability/Log.ts"

export * as Transport from "./edge/Transport.ts"
export * as SmtpEdge from "./edge/SmtpEdge.ts"
export * as HttpEdge from "./edge/HttpEdge.ts"
export * as HttpSubmission from "./edge/HttpSubmission.ts"
