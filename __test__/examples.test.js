'use strict'
// The examples in examples/ run against a real etcd: each is elected, and stops cleanly on a signal.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { startEtcd } = require('./helpers/etcd')

let etcd
const procs = new Set()
before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  for (const p of procs) p.kill('SIGKILL')
  if (etcd) await etcd.close()
})

function run (file) {
  const proc = spawn(process.execPath, [path.join(__dirname, '..', 'examples', file)], {
    env: { ...process.env, ETCD_HOSTS: etcd.endpoints.join(',') },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  procs.add(proc)
  let out = ''
  proc.stdout.on('data', (d) => { out += d })
  proc.stderr.on('data', (d) => { out += d })
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => { procs.delete(proc); resolve({ code, signal }) }))
  const waitOutput = (re, ms) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => { clearInterval(poll); reject(new Error(`${file}: no ${re} within ${ms} ms:\n${out}`)) }, ms)
    const poll = setInterval(() => { if (re.test(out)) { clearTimeout(timer); clearInterval(poll); resolve() } }, 20)
  })
  return { proc, exited, waitOutput, output: () => out }
}

describe('examples', { timeout: 60000 }, () => {
  for (const [file, elected, signal] of [
    ['cron.js', /report run at/, 'SIGINT'],
    ['queue-consumer.js', /stored message 0 with token \d+/, 'SIGINT'],
    ['graceful-shutdown.js', /leads the scheduler/, 'SIGTERM']
  ]) {
    it(`${file} runs its work when elected and exits cleanly on ${signal}`, async () => {
      const ex = run(file)
      await ex.waitOutput(elected, 10000)
      ex.proc.kill(signal)
      const { code } = await ex.exited
      assert.strictEqual(code, 0, ex.output())
    })
  }
})
