'use strict'
// Chaos on a 3-member etcd cluster:
// - kill the member a leader talks to (a follower), and separately the raft leader: no stop, no
//   error, and registrations, removes and handovers keep working while it is down;
// - quorum loss (two members killed, or two frozen): every leader steps down by its deadline and
//   nobody starts; quorum back: the election resumes by itself and exactly one host leads each name.
// Exact figures go to the diagnostics as '# metric {...}' lines.

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const { startEtcd, keyOf } = require('../helpers/etcd')
const { spawnHost, killAll, now, ms, assertOneLeaderAtATime, waitForAny } = require('../helpers/hosts')
const { uniquePrefix, quietWindow, assertDeadlineStop } = require('../helpers/util')
const { startCompeting, marks, since, leadershipMetric, timelineOf } = require('./common')

let etcd

before(async () => { etcd = await startEtcd({ members: 3 }) })
after(async () => {
  await killAll()
  if (etcd) await etcd.close()
})
// Every test leaves the cluster whole and settled for the next one.
afterEach(async () => {
  await killAll()
  await etcd.heal()
  await etcd.settled()
})

// Endpoint lists such that host i talks to firsts[i] first (then the others, in cluster order).
function endpointsFor (firsts) {
  return (i) => {
    const first = firsts[i % firsts.length]
    return [first.endpoint, ...etcd.members.filter((m) => m !== first).map((m) => m.endpoint)]
  }
}

const brief = (events) => events.map((e) => `${e.host} ${e.ev} ${e.name || ''} ${e.reason || e.code || ''} ${e.message || ''}`.trim())

async function oneMemberDown (t, { scenario, victimOf }) {
  const ttl = 4
  const prefix = uniquePrefix(scenario)
  const names = ['n0', 'n1']
  const raftLeader = await etcd.leader()
  const victim = victimOf(raftLeader)
  const others = etcd.members.filter((m) => m !== victim)
  // A (leader of n0) talks to the victim; B and C to the other two members.
  const endpoints = endpointsFor([victim, ...others])
  const hosts = await startCompeting({ etcd, labels: ['A', 'B', 'C'], names, ttl, prefix, endpoints })
  const [a, b] = hosts
  const mark = marks(hosts)
  const down = now()
  await victim.kill()
  const next = await etcd.leader({ timeoutMs: 15000 })
  t.diagnostic(`killed ${victim.name} (${victim === raftLeader ? 'the raft leader' : 'a follower'}), A's first endpoint; raft leader now ${next.name}`)
  // Two TTLs with the member down: no stop, no start, no error anywhere.
  await quietWindow(2 * ttl * 1000)
  const trouble = since(hosts, mark, (e) => e.ev === 'stop' || e.ev === 'start' || e.ev === 'error')
  assert.deepStrictEqual(brief(trouble), [], `nothing happens with one member of three down\n${timelineOf(hosts, names)}`)

  // Registrations work: a new name on A (whose first endpoint is dead), a new host D (same).
  let at = now()
  a.send({ cmd: 'register', name: 'n2' })
  const n2 = await a.waitFor({ ev: 'start', name: 'n2' }, 10000, 'A leads the new name n2', { since: mark.get(a) })
  const registerToStartMs = ms(n2.t - at)
  const d = spawnHost({ endpoints: endpoints(0), ttl, prefix, names: ['n0'] }, 'D')
  await d.ready
  await etcd.waitKeys(`${prefix}/n0/`, (kvs) => keyOf(kvs, d.id), 10000, 'D is a candidate for n0')
  // Removes work: a waiting candidate (D) and a leader (A, then B) hand over.
  at = now()
  await d.request({ cmd: 'remove', name: 'n0' }, { ev: 'removed', name: 'n0' }, 10000, 'D removed n0')
  const waiterRemoveMs = ms(now() - at)
  assert.ok(!keyOf(await etcd.keys(`${prefix}/n0/`), d.id), 'D\'s key is gone')
  const all = [...hosts, d]
  const handovers = []
  for (const [leader, name] of [[a, 'n0'], [b, 'n1']]) {
    const rest = hosts.filter((h) => h !== leader)
    const since0 = rest.map((h) => h.mark())
    at = now()
    leader.send({ cmd: 'remove', name })
    const { host, event } = await waitForAny(rest, { ev: 'start', name }, 10000, `${name} handed over with ${victim.name} down`, { since: since0 })
    handovers.push(ms(event.t - at))
    t.diagnostic(`${name}: ${leader.label} removed, ${host.label} started ${ms(event.t - at).toFixed(1)} ms later`)
  }

  // The member comes back: still nothing happens.
  const mark2 = marks(all)
  await victim.start()
  await etcd.settled()
  const up = now()
  await quietWindow(ttl * 1000)
  const later = since(all, mark2, (e) => e.ev === 'stop' || e.ev === 'start' || (e.ev === 'error' && e.scope !== 'command'))
  assert.deepStrictEqual(brief(later), [], `nothing happens when ${victim.name} is back\n${timelineOf(all, names)}`)
  for (const name of [...names, 'n2']) assertOneLeaderAtATime(all, name)
  const errors = all.flatMap((h) => h.find({ ev: 'error' }))
  assert.deepStrictEqual(brief(errors), [], 'no error at all')
  leadershipMetric(t, scenario, all, [...names, 'n2'], {
    memberDownMs: ms(up - down),
    faultEndToLeaderMs: 0, // the leaders were never interrupted
    registerToStartMs,
    waiterRemoveMs,
    maxHandoverMs: Math.max(...handovers)
  })
}

async function quorumLoss (t, { scenario, lose, restore }) {
  const ttl = 3
  const prefix = uniquePrefix(scenario)
  const names = ['n0', 'n1', 'n2']
  // Each host talks to a different member first.
  const hosts = await startCompeting({ etcd, labels: ['A', 'B', 'C'], names, ttl, prefix, endpoints: endpointsFor(etcd.members) })
  const raftLeader = await etcd.leader()
  const victims = [raftLeader, etcd.members.find((m) => m !== raftLeader)]
  const survivor = etcd.members.find((m) => !victims.includes(m))
  const mark = marks(hosts)
  const down = now()
  await Promise.all(victims.map(lose))
  // No quorum from here on: no keepalive sent later can be answered.
  const lost = now()
  t.diagnostic(`quorum lost at 0: ${victims.map((m) => m.name).join(', ')} down, ${survivor.name} alone`)
  // Every leader steps down at its deadline: TTL - margin after its last answered keepalive was
  // sent, which was before the quorum was lost.
  const stopMs = {}
  for (const [j, name] of names.entries()) {
    const h = hosts[j]
    const stop = await h.waitFor({ ev: 'stop', name }, ttl * 1000 + 2000, `${h.label} steps down from ${name}`, { since: mark.get(h) })
    stopMs[name] = ms(stop.t - down)
    assert.strictEqual(stop.reason, 'deadline', `${name}: stop reason`)
    assertDeadlineStop({ sinceRenewalMs: stop.sinceRenewalMs, at: stop.t, outageAt: lost, ttl, label: `${h.label} (${name})` })
  }
  t.diagnostic(`leaders stopped at ${JSON.stringify(stopMs)} ms (ttl ${ttl} s)`)
  // Nobody starts while there is no quorum (two TTLs in all).
  await quietWindow(Math.max(0, 2 * ttl * 1000 - ms(now() - down)))
  assert.deepStrictEqual(brief(since(hosts, mark, (e) => e.ev === 'start')), [], 'nobody starts without a quorum')
  const afterLoss = marks(hosts)
  const lifted = now()
  await restore(victims)
  const healthy = now()
  await etcd.settled()
  const toLeader = {}
  for (const name of names) {
    const { event } = await waitForAny(hosts, { ev: 'start', name }, 20000, `a leader of ${name} after the quorum is back`, { since: hosts.map((h) => afterLoss.get(h)) })
    toLeader[name] = ms(event.t - lifted)
  }
  t.diagnostic(`members restarted/resumed at 0, healthy at ${ms(healthy - lifted).toFixed(0)} ms; first start per name at ${JSON.stringify(toLeader)} ms`)
  await quietWindow(2 * ttl * 1000)
  for (const name of names) {
    const starts = since(hosts, afterLoss, (e) => e.ev === 'start' && e.name === name)
    assert.strictEqual(starts.length, 1, `exactly one start of ${name} after the quorum is back\n${timelineOf(hosts, names)}`)
    const kvs = await etcd.keys(`${prefix}/${name}/`)
    assert.strictEqual(kvs[0].value, hosts.find((h) => h.label === starts[0].host).id, `${name}: the leader holds the lowest key`)
    assert.strictEqual(starts[0].token, kvs[0].createRevision, `${name}: token is the key's create revision`)
    assertOneLeaderAtATime(hosts, name)
  }
  leadershipMetric(t, scenario, hosts, names, {
    maxStopAfterFaultMs: Math.max(...Object.values(stopMs)),
    quorumLostMs: ms(lifted - down),
    quorumHealthyAfterMs: ms(healthy - lifted),
    // From the moment the members were restarted (resumed) to the last name's first start.
    faultEndToLeaderMs: Math.max(...Object.values(toLeader))
  })
}

describe('chaos: 3-member etcd cluster', { timeout: 150000 }, () => {
  it('the member a leader talks to (a follower) is killed: no stop, no error; registrations, removes and handovers work', async (t) => {
    await oneMemberDown(t, { scenario: 'cluster-follower-killed', victimOf: (raftLeader) => etcd.members.find((m) => m !== raftLeader) })
  })

  it('the raft leader, which a leader talks to, is killed: no stop, no error; registrations, removes and handovers work', async (t) => {
    await oneMemberDown(t, { scenario: 'cluster-raft-leader-killed', victimOf: (raftLeader) => raftLeader })
  })

  it('quorum lost (two members killed): leaders stop by their deadline; quorum back: exactly one leader per name', async (t) => {
    await quorumLoss(t, {
      scenario: 'cluster-quorum-killed',
      lose: (m) => m.kill(),
      restore: async (victims) => {
        // Both at once: neither can become healthy alone.
        await Promise.all(victims.map((m) => m.start({ wait: false })))
        await Promise.all(victims.map((m) => m.waitHealthy()))
      }
    })
  })

  it('quorum lost (two members frozen): leaders stop by their deadline; quorum back: exactly one leader per name', async (t) => {
    await quorumLoss(t, {
      scenario: 'cluster-quorum-frozen',
      lose: async (m) => m.pause(),
      restore: async (victims) => {
        for (const m of victims) m.resume()
        await Promise.all(victims.map((m) => m.waitHealthy()))
      }
    })
  })
})
