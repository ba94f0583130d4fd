'use strict'
// Runs scripts/smoke-election.cjs (one election, one handoff) under the command given, against a
// throwaway etcd on 127.0.0.1, and fails unless it reports the handoff.
//   node scripts/smoke.js [--cwd DIR] [--timeout MS] -- <runtime and its arguments>
// e.g. node scripts/smoke.js -- qemu-aarch64 /path/to/node   (the script's path is appended)
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { startEtcd } = require('../__test__/helpers/etcd')

const SCRIPT = path.join(__dirname, 'smoke-election.cjs')

/** Runs the smoke election under `command` (an argv array); resolves with its output, rejects with it. */
async function smoke (command, { cwd = process.cwd(), timeoutMs = 60000, env = {}, script = SCRIPT } = {}) {
  if (cwd !== process.cwd()) {
    // require('locked') resolves from the script's folder: run a copy inside the project.
    fs.copyFileSync(script, path.join(cwd, path.basename(script)))
    script = path.resolve(cwd, path.basename(script))
  }
  const etcd = await startEtcd({ members: 1 })
  try {
    // Output goes to a file, not a pipe: Node.js for Windows under wine cannot write to a pipe.
    const outFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'locked-smoke-')), 'out')
    const fd = fs.openSync(outFile, 'w')
    const child = spawn(command[0], [...command.slice(1), script], {
      cwd, env: { ...process.env, ETCD: etcd.endpoints.join(','), SMOKE_TIMEOUT_MS: String(timeoutMs - 5000), ...env }, stdio: ['ignore', fd, fd]
    })
    fs.closeSync(fd)
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    const code = await new Promise((resolve) => child.on('close', (c, signal) => resolve(c ?? signal)))
    const out = fs.readFileSync(outFile, 'utf8')
    fs.rmSync(path.dirname(outFile), { recursive: true, force: true })
    clearTimeout(timer)
    if (code !== 0 || !/handover ok/.test(out)) throw new Error(`smoke election under ${command.join(' ')}: exit ${code}\n${out}`)
    return out
  } finally {
    await etcd.close()
  }
}

module.exports = { smoke, SCRIPT }

if (require.main === module) {
  const args = process.argv.slice(2)
  const opts = {}
  while (args.length && args[0] !== '--') {
    const flag = args.shift()
    if (flag === '--cwd') opts.cwd = args.shift()
    else if (flag === '--timeout') opts.timeoutMs = Number(args.shift())
    else if (flag === '--module') opts.env = { LOCKED_MODULE: path.resolve(args.shift()) }
    else { console.error(`smoke: unknown option ${flag}`); process.exit(2) }
  }
  args.shift()
  smoke(args, opts).then((out) => {
    process.stdout.write(out)
  }, (err) => {
    console.error(err.message)
    process.exit(1)
  })
}
