/**
 * PLACEHOLDER: the lead replaces this file with the real composition (SMTP
 * edges, queue, relay and logging from a decoded `Config`). Until then it
 * fails loudly so that nobody mistakes a stub for a running server.
 *
 * @since 0.1.0
 */
import type * as Config from "@mailroom/protocol/config/Config"

/** Runs everything `config` describes until the process is asked to stop. */
export const serve = (_config: Config.Config): Promise<void> => {
  throw new Error("serve: not wired yet")
}
