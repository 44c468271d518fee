/**
 * Test helpers: a throwaway certificate authority and server certificates,
 * made at test time with the `openssl` command into a temporary directory.
 * Nothing here is ever committed; call `dispose()` in `afterAll`.
 *
 * Keys are ECDSA P-256 (fast to generate); certificates are valid for two
 * days and carry subjectAltName entries, which is what Node verifies.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { removeDir, tempDir } from "./ports.ts"

/** PEM key and certificate of a server, plus the CA that signed it. */
export interface IssuedCertificate {
  readonly key: string
  readonly cert: string
  /** The issuing CA's certificate, PEM. */
  readonly ca: string
}

export interface TestCa {
  /** The CA certificate, PEM: trust it in clients. */
  readonly cert: string
  /** Issues a server certificate for `commonName` with the given subjectAltNames (`DNS:x`, `IP:127.0.0.1`). */
  readonly issue: (commonName: string, altNames: ReadonlyArray<string>) => IssuedCertificate
  /** The directory holding the files. */
  readonly dir: string
  /** Removes every file. */
  readonly dispose: () => void
}

const OPENSSL = "openssl"

const run = (args: ReadonlyArray<string>, cwd: string): void => {
  try {
    execFileSync(OPENSSL, args, { cwd, stdio: ["ignore", "pipe", "pipe"] })
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string }
    throw new Error(`openssl ${args.join(" ")} failed: ${err.stderr?.toString() ?? err.message}`)
  }
}

let serial = 0

/** Makes a new CA named `name` in a fresh temporary directory. Throws if `openssl` is missing. */
export const makeCa = (name = "Mailroom Test CA"): TestCa => {
  const dir = tempDir("mailroom-certs-")
  const file = (f: string) => path.join(dir, f)
  run([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", `/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign"
  ], dir)
  const caCert = fs.readFileSync(file("ca.crt"), "utf8")
  const issue = (commonName: string, altNames: ReadonlyArray<string>): IssuedCertificate => {
    const base = `srv${++serial}`
    fs.writeFileSync(
      file(`${base}.ext`),
      [
        `subjectAltName=${altNames.join(",")}`,
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth"
      ].join("\n") + "\n"
    )
    run([
      "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", `${base}.key`, "-out", `${base}.csr`, "-subj", `/CN=${commonName}`
    ], dir)
    run([
      "x509", "-req", "-in", `${base}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", String(Date.now() + serial),
      "-days", "2", "-extfile", `${base}.ext`, "-out", `${base}.crt`
    ], dir)
    return {
      key: fs.readFileSync(file(`${base}.key`), "utf8"),
      cert: fs.readFileSync(file(`${base}.crt`), "utf8"),
      ca: caCert
    }
  }
  return { cert: caCert, issue, dir, dispose: () => removeDir(dir) }
}
