'use strict'
// Process lifetime: a host stays alive while registered, exits on its own after the last remove()
// or close(), process.exit() and a terminated worker hand over at once (not after a TTL).

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const path = require('node:path')
const { startEtcd } = require('./helpers/etcd')
const { spawnHost, killAll, ms, assertOneLeaderAtATime, queued } = require('./helpers/hosts')
const { uniquePrefix, quietWindow, within } = require('./helpers/util')

const TTL = 2
let etcd

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await killAll()
  if (etcd) await etcd.close()
})

// keepAlive: false — nothing in host.js keeps the process alive, only the addon.
const host = (config, label, options) => spawnHost({ endpoints: etcd.endpoints, ttl: TTL, keepAlive: false, ...config }, label, options)

describe('process lifetime', { timeout: 60000 }, () => {
  it('stays alive while registered (leading or waiting)', async () => {
    const prefix = uniquePrefix('alive')
    const a = host({ prefix, names: ['x'] }, 'A')
    await a.waitFor({ ev: 'start', name: 'x' }, 5000, 'A start')
    const b = host({ prefix, names: ['x'] }, 'B')
    await queued(etcd, b, { prefix, names: ['x'], timeoutMs: 5000 })
    // Several keepalive periods go by; both processes must still be there.
    await quietWindow(2 * TTL * 1000)
    assert.ok(a.alive, 'the leader exited while registered')
    assert.ok(b.alive, 'the waiting candidate exited while registered')
    await a.request({ cmd: 'ping' }, { ev: 'pong' }, 5000)
    await b.request({ cmd: 'ping' }, { ev: 'pong' }, 5000)
    // close() ends the registrations: both exit by themselves.
    a.send({ cmd: 'close' })
    b.send({ cmd: 'close' })
    await a.waitFor({ ev: 'closed' }, 5000, 'A closed')
    await b.waitFor({ ev: 'closed' }, 5000, 'B closed')
    const [ea, eb] = await Promise.all([a.exited, b.exited])
    assert.deepStrictEqual([ea.code, eb.code], [0, 0])
    assert.ok(ms(ea.t - a.find({ ev: 'closed' })[0].t) < 3000, 'A exits soon after close()')
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [])
  })

  it('exits on its own after its last remove()', async () => {
    const prefix = uniquePrefix('exit')
    const a = host({ prefix, names: ['x', 'y'] }, 'A')
    await a.waitFor({ ev: 'start', name: 'y' }, 5000, 'A start y')
    await a.request({ cmd: 'remove', name: 'x' }, { ev: 'removed', name: 'x' }, 5000)
    // One singleton left: still alive (proved by an answer after the remove).
    await a.request({ cmd: 'ping' }, { ev: 'pong' }, 5000)
    assert.ok(a.alive)
    const removed = await a.request({ cmd: 'remove', name: 'y' }, { ev: 'removed', name: 'y' }, 5000)
    const exit = await within(a.exited, 5000, 'the host did not exit within 5 s of its last remove()')
    assert.strictEqual(exit.code, 0)
    assert.ok(ms(exit.t - removed.t) < 3000, `exited ${ms(exit.t - removed.t)} ms after the last remove`)
  })

  it('process.exit() in the leader hands over well under the TTL', async (t) => {
    const prefix = uniquePrefix('pexit')
    const ttl = 10
    const a = host({ prefix, names: ['x'], ttl }, 'A')
    await a.waitFor({ ev: 'start', name: 'x' }, 5000, 'A start')
    const b = host({ prefix, names: ['x'], ttl }, 'B')
    await queued(etcd, b, { prefix, names: ['x'], timeoutMs: 5000 })
    a.send({ cmd: 'exit', code: 0 })
    const exiting = await a.waitFor({ ev: 'exiting' }, 5000, 'A exiting')
    const start = await b.waitFor({ ev: 'start', name: 'x' }, ttl * 1000 + 2000, 'B start')
    const handover = ms(start.t - exiting.t)
    t.diagnostic(`process.exit() handover: ${handover.toFixed(1)} ms (ttl ${ttl} s)`)
    assert.ok(handover < 5000, `B started ${handover.toFixed(0)} ms after A's process.exit() (ttl ${ttl} s)`)
    assert.strictEqual((await a.exited).code, 0)
    assertOneLeaderAtATime([a, b], 'x')
  })

  it('a terminated worker_threads worker does not keep its lease alive', async (t) => {
    const prefix = uniquePrefix('worker')
    const ttl = 10
    const w = spawnHost({ endpoints: etcd.endpoints, ttl, prefix, names: ['x'] }, 'W', { script: path.join(__dirname, 'helpers', 'worker-host.js') })
    await w.waitFor({ ev: 'start', name: 'x' }, 5000, 'the worker leads')
    const b = host({ prefix, names: ['x'], ttl }, 'B')
    await queued(etcd, b, { prefix, names: ['x'], timeoutMs: 5000 })
    w.send({ cmd: 'terminate' })
    const terminated = await w.waitFor({ ev: 'terminated' }, 5000, 'worker terminated')
    const start = await b.waitFor({ ev: 'start', name: 'x' }, ttl * 1000 + 2000, 'B start')
    const handover = ms(start.t - BigInt(terminated.since))
    t.diagnostic(`worker.terminate() handover: ${handover.toFixed(1)} ms (ttl ${ttl} s)`)
    assert.ok(handover < 5000, `B started ${handover.toFixed(0)} ms after the worker was terminated (ttl ${ttl} s): the worker's lease stayed alive`)
    // The process that hosted the worker is fine.
    const pong = await w.request({ cmd: 'ping' }, { ev: 'pong' }, 5000)
    assert.strictEqual(pong.workerGone, true)
    // And no keepalive from the dead worker renews a key: only B's key is left.
    const kvs = await etcd.keys(`${prefix}/x/`)
    assert.deepStrictEqual(kvs.map((kv) => kv.value), [b.id])
  })
})
