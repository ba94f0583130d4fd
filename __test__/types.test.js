'use strict'
// index.d.ts against a usage file that covers the API, compiled with `tsc --strict`. Its
// `@ts-expect-error` lines are the negative cases: tsc fails if any of them compiles.
const { test } = require('node:test')
const assert = require('node:assert')
const { spawnSync } = require('node:child_process')
const path = require('node:path')

test('index.d.ts type-checks its usage under --strict, and rejects misuse', () => {
  const tsc = path.join(__dirname, '..', 'node_modules', 'typescript', 'bin', 'tsc')
  const result = spawnSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types')], { encoding: 'utf8' })
  assert.strictEqual(result.status, 0, `tsc failed:\n${result.stdout}${result.stderr}`)
})
