'use strict'
// pause() / resume() (standby) against real etcd: a paused singleton hands its lead to the next in
// line, stays registered without a key and never starts, also when nobody else is left; resume()
// queues it again. A paused locker registers new singletons paused. And the races of a pause with
// its own resume() and with remove().

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const { startEtcd, keyOf } = require('./helpers/etcd')
const { killAll, assertOneLeaderAtATime, queueHosts } = require('./helpers/hosts')
const { uniquePrefix, quietWindow, nextEvent, WRONG_START_WINDOW_MS } = require('./helpers/util')
const { lockerSet } = require('./helpers/lockers')

const TTL = 2

let etcd
const lockers = lockerSet()

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await lockers.closeAll({ waitAtMostMs: 3000 })
  await killAll()
  if (etcd) await etcd.close()
})
afterEach(killAll)

const queue = (labels, options) => queueHosts(etcd, labels, { ttl: TTL, ...options })

describe('pause() and resume() between host processes', { timeout: 60000 }, () => {
  it('a paused leader hands over to the next in line, keeps no key, never starts, and queues again on resume()', async () => {
    const prefix = uniquePrefix('pause')
    const [a, b] = await queue(['A', 'B'], { prefix })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    let since = a.mark()
    a.send({ cmd: 'pause', name: 'job' })
    await a.waitFor({ ev: 'paused', name: 'job' }, 5000, 'A paused', { since })
    const [aStop] = a.find({ ev: 'stop', name: 'job' })
    assert.strictEqual(aStop.reason, 'paused')
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B leads')
    assert.ok(aStop.t < bStart.t)
    assert.ok(!keyOf(await etcd.keys(`${prefix}/job/`), a.id), 'the paused host has no key')
    since = a.mark()
    a.send({ cmd: 'singletons' })
    const { names } = await a.waitFor({ ev: 'singletons' }, 5000, 'A\'s singletons', { since })
    assert.deepStrictEqual(names, ['job'], 'still registered')
    // Nobody else left: the name stays leaderless while A is paused.
    b.send({ cmd: 'remove', name: 'job' })
    await b.waitFor({ ev: 'removed', name: 'job' }, 5000, 'B removed')
    await quietWindow(WRONG_START_WINDOW_MS)
    assert.strictEqual(a.find({ ev: 'start', name: 'job' }).length, 1, 'A did not start while paused')
    assert.deepStrictEqual(await etcd.keys(`${prefix}/job/`), [], 'nobody is queued')
    a.send({ cmd: 'resume', name: 'job' })
    const again = await a.waitFor((e) => e.ev === 'start' && e.name === 'job' && e.i > aStop.i, 5000, 'A leads again after resume()')
    assert.ok(again.token > bStart.token, 'on a new key')
    assertOneLeaderAtATime([a, b], 'job')
  })

  it('a paused candidate leaves the queue: the leader stays, and the candidate is skipped when the leader goes', async () => {
    const prefix = uniquePrefix('pause-candidate')
    const [a, b, c] = await queue(['A', 'B', 'C'], { prefix })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    b.send({ cmd: 'pause', name: 'job' })
    await b.waitFor({ ev: 'paused', name: 'job' }, 5000, 'B paused')
    assert.ok(!keyOf(await etcd.keys(`${prefix}/job/`), b.id), 'B\'s key is gone')
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], 'the leader was not disturbed')
    a.send({ cmd: 'remove', name: 'job' })
    await c.waitFor({ ev: 'start', name: 'job' }, 5000, 'C, next after the paused B, leads')
    await quietWindow(WRONG_START_WINDOW_MS)
    assert.deepStrictEqual(b.find({ ev: 'start' }), [])
    assertOneLeaderAtATime([a, b, c], 'job')
  })
})

describe('pause() and resume() of a locker, and their races', { timeout: 60000 }, () => {
  it('a paused locker pauses what it has and registers new singletons paused; resume() makes them candidates', async () => {
    const prefix = uniquePrefix('pause-locker')
    const l = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'l' })
    const one = l('one', () => {})
    await nextEvent(one, 'start', 5000)
    await l.pause()
    assert.strictEqual(one.isLeader(), false)
    const two = l('two', () => {})
    const starts = []
    for (const s of [one, two]) s.on('start', () => starts.push(s.name))
    await quietWindow(WRONG_START_WINDOW_MS)
    assert.deepStrictEqual(starts, [], 'nothing starts while the locker is paused')
    assert.deepStrictEqual(await etcd.keys(`${prefix}/one/`), [])
    assert.deepStrictEqual(await etcd.keys(`${prefix}/two/`), [], 'a singleton registered while paused never queued')
    assert.deepStrictEqual([l.stats().singletons.one.state, l.stats().singletons.two.state], ['paused', 'paused'])
    const both = Promise.all([nextEvent(one, 'start', 5000), nextEvent(two, 'start', 5000)])
    l.resume()
    await both
    assert.deepStrictEqual([one.isLeader(), two.isLeader()], [true, true])
    assert.deepStrictEqual(l.stats().singletons.one.state, 'leader')
  })

  it('resume() during the drain: the leader never left the queue, and its work starts again on the same token', async () => {
    const prefix = uniquePrefix('pause-resume-drain')
    const l = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'l', drainTimeout: 5000 })
    // The work winds down 300 ms after its signal aborts: the drain of a pause lasts that long.
    const s = l('job', (remove, term) => new Promise((resolve) => term.signal.addEventListener('abort', () => setTimeout(resolve, 300))))
    const [first] = await nextEvent(s, 'start', 5000)
    const key = keyOf(await etcd.keys(`${prefix}/job/`), 'l')
    const stopped = nextEvent(s, 'stop', 5000)
    const paused = s.pause()
    assert.deepStrictEqual(await stopped, ['paused'])
    const again = nextEvent(s, 'start', 5000)
    s.resume()
    await paused
    const [second] = await again
    assert.strictEqual(second.token, first.token, 'the same term')
    assert.deepStrictEqual(keyOf(await etcd.keys(`${prefix}/job/`), 'l'), key, 'the key never went')
    assert.strictEqual(s.isLeader(), true)
  })

  it('resume() right after pause(), before and after the pause went out, and remove() of a paused singleton', async () => {
    const prefix = uniquePrefix('pause-remove')
    const l = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'l' })
    const s = l('job', () => {})
    const [first] = await nextEvent(s, 'start', 5000)
    // In the same tick: even with nothing to drain the pause has not gone out yet.
    let again = nextEvent(s, 'start', 5000)
    let paused = s.pause()
    s.resume()
    await paused
    const [second] = await again
    assert.strictEqual(second.token, first.token, 'the election never left the queue')
    // A turn of the event loop later the native pause is out (its key may be gone or not yet):
    // the resume waits for it, and the host leads again.
    again = nextEvent(s, 'start', 5000)
    paused = s.pause()
    await new Promise(setImmediate)
    s.resume()
    await paused
    await again
    assert.strictEqual(s.isLeader(), true, 'back in the lead')
    assert.strictEqual(l.stats().singletons.job.state, 'leader')
    await s.pause()
    await s.remove()
    assert.deepStrictEqual(l.singletons(), {})
    const s2 = l('job', () => {})
    await nextEvent(s2, 'start', 5000)
    await assert.rejects(s.pause(), { code: 'REMOVED' })
  })
})
