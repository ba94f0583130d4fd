'use strict'
// Small shared bits for the test files.

const assert = require('node:assert')
const crypto = require('node:crypto')

// A prefix of its own for every test, so tests sharing one etcd never see each other's keys.
function uniquePrefix (label) {
  return `t-${label}-${crypto.randomBytes(4).toString('hex')}`
}

// The next `event` of an in-process emitter, or a rejection after timeoutMs.
function nextEvent (emitter, event, timeoutMs = 10000, description) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on)
      reject(new Error(`timeout after ${timeoutMs} ms waiting for ${description || `'${event}'`}`))
    }, timeoutMs)
    function on (...args) {
      clearTimeout(timer)
      resolve(args)
    }
    emitter.once(event, on)
  })
}

// Bound a promise in time.
function within (promise, timeoutMs, description) {
  let timer
  return Promise.race([
    promise,
    new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`timeout after ${timeoutMs} ms: ${description}`)), timeoutMs)
    })
  ]).finally(() => clearTimeout(timer))
}

// Time deliberately let pass: a window in which something must NOT happen (use only when no later
// observable step can prove it), the length of a simulated outage, or a pause between polls.
// Named so it cannot be mistaken for locker.observe(name), which the tests call too.
const quietWindow = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Polls fn() (sync or async) until it returns something truthy, and resolves that value; rejects
// after timeoutMs. For state that announces no event (stats(), leader(), a process table).
async function until (fn, timeoutMs, description, pollMs = 20) {
  const deadline = Date.now() + timeoutMs
  while (true) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timeout after ${timeoutMs} ms waiting for ${description}`)
    await quietWindow(pollMs)
  }
}

// A small seeded PRNG (mulberry32), so a randomized test can be replayed from its printed seed.
//   const rnd = seededRandom(seed); rnd() in [0, 1); rnd.int(lo, hi) in [lo, hi]; rnd.pick(array);
//   rnd.between(lo, hi) a float in [lo, hi); rnd.chance(p) true with probability p
function seededRandom (seed) {
  let a = (Number(seed) >>> 0) || 1
  const rnd = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  rnd.int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1))
  rnd.between = (lo, hi) => lo + rnd() * (hi - lo)
  rnd.pick = (array) => array[Math.floor(rnd() * array.length)]
  rnd.chance = (p) => rnd() < p
  return rnd
}

// One machine-readable line of measurements in the test's diagnostics (TAP '# metric {...}'),
// e.g. metric(t, 'scenario-3a', { overlapMs: 0, recoveryMs: 812 }). Grep the output for '# metric'.
function metric (t, scenario, fields) {
  const rounded = {}
  for (const [k, v] of Object.entries(fields)) rounded[k] = typeof v === 'number' ? Math.round(v * 10) / 10 : v
  t.diagnostic(`metric ${JSON.stringify({ scenario, ...rounded })}`)
}

// The safety margin of the leadership deadline, in ms: mirrors margin() in src/session.rs (15 % of
// the TTL, 0.3 to 1.5 s). The deadline is the send time of the last answered keepalive + the TTL −
// this margin; keep the two in step, or every bound below checks the wrong deadline.
function marginMs (ttl) {
  return Math.min(1500, Math.max(300, ttl * 150))
}

// How far the deadline may seem to move when read through performance.now() (validUntil, validFor)
// instead of the addon's own clock: two clocks read a few µs apart, rounded to 0.1 ms.
const CLOCK_READ_MS = 25

// How late a 'deadline' stop may reach the application after the deadline itself: the margin is
// there to carry the stop to the application's code before etcd could expire the lease, so a stop
// may use up half of it (a scheduling delay of a loaded machine) — while a stop at a deadline
// computed without the margin would come a whole margin late, and fail every bound using this.
function stopDelayMs (ttl) {
  return marginMs(ttl) / 2
}

// A 'deadline' stop checked against the deadline the host's own last answered keepalive implies.
// sinceRenewalMs: the time since that keepalive was sent, read when the stop was delivered (host.js
// puts it on its stop events; in-process, locker.stats() in the stop listener). The stop comes
// at the deadline (sent + TTL − margin), not before, and at most stopDelayMs(ttl) after it.
// With `at` (the stop's time) and `outageAt` (when the test cut the host off, same clock, ms or
// hrtime BigInt ns alike), the keepalive must have been sent before the outage began: so the stop
// also came no later than outageAt + TTL − margin + stopDelayMs(ttl). Returns lateMs (stop after
// the deadline) and lastSendMs (the keepalive's send time, or null without `at`).
function assertDeadlineStop ({ sinceRenewalMs, at, outageAt, ttl, label = 'the leader' }) {
  assert.strictEqual(typeof sinceRenewalMs, 'number', `${label}: the time since the last answered keepalive is known at the stop`)
  const deadlineMs = ttl * 1000 - marginMs(ttl)
  const lateMs = sinceRenewalMs - deadlineMs
  assert.ok(lateMs >= -1, `${label} stopped ${(-lateMs).toFixed(1)} ms before its deadline ` +
    `(last answered keepalive sent ${sinceRenewalMs} ms before the stop; deadline at ${deadlineMs} ms = TTL − margin)`)
  assert.ok(lateMs <= stopDelayMs(ttl), `${label} stopped ${lateMs.toFixed(1)} ms after its deadline ` +
    `(last answered keepalive sent ${sinceRenewalMs} ms before the stop; TTL − margin = ${deadlineMs} ms, ` +
    `allowed delay ${stopDelayMs(ttl)} ms): a deadline without the margin, or a late stop`)
  let lastSendMs = null
  if (at !== undefined) {
    const toMs = (x) => (typeof x === 'bigint' ? Number(x) / 1e6 : x)
    lastSendMs = toMs(at) - sinceRenewalMs
    if (outageAt !== undefined) {
      const afterOutage = lastSendMs - toMs(outageAt)
      assert.ok(afterOutage <= CLOCK_READ_MS, `${label}: its last answered keepalive was sent ${afterOutage.toFixed(1)} ms after the outage began`)
    }
  }
  return { lateMs, lastSendMs }
}

// Two processes acting on one etcd watch event (an outside delete reaching the old leader and its
// successor) are apart only by how soon each is scheduled: an old leader that learned of the
// deletion any other way (its next keepalive, every TTL/3, or its deadline) would be later by far.
const SAME_EVENT_MS = 250

// A host continued with SIGCONT after its deadline passed needs no network to know it: the
// addon's clock says so as soon as the process runs again. Only scheduling delays the stop.
const RESUME_PROMPT_MS = 250

// A leader whose key an operator deleted learns of it from the same etcd watch as its successor
// (its watch may be on another member than the one the deletion was written to, or just back
// after a fault of its connection): it stops within this, more than the scheduling delay of one
// event on two hosts, far less than a keepalive period or a deadline, which is how it would learn
// of it otherwise.
const OUTSIDE_PROMPT_MS = 1000

// After a handover, a pause or a resign, how long a start that must not happen has to show: an
// election takes milliseconds on loopback; this is the window the tests watch before asserting
// that nobody else started.
const WRONG_START_WINDOW_MS = 500

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i

// Starts a server on a port chosen beforehand, again (up to 5 times) while the start fails
// because another process took that port in between: `start(attempt)` rejects with an error whose
// `addressInUse` is set in that case. Any other failure is thrown at once.
async function retryPortRace (start) {
  let lastErr
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      return await start(attempt)
    } catch (err) {
      lastErr = err
      if (!err.addressInUse) throw err
    }
  }
  throw lastErr
}

module.exports = {
  retryPortRace,
  uniquePrefix, nextEvent, within, quietWindow, until, seededRandom, metric, UUID_V4,
  marginMs, CLOCK_READ_MS, stopDelayMs, assertDeadlineStop, SAME_EVENT_MS, RESUME_PROMPT_MS, OUTSIDE_PROMPT_MS,
  WRONG_START_WINDOW_MS
}
