'use strict'
// Preferred leaders against real etcd, between host processes: locker(name, fn, { priority }) and
// locked(hosts, { balance: true }). The highest-priority candidate leads (after the leader led
// minTermMs, never before); among those that balance, the one rendezvous hashing picks; a leader
// never hands over to anyone else, and never two lead. How it works: docs/how-it-works.md,
// "Preferred leaders".

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const { startEtcd, keyOf } = require('./helpers/etcd')
const { startEtcdctlElect } = require('./helpers/etcdctl')
const { spawnHost, killAll, formatTimeline, assertOneLeaderAtATime, queued } = require('./helpers/hosts')
const { uniquePrefix, quietWindow, until } = require('./helpers/util')
const locked = require('..')
const { weight } = require('./helpers/preferences')

const TTL = 2
const MIN_TERM_MS = 1500
const ms = (ns) => Number(ns) / 1e6

let etcd

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await killAll()
  if (etcd) await etcd.close()
})
afterEach(killAll)

// Hosts spawned one after the other, each once the one before is queued on every name, so that
// the queue order is the order given. `configs`: [label, extra host.js config].
async function hostsInOrder (prefix, configs, names = ['job']) {
  const hosts = []
  for (const [label, extra] of configs) {
    const h = spawnHost({ endpoints: etcd.endpoints, ttl: TTL, prefix, names, id: `${label}-${prefix}`, minTermMs: MIN_TERM_MS, ...extra }, label)
    await queued(etcd, h, { prefix, names })
    hosts.push(h)
  }
  return hosts
}

// The names a host leads now, from its start and stop events.
function ledBy (host) {
  const leading = new Set()
  for (const e of host.events) {
    if (e.ev === 'start') leading.add(e.name)
    if (e.ev === 'stop') leading.delete(e.name)
  }
  return host.alive ? leading : new Set()
}

const preferredHost = (name, hosts) => hosts.reduce((best, h) => (weight(name, h.id) > weight(name, best.id) ? h : best))

describe('priority', { timeout: 120000 }, () => {
  it('a higher-priority candidate leads once the leader led minTermMs, and the one between never leads; etcdctl elect -l agrees', async (t) => {
    const prefix = uniquePrefix('pri-up')
    const [a, c] = await hostsInOrder(prefix, [['A', {}], ['C', {}]])
    const aStart = await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    // etcd's own observer (Go concurrency.Election.Observe): it prints each leader's key and value.
    const observer = startEtcdctlElect(t, etcd, ['-l', `${prefix}/job`])
    assert.strictEqual((await observer.lines(2, 5000))[1], a.id)
    const [b] = await hostsInOrder(prefix, [['B', { priorities: { job: 5 } }]])
    // While A serves its minimum term, term() and an observer say who should lead.
    const reader = locked(etcd.endpoints, { prefix })
    t.after(() => reader.close())
    const watching = reader.observe('job')
    const seen = []
    watching.on('term', (x) => seen.push(x))
    const early = await until(async () => { const x = await reader.term('job'); return x && x.preferred === b.id && x }, MIN_TERM_MS, 'term() naming B as preferred while A leads')
    assert.deepStrictEqual([early.leader, early.priority, early.handover], [a.id, 0, null])
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, MIN_TERM_MS + 5000, 'B (priority 5) leads')
    const [aStop] = a.find({ ev: 'stop', name: 'job' })
    assert.strictEqual(aStop.reason, 'handover')
    assert.ok(ms(aStop.t - aStart.t) >= MIN_TERM_MS, `A led ${ms(aStop.t - aStart.t)} ms, less than minTermMs`)
    assert.deepStrictEqual(c.find({ ev: 'start' }), [], `C never started\n${formatTimeline([a, b, c])}`)
    assert.strictEqual((await observer.lines(4, 5000))[3], b.id, 'etcdctl elect -l shows B as the next leader')
    const late = await until(async () => { const x = await reader.term('job'); return x && x.leader === b.id && x }, 5000, 'term() naming B')
    assert.deepStrictEqual([late.token, late.priority, late.preferred, late.handover], [bStart.token, 5, b.id, null])
    const [listed] = await reader.terms()
    assert.deepStrictEqual(listed, { name: 'job', ...late }, 'terms() agrees with term()')
    await until(() => watching.leader() === b.id, 5000, 'the observer following B')
    const { since, ...observed } = late
    assert.ok(since instanceof Date, 'term() has the election time; an observer does not follow it')
    assert.deepStrictEqual(watching.term(), observed)
    assert.ok(seen.some((x) => x && x.leader === a.id && x.preferred === b.id), `the observer saw B preferred while A led: ${JSON.stringify(seen)}`)
    // Back in the queue, A and C stay there: B has the highest priority.
    await quietWindow(MIN_TERM_MS + 1000)
    assert.strictEqual(b.find({ ev: 'stop' }).length, 0, `B still leads\n${formatTimeline([a, b, c])}`)
    assert.strictEqual(a.find({ ev: 'start' }).length, 1)
    assertOneLeaderAtATime([a, b, c], 'job')
    assert.ok(bStart.token > aStart.token)
  })

  it('a leader of the highest priority stays when candidates of lower or equal priority come', async () => {
    const prefix = uniquePrefix('pri-stay')
    const [a] = await hostsInOrder(prefix, [['A', { priorities: { job: 3 } }]])
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    const [b, c] = await hostsInOrder(prefix, [['B', { priorities: { job: 1 } }], ['C', { priorities: { job: 3 } }]])
    await quietWindow(MIN_TERM_MS + 1500)
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], formatTimeline([a, b, c]))
    assert.deepStrictEqual([...b.find({ ev: 'start' }), ...c.find({ ev: 'start' })], [])
  })

  it('the next in line, elected when the leader died, passes the lead on to a higher priority before starting', async () => {
    const prefix = uniquePrefix('pri-crash')
    const [a, b, c] = await hostsInOrder(prefix, [['A', { priorities: { job: 5 } }], ['B', {}], ['C', { priorities: { job: 5 } }]])
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    a.killedAt = process.hrtime.bigint()
    a.kill('SIGKILL')
    const cStart = await c.waitFor({ ev: 'start', name: 'job' }, TTL * 1000 + 5000, 'C leads')
    assert.ok(ms(cStart.t - a.killedAt) < TTL * 1000 + 2000, `C led ${ms(cStart.t - a.killedAt)} ms after the kill, not after a term of B`)
    await quietWindow(MIN_TERM_MS + 1000)
    assert.deepStrictEqual(b.find({ ev: 'start' }), [], `B, next in line, never started\n${formatTimeline([a, b, c])}`)
    assertOneLeaderAtATime([a, b, c], 'job')
  })

  it('a leader that could not act on the handover (paused and resumed during its drain) is asked again', async () => {
    const prefix = uniquePrefix('pri-again')
    // A's work winds down 3 s after its term ends, so a pause and resume fall within one drain.
    const [a] = await hostsInOrder(prefix, [['A', { work: { job: { settleAfterAbortMs: 3000 } } }]])
    const aStart = await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    const [b] = await hostsInOrder(prefix, [['B', { priorities: { job: 5 } }]])
    // Paused before its minimum term ends: the handover is due while A drains, not leading.
    a.send({ cmd: 'pause', name: 'job' })
    await a.waitFor({ ev: 'stop', name: 'job', reason: 'paused' }, 2000, 'A paused')
    assert.ok(ms(process.hrtime.bigint() - aStart.t) < MIN_TERM_MS, 'paused within the minimum term')
    await quietWindow(MIN_TERM_MS)
    a.send({ cmd: 'resume', name: 'job' })
    // The resume within the drain keeps A's place: it leads again, same token.
    const again = await a.waitFor((e) => e.ev === 'start' && e.name === 'job' && e.i > aStart.i, 6000, 'A leads again after its drain')
    assert.strictEqual(again.token, aStart.token)
    await b.waitFor({ ev: 'start', name: 'job' }, 15000, 'B (priority 5) leads in the end')
    assertOneLeaderAtATime([a, b], 'job')
  })

  it('a negative priority yields to a candidate without one', async () => {
    const prefix = uniquePrefix('pri-neg')
    const [a, b] = await hostsInOrder(prefix, [['A', { priorities: { job: -1 } }], ['B', {}]])
    await b.waitFor({ ev: 'start', name: 'job' }, MIN_TERM_MS + 5000, 'B leads')
    assert.strictEqual(a.find({ ev: 'stop', name: 'job' })[0].reason, 'handover')
    assertOneLeaderAtATime([a, b], 'job')
  })

  it('pause() hands over; resume() makes the higher-priority host lead again after the other led minTermMs', async () => {
    const prefix = uniquePrefix('pri-pause')
    const [a, b] = await hostsInOrder(prefix, [['A', { priorities: { job: 5 } }], ['B', {}]])
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    a.send({ cmd: 'pause', name: 'job' })
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B leads while A is paused')
    const since = a.mark()
    a.send({ cmd: 'resume', name: 'job' })
    const aAgain = await a.waitFor({ ev: 'start', name: 'job' }, MIN_TERM_MS + 5000, 'A leads again', { since })
    const [bStop] = b.find({ ev: 'stop', name: 'job' })
    assert.strictEqual(bStop.reason, 'handover')
    assert.ok(ms(bStop.t - bStart.t) >= MIN_TERM_MS, `B led ${ms(bStop.t - bStart.t)} ms`)
    assert.ok(aAgain.t > bStop.t)
    assertOneLeaderAtATime([a, b], 'job')
  })

  it('a candidate of etcdctl elect between blocks the handover: the leader leads on and does not ask again', async (t) => {
    const prefix = uniquePrefix('pri-etcdctl')
    const [a] = await hostsInOrder(prefix, [['A', {}]])
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A leads')
    // etcd's own recipe queues behind A and never steps aside.
    startEtcdctlElect(t, etcd, [`${prefix}/job`, 'plain'])
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.some((kv) => kv.value === 'plain'), 5000, 'etcdctl queued')
    const [b] = await hostsInOrder(prefix, [['B', { priorities: { job: 5 } }]])
    // The handover is asked once A led minTermMs, and refused after 5 s (src/handover.rs, WAIT);
    // meanwhile term() shows it under way.
    const reader = locked(etcd.endpoints, { prefix })
    t.after(() => reader.close())
    const observer = reader.observe('job')
    const handing = await until(async () => { const x = await reader.term('job'); return x && x.handover && x }, MIN_TERM_MS + 3000, 'term() showing the handover')
    assert.deepStrictEqual([handing.leader, handing.handover, handing.preferred], [a.id, { to: b.id }, b.id])
    await until(() => observer.term()?.handover, 3000, 'the observer showing the handover')
    assert.deepStrictEqual(observer.term().handover, { to: b.id })
    const restart = await a.waitFor((e) => e.ev === 'start' && e.name === 'job' && e.i > a.find({ ev: 'start' })[0].i, MIN_TERM_MS + 10000, 'A leads again after the blocked handover')
    // Another preference written makes A look again: the blocked target is not asked for again.
    const [d] = await hostsInOrder(prefix, [['D', { priorities: { job: 1 } }]])
    await quietWindow(MIN_TERM_MS + 2000)
    assert.strictEqual(a.find({ ev: 'stop', name: 'job' }).length, 1, `A handed over once, not again\n${formatTimeline([a, b, d])}`)
    assert.deepStrictEqual([...b.find({ ev: 'start' }), ...d.find({ ev: 'start' })], [])
    assert.ok(restart)
    const kvs = await etcd.keys(`${prefix}/job/`)
    assert.ok(keyOf(kvs, a.id).createRevision < keyOf(kvs, b.id).createRevision, 'A kept its place')
  })
})

describe('balance', { timeout: 180000 }, () => {
  const NAMES = Array.from({ length: 24 }, (_, i) => `job-${i}`)

  function assertSettled (hosts) {
    for (const name of NAMES) {
      const leaders = hosts.filter((h) => ledBy(h).has(name))
      if (leaders.length !== 1 || leaders[0] !== preferredHost(name, hosts)) return false
    }
    return true
  }

  it('each name is led by the locker rendezvous hashing prefers; a locker leaving moves only its names', async () => {
    const prefix = uniquePrefix('bal')
    const hosts = await hostsInOrder(prefix, ['A', 'B', 'C', 'D'].map((l) => [l, { balance: true }]), NAMES)
    await until(() => assertSettled(hosts), 4 * MIN_TERM_MS + 15000, 'every name led by its preferred locker')
    // Settled means settled: nobody moves any more.
    const before = hosts.map((h) => h.mark())
    await quietWindow(MIN_TERM_MS + 1500)
    hosts.forEach((h, i) => assert.deepStrictEqual(h.events.slice(before[i]).filter((e) => e.ev === 'start' || e.ev === 'stop'), [], `${h.label} moved nothing after settling`))
    // A leaves for good: its names go to their preferred survivors, nobody else's names move.
    const [gone, ...rest] = hosts
    const kept = new Map(rest.map((h) => [h, new Set(ledBy(h))]))
    const marks = rest.map((h) => h.mark())
    gone.killedAt = process.hrtime.bigint()
    gone.kill('SIGKILL')
    await until(() => assertSettled(rest), TTL * 1000 + MIN_TERM_MS + 15000, 'the survivors settled')
    rest.forEach((h, i) => {
      const stops = h.events.slice(marks[i]).filter((e) => e.ev === 'stop')
      for (const stop of stops) assert.ok(!kept.get(h).has(stop.name), `${h.label} gave up ${stop.name}, which it led before\n${formatTimeline(rest)}`)
    })
    // Each of A's names started once, on its preferred survivor: whoever was next in line passed
    // the lead on before starting.
    const starts = rest.flatMap((h, i) => h.events.slice(marks[i]).filter((e) => e.ev === 'start'))
    const movedNames = starts.map((e) => e.name).sort()
    assert.deepStrictEqual(movedNames, [...new Set(movedNames)], `a name started twice after A died\n${formatTimeline(rest)}`)
    for (const name of NAMES) assertOneLeaderAtATime(hosts, name)
  })

  it('a locker without balance keeps what it leads; balancing ones do not yield to it', async () => {
    const prefix = uniquePrefix('bal-plain')
    const [plain, ...balancing] = await hostsInOrder(prefix, [['P', {}], ['B', { balance: true }], ['C', { balance: true }]], NAMES)
    await until(() => NAMES.every((n) => ledBy(plain).has(n)), 5000, 'P leads every name')
    await quietWindow(MIN_TERM_MS + 1500)
    assert.deepStrictEqual(plain.find({ ev: 'stop' }), [], 'P never yields for balance')
    for (const h of balancing) assert.deepStrictEqual(h.find({ ev: 'start' }), [])
  })
})

describe('preference options', () => {
  it('bad values are refused synchronously with the right class', async () => {
    const hosts = etcd.endpoints
    assert.throws(() => locked(hosts, { balance: 'yes' }), { name: 'TypeError', message: /options\.balance must be a boolean/ })
    assert.throws(() => locked(hosts, { minTermMs: '5s' }), { name: 'TypeError', message: /options\.minTermMs must be a number/ })
    assert.throws(() => locked(hosts, { minTermMs: -1 }), { name: 'RangeError', message: /options\.minTermMs must be a whole number/ })
    const locker = locked(hosts, { prefix: uniquePrefix('pri-opts') })
    try {
      assert.throws(() => locker('a', () => {}, { priority: 'high' }), { name: 'TypeError', message: /options\.priority must be a number/ })
      assert.throws(() => locker('a', () => {}, { priority: 1.5 }), { name: 'RangeError', message: /options\.priority must be a whole number/ })
      assert.throws(() => locker('a', () => {}, 5), { name: 'TypeError', message: /options must be an object/ })
      assert.deepStrictEqual(Object.keys(locker.singletons()), [], 'nothing registered by a refused call')
      locker('a', null, { priority: 2 })
      assert.strictEqual(locker.stats().singletons.a.priority, 2)
      assert.strictEqual(locker.stats().balance, false)
      assert.strictEqual(locker.stats().minTermMs, 5000)
    } finally {
      await locker.close()
    }
  })
})
