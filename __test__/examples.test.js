'use strict'
// The examples in examples/ run against a real etcd: each is elected, and stops cleanly on a signal:
// exit code 0, and neither its keys nor its lease left in etcd (a lease left behind would make the
// next process wait for its TTL).

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const { startEtcd } = require('./helpers/etcd')
const { runProgram, killPrograms } = require('./helpers/programs')

let etcd
before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await killPrograms()
  if (etcd) await etcd.close()
})

// Every key in etcd (the examples use the default prefix).
const allKeys = async () => (await etcd.etcdctl(['get', '', '--prefix', '--keys-only'])).split('\n').filter(Boolean)

// An example as a user runs a copy of it: require('locked') resolves to this repository.
const run = (file) => runProgram(`examples/${file}`, { env: { ETCD_HOSTS: etcd.endpoints.join(',') } })

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
