'use strict'

// The API of locked@2.x, value consensus on one etcd path, mapped onto the singleton election:
// every node campaigns under `path`, the leader's value is the cluster's value, and followers learn
// it from the election's 'leader' events. Each node has its own TTL and so its own lease, like a
// separate host. The key value is `id:::value` (what 2.x calls localdata), so any node can tell
// the elected id and value apart.

const { EventEmitter } = require('node:events')
const { randomUUID } = require('node:crypto')
const { TTL, ttlFault, trimPrefix } = require('./lib/rules.js')
const { typeError, rangeError, describe } = require('./lib/errors.js')

const SEPARATOR = ':::'
// The election name under `path`: keys are `<path>/candidates/<lease id in hex>`.
const ELECTION = 'candidates'

function parse (data) {
  if (data == null) return { id: null, value: null }
  const at = data.indexOf(SEPARATOR)
  if (at < 0) return { id: data, value: null }
  return { id: data.slice(0, at), value: data.slice(at + SEPARATOR.length) }
}

class Node extends EventEmitter {
  #makeLocker
  #locker = null
  #singleton = null
  #leader = null // the elected node's localdata, or null
  #local

  constructor (makeLocker, local) {
    super()
    this.#makeLocker = makeLocker
    this.#local = local
  }

  /** Starts competing for the path. */
  start () {
    if (this.#singleton) return
    if (!this.#locker) {
      this.#locker = this.#makeLocker()
      this.#locker.on('error', (err) => this.#error(err))
      this.#locker.on('renewed', () => {
        // Our lease was renewed: as leader that renews the term; for everyone it confirms, on a
        // live connection and watch, that the leader still holds its key.
        if (this.isSelected()) this.emit('refresh', this.#local.value, this.#local.id)
        if (this.#leader !== null) this.emit('ping', this.value(), this.id())
      })
    }
    const singleton = this.#locker(ELECTION)
    this.#singleton = singleton
    singleton.on('leader', (data) => {
      if (singleton !== this.#singleton) return
      const changed = data !== null && data !== this.#leader
      this.#leader = data
      if (changed) this.emit('change', this.value(), this.id())
    })
    singleton.on('start', () => this.emit('select', this.#local.value, this.#local.id))
    singleton.on('stop', () => this.emit('deselect'))
    singleton.on('error', (err) => this.#error(err))
  }

  /** Stops competing; a leader hands over at once. Resolves once etcd confirmed. */
  stop () {
    const singleton = this.#singleton
    if (!singleton) return Promise.resolve()
    this.#singleton = null
    this.#leader = null
    // The node's locker (its lease and connection) goes with it; start() makes a new one.
    const locker = this.#locker
    this.#locker = null
    return singleton.remove().then(() => locker.close().catch((err) => this.#error(err)))
  }

  /** The id of the elected node, or null before any. */
  id () { return parse(this.#leader).id }
  /** The value of the elected node, or null before any. */
  value () { return parse(this.#leader).value }
  localid () { return this.#local.id }
  /** The value as given in the options (locked@2.x did not turn it into a string). */
  localvalue () { return this.#local.given }
  localdata () { return this.#local.id + SEPARATOR + this.#local.value }
  /** Whether this node is the elected one (checked against its leadership deadline). */
  isSelected () { return this.#singleton !== null && this.#singleton.isLeader() }

  #error (err) {
    // Errors of the library never crash the process: without listeners they are dropped.
    if (this.listenerCount('error') > 0) this.emit('error', err)
  }
}

// A node of `locked` (the public API) on the hosts and options of the locker it was asked of.
function createNode (locked, endpoints, lockerOptions, options) {
  checkNodeOptions(options)
  const { id = randomUUID(), path, value, ttl = lockerOptions.ttl } = options
  const local = { id, value: String(value), given: value }
  const { tls, auth, guardian, logger } = lockerOptions
  const nodeOptions = { ttl, prefix: trimPrefix(path), id: id + SEPARATOR + local.value, tls, auth, guardian, logger }
  return new Node(() => locked(endpoints, nodeOptions), local)
}

// Checked at locker(opts), as locked() checks its options, rather than at start(): a TypeError
// (ERR_INVALID_ARG_TYPE) for a wrong type or a missing value, a RangeError (ERR_OUT_OF_RANGE) for
// an empty path or id, an id with the separator, a TTL out of range.
function checkNodeOptions ({ id, path, value, ttl }) {
  if (typeof path !== 'string') {
    throw typeError(`locker(opts): opts.path must be a string such as '/master', got ${describe(path)}`)
  }
  if (trimPrefix(path) === '') {
    throw rangeError(`locker(opts): opts.path must not be empty, got ${JSON.stringify(path)}`)
  }
  if (value === undefined || value === null) {
    throw typeError(`locker(opts): opts.value is required (a string, number or boolean), got ${describe(value)}`)
  }
  if (id !== undefined && typeof id !== 'string') {
    throw typeError(`locker(opts): opts.id must be a string, got ${describe(id)}`)
  }
  if (id === '' || (id !== undefined && id.includes(SEPARATOR))) {
    throw rangeError(`locker(opts): opts.id must be a non-empty string without '${SEPARATOR}', got ${JSON.stringify(id)}`)
  }
  const fault = ttl === undefined ? null : ttlFault(ttl)
  if (fault === 'type') {
    throw typeError(`locker(opts): opts.ttl must be a number of seconds, got ${describe(ttl)}`)
  }
  if (fault !== null) {
    throw rangeError(`locker(opts): opts.ttl must be a whole number of seconds from ${TTL.min} to ${TTL.max}, got ${ttl}`)
  }
}

module.exports = { createNode, Node }
