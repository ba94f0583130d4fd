'use strict'
// The locked@2.x value-consensus API (`locker({ id, path, value, ttl })`), written from its
// documented behaviour, on etcd v3 and without its bugs: no flapping while idle, stop() hands over
// at once, errors are events and never end participation.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const locked = require('..')
const { startEtcd, freePorts } = require('./helpers/etcd')
const { uniquePrefix, nextEvent, quietWindow } = require('./helpers/util')

const TTL = 2
let etcd
const cleanup = []

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  for (const fn of cleanup.reverse()) await fn()
  if (etcd) await etcd.close()
})

// Events of a node in the order they were emitted, numbered across all nodes of this process
// (seq), so the order of two nodes' events can be compared exactly.
let seq = 0
function record (node) {
  const events = []
  for (const name of ['change', 'select', 'deselect', 'refresh', 'ping', 'error']) {
    node.on(name, (...args) => events.push({ name, args, t: Date.now(), seq: ++seq }))
  }
  cleanup.push(() => node.stop())
  return events
}

describe('locked@2.x nodes', { timeout: 60000 }, () => {
  it('a single node gets change, select and refresh with the right id(), value() and isSelected()', async () => {
    const locker = locked(etcd.endpoints.join(','))
    const node = locker({ id: 'node1', path: `/${uniquePrefix('single')}`, value: 10, ttl: TTL })
    const events = record(node)
    assert.strictEqual(node.id(), null, 'no elected node before start')
    assert.strictEqual(node.value(), null)
    assert.strictEqual(node.isSelected(), false)
    assert.strictEqual(node.localid(), 'node1')
    assert.strictEqual(node.localvalue(), 10, 'as given, like locked@2.x')
    assert.strictEqual(node.localdata(), 'node1:::10')
    const changed = nextEvent(node, 'change', 5000, 'change')
    const selected = nextEvent(node, 'select', 5000, 'select')
    node.start()
    assert.deepStrictEqual(await changed, ['10', 'node1'])
    assert.deepStrictEqual(await selected, ['10', 'node1'])
    assert.strictEqual(node.isSelected(), true)
    assert.strictEqual(node.id(), 'node1')
    assert.strictEqual(node.value(), '10')
    assert.deepStrictEqual(await nextEvent(node, 'refresh', 5000, 'refresh'), ['10', 'node1'])
    assert.deepStrictEqual(await nextEvent(node, 'ping', 5000, 'ping'), ['10', 'node1'])
    const stopped = nextEvent(node, 'deselect', 5000, 'deselect')
    await node.stop()
    await stopped
    assert.strictEqual(node.isSelected(), false)
    assert.deepStrictEqual(events.filter((e) => e.name === 'error'), [])
  })

  it('two competing nodes: the leader stops, the other takes over at once and value()/id() follow', async () => {
    const locker = locked([etcd.endpoints[0]])
    const path = `/${uniquePrefix('two')}`
    const a = locker({ id: 'a', path, value: 'A', ttl: TTL })
    const b = locker({ id: 'b', path, value: 'B', ttl: TTL })
    const eventsA = record(a)
    const eventsB = record(b)
    const aSelected = nextEvent(a, 'select', 5000, 'a select')
    a.start()
    await aSelected
    const bSeesA = nextEvent(b, 'change', 5000, 'b learns the value of a')
    b.start()
    assert.deepStrictEqual(await bSeesA, ['A', 'a'])
    assert.strictEqual(b.isSelected(), false)
    assert.strictEqual(b.value(), 'A')
    assert.strictEqual(b.id(), 'a')

    const bSelected = nextEvent(b, 'select', 5000, 'b select')
    const aDeselected = nextEvent(a, 'deselect', 5000, 'a deselect')
    const stoppedAt = Date.now()
    await a.stop()
    await aDeselected
    assert.deepStrictEqual(await bSelected, ['B', 'b'])
    const handover = Date.now() - stoppedAt
    assert.ok(handover < TTL * 1000, `stop() hands over at once, not after the TTL (took ${handover} ms)`)
    assert.strictEqual(b.isSelected(), true)
    assert.strictEqual(b.value(), 'B')
    assert.strictEqual(b.id(), 'b')
    const change = eventsB.filter((e) => e.name === 'change').map((e) => e.args)
    assert.deepStrictEqual(change, [['A', 'a'], ['B', 'b']])
    // One leader at a time: b is selected only after a was deselected.
    const deselectA = eventsA.find((e) => e.name === 'deselect')
    const selectB = eventsB.find((e) => e.name === 'select')
    assert.ok(deselectA.seq < selectB.seq, `b selected (#${selectB.seq}) before a was deselected (#${deselectA.seq})`)
  })

  it('two nodes idle for several TTLs: no change and no deselect', async () => {
    const locker = locked(etcd.endpoints)
    const path = `/${uniquePrefix('idle')}`
    const a = locker({ id: 'a', path, value: 1, ttl: TTL })
    const b = locker({ id: 'b', path, value: 2, ttl: TTL })
    const eventsA = record(a)
    const eventsB = record(b)
    const selected = nextEvent(a, 'select', 5000, 'a select')
    a.start()
    await selected
    const seen = nextEvent(b, 'change', 5000, 'b learns the value')
    b.start()
    await seen
    const marks = new Map([[eventsA, eventsA.length], [eventsB, eventsB.length]])
    await quietWindow(3 * TTL * 1000)
    const after = (events, name) => events.slice(marks.get(events)).filter((e) => e.name === name)
    assert.deepStrictEqual(after(eventsA, 'change'), [], 'no change while idle (leader)')
    assert.deepStrictEqual(after(eventsB, 'change'), [], 'no change while idle (follower)')
    assert.deepStrictEqual(after(eventsA, 'deselect'), [], 'no deselect while idle')
    assert.ok(after(eventsA, 'refresh').length >= 3, 'the leader kept refreshing its term')
    assert.ok(after(eventsB, 'ping').length >= 3, 'the follower kept confirming the leader')
    assert.strictEqual(a.isSelected(), true)
  })

  it('an invalid host gives error events, and the node keeps trying', async () => {
    const [closedPort] = await freePorts(1)
    const locker = locked(`127.0.0.1:${closedPort}`)
    const node = locker({ path: '/nowhere', value: 'x', ttl: TTL })
    const events = record(node)
    const [err] = await (node.start(), nextEvent(node, 'error', 10000, 'error'))
    assert.ok(err instanceof Error)
    assert.strictEqual(err.code, 'ETCD_UNAVAILABLE')
    assert.strictEqual(events.filter((e) => e.name === 'select').length, 0)
    assert.match(node.localid(), /^[0-9a-f-]{36}$/, 'an id is generated when none is given')
  })

  it('bad options throw at locker(opts), with the codes of the rest: TypeError for a type, RangeError for a value', async () => {
    const locker = locked(etcd.endpoints)
    const cases = [
      [{ value: 1 }, TypeError, /opts\.path/],
      [{ path: 5, value: 1 }, TypeError, /opts\.path/],
      [{ path: '/p' }, TypeError, /opts\.value is required/],
      [{ path: '/p', value: null }, TypeError, /opts\.value is required/],
      [{ path: '/p', value: 1, id: 5 }, TypeError, /opts\.id/],
      [{ path: '/p', value: 1, ttl: '5' }, TypeError, /opts\.ttl/],
      [{ path: '', value: 1 }, RangeError, /opts\.path must not be empty/],
      [{ path: '/', value: 1 }, RangeError, /opts\.path must not be empty/],
      [{ path: '/p', value: 1, id: '' }, RangeError, /opts\.id/],
      [{ path: '/p', value: 1, id: 'a:::b' }, RangeError, /opts\.id/],
      [{ path: '/p', value: 1, ttl: 1 }, RangeError, /opts\.ttl/],
      [{ path: '/p', value: 1, ttl: 2.5 }, RangeError, /opts\.ttl/],
      [{ path: '/p', value: 1, ttl: 3601 }, RangeError, /opts\.ttl/]
    ]
    for (const [opts, Class, message] of cases) {
      const label = JSON.stringify(opts)
      assert.throws(() => locker(opts), (err) => {
        assert.strictEqual(err.constructor, Class, `${label}: a ${Class.name}, got ${err.constructor.name}`)
        assert.strictEqual(err.code, Class === TypeError ? 'ERR_INVALID_ARG_TYPE' : 'ERR_OUT_OF_RANGE', `${label}: its code`)
        assert.match(err.message, message, `${label}: the message names the option`)
        return true
      }, label)
    }
    assert.deepStrictEqual(locker.singletons(), {}, 'nothing was registered')
    await locker.close()
  })

  it('singletons and nodes work side by side on one locker', async () => {
    const locker = locked(etcd.endpoints, { prefix: uniquePrefix('both'), ttl: TTL })
    const node = locker({ id: 'n', path: `/${uniquePrefix('both')}`, value: 'v', ttl: TTL })
    record(node)
    const selected = nextEvent(node, 'select', 5000, 'node select')
    node.start()
    const singleton = locker('job')
    const [term] = await nextEvent(singleton, 'start', 5000, 'singleton start')
    await selected
    assert.strictEqual(typeof term.token, 'number')
    assert.strictEqual(node.isSelected(), true)
    await singleton.remove()
    await locker.close()
  })
})
