'use strict'

// locked(hosts, options) makes a locker: a function that registers singletons, with methods, and
// an EventEmitter for locker-wide events. Its work is done by a LockerCore (core.js).

const { EventEmitter } = require('node:events')
const { normalizeHosts, normalizeOptions } = require('./options.js')
const { LockerCore } = require('./core.js')

// Lockers are callable functions that are also EventEmitters (for connection-level 'error').
const LockerPrototype = Object.create(Function.prototype)
for (const key of Object.getOwnPropertyNames(EventEmitter.prototype)) {
  if (key !== 'constructor') {
    Object.defineProperty(LockerPrototype, key, Object.getOwnPropertyDescriptor(EventEmitter.prototype, key))
  }
}

// Called as locker(object) instead of locker(name, fn): with the locker's endpoints, its
// normalized options and the object. The package entry installs the locked@2.x nodes here, so
// that this API does not depend on the compatibility layer built on it.
let objectCall = null

/** locker[guardProcess](pid): the guardian waits for `pid` to be gone before it revokes (`locked run`). */
const guardProcess = Symbol('locked.guardProcess')

/** Sets what a locker called with an object does (see objectCall). */
function onObjectCall (handler) {
  objectCall = handler
}

function locked (hosts, options) {
  const endpoints = normalizeHosts(hosts)
  const opts = normalizeOptions(options)
  const locker = function locker (name, fn, options) {
    if (objectCall !== null && name !== null && typeof name === 'object') return objectCall(endpoints, opts, name)
    return core.register(name, fn, options)
  }
  Object.setPrototypeOf(locker, LockerPrototype)
  EventEmitter.call(locker)
  const core = new LockerCore(endpoints, opts, locker)
  Object.defineProperties(locker, {
    id: { value: () => core.id },
    singletons: { value: () => core.singletons() },
    observe: { value: function observe (name) { return core.observe(name) } },
    term: { value: function term (name) { return core.term(name) } },
    terms: { value: function terms () { return core.terms() } },
    stats: { value: () => core.stats() },
    pause: { value: function pause () { return core.pauseAll() } },
    resume: { value: function resume () { core.resumeAll() } },
    close: { value: () => core.close() },
    [guardProcess]: { value: (pid) => core.guardProcess(pid) }
  })
  return locker
}

module.exports = { locked, onObjectCall, guardProcess }
