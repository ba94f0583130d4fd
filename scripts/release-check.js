'use strict'
// Refuses a release that would ship less than it claims. The platforms claimed are package.json's
// "napi.targets" (the one list: napi prepublish publishes a package for each and writes them into
// the root's optionalDependencies at the root's version). For each one, npm/<platform>/ must hold a
// package.json in step with the root and the binary, built for that platform (CPU, and for Linux
// glibc or musl, read from the file). No other folder may be in npm/, and binding.js (the loader)
// must be the one generated for this version.
//   node scripts/release-check.js            everything (prepublishOnly runs this before napi prepublish)
//   node scripts/release-check.js --layout   all but the binaries (CI, where only some are built)
const fs = require('node:fs')
const path = require('node:path')
const { platformOfTarget } = require('../lib/platforms.js')

const root = path.join(__dirname, '..')
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const layoutOnly = process.argv.includes('--layout')
const problems = []
const problem = (text) => problems.push(text)

const ELF_MACHINE = { x64: 62, arm64: 183 }
const PE_MACHINE = { x64: 0x8664, arm64: 0xaa64 }

/** What the binary's header says it is built for, e.g. `linux-arm64-musl`, or why it cannot tell. */
function describeBinary (file) {
  const b = fs.readFileSync(file)
  if (b.readUInt32BE(0) === 0x7f454c46) {
    const machine = b.readUInt16LE(18)
    const arch = Object.keys(ELF_MACHINE).find((a) => ELF_MACHINE[a] === machine) ?? `machine ${machine}`
    // A binary linked against glibc refers to versioned symbols (GLIBC_2.17, ...); musl has none.
    return `linux-${arch}-${b.includes('GLIBC_2.') ? 'gnu' : 'musl'}`
  }
  if (b.toString('latin1', 0, 2) === 'MZ') {
    const pe = b.readUInt32LE(0x3c)
    if (b.toString('latin1', pe, pe + 4) !== 'PE\0\0') return 'an MZ file without a PE header'
    const machine = b.readUInt16LE(pe + 4)
    const arch = Object.keys(PE_MACHINE).find((a) => PE_MACHINE[a] === machine) ?? `machine ${machine}`
    return `win32-${arch}-msvc`
  }
  return 'not an ELF or PE shared library'
}

function checkPlatformPackage (platform) {
  const dir = path.join(root, 'npm', platform)
  const manifest = path.join(dir, 'package.json')
  if (!fs.existsSync(manifest)) return problem(`npm/${platform}/package.json is missing (napi create-npm-dirs makes it)`)
  const sub = JSON.parse(fs.readFileSync(manifest, 'utf8'))
  const binary = `locked.${platform}.node`
  const [os, cpu, libc] = platform.split('-')
  const expect = (what, actual, wanted) => {
    if (JSON.stringify(actual) !== JSON.stringify(wanted)) problem(`npm/${platform}/package.json: ${what} is ${JSON.stringify(actual)}, not ${JSON.stringify(wanted)}`)
  }
  expect('name', sub.name, `locked-${platform}`)
  expect('version', sub.version, pkg.version)
  expect('main', sub.main, binary)
  expect('files', sub.files, [binary])
  expect('os', sub.os, [os])
  expect('cpu', sub.cpu, [cpu])
  expect('libc', sub.libc, os === 'linux' ? [libc === 'gnu' ? 'glibc' : libc] : undefined)
  expect('engines', sub.engines, pkg.engines)
  expect('license', sub.license, pkg.license)
  if (layoutOnly) return
  const file = path.join(dir, binary)
  if (!fs.existsSync(file)) return problem(`npm/${platform}/${binary} is missing: build it (npm run build:all) or collect it (napi artifacts)`)
  const built = describeBinary(file)
  if (built !== platform) problem(`npm/${platform}/${binary} is built for ${built}, not ${platform}`)
}

const platforms = (pkg.napi?.targets ?? []).map(platformOfTarget)
if (platforms.length === 0) problem('package.json claims no platform (napi.targets is empty)')
for (const platform of platforms) checkPlatformPackage(platform)
for (const dir of fs.readdirSync(path.join(root, 'npm'))) {
  if (!platforms.includes(dir)) problem(`npm/${dir} is not a claimed platform: add its target to napi.targets once it is built and proven, or remove the folder`)
}
if (pkg.optionalDependencies) {
  const wanted = Object.fromEntries(platforms.map((p) => [`locked-${p}`, pkg.version]))
  if (JSON.stringify(pkg.optionalDependencies) !== JSON.stringify(wanted)) {
    problem(`optionalDependencies ${JSON.stringify(pkg.optionalDependencies)} are not the claimed platforms at ${pkg.version}: ${JSON.stringify(wanted)}`)
  }
}
const loader = path.join(root, 'binding.js')
if (!fs.existsSync(loader)) {
  problem('binding.js (the generated loader) is missing: npm run build writes it')
} else {
  const text = fs.readFileSync(loader, 'utf8')
  if (!text.includes(`expected ${pkg.version} but got`)) problem(`binding.js was generated for another version than ${pkg.version}: rebuild (npm run build)`)
  for (const p of platforms) if (!text.includes(`'locked-${p}'`)) problem(`binding.js does not load locked-${p}`)
}

if (problems.length > 0) {
  console.error(`release-check: not releasable:\n  ${problems.join('\n  ')}`)
  process.exit(1)
}
console.log(`release-check: ${platforms.join(', ')} at ${pkg.version}${layoutOnly ? ' (layout; binaries not checked)' : ': every binary present and built for its platform'}`)
