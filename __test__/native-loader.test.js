'use strict'
// require('locked') where no native binary loads fails with one LockedError (NO_NATIVE_BINARY) that
// names the platform and what to do, not the loader's chain of errors. Each case is a copy of the
// package as published (package.json "files"), loaded by a separate Node process.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { currentPlatform } = require('../lib/platforms.js')

const ROOT = path.join(__dirname, '..')
const pkg = require('../package.json')
const platform = currentPlatform()
let dir

before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'locked-loader-')) })
after(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }) })

// A copy of the published files in a fresh folder; `edit` may change its package.json.
function copyPackage (name, edit = (p) => p) {
  const at = path.join(dir, name, 'node_modules', 'locked')
  for (const file of pkg.files) fs.cpSync(path.join(ROOT, file), path.join(at, file), { recursive: true })
  fs.writeFileSync(path.join(at, 'package.json'), JSON.stringify(edit(structuredClone(pkg))))
  return at
}

// Loads the package the way the given code does, in a child process; returns what it threw.
function load (at, code) {
  const r = spawnSync(process.execPath, ['-e', code], { cwd: path.dirname(path.dirname(at)), encoding: 'utf8', timeout: 20000 })
  assert.strictEqual(r.status, 0, r.stderr)
  return JSON.parse(r.stdout)
}
const viaRequire = `try { require('locked'); console.log('null') } catch (e) {
  console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message, cause: !!e.cause }))
}`
const viaImport = `import('locked').then(() => console.log('null'), (e) => {
  console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message, cause: !!e.cause }))
})`

describe('no native binary', () => {
  it('the binary beside the loader loads (the copies below differ only in what is missing)', () => {
    const at = copyPackage('with-binary')
    fs.copyFileSync(path.join(ROOT, `locked.${platform}.node`), path.join(at, `locked.${platform}.node`))
    assert.strictEqual(load(at, viaRequire), null)
    assert.strictEqual(load(at, viaImport), null)
  })

  it('a published platform whose package was not installed: one error naming the package to install', () => {
    const at = copyPackage('not-installed')
    for (const code of [viaRequire, viaImport]) {
      const err = load(at, code)
      assert.strictEqual(err.name, 'LockedError')
      assert.strictEqual(err.code, 'NO_NATIVE_BINARY')
      assert.ok(err.cause, 'the loader\'s errors are the cause')
      assert.match(err.message, new RegExp(`for ${platform} \\(Node\\.js ${process.version.replace(/\./g, '\\.')}\\)`))
      assert.match(err.message, new RegExp(`npm install locked-${platform}@${pkg.version.replace(/\./g, '\\.')}$`))
    }
  })

  it('a platform without a prebuilt binary: one error with the steps to build it from source', () => {
    const at = copyPackage('unpublished', (p) => ({ ...p, napi: { ...p.napi, targets: ['x86_64-pc-windows-msvc', 'aarch64-unknown-linux-musl'] } }))
    const err = load(at, viaRequire)
    assert.strictEqual(err.code, 'NO_NATIVE_BINARY')
    assert.match(err.message, new RegExp(`no prebuilt binary for ${platform} `))
    assert.match(err.message, /prebuilt: win32-x64-msvc, linux-arm64-musl/)
    assert.ok(err.message.includes(`run \`cargo build --release\` in ${at}`), err.message)
    assert.ok(err.message.includes(path.join(at, `locked.${platform}.node`)), err.message)
  })

  it('a platform package whose binary does not load: the reason, not the list of places looked in', () => {
    const at = copyPackage('broken')
    const dep = path.join(path.dirname(at), `locked-${platform}`)
    fs.mkdirSync(dep)
    fs.writeFileSync(path.join(dep, 'package.json'), JSON.stringify({ name: `locked-${platform}`, version: pkg.version, main: `locked.${platform}.node` }))
    fs.writeFileSync(path.join(dep, `locked.${platform}.node`), 'not a shared library')
    const err = load(at, viaRequire)
    assert.strictEqual(err.code, 'NO_NATIVE_BINARY')
    assert.match(err.message, new RegExp(`\\(package locked-${platform}\\) did not load: .*locked\\.${platform}\\.node: (file too short|invalid ELF header)`))
  })
})
