'use strict'
// The election between competing host processes on one real etcd: who starts, handovers, crash
// failover, and pitfalls 1, 2, 3, 7 and 8 of docs/pitfalls.md (their numbers are in the test titles).

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const { startEtcdctlElect } = require('./helpers/etcdctl')
const { startEtcd, keyOf } = require('./helpers/etcd')
const { spawnHost, killAll, now, ms, formatTimeline, assertOneLeaderAtATime, waitForAny, queueHosts } = require('./helpers/hosts')
const { uniquePrefix, quietWindow, SAME_EVENT_MS } = require('./helpers/util')

const TTL = 2
let etcd

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await killAll()
  if (etcd) await etcd.close()
})

const queue = (labels, options) => queueHosts(etcd, labels, { ttl: TTL, ...options })

const etcdctlElect = (t, args) => startEtcdctlElect(t, etcd, args)

describe('election between host processes', { timeout: 120000 }, () => {
  it('one host is elected and fn(remove, term) runs once', async (t) => {
    const prefix = uniquePrefix('one')
    const [a] = await queue(['A'], { prefix, names: ['job'] })
    const start = await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const fn = await a.waitFor({ ev: 'fn', name: 'job' }, 5000, 'A fn')
    assert.ok(fn.t >= start.t, 'fn is called after the start listeners')
    assert.strictEqual(fn.argc, 2, 'fn(remove, term)')
    assert.strictEqual(fn.removeType, 'function')
    assert.strictEqual(typeof start.token, 'number', 'term.token is a number')
    // The fencing token is the create revision of our key.
    const kvs = await etcd.keys(`${prefix}/job/`)
    assert.strictEqual(kvs.length, 1)
    assert.strictEqual(kvs[0].value, a.id, 'the key value is the locker id')
    assert.match(kvs[0].key, new RegExp(`^${prefix}/job/[0-9a-f]+$`), 'key is <prefix>/<name>/<lease hex>')
    assert.strictEqual(start.token, kvs[0].createRevision, 'token = create revision of the own key')
    // Nothing more happens while it leads, for a few keepalive periods.
    await quietWindow(2 * TTL * 1000)
    assert.strictEqual(a.find({ ev: 'fn', name: 'job' }).length, 1, 'fn ran exactly once')
    assert.strictEqual(a.find({ ev: 'start', name: 'job' }).length, 1, 'one start')
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], 'no stop')
    assert.deepStrictEqual(a.find({ ev: 'error' }), [], 'no error')
    // The remove handed to fn un-registers the host.
    const removed = await a.request({ cmd: 'remove', name: 'job', via: 'fn' }, { ev: 'removed', name: 'job' }, 5000)
    const stop = a.find({ ev: 'stop', name: 'job' })
    assert.deepStrictEqual(stop.map((e) => e.reason), ['removed'])
    assert.ok(stop[0].t <= removed.t, 'stop comes before the remove promise resolves')
    assert.deepStrictEqual(await etcd.keys(`${prefix}/job/`), [], 'the key is deleted once remove() resolved')
    const { names } = await a.request({ cmd: 'singletons' }, { ev: 'singletons' })
    assert.deepStrictEqual(names, [])
  })

  it('three hosts: exactly one runs, each remove() hands over to exactly one other', async (t) => {
    const prefix = uniquePrefix('three')
    const hosts = await queue(['A', 'B', 'C'], { prefix, names: ['job'] })
    const [a, b, c] = hosts
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const order = [a]
    const handoffs = []
    let current = a
    let remaining = [b, c]
    while (remaining.length > 0) {
      const since = remaining.map((h) => h.mark())
      const tRemove = now()
      current.send({ cmd: 'remove', name: 'job' })
      const { host: next, event: start } = await waitForAny(remaining, { ev: 'start', name: 'job' }, 5000, 'the next start', { since })
      const stop = await current.waitFor({ ev: 'stop', name: 'job' }, 1000, 'stop of the old leader')
      assert.strictEqual(stop.reason, 'removed')
      assert.ok(stop.t < start.t, `stop of ${current.label} must come before start of ${next.label}`)
      // In queue order: the next in line, not anyone else.
      assert.strictEqual(next, remaining[0], `next leader should be ${remaining[0].label}, got ${next.label}`)
      await current.waitFor({ ev: 'removed', name: 'job' }, 5000, 'remove() resolved')
      handoffs.push(ms(start.t - tRemove))
      order.push(next)
      current = next
      remaining = remaining.filter((h) => h !== next)
    }
    await current.request({ cmd: 'remove', name: 'job' }, { ev: 'removed', name: 'job' }, 5000)
    const terms = assertOneLeaderAtATime(hosts, 'job')
    assert.deepStrictEqual(terms.map((x) => x.host.label), ['A', 'B', 'C'], 'each host led exactly once')
    for (const h of hosts) assert.strictEqual(h.find({ ev: 'fn', name: 'job' }).length, 1, `fn of ${h.label} ran once`)
    const tokens = terms.map((x) => x.token)
    assert.ok(tokens[0] < tokens[1] && tokens[1] < tokens[2], `tokens increase: ${tokens}`)
    t.diagnostic(`handoff (remove sent -> next start): ${handoffs.map((x) => x.toFixed(1) + ' ms').join(', ')}`)
  })

  it('SIGKILL of the leader hands over to exactly one other within TTL + 2 s', async (t) => {
    const prefix = uniquePrefix('kill')
    const hosts = await queue(['A', 'B', 'C'], { prefix, names: ['job'] })
    const [a, b, c] = hosts
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const since = [b.mark(), c.mark()]
    a.kill('SIGKILL')
    const { host: next, event: start } = await waitForAny([b, c], { ev: 'start', name: 'job' }, (TTL + 2) * 1000, 'failover start', { since })
    const failover = ms(start.t - a.killedAt)
    t.diagnostic(`SIGKILL failover: ${failover.toFixed(0)} ms (ttl ${TTL} s) to ${next.label}`)
    assert.ok(failover <= (TTL + 2) * 1000, `failover took ${failover} ms`)
    assert.strictEqual(next, b, 'B was next in line')
    // Exactly one: the other one starts only after the new leader removes itself.
    const other = next === b ? c : b
    await next.request({ cmd: 'remove', name: 'job' }, { ev: 'removed', name: 'job' }, 5000)
    await other.waitFor({ ev: 'start', name: 'job' }, 5000, `${other.label} start after ${next.label} removed`)
    assertOneLeaderAtATime(hosts, 'job')
  })

  it('pitfall 1: the middle candidate removes itself: the last must not start, the first still leads', async () => {
    const prefix = uniquePrefix('p1')
    const hosts = await queue(['A', 'B', 'C'], { prefix, names: ['job'] })
    const [a, b, c] = hosts
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    await b.request({ cmd: 'remove', name: 'job' }, { ev: 'removed', name: 'job' }, 5000)
    const kvs = await etcd.keys(`${prefix}/job/`)
    assert.deepStrictEqual(kvs.map((kv) => kv.value), [a.id, c.id], 'B\'s key is gone, A and C remain')
    // C reacts to the deletion of its predecessor's key at once; give it a generous window.
    await quietWindow(TTL * 1000)
    assert.deepStrictEqual(c.find({ ev: 'start' }), [], 'C must not start while A leads\n' + formatTimeline(hosts))
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], 'A still leads')
    const { names } = await a.request({ cmd: 'leading' }, { ev: 'leading' })
    assert.deepStrictEqual(names, ['job'], 'A still leads')
    assert.deepStrictEqual(b.find({ ev: 'start' }), [], 'B never started')
    // And C is still a working candidate: it takes over when A goes.
    a.send({ cmd: 'remove', name: 'job' })
    await c.waitFor({ ev: 'start', name: 'job' }, 5000, 'C start after A removed')
    assertOneLeaderAtATime(hosts, 'job')
  })

  it('the last candidate removes itself: the next in line must not start, the first still leads', async () => {
    // B, next in line, leads on the deletion of A's key as its watch delivers it
    // (docs/election-safety.md, item 14); the deletion of C's key, behind it, must not count.
    const prefix = uniquePrefix('behind')
    const hosts = await queue(['A', 'B', 'C'], { prefix, names: ['job'] })
    const [a, b, c] = hosts
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    await c.request({ cmd: 'remove', name: 'job' }, { ev: 'removed', name: 'job' }, 5000)
    const kvs = await etcd.keys(`${prefix}/job/`)
    assert.deepStrictEqual(kvs.map((kv) => kv.value), [a.id, b.id], 'C\'s key is gone, A and B remain')
    await quietWindow(TTL * 1000) // time for a wrong start to show
    assert.deepStrictEqual(b.find({ ev: 'start' }), [], 'B must not start while A leads\n' + formatTimeline(hosts))
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], 'A still leads')
    // And B still takes over when A goes.
    a.send({ cmd: 'remove', name: 'job' })
    await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start after A removed')
    assertOneLeaderAtATime(hosts, 'job')
  })

  it('pitfall 2: a candidate whose lease was revoked must not start on its stale key, and rejoins with a fresh lease', async () => {
    const prefix = uniquePrefix('p2')
    const hosts = await queue(['A', 'B', 'C'], { prefix, names: ['job'] })
    const [a, b, c] = hosts
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const before = await etcd.keys(`${prefix}/job/`)
    const staleB = keyOf(before, b.id)
    // Revoke B's lease from a second client, then at once remove the leader.
    await etcd.revoke(staleB.leaseHex)
    const since = [b.mark(), c.mark()]
    a.send({ cmd: 'remove', name: 'job' })
    const { host: next, event: start } = await waitForAny([b, c], { ev: 'start', name: 'job' }, 5000, 'start after A removed', { since })
    assert.strictEqual(next, c, `C must be elected, not the revoked B\n${formatTimeline(hosts)}`)
    assert.strictEqual(start.token, keyOf(before, c.id).createRevision)
    // B rejoins: a new key of its own, on a new lease, behind C.
    const fresh = await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, b.id), TTL * 1000 + 2000, 'B\'s new key')
    assert.notStrictEqual(fresh.leaseHex, staleB.leaseHex, 'B rejoined with a fresh lease')
    assert.ok(fresh.createRevision > staleB.createRevision)
    for (const e of b.find({ ev: 'start' })) {
      assert.notStrictEqual(e.token, staleB.createRevision, 'B started on its stale key')
    }
    assert.deepStrictEqual(b.find({ ev: 'start' }), [], 'B must not start while C leads\n' + formatTimeline(hosts))
    // When C goes, B leads on its fresh key.
    c.send({ cmd: 'remove', name: 'job' })
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start after C removed')
    const now2 = keyOf(await etcd.keys(`${prefix}/job/`), b.id)
    assert.strictEqual(bStart.token, now2.createRevision, 'B leads on its fresh key')
    assertOneLeaderAtATime(hosts, 'job')
  })

  it('pitfall 3: a waiting candidate whose lease was revoked is back in the queue within one ttl', async (t) => {
    const prefix = uniquePrefix('p3')
    const ttl = 3
    const hosts = await queue(['A', 'B'], { prefix, names: ['job'], ttl })
    const [a, b] = hosts
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const stale = keyOf(await etcd.keys(`${prefix}/job/`), b.id)
    const t0 = now()
    await etcd.revoke(stale.leaseHex)
    const fresh = await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, b.id), ttl * 1000 + 1000, 'B\'s new key')
    const back = ms(now() - t0)
    t.diagnostic(`revoked candidate back in the queue after ${back.toFixed(0)} ms (ttl ${ttl} s)`)
    assert.ok(back <= ttl * 1000, `B took ${back.toFixed(0)} ms to rejoin (more than one ttl)`)
    assert.notStrictEqual(fresh.leaseHex, stale.leaseHex)
    assert.deepStrictEqual(b.find({ ev: 'start' }), [])
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], 'the leader is not disturbed')
    a.send({ cmd: 'remove', name: 'job' })
    await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start after A removed')
    assertOneLeaderAtATime(hosts, 'job')
  })

  it('pitfall 7: the old leader\'s remove() after losing its lease does not touch the new leader\'s key', async () => {
    const prefix = uniquePrefix('p7')
    const hosts = await queue(['A', 'B'], { prefix, names: ['job'] })
    const [a, b] = hosts
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const aKey = keyOf(await etcd.keys(`${prefix}/job/`), a.id)
    await etcd.revoke(aKey.leaseHex)
    const aStop = await a.waitFor({ ev: 'stop', name: 'job' }, 5000, 'A stop after its lease was revoked')
    assert.ok(['lease-lost', 'key-deleted'].includes(aStop.reason), `stop reason ${aStop.reason}`)
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start')
    const bKey = keyOf(await etcd.keys(`${prefix}/job/`), b.id)
    assert.strictEqual(bStart.token, bKey.createRevision)
    // The old handle's remove(): resolves, and removes only A's own (possibly new) key.
    await a.request({ cmd: 'remove', name: 'job' }, (e) => e.name === 'job' && (e.ev === 'removed' || e.ev === 'error'), 10000, 'A remove() settled')
    assert.deepStrictEqual(a.find({ ev: 'error', scope: 'command' }), [], 'A remove() resolves')
    const kvs = await etcd.keys(`${prefix}/job/`)
    assert.deepStrictEqual(kvs.map((kv) => [kv.key, kv.createRevision]), [[bKey.key, bKey.createRevision]], 'only B\'s key is left, untouched')
    // B was not disturbed: its first stop is the one of its own remove().
    const bRemoved = await b.request({ cmd: 'remove', name: 'job' }, { ev: 'removed', name: 'job' }, 5000)
    const bStops = b.find({ ev: 'stop', name: 'job' })
    assert.deepStrictEqual(bStops.map((e) => e.reason), ['removed'], 'B got no stop before its own remove()')
    assert.ok(bStops[0].t <= bRemoved.t)
    // An outside revoke deletes A's key while A leads: A can only notice afterwards (from the same
    // watch event as B), so a short overlap is unavoidable here; it must end at once.
    assertOneLeaderAtATime(hosts, 'job', { allowOverlapMs: SAME_EVENT_MS })
  })

  it('pitfall 8: names build and build2 on one locker are independent', async () => {
    const prefix = uniquePrefix('p8')
    const [a] = await queue(['A'], { prefix, names: ['build'] })
    await a.waitFor({ ev: 'start', name: 'build' }, 5000, 'A build start')
    const [b] = await queue(['B'], { prefix, names: ['build2', 'build'] })
    await b.waitFor({ ev: 'start', name: 'build2' }, 5000, 'B build2 start')
    a.send({ cmd: 'register', name: 'build2' })
    b.send({ cmd: 'register', name: 'buil' })
    await b.waitFor({ ev: 'start', name: 'buil' }, 5000, 'B buil start')
    await etcd.waitKeys(`${prefix}/build2/`, (kvs) => kvs.length === 2, 5000, 'two candidates for build2')
    // A prefix "build" that is not followed by '/' would put build2's keys in build's queue.
    const build = await etcd.keys(`${prefix}/build/`)
    assert.deepStrictEqual(build.map((kv) => kv.value), [a.id, b.id])
    // One lease per locker, whatever the number of singletons.
    const all = await etcd.keys(`${prefix}/`)
    for (const h of [a, b]) {
      const leases = new Set(all.filter((kv) => kv.value === h.id).map((kv) => kv.leaseHex))
      assert.strictEqual(leases.size, 1, `${h.label} holds one lease for all its keys: ${[...leases]}`)
      assert.ok(all.filter((kv) => kv.value === h.id).every((kv) => kv.key.endsWith('/' + [...leases][0])), 'key ends in the lease id in hex')
    }
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [])
    assert.deepStrictEqual(b.find({ ev: 'stop' }), [])
    assert.deepStrictEqual(b.find({ ev: 'start', name: 'build' }), [], 'B waits for build')
    assert.deepStrictEqual(a.find({ ev: 'start', name: 'build2' }), [], 'A waits for build2')
    // Removing the leader of build hands build over, build2 untouched.
    a.send({ cmd: 'remove', name: 'build' })
    await b.waitFor({ ev: 'start', name: 'build' }, 5000, 'B build start')
    assert.deepStrictEqual(b.find({ ev: 'stop' }), [])
    assertOneLeaderAtATime([a, b], 'build')
    assertOneLeaderAtATime([a, b], 'build2')
  })

  it('a user fn that throws: an error event on its singleton; the other names keep working', async () => {
    const prefix = uniquePrefix('throw')
    const [a] = await queue(['A'], { prefix, names: ['bad', 'good'], extra: { throw: ['bad'] } })
    const err = await a.waitFor({ ev: 'error', name: 'bad' }, 5000, 'error event of bad')
    assert.strictEqual(err.scope, 'singleton')
    assert.strictEqual(err.code, 'USER_FN_THREW')
    assert.match(err.message + ' ' + err.cause, /threw on purpose/)
    await a.waitFor({ ev: 'start', name: 'good' }, 5000, 'good start')
    // Another name registered afterwards is elected, and another host can take over 'good'.
    const [b] = await queue(['B'], { prefix, names: ['good'] })
    a.send({ cmd: 'register', name: 'late' })
    await a.waitFor({ ev: 'start', name: 'late' }, 5000, 'late start')
    a.send({ cmd: 'remove', name: 'good' })
    await b.waitFor({ ev: 'start', name: 'good' }, 5000, 'B takes over good')
    // The throwing name itself still hands over.
    b.send({ cmd: 'register', name: 'bad' })
    await etcd.waitKeys(`${prefix}/bad/`, (kvs) => kvs.length === 2, 5000, 'B queued for bad')
    a.send({ cmd: 'remove', name: 'bad' })
    await b.waitFor({ ev: 'start', name: 'bad' }, 5000, 'B takes over bad')
    assertOneLeaderAtATime([a, b], 'good')
    assertOneLeaderAtATime([a, b], 'bad')
  })

  it('interoperates with etcdctl elect (Go concurrency.Election) on the same keys', async (t) => {
    const prefix = uniquePrefix('interop')
    const election = `${prefix}/job`
    const [a] = await queue(['A'], { prefix, names: ['job'] })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    // An observer and a Go candidate.
    const observer = etcdctlElect(t, ['-l', election])
    const [leaderKey, leaderValue] = await observer.lines(2, 5000)
    const aKey = keyOf(await etcd.keys(`${prefix}/job/`), a.id)
    assert.deepStrictEqual([leaderKey, leaderValue], [aKey.key, a.id], 'etcdctl elect -l sees the Node leader')
    const go = etcdctlElect(t, [election, 'go-candidate'])
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.some((kv) => kv.value === 'go-candidate'), 5000, 'the Go candidate queued')
    const [b] = await queue(['B'], { prefix, names: ['job'] })
    assert.strictEqual(go.output(), '', 'the Go candidate waits while A leads')
    // A goes: the Go candidate (next in line) is elected, and B knows it waits behind its key.
    a.send({ cmd: 'remove', name: 'job' })
    const [goKey, goValue] = await go.lines(2, 5000)
    assert.strictEqual(goValue, 'go-candidate')
    assert.match(goKey, new RegExp(`^${election}/[0-9a-f]+$`))
    await b.waitFor({ ev: 'leader', name: 'job', leader: 'go-candidate' }, 5000, 'B sees the Go candidate lead')
    assert.deepStrictEqual(b.find({ ev: 'start' }), [], 'B does not start while the Go candidate leads')
    // The Go candidate resigns on SIGINT: only then is B elected.
    const resigned = now()
    go.proc.kill('SIGINT')
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start after the Go candidate resigned')
    assert.ok(bStart.t > resigned, `B started before the Go candidate resigned\n${formatTimeline([a, b])}`)
    assert.ok(bStart.token > aKey.createRevision)
    assert.deepStrictEqual(b.find({ ev: 'start' }).length, 1)
    assert.ok(!keyOf(await etcd.keys(`${prefix}/job/`), 'go-candidate'), 'the Go candidate\'s key is gone')
  })

  it('a user fn that throws with no error listener is an uncaught exception', async () => {
    const prefix = uniquePrefix('uncaught')
    const a = spawnHost({ endpoints: etcd.endpoints, ttl: TTL, prefix, names: ['bad'], throw: ['bad'], noErrorListeners: true }, 'A')
    const ev = await a.waitFor({ ev: 'uncaught' }, 5000, 'uncaught exception')
    assert.match(ev.message, /threw on purpose/)
    const { code } = await a.exited
    assert.strictEqual(code, 1)
  })
})
