'use strict'
// `tls: {}` asks for TLS with the system's trusted roots. It must never fall back to plain text:
// a locker that asked for TLS and reached a plain etcd is refused, not elected (with `auth`, its
// password would otherwise cross the network in the clear).

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const locked = require('..')
const { startEtcd } = require('./helpers/etcd')
const { uniquePrefix, nextEvent, within } = require('./helpers/util')

let etcd
before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => { if (etcd) await etcd.close() })

describe('TLS without a CA', { timeout: 60000 }, () => {
  it('tls: {} against a plain etcd is refused, never elected in plain text', async () => {
    const prefix = uniquePrefix('tlsempty')
    const l = locked(etcd.endpoints, { ttl: 2, prefix, tls: {} })
    const errors = []
    l.on('error', (err) => errors.push(err))
    const s = l('job')
    s.on('error', (err) => errors.push(err))
    let started = false
    s.on('start', () => { started = true })
    try {
      // The locker keeps trying; what matters is that it reports why and never gets in.
      await within((async () => { while (errors.length === 0) await new Promise((resolve) => setTimeout(resolve, 50)) })(), 15000, 'an error from the locker')
      assert.strictEqual(started, false, 'elected over a plain-text connection')
      assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [], 'it wrote to etcd over a plain-text connection')
      assert.strictEqual(errors[0].code, 'ETCD_UNAVAILABLE')
    } finally {
      await within(l.close().catch(() => {}), 10000, 'close')
    }
  })

  it('without tls a locker connects in plain text as before', async () => {
    // Elections through a given CA are in security.test.js.
    const prefix = uniquePrefix('tlsnone')
    const l = locked(etcd.endpoints, { ttl: 2, prefix })
    try {
      await nextEvent(l('job'), 'start', 10000, 'elected without TLS')
    } finally {
      await l.close()
    }
  })
})
