'use strict'
// The leadership API against real etcd: the term object (fencing token, AbortSignal, validUntil),
// isLeader() (also right after a SIGSTOP longer than the TTL), leader() / 'leader' events and
// observers (also across watch errors and compaction: pitfall 9 of docs/pitfalls.md), drainTimeout,
// handleSignals, locker.stats().

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const { performance } = require('node:perf_hooks')
const locked = require('..')
const { startEtcd, freePorts, keyOf, termLines, termRecordKey } = require('./helpers/etcd')
const { startProxy, closeProxies } = require('./helpers/proxy')
const { spawnHost, killAll, now, ms, formatTimeline, assertOneLeaderAtATime, queueHosts } = require('./helpers/hosts')
const { uniquePrefix, nextEvent, within, quietWindow, until, marginMs, CLOCK_READ_MS, assertDeadlineStop } = require('./helpers/util')
const { lockerSet } = require('./helpers/lockers')

const TTL = 2
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

const round = (x) => Math.round(x * 10) / 10

const queue = (labels, options) => queueHosts(etcd, labels, { ttl: TTL, ...options })

// Records the 'start' / 'stop' / 'leader' events of an in-process emitter with performance.now().
function record (emitter, events = ['start', 'stop', 'leader']) {
  const log = []
  for (const ev of events) emitter.on(ev, (arg) => log.push({ ev, arg, t: performance.now() }))
  return log
}

describe('term: fencing token, AbortSignal, validUntil', { timeout: 120000 }, () => {
  it('fn and start get the same term; token = create revision of the own key, growing with every term', async (t) => {
    const prefix = uniquePrefix('token')
    const [a, b] = await queue(['A', 'B'], { prefix })
    const terms = [] // { host, token, createRevision }
    const check = async (h, since) => {
      const start = await h.waitFor((e) => e.ev === 'start' && e.name === 'job' && e.i >= since, 10000, `${h.label} start`)
      const fn = await h.waitFor((e) => e.ev === 'fn' && e.name === 'job' && e.i > start.i, 5000, `${h.label} fn`)
      assert.deepStrictEqual(start.termKeys, ['token', 'signal', 'validUntil'], 'term has token, signal, validUntil, and nothing that ends it')
      assert.deepStrictEqual(start.termOwnKeys, ['token'], 'token is data; signal and validUntil are computed when read')
      assert.strictEqual(fn.token, start.token, 'fn and the start listeners get the same token')
      // The term is valid until the last answered keepalive's send time + TTL − margin: never
      // more than TTL − margin ahead, and exactly that far ahead of that keepalive.
      assert.ok(start.validFor > 0 && start.validFor <= TTL * 1000 - marginMs(TTL) + CLOCK_READ_MS,
        `validFor at the start ${start.validFor} ms, at most TTL − margin = ${TTL * 1000 - marginMs(TTL)} ms`)
      assert.ok(Math.abs(start.validFor + start.sinceRenewalMs - (TTL * 1000 - marginMs(TTL))) <= CLOCK_READ_MS,
        `validFor ${start.validFor} ms + ${start.sinceRenewalMs} ms since the last answered keepalive was sent = TTL − margin (${TTL * 1000 - marginMs(TTL)} ms)`)
      assert.strictEqual(typeof start.token, 'number')
      assert.ok(Number.isSafeInteger(start.token) && start.token > 0, `token ${start.token}`)
      const own = keyOf(await etcd.keys(`${prefix}/job/`), h.id)
      assert.ok(own, `${h.label} has a key`)
      assert.strictEqual(start.token, own.createRevision, 'token = create revision of the own key')
      terms.push({ host: h.label, token: start.token })
      return start
    }
    await check(a, 0)
    // 1. graceful handover A -> B
    let since = b.mark()
    a.send({ cmd: 'remove', name: 'job' })
    await check(b, since)
    await a.waitFor({ ev: 'removed', name: 'job' }, 5000, 'A removed')
    // Unrelated writes in between (another name, another prefix) only make the next token larger.
    await etcd.etcdctl(['put', `${prefix}-other/x`, '1'])
    // 2. A queues again; B is SIGKILLed: crash failover to A after the TTL
    since = a.mark()
    await a.request({ cmd: 'register', name: 'job' }, { ev: 'registered', name: 'job' }, 5000)
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, a.id), 5000, 'A queued again')
    b.kill('SIGKILL')
    await check(a, since)
    // 3. the key of the leader is deleted by an operator: A campaigns again with a new key
    since = a.mark()
    const own = keyOf(await etcd.keys(`${prefix}/job/`), a.id)
    await etcd.etcdctl(['del', own.key])
    const stop = await a.waitFor((e) => e.ev === 'stop' && e.i >= since, 5000, 'A stop (key deleted)')
    assert.strictEqual(stop.reason, 'key-deleted')
    await check(a, since)
    const tokens = terms.map((x) => x.token)
    t.diagnostic(`terms: ${terms.map((x) => `${x.host}:${x.token}`).join(' -> ')}`)
    for (let i = 1; i < tokens.length; i++) {
      assert.ok(tokens[i] > tokens[i - 1], `tokens must grow with every term: ${tokens}`)
    }
    assertOneLeaderAtATime([a, b], 'job')
  })

  // How each stop reason is caused in this process. `p` is a proxy in front of etcd (used by
  // 'deadline' only); every case returns when the trigger was sent.
  const triggers = {
    removed: ({ s }) => { s.remove() },
    closed: ({ locker }) => { locker.close() },
    'key-deleted': async ({ prefix, locker }) => {
      const own = keyOf(await etcd.keys(`${prefix}/job/`), locker.id())
      await etcd.etcdctl(['del', own.key])
    },
    'lease-lost': async ({ prefix, locker }) => {
      const own = keyOf(await etcd.keys(`${prefix}/job/`), locker.id())
      await etcd.revoke(own.leaseHex)
    },
    deadline: ({ p }) => { p.mode('blackhole') }
  }

  // Leads 'job' in this process, recording the term's abort and the stop (with what each listener
  // saw), then ends the term by `cause`; resolves once the stop came.
  async function termEndedBy (cause) {
    const prefix = uniquePrefix(`signal-${cause}`)
    const p = cause === 'deadline' ? await startProxy(etcd.endpoints[0]) : null
    const locker = lockers.open(p ? [p.endpoint] : etcd.endpoints, { ttl: TTL, prefix })
    const order = []
    const fnTerms = []
    const s = locker('job', (remove, term) => {
      fnTerms.push(term)
      assert.strictEqual(s.isLeader(), true, 'isLeader() in fn')
      term.signal.addEventListener('abort', () => {
        order.push({ what: 'abort', aborted: term.signal.aborted, isLeader: s.isLeader(), reason: term.signal.reason, t: performance.now() })
      })
    })
    s.on('error', () => {}) // errors of the outage are expected for 'deadline'
    locker.on('error', () => {})
    const log = record(s)
    s.on('stop', (reason) => {
      const term = fnTerms[fnTerms.length - 1]
      order.push({ what: 'stop', reason, aborted: term.signal.aborted, isLeader: s.isLeader(), validUntil: term.validUntil, t: performance.now(), sinceRenewalMs: locker.stats().keepalive.sinceRenewalMs })
    })
    const [term] = await nextEvent(s, 'start', 5000, 'start')
    assert.strictEqual(fnTerms.length, 1, 'fn ran')
    assert.strictEqual(fnTerms[0], term, 'fn(remove, term) gets the term of the start event')
    assert.ok(term.signal instanceof AbortSignal, 'term.signal is an AbortSignal')
    assert.strictEqual(term.signal.aborted, false, 'not aborted while leading')
    assert.ok(Object.isFrozen(term), 'the term is read-only')
    // A while into the term, still not aborted.
    await quietWindow(300)
    assert.strictEqual(term.signal.aborted, false, 'not aborted while leading')
    const triggered = performance.now()
    await triggers[cause]({ s, locker, prefix, p })
    const stopTimeout = cause === 'deadline' ? TTL * 1000 + 2000 : 5000
    await until(() => log.some((e) => e.ev === 'stop'), stopTimeout, `stop (${cause})`)
    const stop = log.find((e) => e.ev === 'stop')
    return { prefix, p, locker, s, log, order, term, stop, triggered }
  }

  for (const cause of Object.keys(triggers)) {
    it(`term.signal is aborted at the stop (${cause}) with a LEADERSHIP_ENDED LockedError carrying the reason`, async (t) => {
      const { prefix, p, locker, s, order, term, stop, triggered } = await termEndedBy(cause)
      const expected = cause === 'lease-lost' ? ['lease-lost', 'key-deleted'] : [cause]
      assert.ok(expected.includes(stop.arg), `stop reason ${stop.arg}, expected ${expected}`)
      // Order: the signal aborts before the 'stop' listeners run, and exactly once.
      assert.deepStrictEqual(order.map((o) => o.what), ['abort', 'stop'], 'abort first, then stop')
      const [abort, stopSeen] = order
      if (cause === 'deadline') {
        assertDeadlineStop({ sinceRenewalMs: stopSeen.sinceRenewalMs, at: stopSeen.t, outageAt: triggered, ttl: TTL })
      }
      assert.strictEqual(abort.aborted, true)
      assert.strictEqual(abort.isLeader, false, 'isLeader() is false in the abort listener')
      assert.strictEqual(stopSeen.isLeader, false, 'isLeader() is false in the stop listener')
      const reason = term.signal.reason
      assert.strictEqual(abort.reason, reason)
      assert.ok(reason instanceof Error, 'signal.reason is an Error')
      assert.ok(reason instanceof locked.LockedError, 'signal.reason is a LockedError')
      assert.strictEqual(reason.code, 'LEADERSHIP_ENDED')
      assert.strictEqual(reason.reason, stop.arg, 'signal.reason.reason is the stop reason')
      assert.match(reason.message, /job/, 'the message names the singleton')
      assert.throws(() => term.signal.throwIfAborted(), (err) => err === reason, 'throwIfAborted() throws the reason')
      // validUntil is frozen at the end of the term (and no longer in the future).
      const frozen = term.validUntil
      assert.ok(frozen <= performance.now(), 'validUntil is not in the future after the stop')
      await quietWindow(300)
      assert.strictEqual(term.validUntil, frozen, 'validUntil is frozen after the stop')
      t.diagnostic(`${cause}: stop '${stop.arg}' ${round(stop.t - triggered)} ms after the trigger; validUntil frozen at ${round(frozen - stop.t)} ms from the stop`)
      if (cause === 'removed' || cause === 'closed') {
        assert.strictEqual(s.isLeader(), false)
        await within(cause === 'closed' ? locker.close() : s.remove(), 5000, `${cause} resolves`)
        assert.deepStrictEqual(await etcd.keys(`${prefix}/job/`), [], 'no key left')
        return
      }
      if (p) p.mode('pass')
      await within(locker.close(), 5000, 'close')
    })
  }

  // After these stops the singleton is still registered and campaigns again by itself.
  for (const cause of ['key-deleted', 'lease-lost', 'deadline']) {
    it(`after a stop (${cause}) the next term has a fresh signal and a larger token; the old term stays ended`, async (t) => {
      const { prefix, p, locker, log, term } = await termEndedBy(cause)
      const frozen = term.validUntil
      if (p) p.mode('pass')
      await until(() => log.filter((e) => e.ev === 'start').length === 2, 15000, 'a second start')
      const term2 = log.filter((e) => e.ev === 'start')[1].arg
      assert.notStrictEqual(term2, term)
      assert.notStrictEqual(term2.signal, term.signal, 'a new signal for the new term')
      assert.strictEqual(term2.signal.aborted, false)
      assert.strictEqual(term.signal.aborted, true, 'the old signal stays aborted')
      assert.strictEqual(term.validUntil, frozen, 'the old validUntil stays frozen')
      assert.ok(term2.validUntil > performance.now(), 'the new validUntil is in the future')
      const own = keyOf(await etcd.keys(`${prefix}/job/`), locker.id())
      assert.strictEqual(term2.token, own.createRevision, 'the new token is the create revision of the own key')
      // A new key (deleted, or a new lease) has a larger create revision. After 'deadline' the old
      // key may have survived the outage, and then it is the same term of the same key.
      if (cause === 'deadline') {
        assert.ok(term2.token >= term.token, `token ${term.token} -> ${term2.token}`)
      } else {
        assert.ok(term2.token > term.token, `token must grow: ${term.token} -> ${term2.token}`)
      }
      t.diagnostic(`${cause}: re-elected with token ${term.token} -> ${term2.token}`)
      await within(locker.close(), 5000, 'close')
      assert.strictEqual(term2.signal.reason.reason, 'closed')
    })
  }

  it('term.validUntil is at most TTL − margin ahead, moves forward with renewals, and freezes at the stop', async (t) => {
    const prefix = uniquePrefix('valid')
    const locker = lockers.open(etcd.endpoints, { ttl: TTL, prefix })
    const s = locker('job')
    const [term] = await nextEvent(s, 'start', 5000, 'start')
    const samples = []
    // Sample over 2.5 TTLs: several keepalives are answered in that time.
    const end = performance.now() + 2.5 * TTL * 1000
    while (performance.now() < end) {
      const at = performance.now()
      samples.push({ at, validUntil: term.validUntil, isLeader: s.isLeader() })
      await quietWindow(50)
    }
    const ahead = samples.map((x) => x.validUntil - x.at)
    const minAhead = Math.min(...ahead)
    const maxAhead = Math.max(...ahead)
    t.diagnostic(`${samples.length} samples: validUntil - now from ${round(minAhead)} to ${round(maxAhead)} ms (ttl ${TTL * 1000} ms); moved ${round(samples[samples.length - 1].validUntil - samples[0].validUntil)} ms forward`)
    assert.ok(samples.every((x) => x.isLeader), 'isLeader() true throughout the term')
    assert.ok(minAhead > 0, 'validUntil is in the future while leading')
    // validUntil is the send time of the last answered keepalive + TTL − margin: never more than
    // TTL − margin ahead. Right after a renewal it is that minus the keepalive's round trip and
    // the delay of the next sample (every 50 ms): well within 300 ms of it on a loaded machine.
    assert.ok(maxAhead <= TTL * 1000 - marginMs(TTL) + CLOCK_READ_MS, `validUntil is at most TTL − margin = ${TTL * 1000 - marginMs(TTL)} ms ahead (max ${round(maxAhead)} ms)`)
    assert.ok(maxAhead >= TTL * 1000 - marginMs(TTL) - 300, `right after a renewal validUntil is about TTL − margin = ${TTL * 1000 - marginMs(TTL)} ms ahead (max ${round(maxAhead)} ms)`)
    // Between renewals validUntil is one instant; read through two clocks it may jitter by a
    // few ms, never move back by more.
    const backSteps = samples.slice(1).map((x, i) => samples[i].validUntil - x.validUntil)
    t.diagnostic(`largest backward step of validUntil: ${round(Math.max(0, ...backSteps))} ms`)
    assert.ok(Math.max(...backSteps) < 25, `validUntil never moves back (steps ${backSteps.filter((x) => x > 0).map(round)})`)
    assert.ok(samples[samples.length - 1].validUntil - samples[0].validUntil > TTL * 1000, 'renewals moved validUntil forward by more than a TTL over 2.5 TTLs')
    const stopped = nextEvent(s, 'stop', 5000)
    const removing = s.remove()
    const atStop = performance.now()
    await stopped
    const frozen = term.validUntil
    assert.ok(frozen <= atStop + 1, 'frozen at the stop')
    await removing
    await quietWindow(TTL * 1000 / 2)
    assert.strictEqual(term.validUntil, frozen, 'validUntil does not move after the stop')
    await locker.close()
  })
})

describe('isLeader()', { timeout: 120000 }, () => {
  it('is false before the start, true while leading, false for a waiting candidate and at once on remove()', async () => {
    const prefix = uniquePrefix('isleader')
    const a = lockers.open(etcd.endpoints, { ttl: TTL, prefix })
    const b = lockers.open(etcd.endpoints, { ttl: TTL, prefix })
    const sa = a('job')
    assert.strictEqual(sa.isLeader(), false, 'not before the start')
    let inStart = null
    sa.once('start', () => { inStart = sa.isLeader() })
    await nextEvent(sa, 'start', 5000)
    assert.strictEqual(inStart, true, 'true in the start listener')
    assert.strictEqual(sa.isLeader(), true)
    const sb = b('job')
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 5000, 'B queued')
    assert.strictEqual(sb.isLeader(), false, 'a waiting candidate does not lead')
    const bStart = nextEvent(sb, 'start', 5000, 'B start')
    const removing = sa.remove()
    assert.strictEqual(sa.isLeader(), false, 'false synchronously after remove()')
    await bStart
    await removing
    assert.strictEqual(sb.isLeader(), true)
    const closing = b.close()
    assert.strictEqual(sb.isLeader(), false, 'false synchronously after close()')
    await closing
    await a.close()
  })

  it('a busy JS thread (blocked longer than the TTL) keeps leading: renewals run off the JS thread', async (t) => {
    const prefix = uniquePrefix('busy')
    const [a] = await queue(['A'], { prefix })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const blockMs = 2 * TTL * 1000
    const unblocked = await a.request({ cmd: 'block', name: 'job', ms: blockMs }, { ev: 'unblocked', name: 'job' }, blockMs + 5000)
    const blocking = a.find({ ev: 'blocking' })[0]
    t.diagnostic(`blocked ${unblocked.blockedMs} ms: isLeader ${blocking.value} -> ${unblocked.value}, validFor ${blocking.validFor} -> ${unblocked.validFor} ms`)
    assert.strictEqual(blocking.value, true)
    assert.strictEqual(unblocked.value, true, 'still the leader after the block')
    assert.ok(unblocked.validFor > 0)
    await quietWindow(500)
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], 'no stop')
    assert.deepStrictEqual(a.find({ ev: 'error' }), [], 'no error')
  })

  // A host stopped (SIGSTOP) for longer than the TTL, then continued: the first isLeader() it
  // makes says false, before any timer of the library or event could tell it. 'block-long': the JS
  // thread stays busy for seconds after SIGCONT, long enough for the addon's own thread to get a
  // new lease and campaign again behind B — the old term is over all the same.
  const whats = {
    probe: 'from a setInterval',
    block: 'in code that was running when the process was stopped',
    'block-long': 'in code still busy seconds after SIGCONT, while the addon re-campaigns'
  }
  for (const [how, what] of Object.entries(whats)) {
    it(`after SIGSTOP longer than the TTL and SIGCONT, isLeader() is false at once (${what})`, async (t) => {
      const prefix = uniquePrefix(`sigstop-${how}`)
      const [a, b] = await queue(['A', 'B'], { prefix })
      await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
      if (how === 'probe') {
        const probing = await a.request({ cmd: 'probe', name: 'job', gapMs: 1000, everyMs: 10 }, { ev: 'probing' }, 5000)
        assert.strictEqual(probing.value, true)
      } else {
        // 'block': long enough to be still blocked when SIGSTOP arrives (a stopped process wakes
        // past its end). 'block-long': it goes on for seconds after SIGCONT.
        const blocking = await a.request({ cmd: 'block', name: 'job', ms: how === 'block' ? 1500 : TTL * 1000 + 6000 }, { ev: 'blocking' }, 5000)
        assert.strictEqual(blocking.value, true)
      }
      const paused = now()
      a.kill('SIGSTOP')
      let resumed
      try {
        // B's start proves A's lease is gone in etcd.
        await b.waitFor({ ev: 'start', name: 'job' }, TTL * 1000 + 5000, 'B start while A is stopped')
      } finally {
        resumed = now()
        a.kill('SIGCONT')
      }
      if (how === 'block-long') {
        // While A's JS thread is still busy, its addon finds the lease gone, gets a new one and
        // queues A again behind B.
        await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2 && kvs[1].value === a.id, 5000, 'A queued again behind B')
        assert.deepStrictEqual(a.find({ ev: 'unblocked' }), [], 'A\'s JS thread is still busy')
      }
      const first = await a.waitFor({ ev: how === 'probe' ? 'resumed' : 'unblocked', name: 'job' }, TTL * 1000 + 10000, 'first isLeader() after SIGCONT')
      const stop = await a.waitFor({ ev: 'stop', name: 'job' }, 5000, 'A stop after SIGCONT')
      t.diagnostic(`stopped ${ms(resumed - paused).toFixed(0)} ms; first isLeader() ${ms(first.t - resumed).toFixed(1)} ms after SIGCONT = ${first.value}, ` +
        `term.validUntil - now = ${first.validFor} ms (stop event ${first.stopSeen ? 'already' : 'not yet'} delivered; stop '${stop.reason}' ${ms(stop.t - resumed).toFixed(1)} ms after SIGCONT)`)
      assert.strictEqual(first.value, false, `the first isLeader() after resuming must be false\n${formatTimeline([a, b])}`)
      assert.ok(first.validFor <= 0, `the ended term's validUntil must not be in the future (${first.validFor} ms)`)
      if (how !== 'probe') {
        // The JS thread was busy all along: no event could have been delivered before the call.
        assert.strictEqual(first.stopSeen, false)
        assert.ok(stop.t > first.t)
      }
      assert.strictEqual(stop.reason, 'deadline')
      const after = await a.request({ cmd: 'isLeader', name: 'job' }, { ev: 'isLeader' }, 5000)
      assert.strictEqual(after.value, false)
      await a.waitFor({ ev: 'leader', name: 'job', leader: b.id }, 10000, 'A learns that B leads')
      // (No one-leader-at-a-time check here: A's events say it led until its stop, but it was frozen
      // and could not act; what it saw first when it could act again is the point.)
    })
  }
})

describe('leader() and observers', { timeout: 120000 }, () => {
  it('singleton.leader() and its leader events follow the election on every candidate', async (t) => {
    const prefix = uniquePrefix('leader')
    const [a, b, c] = await queue(['A', 'B', 'C'], { prefix })
    const leaderOf = async (h) => (await h.request({ cmd: 'isLeader', name: 'job' }, { ev: 'isLeader' }, 5000)).leader
    const leaderEvents = (h) => h.find({ ev: 'leader', name: 'job' }).map((e) => e.leader)
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    for (const h of [a, b, c]) {
      await h.waitFor({ ev: 'leader', name: 'job', leader: a.id }, 5000, `${h.label} sees A lead`)
      assert.strictEqual(await leaderOf(h), a.id)
    }
    assert.strictEqual(a.find({ ev: 'start' })[0].leader, a.id, 'leader() is the own id in the start listener')
    a.send({ cmd: 'remove', name: 'job' })
    for (const h of [b, c]) await h.waitFor({ ev: 'leader', name: 'job', leader: b.id }, 5000, `${h.label} sees B lead`)
    b.kill('SIGKILL')
    await c.waitFor({ ev: 'leader', name: 'job', leader: c.id }, TTL * 1000 + 5000, 'C sees itself lead after B crashed')
    assert.strictEqual(await leaderOf(c), c.id)
    t.diagnostic(`leader events: B ${JSON.stringify(leaderEvents(b).map((x) => x && x[0]))}, C ${JSON.stringify(leaderEvents(c).map((x) => x && x[0]))}`)
    // A names itself once; after its stop it may report that it does not know (null), never itself.
    assert.strictEqual(leaderEvents(a)[0], a.id, 'A: itself first')
    assert.ok(leaderEvents(a).slice(1).every((x) => x !== a.id), `A: not itself again after its stop: ${leaderEvents(a)}`)
    assert.deepStrictEqual(leaderEvents(b), [a.id, b.id], 'B: A, then B, no repeats')
    assert.deepStrictEqual(leaderEvents(c), [a.id, b.id, c.id], 'C: A, B, C, no repeats')
    // In this process: null until known.
    const l = lockers.open(etcd.endpoints, { ttl: TTL, prefix })
    const s = l('job')
    assert.strictEqual(s.leader(), null, 'null before anything is known')
    const [first] = await nextEvent(s, 'leader', 5000)
    assert.strictEqual(first, c.id)
    assert.strictEqual(s.leader(), c.id)
    await l.close()
  })

  it('an own election: the leader event names this locker with the start\'s token, before the start; a leader listener that throws keeps neither start nor fn away', async () => {
    const prefix = uniquePrefix('leaderthrow')
    const l = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'host-a' })
    const seen = []
    const errors = []
    const fnRan = new Promise((resolve) => {
      const s = l('job', (remove, term) => resolve(term.token))
      s.on('error', (err) => errors.push(err))
      s.on('leader', (id, token) => {
        seen.push(['leader', id, token])
        if (id === 'host-a') throw new Error('leader listener threw on purpose')
      })
      s.on('start', (term) => seen.push(['start', term.token]))
    })
    const token = await within(fnRan, 5000, 'fn ran despite the throwing leader listener')
    assert.deepStrictEqual(seen, [['leader', 'host-a', token], ['start', token]])
    assert.deepStrictEqual(errors.map((e) => [e.code, /threw on purpose/.test(e.message)]), [['USER_FN_THREW', true]])
    await l.close()
  })

  // A host that stopped leading no longer names itself: leader() is the new leader, or null while
  // it does not know yet — never its own id, which would contradict isLeader().
  for (const cause of ['removed', 'key-deleted', 'deadline']) {
    it(`after a stop (${cause}), leader() no longer names this host`, async (t) => {
      const prefix = uniquePrefix(`leader-${cause}`)
      const p = cause === 'deadline' ? await startProxy(etcd.endpoints[0]) : null
      const a = lockers.open(p ? [p.endpoint] : etcd.endpoints, { ttl: TTL, prefix })
      a.on('error', () => {})
      const sa = a('job')
      sa.on('error', () => {})
      await nextEvent(sa, 'start', 5000, 'A start')
      assert.strictEqual(sa.leader(), a.id())
      const b = lockers.open(etcd.endpoints, { ttl: TTL, prefix })
      const sb = b('job')
      await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 5000, 'B queued')
      let inStop
      sa.once('stop', () => { inStop = { leader: sa.leader(), isLeader: sa.isLeader() } })
      const bStart = nextEvent(sb, 'start', TTL * 1000 + 5000, 'B start')
      if (cause === 'removed') sa.remove()
      if (cause === 'key-deleted') await etcd.etcdctl(['del', keyOf(await etcd.keys(`${prefix}/job/`), a.id()).key])
      if (cause === 'deadline') p.mode('blackhole')
      await until(() => inStop, TTL * 1000 + 3000, 'A stop')
      await bStart
      const afterB = sa.leader()
      t.diagnostic(`${cause}: in A's stop listener leader() = ${inStop.leader === a.id() ? 'A' : inStop.leader === b.id() ? 'B' : inStop.leader}; ` +
        `after B's start ${afterB === a.id() ? 'A' : afterB === b.id() ? 'B' : afterB}`)
      if (p) p.mode('pass')
      assert.strictEqual(inStop.isLeader, false)
      assert.notStrictEqual(inStop.leader, a.id(), 'leader() must not name this host once it stopped')
      if (cause === 'key-deleted') {
        await until(() => sa.leader() === b.id(), 5000, 'A sees B lead')
      }
      await Promise.all([a.close(), b.close()])
    })
  }

  it('locker.observe(name): the leader and every change, down to null when the last candidate leaves; close() ends it', async (t) => {
    const prefix = uniquePrefix('observe')
    const watcher = lockers.open(etcd.endpoints, { ttl: TTL, prefix })
    const o = watcher.observe('job')
    assert.ok(o instanceof locked.Observer)
    assert.strictEqual(o.name, 'job')
    assert.strictEqual(o.leader(), null)
    const seen = []
    const errors = []
    o.on('leader', (id) => seen.push({ id, t: now() }))
    o.on('error', (err) => errors.push(err))
    const next = (id, timeoutMs, description) => until(() => seen.some((x) => x.id === id), timeoutMs, description)
    // Nobody campaigns yet: the first event says so.
    await until(() => seen.length > 0, 5000, 'the first leader event')
    assert.strictEqual(seen[0].id, null, 'no leader yet')
    const [a] = await queue(['A'], { prefix })
    await next(a.id, 5000, 'A observed')
    const [b, c] = await queue(['B', 'C'], { prefix })
    // A second and third candidate change nothing.
    await quietWindow(500)
    assert.deepStrictEqual(seen.map((x) => x.id), [null, a.id])
    const since = b.mark()
    a.send({ cmd: 'remove', name: 'job' })
    await next(b.id, 5000, 'B observed after A removed')
    const bStart = await b.waitFor((e) => e.ev === 'start' && e.i >= since, 5000)
    const seenB = seen.find((x) => x.id === b.id)
    t.diagnostic(`observer saw B ${ms(seenB.t - bStart.t).toFixed(1)} ms after B's start`)
    b.kill('SIGKILL')
    await next(c.id, TTL * 1000 + 5000, 'C observed after B crashed')
    c.send({ cmd: 'remove', name: 'job' })
    await until(() => seen.length === 5, 5000, 'null after the last candidate left')
    assert.deepStrictEqual(seen.map((x) => x.id), [null, a.id, b.id, c.id, null])
    assert.strictEqual(o.leader(), null)
    // Observing is not campaigning: the observer has no key, and never had one.
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [])
    // After close(), no more events.
    o.close()
    const d = spawnHost({ endpoints: etcd.endpoints, ttl: TTL, prefix, names: ['job'] }, 'D')
    await d.waitFor({ ev: 'start', name: 'job' }, 5000, 'D start')
    await quietWindow(500)
    assert.strictEqual(seen.length, 5, 'no event after close()')
    assert.deepStrictEqual(errors, [])
    // A second observer on the same locker, opened now, sees D.
    const o2 = watcher.observe('job')
    const [id] = await nextEvent(o2, 'leader', 5000)
    assert.strictEqual(id, d.id)
    o2.close()
    await watcher.close()
  })

  it('locker.term(name): who leads since when, read by any locker; a successor never shows its predecessor\'s time', async () => {
    const prefix = uniquePrefix('term')
    const reader = lockers.open(etcd.endpoints, { ttl: TTL, prefix })
    assert.throws(() => reader.term(5), TypeError)
    assert.throws(() => reader.term(''), RangeError)
    assert.throws(() => reader.term('a/b'), RangeError)
    assert.strictEqual(await reader.term('job'), null, 'nobody leads yet')
    const a = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'host-a' })
    const b = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'host-b' })
    const published = (token) => until(async () => {
      const info = await reader.term('job')
      return info && info.token === token && info.since !== null && info
    }, 5000, `the election time of token ${token}`)

    const beforeA = Date.now()
    const sa = a('job', () => {})
    const [termA] = await nextEvent(sa, 'start', 5000, 'A start')
    const afterA = Date.now()
    const infoA = await published(termA.token)
    assert.strictEqual(infoA.leader, 'host-a')
    assert.ok(infoA.since instanceof Date)
    assert.ok(infoA.since.getTime() >= beforeA && infoA.since.getTime() <= afterA,
      `A's election time ${infoA.since.getTime()} lies between register (${beforeA}) and start (${afterA})`)

    // A waiting candidate changes nothing.
    const sb = b('job', () => {})
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 5000, 'B queued')
    assert.deepStrictEqual(await reader.term('job'), infoA)

    const beforeB = Date.now()
    const bStarted = nextEvent(sb, 'start', 5000, 'B start')
    await sa.remove()
    const [termB] = await bStarted
    const afterB = Date.now()
    assert.ok(termB.token > termA.token)
    // Right after the handover the new leader's time may not be written yet: then it is unknown,
    // never A's.
    const early = await reader.term('job')
    assert.strictEqual(early.leader, 'host-b')
    assert.strictEqual(early.token, termB.token)
    assert.ok(early.since === null || early.since.getTime() >= beforeB, `not A's time: ${early.since?.getTime()}`)
    const infoB = await published(termB.token)
    assert.strictEqual(infoB.leader, 'host-b')
    assert.ok(infoB.since.getTime() >= beforeB && infoB.since.getTime() <= afterB,
      `B's election time ${infoB.since.getTime()} lies between the remove (${beforeB}) and B's start (${afterB})`)
    // The record is bound to the leader's lease, so it cannot outlive the leader's session.
    const kvs = await etcd.keys(`${prefix}/`)
    const line = termLines(kvs, prefix).find((l) => l.name === 'job' && l.token === termB.token)
    const bKey = kvs.find((kv) => kv.value === 'host-b')
    assert.ok(line && bKey, JSON.stringify(kvs))
    assert.strictEqual(line.key, termRecordKey(prefix, 'job', bKey.leaseHex), 'the record is B\'s, in the bucket of the name')
    assert.strictEqual(line.leaseHex, bKey.leaseHex, 'the record is bound to the leader\'s lease')
    // B's line is what tells its time: with it gone, and a line of an earlier term beside it (as
    // an outside write puts one there), the time is unknown, not A's.
    const outside = termRecordKey(prefix, 'job', 'ffff')
    await etcd.etcdctl(['put', outside, `${termA.token} ${infoA.since.getTime()} job\n`])
    await etcd.etcdctl(['put', line.key, '1 2 other\n', `--lease=${line.leaseHex}`])
    assert.deepStrictEqual(await reader.term('job'), { leader: 'host-b', token: termB.token, since: null, priority: 0, preferred: 'host-b', handover: null })
    await etcd.del(outside)

    // The last candidate leaves: nobody leads, and after its resign its record goes too.
    await sb.remove()
    assert.strictEqual(await reader.term('job'), null)
    await etcd.waitKeys(`${prefix}/`, (kvs) => kvs.length === 0, 5000, 'no record left behind')

    await reader.close()
    await assert.rejects(reader.term('job'), { code: 'LOCKER_CLOSED' })
  })

  it('locker.terms(): every election with a leader, by name, in one read; more names than one page of it holds (1000 keys)', async () => {
    const prefix = uniquePrefix('terms')
    const reader = lockers.open(etcd.endpoints, { ttl: TTL, prefix })
    assert.deepStrictEqual(await reader.terms(), [], 'no elections yet')
    const a = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'host-a' })
    const b = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: 'host-b' })
    // 1100 names on A: 1100 keys and hundreds of term records, more than one page of the read.
    const many = Array.from({ length: 1100 }, (_, i) => `n${String(i).padStart(4, '0')}`)
    await Promise.all(many.map((name) => nextEvent(a(name, () => {}), 'start', 15000, `A start ${name}`)))
    const [termB] = await nextEvent(b('solo', () => {}), 'start', 5000, 'B start solo')
    b('n0000', () => {}) // waits behind A: changes nothing
    const gone = a('gone', () => {})
    await nextEvent(gone, 'start', 5000, 'A start gone')
    await gone.remove()
    await etcd.waitKeys(`${prefix}/n0000/`, (kvs) => kvs.length === 2, 5000, 'B queued on n0000')
    const terms = await until(async () => {
      const list = await reader.terms()
      return list.every((t) => t.since !== null) && list
    }, 5000, 'every leader\'s election time published')
    assert.deepStrictEqual(terms.map((t) => t.name), [...many, 'solo'], 'every led name once, sorted, none without a leader')
    assert.ok(terms.filter((t) => t.name !== 'solo').every((t) => t.leader === 'host-a'))
    const solo = terms.find((t) => t.name === 'solo')
    assert.deepStrictEqual(solo, { name: 'solo', ...await reader.term('solo') }, 'terms() agrees with term()')
    assert.strictEqual(solo.token, termB.token)
    assert.ok(solo.since instanceof Date)
    await reader.close()
    await assert.rejects(reader.terms(), { code: 'LOCKER_CLOSED' })
    const [port] = await freePorts(1)
    const unreachable = lockers.open([`127.0.0.1:${port}`], { ttl: TTL })
    await assert.rejects(within(unreachable.terms(), 15000, 'terms() settles'), (err) => err.code === 'ETCD_UNAVAILABLE' && /^terms\(\): /.test(err.message))
  })

  it('locker.term(name) on an unreachable etcd rejects with ETCD_UNAVAILABLE; close() settles a read in flight', async () => {
    const [port] = await freePorts(1)
    const l = lockers.open([`127.0.0.1:${port}`], { ttl: TTL })
    await assert.rejects(within(l.term('job'), 15000, 'term() settles'), { code: 'ETCD_UNAVAILABLE' })
    await l.close()

    // etcd stops answering (black hole): a read is in flight when the locker closes.
    const p = await startProxy(etcd.endpoints[0])
    const m = lockers.open([p.endpoint], { ttl: TTL, prefix: uniquePrefix('term-close') })
    m.on('error', () => {})
    assert.strictEqual(await m.term('job'), null, 'answered while etcd is reachable')
    p.mode('blackhole')
    const pending = m.term('job')
    const closed = m.close().catch(() => {}) // the lease cannot be revoked through the black hole
    await assert.rejects(within(pending, 15000, 'term() settles after close()'), { code: 'LOCKER_CLOSED' })
    await within(closed, 15000, 'close() settles')
  })

  it('pitfall 9: observers and candidates resume after a watch outage and a compaction, with the right leader', async (t) => {
    const prefix = uniquePrefix('p9')
    const p = await startProxy(etcd.endpoints[0])
    // The observer O and candidate D reach etcd only through the proxy. D's TTL outlives the outage.
    const o = spawnHost({ endpoints: [p.endpoint], ttl: TTL, prefix, names: [], observe: ['job'] }, 'O')
    await o.ready
    const [a, b] = await queue(['A', 'B'], { prefix })
    const d = spawnHost({ endpoints: [p.endpoint], ttl: 20, prefix, names: ['job'], id: `D-${prefix}` }, 'D')
    await d.ready
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, d.id), 5000, 'D queued')
    await o.waitFor({ ev: 'observed', name: 'job', leader: a.id }, 5000, 'O sees A')
    await d.waitFor({ ev: 'leader', name: 'job', leader: a.id }, 5000, 'D sees A')
    p.mode('blackhole')
    // While O and D are cut off: A leaves, B leads, and the history is compacted away.
    a.send({ cmd: 'remove', name: 'job' })
    await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start')
    for (let i = 0; i < 5; i++) await etcd.etcdctl(['put', `${prefix}-bump`, String(i)])
    const status = await etcd.members[0].status()
    await etcd.etcdctl(['compact', String(status.revision)])
    assert.ok(!o.find({ ev: 'observed' }).some((e) => e.leader === b.id), 'O cannot know about B yet')
    const healed = now()
    p.mode('pass')
    const seenB = await o.waitFor({ ev: 'observed', name: 'job', leader: b.id }, 15000, 'O sees B after the outage')
    const dSeesB = await d.waitFor({ ev: 'leader', name: 'job', leader: b.id }, 15000, 'D sees B after the outage')
    t.diagnostic(`after healing (compacted at ${status.revision}): O saw B in ${ms(seenB.t - healed).toFixed(0)} ms, D in ${ms(dSeesB.t - healed).toFixed(0)} ms`)
    // The watch works again: B leaves, D (behind B) is elected at once and O follows.
    const since = o.mark()
    const removedAt = now()
    b.send({ cmd: 'remove', name: 'job' })
    const dStart = await d.waitFor({ ev: 'start', name: 'job' }, 10000, 'D start after B removed')
    t.diagnostic(`D start ${ms(dStart.t - removedAt).toFixed(0)} ms after B's remove (D's ttl 20 s)`)
    assert.ok(ms(dStart.t - removedAt) < 5000, 'D woke up by the watch, not by a timeout')
    await o.waitFor((e) => e.ev === 'observed' && e.leader === d.id && e.i >= since, 10000, 'O sees D')
    d.send({ cmd: 'remove', name: 'job' })
    await o.waitFor((e) => e.ev === 'observed' && e.leader === null && e.i >= since, 10000, 'O sees nobody')
    assert.deepStrictEqual(d.find({ ev: 'stop' }).map((e) => e.reason), ['removed'])
    const observed = o.find({ ev: 'observed' }).map((e) => e.leader)
    if (observed[0] === null) observed.shift() // O's first read may come before A's key exists
    assert.deepStrictEqual(observed, [a.id, b.id, d.id, null], 'O: A, B, D, nobody')
    assertOneLeaderAtATime([a, b, d], 'job')
  })
})

describe('drainTimeout: remove() and close() wait for the work fn returned', { timeout: 120000 }, () => {
  it('the next leader starts only after the old leader\'s promise settled; the signal aborts at once', async (t) => {
    const prefix = uniquePrefix('drain')
    const settleMs = 1500
    const [a, b] = await queue(['A', 'B'], { prefix, extra: { work: { job: { settleAfterAbortMs: settleMs } } } })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const sent = now()
    a.send({ cmd: 'remove', name: 'job' })
    const start = await b.waitFor({ ev: 'start', name: 'job' }, settleMs + 5000, 'B start')
    const stop = a.find({ ev: 'stop', name: 'job' })[0]
    const aborted = a.find({ ev: 'aborted', name: 'job' })[0]
    const settled = a.find({ ev: 'settled', name: 'job' })[0]
    const removed = await a.waitFor({ ev: 'removed', name: 'job' }, 5000, 'A removed')
    t.diagnostic(`remove sent at 0: stop ${ms(stop.t - sent).toFixed(0)} ms, signal aborted ${ms(aborted.t - sent).toFixed(0)} ms, ` +
      `work settled ${ms(settled.t - sent).toFixed(0)} ms, B start ${ms(start.t - sent).toFixed(0)} ms, remove() resolved ${ms(removed.t - sent).toFixed(0)} ms`)
    assert.strictEqual(stop.reason, 'removed')
    assert.strictEqual(aborted.reason, 'removed')
    assert.ok(ms(aborted.t - sent) < 1000, 'the signal aborts right away, so the work can wind down')
    assert.ok(settled, `A's work settled before B started\n${formatTimeline([a, b])}`)
    assert.ok(settled.t < start.t, 'B starts after A\'s work settled')
    assert.ok(settled.t < removed.t, 'remove() resolves after the work settled')
    assert.ok(ms(start.t - sent) >= settleMs, 'B waited for the drain')
    assertOneLeaderAtATime([a, b], 'job')
  })

  it('drainTimeout bounds the wait for work that never settles (remove and close)', async (t) => {
    const drainTimeout = 1000
    for (const how of ['remove', 'close']) {
      const prefix = uniquePrefix(`drainto-${how}`)
      const [a, b] = await queue(['A', 'B'], { prefix, extra: { drainTimeout, work: { job: { never: true } } } })
      await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
      const sent = now()
      a.send(how === 'remove' ? { cmd: 'remove', name: 'job' } : { cmd: 'close' })
      const start = await b.waitFor({ ev: 'start', name: 'job' }, drainTimeout + 5000, 'B start')
      const done = await a.waitFor({ ev: how === 'remove' ? 'removed' : 'closed' }, 5000, `A ${how} resolved`)
      const handover = ms(start.t - sent)
      t.diagnostic(`${how}: drainTimeout ${drainTimeout} ms; B start ${handover.toFixed(0)} ms, ${how}() resolved ${ms(done.t - sent).toFixed(0)} ms after the call`)
      assert.ok(handover >= drainTimeout - 20, `B must wait for the drain timeout (${handover} ms)`)
      assert.ok(handover < drainTimeout + 3000, `but not much longer (${handover} ms)`)
      assert.deepStrictEqual(a.find({ ev: 'stop' }).map((e) => e.reason), [how === 'remove' ? 'removed' : 'closed'])
      assert.deepStrictEqual(a.find({ ev: 'settled' }), [])
      assertOneLeaderAtATime([a, b], 'job')
      await killAll()
    }
  })

  it('close() waits for the work of every leading singleton', async (t) => {
    const prefix = uniquePrefix('drainclose')
    const work = { x: { settleAfterAbortMs: 800 }, y: { settleAfterAbortMs: 1200 } }
    const [a, b] = await queue(['A', 'B'], { prefix, names: ['x', 'y'], extra: { work } })
    await a.waitFor({ ev: 'start', name: 'x' }, 5000)
    await a.waitFor({ ev: 'start', name: 'y' }, 5000)
    const sent = now()
    a.send({ cmd: 'close' })
    const sx = await b.waitFor({ ev: 'start', name: 'x' }, 6000, 'B start x')
    const sy = await b.waitFor({ ev: 'start', name: 'y' }, 6000, 'B start y')
    const closed = await a.waitFor({ ev: 'closed' }, 5000)
    const settledY = a.find({ ev: 'settled', name: 'y' })[0]
    t.diagnostic(`close sent at 0: x settled ${ms(a.find({ ev: 'settled', name: 'x' })[0].t - sent).toFixed(0)} ms, y settled ${ms(settledY.t - sent).toFixed(0)} ms, ` +
      `B start x ${ms(sx.t - sent).toFixed(0)} ms / y ${ms(sy.t - sent).toFixed(0)} ms, closed ${ms(closed.t - sent).toFixed(0)} ms`)
    // The lease is revoked once, after all the work settled: both names move then.
    assert.ok(settledY.t < sx.t && settledY.t < sy.t, 'B starts only after all of A\'s work settled')
    assert.ok(settledY.t < closed.t)
    assertOneLeaderAtATime([a, b], 'x')
    assertOneLeaderAtATime([a, b], 'y')
  })

  it('drainTimeout: 0 does not wait', async (t) => {
    const prefix = uniquePrefix('drain0')
    const [a, b] = await queue(['A', 'B'], { prefix, extra: { drainTimeout: 0, work: { job: { settleAfterAbortMs: 2000 } } } })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const sent = now()
    a.send({ cmd: 'remove', name: 'job' })
    const start = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start')
    t.diagnostic(`B start ${ms(start.t - sent).toFixed(0)} ms after remove()`)
    assert.ok(ms(start.t - sent) < 1500, 'no drain wait')
    assert.deepStrictEqual(a.find({ ev: 'settled' }), [], 'A\'s work was still running')
  })
})

describe('handleSignals', { timeout: 120000 }, () => {
  // A long TTL: a handover well under it can only come from the lease being revoked.
  const ttl = 10
  for (const signal of ['SIGTERM', 'SIGINT']) {
    it(`${signal}: the leader steps down, revokes its lease and exits; another host takes over at once`, async (t) => {
      const prefix = uniquePrefix(`sig-${signal}`)
      // With SIGINT the leader also has work to drain: the exit waits for it.
      const work = signal === 'SIGINT' ? { job: { settleAfterAbortMs: 300 } } : undefined
      const [a, b] = await queue(['A', 'B'], { prefix, ttl, extra: { handleSignals: true, work } })
      await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
      const sent = now()
      a.kill(signal)
      const start = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start')
      const exit = await within(a.exited, 5000, 'A exits')
      const stop = a.find({ ev: 'stop', name: 'job' })[0]
      t.diagnostic(`${signal} at 0: A stop '${stop && stop.reason}' ${stop ? ms(stop.t - sent).toFixed(0) : '-'} ms, B start ${ms(start.t - sent).toFixed(0)} ms, ` +
        `A exited (${exit.signal || exit.code}) ${ms(exit.t - sent).toFixed(0)} ms (ttl ${ttl * 1000} ms)`)
      assert.strictEqual(stop.reason, 'closed')
      assert.ok(ms(start.t - sent) < 3000, `handover ${ms(start.t - sent)} ms, well under the TTL`)
      assert.strictEqual(exit.signal, signal, 'the signal took its default course')
      if (work) {
        const settled = a.find({ ev: 'settled', name: 'job' })[0]
        assert.ok(settled && settled.t < start.t, 'the work settled before B started')
      }
      assert.deepStrictEqual((await etcd.keys(`${prefix}/job/`)).map((kv) => kv.value), [b.id], 'A\'s key is gone')
      assertOneLeaderAtATime([a, b], 'job')
    })
  }

  it('with its own SIGTERM listener the app keeps running after the locker closed', async (t) => {
    const prefix = uniquePrefix('sig-own')
    const [a, b] = await queue(['A', 'B'], { prefix, ttl, extra: { handleSignals: true, ownSignalListener: ['SIGTERM'] } })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    const sent = now()
    a.kill('SIGTERM')
    await a.waitFor({ ev: 'signal', signal: 'SIGTERM' }, 5000, 'the app\'s listener ran')
    const start = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start')
    t.diagnostic(`B start ${ms(start.t - sent).toFixed(0)} ms after SIGTERM`)
    assert.deepStrictEqual(a.find({ ev: 'stop' }).map((e) => e.reason), ['closed'])
    await a.request({ cmd: 'ping' }, { ev: 'pong' }, 5000)
    assert.ok(a.alive, 'A is still running')
    // Registering again on a closed locker fails cleanly.
    const err = await a.request({ cmd: 'register', name: 'again' }, { ev: 'error', name: 'again' }, 5000)
    assert.strictEqual(err.code, 'LOCKER_CLOSED')
  })

  // In a container the application is often PID 1, and the kernel delivers no signal to PID 1
  // that it has no handler for: re-raising SIGTERM after the close would change nothing, and the
  // process would hang until the orchestrator's SIGKILL. It must exit with 128 + the signal.
  it('SIGTERM to a leader that is PID 1 (as in a container): it closes and exits with 143', async (t) => {
    if (process.getuid() !== 0) return t.skip('needs root for a PID namespace (unshare --pid)')
    const prefix = uniquePrefix('sig-pid1')
    const other = lockers.open(etcd.endpoints, { ttl, prefix, id: 'other' })
    const script = `
      const locked = require(${JSON.stringify(require.resolve('..'))})
      const locker = locked(${JSON.stringify(etcd.endpoints)}, { ttl: ${ttl}, prefix: ${JSON.stringify(prefix)}, id: 'pid1', handleSignals: true })
      locker('job').on('start', () => console.log('started as pid ' + process.pid))
      setInterval(() => {}, 1000) // the application's own work (a server, say) keeps the loop alive`
    const { spawn } = require('node:child_process')
    const child = spawn('unshare', ['--pid', '--fork', '--kill-child', process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.after(() => child.kill('SIGKILL'))
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
    const out = await within(new Promise((resolve) => child.stdout.on('data', (d) => resolve(String(d)))), 10000, 'the PID 1 host is elected')
    assert.match(out, /started as pid 1\b/)
    // unshare --fork waits for its child: node, PID 1 of the new namespace.
    const [nodePid] = require('node:fs').readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(' ').map(Number)
    const candidate = other('job')
    const start = nextEvent(candidate, 'start', 5000, 'the other host takes over')
    const sent = now()
    process.kill(nodePid, 'SIGTERM')
    await start
    const exit = await within(exited, 5000, 'the PID 1 host exits after SIGTERM')
    t.diagnostic(`PID 1 exited with ${exit.code ?? exit.signal} ${ms(now() - sent).toFixed(0)} ms after SIGTERM`)
    assert.strictEqual(exit.code, 143)
  })

  it('without handleSignals, SIGTERM kills the leader without revoking: the handover waits for the lease', async (t) => {
    const short = 3
    const prefix = uniquePrefix('sig-off')
    const [a, b] = await queue(['A', 'B'], { prefix, ttl: short })
    await a.waitFor({ ev: 'start', name: 'job' }, 5000, 'A start')
    // etcd keeps A's lease for the TTL from its receipt of A's last keepalive, which A sent no
    // earlier than this one (a later keepalive only moves the expiry later).
    const renewal = await a.request({ cmd: 'stats' }, { ev: 'stats' }, 5000)
    const leaseUntil = renewal.t - BigInt(Math.round(renewal.sinceRenewalMs * 1e6)) + BigInt(short * 1e9)
    const sent = now()
    a.kill('SIGTERM')
    const exit = await within(a.exited, 5000, 'A exits')
    const start = await b.waitFor({ ev: 'start', name: 'job' }, short * 1000 + 5000, 'B start')
    t.diagnostic(`default SIGTERM: A exited ${ms(exit.t - sent).toFixed(0)} ms, B start ${ms(start.t - sent).toFixed(0)} ms (ttl ${short * 1000} ms), ${ms(start.t - leaseUntil).toFixed(0)} ms after the lease could expire`)
    assert.strictEqual(exit.signal, 'SIGTERM')
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], 'no stop: the process died at once')
    assert.ok(start.t >= leaseUntil, `the handover waited for the lease to expire: B started ${ms(leaseUntil - start.t).toFixed(0)} ms before it could`)
  })
})

describe('locker.stats()', { timeout: 120000 }, () => {
  // A leads 'job' in this process and B waits behind it, knowing A leads.
  async function leaderAndCandidate (prefix) {
    const a = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: `A-${prefix}` })
    const b = lockers.open(etcd.endpoints, { ttl: TTL, prefix, id: `B-${prefix}` })
    const sa = a('job')
    const [termA] = await nextEvent(sa, 'start', 5000, 'A start')
    const startedAt = Date.now()
    const sb = b('job')
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 5000, 'B queued')
    await until(() => sb.leader() === a.id(), 5000, 'B knows A leads')
    return { a, b, sa, sb, termA, startedAt }
  }

  // An operator deletes A's key: A steps down, B leads, and A knows it.
  async function deleteLeaderKey ({ a, b, sa, sb }, prefix) {
    const ownKey = keyOf(await etcd.keys(`${prefix}/job/`), a.id())
    const bStart = nextEvent(sb, 'start', 5000, 'B start')
    await etcd.etcdctl(['del', ownKey.key])
    const [termB] = await bStart
    const stoppedAt = Date.now()
    await until(() => sa.leader() === b.id(), 5000, 'A knows B leads')
    return { termB, stoppedAt }
  }

  it('a locker without singletons: its id and ttl, no singletons', async () => {
    const a = lockers.open(etcd.endpoints, { ttl: TTL, prefix: uniquePrefix('statsempty') })
    const empty = a.stats()
    assert.strictEqual(empty.id, a.id())
    assert.strictEqual(empty.ttl, TTL)
    assert.deepStrictEqual(empty.singletons, {})
    await a.close()
  })

  it('a leader and a candidate: state, terms won, token, lease and keepalive figures', async (t) => {
    const prefix = uniquePrefix('stats')
    const { a, b, termA, startedAt } = await leaderAndCandidate(prefix)
    // A few keepalives later (one goes out every TTL/3).
    await until(() => a.stats().keepalive.renewals >= 3, TTL * 1000 + 2000, 'A\'s third renewal')
    const s1 = a.stats()
    const ownKey = keyOf(await etcd.keys(`${prefix}/job/`), a.id())
    t.diagnostic(`A: ${JSON.stringify(s1)}`)
    assert.doesNotThrow(() => JSON.stringify(s1), 'serialisable for a health endpoint')
    assert.strictEqual(s1.lease, ownKey.leaseHex, 'lease: the hex id in the keys')
    assert.ok(s1.validForMs > 0 && s1.validForMs <= TTL * 1000 - marginMs(TTL) + CLOCK_READ_MS, `validForMs ${s1.validForMs}, at most TTL − margin = ${TTL * 1000 - marginMs(TTL)} ms`)
    // Both count from the send time of the last answered keepalive.
    assert.ok(Math.abs(s1.validForMs + s1.keepalive.sinceRenewalMs - (TTL * 1000 - marginMs(TTL))) <= CLOCK_READ_MS,
      `validForMs ${s1.validForMs} + sinceRenewalMs ${s1.keepalive.sinceRenewalMs} = TTL − margin (${TTL * 1000 - marginMs(TTL)} ms)`)
    assert.ok(s1.keepalive.renewals >= 2, `renewals ${s1.keepalive.renewals}`)
    assert.ok(typeof s1.keepalive.roundTripMs === 'number' && s1.keepalive.roundTripMs >= 0 && s1.keepalive.roundTripMs < 1000, `roundTripMs ${s1.keepalive.roundTripMs}`)
    assert.ok(s1.keepalive.sinceRenewalMs >= 0 && s1.keepalive.sinceRenewalMs < TTL * 1000, `sinceRenewalMs ${s1.keepalive.sinceRenewalMs}`)
    assert.deepStrictEqual(Object.keys(s1.singletons), ['job'])
    const ja = s1.singletons.job
    assert.strictEqual(ja.state, 'leader')
    assert.strictEqual(ja.termsWon, 1)
    assert.strictEqual(ja.token, termA.token)
    assert.strictEqual(ja.leader, a.id())
    assert.strictEqual(ja.lastStop, null)
    assert.ok(Math.abs(ja.since - startedAt) < 1000, `since ${ja.since} is the start (${startedAt})`)
    const jb = b.stats().singletons.job
    assert.deepStrictEqual({ state: jb.state, termsWon: jb.termsWon, token: jb.token, leader: jb.leader, lastStop: jb.lastStop },
      { state: 'candidate', termsWon: 0, token: null, leader: a.id(), lastStop: null })
    assert.ok(b.stats().keepalive.renewals >= 1, 'a candidate renews its lease too')
    await Promise.all([a.close(), b.close()])
  })

  it('a leader whose key an operator deletes: stepped-down (key-deleted) since the stop; the new leader\'s term', async (t) => {
    const prefix = uniquePrefix('statsdel')
    const pair = await leaderAndCandidate(prefix)
    const { a, b } = pair
    const { termB, stoppedAt } = await deleteLeaderKey(pair, prefix)
    const ja2 = a.stats().singletons.job
    const jb2 = b.stats().singletons.job
    t.diagnostic(`after key-deleted: A ${JSON.stringify(ja2)}; B ${JSON.stringify(jb2)}`)
    assert.strictEqual(ja2.state, 'stepped-down')
    assert.strictEqual(ja2.lastStop, 'key-deleted')
    assert.strictEqual(ja2.token, null)
    assert.strictEqual(ja2.leader, b.id())
    assert.strictEqual(ja2.termsWon, 1)
    assert.ok(Math.abs(ja2.since - stoppedAt) < 1000, 'since: the time of the stop')
    assert.strictEqual(jb2.state, 'leader')
    assert.strictEqual(jb2.termsWon, 1)
    assert.strictEqual(jb2.token, termB.token)
    await Promise.all([a.close(), b.close()])
  })

  it('a stepped-down leader that wins again counts two terms; a removed singleton is gone from stats()', async () => {
    const prefix = uniquePrefix('statsagain')
    const pair = await leaderAndCandidate(prefix)
    const { a, b, sa, sb } = pair
    await deleteLeaderKey(pair, prefix)
    // B leaves: A wins its second term.
    const aAgain = nextEvent(sa, 'start', 5000, 'A start again')
    await sb.remove()
    const [termA2] = await aAgain
    const ja3 = a.stats().singletons.job
    assert.strictEqual(ja3.state, 'leader')
    assert.strictEqual(ja3.termsWon, 2)
    assert.strictEqual(ja3.token, termA2.token)
    assert.deepStrictEqual(b.stats().singletons, {}, 'a removed singleton is gone from stats()')
    await Promise.all([a.close(), b.close()])
  })

  it('a leader cut off from etcd: validForMs runs down to 0, sinceRenewalMs grows, state stepped-down (deadline)', async (t) => {
    const prefix = uniquePrefix('statsdl')
    const p = await startProxy(etcd.endpoints[0])
    const a = lockers.open([p.endpoint], { ttl: TTL, prefix })
    a.on('error', () => {})
    const sa = a('job')
    sa.on('error', () => {})
    await nextEvent(sa, 'start', 5000, 'A start')
    let atStop = null
    sa.once('stop', () => { atStop = { t: performance.now(), stats: a.stats() } })
    const cut = performance.now()
    p.mode('blackhole')
    await nextEvent(sa, 'stop', TTL * 1000 + 2000, 'A stop at the deadline')
    const s = atStop.stats
    t.diagnostic(`at the deadline stop: ${JSON.stringify(s)}`)
    assert.strictEqual(s.validForMs, 0)
    // sinceRenewalMs reached TTL − margin (the deadline) when the stop came, and not much more.
    assertDeadlineStop({ sinceRenewalMs: s.keepalive.sinceRenewalMs, at: atStop.t, outageAt: cut, ttl: TTL })
    assert.strictEqual(s.singletons.job.state, 'stepped-down')
    assert.strictEqual(s.singletons.job.lastStop, 'deadline')
    p.mode('pass')
    await nextEvent(sa, 'start', 15000, 'A leads again after the outage')
    const s2 = a.stats()
    assert.strictEqual(s2.singletons.job.state, 'leader')
    assert.strictEqual(s2.singletons.job.termsWon, 2)
    assert.ok(s2.validForMs > 0)
    await a.close()
  })
})
