/**
 * Queues that a `mailroom queue` command opens inside a scope of their own,
 * shared by the Node and Deno entry points (`main.ts` of each adapter).
 *
 * A journal queue must be closed before the process exits: closing writes
 * its pending leases and gives its ownership back. `open` registers the
 * scope and `closeAll` closes every one (each `main` awaits it before it
 * exits). `storageEnvelope` builds a `QueueHandle`'s `envelope` from
 * `QueueStorage.read`, for storages that have no cheaper way.
 *
 * What it deliberately does not do: decide whether a queue exists (each
 * entry point checks the directory with its runtime's file API first) or
 * import a storage (the caller passes the storage's scoped `make`).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import type * as Envelope from "@mailroom/protocol/envelope/Envelope"
import * as QueueStorage from "@mailroom/protocol/queue/QueueStorage"
import type { QueueHandle } from "./Command.ts"

const scopes: Array<Scope.Closeable> = []

/** Closes every queue `open` opened, in order; safe to call more than once. */
export const closeAll = (): Promise<void> =>
  Effect.runPromise(Effect.forEach(scopes.splice(0), (scope) => Scope.close(scope, Exit.void), { discard: true }))

/** A handle's `envelope` through `storage.read`: the envelope with empty message bytes; `NotFound` for a bad id. */
export const storageEnvelope = (storage: QueueStorage.Service) => (id: string): Effect.Effect<Envelope.Envelope, QueueStorage.StorageError> =>
  QueueStorage.isValidId(id)
    ? Effect.map(storage.read(id), (stored) => ({ ...stored.envelope, message: new Uint8Array(0) }))
    : Effect.fail(QueueStorage.error("NotFound", "envelope", id, "not a valid message id"))

/**
 * Opens a storage with `make` in a new scope, kept open until `closeAll`.
 * A failure closes the scope at once and is reported with the config key
 * (`queue.storage: …`), e.g. a journal that a running server owns.
 */
export const open = (
  location: string,
  make: Effect.Effect<QueueStorage.Service, QueueStorage.StorageError, Scope.Scope>
): Effect.Effect<QueueHandle, QueueStorage.StorageError> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const storage = yield* make.pipe(
      Scope.provide(scope),
      Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause))),
      Effect.mapError((e) => QueueStorage.error(e.reason, e.operation, e.id, `queue.storage: ${e.detail}`, e))
    )
    scopes.push(scope)
    return { location, storage, envelope: storageEnvelope(storage) }
  })
