'use strict'
// The benchmark's scenarios, each run for both libraries against the same etcd, with competing
// hosts as separate processes (bench/host.js). Every time is a difference of two
// `process.hrtime.bigint()` readings, possibly taken in different processes: on Linux it is
// CLOCK_MONOTONIC, one clock for the whole machine.
//
// Each scenario takes the run context { etcd, admin, quick, log, libs, sizes } and returns plain
// data; bench/run.js turns it into tables.

const fs = require('node:fs')
const { Host, TimeoutError, stopAll } = require('./hosts')
const { ms } = require('./stats')
const { termRecords } = require('./etcd')

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const now = () => process.hrtime.bigint()

/** Where a library keeps the candidate keys of election `name` under `prefix`. */
function keyPrefix (lib, prefix, name) {
  return lib === 'locked' ? `${prefix}/${name}/` : `${prefix}/election/${name}/`
}

async function countKeys (admin, prefix) {
  return Number(await admin.getAll().prefix(prefix).count())
}

/** Polls until `prefix` holds `n` keys (every 10 ms, at most `timeoutMs`). */
async function waitKeys (admin, prefix, n, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  const every = n > 100 ? 100 : 10 // do not load etcd with counts of big ranges
  let count = -1
  while (Date.now() < deadline) {
    count = await countKeys(admin, prefix)
    if (count === n) return
    await delay(every)
  }
  throw new TimeoutError(`${prefix}: ${count} keys, expected ${n} within ${timeoutMs} ms`)
}

async function leaseCount (admin) {
  const res = await admin.leaseClient.leaseLeases()
  return res.leases.length
}

/**
 * Gives the next scenario an etcd as clean as the first one had. Revokes the leases that hosts
 * of earlier scenarios left behind (they exit without closing, as a crash would, and etcd reaping
 * their keys at the end of the TTL would fall into whatever is measured next), then compacts the
 * history, as etcd's auto-compaction or Kubernetes' API server does in production: after the
 * handoff among 10 000 names, etcd's uncompacted history made the next scenario slower in about
 * half the runs (handover() past two candidates: a median of 3 to 14 ms, against 3 to 4 ms on a
 * compacted etcd). Returns the leases revoked and the revision compacted at.
 */
async function cleanEtcd (ctx) {
  const { Etcd3 } = require('etcd3')
  const deadline = Date.now() + 30000
  while (true) {
    // A client per attempt: the harness's own may have its circuit breaker open after a scenario
    // in which etcd refused requests (etcd3 at 10 000 names), and would not even try.
    const client = new Etcd3({ hosts: `http://${ctx.etcd.endpoint}` })
    try {
      const { leases } = await client.leaseClient.leaseLeases()
      await Promise.all(leases.map(({ ID }) => client.leaseClient.leaseRevoke({ ID })))
      const { header } = await client.kv.range({ key: Buffer.from('\0') })
      await client.kv.compact({ revision: header.revision, physical: true })
      return { leases: leases.length, revision: Number(header.revision) }
    } catch (err) {
      // etcd still busy with what the last scenario left behind.
      if (Date.now() > deadline) throw err
      await delay(500)
    } finally {
      client.close()
    }
  }
}

/** Waits (bounded) until no lease is left from earlier scenarios, so counts start clean. */
async function waitNoLeases (admin, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  let count = await leaseCount(admin)
  while (count > 0 && Date.now() < deadline) {
    await delay(200)
    count = await leaseCount(admin)
  }
  return count
}

function spawnHost (ctx, lib, extra) {
  return new Host({ lib, endpoint: ctx.etcd.endpoint, ttl: 5, quiet: false, lockedPath: ctx.lockedPath, ...extra })
}

let uniq = 0
const unique = (label) => `${label}${Date.now().toString(36)}${(uniq++).toString(36)}`

// ---- 7. the floor ----------------------------------------------------------------------------

/** etcd's own delete → watch event latency: the harness deletes, another process watches. */
async function floor (ctx) {
  const rounds = ctx.quick ? 3 : 50
  const prefix = unique('bench-floor')
  const watcher = spawnHost(ctx, 'etcd3', { prefix })
  const values = []
  const rpc = []
  try {
    await watcher.ready()
    await watcher.request('floorWatch', { prefix: `${prefix}/` })
    for (let i = 0; i < rounds; i++) {
      const key = `${prefix}/k${i}`
      await ctx.admin.put(key).value('x')
      await delay(20)
      const mark = watcher.mark()
      const t0 = now()
      await ctx.admin.delete().key(key)
      const t1 = now()
      const ev = await watcher.waitFor((e) => e.seq >= mark && e.type === 'deleted' && e.key === key, 5000, `delete event of ${key}`)
      values.push(ms(t0, ev.t))
      rpc.push(ms(t0, t1))
    }
  } finally {
    await stopAll([watcher])
  }
  return { deleteToEvent: values, deleteRoundTrip: rpc }
}

// ---- 1. first election -----------------------------------------------------------------------

async function firstElection (ctx, lib) {
  const warmRounds = ctx.quick ? 1 : 20
  const freshRounds = ctx.quick ? 1 : 8
  const prefix = unique(`bench-first-${lib}`)
  const warm = []
  const fresh = []
  const freshFromSpawn = []

  // Warm: a process whose client is connected and has been elected once already.
  const host = spawnHost(ctx, lib, { prefix })
  try {
    await host.ready()
    await host.request('register', { names: ['warmup'] })
    await host.waitEvent('start', 'warmup', 15000)
    for (let i = 0; i < warmRounds; i++) {
      const name = `warm${i}`
      const reply = await host.request('register', { names: [name] })
      const ev = await host.waitEvent('start', name, 15000)
      warm.push(ms(reply.t0, ev.t))
      await delay(20)
    }
  } finally {
    await stopAll([host])
  }

  // Fresh: a new process creates its client and registers at once.
  for (let i = 0; i < freshRounds; i++) {
    const name = `fresh${i}`
    const tSpawn = now()
    const h = spawnHost(ctx, lib, { prefix, register: [name] })
    try {
      const ready = await h.ready()
      const ev = await h.waitEvent('start', name, 15000)
      fresh.push(ms(ready.tCreate, ev.t))
      freshFromSpawn.push(ms(tSpawn, ev.t))
    } finally {
      await stopAll([h])
    }
  }
  return { warm, fresh, freshFromSpawn }
}

// ---- 2. graceful handoff ---------------------------------------------------------------------

async function handoff (ctx, lib) {
  const rounds = ctx.quick ? 1 : 30
  const prefix = unique(`bench-handoff-${lib}`)
  const name = 'job'
  const keys = keyPrefix(lib, prefix, name)
  const hosts = [0, 1, 2].map(() => spawnHost(ctx, lib, { prefix }))
  const values = []
  const requests = {} // etcd requests by method, summed over rounds, remove → start + 20 ms
  let doubleStarts = 0
  let errors = 0
  try {
    await Promise.all(hosts.map((h) => h.ready()))
    // Queue up in order: A leads, B then C wait.
    await hosts[0].request('register', { names: [name] })
    await hosts[0].waitEvent('start', name, 15000)
    await hosts[1].request('register', { names: [name] })
    await waitKeys(ctx.admin, keys, 2, 10000)
    await hosts[2].request('register', { names: [name] })
    await waitKeys(ctx.admin, keys, 3, 10000)
    let leader = hosts[0]
    for (let i = 0; i < rounds; i++) {
      await delay(50) // let the newest waiter settle (etcd3 sets up its watch after the put)
      const marks = hosts.map((h) => h.mark())
      const m0 = await etcdSnapshot(ctx)
      const reply = await leader.request('remove', { name })
      const others = hosts.filter((h) => h !== leader)
      const ev = await Promise.any(others.map((h) => h.waitEventAfter(marks[hosts.indexOf(h)], 'start', name, 10000)))
      const next = others.find((h) => h.events.includes(ev))
      values.push(ms(reply.t0, ev.t))
      await delay(20)
      requestsBetween(m0, await etcdSnapshot(ctx), requests)
      // The old leader re-registers at the back of the queue.
      await leader.request('register', { names: [name] })
      await waitKeys(ctx.admin, keys, 3, 10000)
      await delay(20)
      const starts = others.filter((h) => h.events.some((e) => e.seq >= marks[hosts.indexOf(h)] && e.type === 'start'))
      if (starts.length > 1) doubleStarts++
      leader = next
    }
  } finally {
    errors = hosts.reduce((n, h) => n + h.errors.length, 0)
    await stopAll(hosts)
  }
  for (const method of Object.keys(requests)) requests[method] /= rounds
  return { handoff: values, doubleStarts, requestsPerHandoff: requests, errors }
}

/**
 * handover() of one name among four hosts (locked only: etcd3 has no such call): the leader hands
 * over to the next in line, or to the last in line past the two candidates between, which first
 * step behind it. Measured from the call to the target's start (nothing to drain).
 */
async function handover (ctx) {
  const rounds = ctx.quick ? 1 : 30
  const prefix = unique('bench-handover')
  const name = 'job'
  const keys = keyPrefix('locked', prefix, name)
  const hosts = [0, 1, 2, 3].map(() => spawnHost(ctx, 'locked', { prefix }))
  const out = { next: [], past2: [], wrongStarts: 0, errors: 0 }
  try {
    await Promise.all(hosts.map((h) => h.ready()))
    const ids = new Map()
    for (const h of hosts) ids.set(h, (await h.request('id')).lockerId)
    // The queue as the hosts joined it, the leader first.
    let queue = []
    for (const h of hosts) {
      await h.request('register', { names: [name] })
      queue.push(h)
      if (queue.length === 1) await h.waitEvent('start', name, 15000)
      else await waitKeys(ctx.admin, keys, queue.length, 10000)
    }
    for (let i = 0; i < 2 * rounds; i++) {
      const past = i % 2 === 1
      const [leader, ...waiting] = queue
      const target = past ? waiting[waiting.length - 1] : waiting[0]
      await delay(50)
      const marks = hosts.map((h) => h.mark())
      const reply = await leader.request('handover', past ? { name, to: ids.get(target) } : { name })
      const ev = await target.waitEventAfter(marks[hosts.indexOf(target)], 'start', name, 10000)
      ;(past ? out.past2 : out.next).push(ms(reply.t0, ev.t))
      await waitKeys(ctx.admin, keys, hosts.length, 10000)
      await delay(20)
      // The queue now, as etcd orders it (the candidates that stepped aside raced each other).
      const kvs = await ctx.admin.getAll().prefix(keys).sort('Create', 'Ascend').exec()
      const byId = new Map([...ids].map(([h, id]) => [id, h]))
      queue = kvs.kvs.map((kv) => byId.get(kv.value.toString()))
      if (hosts.some((h) => h !== target && h.events.some((e) => e.seq >= marks[hosts.indexOf(h)] && e.type === 'start'))) out.wrongStarts++
    }
  } finally {
    out.errors = hosts.reduce((n, h) => n + h.errors.length, 0)
    await stopAll(hosts)
  }
  return out
}

/**
 * Graceful handoff of one name on lockers that also hold `load` other names: A leads them all,
 * B is queued on all of them, and 'job' moves back and forth. Only locked: etcd3 needs a lease,
 * a keepalive stream and a watch per name, and at 10 000 names does not finish queueing.
 */
async function handoffUnderLoad (ctx, load) {
  const rounds = ctx.quick ? 1 : 30
  const prefix = unique(`bench-handoff-load-${load}-`)
  const name = 'job'
  const keys = keyPrefix('locked', prefix, name)
  const names = Array.from({ length: load }, (_, i) => `load${i}`)
  const cap = ctx.capMs('locked', load)
  const hosts = [0, 1].map(() => spawnHost(ctx, 'locked', { prefix, quiet: true }))
  const values = []
  let errors = 0
  try {
    await Promise.all(hosts.map((h) => h.ready()))
    await hosts[0].request('register', { names, expectAll: true }, cap)
    await hosts[0].waitEvent('allStarted', undefined, cap)
    await hosts[1].request('register', { names }, cap)
    // Two candidates per name, and the leader's term records (one per bucket of names).
    await waitKeys(ctx.admin, `${prefix}/`, 2 * load + termRecords(names), cap)
    await Promise.all(hosts.map((h) => h.request('setQuiet', { value: false })))
    await hosts[0].request('register', { names: [name] })
    await hosts[0].waitEvent('start', name, 15000)
    await hosts[1].request('register', { names: [name] })
    await waitKeys(ctx.admin, keys, 2, 10000)
    let [leader, next] = hosts
    for (let i = 0; i < rounds; i++) {
      await delay(50)
      const mark = next.mark()
      const reply = await leader.request('remove', { name })
      const ev = await next.waitEventAfter(mark, 'start', name, 10000)
      values.push(ms(reply.t0, ev.t))
      await leader.request('register', { names: [name] })
      await waitKeys(ctx.admin, keys, 2, 10000)
      ;[leader, next] = [next, leader]
    }
  } finally {
    errors = hosts.reduce((n, h) => n + h.errors.length, 0)
    await stopAll(hosts)
  }
  return { load, handoff: values, errors }
}

// ---- 3. crash failover -----------------------------------------------------------------------

const FAILOVER_TTL = 2

/** Spawns leader A and waiter B on a fresh name; resolves once B is queued. */
async function leaderAndWaiter (ctx, lib, label, extraA = {}, ttl = FAILOVER_TTL) {
  const prefix = unique(`bench-${label}-${lib}`)
  const name = 'job'
  const a = spawnHost(ctx, lib, { prefix, ttl, register: [name], ...extraA })
  let b
  try {
    await a.ready()
    await a.waitEvent('start', name, 15000)
    b = spawnHost(ctx, lib, { prefix, ttl, register: [name] })
    await b.ready()
    await waitKeys(ctx.admin, keyPrefix(lib, prefix, name), 2, 10000)
    await delay(100)
  } catch (err) {
    await stopAll([a, b])
    throw err
  }
  return { a, b, name, prefix }
}

/**
 * Leader A SIGKILLed, waiter B takes over after the lease expires. `parallel` pairs (each on its
 * own name) make a batch, so that their set-up and their wait for the TTL overlap.
 *
 * Each failover is also split where it can be seen: A reports when it sent each keepalive, so
 * `expiry` (the last one sent before the kill, plus the TTL) is the earliest moment etcd may
 * expire the lease; a watch of the harness sees etcd delete A's key. Then kill → expiry is where
 * the kill fell in the keepalive period, expiry → deletion is etcd's own reaping of expired leases
 * (a 500 ms tick in etcd 3.4), and deletion → start is the library's part.
 *
 * The rounds of a batch must not disturb each other's failover. Nothing is spawned or stopped
 * while a batch kills: all its pairs are set up first and stopped after the last failover. And no
 * two leases of a batch expire within one reaping tick of each other: a leader is killed within
 * the keepalive period after a keepalive that leaves its lease expiring at least a tick after the
 * lease of the kill before. Leases reaped in the same tick are deleted together, so their
 * successors act at the same moment, and one that reads etcd after the deletion (etcd3's does)
 * waits behind the others' revocations and reads. With ten pairs killed independently, etcd3's
 * deletion → start took a median of 15 to 18 ms (p90 27 to 29 ms); spaced like this, 8 ms (p90
 * 11 ms), as with two pairs at a time. locked's stayed at 0.1 to 0.2 ms either way. The crash of
 * one host is one lease reaped, so this is the fair test.
 */
const ETCD_LEASE_TICK_MS = 500
// A tick's period is 500 ms plus its own work; the margin keeps two expiries a whole tick apart.
const EXPIRY_SPACING_NS = BigInt((ETCD_LEASE_TICK_MS + 20) * 1e6)

async function crashFailover (ctx, lib, { ttl = FAILOVER_TTL, rounds = ctx.quick ? 1 : 10, parallel = 1 } = {}) {
  const values = []
  const parts = { killToExpiry: [], expiryToDeletion: [], deletionToStart: [], beyondExpiry: [] }
  const ttlNs = BigInt(ttl * 1e9)
  const keepaliveMs = (ttl * 1000) / 3
  let errors = 0
  async function setUp () {
    // etcd 3.4 looks for expired leases every 500 ms. Rounds that follow each other at the same
    // pace would grant (and so expire) their leases at the same point of that tick every time,
    // and a library's start-up time would then decide its whole reaping delay. A random pause
    // before the leader starts spreads the expiries over the tick, as crashes in the wild are.
    await delay(Math.floor(Math.random() * ETCD_LEASE_TICK_MS))
    const pair = await leaderAndWaiter(ctx, lib, `crash${ttl}`, { reportRenewals: true }, ttl)
    pair.tDeleted = null
    try {
      pair.watcher = await ctx.admin.watch().prefix(keyPrefix(lib, pair.prefix, pair.name)).create()
    } catch (err) {
      await stopAll([pair.a, pair.b])
      throw err
    }
    pair.watcher.on('delete', () => { pair.tDeleted ??= now() })
    return pair
  }
  /** The first keepalive, sent from now on by a leader of `pending`, whose lease would expire at `floor` or later. */
  async function nextKeepalive (pending, floor) {
    let chosen = false
    const waits = pending.map((pair) => {
      const from = pair.a.mark()
      return pair.a.waitFor((e) => chosen || (e.seq >= from && e.type === 'renewed' && e.t + ttlNs >= floor),
        keepaliveMs * 3 + 10000, 'a keepalive').then((renewal) => ({ pair, renewal }))
    })
    // The waits not chosen end at their host's next event; none may reject unheard.
    for (const w of waits) w.catch(() => {})
    const first = await Promise.race(waits)
    chosen = true
    return first
  }
  async function failover (pair, renewal) {
    const { a, b, name } = pair
    // Kill at a random point of the keepalive period (TTL/3), the same spread for both.
    const at = renewal.t + BigInt(Math.floor(Math.random() * keepaliveMs * 1e6))
    await delay(Math.max(0, Number(at - now()) / 1e6))
    const mark = b.mark()
    const tKill = a.signal('SIGKILL')
    const ev = await b.waitEventAfter(mark, 'start', name, ttl * 1000 + 10000)
    values.push(ms(tKill, ev.t))
    const renewals = a.events.filter((e) => e.type === 'renewed' && e.t <= tKill)
    if (renewals.length > 0 && pair.tDeleted !== null) {
      const expiry = renewals[renewals.length - 1].t + ttlNs
      parts.killToExpiry.push(ms(tKill, expiry))
      parts.expiryToDeletion.push(ms(expiry, pair.tDeleted))
      parts.deletionToStart.push(ms(pair.tDeleted, ev.t))
      parts.beyondExpiry.push(ms(expiry, ev.t))
    }
  }
  for (let done = 0; done < rounds; done += parallel) {
    const size = Math.min(parallel, rounds - done)
    const setUps = await Promise.allSettled(Array.from({ length: size }, setUp))
    const pairs = setUps.filter((s) => s.status === 'fulfilled').map((s) => s.value)
    try {
      const failed = setUps.find((s) => s.status === 'rejected')
      if (failed) throw failed.reason
      const pending = [...pairs]
      const failovers = []
      let floor = 0n
      while (pending.length > 0) {
        const { pair, renewal } = await nextKeepalive(pending, floor)
        pending.splice(pending.indexOf(pair), 1)
        floor = renewal.t + ttlNs + EXPIRY_SPACING_NS
        const f = failover(pair, renewal)
        f.catch(() => {}) // awaited below, with the others
        failovers.push(f)
      }
      await Promise.all(failovers)
    } finally {
      errors += pairs.reduce((n, { b }) => n + b.errors.length, 0)
      await Promise.all(pairs.map((p) => p.watcher.cancel().catch(() => {})))
      await stopAll(pairs.flatMap(({ a, b }) => [a, b]))
    }
  }
  return { failover: values, parts, ttlMs: ttl * 1000, errors, parallel: Math.min(parallel, rounds) }
}

// ---- 3b. crash failover with the guardian --------------------------------------------------

const GUARDIAN_TTL = 10

/** VmRSS and RssAnon of `pid` in bytes (/proc/<pid>/status gives kB). */
function memoryOf (pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (field) => {
    const m = new RegExp(`^${field}:\\s*(\\d+) kB`, 'm').exec(status)
    return m ? Number(m[1]) * 1024 : NaN
  }
  return { rss: kb('VmRSS'), rssAnon: kb('RssAnon') }
}

function parentOf (pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
}

/** The guardian's pid as the locker reports it (null while it is being started). */
async function guardianPid (host, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const { guardianPid: pid } = await host.request('stats')
    if (pid != null) return pid
    if (Date.now() > deadline) throw new TimeoutError(`host ${host.pid}: no guardian within ${timeoutMs} ms`)
    await delay(20)
  }
}

/**
 * Leader A (locked, `guardian: true`, TTL 10 s) leads `n` names, B queues on all of them; A is
 * SIGKILLed: the time until B's first and until its last start, and the guardian's memory just
 * before the kill. Without the guardian both would be about the TTL.
 */
async function crashGuardian (ctx, n) {
  const rounds = ctx.quick ? 1 : n === 1 ? 20 : 10
  const cap = ctx.capMs('locked', n)
  const names = n === 1 ? ['job'] : Array.from({ length: n }, (_, i) => `g${i}`)
  const first = []
  const last = []
  const guardianRss = []
  const guardianRssAnon = []
  let errors = 0
  for (let i = 0; i < rounds; i++) {
    const prefix = unique(`bench-guardian-${n}-`)
    const quiet = n > 1
    const a = spawnHost(ctx, 'locked', { prefix, ttl: GUARDIAN_TTL, quiet, guardian: true })
    const b = spawnHost(ctx, 'locked', { prefix, ttl: GUARDIAN_TTL, quiet })
    try {
      await Promise.all([a.ready(), b.ready()])
      await a.request('register', { names, expectAll: true })
      await a.waitEvent('allStarted', undefined, cap)
      await b.request('register', { names, expectAll: true })
      // Two candidates per name, and the leader's term records (one per bucket of names).
      await waitKeys(ctx.admin, `${prefix}/`, 2 * n + termRecords(names), cap)
      const gpid = await guardianPid(a, 10000)
      if (parentOf(gpid) !== a.pid) throw new Error(`guardian ${gpid} is not a child of host ${a.pid}`)
      // Let the guardian settle (a fresh Node process is still loading), then kill at a random
      // point of the locker's own timers.
      await delay(500 + Math.floor(Math.random() * 1000))
      const mem = memoryOf(gpid)
      guardianRss.push(mem.rss)
      guardianRssAnon.push(mem.rssAnon)
      const mark = b.mark()
      const tKill = a.signal('SIGKILL')
      const f = await b.waitEventAfter(mark, 'firstStart', undefined, GUARDIAN_TTL * 1000 + 10000)
      const l = await b.waitEventAfter(mark, 'allStarted', undefined, GUARDIAN_TTL * 1000 + cap)
      first.push(ms(tKill, f.t))
      last.push(ms(tKill, l.t))
    } finally {
      errors += a.errors.length + b.errors.length
      await stopAll([a, b])
    }
  }
  return { n, ttlMs: GUARDIAN_TTL * 1000, first, last, guardianRss, guardianRssAnon, errors, rounds }
}

// ---- 4. pause (SIGSTOP longer than the TTL) --------------------------------------------------

const PAUSE_MS = 4000

async function pause (ctx, lib) {
  const rounds = ctx.quick ? 1 : 5
  const takeover = []
  const resumeToStop = []
  const overlap = []
  let stillLeadingAtFirstTick = 0
  let checkSaysLeadingAtFirstTick = 0
  let noStop = 0
  for (let i = 0; i < rounds; i++) {
    const { a, b, name } = await leaderAndWaiter(ctx, lib, 'pause', { heartbeat: true })
    try {
      await delay(Math.floor(Math.random() * (FAILOVER_TTL * 1000) / 3))
      const markA = a.mark()
      const markB = b.mark()
      const tStop = a.signal('SIGSTOP')
      const bStart = await b.waitEventAfter(markB, 'start', name, PAUSE_MS + 10000)
      takeover.push(ms(tStop, bStart.t))
      const rest = PAUSE_MS - ms(tStop, now())
      if (rest > 0) await delay(rest)
      const tCont = a.signal('SIGCONT')
      try {
        const aStop = await a.waitEventAfter(markA, 'stop', name, 10000)
        resumeToStop.push(ms(tCont, aStop.t))
        overlap.push(ms(bStart.t, aStop.t))
      } catch (err) {
        if (!(err instanceof TimeoutError)) throw err
        noStop++
      }
      const resumed = a.events.find((e) => e.seq >= markA && e.type === 'resumed')
      if (resumed && resumed.leading > 0) stillLeadingAtFirstTick++
      if (resumed && resumed.checked > 0) checkSaysLeadingAtFirstTick++
    } finally {
      await stopAll([a, b])
    }
  }
  return { takeover, resumeToStop, overlap, stillLeadingAtFirstTick, checkSaysLeadingAtFirstTick, noStop, rounds, pauseMs: PAUSE_MS, ttlMs: FAILOVER_TTL * 1000 }
}

// ---- 5 + 6. idle cost and scale --------------------------------------------------------------

function grpcCounters (metrics) {
  const received = {}
  const open = {}
  for (const [key, value] of metrics) {
    const m = /^(grpc_server_msg_received_total|grpc_server_started_total|grpc_server_handled_total)\{(.*)\}$/.exec(key)
    if (!m) continue
    const labels = Object.fromEntries([...m[2].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]))
    if (!labels.grpc_service.startsWith('etcdserverpb.')) continue
    const method = labels.grpc_method
    if (m[1] === 'grpc_server_msg_received_total') received[method] = (received[method] || 0) + value
    else if (labels.grpc_type === 'bidi_stream') {
      open[method] = (open[method] || 0) + (m[1] === 'grpc_server_started_total' ? value : -value)
    }
  }
  return { received, open }
}

async function etcdSnapshot (ctx) {
  const metrics = await ctx.etcd.metrics()
  const { received, open } = grpcCounters(metrics)
  return {
    t: now(),
    received,
    open,
    watchStreams: metrics.get('etcd_debugging_mvcc_watch_stream_total') ?? NaN,
    watchers: metrics.get('etcd_debugging_mvcc_watcher_total') ?? NaN,
    etcdCpu: ctx.etcd.cpuSeconds()
  }
}

/** etcd requests (gRPC messages received) by method between two snapshots. */
function requestsBetween (a, b, into = {}) {
  for (const [method, value] of Object.entries(b.received)) {
    const d = value - (a.received[method] || 0)
    if (d > 0) into[method] = (into[method] || 0) + d
  }
  return into
}

function cpuSeconds (stats) {
  return (stats.cpu.user + stats.cpu.system) / 1e6
}

/**
 * One host registers `n` names: time until all started and RSS growth; then an idle window
 * (etcd requests/s by method, CPU, leases, watch streams); then, for the scale sizes, a
 * competitor queues on every name, the host closes, and the competitor takes over all of them.
 */
async function idleAndScale (ctx, lib, n, withCompetitor) {
  const idleMs = ctx.quick ? 2000 : 10000
  const cap = ctx.capMs(lib, n)
  const prefix = unique(`bench-scale-${lib}-${n}-`)
  const names = Array.from({ length: n }, (_, i) => `s${i}`)
  const out = { lib, n, capMs: cap }
  const leftover = await waitNoLeases(ctx.admin, 20000)
  const before = await etcdSnapshot(ctx)
  const leasesBefore = await leaseCount(ctx.admin)
  out.leftoverLeases = leftover
  let host
  let competitor
  try {
    host = spawnHost(ctx, lib, { prefix, quiet: true })
    await host.ready()
    await delay(200)
    const s0 = await host.request('stats')
    const r0 = await etcdSnapshot(ctx)
    const reply = await host.request('register', { names, expectAll: true }, cap)
    try {
      const all = await host.waitEvent('allStarted', undefined, cap)
      out.allStarted = ms(reply.t0, all.t)
      out.startupRequests = requestsBetween(r0, await etcdSnapshot(ctx))
    } catch (err) {
      if (!(err instanceof TimeoutError)) throw err
      const s = await host.request('stats', {}, 30000).catch(() => null)
      out.didNotFinish = `did not finish within ${cap / 1000} s (${s ? s.started : '?'} of ${n} started)`
      return out
    }
    const s1 = await host.request('stats', {}, 60000)
    out.rssBefore = s0.rss
    out.rssAfter = s1.rss
    out.rssGrowth = s1.rss - s0.rss
    out.heapGrowth = s1.heapUsed - s0.heapUsed

    // Idle window: nothing happens but what the library does on its own. locked's leaders write
    // their term records after their start; at 100 000 names that takes a moment, and is start-up
    // work, not idle cost: wait for every record first.
    await waitKeys(ctx.admin, `${prefix}/`, lib === 'locked' ? n + termRecords(names) : n, cap)
    await delay(ctx.quick ? 500 : 2000)
    const e0 = await etcdSnapshot(ctx)
    const h0 = await host.request('stats', {}, 60000)
    await delay(idleMs)
    const e1 = await etcdSnapshot(ctx)
    const h1 = await host.request('stats', {}, 60000)
    const seconds = ms(e0.t, e1.t) / 1000
    const perMethod = {}
    let total = 0
    for (const [method, value] of Object.entries(e1.received)) {
      const d = value - (e0.received[method] || 0)
      if (d > 0) {
        perMethod[method] = d / seconds
        total += d
      }
    }
    out.idle = {
      seconds,
      requestsPerSecond: total / seconds,
      perMethod,
      hostCpuPercent: (cpuSeconds(h1) - cpuSeconds(h0)) / (ms(h0.t, h1.t) / 1000) * 100,
      etcdCpuPercent: (e1.etcdCpu - e0.etcdCpu) / seconds * 100,
      rss: h1.rss,
      started: h1.started,
      leases: (await leaseCount(ctx.admin)) - leasesBefore,
      watchStreams: e1.watchStreams - before.watchStreams,
      watchers: e1.watchers - before.watchers,
      keepAliveStreams: (e1.open.LeaseKeepAlive || 0) - (before.open.LeaseKeepAlive || 0),
      grpcWatchStreams: (e1.open.Watch || 0) - (before.open.Watch || 0)
    }

    if (withCompetitor) {
      competitor = spawnHost(ctx, lib, { prefix, quiet: true })
      await competitor.ready()
      const creply = await competitor.request('register', { names, expectAll: true }, cap)
      try {
        // Two candidates per name, and for locked the leader's term records (one per bucket).
        await waitKeys(ctx.admin, `${prefix}/`, 2 * n + (lib === 'locked' ? termRecords(names) : 0), cap)
      } catch (err) {
        if (!(err instanceof TimeoutError)) throw err
        out.competitorDidNotFinish = `competitor not queued on all ${n} names within ${cap / 1000} s`
        return out
      }
      out.competitorQueued = ms(creply.t0, now())
      await delay(ctx.quick ? 300 : 1000)
      const mark = competitor.mark()
      const closed = await host.request('close', {}, cap)
      out.close = ms(closed.t0, closed.t1)
      try {
        const all = await competitor.waitEvent('allStarted', undefined, cap)
        out.takeover = ms(closed.t0, all.t)
        const first = await competitor.waitEventAfter(mark, 'firstStart', undefined, 1000).catch(() => null)
        if (first) out.takeoverFirst = ms(closed.t0, first.t)
      } catch (err) {
        if (!(err instanceof TimeoutError)) throw err
        const s = await competitor.request('stats', {}, 30000).catch(() => null)
        out.takeoverDidNotFinish = `did not finish within ${cap / 1000} s (${s ? s.started : '?'} of ${n} started)`
      }
      const cs = await competitor.request('stats', {}, 30000).catch(() => null)
      if (cs && cs.recampaigns) out.recampaigns = cs.recampaigns
    }
    return out
  } finally {
    const errs = [...(host ? host.errors : []), ...(competitor ? competitor.errors : [])]
    out.errors = errs.length
    if (errs.length) out.firstError = errs[0].message
    await stopAll([host, competitor])
  }
}

// ---- balance ---------------------------------------------------------------------------------

/** How long a leader leads before it hands over to the preferred candidate, in the balance bench. */
const BALANCE_MIN_TERM_MS = 1000

/**
 * locked(hosts, { balance: true }), locked only (etcd3 has nothing like it): 1000 names, lockers
 * joining one by one up to four, then one of them SIGKILLed. After each step: how long until the
 * spread settled (its last start; settled means no start or stop for minTermMs + 2 s), each
 * locker's share against N/M, the names that moved (a start on a locker other than the name's
 * leader before the step) against the fewest possible (the names the joiner leads after the step,
 * or the names the killed locker led), and the moves in the quiet period after settling.
 */
async function balance (ctx) {
  const n = ctx.quick ? 50 : 1000
  const quietMs = ctx.quick ? 3000 : 30000
  const prefix = unique('bench-balance')
  const names = Array.from({ length: n }, (_, i) => `job${i}`)
  const hosts = []
  const steps = []
  const settleQuietMs = BALANCE_MIN_TERM_MS + 2000
  const leaders = () => {
    const led = new Map()
    for (const h of hosts) {
      if (h.exited) continue
      const leading = new Set()
      for (const e of h.events) {
        if (e.type === 'start') leading.add(e.name)
        else if (e.type === 'stop') leading.delete(e.name)
      }
      for (const name of leading) led.set(name, h)
    }
    return led
  }
  const lastEventAt = () => hosts.reduce((t, h) => h.events.reduce((u, e) => ((e.type === 'start' || e.type === 'stop') && e.t > u ? e.t : u), t), 0n)
  // Resolves once every name has a leader and nothing moved for settleQuietMs; bounded.
  async function settled (t0, timeoutMs) {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      await delay(100)
      const last = lastEventAt()
      if (leaders().size === n && last > t0 && ms(last, now()) >= settleQuietMs) return last
    }
    throw new Error(`balance: the spread did not settle within ${timeoutMs} ms`)
  }
  async function step (label, act, minimumOf) {
    const before = leaders()
    const marks = hosts.map((h) => h.mark())
    const t0 = now()
    const victimLed = await act()
    const last = await settled(t0, 60000)
    const after = leaders()
    const live = hosts.filter((h) => !h.exited)
    let moves = 0
    hosts.forEach((h, i) => {
      for (const e of h.events.slice(marks[i] ?? 0)) if (e.type === 'start' && before.has(e.name) && e.t > t0) moves++
    })
    const shares = live.map((h) => [...after.values()].filter((x) => x === h).length)
    const settleMarks = hosts.map((h) => h.mark())
    await delay(quietMs)
    const movesAfter = hosts.reduce((k, h, i) => k + h.events.slice(settleMarks[i]).filter((e) => e.type === 'start' || e.type === 'stop').length, 0)
    const minimum = minimumOf(after, victimLed)
    steps.push({ label, lockers: live.length, settleMs: ms(t0, last), shares, fair: n / live.length, moves, minimum, movesAfter, quietMs })
    ctx.log(`balance ${label}: settled in ${ms(t0, last).toFixed(0)} ms, shares ${shares.join('/')}, moved ${moves} (fewest ${minimum}), ${movesAfter} moves in the ${quietMs / 1000} s after`)
  }
  try {
    for (let i = 0; i < 4; i++) {
      const h = spawnHost(ctx, 'locked', { prefix, balance: true, minTermMs: BALANCE_MIN_TERM_MS })
      await h.ready()
      hosts.push(h)
      await step(`locker ${i + 1} joins`, async () => { await h.request('register', { names }, 60000) },
        (after) => (i === 0 ? 0 : [...after.values()].filter((x) => x === h).length))
    }
    const victim = hosts[1]
    await step('one of 4 SIGKILLed', async () => {
      const led = [...leaders().values()].filter((x) => x === victim).length
      victim.signal('SIGKILL')
      await new Promise((resolve) => { const t = setInterval(() => { if (victim.exited) { clearInterval(t); resolve() } }, 10) })
      return led
    }, (after, victimLed) => victimLed)
  } finally {
    await stopAll(hosts)
  }
  return { names: n, minTermMs: BALANCE_MIN_TERM_MS, ttl: 5, steps }
}

module.exports = { balance, floor, firstElection, handoff, handover, handoffUnderLoad, crashFailover, crashGuardian, GUARDIAN_TTL, pause, idleAndScale, cleanEtcd, waitNoLeases }
