'use strict'
// Chaos: a second etcd client (an operator's etcdctl) revokes a host's
// lease or deletes its key.
// - A leader whose lease is revoked, or whose key is deleted, stops at once, campaigns again with a
//   live lease and leads again when its turn comes (at once when it is the only candidate).
// - A waiting candidate whose lease is revoked never starts on its stale key (pitfall 2 of
//   docs/pitfalls.md), whether the leader goes by remove() or by a crash, and rejoins with a fresh
//   lease.
// An outside deletion reaches the old leader and its successor through the same etcd watch at the
// same moment, so the old leader cannot always stop before the successor starts: that overlap is
// measured and must be short (it is the only overlap this suite accepts, apart from frozen hosts).
// Exact figures go to the diagnostics as '# metric {...}' lines.

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const { startEtcd, keyOf } = require('../helpers/etcd')
const { killAll, now, ms, formatTimeline, assertOneLeaderAtATime, leadershipReport, queueHosts } = require('../helpers/hosts')
const { uniquePrefix, quietWindow, metric, SAME_EVENT_MS } = require('../helpers/util')

let etcd

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await killAll()
  if (etcd) await etcd.close()
})
afterEach(killAll)

// How soon "at once" is: the old leader hears of the deletion through its watch, like everyone,
// so it stops (and the overlap with its successor ends) within the scheduling delay of one watch
// event; learning of it at its next keepalive (every TTL/3, 1.7 s here) would be far later.
const AT_ONCE_MS = SAME_EVENT_MS

const startsAfter = (h, name, t) => h.find((e) => e.ev === 'start' && e.name === name && e.t > t)

describe('chaos: lease revoked or key deleted from outside', { timeout: 90000 }, () => {
  it('a leader\'s lease revoked from outside: stop at once, campaign again with a live lease, lead again', async (t) => {
    const ttl = 5
    const prefix = uniquePrefix('s5revoke')
    const [a] = await queueHosts(etcd, ['A'], { prefix, ttl, names: ['n0', 'solo'] })
    const [b] = await queueHosts(etcd, ['B'], { prefix, ttl, names: ['n0'] })
    await a.waitFor({ ev: 'start', name: 'n0' }, 5000, 'A leads n0')
    await a.waitFor({ ev: 'start', name: 'solo' }, 5000, 'A leads solo')
    const stale = keyOf(await etcd.keys(`${prefix}/n0/`), a.id)
    const t0 = now()
    await etcd.revoke(stale.leaseHex)
    const t1 = now()
    const stops = {}
    for (const name of ['n0', 'solo']) {
      const stop = await a.waitFor({ ev: 'stop', name }, ttl * 1000, `A stops ${name} after its lease was revoked`)
      stops[name] = stop
      // Either reason can come first (see the next test and the README's stop reasons).
      assert.ok(['lease-lost', 'key-deleted'].includes(stop.reason), `${name}: stop reason ${stop.reason}`)
      assert.ok(ms(stop.t - t1) < AT_ONCE_MS, `${name}: A stopped ${ms(stop.t - t1).toFixed(0)} ms after the revoke returned`)
    }
    const bStart = await b.waitFor({ ev: 'start', name: 'n0' }, 5000, 'B takes over n0')
    // A campaigns again with a new lease that is alive, and leads solo again by itself.
    const solo = await a.waitFor((e) => e.ev === 'start' && e.name === 'solo' && e.t > t0, 5000, 'A leads solo again')
    const fresh = await etcd.waitKeys(`${prefix}/n0/`, (kvs) => keyOf(kvs, a.id), 5000, 'A back in the queue of n0')
    assert.notStrictEqual(fresh.leaseHex, stale.leaseHex, 'a new lease')
    assert.ok(await etcd.leaseTtl(fresh.leaseHex) > 0, 'the new lease is alive')
    assert.ok(keyOf(await etcd.keys(`${prefix}/n0/`), b.id).createRevision < fresh.createRevision, 'A queues behind B')
    const soloKey = keyOf(await etcd.keys(`${prefix}/solo/`), a.id)
    assert.strictEqual(soloKey.leaseHex, fresh.leaseHex)
    assert.strictEqual(solo.token, soloKey.createRevision, 'A leads solo on its fresh key')
    assert.deepStrictEqual(startsAfter(a, 'n0', t0), [], 'A does not lead n0 while B does')
    // When B goes, A leads n0 again on its fresh key.
    b.send({ cmd: 'remove', name: 'n0' })
    const again = await a.waitFor((e) => e.ev === 'start' && e.name === 'n0' && e.t > t0, 5000, 'A leads n0 again after B removed')
    assert.strictEqual(again.token, fresh.createRevision)
    // The one overlap an outside revoke can cause: both learned of it from the same watch.
    const report = leadershipReport([a, b], 'n0')
    assert.ok(report.maxOverlapMs < AT_ONCE_MS, `overlap ${report.maxOverlapMs.toFixed(1)} ms\n${formatTimeline([a, b])}`)
    assertOneLeaderAtATime([a, b], 'n0', { allowOverlapMs: AT_ONCE_MS })
    assertOneLeaderAtATime([a, b], 'solo')
    metric(t, 'outside-leader-lease-revoked', {
      overlapMs: report.maxOverlapMs,
      stopAfterRevokeMs: ms(stops.n0.t - t0),
      successorStartAfterRevokeMs: ms(bStart.t - t0),
      // The only candidate of solo leads again this long after the revoke began.
      faultEndToLeaderMs: ms(solo.t - t0),
      reasons: `${stops.n0.reason}/${stops.solo.reason}`
    })
  })

  // A revoke deletes the lease's keys, and that deletion reaches the leader through its watch
  // before anything asks etcd about the lease: the leader stops at once, with the reason it saw
  // ('key-deleted', as the README says), and then learns the lease is gone when it campaigns again.
  it('a leader whose lease is revoked from outside stops at once (key-deleted) and rejoins with a new lease', async () => {
    const prefix = uniquePrefix('s5reason')
    const [a] = await queueHosts(etcd, ['A'], { prefix, ttl: 5, names: ['n0'] })
    const first = await a.waitFor({ ev: 'start', name: 'n0' }, 5000, 'A leads n0')
    const lease = keyOf(await etcd.keys(`${prefix}/n0/`), a.id).leaseHex
    await etcd.revoke(lease)
    const stop = await a.waitFor({ ev: 'stop', name: 'n0' }, 5000, 'A stops')
    assert.strictEqual(stop.reason, 'key-deleted')
    const again = await a.waitFor((e) => e.ev === 'start' && e.name === 'n0' && e.t > stop.t, 10000, 'A leads again')
    assert.ok(again.token > first.token, 'a new term with a higher token')
    const key = keyOf(await etcd.keys(`${prefix}/n0/`), a.id)
    assert.notStrictEqual(key.leaseHex, lease, 'on a new lease')
  })

  it('a leader\'s key deleted from outside (etcdctl del): stop key-deleted at once, campaign again on the same lease, lead again', async (t) => {
    const ttl = 5
    const prefix = uniquePrefix('s5del')
    const [a] = await queueHosts(etcd, ['A'], { prefix, ttl, names: ['n0', 'solo'] })
    const [b] = await queueHosts(etcd, ['B'], { prefix, ttl, names: ['n0'] })
    await a.waitFor({ ev: 'start', name: 'n0' }, 5000, 'A leads n0')
    await a.waitFor({ ev: 'start', name: 'solo' }, 5000, 'A leads solo')
    const lease = keyOf(await etcd.keys(`${prefix}/n0/`), a.id).leaseHex

    // solo: A is the only candidate, so it leads again at once on a new key.
    const oldSolo = keyOf(await etcd.keys(`${prefix}/solo/`), a.id)
    let t0 = now()
    assert.strictEqual(await etcd.del(oldSolo.key), 1)
    let t1 = now()
    const soloStop = await a.waitFor((e) => e.ev === 'stop' && e.name === 'solo' && e.t > t0, 5000, 'A stops solo')
    assert.strictEqual(soloStop.reason, 'key-deleted')
    assert.ok(ms(soloStop.t - t1) < AT_ONCE_MS, `A stopped solo ${ms(soloStop.t - t1).toFixed(0)} ms after the delete returned`)
    const soloAgain = await a.waitFor((e) => e.ev === 'start' && e.name === 'solo' && e.t > soloStop.t, 5000, 'A leads solo again')
    const newSolo = keyOf(await etcd.keys(`${prefix}/solo/`), a.id)
    assert.strictEqual(newSolo.leaseHex, lease, 'the same (live) lease')
    assert.ok(newSolo.createRevision > oldSolo.createRevision)
    assert.strictEqual(soloAgain.token, newSolo.createRevision, 'a new term on the new key')
    const soloBackMs = ms(soloAgain.t - t0)
    assert.deepStrictEqual(a.find((e) => e.ev === 'stop' && e.name === 'n0'), [], 'n0 is not affected by the delete of solo\'s key')

    // n0: B takes over, A queues behind it on the same lease.
    const oldN0 = keyOf(await etcd.keys(`${prefix}/n0/`), a.id)
    t0 = now()
    assert.strictEqual(await etcd.del(oldN0.key), 1)
    t1 = now()
    const n0Stop = await a.waitFor({ ev: 'stop', name: 'n0' }, 5000, 'A stops n0')
    assert.strictEqual(n0Stop.reason, 'key-deleted')
    assert.ok(ms(n0Stop.t - t1) < AT_ONCE_MS, `A stopped n0 ${ms(n0Stop.t - t1).toFixed(0)} ms after the delete returned`)
    const bStart = await b.waitFor({ ev: 'start', name: 'n0' }, 5000, 'B takes over n0')
    const requeued = await etcd.waitKeys(`${prefix}/n0/`, (kvs) => keyOf(kvs, a.id), 5000, 'A back in the queue of n0')
    assert.strictEqual(requeued.leaseHex, lease)
    assert.ok(keyOf(await etcd.keys(`${prefix}/n0/`), b.id).createRevision < requeued.createRevision, 'A queues behind B')
    assert.deepStrictEqual(startsAfter(a, 'n0', t0), [], 'A does not lead n0 while B does')
    assert.strictEqual(a.find((e) => e.ev === 'stop' && e.name === 'solo').length, 1, 'solo is not affected by the delete of n0\'s key')
    b.send({ cmd: 'remove', name: 'n0' })
    const again = await a.waitFor((e) => e.ev === 'start' && e.name === 'n0' && e.t > t0, 5000, 'A leads n0 again after B removed')
    assert.strictEqual(again.token, requeued.createRevision)
    const report = leadershipReport([a, b], 'n0')
    assert.ok(report.maxOverlapMs < AT_ONCE_MS, `overlap ${report.maxOverlapMs.toFixed(1)} ms\n${formatTimeline([a, b])}`)
    assertOneLeaderAtATime([a, b], 'n0', { allowOverlapMs: AT_ONCE_MS })
    assertOneLeaderAtATime([a, b], 'solo')
    metric(t, 'outside-leader-key-deleted', {
      overlapMs: report.maxOverlapMs,
      stopAfterDeleteMs: ms(n0Stop.t - t0),
      successorStartAfterDeleteMs: ms(bStart.t - t0),
      faultEndToLeaderMs: soloBackMs
    })
  })

  it('a waiting candidate whose lease was revoked does not start on its stale key when the leader crashes', async (t) => {
    const ttl = 2
    const prefix = uniquePrefix('s5crash')
    const hosts = await queueHosts(etcd, ['A', 'B', 'C'], { prefix, ttl, names: ['n0'] })
    const [a, b, c] = hosts
    await a.waitFor({ ev: 'start', name: 'n0' }, 5000, 'A leads')
    const staleB = keyOf(await etcd.keys(`${prefix}/n0/`), b.id)
    const cKey = keyOf(await etcd.keys(`${prefix}/n0/`), c.id)
    await etcd.revoke(staleB.leaseHex)
    a.kill('SIGKILL')
    const crashed = now()
    const cStart = await c.waitFor({ ev: 'start', name: 'n0' }, ttl * 1000 + 3000, 'C takes over after A\'s lease expired')
    assert.strictEqual(cStart.token, cKey.createRevision)
    const fresh = await etcd.waitKeys(`${prefix}/n0/`, (kvs) => keyOf(kvs, b.id), ttl * 1000 + 2000, 'B\'s new key')
    assert.notStrictEqual(fresh.leaseHex, staleB.leaseHex, 'B rejoined with a fresh lease')
    assert.ok(fresh.createRevision > cKey.createRevision, 'B queues behind C')
    await quietWindow(1000)
    assert.deepStrictEqual(b.find({ ev: 'start' }), [], `the revoked candidate never started\n${formatTimeline(hosts)}`)
    // B leads on its fresh key once C goes.
    c.send({ cmd: 'remove', name: 'n0' })
    const bStart = await b.waitFor({ ev: 'start', name: 'n0' }, 5000, 'B leads after C removed')
    assert.strictEqual(bStart.token, fresh.createRevision, 'B leads on its fresh key')
    const report = leadershipReport(hosts, 'n0')
    assert.strictEqual(report.maxOverlapMs, 0)
    assertOneLeaderAtATime(hosts, 'n0')
    metric(t, 'outside-revoked-waiter-leader-crashed', {
      overlapMs: report.maxOverlapMs,
      minGapMs: report.minGapMs,
      faultEndToLeaderMs: ms(cStart.t - crashed)
    })
  })

  it('a waiting candidate revoked just before the leader resigns, repeated: it only ever starts on a fresh key', async (t) => {
    const ttl = 3
    // Delays between the revoke (confirmed by etcd) and the leader's remove(): each round catches
    // the revoked candidate at another point of its reaction (watch event, campaign, re-grant).
    const delays = [0, 0, 2, 5, 10, 20]
    const rounds = delays.length
    const fromRemove = []
    let maxOverlapMs = 0
    for (let round = 0; round < rounds; round++) {
      const prefix = uniquePrefix(`s5race${round}`)
      const hosts = await queueHosts(etcd, ['A', 'B'], { prefix, ttl, names: ['n0'] })
      const [a, b] = hosts
      await a.waitFor({ ev: 'start', name: 'n0' }, 5000, 'A leads')
      const staleB = keyOf(await etcd.keys(`${prefix}/n0/`), b.id)
      await etcd.revoke(staleB.leaseHex)
      if (delays[round] > 0) await quietWindow(delays[round])
      const removedAt = now()
      a.send({ cmd: 'remove', name: 'n0' })
      // B is the only candidate left: it leads, but only on a new key bound to a new lease.
      const bStart = await b.waitFor({ ev: 'start', name: 'n0' }, ttl * 1000 + 3000, 'B leads on a fresh key')
      const kvs = await etcd.keys(`${prefix}/n0/`)
      const fresh = keyOf(kvs, b.id)
      assert.ok(fresh, `B has a key\n${formatTimeline(hosts)}`)
      assert.notStrictEqual(fresh.leaseHex, staleB.leaseHex, 'on a new lease')
      assert.notStrictEqual(bStart.token, staleB.createRevision, `round ${round}: B started on its stale key\n${formatTimeline(hosts)}`)
      assert.strictEqual(bStart.token, fresh.createRevision, `round ${round}: B leads on its fresh key`)
      assert.strictEqual(b.find({ ev: 'start' }).length, 1)
      fromRemove.push(ms(bStart.t - removedAt))
      maxOverlapMs = Math.max(maxOverlapMs, leadershipReport(hosts, 'n0').maxOverlapMs)
      assertOneLeaderAtATime(hosts, 'n0')
      await killAll()
    }
    t.diagnostic(`B started ${fromRemove.map((x) => x.toFixed(0)).join(', ')} ms after A's remove, ${delays.join(', ')} ms after the revoke (ttl ${ttl} s)`)
    metric(t, 'outside-revoked-waiter-race', { overlapMs: maxOverlapMs, rounds, faultEndToLeaderMs: Math.max(...fromRemove) })
  })
})
