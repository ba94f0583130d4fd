'use strict'

// One term of leadership, in two parts: the Term that fn and 'start' listeners get, which only
// reads, and the TermControl the locker keeps to end it. A locker with thousands of singletons
// keeps thousands of these, so they hold no closures and share their methods.

const { performance } = require('node:perf_hooks')
const { LockedError } = require('./errors.js')

class TermControl {
  #controller = null // made on first use of `signal`: most code never looks at it
  #reason = null // why the term ended, once it did
  #endedAt = null

  /** `registration` is the Registration (state.js) that won the term. */
  constructor (registration, token) {
    this.registration = registration
    this.term = new Term(this, token)
  }

  get signal () {
    if (this.#controller === null) {
      this.#controller = new AbortController()
      if (this.#reason !== null) this.#controller.abort(this.#ended())
    }
    return this.#controller.signal
  }

  get validUntil () {
    if (this.#endedAt !== null) return this.#endedAt
    return performance.now() + this.registration.core.validFor(this.registration)
  }

  end (reason) {
    this.#endedAt = performance.now()
    this.#reason = reason
    if (this.#controller !== null) this.#controller.abort(this.#ended())
  }

  // Made only for a signal: a locker closing with 100 000 terms would otherwise spend a good
  // part of its close building errors (with their stack traces) that nobody reads.
  #ended () {
    const err = new LockedError(`leadership of ${JSON.stringify(this.registration.singleton.name)} ended: ${this.#reason}`, 'LEADERSHIP_ENDED')
    err.reason = this.#reason
    return err
  }
}

class Term {
  #control

  constructor (control, token) {
    this.#control = control
    this.token = token
    Object.freeze(this)
  }

  /** Aborted when this term ends, with a LEADERSHIP_ENDED LockedError. */
  get signal () {
    return this.#control.signal
  }

  /** The local leadership deadline (performance.now() time); frozen once the term ended. */
  get validUntil () {
    return this.#control.validUntil
  }
}

module.exports = { TermControl, Term }
