'use strict'
// singleton.handover(toId?) against real etcd, between host processes: the chosen candidate (or
// the next in line) leads and no other, the candidates between step behind it, the old leader
// queues again; a handover that cannot happen leaves the leader leading; and the races of a
// handover with remove(), close() and its target going away. How it works: docs/how-it-works.md,
// "Handing over".

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const { startEtcd, keyOf } = require('./helpers/etcd')
const { startEtcdctlElect } = require('./helpers/etcdctl')
const { killAll, formatTimeline, assertOneLeaderAtATime, queueHosts, queued, spawnHost } = require('./helpers/hosts')
const { startProxy, closeProxies } = require('./helpers/proxy')
const { uniquePrefix, quietWindow, nextEvent, WRONG_START_WINDOW_MS } = require('./helpers/util')
const { lockerSet } = require('./helpers/lockers')

const TTL = 2
// How long a leader waits for the candidates ahead of its target (src/handover.rs, WAIT).
const HANDOVER_WAIT_MS = 5000

let etcd
const lockers = lockerSet()

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await lockers.closeAll({ waitAtMostMs: 3000 })
  await killAll()
  await closeProxies()
  if (etcd) await etcd.close()
})
afterEach(killAll)

const queue = (labels, options) => queueHosts(etcd, labels, { ttl: TTL, ...options })

// Asks `host` to hand over `name`; resolves with its handedOver or error event, whichever comes.
async function handover (host, to, name = 'job', timeoutMs = 5000) {
  const since = host.mark()
  host.send(to === undefined ? { cmd: 'handover', name } : { cmd: 'handover', name, to })
  return host.waitFor((e) => e.name === name && (e.ev === 'handedOver' || (e.ev === 'error' && e.scope === 'command')),
    timeoutMs, `${host.label}'s handover answered`, { since })
}

const createdAt = (kvs, host) => keyOf(kvs, host.id).createRevision
const show = ({ ev, code, message, leader, token }) => JSON.stringify({ ev, code, message, leader, token })

describe('handover between host processes', { timeout: 120000 }, () => {
  it('without a target: the next in line leads, not the one behind it, and the old leader queues again', async () => {
    const prefix = uniquePrefix('ho-next')
    const [a, b, c] = await queue(['A', 'B', 'C'], { prefix })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    const answer = await handover(a)
    assert.strictEqual(answer.ev, 'handedOver', show(answer))
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B leads')
    assert.deepStrictEqual([answer.leader, answer.token], [b.id, bStart.token], 'the answer names the new leader and its token')
    const [aStop] = a.find({ ev: 'stop', name: 'job' })
    assert.strictEqual(aStop.reason, 'handover')
    assert.ok(aStop.t < bStart.t, 'A stopped before B started')
    const kvs = await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, a.id) && kvs, 5000, 'A queued again')
    assert.ok(createdAt(kvs, a) > createdAt(kvs, c), 'A queued behind C')
    await quietWindow(WRONG_START_WINDOW_MS)
    assert.deepStrictEqual(c.find({ ev: 'start' }), [], 'C never started')
    assert.strictEqual(a.find({ ev: 'start' }).length, 1, 'A did not lead again')
    assertOneLeaderAtATime([a, b, c], 'job')
  })

  it('to a candidate further back: the candidates between step behind it and never lead; etcdctl elect -l agrees', async (t) => {
    const prefix = uniquePrefix('ho-named')
    const [a, b, c, d] = await queue(['A', 'B', 'C', 'D'], { prefix })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    const before = await etcd.keys(`${prefix}/job/`)
    // etcd's own observer (Go concurrency.Election.Observe): it prints each leader's key and value.
    const observer = startEtcdctlElect(t, etcd, ['-l', `${prefix}/job`])
    assert.deepStrictEqual(await observer.lines(2, 5000), [keyOf(before, a.id).key, a.id])
    const answer = await handover(a, d.id)
    assert.strictEqual(answer.ev, 'handedOver', show(answer))
    const dStart = await d.waitFor({ ev: 'start', name: 'job' }, 5000, 'D leads')
    assert.deepStrictEqual([answer.leader, answer.token], [d.id, dStart.token])
    assert.strictEqual(dStart.token, createdAt(before, d), 'D leads with the key it had queued with')
    const kvs = await etcd.waitKeys(`${prefix}/job/`, (kvs) => [a, b, c].every((h) => keyOf(kvs, h.id)) && kvs, 5000, 'A, B and C queued')
    for (const h of [a, b, c]) assert.ok(createdAt(kvs, h) > createdAt(kvs, d), `${h.label} is behind D`)
    await quietWindow(WRONG_START_WINDOW_MS)
    for (const h of [b, c]) assert.deepStrictEqual(h.find({ ev: 'start' }), [], `${h.label} never started\n${formatTimeline([a, b, c, d])}`)
    assert.deepStrictEqual(await etcd.keys(`${prefix}//handover/`), [], 'the marker is gone')
    const seen = await observer.lines(4, 5000)
    assert.deepStrictEqual(seen.slice(2), [keyOf(before, d.id).key, d.id], 'etcdctl elect -l sees D lead next, nobody in between')
    assertOneLeaderAtATime([a, b, c, d], 'job')
  })

  it('a handover that cannot happen leaves the leader leading, its work untouched', async () => {
    const prefix = uniquePrefix('ho-refused')
    const [a] = await queue(['A'], { prefix })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    const alone = await handover(a)
    assert.deepStrictEqual([alone.ev, alone.code], ['error', 'NO_CANDIDATE'], show(alone))
    const [b] = await queue(['B'], { prefix })
    const follower = await handover(b)
    assert.deepStrictEqual([follower.ev, follower.code], ['error', 'NOT_LEADER'], show(follower))
    const unknown = await handover(a, 'nobody')
    assert.deepStrictEqual([unknown.ev, unknown.code], ['error', 'NOT_A_CANDIDATE'], show(unknown))
    assert.match(unknown.message, /"nobody" is not a live candidate/)
    const self = await handover(a, a.id)
    assert.deepStrictEqual([self.ev, self.code], ['error', 'NOT_A_CANDIDATE'], 'a leader is no candidate of its own handover')
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], 'A never stopped')
    assert.deepStrictEqual(a.find({ ev: 'aborted' }), [], 'A\'s term signal never aborted')
    assert.deepStrictEqual(b.find({ ev: 'start' }), [])
    assert.deepStrictEqual(await etcd.keys(`${prefix}//handover/`), [], 'no marker was written')
  })
})

describe('handover racing etcdctl elect, remove(), close() and its target', { timeout: 120000 }, () => {
  // A leads; a Go candidate (etcdctl elect, which never steps aside) queues next, then T.
  async function blockedSetup (t, label) {
    const prefix = uniquePrefix(label)
    const [a] = await queue(['A'], { prefix })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    const go = startEtcdctlElect(t, etcd, [`${prefix}/job`, 'go-candidate'])
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, 'go-candidate'), 5000, 'the Go candidate queued')
    const [target] = await queue(['T'], { prefix })
    return { prefix, a, go, target }
  }

  const markerWritten = (prefix) => etcd.waitKeys(`${prefix}//handover/`, (kvs) => kvs.length === 1 && kvs[0], 5000, 'the handover marker')

  it('a candidate that does not step aside blocks the handover: refused after the wait, the leader leads on', async (t) => {
    const { prefix, a, go, target } = await blockedSetup(t, 'ho-blocked')
    const answer = await handover(a, target.id, 'job', HANDOVER_WAIT_MS + 5000)
    assert.deepStrictEqual([answer.ev, answer.code], ['error', 'HANDOVER_BLOCKED'], show(answer))
    // A stopped for the handover and started again on the same key.
    const starts = a.find({ ev: 'start', name: 'job' })
    assert.deepStrictEqual(a.find({ ev: 'stop', name: 'job' }).map((e) => e.reason), ['handover'])
    assert.strictEqual(starts.length, 2, `A started again\n${formatTimeline([a, target])}`)
    assert.strictEqual(starts[1].token, starts[0].token)
    assert.strictEqual(go.output(), '', 'the Go candidate never led')
    assert.deepStrictEqual(target.find({ ev: 'start' }), [])
    assert.deepStrictEqual(await etcd.keys(`${prefix}//handover/`), [], 'the marker was taken back')
    assertOneLeaderAtATime([a, target], 'job')
  })

  it('remove() during the wait: the handover is refused as removed, the leader resigns, the next in line leads', async (t) => {
    const { prefix, a, go, target } = await blockedSetup(t, 'ho-remove')
    const since = a.mark()
    a.send({ cmd: 'handover', name: 'job', to: target.id })
    await markerWritten(prefix)
    a.send({ cmd: 'remove', name: 'job' })
    const answer = await a.waitFor((e) => e.ev === 'error' && e.scope === 'command', 5000, 'the handover answered', { since })
    assert.strictEqual(answer.code, 'REMOVED', show(answer))
    await a.waitFor({ ev: 'removed', name: 'job' }, 5000, 'A removed')
    const [, goValue] = await go.lines(2, 5000)
    assert.strictEqual(goValue, 'go-candidate', 'the Go candidate, next in line, leads')
    assert.strictEqual(a.find({ ev: 'start' }).length, 1, 'A did not start again')
    assert.deepStrictEqual(await etcd.keys(`${prefix}//handover/`), [], 'no marker is left')
    await quietWindow(WRONG_START_WINDOW_MS)
    assert.deepStrictEqual(target.find({ ev: 'start' }), [], 'T waits behind the Go candidate')
  })

  it('the target leaves during the wait: refused at once as no candidate, the leader leads on', async (t) => {
    const { prefix, a, go, target } = await blockedSetup(t, 'ho-target-gone')
    const since = a.mark()
    a.send({ cmd: 'handover', name: 'job', to: target.id })
    await markerWritten(prefix)
    const left = Date.now()
    target.send({ cmd: 'remove', name: 'job' })
    const answer = await a.waitFor((e) => e.ev === 'error' && e.scope === 'command', 5000, 'the handover answered', { since })
    assert.strictEqual(answer.code, 'NOT_A_CANDIDATE', show(answer))
    assert.ok(Date.now() - left < HANDOVER_WAIT_MS, 'refused when the target left, not at the end of the wait')
    await a.waitFor((e) => e.ev === 'start' && e.i > since, 5000, 'A leads on')
    assert.strictEqual(go.output(), '', 'the Go candidate never led')
    assert.deepStrictEqual(await etcd.keys(`${prefix}//handover/`), [], 'the marker was taken back')
  })

  // The leader chose its target (and the candidates between) by the check, before its drain; a
  // candidate between that leaves during the drain has nothing left to step aside from. The
  // handover must find that out by itself (the marker it writes wakes it for a guarded attempt),
  // not wait for a step aside that cannot come and be refused as blocked.
  it('the only candidate between leaves during the drain: the handover goes through at once', async () => {
    const prefix = uniquePrefix('ho-between-gone')
    const [a, b, target] = await queue(['A', 'B', 'T'], { prefix, extra: { work: { job: { settleAfterAbortMs: 1500 } } } })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    const since = a.mark()
    a.send({ cmd: 'handover', name: 'job', to: target.id })
    await a.waitFor((e) => e.ev === 'aborted' && e.i >= since, 5000, "A's drain began")
    b.send({ cmd: 'remove', name: 'job' })
    await b.waitFor({ ev: 'removed', name: 'job' }, 5000, 'B removed')
    const answer = await a.waitFor((e) => e.name === 'job' && (e.ev === 'handedOver' || (e.ev === 'error' && e.scope === 'command')),
      HANDOVER_WAIT_MS + 5000, "A's handover answered", { since })
    assert.deepStrictEqual([answer.ev, answer.leader], ['handedOver', target.id], show(answer))
    const settled = a.find((e) => e.ev === 'settled' && e.i >= since)
    assert.ok(answer.i > settled[0].i, 'answered after the drain')
    assert.ok(Number(BigInt(answer.t) - BigInt(settled[0].t)) / 1e6 < HANDOVER_WAIT_MS / 2,
      `answered soon after the drain, not at the end of the wait for a step aside\n${formatTimeline([a, b, target])}`)
    await target.waitFor({ ev: 'start', name: 'job' }, 5000, 'T leads')
    assert.deepStrictEqual(await etcd.keys(`${prefix}//handover/`), [], 'no marker is left')
    assertOneLeaderAtATime([a, b, target], 'job')
  })

  it('close() during the wait: the handover is refused as closed, and the next in line leads', async (t) => {
    const { prefix, a, go, target } = await blockedSetup(t, 'ho-close')
    const since = a.mark()
    a.send({ cmd: 'handover', name: 'job', to: target.id })
    await markerWritten(prefix)
    a.send({ cmd: 'close' })
    const answer = await a.waitFor((e) => e.ev === 'error' && e.scope === 'command', 5000, 'the handover answered', { since })
    assert.strictEqual(answer.code, 'LOCKER_CLOSED', show(answer))
    await a.waitFor({ ev: 'closed' }, 5000, 'A closed')
    const [, goValue] = await go.lines(2, 5000)
    assert.strictEqual(goValue, 'go-candidate')
    assert.deepStrictEqual(await etcd.keys(`${prefix}//handover/`), [], 'the marker went with the lease')
  })
})

describe('handover whose commit goes unanswered', { timeout: 60000 }, () => {
  // etcd may apply a commit whose answer never arrives: the leader's key is then gone and the
  // target leads. The old leader must not start again on its own say; it steps down, and the next
  // read tells it where it stands (behind the target).
  it('the leader steps down instead of leading on, and the target leads alone', async () => {
    const prefix = uniquePrefix('ho-unanswered')
    const proxy = await startProxy(etcd.endpoints[0])
    // A long TTL: the commit's request times out (2 s) long before A's leadership deadline, so
    // what A decides comes from the unanswered commit, not from losing its lease.
    const ttl = 20
    const a = spawnHost({ endpoints: [proxy.endpoint], ttl, prefix, names: ['job'], id: `A-${prefix}`, work: { job: { settleAfterAbortMs: 1000 } } }, 'A')
    await queued(etcd, a, { prefix, names: ['job'] })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    const t = spawnHost({ endpoints: etcd.endpoints, ttl, prefix, names: ['job'], id: `T-${prefix}` }, 'T')
    await queued(etcd, t, { prefix, names: ['job'] })
    const since = a.mark()
    a.send({ cmd: 'handover', name: 'job' })
    await a.waitFor((e) => e.ev === 'aborted' && e.i >= since, 5000, "A's drain began")
    // A's requests still reach etcd; nothing comes back. The drain ends, the commit goes out.
    proxy.mode('blackhole', 'down')
    await t.waitFor({ ev: 'start', name: 'job' }, 10000, 'T leads: etcd applied the commit')
    const answer = await a.waitFor((e) => e.name === 'job' && (e.ev === 'handedOver' || (e.ev === 'error' && e.scope === 'command')),
      10000, "A's handover answered", { since })
    proxy.mode('pass')
    // A reads again once etcd answers, finds T ahead, and queues behind it.
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.some((kv) => kv.value === a.id && kv.createRevision > keyOf(kvs, t.id).createRevision) && kvs,
      10000, 'A queued again behind T')
    await quietWindow(WRONG_START_WINDOW_MS)
    assert.deepStrictEqual(a.find((e) => e.ev === 'start' && e.i > since), [],
      `A never started again (answer: ${show(answer)})\n${formatTimeline([a, t])}`)
    const [stop] = a.find((e) => e.ev === 'stop' && e.i > since)
    assert.ok(stop, 'A reported its stop')
    assertOneLeaderAtATime([a, t], 'job')
  })
})

describe('handover(): the calls themselves', { timeout: 60000 }, () => {
  it('checks its argument synchronously and refuses a second handover while one is under way', async () => {
    const prefix = uniquePrefix('ho-api')
    const a = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'a' })
    const b = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'b' })
    const sa = a('job', () => {})
    await nextEvent(sa, 'start', 5000)
    const sb = b('job', () => {})
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, 'b'), 5000, 'b queued')
    for (const bad of [42, '', null, {}]) {
      assert.throws(() => sa.handover(bad), (err) => err instanceof TypeError && err.code === 'ERR_INVALID_ARG_TYPE' && /toId must be a non-empty string/.test(err.message), `handover(${JSON.stringify(bad)})`)
    }
    assert.strictEqual(a.stats().singletons.job.handover, null)
    const first = sa.handover('b')
    assert.deepStrictEqual(a.stats().singletons.job.handover, { to: 'b', preferred: false }, 'stats() shows the handover under way')
    await assert.rejects(sa.handover('b'), { code: 'HANDOVER_IN_PROGRESS' })
    const started = nextEvent(sb, 'start', 5000)
    assert.deepStrictEqual(await first, { leader: 'b', token: (await etcd.keys(`${prefix}/job/`)).find((kv) => kv.value === 'b').createRevision })
    await started
    assert.strictEqual(sb.isLeader(), true)
    assert.strictEqual(sa.isLeader(), false)
    assert.strictEqual(a.stats().singletons.job.state, 'candidate', 'a handed over: a candidate again, not stepped down')
    assert.strictEqual(a.stats().singletons.job.handover, null)
    const removing = sb.remove()
    await assert.rejects(sb.handover(), { code: 'REMOVED' })
    await removing
    await a.close()
    await assert.rejects(sa.handover(), { code: 'LOCKER_CLOSED' })
  })
})
