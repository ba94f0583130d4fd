'use strict'

// The API of locked@2.x, value consensus on one etcd path, mapped onto the singleton election:
// every node campaigns under `path`, the leader's value is the cluster's value, and followers learn
// it from the election's 'leader' events. Each node has its own TTL and so its own lease, like a
// separate host. The key value is `id:::value` (what 2.x calls localdata), so any node can tell
// the elected id and value apart.

const { EventEmitter } = require('node:events')
const { randomUUID } = require('node:crypto')
const { TTL, ttlFault, trimPrefix } = require('./lib/rules.js')

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
  const { id = randomUUID(), path, value, ttl = lockerOptions.ttl } = options
  if (typeof path !== 'string' || trimPrefix(path) === '') {
    throw new TypeError('locker(opts): opts.path must be a non-empty string, e.g. \'/master\'')
  }
  if (value === undefined || value === null) {
    throw new TypeError('locker(opts): opts.value is required')
  }
  if (typeof id !== 'string' || id === '' || id.includes(SEPARATOR)) {
    throw new TypeError(`locker(opts): opts.id must be a non-empty string without '${SEPARATOR}'`)
  }
  const local = { id, value: String(value), given: value }
  const { tls, auth, guardian, logger } = lockerOptions
  const nodeOptions = { ttl, prefix: trimPrefix(path), id: id + SEPARATOR + local.value, tls, auth, guardian, logger }
  // Checked now, as locked() checks its options, rather than at start(); only a TTL above the
  // maximum is left to locked() and so to start().
  const fault = ttlFault(ttl)
  if (fault !== null && fault !== 'max') {
    throw new RangeError(`locker(opts): opts.ttl must be a whole number of seconds, at least ${TTL.min}, got ${ttl}`)
  }
  return new Node(() => locked(endpoints, nodeOptions), local)
}

module.exports = { createNode, Node }
