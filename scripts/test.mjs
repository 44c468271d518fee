#!/usr/bin/env node
// The README's test command: typecheck, the vitest suites (Node), the Deno
// suites, then one plain summary line `N passed, N failed` for CI.
// Runs on the Node that npm put first on PATH (node@24 from devDependencies).
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readFileSync } from "node:fs"
import { join } from "node:path"

const root = new URL("..", import.meta.url).pathname
const tmp = join(root, ".tmp")
mkdirSync(tmp, { recursive: true })
const bin = (name) => join(root, "node_modules", ".bin", name)
const run = (cmd, args, opts = {}) => {
  console.log(`\n$ ${[cmd, ...args].join(" ")}`)
  return spawnSync(cmd, args, { cwd: root, stdio: "inherit", ...opts }).status ?? 1
}

let passed = 0
let failed = 0
let skipped = 0

// 1. Types: the whole repo strict, and the protocol package without Node's types (purity).
for (const project of ["tsconfig.json", "packages/protocol/tsconfig.json"]) {
  const status = run(bin("tsc"), ["-p", project])
  if (status === 0) passed++
  else failed++
}

// 2. vitest (Node). Extra arguments are passed through (file filters).
const report = join(tmp, "vitest-report.json")
const vitestStatus = run(bin("vitest"), ["run", "--reporter=default", "--reporter=json", `--outputFile.json=${report}`, ...process.argv.slice(2)])
if (existsSync(report)) {
  const r = JSON.parse(readFileSync(report, "utf8"))
  passed += r.numPassedTests ?? 0
  failed += r.numFailedTests ?? 0
  skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0)
  if (vitestStatus !== 0 && (r.numFailedTests ?? 0) === 0) failed++ // a suite that failed to load
} else if (vitestStatus !== 0) failed++

// 3. Deno: the same scenarios on the other runtime (test/deno), when present.
if (process.argv.length <= 2 && existsSync(join(root, "test", "deno"))) {
  const env = { ...process.env, NO_COLOR: "1" }
  console.log("\n$ deno check packages/deno-adapter/src packages/deno-adapter/test")
  const check = spawnSync(bin("deno"), ["check", "packages/deno-adapter/src", "packages/deno-adapter/test"], { cwd: root, encoding: "utf8", env })
  process.stdout.write(check.stdout ?? "")
  process.stderr.write(check.stderr ?? "")
  if (check.status === 0) passed++
  else failed++
  console.log("\n$ deno test --allow-all --no-check test/deno/")
  const res = spawnSync(bin("deno"), ["test", "--allow-all", "--no-check", "test/deno/"], { cwd: root, encoding: "utf8", env, maxBuffer: 64 * 1024 * 1024 })
  process.stdout.write(res.stdout ?? "")
  process.stderr.write(res.stderr ?? "")
  const m = /(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed/.exec(res.stdout ?? "")
  if (m) {
    passed += Number(m[1])
    failed += Number(m[3])
  } else if (res.status !== 0) failed++
}

console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`)
process.exit(failed > 0 ? 1 : 0)
