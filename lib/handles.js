'use strict'

// What users hold: a Singleton per locker(name, fn), an Observer per locker.observe(name). Each
// reads and asks through its state (state.js); the locker's core does the work.

const { EventEmitter } = require('node:events')

// The table of a handle's listeners. EventEmitter makes it a `{ __proto__: null }` literal, which
// V8 keeps as a hash table of some 190 bytes; a locker holds one per singleton, 100 000 of them
// at its largest. Objects made by this constructor have no inherited keys either (their
// prototype's prototype is null) but are ordinary objects of a few dozen bytes.
function Listeners () {}
Listeners.prototype = Object.create(null)

class Singleton extends EventEmitter {
  #registration

  constructor (name, registration) {
    super()
    this._events = new Listeners()
    this.#registration = registration
    Object.defineProperty(this, 'name', { value: name, enumerable: true })
  }

  /** Un-registers this host: steps down if leading, then deletes its key. */
  remove () {
    return this.#registration.core.remove(this.#registration)
  }

  /**
   * Hands the lead to the candidate with locker id `toId` (or, without it, the next in line):
   * stops and drains this host's work like remove(), then that candidate leads and this host
   * queues again. Resolves with the new leader's id and token.
   */
  handover (toId) {
    return this.#registration.core.handover(this.#registration, toId)
  }

  /**
   * Standby: stops and drains this host's work like remove() if it leads, then leaves the queue
   * (the next in line leads) but stays registered. Resolves once its key is gone.
   */
  pause () {
    return this.#registration.core.pause(this.#registration)
  }

  /** Back in the queue after pause(), behind the candidates queued meanwhile. */
  resume () {
    this.#registration.core.resume(this.#registration)
  }

  /** Whether this host leads now, checked against the leadership deadline at the time of the call. */
  isLeader () {
    return this.#registration.core.isLeading(this.#registration)
  }

  /** The locker id of the current leader, or null when nobody leads (or not known yet). */
  leader () {
    return this.#registration.leader
  }
}

class Observer extends EventEmitter {
  #observation

  constructor (name, observation) {
    super()
    this.#observation = observation
    Object.defineProperty(this, 'name', { value: name, enumerable: true })
  }

  /** The locker id of the current leader, or null when nobody leads (or not known yet). */
  leader () {
    return this.#observation.leader
  }

  /** The current leader's fencing token (its key's create revision), or null. */
  token () {
    return this.#observation.token
  }

  /**
   * Who leads and what the candidates prefer, as last seen: { leader, token, priority, preferred,
   * handover }, null when nobody leads or before the first report.
   */
  term () {
    return this.#observation.term ?? null
  }

  /** Stops observing. */
  close () {
    this.#observation.core.unobserve(this.#observation)
  }
}

module.exports = { Singleton, Observer }
