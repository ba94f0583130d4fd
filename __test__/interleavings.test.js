'use strict'
// The library racing itself: API calls that cross requests still in flight, the batching of many
// elections into one etcd request, an etcd that comes back without its data, and process exit in
// the middle of a close. Each test here names the way a name could end up without a leader (or
// with two) and shows that it does not. docs/election-safety.md explains each case.

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const v8 = require('node:v8')
const vm = require('node:vm')
const locked = require('..')
const { startEtcd, httpJson, termBucket, termLines } = require('./helpers/etcd')
const { startProxy, closeProxies } = require('./helpers/proxy')
const { spawnHost, killAll, ms, formatTimeline } = require('./helpers/hosts')
const { uniquePrefix, nextEvent, within, quietWindow, until } = require('./helpers/util')
const { lockerSet } = require('./helpers/lockers')

let etcd
const lockers = lockerSet() // closed after each test

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await killAll()
  await closeProxies()
  if (etcd) await etcd.close()
})
afterEach(async () => {
  await etcd.heal()
  await killAll()
  await lockers.closeAll()
})

function locker (options) {
  const l = lockers.open(etcd.endpoints, { ttl: 2, ...options })
  l.on('error', () => {}) // connection trouble during the faults below is expected
  return l
}

// Resolves once every singleton in `list` has emitted 'start' (counting from now).
function allStart (list, timeoutMs, description) {
  let left = list.length
  return within(new Promise((resolve) => {
    if (left === 0) resolve()
    for (const s of list) s.once('start', () => { if (--left === 0) resolve() })
  }), timeoutMs, `${description} (${left} of ${list.length} not started)`)
}

// etcd's count of finished requests of one gRPC method (all codes), from its Prometheus metrics.
async function handled (method) {
  const res = await httpJson(`${etcd.members[0].clientUrl}/metrics`, { timeoutMs: 3000 })
  const text = typeof res.body === 'string' ? res.body : String(res.body)
  let total = 0
  for (const line of text.split('\n')) {
    if (line.startsWith('grpc_server_handled_total{') && line.includes(`grpc_method="${method}"`)) {
      total += Number(line.slice(line.lastIndexOf(' ') + 1))
    }
  }
  return total
}

const gc = (() => {
  v8.setFlagsFromString('--expose-gc')
  return vm.runInNewContext('gc')
})()

function openSockets () {
  let sockets = 0
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')) sockets++
    } catch {}
  }
  return sockets
}

describe('interleavings', { timeout: 120000 }, () => {
  it('a remove() that crosses campaigns in flight leaves no key behind, and another locker gets every name', async () => {
    const prefix = uniquePrefix('rmrace')
    const names = Array.from({ length: 1000 }, (_, i) => `n${i}`)
    const a = locker({ prefix, ttl: 10 })
    const warm = a('warm')
    await nextEvent(warm, 'start', 10000, 'A elected for warm (its watch is up)')
    for (let round = 0; round < 2; round++) {
      const list = names.map((n) => a(n))
      // Some campaigns have been answered, most are still queued or in flight.
      await within(new Promise((resolve) => { for (const s of list) s.once('start', resolve) }), 10000, 'a first election')
      // etcd stalls for a moment: campaigns and the resigns that follow them time out and are
      // retried, which is when a campaign can overtake the resign issued after it.
      etcd.members[0].pause()
      const removed = Promise.all(list.map((s) => s.remove()))
      await quietWindow(2100 + round * 500)
      etcd.members[0].resume()
      await within(removed, 30000, 'every remove() resolves')
      const left = (await etcd.keys(`${prefix}/`)).filter((kv) => kv.value === a.id() && !kv.key.startsWith(`${prefix}/warm`))
      assert.deepStrictEqual(left.map((kv) => kv.key), [], `round ${round}: keys of removed registrations are still in etcd while A is open`)
    }
    const b = locker({ prefix, ttl: 10 })
    await allStart(names.map((n) => b(n)), 20000, 'B elected for every name A removed')
  })

  it('a remove() that crosses a campaign etcd has not answered yet leaves no key behind', async () => {
    const prefix = uniquePrefix('rmstall')
    const a = locker({ prefix, ttl: 10 })
    await nextEvent(a('warm'), 'start', 10000, 'A elected for warm (its watch is up)')
    const m = etcd.members[0]
    for (let round = 0; round < 5; round++) {
      // etcd stalls just long enough for the campaign and the resign after it to time out once
      // (2 s) and be sent again: nothing may let the campaign land after the resign.
      m.pause()
      const list = Array.from({ length: 5 }, (_, i) => a(`r${round}n${i}`))
      const removed = Promise.all(list.map((s) => s.remove()))
      await quietWindow(2005)
      m.resume()
      await within(removed, 30000, 'every remove() resolves')
      const left = (await etcd.keys(`${prefix}/`)).filter((kv) => kv.value === a.id() && !kv.key.startsWith(`${prefix}/warm`))
      assert.deepStrictEqual(left.map((kv) => kv.key), [], `round ${round}: keys of removed registrations are still in etcd while A is open`)
    }
  })

  it('a stale campaign in a batch does not fail the others: after a pause longer than the TTL every name leads on one lease', async () => {
    const prefix = uniquePrefix('batch')
    const names = Array.from({ length: 1500 }, (_, i) => `n${i}`)
    const a = locker({ prefix, ttl: 2 })
    const list = names.map((n) => a(n))
    await allStart(list, 20000, 'all 1500 elected')
    const before = a.stats().lease
    const grantsBefore = await handled('LeaseGrant')
    const m = etcd.members[0]
    m.pause()
    await quietWindow(5000) // the outage itself: longer than the TTL
    const again = allStart(list, 15000, 'all 1500 elected again after etcd resumed')
    m.resume()
    const resumed = process.hrtime.bigint()
    await again
    const tookMs = ms(process.hrtime.bigint() - resumed)
    const lease = a.stats().lease
    const kvs = await etcd.keys(`${prefix}/`)
    const candidates = kvs.filter((kv) => kv.key.split('/').length === 3)
    const leases = [...new Set(candidates.map((kv) => kv.leaseHex))]
    assert.deepStrictEqual(leases, [lease], `every key on the locker's current lease (it had ${before} before)`)
    assert.strictEqual(candidates.length, names.length)
    for (const s of list) assert.ok(s.isLeader(), `${s.name} leads`)
    assert.ok(tookMs < 10000, `all leading again ${tookMs.toFixed(0)} ms after etcd resumed`)
    // One new lease for the one that expired: a healthy lease is never given up because a stale
    // transaction failed next to it.
    assert.ok((await handled('LeaseGrant')) - grantsBefore <= 1, `${(await handled('LeaseGrant')) - grantsBefore} leases granted after the outage`)
  })

  it('a lease lost while 1500 campaigns are queued: the stale ones fail alone, and one new lease serves every name', async () => {
    const prefix = uniquePrefix('revoked')
    const p = await startProxy(etcd.endpoints[0])
    const a = lockers.open([p.endpoint], { ttl: 5, prefix })
    a.on('error', () => {})
    await nextEvent(a('warm'), 'start', 10000, 'A elected for warm')
    // A is cut off while it campaigns for 1500 names: the campaigns queue up behind the ones
    // in flight, and meanwhile its lease is revoked.
    p.mode('blackhole')
    const list = Array.from({ length: 1500 }, (_, i) => a(`n${i}`))
    const grantsBefore = await handled('LeaseGrant')
    await etcd.revoke(a.stats().lease)
    await quietWindow(1000)
    p.mode('pass')
    await until(() => list.every((s) => s.isLeader()), 20000, 'every name leads again', 50)
    const grants = (await handled('LeaseGrant')) - grantsBefore
    const candidates = (await etcd.keys(`${prefix}/`)).filter((kv) => kv.key.split('/').length === 3)
    assert.deepStrictEqual([...new Set(candidates.map((kv) => kv.leaseHex))], [a.stats().lease])
    assert.strictEqual(grants, 1, `${grants} leases granted after one revoke`)
  })

  it('etcd restarted with empty data: a handover afterwards is still seen, by candidates and observers', async () => {
    const prefix = uniquePrefix('wiped')
    const a = locker({ prefix, id: 'A' })
    const b = locker({ prefix, id: 'B' })
    const c = locker({ prefix, id: 'C' })
    const sa = a('job')
    await nextEvent(sa, 'start', 10000, 'A elected')
    const sb = b('job')
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 10000, 'B queued')
    // History the fresh etcd will not have: revisions well above what it reaches below.
    const churn = Array.from({ length: 50 }, (_, i) => c(`churn${i}`))
    await allStart(churn, 10000, 'churn elected')
    await Promise.all(churn.map((s) => s.remove()))
    const o = c.observe('job')
    const m = etcd.members[0]
    await m.kill()
    fs.rmSync(m.dataDir, { recursive: true, force: true })
    const elected = Promise.race([nextEvent(sa, 'start', 30000), nextEvent(sb, 'start', 30000)])
    await m.start()
    // Both lose their leases (the new etcd has none) and queue again.
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 15000, 'both queued on the fresh etcd')
    await elected
    const [leader, follower] = sa.isLeader() ? [sa, sb] : [sb, sa]
    assert.ok(leader.isLeader() && !follower.isLeader(), 'one of A and B leads')
    const followerId = follower === sa ? 'A' : 'B'
    const takeover = nextEvent(follower, 'start', 5000, `${followerId} takes over after the handover on the fresh etcd`)
    const seen = new Promise((resolve) => o.on('leader', (id) => { if (id === followerId) resolve() }))
    await leader.remove()
    await takeover
    await within(seen, 5000, `the observer reports ${followerId}`)
  })

  it('re-registering a name right after remove() queues behind the old registration', async () => {
    const prefix = uniquePrefix('rereg')
    const a = locker({ prefix })
    const first = a('job', async (remove, term) => {
      await new Promise((resolve) => term.signal.addEventListener('abort', () => setTimeout(resolve, 100)))
    })
    await nextEvent(first, 'start', 10000, 'first registration elected')
    const removed = first.remove()
    const second = a('job') // must not throw while the first one drains and resigns
    assert.notStrictEqual(second, first)
    assert.strictEqual(a.singletons().job, second)
    assert.throws(() => a('job'), { code: 'ALREADY_REGISTERED' })
    const started = nextEvent(second, 'start', 10000, 'second registration elected')
    await removed
    await started
    assert.ok(second.isLeader())
    assert.ok(!first.isLeader())
    // Removing and registering again in one go, many times: every registration gets its turn.
    let current = second
    for (let i = 0; i < 20; i++) {
      current.remove()
      current = a('job')
    }
    await nextEvent(current, 'start', 10000, 'the last of 20 immediate re-registrations elected')
    const kvs = await etcd.keys(`${prefix}/job/`)
    assert.strictEqual(kvs.length, 1, 'one key: the removed registrations left none')
  })

  it('2.x: node.stop() then node.start() at once competes again', async () => {
    const prefix = uniquePrefix('v2restart')
    const a = locker({ prefix })
    const node = a({ path: `/${prefix}-master`, value: 'v1', ttl: 2 })
    node.on('error', () => {})
    node.start()
    await nextEvent(node, 'select', 10000, 'node selected')
    const stopped = node.stop()
    node.start()
    await nextEvent(node, 'select', 10000, 'node selected again after stop(); start()')
    await stopped
    await node.stop()
  })

  it('a closed locker is freed: 200 create/close cycles leave no socket, task or locker behind', async () => {
    const prefix = uniquePrefix('free')
    const registry = new FinalizationRegistry(() => { collected++ })
    let collected = 0
    const cycle = async (i) => {
      const l = locked(etcd.endpoints, { ttl: 2, prefix })
      const s = l(`n${i % 5}`)
      await nextEvent(s, 'start', 10000, `cycle ${i} elected`)
      await l.close()
      registry.register(l, i)
    }
    await cycle(0)
    const socketsBefore = openSockets()
    const rssBefore = process.memoryUsage().rss
    const cycles = 200
    for (let i = 1; i <= cycles; i++) await cycle(i)
    // Collection is lazy: collect until every closed locker is gone (or time runs out).
    const deadline = Date.now() + 20000
    while (collected < cycles && Date.now() < deadline) {
      gc()
      await quietWindow(20)
    }
    const socketsAfter = openSockets()
    const rssGrowthMb = (process.memoryUsage().rss - rssBefore) / 1048576
    assert.ok(collected >= cycles, `${collected} of ${cycles + 1} closed lockers were collected`)
    assert.ok(socketsAfter <= socketsBefore + 2, `sockets: ${socketsBefore} before, ${socketsAfter} after ${cycles} closed lockers`)
    assert.ok(rssGrowthMb < 40, `RSS grew by ${rssGrowthMb.toFixed(1)} MB over ${cycles} closed lockers`)
    const leases = await etcd.leases()
    const kvs = await etcd.keys(`${prefix}/`)
    assert.deepStrictEqual(kvs, [], 'no key left')
    assert.ok(leases.length <= 2, `leases left in etcd: ${leases.length}`)
  })

  it('a start that reaches a blocked JavaScript thread after its term ended is not acted on', async () => {
    const prefix = uniquePrefix('latestart')
    const ttl = 2
    const b = spawnHost({ endpoints: etcd.endpoints, ttl, prefix, names: ['job'] }, 'B')
    await b.waitFor({ ev: 'start', name: 'job' }, 10000, 'B elected')
    const p = await startProxy(etcd.endpoints[0])
    const a = spawnHost({ endpoints: [p.endpoint], ttl, prefix, names: ['job'] }, 'A')
    await a.ready
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 5000, 'A queued')
    // A's JavaScript thread is busy well past its deadline.
    a.send({ cmd: 'block', name: 'job', ms: 4000 })
    await a.waitFor({ ev: 'blocking' }, 5000, 'A blocking')
    await b.request({ cmd: 'remove', name: 'job' }, { ev: 'removed', name: 'job' }, 5000)
    // A's core was elected (it publishes its term record right after), while A's thread is blocked.
    await etcd.waitKeys(`${prefix}/`, (kvs) => termLines(kvs, prefix).some((l) => l.name === 'job' && l.token === kvs.find((k) => k.value === a.id)?.createRevision), 3000, 'A\'s term record')
    // Then A is cut off: its lease is not renewed again, and its deadline passes while blocked.
    p.mode('blackhole')
    await a.waitFor({ ev: 'unblocked' }, 10000, 'A unblocked')
    // Let every queued event reach A's JavaScript, then look at what it did.
    await a.request({ cmd: 'ping' }, { ev: 'pong' }, 5000)
    const starts = a.events.filter((e) => e.ev === 'start' || e.ev === 'fn')
    assert.deepStrictEqual(starts.map((e) => `${e.ev} isLeader=${e.isLeader}`), [], `A acted on a term that had ended\n${formatTimeline([a, b])}`)
  })

  it('a key of ours not bound to our lease (written from outside) backs off instead of a request storm', async () => {
    const prefix = uniquePrefix('storm')
    const b = locker({ prefix, ttl: 5 })
    const sb = b('job')
    await nextEvent(sb, 'start', 10000, 'B elected')
    const a = locker({ prefix, ttl: 5 })
    const sa = a('job')
    const errors = []
    sa.on('error', (err) => errors.push(err))
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 5000, 'A queued')
    const own = `${prefix}/job/${a.stats().lease}`
    await etcd.etcdctl(['put', own, a.id()]) // no lease: the key is not A's any more
    const before = await handled('Txn')
    await sb.remove()
    await quietWindow(2000) // what A does meanwhile is the point: a few retries, not thousands
    const txns = (await handled('Txn')) - before
    assert.ok(txns < 40, `${txns} transactions in 2 s after A found its key bound to no lease`)
    assert.ok(!sa.isLeader(), 'A must not lead on a key that is not bound to its lease')
    await until(() => errors.length > 0, 5000, 'an error on A\'s singleton')
    assert.match(errors[0].message, /not bound to/)
  })

  it('a candidate whose key goes in the same request as the key ahead of it campaigns again before it leads', async () => {
    // A candidate next in line leads on the watch alone when the key ahead is deleted and nothing
    // else of the name changed since the read that found it next in line (docs/how-it-works.md).
    // Here one request deletes both: B's key first (its lease is older, so its key sorts first), A's key
    // last. Leading on A's deletion would make B lead on a key that is gone, beside A, which
    // campaigns again and leads on its new key.
    const prefix = uniquePrefix('bothgone')
    const b = locker({ prefix, ttl: 10, id: 'B' })
    await nextEvent(b('warm'), 'start', 10000, 'B has its lease and its watch')
    const a = locker({ prefix, ttl: 10, id: 'A' })
    const sa = a('job')
    await nextEvent(sa, 'start', 10000, 'A elected')
    const sb = b('job')
    const queued = await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2 && kvs, 5000, 'B queued behind A')
    assert.deepStrictEqual(queued.map((kv) => kv.value), ['A', 'B'])
    assert.ok(queued[1].key < queued[0].key, `B's key ${queued[1].key} sorts before A's ${queued[0].key}`)
    const leading = new Set()
    const terms = []
    let both = 0
    for (const [id, s] of [['A', sa], ['B', sb]]) {
      s.on('start', (term) => {
        leading.add(id)
        if (leading.size > 1) both++
        terms.push({ id, token: term.token })
      })
      s.on('stop', () => leading.delete(id))
    }
    await etcd.etcdctl(['del', '--prefix', `${prefix}/job/`])
    await until(() => terms.length > 0, 10000, 'someone leads again')
    await quietWindow(1000) // time for a wrong second start to show
    assert.strictEqual(both, 0, `A and B led at once: ${JSON.stringify(terms)}`)
    assert.strictEqual(terms.length, 1, `one new term: ${JSON.stringify(terms)}`)
    const [term] = terms
    const kvs = await etcd.keys(`${prefix}/job/`)
    assert.strictEqual(kvs[0].value, term.id, `${term.id} leads on the first key in etcd`)
    assert.strictEqual(kvs[0].createRevision, term.token, `${term.id} leads on the key it holds now`)
  })

  it('in a queue of three, each next in line leads on the watch alone, also after the queue moved', async () => {
    // The read that C makes when A's key goes finds C next in line behind B; B's deletion is the
    // only change after that read, so C needs no read to lead (docs/how-it-works.md).
    const prefix = uniquePrefix('chain')
    const narration = { A: [], B: [], C: [] }
    const make = (id) => locker({ prefix, ttl: 10, id, logger: { debug: (fields, message) => narration[id].push(message), info () {}, warn () {}, error () {} } })
    const sa = make('A')('job')
    await nextEvent(sa, 'start', 10000, 'A elected')
    const sb = make('B')('job')
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 5000, 'B queued')
    const sc = make('C')('job')
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 3, 5000, 'C queued')
    const bStarts = nextEvent(sb, 'start', 5000, 'B leads after A left')
    const cSeesB = new Promise((resolve) => sc.on('leader', (id) => { if (id === 'B') resolve() }))
    await sa.remove()
    await bStarts
    await within(cSeesB, 5000, 'C read that B leads')
    const cStarts = nextEvent(sc, 'start', 5000, 'C leads after B left')
    await sb.remove()
    await cStarts
    const onWatch = (id) => narration[id].filter((m) => /leads without a read$/.test(m)).length
    assert.strictEqual(onWatch('B'), 1, 'B led on the deletion of A\'s key alone')
    assert.strictEqual(onWatch('C'), 1, 'C led on the deletion of B\'s key alone')
    const kvs = await etcd.keys(`${prefix}/job/`)
    assert.deepStrictEqual(kvs.map((kv) => kv.value), ['C'])
  })

  it('process.exit() during an asynchronous close() still revokes the lease at once', async () => {
    const prefix = uniquePrefix('exitclose')
    const ttl = 10
    const a = spawnHost({ endpoints: etcd.endpoints, ttl, prefix, names: ['job'] }, 'A')
    await a.waitFor({ ev: 'start', name: 'job' }, 10000, 'A elected')
    const b = spawnHost({ endpoints: etcd.endpoints, ttl, prefix, names: ['job'] }, 'B')
    await b.ready
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 5000, 'B queued')
    // etcd answers slowly for a moment: the close's own revoke is still in flight at exit.
    const m = etcd.members[0]
    m.pause()
    a.send({ cmd: 'closeAndExit' })
    setTimeout(() => m.resume(), 200)
    const exited = await a.exited
    const start = await b.waitFor({ ev: 'start', name: 'job' }, ttl * 1000 + 3000, 'B takes over')
    const afterMs = ms(start.t - exited.t)
    assert.ok(afterMs < 3000, `B started ${afterMs.toFixed(0)} ms after A exited (a lease left to expire takes ${ttl} s)`)
  })
})

describe('revisions larger than one gRPC message', { timeout: 120000 }, () => {
  // A locker that closes revokes its lease, and etcd deletes every key of it in one revision; a
  // watch gets that revision as one message unless it asks etcd to split it. Past the client's
  // 4 MB message limit the successor's watch failed on it again and again, and no name it waited
  // for was ever led again. Long keys make that revision large with few names: here A's 3000
  // keys and its term records, about 6 MB.
  it('a locker with 3000 names of 1.5 KB keys closes: the other locker leads every one of them', async () => {
    const prefix = `${uniquePrefix('big')}-${'p'.repeat(1500)}`
    const names = Array.from({ length: 3000 }, (_, i) => `n${i}`)
    const a = locker({ prefix, ttl: 10, id: 'A' })
    const b = locker({ prefix, ttl: 10, id: 'B' })
    await allStart(names.map((name) => a(name)), 30000, 'A leads every name')
    const waiting = names.map((name) => b(name))
    await until(async () => {
      const out = await etcd.etcdctl(['get', `${prefix}/`, '--prefix', '--keys-only', '--limit', '1', '-w', 'json'])
      return Number(JSON.parse(out).count) === 2 * names.length + new Set(names.map(termBucket)).size
    }, 30000, 'B queued on every name')
    const bStarts = allStart(waiting, 20000, 'B leads every name after A closed')
    await a.close()
    await bStarts
  })
})

describe('many elections looking at once', { timeout: 120000 }, () => {
  // When a locker with many names closes, each of their successors looks where it stands at the
  // same moment. The first in line of each name had only the closing locker's key ahead of it
  // and leads on the watch alone; the ones behind read, and a locker answers such a flood from
  // one read of those names' keys instead of one check each (docs/how-it-works.md). That read
  // must tell each election what its own check would: they keep waiting in their place. Names
  // like "j1" and "j1-a" sort one way and their keys the other ('-' before '/'): the read, cut
  // into parts by name, must still see every name's keys.
  it('A with 3000 names closes: B, next in line, leads each; C, behind B, none, and nobody queues again', async () => {
    const prefix = uniquePrefix('survey')
    const names = []
    for (let i = 0; i < 1000; i++) names.push(`j${i}`, `j${i}-a`, `j${i}.b`)
    const narration = []
    const logger = { debug: (fields, message) => narration.push(message), info () {}, warn () {}, error () {} }
    const a = locker({ prefix, ttl: 10, id: 'A' })
    const b = locker({ prefix, ttl: 10, id: 'B', logger })
    const c = locker({ prefix, ttl: 10, id: 'C', logger })
    await allStart(names.map((name) => a(name)), 30000, 'A leads every name')
    const queue = async (l, count) => {
      const singletons = names.map((name) => l(name))
      await until(async () => Number(JSON.parse(await etcd.etcdctl(['get', `${prefix}/`, '--prefix', '--keys-only', '--limit', '1', '-w', 'json'])).count) === count, 30000, `${l.id()} queued on every name`)
      return singletons
    }
    // Each name: A's key, then B's, then C's; and A's term records, one per bucket of names.
    const records = new Set(names.map(termBucket)).size
    const bs = await queue(b, 2 * names.length + records)
    const cs = await queue(c, 3 * names.length + records)
    const before = await etcd.keys(`${prefix}/`)
    let cStarts = 0
    for (const s of cs) s.on('start', () => { cStarts++ })
    const bStarts = allStart(bs, 30000, 'B leads every name after A closed')
    await a.close()
    await bStarts
    // C learned where it stands from the same flood of deletions; give a wrong answer time to
    // show as a start, or as a key created again.
    await until(() => narration.some((m) => /^survey: \d+ checks answered/.test(m)), 10000, 'C answered its checks by a survey')
    const onWatch = narration.filter((m) => /leads without a read$/.test(m)).length
    assert.strictEqual(onWatch, names.length, 'B led every name on the deletion of A\'s key alone')
    await quietWindow(1000)
    assert.strictEqual(cStarts, 0, 'C leads no name while B does')
    const after = await etcd.keys(`${prefix}/`)
    const created = (kvs, id) => new Map(kvs.filter((kv) => kv.value === id).map((kv) => [kv.key, kv.createRevision]))
    for (const id of ['B', 'C']) {
      assert.deepStrictEqual(created(after, id), created(before, id), `${id}'s keys are the ones it queued with`)
    }
    assert.strictEqual(after.filter((kv) => kv.value === 'A').length, 0, 'none of A\'s keys is left')
    for (const s of bs) assert.strictEqual(s.isLeader(), true, `B leads ${s.name}`)
  })
})

describe('a keepalive crossing the revoke of close()', { timeout: 120000 }, () => {
  // close() revokes the lease while the keepalive task still runs; a keepalive sent while the
  // revoke is under way finds the lease gone. That is the close's own doing, not news for the
  // application: reporting it as an 'error' (LEASE_NOT_FOUND) alarms for nothing. The revoke of
  // 20 000 names takes a good part of a keepalive period (TTL 2 s: every 667 ms), so over ten
  // closes, started at random points of that period, a keepalive crosses it several times.
  it('ten closes of a locker with 20 000 names report no error', async () => {
    const errors = []
    for (let round = 0; round < 10; round++) {
      const l = locker({ prefix: uniquePrefix(`revoke${round}`), ttl: 2 })
      l.on('error', (err) => errors.push(`round ${round}: ${err.code}: ${err.message}`))
      await allStart(Array.from({ length: 20000 }, (_, i) => l(`n${i}`)), 30000, `round ${round}: every name led`)
      await quietWindow(Math.random() * 667)
      await l.close()
    }
    assert.deepStrictEqual(errors, [])
  })
})
