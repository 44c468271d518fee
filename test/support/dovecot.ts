/**
 * Test helper: a private Dovecot LMTP server (Debian `dovecot-core` and
 * `dovecot-lmtpd`) run in the foreground from a config of our own in a
 * temporary directory: an LMTP inet listener on 127.0.0.1 and a Unix socket,
 * Maildir mailboxes under the directory, users from a passwd-file (extra
 * fields such as `userdb_quota_rule=*:storage=1k` allowed, with the quota
 * plugin loaded), no TLS, logs to stderr.
 *
 * Running as root, Dovecot needs unprivileged users for its internal and
 * login processes and for the mailboxes: `nobody`/`nogroup` (uid/gid 65534)
 * serve for all three.
 *
 * Started and stopped by PID only; a missing Dovecot is an error.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { freePort, removeDir, tempDir, waitForBound } from "./ports.ts"

export const DOVECOT_BIN = process.env["DOVECOT_BIN"] ?? "/usr/sbin/dovecot"

export interface Dovecot {
  readonly port: number
  /** The LMTP Unix socket. */
  readonly socket: string
  readonly pid: number
  /** Maildir of a user: `<dir>/<user>` with `new/`, `cur/`, `tmp/`. */
  readonly maildir: (user: string) => string
  /** The messages delivered to a user's INBOX (`new/`), oldest first. */
  readonly delivered: (user: string) => ReadonlyArray<Buffer>
  readonly output: () => string
  readonly stop: () => Promise<void>
}

/** The user Dovecot runs its processes and mailboxes as. */
const UNPRIVILEGED = { user: "nobody", group: "nogroup", uid: 65534, gid: 65534 }

/**
 * Starts Dovecot LMTP with the users given (`name` or `name:::::::extra
 * fields`, one per line of a passwd-file) and waits until both listeners are up.
 */
export const startDovecot = async (users: ReadonlyArray<string>): Promise<Dovecot> => {
  if (!fs.existsSync(DOVECOT_BIN)) throw new Error(`dovecot not found at ${DOVECOT_BIN}: install dovecot-core and dovecot-lmtpd`)
  const dir = tempDir("mailroom-dovecot-")
  const run = path.join(dir, "run")
  const mail = path.join(dir, "mail")
  for (const d of [run, path.join(dir, "state"), mail]) fs.mkdirSync(d)
  fs.chmodSync(mail, 0o777)
  fs.chmodSync(dir, 0o755)
  const passwd = path.join(dir, "users")
  fs.writeFileSync(passwd, users.map((u) => (u.includes(":") ? u : `${u}:::::::`)).join("\n") + "\n")
  const port = await freePort()
  const conf = path.join(dir, "dovecot.conf")
  fs.writeFileSync(
    conf,
    `protocols = lmtp
base_dir = ${run}
state_dir = ${path.join(dir, "state")}
log_path = /dev/stderr
ssl = no
listen = 127.0.0.1
default_internal_user = ${UNPRIVILEGED.user}
default_internal_group = ${UNPRIVILEGED.group}
default_login_user = ${UNPRIVILEGED.user}
mail_location = maildir:${mail}/%n
mail_plugins = quota
plugin {
  quota = maildir:User quota
}
userdb {
  driver = passwd-file
  args = username_format=%n ${passwd}
  default_fields = uid=${UNPRIVILEGED.uid} gid=${UNPRIVILEGED.gid} home=${mail}/%n
}
passdb {
  driver = static
  args = nopassword=y
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${port}
  }
  unix_listener lmtp-test {
    mode = 0666
  }
}
`
  )
  const socket = path.join(run, "lmtp-test")
  const child: ChildProcess = spawn(DOVECOT_BIN, ["-F", "-c", conf], { stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  child.stdout?.on("data", (d: Buffer) => (out += d.toString("latin1")))
  child.stderr?.on("data", (d: Buffer) => (out += d.toString("latin1")))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const pid = child.pid!
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(pid, "SIGTERM")
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3_000))])
      if (child.exitCode === null && child.signalCode === null) process.kill(pid, "SIGKILL")
    }
    removeDir(dir)
  }
  try {
    await Promise.race([
      (async () => {
        await waitForBound("127.0.0.1", port, 10_000)
        const deadline = Date.now() + 10_000
        while (!fs.existsSync(socket)) {
          if (Date.now() > deadline) throw new Error("no LMTP socket")
          await new Promise((r) => setTimeout(r, 25))
        }
      })(),
      exited.then(() => {
        throw new Error("dovecot exited")
      })
    ])
  } catch (e) {
    await stop()
    throw new Error(`dovecot did not start (${e instanceof Error ? e.message : String(e)}): ${out}`)
  }
  const maildir = (user: string) => path.join(mail, user)
  return {
    port,
    socket,
    pid,
    maildir,
    delivered: (user) => {
      const d = path.join(maildir(user), "new")
      if (!fs.existsSync(d)) return []
      return fs.readdirSync(d).sort().map((f) => fs.readFileSync(path.join(d, f)))
    },
    output: () => out,
    stop
  }
}
