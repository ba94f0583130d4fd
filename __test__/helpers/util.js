'use strict'
// Small shared bits for the test files.

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

// A deliberate observation window, for asserting that something does NOT happen (use only when no
// later observable step can prove it), or for the length of a simulated outage.
const observe = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

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

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i

module.exports = { uniquePrefix, nextEvent, within, observe, seededRandom, metric, UUID_V4 }
