'use strict'

// What a locker's core keeps for each singleton, observer and term() read it has open. Each has
// the serial the native core gave it: the events that concern it carry that serial.

const { Singleton, Observer } = require('./handles.js')

// One locker(name, fn), from the call until etcd confirmed its key deleted. A locker may hold
// 100 000 of these, so what most never use (a remove, a handover or a pause under way) is not an
// own field of each but a default on the prototype (below), set on the instance when it happens.
class Registration {
  serial = null
  leading = false
  leader = null // the leader's locker id as last reported; null when nobody leads or not known
  leaderToken = null
  control = null // the TermControl (term.js) of the current or the last term
  work = null // the promise fn returned this term, until it settles
  termsWon = 0
  since = Date.now() // when it was registered, or `leading` last changed

  constructor (core, name, fn) {
    this.core = core
    this.fn = fn
    this.singleton = new Singleton(name, this)
  }
}
Object.assign(Registration.prototype, {
  removing: null, // the remove() promise, once remove() was called
  resolveRemove: null,
  lastTakeoverMs: null,
  lastStop: null, // the reason of the last 'stop'
  handingOver: null, // the handover() promise, while one is under way
  handoverTo: null, // its target's locker id (null: the next in line)
  paused: false, // pause() without resume(): out of the queue
  standby: null, // where the native side is in a pause: 'draining', 'asked', 'paused' (core.js)
  pausing: null, // the pause() promise, until the pause took effect
  resolvePause: null,
  priority: 0, // locker(name, fn, { priority })
  handoverPreferred: false // the handover under way is the core's, to the preferred candidate
})

// One locker.observe(name), until the Observer is closed.
class Observation {
  serial = null
  leader = null
  token = null
  term = undefined // the last 'term' reported: an object, null (nobody leads), undefined (none yet)
  closed = false

  constructor (core, name) {
    this.core = core
    this.observer = new Observer(name, this)
  }
}

// One locker.term(name) or locker.terms() read, until etcd answered. `call` names it in errors.
class Query {
  constructor (call, resolve, reject) {
    this.call = call
    this.resolve = resolve
    this.reject = reject
  }
}

module.exports = { Registration, Observation, Query }
