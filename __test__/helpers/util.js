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

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i

module.exports = { uniquePrefix, nextEvent, within, observe, UUID_V4 }
