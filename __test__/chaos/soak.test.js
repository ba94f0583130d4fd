'use strict'
// Chaos: a randomized soak. Several host processes compete for several
// names on a 3-member etcd cluster, each host behind its own TCP proxies (one per member), while
// random faults (and handovers and pauses among them) are injected for a bounded time (CHAOS_SOAK_MS, default
// 100 s), then everything heals and stays quiet. Two of the hosts balance and the hosts have
// different priorities on one name, so leaders also hand over, and pass the lead on when elected,
// to the preferred candidate throughout. Checked on the shared hrtime timeline:
// - the invariant: no two hosts lead one name at the same instant. Three overlaps are not the
//   library's to prevent and are checked differently: a host frozen by SIGSTOP (it must stop
//   within RESUME_PROMPT_MS of running time after SIGCONT, and runs fn again only after a new
//   start); a leader whose lease or key an operator removed from outside, when that removal took
//   effect on the key of its term (old leader and successor learn of it from the same etcd watch;
//   the old one must stop within OUTSIDE_PROMPT_MS, for the reason the removal gives); and etcd's
//   own stale revoke after a frozen raft leader continues (see below: only with etcd's record);
// - start and stop alternate on every host, and fn runs once in each term (after a start, before
//   the stop);
// - quiet: every name has exactly one leader within TTL + 2 s of the end of the last fault, and it
//   holds the lowest key;
// - after close() on every host: no key under the prefix and no lease left in etcd.
// The seed is printed: CHAOS_SEED=<seed> replays the same sequence of decisions (timings differ).
// Exact figures go to the diagnostics as '# metric {...}' lines, the fault log as '# fault' lines.
//
// The test itself reads as the scenario; SoakRun holds the run's state and carries out its parts:
// the faults, the last blow, the checks of the quiet and of the whole timeline, the report.

const { describe, it, after } = require('node:test')
const assert = require('node:assert')
const crypto = require('node:crypto')
const { startEtcd } = require('../helpers/etcd')
const { startProxy, closeProxies } = require('../helpers/proxy')
const { spawnHost, killAll, now, ms, formatTimeline, leadershipTerms, leadershipOverlaps, assertStartStopAlternate } = require('../helpers/hosts')
const { uniquePrefix, quietWindow, seededRandom, metric, marginMs, stopDelayMs, RESUME_PROMPT_MS, OUTSIDE_PROMPT_MS } = require('../helpers/util')
const { leadsNow, strayFns } = require('./common')

const SOAK_MS = Number(process.env.CHAOS_SOAK_MS || 100000)
const SEED = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : crypto.randomInt(1, 2 ** 31)
const TTL = 3
const HOSTS = 4
const NAMES = ['n0', 'n1', 'n2']
const MAX_CONCURRENT_FAULTS = 2
// etcd's stale revoke after a frozen raft leader continues: its lessor looks for expired leases
// every 500 ms and proposes their revocation at once, before it hears of the new raft term.
const STALE_REVOKE_MS = 1000
const LEASE_EXPIRED_METRIC = 'etcd_debugging_server_lease_expired_total'
const PROXY_FAULTS = ['partition', 'reset', 'lost-answers', 'member-link']
// The last blow, at the host that leads most.
const FINAL = ['sigkill', 'sigkill', 'partition', 'sigstop']

// Why a handover the soak asks for may be refused: the host no longer leads that name, there is
// no other candidate or no such one, a fault cut the handover short, or etcd was away.
const HANDOVER_REFUSALS = new Set(['NOT_LEADER', 'NOT_A_CANDIDATE', 'NO_CANDIDATE', 'HANDOVER_BLOCKED',
  'HANDOVER_INTERRUPTED', 'HANDOVER_IN_PROGRESS', 'REMOVED', 'LOCKER_CLOSED', 'ETCD_UNAVAILABLE', 'LEASE_NOT_FOUND'])
// A handover the soak asks for may be refused for a reason the library names (the host does not
// lead any more, a fault cut it short): that is an answer, not a command error.
const refusedHandover = (e) => HANDOVER_REFUSALS.has(e.code) && /: handover\(/.test(e.message)

const S = (x) => x * 1000
const NS = (x) => BigInt(Math.round(x)) * 1_000_000n

let etcd

after(async () => {
  await killAll()
  await closeProxies()
  if (etcd) await etcd.close()
})

describe('chaos: randomized soak', { timeout: SOAK_MS + 240000 }, () => {
  it(`random faults for ${Math.round(SOAK_MS / 1000)} s, then quiet: one leader at a time, one leader per name, nothing left behind`, async (t) => {
    t.diagnostic(`seed ${SEED} (replay: CHAOS_SEED=${SEED} npm run test:chaos)`)
    process.stderr.write(`chaos soak: seed ${SEED}\n`)
    const run = new SoakRun(t, SEED)
    etcd = await startEtcd({ members: 3 })
    await run.start(etcd)
    await run.injectFaults()
    await run.lastBlow()
    await run.checkHealed()
    await run.checkQuiet()
    // The invariant over the whole run.
    run.checkStartStopAlternate()
    run.checkOverlaps()
    run.checkNoStaleStarts()
    run.checkResumedStops()
    run.checkDeadlineStops()
    run.checkHosts()
    await run.closeAll()
    run.report()
  })
})

// The time host h could run between two instants: the span minus the parts it was frozen. A
// host frozen again before it had the time to stop is judged on its running time after
// SIGCONT, however many pauses follow.
function runningMs (h, from, to) {
  let frozen = 0n
  for (const q of h.pauses) {
    const a = q.at > from ? q.at : from
    const qEnd = q.resumedAt === null ? to : q.resumedAt
    const b = qEnd < to ? qEnd : to
    if (b > a) frozen += b - a
  }
  return ms(to - from - frozen)
}

const allProxies = (slot, mode, direction) => { for (const p of slot.proxies) p.mode(mode, direction) }
const maxOf = (list, f) => list.reduce((m, x) => Math.max(m, f(x)), 0)

// The faults, with their weights and what each needs: a host (slot), etcd to itself (etcd), or a
// key of a host under no other fault (outside: an operator's etcdctl). dur and pick draw the
// fault's duration and target from the run's seeded stream; run(r, f, slot, kv) injects and heals.
const KINDS = [
  { kind: 'partition', weight: 3, slot: true, dur: (r) => r.between(S(TTL) * 0.5, S(TTL) * 2.5), run: async (r, f, slot) => { allProxies(slot, 'blackhole'); await quietWindow(f.duration); allProxies(slot, 'pass') } },
  { kind: 'reset', weight: 2, slot: true, dur: (r) => r.between(S(TTL) * 0.5, S(TTL) * 2), run: async (r, f, slot) => { allProxies(slot, 'reset'); await quietWindow(f.duration); allProxies(slot, 'pass') } },
  { kind: 'lost-answers', weight: 1, slot: true, dur: (r) => r.between(S(TTL) * 0.5, S(TTL) * 2), run: async (r, f, slot) => { allProxies(slot, 'blackhole', 'down'); await quietWindow(f.duration); allProxies(slot, 'pass') } },
  {
    kind: 'member-link',
    weight: 2,
    slot: true,
    dur: (r) => r.between(S(TTL), S(TTL) * 3),
    pick: (r) => r.rnd.int(0, r.etcd.members.length - 1),
    run: async (r, f, slot) => {
      const p = slot.proxies[f.choice]
      f.detail = `to ${p.target}`
      p.mode('blackhole')
      await quietWindow(f.duration)
      p.mode('pass')
    }
  },
  { kind: 'sigstop', weight: 4, slot: true, dur: (r) => r.between(S(TTL) * 0.3, S(TTL) * 2.5), run: async (r, f, slot) => { f.host = slot.host; slot.host.pause(); await quietWindow(f.duration); slot.host.resume() } },
  {
    kind: 'sigkill',
    weight: 2,
    slot: true,
    dur: (r) => r.between(0, 2000),
    run: async (r, f, slot) => {
      f.host = slot.host
      slot.host.kill('SIGKILL')
      await slot.host.exited
      await quietWindow(f.duration)
      const h = r.spawn(slot)
      f.detail = `respawned as ${h.label}`
      await h.ready
    }
  },
  {
    kind: 'member-kill',
    weight: 2,
    etcd: true,
    dur: (r) => r.between(2000, 6000),
    pick: (r) => r.rnd.chance(0.5) ? 'raft-leader' : r.rnd.int(0, r.etcd.members.length - 1),
    run: async (r, f) => {
      const m = f.choice === 'raft-leader' ? await r.etcd.leader() : r.etcd.members[f.choice]
      f.detail = `${m.name}${f.choice === 'raft-leader' ? ' (raft leader)' : ''}`
      await m.kill()
      await quietWindow(f.duration)
      await m.start()
      await r.etcd.settled()
    }
  },
  // Not a fault but an operation among them: the host hands a name over (mostly one it leads),
  // to the next in line or to another host, while other faults go on.
  {
    kind: 'handover',
    weight: 4,
    slot: true,
    pick: (r) => ({ name: r.rnd.int(0, NAMES.length - 1), to: r.rnd.chance(0.5) ? null : r.rnd.int(0, HOSTS - 2) }),
    run: async (r, f, slot) => {
      const h = slot.host
      const name = NAMES.find((n) => leadsNow(h, n)) || NAMES[f.choice.name]
      const others = r.slots.filter((o) => o !== slot && o.host.alive && o.host.id)
      const target = f.choice.to === null || !others.length ? null : others[f.choice.to % others.length].host
      f.detail = `${name} of ${h.label} to ${target ? target.label : 'the next in line'}`
      const since = h.mark()
      h.send(target ? { cmd: 'handover', name, to: target.id } : { cmd: 'handover', name })
      // Answered within the wait for candidates that step aside (5 s), or the host died meanwhile.
      const answer = await h.waitFor((e) => e.name === name && (e.ev === 'handedOver' || (e.ev === 'error' && e.scope === 'command')), 10000, `${h.label}'s handover answered`, { since }).catch(() => null)
      f.detail += answer ? (answer.ev === 'handedOver' ? ` -> ${answer.leader}` : ` refused: ${answer.code}`) : ' (no answer)'
    }
  },
  // Also an operation: the host pauses a name (mostly one it leads: the next in line, or the
  // preferred candidate, takes over) and resumes it after a while, while other faults go on.
  {
    kind: 'standby',
    weight: 2,
    slot: true,
    dur: (r) => r.between(500, S(TTL) * 2),
    pick: (r) => r.rnd.int(0, NAMES.length - 1),
    run: async (r, f, slot) => {
      const h = slot.host
      const name = NAMES.find((n) => leadsNow(h, n)) || NAMES[f.choice]
      f.detail = `${name} of ${h.label}`
      h.send({ cmd: 'pause', name })
      await quietWindow(f.duration)
      h.send({ cmd: 'resume', name })
    }
  },
  { kind: 'member-pause', weight: 1, etcd: true, dur: (r) => r.between(1000, 4000), pick: (r) => r.rnd.chance(0.5) ? 'raft-leader' : r.rnd.int(0, r.etcd.members.length - 1), run: pauseMember },
  // An operator revokes a host's lease (every key of that host goes at once).
  {
    kind: 'revoke',
    weight: 2,
    etcd: true,
    outside: true,
    run: async (r, f, slot, kv) => {
      f.host = slot.host
      f.detail = `lease ${kv.leaseHex} of ${slot.host.label}`
      // Keys bound to the revoked lease were created before this revision: after the revoke,
      // a start of this host with such a token would be a start on a stale key.
      f.revisionBefore = (await r.etcd.live()[0].status()).revision
      f.begin = now()
      // Only a revoke etcd confirmed counts (the lease may have been replaced meanwhile).
      f.effective = await r.etcd.revoke(kv.leaseHex).then(() => true, (err) => { f.detail += ` (failed: ${err.message.split('\n')[0]})`; return false })
      f.done = now()
      await quietWindow(2000)
    }
  },
  // An operator deletes one key: mostly the leader's.
  {
    kind: 'delete',
    weight: 2,
    etcd: true,
    outside: true,
    run: async (r, f, slot, kv) => {
      f.host = slot.host
      f.name = kv.key.slice(r.prefix.length + 1).split('/')[0]
      f.detail = `${kv.key} of ${slot.host.label}${kv.lowest ? ' (leader)' : ''}`
      f.staleToken = kv.createRevision
      f.begin = now()
      // Only a delete that removed the key counts (it may be gone already).
      const deleted = await r.etcd.del(kv.key)
      f.effective = deleted === 1
      if (!f.effective) f.detail += ` (deleted ${deleted})`
      f.done = now()
      await quietWindow(2000)
    }
  }
]
const TOTAL_WEIGHT = KINDS.reduce((s, k) => s + k.weight, 0)

// A member frozen (SIGSTOP), then continued; with etcd's own count of the leases it revoked as
// expired around it.
async function pauseMember (r, f) {
  const raftLeader = await r.etcd.leader()
  const m = f.choice === 'raft-leader' ? raftLeader : r.etcd.members[f.choice]
  f.wasRaftLeader = m === raftLeader
  f.detail = `${m.name}${f.wasRaftLeader ? ' (raft leader)' : ''}`
  // etcd's own count of the leases this member revoked as expired: after it continues as
  // a follower, any rise is the stale revoke of etcd issue 12528 (see the invariant below).
  f.expiredBefore = await m.metric(LEASE_EXPIRED_METRIC).catch(() => null)
  f.pausedAt = now()
  m.pause()
  await quietWindow(f.duration)
  f.resumedAt = now()
  m.resume()
  await r.etcd.settled()
  // Read etcd's count once the window for a stale revoke has passed (it is proposed within
  // STALE_REVOKE_MS of SIGCONT, and counted when it was applied).
  await quietWindow(Math.max(0, 2 * STALE_REVOKE_MS - ms(now() - f.resumedAt)))
  f.expiredAfter = await m.metric(LEASE_EXPIRED_METRIC).catch(() => null)
  if (f.expiredBefore === null || f.expiredAfter === null) f.detail += `, ${LEASE_EXPIRED_METRIC} unreadable`
  else if (f.expiredAfter > f.expiredBefore) f.detail += `, revoked ${f.expiredAfter - f.expiredBefore} lease(s) as expired after it continued`
}

// One soak: its hosts (slots), its faults, and what the checks found.
class SoakRun {
  constructor (t, seed) {
    this.t = t
    this.seed = seed
    this.rnd = seededRandom(seed)
    this.slots = [] // { index, proxies, host, generation }: a host respawned after SIGKILL keeps its slot
    this.allHosts = []
    this.faults = []
    this.busy = new Set() // 'etcd', 'slot<i>'
  }

  // Hosts, each behind one proxy per member, talking first to member i % 3; every host a
  // candidate for every name.
  async start (cluster) {
    this.etcd = cluster
    this.prefix = uniquePrefix('soak')
    this.t0 = now()
    const members = cluster.members
    for (let i = 0; i < HOSTS; i++) {
      const proxies = []
      for (let k = 0; k < members.length; k++) proxies.push(await startProxy(members[(i + k) % members.length].endpoint))
      const slot = { index: i, proxies, host: null, generation: 0 }
      this.slots.push(slot)
      this.spawn(slot)
    }
    await Promise.all(this.slots.map((s) => s.host.ready))
    for (const name of NAMES) {
      await cluster.waitKeys(`${this.prefix}/${name}/`, (kvs) => kvs.length === HOSTS, 15000, `every host a candidate for ${name}`)
    }
  }

  spawn (slot) {
    slot.generation++
    // Preferred leaders in play too: two hosts balance, and the hosts rank differently on n2.
    const preferences = { balance: slot.index < 2, minTermMs: 500, priorities: { n2: slot.index % 3 } }
    const h = spawnHost({ endpoints: slot.proxies.map((p) => p.endpoint), ttl: TTL, prefix: this.prefix, names: NAMES, ...preferences }, `H${slot.index}.${slot.generation}`)
    h.slotIndex = slot.index
    slot.host = h
    this.allHosts.push(h)
    return h
  }

  rel (x) { return `+${(ms(x - this.t0) / 1000).toFixed(2)}s` }
  between (lo, hi) { return Math.round(this.rnd.between(lo, hi)) }
  healthyMember () { return this.etcd.members.every((m) => m.running && !m.paused) }

  // ---- faults -------------------------------------------------------------------------------------
  // Random faults for SOAK_MS, at most MAX_CONCURRENT_FAULTS at once, each on a target under no
  // other fault.
  async injectFaults () {
    const running = new Set()
    this.soakStart = now()
    const soakUntil = Date.now() + SOAK_MS
    let iterations = 0
    while (Date.now() < soakUntil && iterations < 5000) {
      iterations++
      await quietWindow(this.rnd.int(200, 1500))
      if (running.size >= MAX_CONCURRENT_FAULTS || Date.now() >= soakUntil) continue
      const spec = this.pickKind()
      const tg = await this.target(spec)
      if (!tg) continue
      const f = { id: this.faults.length, kind: spec.kind, begin: now(), end: null, duration: tg.duration, choice: tg.choice, slot: tg.slot ? tg.slot.index : null, detail: '' }
      if (tg.slot && !spec.outside) f.leading = NAMES.filter((n) => leadsNow(tg.slot.host, n))
      this.faults.push(f)
      const locks = [...(spec.etcd || spec.outside ? ['etcd'] : []), ...(tg.slot ? [`slot${tg.slot.index}`] : [])]
      const p = spec.run(this, f, tg.slot, tg.kv)
        .catch((err) => { f.error = err })
        .finally(() => {
          f.end = now()
          for (const l of locks) this.busy.delete(l)
          running.delete(p)
        })
      running.add(p)
    }
    await Promise.all([...running])
  }

  pickKind () {
    let x = this.rnd() * TOTAL_WEIGHT
    for (const k of KINDS) {
      x -= k.weight
      if (x < 0) return k
    }
    return KINDS[KINDS.length - 1]
  }

  // Chooses the target of a fault and locks what it needs; null when that is busy. Every draw is
  // made up front, whatever the fault needs.
  async target (spec) {
    const choice = spec.pick ? spec.pick(this) : undefined
    const duration = spec.dur ? spec.dur(this) : 0
    const slotPick = this.rnd()
    const keyPick = this.rnd()
    const leaderKey = this.rnd.chance(0.7)
    const leaderSlot = this.rnd.chance(0.75)
    if (spec.etcd && (this.busy.has('etcd') || !this.healthyMember())) return null
    if (spec.slot) {
      // Mostly a host that leads something: that is where faults can hurt.
      const leading = this.slots.filter((sl) => sl.host.alive && NAMES.some((n) => leadsNow(sl.host, n)))
      const pool = leaderSlot && leading.length ? leading : this.slots
      const slot = pool[Math.floor(slotPick * pool.length)]
      if (this.busy.has(`slot${slot.index}`) || !slot.host.alive) return null
      this.busy.add(`slot${slot.index}`)
      return { slot, choice, duration }
    }
    if (spec.outside) {
      const c = await this.outsideTarget(keyPick, leaderKey)
      if (!c) return null
      this.busy.add('etcd')
      this.busy.add(`slot${c.slot.index}`)
      return { slot: c.slot, kv: c.kv, choice, duration }
    }
    this.busy.add('etcd')
    return { choice, duration }
  }

  // A key (or lease) of a host that is under no other fault: mostly (leaderKey) a leader's key.
  async outsideTarget (keyPick, leaderKey) {
    let kvs
    try { kvs = await this.etcd.keys(`${this.prefix}/`) } catch { return null }
    const byName = new Map()
    for (const kv of kvs) {
      // Candidates' keys only (`<prefix>/<name>/<lease>`), not the term records (`<prefix>//terms/…`).
      const rest = kv.key.slice(this.prefix.length + 1)
      if (rest.startsWith('/') || !rest.includes('/')) continue
      const name = rest.split('/')[0]
      if (!byName.has(name)) byName.set(name, [])
      byName.get(name).push(kv)
    }
    const candidates = []
    for (const list of byName.values()) list.forEach((kv, i) => candidates.push({ ...kv, lowest: i === 0 }))
    const eligible = candidates
      .map((kv) => ({ kv, slot: this.slots.find((s) => s.host.alive && s.host.id === kv.value) }))
      .filter((c) => c.slot && !this.busy.has(`slot${c.slot.index}`) && !c.slot.host.paused)
    if (eligible.length === 0) return null
    const leaders = eligible.filter((c) => c.kv.lowest)
    const pool = leaderKey && leaders.length ? leaders : eligible
    return pool[Math.floor(keyPick * pool.length)]
  }

  // A last blow at the host that leads most, so the quiet phase measures a real recovery.
  async lastBlow () {
    const finalKind = FINAL[this.rnd.int(0, FINAL.length - 1)]
    const finalDuration = finalKind === 'sigkill' ? this.between(0, 1000) : this.between(S(TTL) * 1.2, S(TTL) * 2)
    const leadCount = (sl) => NAMES.filter((n) => leadsNow(sl.host, n)).length
    const topSlot = this.slots.reduce((best, sl) => (leadCount(sl) > leadCount(best) ? sl : best), this.slots[0])
    const spec = KINDS.find((k) => k.kind === finalKind)
    const f = { id: this.faults.length, kind: finalKind, begin: now(), end: null, duration: finalDuration, slot: topSlot.index, detail: '', last: true, leading: NAMES.filter((n) => leadsNow(topSlot.host, n)) }
    this.faults.push(f)
    await spec.run(this, f, topSlot).catch((err) => { f.error = err })
    f.end = now()
    this.soakEnd = now()
  }

  // ---- the quiet ----------------------------------------------------------------------------------
  // Nothing is left to heal (checked), and every fault was injected and healed; the fault log.
  async checkHealed () {
    const { faults } = this
    const leftovers = [
      ...this.slots.flatMap((sl) => sl.proxies).filter((p) => p.mode() !== 'pass').map((p) => `proxy to ${p.target} in ${p.mode()}`),
      ...this.slots.filter((sl) => sl.host.paused || !sl.host.alive).map((sl) => `${sl.host.label} paused or dead`),
      ...this.etcd.members.filter((m) => m.paused || !m.running).map((m) => `${m.name} paused or down`)
    ]
    assert.deepStrictEqual(leftovers, [], 'every fault healed itself')
    this.quietFrom = faults.reduce((x, f) => (f.end > x ? f.end : x), this.soakStart)
    await this.etcd.settled()

    const rel = (x) => this.rel(x)
    this.faultLog = faults.map((f) => `${rel(f.begin)}..${f.end ? rel(f.end) : '?'} ${f.kind}${f.slot !== null ? ` H${f.slot}` : ''}${f.last ? ' (last blow)' : ''} ${[f.leading && f.leading.length ? `leading ${f.leading.join(',')}` : '', f.detail].filter(Boolean).join(', ')}${f.duration ? ` (${f.duration} ms)` : ''}${f.error ? ` ERROR ${f.error.message}` : ''}`)
    for (const line of this.faultLog) this.t.diagnostic(`fault ${line}`)
    const counts = {}
    for (const f of faults) counts[f.kind] = (counts[f.kind] || 0) + 1
    this.t.diagnostic(`${faults.length} faults in ${(ms(this.soakEnd - this.soakStart) / 1000).toFixed(0)} s: ${JSON.stringify(counts)}; quiet from ${rel(this.quietFrom)}`)
    const failedFaults = faults.filter((f) => f.error)
    assert.deepStrictEqual(failedFaults.map((f) => `${f.kind}: ${f.error.message}`), [], 'every fault was injected and healed')
    assert.ok(faults.length >= 10, `too few faults injected (${faults.length})`)
  }

  // Every name has exactly one leader TTL + 2 s after the last fault ended, at the lowest key, and
  // it stays so for a while: no start and no stop at all.
  async checkQuiet () {
    const { quietFrom } = this
    const checkAt = quietFrom + NS(S(TTL + 2))
    await quietWindow(Math.max(0, ms(checkAt - now())) + 500)
    const window = (from, to) => (e) => NAMES.includes(e.name) && e.t >= from && e.t <= to
    this.toLeader = {}
    for (const name of NAMES) {
      const leading = leadershipTerms(this.allHosts, name).filter((x) => x.start <= checkAt && (x.end === null || x.end > checkAt))
      assert.strictEqual(leading.length, 1, `${name}: ${leading.length} leaders ${TTL + 2} s after the last fault (seed ${SEED})\n${formatTimeline(this.allHosts, window(quietFrom - 10_000_000_000n, now()), this.t0)}\nfaults:\n  ${this.faultsNear(quietFrom)}`)
      this.toLeader[name] = Math.max(0, ms(leading[0].start - quietFrom))
      const kvs = await this.etcd.keys(`${this.prefix}/${name}/`)
      assert.strictEqual(kvs[0].value, leading[0].host.id, `${name}: the leader holds the lowest key`)
      assert.strictEqual(leading[0].token, kvs[0].createRevision, `${name}: the token is the lowest key's create revision`)
    }
    const last = this.faults[this.faults.length - 1]
    this.fromBlow = {}
    for (const name of NAMES) {
      const leading = leadershipTerms(this.allHosts, name).find((x) => x.start <= checkAt && (x.end === null || x.end > checkAt))
      this.fromBlow[name] = Math.max(0, ms(leading.start - last.begin))
    }
    this.t.diagnostic(`quiet: leader of each name ${JSON.stringify(this.toLeader)} ms after the last fault ended, ${JSON.stringify(this.fromBlow)} ms after the last blow began`)
    await quietWindow(2000)
    this.settledAt = now()
    const churn = this.allHosts.flatMap((h) => h.events.filter((e) => (e.ev === 'start' || e.ev === 'stop') && e.t > checkAt))
    assert.deepStrictEqual(churn.map((e) => `${e.host} ${e.ev} ${e.name} ${e.reason || ''}`), [], `leadership changed in the quiet (seed ${SEED})`)
  }

  // The events of one name from 8 s before to 4 s after x, and the faults near x, for messages.
  around (x, name) {
    return formatTimeline(this.allHosts, (e) => (e.name === name || e.ev === 'exiting') && e.t >= x - 8_000_000_000n && e.t <= x + 4_000_000_000n, this.t0)
  }

  faultsNear (x) {
    return this.faults.filter((f) => f.begin <= x + 2_000_000_000n && (f.end === null || f.end >= x - 12_000_000_000n)).map((f) => this.faultLog[f.id]).join('\n  ')
  }

  // ---- the invariant over the whole run -----------------------------------------------------------
  checkStartStopAlternate () {
    for (const name of NAMES) {
      try {
        assertStartStopAlternate(this.allHosts, name)
      } catch (err) {
        err.message += ` (seed ${SEED})`
        throw err
      }
    }
  }

  // No two leaders at once, but for the three overlaps the library cannot prevent, each checked on
  // its own terms (excused: paused, outside, etcd).
  checkOverlaps () {
    this.excused = { paused: [], outside: [], etcd: [] }
    this.violations = []
    for (const name of NAMES) {
      for (const o of leadershipOverlaps(this.allHosts, name, { until: this.settledAt })) this.judgeOverlap(o, name)
    }
    const describeOverlap = (o) => `${o.name}: ${o.second.host.label} started at ${this.rel(o.from)} while ${o.first.host.label} led since ${this.rel(o.first.start)} (until ${o.first.end === null ? 'never stopped' : this.rel(o.first.end) + ' ' + (o.first.reason || o.first.endBy)}), overlap ${o.ms.toFixed(1)} ms${o.evidence ? ` ${JSON.stringify(o.evidence)}` : ''}`
    assert.deepStrictEqual(this.violations.map(describeOverlap), [],
      `two leaders at once (seed ${SEED})\n${this.violations.slice(0, 2).map((o) => `${describeOverlap(o)}\n${this.around(o.from, o.name)}\nfaults around:\n  ${this.faultsNear(o.from)}`).join('\n')}`)
  }

  // An operator's removal that took effect on the key of this term: a delete of that very key
  // (stop 'key-deleted'), or a confirmed revoke of the lease the key was created on before it
  // (stop 'key-deleted' or 'lease-lost', whichever the host heard of first).
  outsideOf (term, name) {
    return this.faults.filter((f) => f.host === term.host && f.begin && f.done && f.effective && (
      (f.kind === 'delete' && f.name === name && term.token === f.staleToken && term.reason === 'key-deleted') ||
      (f.kind === 'revoke' && term.token <= f.revisionBefore && ['key-deleted', 'lease-lost'].includes(term.reason))))
  }

  // One overlap: excused as one of the three kinds, or a violation.
  judgeOverlap (o, name) {
    const { first } = o
    const pause = first.host.pauses.find((p) => p.at > first.start && p.at <= o.from && p.resumedAt !== null &&
      first.end !== null && runningMs(first.host, p.resumedAt, first.end) <= RESUME_PROMPT_MS)
    if (pause) { this.excused.paused.push({ ...o, name, afterResumeMs: runningMs(first.host, pause.resumedAt, first.end) }); return }
    // (The term may have begun while the operator's command was under way, before etcd applied it.)
    const op = this.outsideOf(first, name).find((f) => first.start < f.done && f.begin <= o.from &&
      first.end <= f.done + NS(OUTSIDE_PROMPT_MS))
    if (op) { this.excused.outside.push({ ...o, name, kind: op.kind }); return }
    // etcd itself revoking a lease that was being renewed: a raft leader frozen for longer than
    // the TTL proposes, when it continues, the revocation of every lease it still believes
    // expired; being a follower by then, it forwards the proposal to the new leader, which
    // commits it (etcd issues #12528 / #15247, fixed upstream by etcd PR #16822; the Debian
    // etcd 3.4.23 used here predates it). To the hosts this is exactly an outside revoke. Only
    // that signature, with evidence on both sides, is accepted here:
    // - the frozen member was the raft leader, frozen long enough for a lease renewed just
    //   before (keepalives go every TTL/3) to look expired to it: 2/3 of the TTL;
    // - the successor started within STALE_REVOKE_MS of that member's SIGCONT;
    // - etcd's own count of leases revoked as expired by that member rose after it continued
    //   (it was a follower then: a revoke by the raft leader is not counted there);
    // - the old leader's own deadline had not passed when the successor started (its lease had
    //   been renewed: this is not a late step-down), and nothing cut it off from etcd (no fault
    //   on its own proxies in the TTL before), and it stopped for the reason a revoke gives,
    //   at once.
    const hostFaulted = this.faults.some((f) => PROXY_FAULTS.includes(f.kind) && f.slot === first.host.slotIndex &&
      f.begin <= (first.end === null ? this.settledAt : first.end) && (f.end === null || f.end >= o.from - NS(S(TTL))))
    const stopEvent = first.stopEvent
    const deadline = stopEvent && typeof stopEvent.sinceRenewalMs === 'number'
      ? stopEvent.t - NS(stopEvent.sinceRenewalMs) + NS(S(TTL) - marginMs(TTL))
      : null
    const stale = this.faults.find((f) => f.kind === 'member-pause' && f.wasRaftLeader && f.resumedAt && f.pausedAt &&
      ms(f.resumedAt - f.pausedAt) >= (2 * S(TTL)) / 3 &&
      o.from >= f.resumedAt && o.from <= f.resumedAt + NS(STALE_REVOKE_MS) &&
      f.expiredBefore !== null && f.expiredAfter !== null && f.expiredAfter > f.expiredBefore)
    if (stale && !hostFaulted && deadline !== null && deadline > o.from &&
      ['key-deleted', 'lease-lost'].includes(first.reason) && first.end <= o.from + NS(OUTSIDE_PROMPT_MS)) {
      this.excused.etcd.push({ ...o, name, afterResumeMs: ms(o.from - stale.resumedAt), deadlineAfterMs: ms(deadline - o.from) })
      return
    }
    this.violations.push({ ...o, name, evidence: { staleRevokeFault: stale ? stale.id : null, hostFaulted, deadlineAfterSuccessorMs: deadline === null ? null : ms(deadline - o.from) } })
  }

  // Never a start on a key an operator removed (pitfall 2 of docs/pitfalls.md): after a revoke,
  // no start with a token from before it; after a delete, no start on the deleted key.
  checkNoStaleStarts () {
    for (const f of this.faults.filter((x) => x.done && x.effective && (x.kind === 'revoke' || x.kind === 'delete'))) {
      const stale = f.host.events.filter((e) => e.ev === 'start' && e.t > f.done &&
        (f.kind === 'revoke' ? e.token <= f.revisionBefore : e.name === f.name && e.token === f.staleToken))
      assert.deepStrictEqual(stale.map((e) => `${e.host} start ${e.name} token ${e.token} at ${this.rel(e.t)}`), [], `start on a stale key after ${this.faultLog[f.id]} (seed ${SEED})`)
    }
  }

  // A host frozen while leading, for at least TTL - margin (so its deadline passed: its last
  // answered keepalive was sent before the freeze) or while another host started, stops at once
  // when it continues: within RESUME_PROMPT_MS of running time, even when frozen again meanwhile.
  checkResumedStops () {
    this.resumedStops = []
    for (const h of this.allHosts) {
      for (const p of h.pauses) {
        if (p.resumedAt === null) continue
        for (const name of NAMES) {
          const term = leadershipTerms([h], name).find((x) => x.start < p.at && (x.end === null || x.end > p.at))
          if (!term) continue
          const othersStarted = this.allHosts.some((g) => g !== h && g.events.some((e) => e.ev === 'start' && e.name === name && e.t > p.at && e.t < p.resumedAt))
          if (!othersStarted && ms(p.resumedAt - p.at) < S(TTL) - marginMs(TTL)) continue
          const after = term.end === null ? Infinity : runningMs(h, p.resumedAt, term.end)
          this.resumedStops.push(after)
          assert.ok(after <= RESUME_PROMPT_MS, `${h.label} frozen ${ms(p.resumedAt - p.at).toFixed(0)} ms while leading ${name}: stopped after ${after.toFixed(1)} ms of running time after SIGCONT (seed ${SEED})\n${this.around(p.resumedAt, name)}`)
        }
      }
    }
  }

  // Every 'deadline' stop comes at the deadline of the host's last answered keepalive (its send
  // time + TTL - margin), not before, and within stopDelayMs of running time after it (so a
  // host frozen across its deadline stops as soon as it runs again). The lease figures are read
  // when the stop reaches the application: if a keepalive was answered in between (etcd
  // reachable again, or the addon's thread ran first after SIGCONT), the session is valid again
  // (validForMs > 0), and that keepalive must have been sent after the deadline, within the
  // same delay of the stop.
  checkDeadlineStops () {
    this.deadlineStops = []
    for (const h of this.allHosts) {
      for (const e of h.events.filter((x) => x.ev === 'stop' && x.reason === 'deadline')) {
        assert.strictEqual(typeof e.sinceRenewalMs, 'number', `${h.label}: lease figures on its stop at ${this.rel(e.t)}`)
        const sent = e.t - NS(e.sinceRenewalMs)
        const renewedSince = e.validForMs > 0
        const deadline = renewedSince ? sent : sent + NS(S(TTL) - marginMs(TTL))
        const lateMs = deadline <= e.t ? runningMs(h, deadline, e.t) : -ms(deadline - e.t)
        this.deadlineStops.push(lateMs)
        assert.ok(lateMs >= -1 && lateMs <= stopDelayMs(TTL), `${h.label} stopped ${e.name} ${lateMs.toFixed(1)} ms (running time) after ` +
          `${renewedSince ? 'a keepalive that renewed the lease after the deadline was sent' : 'its deadline'} ` +
          `(last answered keepalive sent ${e.sinceRenewalMs} ms before; TTL - margin = ${S(TTL) - marginMs(TTL)} ms, allowed ${stopDelayMs(TTL)} ms) at ${this.rel(e.t)} (seed ${SEED})\n${this.around(e.t, e.name)}`)
      }
    }
  }

  // fn runs only inside a term of its host, once per term (start and stop alternate, checked
  // before); no host exited by itself or failed a command.
  checkHosts () {
    for (const h of this.allHosts) {
      for (const name of NAMES) {
        const stray = strayFns(h, name)[0]
        assert.ok(!stray, stray && `${h.label} ran fn of ${name} outside a term (or twice in one) at ${this.rel(stray.e.t)} (seed ${SEED})\n${formatTimeline([h], { name }, this.t0)}`)
      }
      const unexpected = h.exitInfo && h.killedAt === null
      assert.ok(!unexpected, `${h.label} exited by itself: ${JSON.stringify(h.exitInfo, (k, v) => typeof v === 'bigint' ? String(v) : v)}\n${h.stderr.slice(-2000)}`)
      assert.deepStrictEqual(h.find((e) => e.ev === 'error' && e.scope === 'command' && !refusedHandover(e)).map((e) => e.message), [], `${h.label}: command errors`)
    }
  }

  // ---- the end ------------------------------------------------------------------------------------
  // close() on every host: no key and no lease is left.
  async closeAll () {
    const live = this.slots.map((s) => s.host)
    const leasesBefore = await this.etcd.leases()
    const since = live.map((h) => h.mark())
    for (const h of live) h.send({ cmd: 'close' })
    for (const [i, h] of live.entries()) {
      // What close() answers; a handover asked for before it may be answered (refused) only now.
      const answer = (e) => e.ev === 'closed' || (e.ev === 'error' && e.scope === 'command' && !refusedHandover(e))
      const ev = await h.waitFor(answer, 15000, `${h.label} closed`, { since: since[i] })
      assert.strictEqual(ev.ev, 'closed', `${h.label} close(): ${ev.message}`)
    }
    this.keysLeft = await this.etcd.keys(`${this.prefix}/`)
    this.leasesLeft = await this.etcd.leases()
    const ttls = await Promise.all(this.leasesLeft.map(async (l) => `${l}: ${await this.etcd.leaseTtl(l).catch(() => '?')} s left`))
    assert.deepStrictEqual(this.keysLeft.map((kv) => kv.key), [], 'no key left under the prefix after close()')
    assert.deepStrictEqual(this.leasesLeft, [], `no lease left after close() (before close: ${leasesBefore.join(', ')}; left: ${ttls.join(', ')})`)
  }

  // The figures: the excused overlaps in words, everything as one metric line.
  report () {
    const { t, excused } = this
    const terms = NAMES.reduce((n, name) => n + leadershipTerms(this.allHosts, name).length, 0)
    if (excused.paused.length) t.diagnostic(`frozen-host overlaps: ${excused.paused.map((o) => `${o.name} ${o.ms.toFixed(0)} ms (stop ${o.afterResumeMs.toFixed(1)} ms after SIGCONT)`).join('; ')}`)
    if (excused.etcd.length) t.diagnostic(`leases revoked by a frozen etcd raft leader after it continued (etcd issue 12528): ${excused.etcd.map((o) => `${o.name} ${o.first.host.label}->${o.second.host.label} overlap ${o.ms.toFixed(1)} ms (successor ${o.afterResumeMs.toFixed(0)} ms after SIGCONT of the member, ${o.deadlineAfterMs.toFixed(0)} ms before the old leader's deadline)`).join('; ')}`)
    if (excused.outside.length) t.diagnostic(`outside-removal overlaps: ${excused.outside.map((o) => `${o.name} ${o.kind} ${o.ms.toFixed(1)} ms`).join('; ')}`)
    metric(t, 'random-soak', {
      seed: this.seed,
      soakMs: ms(this.soakEnd - this.soakStart),
      faults: this.faults.length,
      hostsSpawned: this.allHosts.length,
      terms,
      overlapMs: maxOf(this.violations, (o) => o.ms),
      frozenOverlaps: excused.paused.length,
      frozenOverlapMaxMs: maxOf(excused.paused, (o) => o.ms),
      frozenLeaders: this.resumedStops.length,
      resumedStopMaxMs: maxOf(this.resumedStops, (x) => x),
      deadlineStops: this.deadlineStops.length,
      deadlineStopLateMaxMs: maxOf(this.deadlineStops, (x) => x),
      outsideOverlaps: excused.outside.length,
      outsideOverlapMaxMs: maxOf(excused.outside, (o) => o.ms),
      etcdRevokeOverlaps: excused.etcd.length,
      etcdRevokeOverlapMaxMs: maxOf(excused.etcd, (o) => o.ms),
      lastBlow: this.faults[this.faults.length - 1].kind,
      faultEndToLeaderMs: Math.max(...Object.values(this.toLeader)),
      lastBlowToLeaderMs: Math.max(...Object.values(this.fromBlow)),
      keysLeft: this.keysLeft.length,
      leasesLeft: this.leasesLeft.length
    })
  }
}
