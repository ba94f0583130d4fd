'use strict'
// Faults between a host and etcd: partitions (pitfall 4), a paused leader (5), remove() during an
// outage (6), and etcd down for longer than the TTL (10): the pitfalls of those numbers in
// docs/pitfalls.md.

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const { startEtcd, keyOf } = require('./helpers/etcd')
const { startProxy, closeProxies } = require('./helpers/proxy')
const { killAll, now, ms, formatTimeline, assertOneLeaderAtATime, waitForAny, leaderAndFollower } = require('./helpers/hosts')
const { uniquePrefix, quietWindow, until, assertDeadlineStop, RESUME_PROMPT_MS, OUTSIDE_PROMPT_MS } = require('./helpers/util')

let etcd

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await killAll()
  await closeProxies()
  if (etcd) await etcd.close()
})
afterEach(async () => {
  await killAll()
  await etcd.heal()
})

// How long A may take to be elected, and B to be queued behind it: an idle etcd answers at once.
const SETUP_MS = 5000

describe('faults between hosts and etcd', { timeout: 90000 }, () => {
  for (const mode of ['blackhole', 'reset']) {
    it(`pitfall 4: a leader cut off from etcd (${mode}) stops before anyone else starts`, async (t) => {
      const ttl = 2
      const prefix = uniquePrefix(`p4${mode}`)
      const p = await startProxy(etcd.endpoints[0])
      const [a, b] = await leaderAndFollower(etcd, { prefix, ttl, leader: { endpoints: [p.endpoint] }, timeoutMs: SETUP_MS })
      const cut = now()
      p.mode(mode)
      const stop = await a.waitFor({ ev: 'stop', name: 'job' }, ttl * 1000 + 1000, 'A stops at its deadline')
      const start = await b.waitFor({ ev: 'start', name: 'job' }, ttl * 1000 + 3000, 'B takes over')
      t.diagnostic(`cut at 0: A stop (${stop.reason}) at ${ms(stop.t - cut).toFixed(0)} ms, B start at ${ms(start.t - cut).toFixed(0)} ms; margin ${ms(start.t - stop.t).toFixed(0)} ms`)
      assert.strictEqual(stop.reason, 'deadline')
      // At the deadline: TTL - margin after A's last answered keepalive was sent, before the cut.
      assertDeadlineStop({ sinceRenewalMs: stop.sinceRenewalMs, at: stop.t, outageAt: cut, ttl, label: 'A' })
      assert.ok(stop.t < start.t, `A must stop before B starts\n${formatTimeline([a, b])}`)
      // Back on the network, A rejoins the queue behind B by itself.
      p.mode('pass')
      await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, a.id) && keyOf(kvs, b.id) && keyOf(kvs, b.id).createRevision < keyOf(kvs, a.id).createRevision, 15000, 'A back in the queue behind B')
      assert.deepStrictEqual(b.find({ ev: 'stop' }), [], 'B undisturbed')
      b.send({ cmd: 'remove', name: 'job' })
      await a.waitFor((e) => e.ev === 'start' && e.name === 'job' && e.t > start.t, 5000, 'A leads again after B removed')
      assertOneLeaderAtATime([a, b], 'job')
    })
  }

  it('pitfall 5: a leader paused longer than the TTL stops as soon as it resumes', async (t) => {
    const ttl = 2
    const prefix = uniquePrefix('p5')
    const [a, b] = await leaderAndFollower(etcd, { prefix, ttl, timeoutMs: SETUP_MS })
    const paused = now()
    a.kill('SIGSTOP')
    let resumed
    try {
      await b.waitFor({ ev: 'start', name: 'job' }, ttl * 1000 + 3000, 'B start while A is paused')
    } finally {
      resumed = now()
      a.kill('SIGCONT')
    }
    const stop = await a.waitFor({ ev: 'stop', name: 'job' }, 2000, 'A stop after resuming')
    const late = ms(stop.t - resumed)
    t.diagnostic(`paused ${ms(resumed - paused).toFixed(0)} ms; stop (${stop.reason}) ${late.toFixed(1)} ms after SIGCONT`)
    assert.ok(late < RESUME_PROMPT_MS, `A noticed ${late.toFixed(0)} ms after resuming`)
    assert.strictEqual(stop.reason, 'deadline')
    assert.strictEqual(a.find({ ev: 'fn' }).length, 1, 'A did not run fn again')
    // A rejoins behind B, and B is not disturbed.
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, a.id) && keyOf(kvs, b.id).createRevision < keyOf(kvs, a.id).createRevision, 10000, 'A back in the queue behind B')
    assert.deepStrictEqual(b.find({ ev: 'stop' }), [])
    assert.strictEqual(a.find({ ev: 'start' }).length, 1, 'A did not start again while B leads')
  })

  for (const mode of ['reset', 'blackhole']) {
    it(`pitfall 6: remove() while etcd is unreachable (${mode}) completes when it is back, long before the TTL`, async (t) => {
      const ttl = 10
      const prefix = uniquePrefix(`p6${mode}`)
      const p = await startProxy(etcd.endpoints[0])
      const [a, b] = await leaderAndFollower(etcd, { prefix, ttl, leader: { endpoints: [p.endpoint] }, timeoutMs: SETUP_MS })
      p.mode(mode)
      const stop = await a.request({ cmd: 'remove', name: 'job' }, { ev: 'stop', name: 'job' }, 1000, 'A stop on remove()')
      assert.strictEqual(stop.reason, 'removed')
      // A brief outage (a deliberate window): the delete cannot reach etcd.
      await quietWindow(1000)
      assert.deepStrictEqual(a.find({ ev: 'removed' }), [], 'remove() must not resolve before etcd confirmed')
      assert.ok(keyOf(await etcd.keys(`${prefix}/job/`), a.id), 'A\'s key is still there during the outage')
      const healed = now()
      p.mode('pass')
      const removed = await a.waitFor({ ev: 'removed', name: 'job' }, ttl * 1000, 'A remove() resolved after the outage')
      const start = await b.waitFor({ ev: 'start', name: 'job' }, ttl * 1000, 'B start')
      t.diagnostic(`after healing: removed in ${ms(removed.t - healed).toFixed(0)} ms, B start in ${ms(start.t - healed).toFixed(0)} ms (ttl ${ttl} s)`)
      assert.ok(ms(start.t - healed) < 5000, 'B must start long before A\'s lease could expire')
      assert.deepStrictEqual((await etcd.keys(`${prefix}/job/`)).map((kv) => kv.value), [b.id])
      assertOneLeaderAtATime([a, b], 'job')
    })
  }

  // A leader learns that its key was deleted from outside from the locker's watch. After an outage
  // that watch must come back as soon as etcd answers again, not when its retry backoff, grown
  // during the outage, happens to run out: until then a successor that saw the deletion leads
  // beside it. Here the deletion comes right after etcd answered A's keepalive again, when A's
  // watch should be back too, so A must stop within a fraction of the soak's OUTSIDE_PROMPT_MS.
  // Several rounds, because where the backoff stands when etcd returns is chance.
  it('after connections were reset, a leader sees its key deleted from outside promptly', async (t) => {
    const ttl = 10
    const prefix = uniquePrefix('reset-watch')
    const names = ['r0', 'r1', 'r2', 'r3', 'r4']
    const promptMs = OUTSIDE_PROMPT_MS / 2
    const p = await startProxy(etcd.endpoints[0])
    const [a, b] = await leaderAndFollower(etcd, { prefix, ttl, names, leader: { endpoints: [p.endpoint] }, timeoutMs: SETUP_MS })
    const lags = []
    for (const name of names) {
      p.mode('reset')
      // Long enough for the retry backoffs of A to grow to their cap; far short of A's deadline.
      await quietWindow(4000)
      p.mode('pass')
      const healed = now()
      await until(async () => {
        const s = await a.request({ cmd: 'stats' }, { ev: 'stats' }, 2000)
        return s.sinceRenewalMs !== null && s.sinceRenewalMs < ms(now() - healed)
      }, 5000, 'A renews its lease after the outage')
      const key = keyOf(await etcd.keys(`${prefix}/${name}/`), a.id)
      assert.ok(key, `A's key of ${name}`)
      const since = a.mark()
      const deleted = now()
      assert.strictEqual(await etcd.del(key.key), 1)
      const stop = await a.waitFor({ ev: 'stop', name }, ttl * 1000, `A stops ${name}`, { since })
      await b.waitFor({ ev: 'start', name }, 5000, `B takes over ${name}`)
      lags.push(Math.round(ms(stop.t - deleted)))
      assert.strictEqual(stop.reason, 'key-deleted')
    }
    t.diagnostic(`deletion -> A's stop, per round: ${lags.join(', ')} ms`)
    for (const [i, lag] of lags.entries()) {
      assert.ok(lag < promptMs, `round ${i}: A stopped ${lag} ms after its key was deleted (allowed ${promptMs} ms)\n${formatTimeline([a, b])}`)
    }
  })

  it('pitfall 10: etcd down for longer than the TTL; when it is back exactly one host starts, without user action', async (t) => {
    const ttl = 2
    const prefix = uniquePrefix('p10')
    const [a, b] = await leaderAndFollower(etcd, { prefix, ttl, timeoutMs: SETUP_MS })
    const member = etcd.members[0]
    const down = now()
    await member.stop()
    const gone = now()
    const stop = await a.waitFor({ ev: 'stop', name: 'job' }, ttl * 1000 + 1000, 'A steps down while etcd is down')
    assert.strictEqual(stop.reason, 'deadline')
    assertDeadlineStop({ sinceRenewalMs: stop.sinceRenewalMs, at: stop.t, outageAt: gone, ttl, label: 'A' })
    // Keep etcd down for two TTLs in all (the length of the outage is the scenario).
    await quietWindow(Math.max(0, 2 * ttl * 1000 - ms(now() - down)))
    const sinceA = a.mark()
    const sinceB = b.mark()
    const up = now()
    await member.start()
    const { host: first, event: start } = await waitForAny([a, b], { ev: 'start', name: 'job' }, 20000, 'a start after etcd is back', { since: [sinceA, sinceB] })
    t.diagnostic(`etcd back; ${first.label} started ${ms(start.t - up).toFixed(0)} ms later`)
    // Exactly one: the other one does not start while the first leads.
    await quietWindow(2 * ttl * 1000)
    const starts = [...a.events.slice(sinceA), ...b.events.slice(sinceB)].filter((e) => e.ev === 'start')
    assert.strictEqual(starts.length, 1, `exactly one start after the outage\n${formatTimeline([a, b])}`)
    assertOneLeaderAtATime([a, b], 'job')
    // Both are still campaigning: the other one takes over when the leader goes.
    const other = first === a ? b : a
    first.send({ cmd: 'remove', name: 'job' })
    await other.waitFor((e) => e.ev === 'start' && e.name === 'job' && e.t > start.t, 10000, `${other.label} takes over`)
    assertOneLeaderAtATime([a, b], 'job')
  })
})
