'use strict'
// The examples in examples/ run against a real etcd: each is elected, and stops cleanly on a signal:
// exit code 0, and neither its keys nor its lease left in etcd (a lease left behind would make the
// next process wait for its TTL).

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

// Every key in etcd (the examples use the default prefix).
const allKeys = async () => (await etcd.etcdctl(['get', '', '--prefix', '--keys-only'])).split('\n').filter(Boolean)

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
      const keysBefore = await allKeys()
      const leasesBefore = await etcd.leases()
      const ex = run(file)
      await ex.waitOutput(elected, 10000)
      const running = (await allKeys()).filter((key) => !keysBefore.includes(key))
      assert.ok(running.length > 0, 'the example\'s key is in etcd')
      assert.ok((await etcd.leases()).length > leasesBefore.length, 'the example holds a lease')
      ex.proc.kill(signal)
      const { code } = await ex.exited
      assert.strictEqual(code, 0, ex.output())
      assert.deepStrictEqual(await allKeys(), keysBefore, `no key of ${file} left in etcd`)
      assert.deepStrictEqual(await etcd.leases(), leasesBefore, `no lease of ${file} left in etcd`)
    })
  }
})
