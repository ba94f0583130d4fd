'use strict'
// Chaos: etcd (a single member) goes away.
// - Shorter than the TTL (stopped, killed, or frozen): no leader steps down, nobody else starts.
// - Longer than the TTL, then restarted with the same data: every leader steps down by its
//   deadline, and afterwards exactly one host leads each name, without user action.
// Exact figures go to the diagnostics as '# metric {...}' lines.

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const { startEtcd, keyOf } = require('../helpers/etcd')
const { killAll, now, ms, assertOneLeaderAtATime, waitForAny } = require('../helpers/hosts')
const { uniquePrefix, quietWindow, metric, assertDeadlineStop } = require('../helpers/util')
const { startCompeting, marks, since, leadershipMetric, timelineOf } = require('./common')

let etcd

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await killAll()
  if (etcd) await etcd.close()
})
afterEach(async () => {
  await killAll()
  await etcd.heal()
})

// The step-down deadline is the send time of the last answered keepalive + TTL - margin, and
// keepalives go out every TTL/3: an outage is survived when it ends (etcd answering again) before
// TTL - margin - TTL/3 has passed. A single etcd needs about 1.6 s to come back (it elects itself
// after its election timeout), so the TTL here is 8 s: the window is 8 - 1.2 - 2.7 = 4.1 s, and
// the outages below last about 2 s in all: much shorter than the TTL.
const SHORT_TTL = 8

const OUTAGES = {
  stopped: { down: (m) => m.stop(), up: (m) => m.start(), downMs: 300 },
  killed: { down: (m) => m.kill(), up: (m) => m.start(), downMs: 300 },
  // Frozen: connections stay open and nothing answers; only a local deadline could notice.
  frozen: { down: (m) => m.pause(), up: (m) => m.resume(), downMs: 2000 }
}

describe('chaos: etcd unavailable', { timeout: 120000 }, () => {
  for (const [how, outage] of Object.entries(OUTAGES)) {
    it(`etcd ${how} for less than the TTL: no leader steps down, nobody else starts`, async (t) => {
      const ttl = SHORT_TTL
      const prefix = uniquePrefix(`s3short-${how}`)
      const names = ['n0', 'n1']
      const hosts = await startCompeting({ etcd, labels: ['A', 'B', 'C'], names, ttl, prefix, endpoints: etcd.endpoints })
      const member = etcd.members[0]
      // Let at least one keepalive round pass after the set-up, as in a long-running service.
      await quietWindow(500)
      const mark = marks(hosts)
      const down = now()
      await outage.down(member)
      await quietWindow(outage.downMs)
      await outage.up(member)
      const back = now()
      const outageMs = ms(back - down)
      t.diagnostic(`etcd ${how} at 0, answering again at ${outageMs.toFixed(0)} ms (ttl ${ttl} s)`)
      assert.ok(outageMs < (ttl * 1000) / 2, `test precondition: the outage (${outageMs.toFixed(0)} ms) must be much shorter than the TTL`)
      // A leader that was not renewed after the outage stops by down + TTL - margin at the latest:
      // watching until down + TTL + 1 s proves the leases were renewed after etcd came back.
      await quietWindow(Math.max(0, ttl * 1000 + 1000 - ms(now() - down)))
      const changes = since(hosts, mark, (e) => e.ev === 'start' || e.ev === 'stop')
      assert.deepStrictEqual(changes.map((e) => `${e.host} ${e.ev} ${e.name} ${e.reason || ''}`), [],
        `no stop and no start through an outage shorter than the TTL\n${timelineOf(hosts, names)}`)
      const errors = since(hosts, mark, (e) => e.ev === 'error')
      t.diagnostic(`errors during the outage: ${errors.length} (${[...new Set(errors.map((e) => `${e.scope}:${e.code}`))].join(', ') || 'none'})`)
      assert.ok(errors.every((e) => e.code === 'ETCD_UNAVAILABLE'), `only ETCD_UNAVAILABLE errors: ${JSON.stringify(errors.map((e) => [e.host, e.scope, e.name, e.code, e.message]))}`)
      // Everything still works: the leader of n0 hands over.
      const [a] = hosts
      const sinceHandover = hosts.map((h) => h.mark())
      const handoverAt = now()
      a.send({ cmd: 'remove', name: 'n0' })
      const { event: next } = await waitForAny(hosts.slice(1), { ev: 'start', name: 'n0' }, 10000, 'n0 handed over after the outage', { since: sinceHandover.slice(1) })
      for (const name of names) assertOneLeaderAtATime(hosts, name)
      leadershipMetric(t, `etcd-${how}-short`, hosts, names, {
        outageMs,
        // The leaders were never interrupted: a leader at every instant of the outage.
        faultEndToLeaderMs: 0,
        stops: changes.filter((e) => e.ev === 'stop').length,
        errors: errors.length,
        handoverMs: ms(next.t - handoverAt)
      })
    })
  }

  it('etcd killed for longer than the TTL and restarted with its data: leaders stop by their deadline, then exactly one host leads each name', async (t) => {
    const ttl = 3
    const prefix = uniquePrefix('s3long')
    const names = ['n0', 'n1', 'n2']
    const hosts = await startCompeting({ etcd, labels: ['A', 'B', 'C'], names, ttl, prefix, endpoints: etcd.endpoints })
    const leaders = new Map(names.map((name, j) => [name, hosts[j]]))
    const member = etcd.members[0]
    const mark = marks(hosts)
    const down = now()
    await member.kill()
    // etcd is gone: no keepalive sent from now on can be answered.
    const dead = now()
    // Every leader steps down at its deadline: TTL - margin after its last answered keepalive was
    // sent, which was before etcd died.
    const stops = new Map()
    for (const [name, h] of leaders) {
      stops.set(name, await h.waitFor({ ev: 'stop', name }, ttl * 1000 + 2000, `${h.label} steps down from ${name}`, { since: mark.get(h) }))
    }
    await quietWindow(Math.max(0, 2 * ttl * 1000 - ms(now() - down)))
    assert.deepStrictEqual(since(hosts, mark, (e) => e.ev === 'start'), [], 'nobody starts while etcd is down')
    const stopMs = {}
    for (const [name, stop] of stops) {
      stopMs[name] = ms(stop.t - down)
      assert.strictEqual(stop.reason, 'deadline', `${name}: stop reason`)
      assertDeadlineStop({ sinceRenewalMs: stop.sinceRenewalMs, at: stop.t, outageAt: dead, ttl, label: `${stop.host} (${name})` })
    }
    t.diagnostic(`etcd killed at 0; leaders stopped at ${JSON.stringify(stopMs)} ms (ttl ${ttl} s)`)
    const afterOutage = marks(hosts)
    const up = now()
    await member.start()
    const healthy = now()
    const toLeader = {}
    for (const name of names) {
      const { event } = await waitForAny(hosts, { ev: 'start', name }, 20000, `a leader of ${name} after etcd is back`, { since: hosts.map((h) => afterOutage.get(h)) })
      toLeader[name] = ms(event.t - up)
    }
    t.diagnostic(`etcd restarted at 0 (healthy after ${ms(healthy - up).toFixed(0)} ms); first start per name at ${JSON.stringify(toLeader)} ms`)
    // Exactly one leader each, for a while: nobody else starts, and it is the lowest key.
    await quietWindow(2 * ttl * 1000)
    for (const name of names) {
      const starts = since(hosts, afterOutage, (e) => e.ev === 'start' && e.name === name)
      assert.strictEqual(starts.length, 1, `exactly one start of ${name} after the outage\n${timelineOf(hosts, names)}`)
      const kvs = await etcd.keys(`${prefix}/${name}/`)
      const leader = hosts.find((h) => h.label === starts[0].host)
      assert.strictEqual(kvs[0].value, leader.id, `${name}: the leader holds the lowest key`)
      assert.strictEqual(starts[0].token, kvs[0].createRevision, `${name}: token is the key's create revision`)
      assert.strictEqual(kvs.length, hosts.length, `${name}: every host is still a candidate`)
      assertOneLeaderAtATime(hosts, name)
      assert.ok(keyOf(kvs, leader.id))
    }
    leadershipMetric(t, 'etcd-killed-long', hosts, names, {
      outageMs: ms(up - down),
      maxStopAfterFaultMs: Math.max(...Object.values(stopMs)),
      etcdHealthyAfterMs: ms(healthy - up),
      // From the restart of etcd to the last name's first start.
      faultEndToLeaderMs: Math.max(...Object.values(toLeader))
    })
  })
})
