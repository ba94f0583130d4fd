'use strict'
// The parent side of host.js: spawn competing host processes, collect their events on one
// timeline, wait for events with timeouts, and make sure no host outlives the test.
//
//   const { spawnHost, killAll, now, timeline, assertOneLeaderAtATime } = require('./helpers/hosts')
//   const a = spawnHost({ endpoints, ttl: 2, prefix: 'p1', names: ['build'] }, 'A')
//   await a.ready                                   // the 'ready' event
//   const ev = await a.waitFor({ ev: 'start', name: 'build' }, 5000, 'A elected')
//   a.send({ cmd: 'remove', name: 'build' })
//   a.kill('SIGKILL'); await a.exited              // { code, signal, t }
//   a.pause(); a.resume()                           // SIGSTOP / SIGCONT, recorded in a.pauses
//   leadershipReport([a, b], 'build')               // terms, overlaps, max overlap, min gap
//   after(killAll)
//
// Queues on one etcd (`etcd` from ./etcd.js):
//   const [a, b, c] = await queueHosts(etcd, ['A', 'B', 'C'], { prefix, ttl: 2, names: ['job'] })
//   const [a, b] = await leaderAndFollower(etcd, { prefix, ttl: 2, leader: { guardian: true } })
//   await queued(etcd, h, { prefix, names: ['job'] })  // h's key for every name is in etcd
//
// Times: `t` of every event is process.hrtime.bigint() in the host, as a BigInt. On Linux that is
// CLOCK_MONOTONIC, the same clock in every process of the machine, so events of different hosts
// (and now() here) can be ordered on one timeline.

const { spawn } = require('node:child_process')
const path = require('node:path')
const { keyOf } = require('./etcd')

const HOST = path.join(__dirname, 'host.js')
const live = new Set()
const unchecked = new Set() // hosts whose start/stop sequence killAll() has not judged yet
let counter = 0

const now = () => process.hrtime.bigint()
const ms = (ns) => Number(ns) / 1e6

process.on('exit', () => {
  for (const h of live) {
    try { h.proc.kill('SIGKILL') } catch {}
  }
})

// A predicate may be a function or an object whose fields must all be equal (===) in the event.
function toPredicate (pred) {
  if (typeof pred === 'function') return pred
  if (pred && typeof pred === 'object') {
    const entries = Object.entries(pred)
    return (e) => entries.every(([k, v]) => e[k] === v)
  }
  throw new TypeError('predicate must be a function or an object')
}

function describePred (pred) {
  return typeof pred === 'function' ? (pred.name || 'predicate') : JSON.stringify(pred)
}

function compact (e, t0) {
  const { t, ev, name, i, host, ...rest } = e
  delete rest.id
  const rel = t0 !== undefined ? `+${ms(t - t0).toFixed(1)}ms` : String(t)
  const extra = Object.keys(rest).length ? ' ' + JSON.stringify(rest) : ''
  return `${rel} ${host || ''}#${i} ${ev}${name != null ? ' ' + name : ''}${extra}`
}

class Host {
  constructor (config, label, options = {}) {
    this.label = label || `host${++counter}`
    this.config = config
    this.events = []
    this.stderr = ''
    this.waiters = []
    this.exitInfo = null
    this.killedAt = null
    this.pauses = [] // see pause() / resume()
    this.startedAt = now()
    this.onEvent = options.onEvent || null // (event, host) => void, for live printing
    const script = options.script || HOST
    this.proc = spawn(process.execPath, [...(options.execArgv || []), script, JSON.stringify(config)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: options.cwd || path.join(__dirname, '..', '..'),
      env: { ...process.env, ...(options.env || {}) }
    })
    this.pid = this.proc.pid
    live.add(this)
    unchecked.add(this)
    // Commands to a host that is gone are dropped, not thrown.
    this.proc.stdin.on('error', () => {})
    let buf = ''
    this.proc.stdout.setEncoding('utf8')
    this.proc.stdout.on('data', (chunk) => {
      buf += chunk
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (line.trim()) this._line(line)
      }
    })
    this.proc.stderr.setEncoding('utf8')
    this.proc.stderr.on('data', (chunk) => {
      this.stderr += chunk
      if (this.stderr.length > 200000) this.stderr = this.stderr.slice(-100000)
      if (process.env.LOCKED_TEST_VERBOSE) process.stderr.write(`[${this.label} stderr] ${chunk}`)
    })
    this.exited = new Promise((resolve) => {
      // 'close': the process is gone and its stdout fully read.
      this.proc.once('close', (code, signal) => {
        live.delete(this)
        this.exitInfo = { code, signal, t: now() }
        resolve(this.exitInfo)
        for (const w of this.waiters.splice(0)) {
          w.reject(this._error(`host ${this.label} exited (code ${code}, signal ${signal}) before ${w.description}`))
        }
      })
    })
    this.ready = this.waitFor({ ev: 'ready' }, options.readyTimeoutMs || 15000, `${this.label} ready`)
    // A test that never awaits `ready` must not get an unhandled rejection from it.
    this.ready.catch(() => {})
  }

  get id () {
    const r = this.events.find((e) => e.ev === 'ready')
    return r && r.id
  }

  get alive () { return this.exitInfo === null }

  _line (line) {
    let e
    try {
      e = JSON.parse(line)
    } catch {
      e = { t: String(now()), ev: 'garbage', line }
    }
    e.t = BigInt(e.t)
    e.i = this.events.length
    e.host = this.label
    this.events.push(e)
    if (this.onEvent) this.onEvent(e, this)
    if (process.env.LOCKED_TEST_VERBOSE) process.stderr.write(`[${this.label}] ${line}\n`)
    for (const w of [...this.waiters]) {
      if (w.pred(e)) {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        w.resolve(e)
      }
    }
  }

  _error (message) {
    const t0 = this.startedAt
    const last = this.events.slice(-20).map((e) => '    ' + compact(e, t0)).join('\n')
    const err = new Error(`${message}\n  last events of ${this.label} (pid ${this.pid}):\n${last || '    (none)'}` +
      (this.stderr ? `\n  stderr of ${this.label}:\n${this.stderr.trimEnd().split('\n').slice(-20).map((l) => '    ' + l).join('\n')}` : ''))
    return err
  }

  // The first event matching pred — already received or future. Options: { since: index } to
  // ignore events before that index (see mark()).
  waitFor (pred, timeoutMs = 10000, description, { since = 0, signal } = {}) {
    const base = toPredicate(pred)
    const match = (e) => e.i >= since && base(e)
    const desc = description || describePred(pred)
    const found = this.events.find(match)
    if (found) return Promise.resolve(found)
    if (!this.alive) return Promise.reject(this._error(`host ${this.label} exited (code ${this.exitInfo.code}, signal ${this.exitInfo.signal}) before ${desc}`))
    return new Promise((resolve, reject) => {
      const w = { pred: match, description: desc }
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w)
        if (i >= 0) this.waiters.splice(i, 1)
        reject(this._error(`timeout after ${timeoutMs} ms waiting for ${desc} on ${this.label}`))
      }, timeoutMs)
      const onAbort = () => {
        const i = this.waiters.indexOf(w)
        if (i >= 0) this.waiters.splice(i, 1)
        clearTimeout(timer)
        reject(new Error(`aborted waiting for ${desc}`))
      }
      if (signal) signal.addEventListener('abort', onAbort, { once: true })
      w.resolve = (e) => { clearTimeout(timer); if (signal) signal.removeEventListener('abort', onAbort); resolve(e) }
      w.reject = (err) => { clearTimeout(timer); if (signal) signal.removeEventListener('abort', onAbort); reject(err) }
      this.waiters.push(w)
    })
  }

  // Index of the next event: pass as { since } to wait only for events after this point.
  mark () { return this.events.length }

  // Events matching pred (function or object), received so far.
  find (pred) { return this.events.filter(toPredicate(pred)) }

  send (cmd) {
    if (!this.alive || this.proc.stdin.destroyed) return false
    this.proc.stdin.write(JSON.stringify(cmd) + '\n')
    return true
  }

  // Send a command and wait for the event it produces.
  async request (cmd, pred, timeoutMs = 10000, description) {
    const since = this.mark()
    this.send(cmd)
    return this.waitFor(pred, timeoutMs, description || `${JSON.stringify(pred)} after ${JSON.stringify(cmd)}`, { since })
  }

  kill (signal = 'SIGKILL') {
    if (!this.alive) return false
    if (signal === 'SIGKILL' || signal === 9) this.killedAt = now()
    try { return this.proc.kill(signal) } catch { return false }
  }

  // Freeze (SIGSTOP) and continue (SIGCONT) the process, recorded in this.pauses as
  // [{ at, resumedAt }] (resumedAt null while frozen; both taken just before the signal is sent).
  // A frozen host cannot act on anything, so invariant checks treat its terms specially.
  pause () {
    if (!this.alive || this.paused) return false
    const at = now()
    try { this.proc.kill('SIGSTOP') } catch { return false }
    this.pauses.push({ at, resumedAt: null })
    return true
  }

  resume () {
    const p = this.pauses[this.pauses.length - 1]
    if (!p || p.resumedAt !== null) return false
    p.resumedAt = now()
    try { return this.proc.kill('SIGCONT') } catch { return false }
  }

  get paused () {
    const p = this.pauses[this.pauses.length - 1]
    return !!p && p.resumedAt === null && this.alive
  }

  // Close stdin: host.js exits (process.exit(0)) when its parent goes away.
  endInput () { this.proc.stdin.end() }
}

function spawnHost (config, label, options) {
  return new Host(config, label, options)
}

// SIGKILL every host still running and wait for them to be gone. after(killAll) in each file.
// Then every host spawned since the last call is judged by assertStartStopAlternate for each of
// its names, so a test that never looked at leadership still fails on a doubled start or stop.
async function killAll () {
  const hosts = [...live]
  for (const h of hosts) h.kill('SIGKILL')
  await Promise.all(hosts.map((h) => h.exited))
  const judged = [...unchecked]
  unchecked.clear()
  for (const h of judged) {
    const names = new Set(h.events.filter((e) => e.ev === 'start' || e.ev === 'stop').map((e) => e.name))
    for (const name of names) assertStartStopAlternate([h], name)
  }
}

// All events of the given hosts (optionally filtered) in hrtime order.
function timeline (hosts, pred) {
  const match = pred ? toPredicate(pred) : () => true
  return hosts.flatMap((h) => h.events.filter(match)).sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0))
}

function formatTimeline (hosts, pred, t0) {
  const events = timeline(hosts, pred)
  const base = t0 !== undefined ? t0 : (events.length ? events[0].t : 0n)
  return events.map((e) => '  ' + compact(e, base)).join('\n')
}

// Throws unless, on every host, the 'start' and 'stop' events of `name` alternate: start, stop,
// start, ... (a host may die while leading). A second start without a stop would hand fn a second
// term while the first one runs; a stop without a start reports an end nobody began. Every helper
// that judges leadership (assertOneLeaderAtATime, leadershipTerms and all built on it) calls this,
// so no test can count terms over such a sequence.
function assertStartStopAlternate (hosts, name) {
  for (const h of hosts) {
    let leading = false
    for (const e of h.events) {
      if (e.name !== name || (e.ev !== 'start' && e.ev !== 'stop')) continue
      if ((e.ev === 'start') === leading) {
        throw new Error(`${h.label}: ${e.ev === 'start' ? 'a second start' : 'a stop'} of ${name} ` +
          `${e.ev === 'start' ? 'without a stop in between' : 'without a start'} (event #${e.i})\n${formatTimeline([h], { name })}`)
      }
      leading = e.ev === 'start'
    }
  }
}

// Checks that, for one election name, no two hosts ever led at the same time on the shared
// monotonic timeline: each 'start' comes after the previous leader's 'stop' (or its death:
// an 'exiting' / 'uncaught' line, or the moment it was SIGKILLed by the test). Returns the
// sequence of terms [{ host, start, end }]. Throws an assertion-style error otherwise.
function assertOneLeaderAtATime (hosts, name, { allowOverlapMs = 0 } = {}) {
  assertStartStopAlternate(hosts, name)
  const points = []
  for (const h of hosts) {
    for (const e of h.events) {
      if (e.name === name && (e.ev === 'start' || e.ev === 'stop')) points.push({ t: e.t, kind: e.ev, host: h, e })
      if (e.ev === 'exiting' || e.ev === 'uncaught') points.push({ t: e.t, kind: 'dead', host: h, e })
    }
    if (h.killedAt !== null) points.push({ t: h.killedAt, kind: 'dead', host: h })
  }
  points.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0))
  const leading = new Map() // host -> start time
  const terms = []
  for (const p of points) {
    if (p.kind === 'start') {
      for (const [other, since] of leading) {
        if (other !== p.host && ms(p.t - since) >= 0) {
          const overlap = other.events.find((e) => e.name === name && e.ev === 'stop' && e.t > p.t)
          const overlapMs = overlap ? ms(overlap.t - p.t) : Infinity
          if (overlapMs > allowOverlapMs) {
            throw new Error(`two leaders of ${name}: ${p.host.label} started while ${other.label} still led ` +
              `(${other.label} stopped ${overlap ? overlapMs.toFixed(1) + ' ms later' : 'never'})\n` +
              formatTimeline(hosts, (e) => e.name === name || e.ev === 'exiting'))
          }
        }
      }
      if (leading.has(p.host)) {
        throw new Error(`${p.host.label} got two starts of ${name} without a stop\n${formatTimeline(hosts, { name })}`)
      }
      leading.set(p.host, p.t)
      terms.push({ host: p.host, start: p.t, end: null, token: p.e.token })
    } else if (leading.has(p.host)) {
      leading.delete(p.host)
      const term = terms.findLast((x) => x.host === p.host && x.end === null)
      if (term) term.end = p.t
    }
  }
  return terms
}

// The moment a host died, as far as the test knows: its 'exiting' / 'uncaught' line, the moment
// the test SIGKILLed it, or (for any other death) when its exit was seen. null while it lives.
function deathOf (host) {
  let t = null
  const consider = (x) => { if (x !== null && x !== undefined && (t === null || x < t)) t = x }
  consider(host.killedAt)
  for (const e of host.events) if (e.ev === 'exiting' || e.ev === 'uncaught') consider(e.t)
  if (host.exitInfo) consider(host.exitInfo.t)
  return t
}

// Every leadership term of one name: [{ host, start, end, endBy, reason, token, startEvent,
// stopEvent }] in start order, on the shared timeline. A term ends at the host's 'stop' (endBy
// 'stop', reason and stopEvent set) or at its death (endBy 'dead'); end is null while it lasts.
// Overlaps are not judged here, but a host that started twice without a stop, or stopped without a
// start, throws (assertStartStopAlternate).
function leadershipTerms (hosts, name) {
  assertStartStopAlternate(hosts, name)
  const terms = []
  for (const h of hosts) {
    let open = null
    for (const e of h.events) {
      if (e.name !== name) continue
      if (e.ev === 'start') {
        const term = { host: h, start: e.t, end: null, endBy: null, reason: null, token: e.token, startEvent: e }
        terms.push(term)
        open = term
      } else if (e.ev === 'stop' && open) {
        open.end = e.t
        open.endBy = 'stop'
        open.reason = e.reason
        open.stopEvent = e
        open = null
      }
    }
    const dead = deathOf(h)
    if (open && dead !== null && dead > open.start) {
      open.end = dead
      open.endBy = 'dead'
    }
  }
  return terms.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0))
}

// Where terms of different hosts for one name overlap on the timeline: [{ first, second, from, to,
// ms }] (first is the term that began earlier). Terms still open count as lasting until `until`
// (default: now). Nothing is thrown: the caller decides which overlaps are acceptable.
function leadershipOverlaps (hosts, name, { until = now(), terms = leadershipTerms(hosts, name) } = {}) {
  const found = []
  for (let i = 0; i < terms.length; i++) {
    for (let j = i + 1; j < terms.length; j++) {
      const a = terms[i]
      const b = terms[j]
      if (a.host === b.host) continue
      const aEnd = a.end === null ? until : a.end
      if (b.start >= aEnd) continue
      const bEnd = b.end === null ? until : b.end
      const to = aEnd < bEnd ? aEnd : bEnd
      if (to > b.start) found.push({ first: a, second: b, from: b.start, to, ms: ms(to - b.start) })
    }
  }
  return found
}

// A summary for reports: the terms, the overlaps, the largest overlap in ms (0 when none), and
// the smallest gap in ms between the end of one term and the next start by another host
// (negative when they overlapped; null with fewer than two terms).
function leadershipReport (hosts, name, options = {}) {
  const terms = leadershipTerms(hosts, name)
  const overlaps = leadershipOverlaps(hosts, name, { ...options, terms })
  let minGapMs = null
  for (let i = 1; i < terms.length; i++) {
    const prev = terms[i - 1]
    if (prev.end === null || prev.host === terms[i].host) continue
    const gap = ms(terms[i].start - prev.end)
    if (minGapMs === null || gap < minGapMs) minGapMs = gap
  }
  return {
    terms,
    overlaps,
    maxOverlapMs: overlaps.reduce((m, o) => Math.max(m, o.ms), 0),
    minGapMs
  }
}

// Wait until one of the hosts emits an event matching pred; resolves { host, event }.
function waitForAny (hosts, pred, timeoutMs = 10000, description, { since } = {}) {
  const base = toPredicate(pred)
  const ac = new AbortController()
  return new Promise((resolve, reject) => {
    let done = false
    const timer = setTimeout(() => {
      if (done) return
      done = true
      ac.abort()
      reject(new Error(`timeout after ${timeoutMs} ms waiting for ${description || describePred(pred)} on any of ${hosts.map((h) => h.label).join(', ')}\n${formatTimeline(hosts)}`))
    }, timeoutMs)
    hosts.forEach((h, k) => {
      const from = since ? since[k] : 0
      h.waitFor(base, timeoutMs + 1000, description, { since: from, signal: ac.signal }).then((event) => {
        if (done) return
        done = true
        clearTimeout(timer)
        ac.abort()
        resolve({ host: h, event })
      }, () => {})
    })
  })
}

// Resolves once host h is ready and holds a key for every name in etcd: it is in the queue.
async function queued (etcd, h, { prefix, names = ['job'], timeoutMs = 10000 }) {
  await h.ready
  for (const name of names) {
    await etcd.waitKeys(`${prefix}/${name}/`, (kvs) => keyOf(kvs, h.id), timeoutMs, `key of ${h.label} for ${name}`)
  }
}

// Hosts started one after the other, each spawned only once the one before it is queued, so that
// the queue order (create revision) of every name is the order of `labels`. The id of each host
// is `<label>-<prefix>`; extra: more host.js options for all of them.
async function queueHosts (etcd, labels, { prefix, ttl, names = ['job'], extra = {} }) {
  const hosts = []
  for (const label of labels) {
    const h = spawnHost({ endpoints: etcd.endpoints, ttl, prefix, names, id: `${label}-${prefix}`, ...extra }, label)
    await queued(etcd, h, { prefix, names })
    hosts.push(h)
  }
  return hosts
}

// A is elected on every name, then B waits behind it on all of them. leader: what only A gets
// (other endpoints, such as a proxy's; options such as a guardian). timeoutMs bounds A's election
// on each name (from its spawn for the first) and B's queueing.
async function leaderAndFollower (etcd, { prefix, ttl, names = ['job'], leader = {}, timeoutMs = 15000 }) {
  const a = spawnHost({ endpoints: etcd.endpoints, ttl, prefix, names, ...leader }, 'A')
  for (const name of names) await a.waitFor({ ev: 'start', name }, timeoutMs, `A leads ${name}`)
  const b = spawnHost({ endpoints: etcd.endpoints, ttl, prefix, names }, 'B')
  await b.ready
  await etcd.waitKeys(`${prefix}/`, (kvs) => kvs.filter((kv) => kv.value === b.id).length === names.length, timeoutMs, 'B queued on every name')
  return [a, b]
}

module.exports = {
  queued, queueHosts, leaderAndFollower,
  spawnHost, killAll, now, ms, timeline, formatTimeline, assertOneLeaderAtATime, assertStartStopAlternate, waitForAny, Host,
  deathOf, leadershipTerms, leadershipOverlaps, leadershipReport
}
