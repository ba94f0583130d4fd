'use strict'
// A 3-member etcd cluster with one member down: hosts see no stop and no error, and new
// registrations are still elected.

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const { startEtcd } = require('./helpers/etcd')
const { spawnHost, killAll, formatTimeline, assertOneLeaderAtATime } = require('./helpers/hosts')
const { uniquePrefix, quietWindow } = require('./helpers/util')

let etcd

before(async () => { etcd = await startEtcd({ members: 3 }) })
after(async () => {
  await killAll()
  if (etcd) await etcd.close()
})
// Every test leaves the cluster whole for the next one.
afterEach(async () => {
  await killAll()
  await etcd.heal()
})

// Endpoint list with the chosen member first.
function endpointsWithFirst (member) {
  return [member.endpoint, ...etcd.members.filter((m) => m !== member).map((m) => m.endpoint)]
}

async function scenario (t, { ttl, victim, fault }) {
  const prefix = uniquePrefix('cluster')
  const endpoints = endpointsWithFirst(victim)
  const a = spawnHost({ endpoints, ttl, prefix, names: ['c'] }, 'A')
  await a.waitFor({ ev: 'start', name: 'c' }, 10000, 'A start')
  const b = spawnHost({ endpoints, ttl, prefix, names: ['c'] }, 'B')
  await b.ready
  await etcd.waitKeys(`${prefix}/c/`, (kvs) => kvs.length === 2, 10000, 'two candidates')

  await fault(victim)
  // No stop and no error for two TTLs while one member is down.
  await quietWindow(2 * ttl * 1000)
  const trouble = (h) => h.find((e) => e.ev === 'stop' || e.ev === 'error')
  assert.deepStrictEqual(trouble(a), [], `A saw trouble with ${victim.name} down\n${formatTimeline([a, b])}`)
  assert.deepStrictEqual(trouble(b), [], `B saw trouble with ${victim.name} down\n${formatTimeline([a, b])}`)

  // New registrations work: on a running host and on a new one (whose first endpoint is down).
  b.send({ cmd: 'register', name: 'c2' })
  await b.waitFor({ ev: 'start', name: 'c2' }, 10000, 'B start c2')
  const c = spawnHost({ endpoints, ttl, prefix, names: ['c3'] }, 'C')
  await c.waitFor({ ev: 'start', name: 'c3' }, 10000, 'new host C start c3')
  // And a handover still works.
  a.send({ cmd: 'remove', name: 'c' })
  await b.waitFor({ ev: 'start', name: 'c' }, 10000, 'B takes over c')
  assertOneLeaderAtATime([a, b], 'c')
  assert.deepStrictEqual(a.find({ ev: 'error' }).concat(b.find({ ev: 'error' }), c.find({ ev: 'error' })), [], 'no errors')
}

describe('3-member cluster with one member down', { timeout: 90000 }, () => {
  it('a follower that is the first endpoint is killed: no stop, no error, elections go on', async (t) => {
    const leader = await etcd.leader()
    const follower = etcd.members.find((m) => m !== leader)
    await scenario(t, { ttl: 3, victim: follower, fault: (m) => m.kill() })
  })

  it('the raft leader that is the first endpoint is killed: no stop, no error, elections go on', async (t) => {
    const leader = await etcd.leader()
    await scenario(t, {
      ttl: 4,
      victim: leader,
      fault: async (m) => {
        await m.kill()
        const next = await etcd.leader({ timeoutMs: 10000 })
        t.diagnostic(`raft leader ${m.name} killed, new raft leader ${next.name}`)
      }
    })
  })

  it('a frozen follower (SIGSTOP) that is the first endpoint: no stop, no error, elections go on', async (t) => {
    const leader = await etcd.leader()
    const follower = etcd.members.find((m) => m !== leader)
    await scenario(t, { ttl: 3, victim: follower, fault: (m) => m.pause() })
  })
})
