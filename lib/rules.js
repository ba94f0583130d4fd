'use strict'

// The rules every way in applies (locked(), the locked@2.x nodes in v2.js, the CLI), each written
// once. The messages stay with their callers: each words them its own way, and users match on them.

const { typeError, rangeError, describe } = require('./errors.js')

/** What locked() uses for an option left out. */
const DEFAULTS = Object.freeze({ ttl: 10, prefix: 'locked', drainTimeout: 10000, minTermMs: 5000 })

/** Bounds of the lease TTL, a whole number of seconds. */
const TTL = Object.freeze({ min: 2, max: 3600 })

/** How `ttl` breaks the TTL rule: 'type' (not a number), 'whole', 'min' or 'max'; null if it keeps it. */
function ttlFault (ttl) {
  if (typeof ttl !== 'number' || Number.isNaN(ttl)) return 'type'
  if (!Number.isInteger(ttl)) return 'whole'
  if (ttl < TTL.min) return 'min'
  if (ttl > TTL.max) return 'max'
  return null
}

// The key layout (src/keys.rs builds the keys): a locker's elections live under `<prefix>/`, the
// candidates of `name` at `<prefix>/<name>/<lease hex>`, the library's own keys under `<prefix>//`.
// So a name is one key segment, and a prefix is used without its trailing slashes.

/** `prefix` as the keys use it. */
function trimPrefix (prefix) {
  return prefix.replace(/\/+$/, '')
}

/** Throws unless `name` can name an election; `call` is the call it was given to, as messages show it. */
function checkName (name, call) {
  if (typeof name !== 'string') {
    throw typeError(`${call}: name must be a string, got ${describe(name)}`)
  }
  if (name === '' || name.includes('/')) {
    throw rangeError(`${call}: name must be a non-empty string without '/', got ${JSON.stringify(name)}`)
  }
}

module.exports = { DEFAULTS, TTL, ttlFault, trimPrefix, checkName }
