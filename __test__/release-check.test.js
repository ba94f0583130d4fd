'use strict'
// scripts/release-check.js (run by prepublishOnly) refuses a release that ships less than
// package.json's napi.targets claims. Each case is a copy of the release layout (package.json,
// binding.js, npm/<platform>/) in a temp folder, with binaries made of just the header bytes the
// check reads, and one thing wrong.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const ROOT = path.join(__dirname, '..')
const pkg = require('../package.json')
let dir

before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'locked-release-')) })
after(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }) })

// The first bytes of a shared library for the platform, as the check reads them.
function fakeBinary (platform) {
  const [osName, cpu, libc] = platform.split('-')
  if (osName === 'win32') {
    const b = Buffer.alloc(0x100)
    b.write('MZ', 0, 'latin1')
    b.writeUInt32LE(0x80, 0x3c)
    b.write('PE\0\0', 0x80, 'latin1')
    b.writeUInt16LE(cpu === 'x64' ? 0x8664 : 0xaa64, 0x84)
    return b
  }
  const b = Buffer.alloc(64)
  b.writeUInt32BE(0x7f454c46, 0)
  b.writeUInt16LE(cpu === 'x64' ? 62 : 183, 18)
  return libc === 'gnu' ? Buffer.concat([b, Buffer.from('\0GLIBC_2.17\0')]) : b
}

const platforms = ['linux-x64-gnu', 'linux-arm64-gnu', 'win32-x64-msvc']

// A complete release layout in a fresh folder; `spoil` then breaks one thing in it.
function layout (name, spoil = () => {}) {
  const at = path.join(dir, name)
  fs.mkdirSync(path.join(at, 'scripts'), { recursive: true })
  fs.cpSync(path.join(ROOT, 'scripts', 'release-check.js'), path.join(at, 'scripts', 'release-check.js'))
  fs.mkdirSync(path.join(at, 'lib'))
  fs.cpSync(path.join(ROOT, 'lib', 'platforms.js'), path.join(at, 'lib', 'platforms.js'))
  const root = { ...structuredClone(pkg), napi: { ...pkg.napi, targets: ['x86_64-unknown-linux-gnu', 'aarch64-unknown-linux-gnu', 'x86_64-pc-windows-msvc'] } }
  fs.writeFileSync(path.join(at, 'package.json'), JSON.stringify(root))
  fs.writeFileSync(path.join(at, 'binding.js'), `// expected ${pkg.version} but got\n` + platforms.map((p) => `require('locked-${p}')`).join('\n'))
  for (const p of platforms) {
    const [osName, cpu, libc] = p.split('-')
    const sub = { name: `locked-${p}`, version: pkg.version, os: [osName], cpu: [cpu], main: `locked.${p}.node`, files: [`locked.${p}.node`], license: pkg.license, engines: pkg.engines }
    if (osName === 'linux') sub.libc = [libc === 'gnu' ? 'glibc' : libc]
    fs.mkdirSync(path.join(at, 'npm', p), { recursive: true })
    fs.writeFileSync(path.join(at, 'npm', p, 'package.json'), JSON.stringify(sub))
    fs.writeFileSync(path.join(at, 'npm', p, `locked.${p}.node`), fakeBinary(p))
  }
  spoil(at)
  return at
}

function check (at, ...args) {
  const r = spawnSync(process.execPath, [path.join(at, 'scripts', 'release-check.js'), ...args], { encoding: 'utf8' })
  return { status: r.status, out: r.stdout + r.stderr }
}

describe('release check', () => {
  it('passes a complete release (the cases below each break one thing of it)', () => {
    const r = check(layout('complete'))
    assert.strictEqual(r.status, 0, r.out)
    assert.match(r.out, /linux-x64-gnu, linux-arm64-gnu, win32-x64-msvc at .*every binary present/)
  })

  it('refuses a claimed platform without its binary, and --layout does not look for binaries', () => {
    const at = layout('missing', (at) => fs.rmSync(path.join(at, 'npm', 'linux-arm64-gnu', 'locked.linux-arm64-gnu.node')))
    const r = check(at)
    assert.strictEqual(r.status, 1)
    assert.match(r.out, /npm\/linux-arm64-gnu\/locked\.linux-arm64-gnu\.node is missing/)
    assert.strictEqual(check(at, '--layout').status, 0)
  })

  it('refuses a binary built for another CPU or C library than its package says', () => {
    const at = layout('wrong', (at) => {
      fs.writeFileSync(path.join(at, 'npm', 'linux-arm64-gnu', 'locked.linux-arm64-gnu.node'), fakeBinary('linux-x64-gnu'))
      fs.writeFileSync(path.join(at, 'npm', 'linux-x64-gnu', 'locked.linux-x64-gnu.node'), fakeBinary('linux-x64-musl'))
      fs.writeFileSync(path.join(at, 'npm', 'win32-x64-msvc', 'locked.win32-x64-msvc.node'), fakeBinary('win32-arm64-msvc'))
    })
    const r = check(at)
    assert.strictEqual(r.status, 1)
    assert.match(r.out, /locked\.linux-arm64-gnu\.node is built for linux-x64-gnu, not linux-arm64-gnu/)
    assert.match(r.out, /locked\.linux-x64-gnu\.node is built for linux-x64-musl, not linux-x64-gnu/)
    assert.match(r.out, /locked\.win32-x64-msvc\.node is built for win32-arm64-msvc, not win32-x64-msvc/)
  })

  it('refuses a platform package out of step with the root, and a folder for an unclaimed platform', () => {
    const at = layout('stale', (at) => {
      const file = path.join(at, 'npm', 'win32-x64-msvc', 'package.json')
      fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), version: '2.9.9' }))
      fs.mkdirSync(path.join(at, 'npm', 'darwin-arm64'))
    })
    const r = check(at, '--layout')
    assert.strictEqual(r.status, 1)
    assert.match(r.out, /npm\/win32-x64-msvc\/package\.json: version is "2\.9\.9", not "/)
    assert.match(r.out, /npm\/darwin-arm64 is not a claimed platform/)
  })

  it('refuses optionalDependencies other than the claimed platforms at the root\'s version', () => {
    const at = layout('optional', (at) => {
      const file = path.join(at, 'package.json')
      const root = JSON.parse(fs.readFileSync(file, 'utf8'))
      root.optionalDependencies = { 'locked-linux-x64-gnu': root.version }
      fs.writeFileSync(file, JSON.stringify(root))
    })
    const r = check(at, '--layout')
    assert.strictEqual(r.status, 1)
    assert.match(r.out, /optionalDependencies .* are not the claimed platforms/)
  })
})
