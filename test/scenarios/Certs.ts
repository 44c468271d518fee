/**
 * Test certificates for the cross-runtime scenarios: a throwaway CA and
 * server certificates made with the real `openssl` command, run through the
 * runtime's own `ProcessSpawner`, in a temporary directory that is removed
 * before returning (the PEM text is all the scenarios need). The same as
 * `test/support/certs.ts`, without `node:child_process`, so Deno runs it too.
 *
 * Keys are ECDSA P-256; certificates are valid for two days and carry
 * subjectAltName entries.
 */
import * as Effect from "effect/Effect"
import * as ProcessSpawner from "../../packages/protocol/src/process/ProcessSpawner.ts"
import type { Env } from "./Scenario.ts"

/** A server certificate and key, PEM. */
export interface IssuedCertificate {
  readonly key: string
  readonly cert: string
}

/** What `makeCertificates` returns: the CA certificate and one certificate per request. */
export interface Certificates {
  readonly ca: string
  readonly issued: ReadonlyArray<IssuedCertificate>
}

const decoder = new TextDecoder()

const openssl = (env: Env, dir: string, args: ReadonlyArray<string>): Promise<void> =>
  Effect.runPromise(
    Effect.flatMap(ProcessSpawner.ProcessSpawner, (s) => s.spawn({ command: "openssl", args, stdin: new Uint8Array(0), timeoutMs: 30_000, cwd: dir })).pipe(
      Effect.provide(env.spawner)
    )
  ).then((r) => {
    if (r._tag !== "Exited" || r.exitCode !== 0) {
      throw new Error(`openssl ${args.join(" ")} failed (${r._tag}): ${decoder.decode(r.stderr)}`)
    }
  })

/**
 * Makes a CA named `caName` and issues one server certificate per entry
 * (`altNames` as `DNS:x` / `IP:127.0.0.1`). Throws when `openssl` is missing.
 */
export const makeCertificates = async (
  env: Env,
  caName: string,
  requests: ReadonlyArray<{ readonly commonName: string; readonly altNames: ReadonlyArray<string> }>
): Promise<Certificates> => {
  const dir = await env.files.tempDir("mailroom-certs-")
  try {
    await openssl(env, dir, [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", `/CN=${caName}`,
      "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign"
    ])
    const issued: Array<IssuedCertificate> = []
    let serial = 0
    for (const r of requests) {
      const base = `srv${++serial}`
      await env.files.writeFile(
        `${dir}/${base}.ext`,
        [
          `subjectAltName=${r.altNames.join(",")}`,
          "basicConstraints=critical,CA:FALSE",
          "keyUsage=critical,digitalSignature",
          "extendedKeyUsage=serverAuth"
        ].join("\n") + "\n"
      )
      await openssl(env, dir, [
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", `${base}.key`, "-out", `${base}.csr`, "-subj", `/CN=${r.commonName}`
      ])
      await openssl(env, dir, [
        "x509", "-req", "-in", `${base}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key",
        "-set_serial", String(Date.now() * 100 + serial), "-days", "2", "-extfile", `${base}.ext`, "-out", `${base}.crt`
      ])
      issued.push({ key: await env.files.readTextFile(`${dir}/${base}.key`), cert: await env.files.readTextFile(`${dir}/${base}.crt`) })
    }
    return { ca: await env.files.readTextFile(`${dir}/ca.crt`), issued }
  } finally {
    await env.files.removeDir(dir)
  }
}

/** The common name in a PEM certificate's subject, read with `openssl x509`. */
export const commonName = async (env: Env, pem: string): Promise<string> => {
  const r = await Effect.runPromise(
    Effect.flatMap(ProcessSpawner.ProcessSpawner, (s) =>
      s.spawn({ command: "openssl", args: ["x509", "-noout", "-subject", "-nameopt", "RFC2253"], stdin: new TextEncoder().encode(pem), timeoutMs: 10_000 })).pipe(
        Effect.provide(env.spawner)
      )
  )
  const m = /CN=([^,\n]+)/.exec(decoder.decode(r.stdout))
  return m?.[1] ?? ""
}
