'use strict'
// Chaos: a randomized operation-level test. Like the soak, but the dice pick API
// operations as well as faults. HOSTS host processes (helpers/op-host.js), each behind its own TCP
// proxy to a single etcd member, share NAMES names. Each round runs a seeded sequence of
// operations (register; remove, awaited or not; re-register in the same tick as the remove; remove
// right after register, while the first campaign is in flight; close and reopen the locker,
// awaited or at once; a locked@2.x node's start and stop; term(); observe and unobserve;
// handover() to the next in line or to another host, from leaders and non-leaders alike; pause()
// and resume()), with priorities on some registrations and balance on two of the hosts, while
// proxy cuts (both ways, or only etcd's answers lost) and etcd freezes (SIGSTOP/SIGCONT of the
// etcd process) come and go, then everything heals and stays quiet. After each quiet period:
// (a) at most one leader per name at any instant on the shared hrtime timeline (and, checked at
//     the end, fn runs once per term, inside it);
// (b) every name with a registered candidate (not paused) has exactly one leader TTL + 2 s after
//     the quiet began (none without a candidate), holding the lowest key with its create revision as
//     token, and leadership does not change afterwards; every registration that is still meant to
//     be campaigning has its key; every leader is the candidate preferences pick (priority, then
//     balance), and every candidate's preference key says what its registration prefers;
// (c) no key in etcd belongs to a registration whose remove() (or its locker's close()) resolved,
//     a term record's line whose key still exists is in the record of that key's lease and names
//     the lowest key (a line may outlive its term for a while: readers match its token), and
//     every leader's term has its line; no
//     handover marker outlives its leader's term; a refused handover says why with a known code; term(),
//     observers, leader() and the 2.x nodes' id()/value() name the leader;
// then at the end:
// (e) with only one idle host left connected, etcd receives about one request per lease per
//     TTL/3 from it (its keepalives);
// (d) after every locker closed and every host exited, no key and no lease of ours remains.
// The exceptions the soak classifies do not arise here: no host is ever frozen, and with a single
// etcd member there is no raft leader change, so no frozen raft leader can revoke a lease that was
// renewed elsewhere (etcd #12528). Every overlap is a violation.
//
// Violations are collected, with the timeline of the name concerned, and reported together at the
// end, so one run shows every kind of failure it met. The seed is printed: CHAOS_SEED=<seed>
// replays the same operations and faults (the operations are chosen from what the test asked for,
// never from what happened, so timing cannot change the sequence; timings themselves differ).
// CHAOS_OPS_ROUNDS sets the number of rounds.
//
// The test itself reads as the scenario; OperationsRun holds the run's model and carries out its
// parts: a round (operations and faults), the checks after a quiet period, the end, the report.

const { describe, it, after } = require('node:test')
const assert = require('node:assert')
const crypto = require('node:crypto')
const path = require('node:path')
const { startEtcd, termLines } = require('../helpers/etcd')
const { startProxy, closeProxies } = require('../helpers/proxy')
const { spawnHost, killAll, now, ms, leadershipTerms, leadershipOverlaps } = require('../helpers/hosts')
const { uniquePrefix, quietWindow: sleep, until, seededRandom, metric } = require('../helpers/util')
const { leadsNow, strayFns } = require('./common')
const { preferredOf, priorityOf } = require('../helpers/preferences')

const SEED = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : crypto.randomInt(1, 2 ** 31)
const ROUNDS = Number(process.env.CHAOS_OPS_ROUNDS || 7)
const TTL = 3
const HOSTS = 4
const NAMES = Array.from({ length: 20 }, (_, i) => `n${String(i).padStart(2, '0')}`)
const V2 = 'v2' // the name the 2.x node's select/deselect carry on the timeline
const OPS_PER_ROUND = 24
const MIN_TERM_MS = 500
const FAULT_WINDOW_MS = 5000 // faults of a round begin within this long of its start
const OP_TIMEOUT_MS = 20000 // an awaited remove/close: etcd may be away for up to ~2 TTL
const IDLE_WINDOW_MS = 9000
const SCRIPT = path.join(__dirname, '..', 'helpers', 'op-host.js')

const S = (x) => x * 1000
const NS = (msValue) => BigInt(Math.round(msValue)) * 1_000_000n
const bump = (counter, key) => { counter[key] = (counter[key] || 0) + 1 }

let etcd

after(async () => {
  await killAll()
  await closeProxies()
  if (etcd) await etcd.close()
})

describe('chaos: randomized operations', { timeout: ROUNDS * 60000 + 120000 }, () => {
  it(`${ROUNDS} rounds of random API operations and faults, checked after each quiet period`, async (t) => {
    t.diagnostic(`seed ${SEED} (replay: CHAOS_SEED=${SEED} node --test __test__/chaos/operations.test.js)`)
    process.stderr.write(`chaos operations: seed ${SEED}\n`)
    const run = new OperationsRun(t, SEED)
    etcd = await startEtcd({ members: 1 })
    await run.start(etcd)
    await run.explainingFailure(async () => {
      for (let i = 1; i <= ROUNDS; i++) await run.round(i)
      // What follows depends on how the rounds went (which names are still registered).
      run.endRounds()
      const idle = await run.leaveOneHost()
      await run.checkIdleCost(idle)
      await run.closeLastHost(idle)
      run.checkFnOncePerTerm()
      run.checkHostsExited()
    })
    run.report()
  })
})

// Polls a condition of the test's own model (fed by host events) until it holds; false on timeout.
const waitUntil = (cond, timeoutMs) => until(cond, timeoutMs, 'a condition of the model', 25).then(() => true, () => false)

// etcd's gRPC messages received, by method, from its /metrics (plain HTTP, no gRPC of its own).
async function grpcReceived (member) {
  const byMethod = {}
  for (const [sample, value] of await member.metrics(3000)) {
    if (!sample.startsWith('grpc_server_msg_received_total{')) continue
    const method = /grpc_method="([^"]*)"/.exec(sample)
    const key = method ? method[1] : '?'
    byMethod[key] = (byMethod[key] || 0) + value
  }
  return byMethod
}

// The operations a host may be told to carry out, with their weights and when they make sense
// (judged on what the test asked for, never on what happened).
const OPS = [
  { kind: 'register', weight: 5, ok: (s) => s.intent.size < NAMES.length, run: (r, s) => r.register(s) },
  { kind: 'remove-awaited', weight: 2, ok: (s) => s.intent.size > 0, run: (r, s) => r.remove(s, 'remove-awaited') },
  { kind: 'remove', weight: 2, ok: (s) => s.intent.size > 0, run: (r, s) => r.remove(s, 'remove') },
  { kind: 'reregister-at-once', weight: 2, ok: (s) => s.intent.size > 0, run: (r, s) => r.reregisterAtOnce(s) },
  { kind: 'register-then-remove', weight: 1.5, ok: (s) => s.intent.size < NAMES.length, run: (r, s) => r.registerThenRemove(s) },
  { kind: 'close-then-reopen', weight: 0.5, ok: () => true, run: (r, s) => r.reopen(s, false) },
  { kind: 'reopen-at-once', weight: 0.5, ok: () => true, run: (r, s) => r.reopen(s, true) },
  { kind: 'node-start', weight: 1, ok: (s) => !s.node.intent, run: (r, s) => r.nodeStart(s) },
  { kind: 'node-stop', weight: 1, ok: (s) => s.node.intent, run: (r, s) => r.nodeStop(s) },
  { kind: 'term', weight: 1, ok: () => true, run: (r, s) => r.term(s) },
  { kind: 'observe', weight: 1, ok: (s) => s.observing.size < NAMES.length, run: (r, s) => r.observe(s) },
  { kind: 'unobserve', weight: 0.5, ok: (s) => s.observing.size > 0, run: (r, s) => r.unobserve(s) },
  { kind: 'handover', weight: 2, ok: (s) => s.intent.size > 0, run: (r, s) => r.handover(s) },
  { kind: 'pause', weight: 1, ok: (s) => [...s.intent.values()].some((r) => !r.paused), run: (r, s) => r.pause(s) },
  { kind: 'resume', weight: 1, ok: (s) => [...s.intent.values()].some((r) => r.paused), run: (r, s) => r.resume(s) }
]

// Why a handover may be refused in this test: not the leader (most are asked of candidates), no
// such candidate or nobody queued, a candidate that did not step aside in time or a handover cut
// short by a fault, remove() or close(), or etcd away.
const HANDOVER_REFUSALS = new Set(['NOT_LEADER', 'NOT_A_CANDIDATE', 'NO_CANDIDATE', 'HANDOVER_BLOCKED',
  'HANDOVER_INTERRUPTED', 'HANDOVER_IN_PROGRESS', 'REMOVED', 'LOCKER_CLOSED', 'ETCD_UNAVAILABLE', 'LEASE_NOT_FOUND'])

// A round's faults, drawn up front: offsets, kinds and durations come from the seed alone.
function drawFaults (rnd) {
  const list = []
  const n = rnd.int(2, 4)
  for (let k = 0; k < n; k++) {
    const offset = rnd.int(0, FAULT_WINDOW_MS)
    const kindPick = rnd()
    const slotPick = rnd.int(0, HOSTS - 1)
    const long = rnd.chance(0.3)
    const frac = rnd()
    let spec
    if (kindPick < 0.3) spec = { kind: 'cut', slot: slotPick, duration: Math.round(S(TTL) * (0.3 + 1.5 * frac)) }
    // etcd carries out the host's requests but the answers are lost: a campaign or a resign
    // that etcd applied while its sender believes it failed.
    else if (kindPick < 0.45) spec = { kind: 'lost-answers', slot: slotPick, duration: Math.round(S(TTL) * (0.3 + 1.2 * frac)) }
    else if (kindPick < 0.65) spec = { kind: 'reset', slot: slotPick, duration: Math.round(S(TTL) * (0.3 + 0.9 * frac)) }
    // etcd frozen: mostly shorter than the TTL (nobody should notice), sometimes longer.
    else spec = { kind: 'etcd-pause', slot: null, duration: Math.round(S(TTL) * (long ? 1.2 + 0.4 * frac : 0.3 + 0.5 * frac)) }
    spec.offset = offset
    // One fault at a time per proxy, and one etcd freeze at a time.
    const clash = list.some((f) => f.slot === spec.slot && f.offset < offset + spec.duration && offset < f.offset + f.duration)
    if (!clash) list.push(spec)
  }
  return list
}

// Every candidate key and term record under base, read in one range.
function parseKeys (kvs, base) {
  const candidates = new Map() // name -> [kv] in create order
  const records = termLines(kvs, base) // [{ name, token, key, leaseHex, ... }]
  const markers = new Map() // name -> kv
  const preferences = new Map() // name -> [kv]
  for (const kv of kvs) {
    const rest = kv.key.slice(base.length + 1)
    // `<base>//terms/<bucket>/<lease hex>`: a term record, read above.
    if (rest.startsWith('/terms/')) {
      kv.pathLease = rest.split('/').pop()
      if (kv.pathLease !== kv.leaseHex) records.push({ name: null, key: kv.key, leaseHex: kv.leaseHex, pathLease: kv.pathLease })
      continue
    }
    // `<base>//handover/<name>`: a handover's marker.
    if (rest.startsWith('/handover/')) { markers.set(rest.slice('/handover/'.length), kv); continue }
    // `<base>//prefer/<name>/<lease hex>`: a candidate's priority or balance.
    if (rest.startsWith('/prefer/')) {
      const [name, lease] = rest.slice('/prefer/'.length).split('/')
      kv.pathLease = lease
      if (!preferences.has(name)) preferences.set(name, [])
      preferences.get(name).push(kv)
      continue
    }
    const slash = rest.indexOf('/')
    if (slash < 0) continue // not a key of this version's layout; checkKeysBelong does not look at it
    const name = rest.slice(0, slash)
    kv.pathLease = rest.slice(slash + 1)
    if (!candidates.has(name)) candidates.set(name, [])
    candidates.get(name).push(kv)
  }
  return { candidates, records, markers, preferences }
}

// One run: the model (what the test asked for, and what the hosts reported), and its parts.
class OperationsRun {
  constructor (t, seed) {
    this.t = t
    this.seed = seed
    this.rndOps = seededRandom(seed)
    // Faults draw from their own stream: how many operations a round had cannot shift them.
    this.rndFaults = seededRandom((Math.imul(seed, 0x9e3779b1) ^ 0x5bd1e995) >>> 0)
    this.started = Date.now()
    this.regs = new Map() // reg -> { reg, slot, name, gen, state, sentAt, removeSentAt, removeHow, resolvedAt }
    this.nextReg = 1
    this.opLog = [] // { t, slot, name, text }
    this.faults = [] // { kind, slot, begin, end, duration, detail }
    this.violations = [] // { round, check, name, message, evidence }
    this.roundNo = 0
    this.counts = { ops: {}, faults: {}, errors: {} }
    this.opsOfRounds = 0
    this.slots = [] // one per host: its proxy, its lockers (gens), what it was asked to hold
    this.allHosts = []
    this.byLabel = new Map()
    this.termQueries = 0
    this.queryCount = 0
    this.reportedOverlaps = new Set()
  }

  // The hosts, each behind its own proxy to etcd's single member, with their first names.
  async start (cluster) {
    this.etcd = cluster
    this.member = cluster.members[0]
    this.prefix = uniquePrefix('ops')
    this.v2Path = `/${this.prefix}-v2`
    this.t0 = now()
    this.roundStart = this.t0
    for (let i = 0; i < HOSTS; i++) {
      const proxy = await startProxy(this.member.endpoint)
      const label = `H${i}`
      const slot = { index: i, label, proxy, host: null, gen: 1, gens: new Map(), intent: new Map(), observing: new Set(), node: { intent: false, actual: false, ever: false, starts: 0, stopSentAt: null, stopResolvedAt: null, n: 0 } }
      this.slots.push(slot)
      this.byLabel.set(label, slot)
      const initial = NAMES.filter(() => this.rndOps.chance(0.45)).map((name) => {
        const r = this.newReg(slot, name, 1, 'initial')
        slot.intent.set(name, r)
        return { name, reg: r.reg }
      })
      // The first two hosts balance; every host hands over to a preferred candidate after 500 ms.
      slot.balance = i < 2
      const config = { endpoints: [proxy.endpoint], ttl: TTL, prefix: this.prefix, v2Path: this.v2Path, nodeId: `${label}-node`, idBase: label, names: initial, balance: slot.balance, minTermMs: MIN_TERM_MS }
      slot.host = spawnHost(config, label, { script: SCRIPT, onEvent: (e, host) => this.onEvent(e, host) })
      this.allHosts.push(slot.host)
    }
    await Promise.all(this.slots.map((s) => s.host.ready))
  }

  // One round: its faults come and go while the operations run, then everything settles and the
  // quiet period is checked.
  async round (i) {
    this.roundNo = i
    this.roundStart = now()
    const running = drawFaults(this.rndFaults).map((spec) => this.runFault(spec))
    for (let k = 0; k < OPS_PER_ROUND; k++) {
      await this.runOp()
      // Now and then several operations back to back, so that they cross in the library.
      if (!this.rndOps.chance(0.3)) await sleep(this.rndOps.int(30, 350))
    }
    await Promise.all(running)
    const broken = this.faults.filter((f) => f.error)
    if (broken.length) throw new Error(`faults not injected or healed: ${broken.map((f) => `${f.kind} ${f.detail}: ${f.error}`).join('; ')}`)
    const quietFrom = now()
    await this.settle()
    await this.quietChecks(quietFrom)
    this.t.diagnostic(`round ${i}: ${this.faults.filter((f) => f.begin >= this.roundStart).map((f) => `${f.kind} ${f.detail} ${f.duration} ms`).join(', ')}; violations so far ${this.violations.length}`)
  }

  endRounds () {
    this.roundNo = 'end'
    this.opsOfRounds = this.opLog.length
  }

  // Runs fn; an error it throws says the seed and the round, and lists the violations found before.
  async explainingFailure (fn) {
    try {
      await fn()
    } catch (err) {
      const found = this.violations.map((v) => `  [round ${v.round}] (${v.check}) ${v.name || ''}: ${v.message}`).join('\n')
      err.message = `seed ${this.seed}, round ${this.roundNo}: ${err.message}${found ? `\nviolations found before:\n${found}` : ''}`
      throw err
    }
  }

  // ---- the model ---------------------------------------------------------------------------------
  rel (x) { return `+${(ms(x - this.t0) / 1000).toFixed(3)}s` }

  log (slot, name, text) {
    this.opLog.push({ t: now(), slot, name, text })
  }

  newReg (slot, name, gen, how) {
    const r = { reg: this.nextReg++, slot: slot.index, name, gen, state: 'sent', sentAt: now(), removeSentAt: null, removeHow: null, resolvedAt: null, how }
    this.regs.set(r.reg, r)
    return r
  }

  currentGen (slot) { return slot.gens.get(slot.gen) }

  ownerOf (id) {
    for (const slot of this.slots) for (const g of slot.gens.values()) if (g.id === id) return { slot, gen: g }
    return null
  }

  // Registrations the test still means to be campaigning (not removed, not paused), as the hosts
  // confirmed them.
  campaigning (name) {
    return [...this.regs.values()].filter((r) => r.name === name && r.state === 'registered' && r.removeSentAt === null && !r.paused)
  }

  leaderAt (name, at) {
    return leadershipTerms(this.allHosts, name).filter((x) => x.start <= at && (x.end === null || x.end > at))
  }

  // The story of one name (or of everything when name is null) between two instants: the
  // operations the test sent, the faults, and the hosts' events, in hrtime order.
  story (name, from, to = now(), limit = 60) {
    const lines = []
    for (const o of this.opLog) {
      if (o.t >= from && o.t <= to && (name === null || o.name === name || o.name === '*')) lines.push({ t: o.t, text: `test -> ${this.slots[o.slot].label}: ${o.text}` })
    }
    for (const f of this.faults) {
      if (f.begin <= to && (f.end === null || f.end >= from)) {
        if (f.begin >= from) lines.push({ t: f.begin, text: `FAULT ${f.kind} ${f.detail} begins (${f.duration} ms)` })
        if (f.end !== null && f.end <= to) lines.push({ t: f.end, text: `FAULT ${f.kind} ${f.detail} ends` })
      }
    }
    const quiet = new Set(['leader', 'observed', 'fn', 'v2-change', 'state', 'term', 'pong'])
    for (const h of this.allHosts) {
      for (const e of h.events) {
        if (e.t < from || e.t > to || quiet.has(e.ev)) continue
        const general = ['opened', 'closed', 'close-failed', 'exiting', 'ready'].includes(e.ev)
        if (name !== null && e.name !== name && !general) continue
        const { t: _t, ev, host, i: _i, name: n, ...rest } = e
        lines.push({ t: e.t, text: `${host} ${ev}${n ? ' ' + n : ''} ${JSON.stringify(rest)}` })
      }
    }
    lines.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0))
    const shown = lines.length > limit ? lines.slice(-limit) : lines
    return (lines.length > limit ? `  (${lines.length - limit} earlier lines left out)\n` : '') + shown.map((l) => `  ${this.rel(l.t)} ${l.text}`).join('\n')
  }

  violation (check, name, message, evidenceFrom) {
    const v = { round: this.roundNo, check, name, message }
    v.evidence = this.story(name, evidenceFrom !== undefined ? evidenceFrom : this.roundStart - NS(S(2 * TTL)))
    this.violations.push(v)
    process.stderr.write(`chaos operations (seed ${this.seed}) round ${this.roundNo}: VIOLATION (${check}) ${name || ''}: ${message}\n`)
  }

  // What a host reports, into the model.
  onEvent (e, host) {
    const slot = this.byLabel.get(host.label)
    if (!slot) return
    const r = e.reg !== undefined ? this.regs.get(e.reg) : undefined
    switch (e.ev) {
      case 'ready':
      case 'opened':
        slot.gens.set(e.gen, { gen: e.gen, id: e.id, openedAt: e.t, closeSentAt: null, closedAt: null, closeError: null })
        break
      case 'registered':
        if (r && r.state === 'sent') r.state = 'registered'
        break
      case 'register-failed':
        if (r) { r.state = 'failed'; r.resolvedAt = e.t }
        this.violation('register', e.name, `${host.label}: locker(${JSON.stringify(e.name)}) threw ${e.code}: ${e.message} (registration ${e.reg}${r && r.how ? ', ' + r.how : ''})`)
        break
      case 'removed':
        if (r && r.resolvedAt === null) { r.state = 'removed'; r.resolvedAt = e.t }
        break
      case 'closed':
      case 'close-failed':
        this.onClosed(e, host, slot)
        break
      case 'node-started':
        // Only the latest start, and only if no stop was sent after it (the event comes back later
        // than a stop sent in the same burst).
        if (e.n === slot.node.starts && slot.node.intent) slot.node.actual = true
        break
      case 'node-start-failed':
        this.violation('register', V2, `${host.label}: node.start() threw ${e.code}: ${e.message}`)
        break
      case 'node-stopped':
        if (e.n === slot.node.n) slot.node.stopResolvedAt = e.t
        break
      case 'term-failed':
        bump(this.counts.errors, `term ${e.code}`)
        break
      case 'handed-over':
        bump(this.counts.ops, 'handover done')
        break
      case 'handover-refused':
        bump(this.counts.errors, `handover ${e.code}`)
        if (!HANDOVER_REFUSALS.has(e.code)) this.violation('handover', e.name, `${host.label}: handover(${e.to ?? ''}) of registration ${e.reg} refused with ${e.code}: ${e.message}`)
        break
      case 'error':
        if (e.scope === 'remove' || e.scope === 'node-stop' || e.scope === 'pause') {
          this.violation(e.scope, e.name, `${host.label}: ${{ remove: 'remove()', 'node-stop': 'node.stop()', pause: 'pause()' }[e.scope]} rejected: ${e.code}: ${e.message}`)
        } else {
          bump(this.counts.errors, `${e.scope} ${e.code}`)
        }
        break
      case 'command-error':
        // Removing a registration that never came to be is the test following its own plan after
        // a register failure (already reported); anything else is a test or library fault.
        if (!(e.code === 'NOT_REGISTERED' && r && r.state === 'failed')) {
          this.violation('command', e.name || null, `${host.label}: command ${e.cmd} failed: ${e.code}: ${e.message}`)
        }
        break
    }
  }

  // A locker's close() settled: every remove() of its singletons resolved with it.
  onClosed (e, host, slot) {
    const g = slot.gens.get(e.gen)
    if (g) { g.closedAt = e.t; g.closeError = e.ev === 'close-failed' ? `${e.code}: ${e.message}` : null }
    for (const r of this.regs.values()) {
      if (r.slot === slot.index && r.gen === e.gen && r.resolvedAt === null) {
        if (r.state !== 'failed') r.state = 'removed'
        r.resolvedAt = e.t
      }
    }
    if (e.ev === 'close-failed') {
      // close() may report that it could not revoke the lease while the host is cut off from
      // etcd; with etcd reachable all along it must not fail.
      const sent = g ? g.closeSentAt : e.t
      const cut = this.faults.some((f) => (f.slot === slot.index || f.slot === null) && f.begin <= e.t && (f.end === null || f.end >= sent))
      if (!cut) this.violation('close', null, `${host.label}: close() of locker ${e.gen} rejected with etcd reachable: ${e.code}: ${e.message}`)
      else bump(this.counts.errors, `close ${e.code}`)
    }
  }

  // ---- operations ---------------------------------------------------------------------------------
  // One operation, drawn from the seed: a host, then one of the operations that make sense there.
  async runOp () {
    const slot = this.rndOps.pick(this.slots)
    const eligible = OPS.filter((o) => o.ok(slot))
    let x = this.rndOps() * eligible.reduce((s, o) => s + o.weight, 0)
    let op = eligible[eligible.length - 1]
    for (const o of eligible) { x -= o.weight; if (x < 0) { op = o; break } }
    bump(this.counts.ops, op.kind)
    await op.run(this, slot)
  }

  registered (slot) { return [...slot.intent.keys()].sort() }

  async register (slot) {
    const name = this.rndOps.pick(NAMES.filter((n) => !slot.intent.has(n)))
    const r = this.newReg(slot, name, slot.gen, 'register')
    slot.intent.set(name, r)
    this.log(slot.index, name, `register (reg ${r.reg})`)
    slot.host.send({ cmd: 'register', name, reg: r.reg })
    await slot.host.waitFor((e) => (e.ev === 'registered' || e.ev === 'register-failed') && e.reg === r.reg, 5000, `${slot.label} registration ${r.reg}`)
  }

  // kind: 'remove-awaited' or 'remove' (not awaited).
  async remove (slot, kind) {
    const name = this.rndOps.pick(this.registered(slot))
    const r = slot.intent.get(name)
    slot.intent.delete(name)
    r.removeSentAt = now()
    r.removeHow = kind
    this.log(slot.index, name, `${kind === 'remove' ? 'remove, not awaited' : 'remove, awaited'} (reg ${r.reg})`)
    slot.host.send({ cmd: 'remove', name, reg: r.reg })
    if (kind === 'remove-awaited' && r.state !== 'failed') await this.awaitRemove(slot, r)
  }

  // remove() while the first campaign is still on its way to etcd.
  async registerThenRemove (slot) {
    const name = this.rndOps.pick(NAMES.filter((n) => !slot.intent.has(n)))
    const awaited = this.rndOps.chance(0.5)
    const r = this.newReg(slot, name, slot.gen, 'register')
    r.removeSentAt = now()
    r.removeHow = `remove right after register${awaited ? ', awaited' : ''}`
    this.log(slot.index, name, `register (reg ${r.reg}) and remove() at once${awaited ? ', awaited' : ''}`)
    slot.host.send({ cmd: 'register', name, reg: r.reg })
    slot.host.send({ cmd: 'remove', name, reg: r.reg })
    if (awaited) await this.awaitRemove(slot, r)
  }

  // handover() of one of the host's registrations, not awaited: to the next in line, or to
  // another host's current locker (named by the id it was opened with).
  async handover (slot) {
    const name = this.rndOps.pick(this.registered(slot))
    const r = slot.intent.get(name)
    const target = this.rndOps.chance(0.5) ? null : this.rndOps.pick(this.slots.filter((o) => o !== slot))
    const to = target ? `${target.label}-${target.gen}` : undefined
    this.log(slot.index, name, `handover(${to ?? ''}) (reg ${r.reg})`)
    slot.host.send({ cmd: 'handover', name, reg: r.reg, to })
  }

  // pause() of one of the host's registrations that is not paused (standby: it leaves the queue
  // and must not lead until resumed), or resume() of a paused one.
  async pause (slot) {
    const name = this.rndOps.pick(this.registered(slot).filter((n) => !slot.intent.get(n).paused))
    const r = slot.intent.get(name)
    r.paused = true
    this.log(slot.index, name, `pause() (reg ${r.reg})`)
    slot.host.send({ cmd: 'pause', name, reg: r.reg })
  }

  async resume (slot) {
    const name = this.rndOps.pick(this.registered(slot).filter((n) => slot.intent.get(n).paused))
    const r = slot.intent.get(name)
    r.paused = false
    this.log(slot.index, name, `resume() (reg ${r.reg})`)
    slot.host.send({ cmd: 'resume', name, reg: r.reg })
  }

  async awaitRemove (slot, r) {
    const done = await waitUntil(() => r.resolvedAt !== null, OP_TIMEOUT_MS)
    if (!done) this.violation('remove', r.name, `${slot.label}: remove() of registration ${r.reg} not resolved within ${OP_TIMEOUT_MS} ms`, r.removeSentAt - NS(S(TTL)))
  }

  async reregisterAtOnce (slot) {
    const name = this.rndOps.pick(this.registered(slot))
    const old = slot.intent.get(name)
    const r = this.newReg(slot, name, slot.gen, `re-registered in the tick of remove() of reg ${old.reg}`)
    slot.intent.set(name, r)
    old.removeSentAt = now()
    old.removeHow = 'reregister-at-once'
    this.log(slot.index, name, `remove() and locker(name) in one tick (reg ${old.reg} -> ${r.reg})`)
    slot.host.send({ cmd: 'reregister', name, reg: old.reg, newReg: r.reg })
    await slot.host.waitFor((e) => ((e.ev === 'registered' || e.ev === 'register-failed') && e.reg === r.reg) || (e.ev === 'command-error' && e.reg === old.reg), 5000, `${slot.label} re-registration ${r.reg}`)
  }

  // close() of the host's locker and a new locker with the same names: in one command (atOnce),
  // or once the close() settled.
  async reopen (slot, atOnce) {
    const closing = slot.gen
    this.markClosing(slot)
    if (!atOnce) {
      this.log(slot.index, '*', `close() locker ${closing}, awaited`)
      slot.host.send({ cmd: 'close' })
      const done = await waitUntil(() => this.currentGen(slot).closedAt !== null, OP_TIMEOUT_MS)
      if (!done) this.violation('close', null, `${slot.label}: close() of locker ${closing} not settled within ${OP_TIMEOUT_MS} ms`)
    }
    slot.gen++
    const names = []
    for (const name of this.registered(slot)) {
      const r = this.newReg(slot, name, slot.gen, 'after reopen')
      slot.intent.set(name, r)
      names.push({ name, reg: r.reg })
    }
    this.log(slot.index, '*', atOnce ? `close() locker ${closing} and open locker ${slot.gen} at once with ${names.length} names` : `open locker ${slot.gen} with ${names.length} names`)
    slot.host.send({ cmd: atOnce ? 'reopen' : 'open', names })
    await slot.host.waitFor((e) => e.ev === 'opened' && e.gen === slot.gen, 5000, `${slot.label} locker ${slot.gen}`)
  }

  markClosing (slot) {
    const g = this.currentGen(slot)
    const at = now()
    if (g) g.closeSentAt = at
    for (const r of this.regs.values()) {
      if (r.slot === slot.index && r.gen === slot.gen && r.removeSentAt === null) { r.removeSentAt = at; r.removeHow = 'close' }
    }
    slot.observing.clear()
  }

  nodeStart (slot) {
    slot.node.intent = true
    slot.node.ever = true
    this.log(slot.index, V2, 'node.start()')
    slot.host.send({ cmd: 'node-start', value: `v${slot.index}`, n: ++slot.node.starts })
  }

  async nodeStop (slot) {
    const awaited = this.rndOps.chance(0.5)
    this.log(slot.index, V2, `node.stop()${awaited ? ', awaited' : ''}`)
    this.sendNodeStop(slot)
    if (awaited && !await this.nodeStopped(slot)) this.violation('node-stop', V2, `${slot.label}: node.stop() not resolved within ${OP_TIMEOUT_MS} ms`)
  }

  sendNodeStop (slot) {
    slot.node.intent = false
    slot.node.actual = false
    slot.node.stopSentAt = now()
    slot.node.stopResolvedAt = null
    slot.host.send({ cmd: 'node-stop', n: ++slot.node.n })
  }

  nodeStopped (slot) { return waitUntil(() => slot.node.stopResolvedAt !== null, OP_TIMEOUT_MS) }

  term (slot) {
    const name = this.rndOps.pick(NAMES)
    this.log(slot.index, name, 'term()')
    slot.host.send({ cmd: 'term', name, q: `op${++this.termQueries}` })
  }

  observe (slot) {
    const name = this.rndOps.pick(NAMES.filter((n) => !slot.observing.has(n)))
    slot.observing.add(name)
    this.log(slot.index, name, 'observe()')
    slot.host.send({ cmd: 'observe', name })
  }

  unobserve (slot) {
    const name = this.rndOps.pick([...slot.observing].sort())
    slot.observing.delete(name)
    this.log(slot.index, name, 'observer.close()')
    slot.host.send({ cmd: 'unobserve', name })
  }

  // ---- faults -------------------------------------------------------------------------------------
  async runFault (spec) {
    await sleep(spec.offset)
    const f = { kind: spec.kind, slot: spec.slot, begin: now(), end: null, duration: spec.duration, detail: spec.slot === null ? 'etcd' : this.slots[spec.slot].label }
    this.faults.push(f)
    bump(this.counts.faults, f.kind)
    // (A test that already failed may have closed etcd under a fault still running.)
    try {
      if (spec.kind === 'etcd-pause') {
        this.member.pause()
        await sleep(spec.duration)
        this.member.resume()
      } else {
        const p = this.slots[spec.slot].proxy
        if (spec.kind === 'cut') p.mode('blackhole')
        else if (spec.kind === 'lost-answers') p.mode('blackhole', 'down')
        else p.mode('reset')
        await sleep(spec.duration)
        p.mode('pass')
      }
    } catch (err) {
      f.error = err.message
    }
    f.end = now()
  }

  // ---- checks after a quiet period ----------------------------------------------------------------
  // What the test asked for and is not settled yet.
  pendingOps () {
    return [
      ...[...this.regs.values()].filter((r) => r.removeSentAt !== null && r.resolvedAt === null && r.state !== 'failed').map((r) => ({ name: r.name, text: `${this.slots[r.slot].label}: ${r.removeHow === 'close' ? 'close()' : 'remove()'} of registration ${r.reg} (${r.removeHow})` })),
      ...this.slots.filter((s) => s.node.stopSentAt !== null && s.node.stopResolvedAt === null).map((s) => ({ name: V2, text: `${s.label}: node.stop()` })),
      ...[...this.regs.values()].filter((r) => r.state === 'sent').map((r) => ({ name: r.name, text: `${this.slots[r.slot].label}: locker(name) of registration ${r.reg}` }))
    ]
  }

  // Everything asked for before the quiet settles (a remove() or close() sent during an outage may
  // only now reach etcd).
  async settle () {
    if (!await waitUntil(() => this.pendingOps().length === 0, OP_TIMEOUT_MS)) {
      for (const p of this.pendingOps()) this.violation('pending', p.name, `${p.text} still unsettled ${OP_TIMEOUT_MS} ms into the quiet`)
    }
  }

  async quietChecks (quietFrom) {
    const checkAt = quietFrom + NS(S(TTL + 2))
    await sleep(Math.max(0, ms(checkAt - now())) + 300)
    this.checkOverlaps(now())
    const leaders = this.leadersAt(checkAt)
    const nodes = this.slots.filter((s) => s.node.actual)
    const v2Leader = this.v2LeaderAt(checkAt, nodes)
    await this.checkKeys(leaders, v2Leader, nodes)
    await this.checkApi(leaders, v2Leader)
    // Leadership holds still in the quiet.
    await sleep(Math.max(0, S(1) - ms(now() - checkAt)))
    const churn = this.allHosts.flatMap((h) => h.events.filter((e) => (e.ev === 'start' || e.ev === 'stop') && e.t > checkAt))
    for (const e of churn) this.violation('b', e.name, `${e.host} ${e.ev} ${e.name}${e.reason ? ' (' + e.reason + ')' : ''} at ${this.rel(e.t)}, after leadership should have settled`)
    this.checkOverlaps(now())
  }

  // (a) no two leaders of a name at one instant, and no start twice without a stop; each found once.
  checkOverlaps (until) {
    const once = (key) => !this.reportedOverlaps.has(key) && this.reportedOverlaps.add(key)
    for (const name of [...NAMES, V2]) {
      for (const term of leadershipTerms(this.allHosts, name)) {
        if (term.doubleStart && once(`double ${name} ${term.host.label} ${term.start}`)) {
          this.violation('a', name, `${term.host.label} started ${name} twice without a stop at ${this.rel(term.start)}`, term.start - NS(S(2 * TTL)))
        }
      }
      for (const o of leadershipOverlaps(this.allHosts, name, { until })) {
        if (!once(`${name} ${o.first.host.label} ${o.first.start} ${o.second.host.label} ${o.second.start}`)) continue
        this.violation('a', name, `two leaders: ${o.second.host.label} started at ${this.rel(o.from)} while ${o.first.host.label} led since ${this.rel(o.first.start)} ` +
          `(until ${o.first.end === null ? 'now' : this.rel(o.first.end) + ' ' + (o.first.reason || o.first.endBy)}), overlap ${o.ms.toFixed(1)} ms`, o.from - NS(S(2 * TTL)))
      }
    }
  }

  // (b) who leads each name at checkAt, against what the test asked for: name -> term (null: none).
  leadersAt (checkAt) {
    const leaders = new Map()
    for (const name of NAMES) {
      const cands = this.campaigning(name)
      const leading = this.leaderAt(name, checkAt)
      const ok = cands.length === 0 ? leading.length === 0 : leading.length === 1
      if (!ok) {
        this.violation('b', name, `${leading.length} leaders (${leading.map((x) => x.host.label).join(', ') || 'none'}) ${TTL + 2} s into the quiet, with ${cands.length} registered candidates (${cands.map((r) => `${this.slots[r.slot].label} reg ${r.reg}`).join(', ') || 'none'})`)
        continue
      }
      if (leading.length === 0) { leaders.set(name, null); continue }
      const term = leading[0]
      const slot = this.byLabel.get(term.host.label)
      const startEv = term.host.events.find((e) => e.ev === 'start' && e.name === name && e.t === term.start)
      const reg = startEv && this.regs.get(startEv.reg)
      if (!reg || !cands.includes(reg)) {
        this.violation('b', name, `the leader ${term.host.label} leads with registration ${startEv && startEv.reg}, which is not a registered candidate (${cands.map((r) => `${this.slots[r.slot].label} reg ${r.reg}`).join(', ')})`)
        continue
      }
      leaders.set(name, { ...term, reg, slot, id: slot.gens.get(reg.gen).id })
    }
    return leaders
  }

  // (b) the selected 2.x node at checkAt: one of the started ones (nodes), if any is; its slot or null.
  v2LeaderAt (checkAt, nodes) {
    const v2Leading = this.leaderAt(V2, checkAt)
    if ((nodes.length === 0 ? v2Leading.length !== 0 : v2Leading.length !== 1) || (v2Leading.length === 1 && !nodes.some((s) => s.host === v2Leading[0].host))) {
      this.violation('b', V2, `${v2Leading.length} 2.x nodes selected (${v2Leading.map((x) => x.host.label).join(', ') || 'none'}) ${TTL + 2} s into the quiet, with ${nodes.length} started (${nodes.map((s) => s.label).join(', ') || 'none'})`)
      return null
    }
    return v2Leading.length === 1 ? this.byLabel.get(v2Leading[0].host.label) : null
  }

  // (b), (c) against etcd: read after every resolution the model holds now.
  async checkKeys (leaders, v2Leader, nodes) {
    const readAt = now()
    const main = parseKeys(await this.etcd.keys(`${this.prefix}/`), this.prefix)
    const v2 = parseKeys(await this.etcd.keys(`${this.v2Path}/`), this.v2Path)
    this.checkKeysBelong(main, readAt)
    this.checkCandidateKeys(main, leaders)
    this.checkRecords(main, (n) => n, leaders)
    this.checkMarkers(main)
    this.checkPreferences(main, leaders)
    this.checkNodeKeys(v2, v2Leader, nodes, readAt)
  }

  // (c) every key is its lease's, of a locker the hosts opened, for a registration not yet gone.
  checkKeysBelong (main, readAt) {
    for (const [name, list] of main.candidates) {
      for (const kv of list) {
        if (kv.pathLease !== kv.leaseHex) this.violation('c', name, `key ${kv.key} is bound to lease ${kv.leaseHex}, not the one in its name`)
        const owner = this.ownerOf(kv.value)
        if (!owner) { this.violation('c', name, `key ${kv.key} belongs to no locker the hosts opened (value ${kv.value})`); continue }
        const mine = [...this.regs.values()].filter((r) => r.slot === owner.slot.index && r.gen === owner.gen.gen && r.name === name)
        const live = mine.filter((r) => r.state !== 'failed' && (r.resolvedAt === null || r.resolvedAt > readAt))
        if (live.length === 0) {
          // The last registration that came to be (a failed locker(name) never had a key).
          const last = mine.filter((r) => r.state !== 'failed').pop()
          const failed = mine.filter((r) => r.state === 'failed' && (!last || r.reg > last.reg)).map((r) => r.reg)
          this.violation('c', name, `key ${kv.key} (rev ${kv.createRevision}) of ${owner.slot.label} locker ${owner.gen.gen} is in etcd, but ` +
            (last ? `registration ${last.reg} went (${last.removeHow || last.state}) and its ${last.removeHow === 'close' ? 'close()' : 'remove()'} resolved at ${this.rel(last.resolvedAt)}` : 'that locker never registered this name') +
            (failed.length ? `; locker(name) threw for registration ${failed.join(', ')} after it` : ''))
        }
      }
    }
  }

  // (b) every campaigning registration has its key; each leader holds the lowest, its token its revision.
  checkCandidateKeys (main, leaders) {
    for (const name of NAMES) {
      const list = main.candidates.get(name) || []
      for (const r of this.campaigning(name)) {
        const id = this.slots[r.slot].gens.get(r.gen).id
        if (!list.some((kv) => kv.value === id)) this.violation('b', name, `${this.slots[r.slot].label} registration ${r.reg} is registered but has no key in etcd`)
      }
      // A paused registration is out of the queue.
      for (const r of this.regs.values()) {
        if (r.name !== name || !r.paused || r.state !== 'registered' || r.removeSentAt !== null) continue
        const id = this.slots[r.slot].gens.get(r.gen)?.id
        if (list.some((kv) => kv.value === id)) this.violation('b', name, `${this.slots[r.slot].label} registration ${r.reg} is paused but has a key in etcd`)
      }
      const term = leaders.get(name)
      if (term) {
        if (!list.length || list[0].value !== term.id) this.violation('b', name, `the leader ${term.host.label} does not hold the lowest key (${list.length ? list[0].key + ' = ' + list[0].value : 'no key'})`)
        else if (list[0].createRevision !== term.token) this.violation('b', name, `the leader ${term.host.label} has token ${term.token}, its key's create revision is ${list[0].createRevision}`)
      }
    }
  }

  // (b), (c) the 2.x nodes' keys: `<path>/candidates/<lease>` = `<node id>:::<value>`.
  checkNodeKeys (v2, v2Leader, nodes, readAt) {
    const v2list = v2.candidates.get('candidates') || []
    for (const kv of v2list) {
      const nodeId = String(kv.value).split(':::')[0]
      const slot = this.slots.find((s) => `${s.label}-node` === nodeId)
      if (!slot) this.violation('c', V2, `key ${kv.key} belongs to no node (value ${kv.value})`)
      else if (!slot.node.actual && slot.node.stopResolvedAt !== null && slot.node.stopResolvedAt < readAt) this.violation('c', V2, `key ${kv.key} of ${slot.label}'s node is in etcd, but its stop() resolved at ${this.rel(slot.node.stopResolvedAt)}`)
    }
    for (const s of nodes) if (!v2list.some((kv) => kv.value === `${s.label}-node:::v${s.index}`)) this.violation('b', V2, `${s.label}'s node is started but has no key`)
    if (v2Leader && (!v2list.length || v2list[0].value !== `${v2Leader.label}-node:::v${v2Leader.index}`)) this.violation('b', V2, `the selected node ${v2Leader.label} does not hold the lowest key (${v2list.length ? v2list[0].value : 'none'})`)
    this.checkRecords(v2, () => V2, new Map([['candidates', v2Leader ? { host: v2Leader.host } : null]]))
  }

  // (c) for the term records under one base: each is bound to the lease its key names; a line
  // whose term's key still exists is in the record of that key's lease and names the lowest key
  // (a line of a term that ended may linger until its locker rewrites the record: readers trust a
  // line only for the token that leads); each leader's term has its line.
  checkRecords ({ candidates, records }, label, leaders) {
    for (const line of records) {
      if (line.name === null) { this.violation('c', '-', `term record ${line.key} is bound to lease ${line.leaseHex}, not the one in its key`); continue }
      const name = label(line.name)
      const list = candidates.get(line.name) || []
      const own = list.find((kv) => kv.createRevision === line.token)
      if (!own) continue
      if (own.leaseHex !== line.leaseHex) this.violation('c', name, `the line of token ${line.token} is in ${line.key}, bound to lease ${line.leaseHex}; its leader's key ${own.key} is bound to ${own.leaseHex}`)
      else if (own !== list[0]) this.violation('c', name, `the line in ${line.key} names token ${line.token}, but the lowest key is ${list[0].key} (${list[0].createRevision})`)
    }
    for (const [rname, term] of leaders) {
      if (!term) continue
      const token = term.token === undefined ? (candidates.get(rname) || [])[0]?.createRevision : term.token
      if (!records.some((line) => line.name === rname && line.token === token)) this.violation('c', label(rname), `the leader ${term.host.label} (token ${term.token === undefined ? '-' : term.token}) has no line in a term record`)
    }
  }

  // (c) a handover's marker lives no longer than the term of the leader that wrote it: it is bound
  // to the lease of the lowest key and names that key's create revision as its leader's token.
  checkMarkers ({ candidates, markers }) {
    for (const [name, marker] of markers) {
      const leader = (candidates.get(name) || [])[0]
      const token = Number(String(marker.value).split(' ')[0])
      if (!leader || leader.createRevision !== token || leader.lease !== marker.lease) {
        this.violation('c', name, `handover marker ${marker.key} = "${marker.value}" (lease ${marker.leaseHex}) outlives its leader's term; the lowest key is ${leader ? `${leader.key} (${leader.createRevision}, lease ${leader.leaseHex})` : 'none'}`)
      }
    }
  }

  // (c) every candidate's preference key says what its registration prefers, bound to its lease,
  // and none outlives its candidate; (b) every leader is the one preferences pick (the hosts of
  // the first slots balance; priorities follow from the registration numbers).
  checkPreferences ({ candidates, preferences }, leaders) {
    for (const name of NAMES) {
      const keys = candidates.get(name) || []
      const prefs = new Map((preferences.get(name) || []).map((kv) => [kv.pathLease, kv]))
      for (const kv of prefs.values()) {
        if (kv.pathLease !== kv.leaseHex || !keys.some((c) => c.pathLease === kv.pathLease)) {
          this.violation('c', name, `preference ${kv.key} = "${kv.value}" (lease ${kv.leaseHex}) outlives its candidate`)
        }
      }
      const queue = []
      for (const c of keys) {
        const owner = this.ownerOf(c.value)
        if (!owner) continue // reported by checkKeysBelong
        const reg = [...this.regs.values()].filter((r) => r.slot === owner.slot.index && r.gen === owner.gen.gen && r.name === name && r.state !== 'failed').pop()
        const priority = reg ? priorityOf(reg.reg) : 0
        const balance = owner.slot.balance
        const want = priority !== 0 || balance ? `${priority}${balance ? ' balance' : ''}` : null
        const got = prefs.has(c.pathLease) ? prefs.get(c.pathLease).value : null
        if (got !== want) this.violation('c', name, `candidate ${c.key} (${owner.slot.label}, reg ${reg && reg.reg}) has preference ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`)
        queue.push({ id: c.value, priority, balance, label: owner.slot.label })
      }
      const should = preferredOf(name, queue)
      if (leaders.get(name) && should) {
        this.violation('b', name, `${queue[0].label} leads, but ${should.label} should (${queue.map((q) => `${q.label}: ${q.priority}${q.balance ? ' balance' : ''}`).join(', ')}), ${TTL + 2} s into the quiet`)
      }
    }
  }

  // (c) what the API reports: term() from one host for every name; every host's leader(),
  // observers and node.
  async checkApi (leaders, v2Leader) {
    const asker = this.slots[this.roundNo % HOSTS]
    const answers = await Promise.all(NAMES.map((name) => {
      const q = `quiet${++this.queryCount}`
      return asker.host.request({ cmd: 'term', name, q }, (e) => (e.ev === 'term' || e.ev === 'term-failed') && e.q === q, 10000, `term(${name}) on ${asker.label}`)
    }))
    for (const a of answers) {
      const term = leaders.get(a.name)
      const want = term ? { leader: term.id, token: term.token } : null
      const got = a.ev === 'term-failed' ? `rejected ${a.code}: ${a.message}` : a.result && { leader: a.result.leader, token: a.result.token }
      if (JSON.stringify(got) !== JSON.stringify(want)) this.violation('c', a.name, `term(${a.name}) on ${asker.label} answered ${JSON.stringify(got)}, the leader is ${JSON.stringify(want)} (${term ? term.host.label : 'none'})`)
    }
    for (const slot of this.slots) {
      const q = `state${++this.queryCount}`
      const st = await slot.host.request({ cmd: 'state', q }, { ev: 'state', q }, 10000, `state of ${slot.label}`)
      for (const [name, leader] of Object.entries(st.leaders)) {
        const term = leaders.get(name)
        // A paused singleton does not follow the leader: not known.
        const paused = slot.intent.get(name)?.paused
        const want = term && !paused ? term.id : null
        if (leader !== want) this.violation('c', name, `${slot.label}: singleton.leader() is ${leader}, the leader is ${want} (${term ? term.host.label : 'none'})`)
      }
      for (const [name, o] of Object.entries(st.observed)) {
        const term = leaders.get(name)
        const want = term ? { leader: term.id, token: term.token } : { leader: null, token: null }
        if (o.leader !== want.leader || o.token !== want.token) this.violation('c', name, `${slot.label}: observer says ${JSON.stringify(o)}, the leader is ${JSON.stringify(want)} (${term ? term.host.label : 'none'})`)
      }
      if (slot.node.actual && st.node) {
        const want = v2Leader ? { id: `${v2Leader.label}-node`, value: `v${v2Leader.index}`, selected: v2Leader === slot } : null
        const got = { id: st.node.id, value: st.node.value, selected: st.node.selected }
        if (want && JSON.stringify(got) !== JSON.stringify(want)) this.violation('c', V2, `${slot.label}: node says ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`)
      }
    }
  }

  // ---- the end --------------------------------------------------------------------------------------
  // The host's 2.x node stopped (if it runs) and its locker closed, checked (d).
  async closeHost (slot, text) {
    if (slot.node.intent) {
      this.sendNodeStop(slot)
      if (!await this.nodeStopped(slot)) this.violation('d', V2, `${slot.label}: node.stop() not resolved`)
    }
    this.markClosing(slot)
    this.log(slot.index, '*', text)
    slot.host.send({ cmd: 'close' })
    if (!await waitUntil(() => this.currentGen(slot).closedAt !== null, OP_TIMEOUT_MS)) this.violation('d', null, `${slot.label}: close() not settled`)
    else if (this.currentGen(slot).closeError) this.violation('d', null, `${slot.label}: close() rejected: ${this.currentGen(slot).closeError}`)
  }

  // Every host but one closes and exits; the one left (idle: no 2.x node if possible) leads
  // something, so that its cost (e) covers a leader's.
  async leaveOneHost () {
    const idle = [...this.slots].reverse().find((s) => !s.node.ever) || this.slots[HOSTS - 1]
    for (const slot of this.slots) {
      if (slot === idle) continue
      await this.closeHost(slot, 'close(), then exit')
      slot.host.send({ cmd: 'exit' })
      await slot.host.exited
    }
    if (this.idleRegs(idle).length === 0) {
      const name = NAMES.find((n) => !idle.intent.has(n)) || NAMES[0]
      if (idle.intent.has(name)) {
        const old = idle.intent.get(name)
        old.removeSentAt = now()
        old.removeHow = 'remove-awaited'
        idle.host.send({ cmd: 'remove', name, reg: old.reg })
        await waitUntil(() => old.resolvedAt !== null, OP_TIMEOUT_MS)
      }
      const r = this.newReg(idle, name, idle.gen, 'register')
      idle.intent.set(name, r)
      this.log(idle.index, name, `register (reg ${r.reg})`)
      idle.host.send({ cmd: 'register', name, reg: r.reg })
      await idle.host.waitFor((e) => (e.ev === 'registered' || e.ev === 'register-failed') && e.reg === r.reg, 5000, `${idle.label} registration ${r.reg}`)
    }
    for (const name of this.idleNames(idle)) {
      if (!await waitUntil(() => leadsNow(idle.host, name), S(TTL + 5))) this.violation('b', name, `${idle.label} does not lead ${name} ${TTL + 5} s after it became the only candidate`)
    }
    return idle
  }

  // The idle host's candidates: a paused registration stays registered but is out of the queue.
  idleRegs (idle) { return [...this.regs.values()].filter((r) => r.slot === idle.index && r.state === 'registered' && r.removeSentAt === null && !r.paused) }
  idleNames (idle) { return this.idleRegs(idle).map((r) => r.name).sort() }

  // (e) one idle host: about one keepalive per lease per TTL/3.
  // Measured at etcd itself: the gRPC messages it received (grpc_server_msg_received_total, every
  // keepalive on the lease stream counts as one), over a window in which the only client left
  // is the idle host (the others closed and exited, and this test sends nothing to etcd but
  // the plain-HTTP /metrics reads).
  async checkIdleCost (idle) {
    const idleNames = this.idleNames(idle)
    const leases = await this.checkIdleLeases(idle)
    // Past the idle host's own elections and the test's last gRPC requests.
    await sleep(1500)
    const before = await grpcReceived(this.member)
    const w0 = now()
    await sleep(IDLE_WINDOW_MS)
    const afterIdle = await grpcReceived(this.member)
    const windowMs = ms(now() - w0)
    const delta = {}
    for (const k of Object.keys(afterIdle)) {
      const d = afterIdle[k] - (before[k] || 0)
      if (d) delta[k] = d
    }
    const total = Object.values(delta).reduce((s, x) => s + x, 0)
    const expected = leases.length * windowMs / (S(TTL) / 3)
    this.t.diagnostic(`idle ${idle.label} (${idleNames.length} names, ${leases.length} leases): ${total} gRPC messages to etcd in ${(windowMs / 1000).toFixed(1)} s ${JSON.stringify(delta)}, expected ~${expected.toFixed(1)}`)
    if (total > expected * 1.5 + 1 || (delta.LeaseKeepAlive || 0) < expected * 0.5) {
      this.violation('e', null, `idle ${idle.label}: ${total} gRPC messages in ${(windowMs / 1000).toFixed(1)} s (${JSON.stringify(delta)}), expected about ${expected.toFixed(1)} keepalives (${leases.length} lease(s), one per ${TTL / 3} s)`, w0)
    }
  }

  // Every lease left is the idle host's: its locker's (the one its keys are bound to) and, if it
  // ever started a 2.x node, that node's own locker's (held while started; once stopped, kept
  // unless etcd expired it meanwhile). Resolves the leases.
  async checkIdleLeases (idle) {
    // (etcdctl prints lease ids zero-padded, the key listing does not.)
    const leases = (await this.etcd.leases()).map((l) => BigInt(`0x${l}`).toString(16))
    const idleId = this.currentGen(idle).id
    const mainLeases = new Set((await this.etcd.keys(`${this.prefix}/`)).filter((kv) => kv.value === idleId).map((kv) => kv.leaseHex))
    const nodeLeases = new Set((await this.etcd.keys(`${this.v2Path}/`)).filter((kv) => kv.value.startsWith(`${idle.label}-node:::`)).map((kv) => kv.leaseHex))
    const others = leases.filter((l) => !mainLeases.has(l) && !nodeLeases.has(l))
    const spare = idle.node.ever && nodeLeases.size === 0 ? 1 : 0
    if (mainLeases.size !== 1 || others.length > spare) {
      this.violation('d', null, `with one host left, etcd holds leases ${leases.join(', ')}: its locker's keys are bound to ${[...mainLeases].join(', ') || 'none'}, its node's to ${[...nodeLeases].join(', ') || 'none'}${idle.node.ever ? '' : ' (it never started a node)'}`)
    }
    return leases
  }

  // (d) after all closes, nothing of ours is left.
  async closeLastHost (idle) {
    await this.closeHost(idle, 'close()')
    const keysLeft = [...await this.etcd.keys(`${this.prefix}/`), ...await this.etcd.keys(`${this.v2Path}/`)]
    if (keysLeft.length) this.violation('d', null, `keys left after every close(): ${keysLeft.map((kv) => `${kv.key} = ${kv.value}`).join(', ')}`)
    // A 2.x node has no close(): its own locker lets go of its lease when the process exits.
    idle.host.send({ cmd: 'exit' })
    await idle.host.exited
    const leasesLeft = await this.etcd.leases()
    if (leasesLeft.length) this.violation('d', null, `leases left after every close() and exit: ${leasesLeft.join(', ')}`)
  }

  // (a) fn runs once per term, inside it (between its start and its stop).
  checkFnOncePerTerm () {
    for (const h of this.allHosts) {
      for (const name of NAMES) {
        for (const { e, inTerm } of strayFns(h, name)) {
          this.violation('a', name, `${h.label} ran fn of ${name} (reg ${e.reg}) ${inTerm ? 'twice in one term' : 'outside a term'} at ${this.rel(e.t)}`, e.t - NS(S(2 * TTL)))
        }
      }
    }
  }

  checkHostsExited () {
    for (const h of this.allHosts) {
      const clean = h.exitInfo && h.exitInfo.code === 0 && h.find({ ev: 'exiting' }).length === 1
      if (!clean) this.violation('host', null, `${h.label} ended unexpectedly: ${JSON.stringify(h.exitInfo, (k, v) => typeof v === 'bigint' ? String(v) : v)}\n${h.stderr.slice(-2000)}`)
    }
  }

  // ---- the report -----------------------------------------------------------------------------------
  // The figures, then every violation: one per check kind with its evidence, the rest as one-liners.
  report () {
    const seconds = (Date.now() - this.started) / 1000
    // The same seed must give the same digest: the check that a replay replays.
    const digest = crypto.createHash('sha256').update(this.opLog.slice(0, this.opsOfRounds).map((o) => `${o.slot} ${o.text} ${o.name}`).join('\n')).digest('hex').slice(0, 16)
    this.t.diagnostic(`operation sequence digest ${digest} (${this.opsOfRounds} operations in the rounds)`)
    this.t.diagnostic(`operations: ${JSON.stringify(this.counts.ops)}; faults: ${JSON.stringify(this.counts.faults)}; errors reported by the library: ${JSON.stringify(this.counts.errors)}`)
    const byCheck = {}
    for (const v of this.violations) bump(byCheck, v.check)
    metric(this.t, 'random-operations', {
      seed: this.seed,
      rounds: ROUNDS,
      seconds,
      ops: Object.values(this.counts.ops).reduce((s, x) => s + x, 0),
      faults: this.faults.length,
      violations: this.violations.length,
      ...Object.fromEntries(Object.entries(byCheck).map(([k, n]) => [`violations_${k}`, n]))
    })
    const shown = new Set()
    const details = this.violations.map((v) => {
      const head = `[round ${v.round}] (${v.check}) ${v.name || ''}: ${v.message}`
      if (shown.has(v.check)) return head
      shown.add(v.check)
      return `${head}\n${v.evidence}`
    })
    if (this.violations.length) assert.fail(`seed ${this.seed}: ${this.violations.length} violations (replay: CHAOS_SEED=${this.seed}, operation sequence digest ${digest})\n${details.join('\n')}`)
  }
}
