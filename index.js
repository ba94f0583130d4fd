'use strict'

// The public API: a callable locker and one EventEmitter per singleton. The election itself runs
// in the native core; this file validates input, routes the core's events to emitters, and keeps
// the process alive exactly while singletons are registered.

const { EventEmitter } = require('node:events')
const { randomUUID } = require('node:crypto')
const { performance } = require('node:perf_hooks')
const { NativeLocker } = require('./binding.js')
const { createNode } = require('./v2.js')

const DEFAULT_TTL = 10
const DEFAULT_PREFIX = 'locked'
const DEFAULT_DRAIN_TIMEOUT = 10000

function noop () {}

class LockedError extends Error {
  constructor (message, code, options) {
    super(message, options)
    this.name = 'LockedError'
    this.code = code
  }
}

function typeError (message) {
  const err = new TypeError(message)
  err.code = 'ERR_INVALID_ARG_TYPE'
  return err
}

function rangeError (message) {
  const err = new RangeError(message)
  err.code = 'ERR_OUT_OF_RANGE'
  return err
}

function describe (value) {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'string' ? `the string ${JSON.stringify(value)}` : `a ${typeof value}`
}

const HOST = /^(?:http:\/\/)?(?:\[[0-9a-fA-F:.]+\]|[^\s/:,[\]]+):(\d{1,5})\/?$/

function normalizeHosts (hosts) {
  let list
  if (typeof hosts === 'string') {
    list = hosts.split(',')
  } else if (Array.isArray(hosts)) {
    list = []
    for (const entry of hosts) {
      if (typeof entry !== 'string') {
        throw typeError(`locked(hosts): every host must be a string like '127.0.0.1:2379', got ${describe(entry)}`)
      }
      list.push(...entry.split(','))
    }
  } else {
    throw typeError(`locked(hosts): hosts must be an array of 'host:port' strings or a 'host:port[,host:port]' string, got ${describe(hosts)}`)
  }
  list = list.map((h) => h.trim()).filter((h) => h !== '')
  if (list.length === 0) throw rangeError('locked(hosts): no etcd host given')
  for (const host of list) {
    const match = HOST.exec(host)
    if (!match || Number(match[1]) < 1 || Number(match[1]) > 65535) {
      throw rangeError(`locked(hosts): invalid etcd host ${JSON.stringify(host)}, expected 'host:port' such as '127.0.0.1:2379'`)
    }
  }
  return list
}

function normalizeOptions (options) {
  if (options === undefined || options === null) options = {}
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw typeError(`locked(hosts, options): options must be an object, got ${describe(options)}`)
  }
  const { ttl = DEFAULT_TTL, prefix = DEFAULT_PREFIX, id, drainTimeout = DEFAULT_DRAIN_TIMEOUT, handleSignals = false, tls, auth } = options
  if (typeof ttl !== 'number' || Number.isNaN(ttl)) {
    throw typeError(`locked: options.ttl must be a number of seconds, got ${describe(ttl)}`)
  }
  if (!Number.isInteger(ttl) || ttl < 2 || ttl > 3600) {
    throw rangeError(`locked: options.ttl must be a whole number of seconds from 2 to 3600, got ${ttl}`)
  }
  if (typeof prefix !== 'string') {
    throw typeError(`locked: options.prefix must be a string, got ${describe(prefix)}`)
  }
  const trimmed = prefix.replace(/\/+$/, '')
  if (trimmed === '') throw rangeError('locked: options.prefix must not be empty')
  if (id !== undefined && typeof id !== 'string') {
    throw typeError(`locked: options.id must be a string, got ${describe(id)}`)
  }
  if (id === '') throw rangeError('locked: options.id must not be empty')
  if (typeof drainTimeout !== 'number' || Number.isNaN(drainTimeout)) {
    throw typeError(`locked: options.drainTimeout must be a number of milliseconds, got ${describe(drainTimeout)}`)
  }
  if (drainTimeout < 0) throw rangeError(`locked: options.drainTimeout must not be negative, got ${drainTimeout}`)
  if (typeof handleSignals !== 'boolean') {
    throw typeError(`locked: options.handleSignals must be a boolean, got ${describe(handleSignals)}`)
  }
  return {
    ttl,
    prefix: trimmed,
    id: id === undefined ? randomUUID() : id,
    drainTimeout,
    handleSignals,
    tls: normalizeTls(tls),
    auth: normalizeAuth(auth)
  }
}

function pem (value, what) {
  if (value === undefined) return undefined
  if (Buffer.isBuffer(value)) return value.toString('utf8')
  if (typeof value === 'string') return value
  throw typeError(`locked: options.tls.${what} must be a PEM string or Buffer, got ${describe(value)}`)
}

function normalizeTls (tls) {
  if (tls === undefined) return undefined
  if (tls === null || typeof tls !== 'object' || Array.isArray(tls)) {
    throw typeError(`locked: options.tls must be an object { ca, cert, key }, got ${describe(tls)}`)
  }
  const out = { ca: pem(tls.ca, 'ca'), cert: pem(tls.cert, 'cert'), key: pem(tls.key, 'key') }
  if ((out.cert === undefined) !== (out.key === undefined)) {
    throw rangeError('locked: options.tls.cert and options.tls.key must be given together')
  }
  return out
}

function normalizeAuth (auth) {
  if (auth === undefined) return undefined
  if (auth === null || typeof auth !== 'object' || Array.isArray(auth)) {
    throw typeError(`locked: options.auth must be an object { username, password }, got ${describe(auth)}`)
  }
  // Never echo the values: they are credentials.
  if (typeof auth.username !== 'string' || auth.username === '') {
    throw typeError('locked: options.auth.username must be a non-empty string')
  }
  if (typeof auth.password !== 'string') {
    throw typeError('locked: options.auth.password must be a string')
  }
  return { username: auth.username, password: auth.password }
}

// DEBUG=locked (or a pattern matching it, as the `debug` package reads it) or LOCKED_LOG=debug
// narrates the election's steps on stderr.
function debugEnabled () {
  if (/^debug$/i.test(process.env.LOCKED_LOG || '')) return true
  const patterns = (process.env.DEBUG || '').split(/[\s,]+/).filter(Boolean)
  let on = false
  for (const p of patterns) {
    const negated = p.startsWith('-')
    const re = new RegExp('^' + (negated ? p.slice(1) : p).replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$')
    if (re.test('locked')) on = !negated
  }
  return on
}

// Lockers still open when the process exits: `process.exit()` skips native cleanup hooks, so
// revoke their leases here and let other hosts take over at once instead of after a TTL.
const openLockers = new Set()
process.on('exit', () => {
  for (const native of openLockers) native.closeSync()
})

// Lockers created with `handleSignals: true`: on SIGTERM/SIGINT they close (stepping down and
// revoking the lease), then the signal takes its default course unless the application listens too.
const signalLockers = new Set()
function onSignal (signal) {
  const closing = [...signalLockers].map((l) => l.close().catch(() => {}))
  Promise.all(closing).then(() => {
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('SIGINT', onSignal)
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
  })
}
function watchSignals (locker) {
  if (signalLockers.size === 0) {
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  }
  signalLockers.add(locker)
}
function unwatchSignals (locker) {
  if (signalLockers.delete(locker) && signalLockers.size === 0) {
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('SIGINT', onSignal)
  }
}

// What fn and 'start' listeners get for one term. One object per term, its methods shared: a
// locker with thousands of singletons keeps thousands of these.
let endTerm
class Term {
  #state
  #controller = null // made on first use of `signal`: most code never looks at it
  #ended = null
  #endedAt = null

  constructor (state, token) {
    this.#state = state
    this.token = token
    Object.freeze(this)
  }

  /** Aborted when this term ends, with a LEADERSHIP_ENDED LockedError. */
  get signal () {
    if (this.#controller === null) {
      this.#controller = new AbortController()
      if (this.#ended) this.#controller.abort(this.#ended)
    }
    return this.#controller.signal
  }

  /** The local leadership deadline (performance.now() time); frozen once the term ended. */
  get validUntil () {
    if (this.#endedAt !== null) return this.#endedAt
    return performance.now() + this.#state.locker.validFor(this.#state)
  }

  static {
    endTerm = (term, reason) => {
      term.#endedAt = performance.now()
      term.#ended = new LockedError(`leadership of ${JSON.stringify(term.#state.singleton.name)} ended: ${reason}`, 'LEADERSHIP_ENDED')
      term.#ended.reason = reason
      if (term.#controller !== null) term.#controller.abort(term.#ended)
    }
  }
}

class Singleton extends EventEmitter {
  #state

  constructor (name, state) {
    super()
    this.#state = state
    Object.defineProperty(this, 'name', { value: name, enumerable: true })
  }

  /** Un-registers this host: steps down if leading, then deletes its key. */
  remove () {
    return this.#state.locker.removeSingleton(this.#state)
  }

  /** Whether this host leads now, checked against the leadership deadline at the time of the call. */
  isLeader () {
    return this.#state.locker.isLeading(this.#state)
  }

  /** The locker id of the current leader, or null when nobody leads (or not known yet). */
  leader () {
    return this.#state.leader
  }
}

class Observer extends EventEmitter {
  #state

  constructor (name, state) {
    super()
    this.#state = state
    Object.defineProperty(this, 'name', { value: name, enumerable: true })
  }

  /** The locker id of the current leader, or null when nobody leads (or not known yet). */
  leader () {
    return this.#state.leader
  }

  /** The current leader's fencing token (its key's create revision), or null. */
  token () {
    return this.#state.token
  }

  /** Stops observing. */
  close () {
    this.#state.close()
  }
}

function locked (hosts, options) {
  const endpoints = normalizeHosts(hosts)
  const opts = normalizeOptions(options)

  const bySerial = new Map() // serial -> state of registrations not yet confirmed removed
  const byName = new Map() // name -> state of the registered singletons
  const observers = new Map() // serial -> observer state
  const queries = new Map() // serial -> { resolve, reject } of term() reads in flight
  let closing = null // the close() promise once close was called
  let resolveClose
  let active = false

  let native
  try {
    native = new NativeLocker(endpoints, { ...opts, debug: debugEnabled() }, onEvent)
  } catch (err) {
    // What the core refuses at construction is a bad value (a certificate or key that does not
    // parse, an endpoint it cannot use).
    throw rangeError(`locked: ${err.message}`)
  }
  openLockers.add(native)

  function updateActive () {
    const want = bySerial.size > 0 || queries.size > 0 || (closing !== null && resolveClose !== undefined)
    if (want !== active) {
      active = want
      native.setActive(want)
    }
  }

  function reportError (emitter, err) {
    // Library errors never crash the process: without listeners they are dropped.
    if (emitter.listenerCount('error') > 0) emitter.emit('error', err)
  }

  function userError (state, err) {
    const wrapped = new LockedError(
      `singleton ${JSON.stringify(state.singleton.name)}: ${err && err.message ? err.message : String(err)}`,
      'USER_FN_THREW',
      { cause: err }
    )
    if (state.singleton.listenerCount('error') > 0) {
      state.singleton.emit('error', wrapped)
    } else {
      // Like any EventEmitter without an 'error' listener, but thrown outside the event routing
      // so the other singletons' events still arrive.
      process.nextTick(() => { throw err })
    }
  }

  function stopLeading (state, reason) {
    if (!state.leading) return
    state.leading = false
    state.lastStop = reason
    state.since = Date.now()
    // Until the election reports again, who leads is not known; it is no longer this host.
    const wasNamed = state.leader === opts.id
    if (wasNamed) {
      state.leader = null
      state.leaderToken = null
    }
    endTerm(state.term, reason)
    try {
      state.singleton.emit('stop', reason)
      if (wasNamed) state.singleton.emit('leader', null, null)
    } catch (err) {
      userError(state, err)
    }
  }

  // Waits for the work a leader's fn returned (bounded by drainTimeout) so that the next leader
  // does not overlap work that is still winding down.
  function drained (states) {
    const work = states.map((s) => s.work).filter(Boolean)
    if (work.length === 0) return Promise.resolve()
    let timer
    const timeout = new Promise((resolve) => { timer = setTimeout(resolve, opts.drainTimeout) })
    return Promise.race([Promise.allSettled(work), timeout]).finally(() => clearTimeout(timer))
  }

  function onEvent (ev) {
    if (ev.kind === 'closed') {
      for (const state of bySerial.values()) state.resolveRemove?.()
      bySerial.clear()
      for (const observer of observers.values()) observer.closed = true
      observers.clear()
      for (const query of queries.values()) query.reject(new LockedError(`term(${JSON.stringify(query.name)}): locker is closed`, 'LOCKER_CLOSED'))
      queries.clear()
      unwatchSignals(locker)
      byName.clear()
      openLockers.delete(native)
      const done = resolveClose
      resolveClose = undefined
      updateActive()
      // The last event: let go of the callback that ties the native locker to this closure.
      native.dispose()
      if (ev.code) {
        done.reject(new LockedError(`close: the lease could not be revoked (${ev.message}); it expires within ttl`, ev.code))
      } else {
        done.resolve()
      }
      return
    }
    if (ev.kind === 'log') {
      process.stderr.write(`locked ${opts.id} ${ev.message}\n`)
      return
    }
    if (ev.kind === 'renewed') {
      locker.emit('renewed')
      return
    }
    const query = ev.serial == null ? undefined : queries.get(ev.serial)
    if (query) {
      queries.delete(ev.serial)
      updateActive()
      if (ev.kind === 'term') {
        query.resolve(ev.leader == null
          ? null
          : { leader: ev.leader, token: ev.token, since: ev.sinceMs == null ? null : new Date(ev.sinceMs) })
      } else {
        query.reject(new LockedError(`term(${JSON.stringify(query.name)}): ${ev.message}`, ev.code))
      }
      return
    }
    const observer = ev.serial == null ? undefined : observers.get(ev.serial)
    if (observer) {
      if (ev.kind === 'leader') {
        observer.leader = ev.leader ?? null
        observer.token = ev.token ?? null
        observer.emitter.emit('leader', observer.leader, observer.token)
      } else if (ev.kind === 'error') {
        reportError(observer.emitter, new LockedError(`observer ${JSON.stringify(observer.emitter.name)}: ${ev.message}`, ev.code))
      }
      return
    }
    const state = ev.serial == null ? undefined : bySerial.get(ev.serial)
    switch (ev.kind) {
      case 'start': {
        // A start that crossed a remove() or close() in flight is not acted on, and neither is
        // one that reaches a JavaScript thread that was busy until after the term had ended (its
        // stop follows): the native election answers for the term as of now.
        if (!state || state.removing || closing || !native.isLeading(state.serial)) return
        state.leading = true
        state.termsWon++
        if (ev.takeoverMs != null) state.lastTakeoverMs = ev.takeoverMs
        state.since = Date.now()
        const term = state.term = new Term(state, ev.token)
        try {
          state.singleton.emit('start', term)
          if (state.leading) {
            const result = state.fn.call(state.singleton, () => state.singleton.remove(), term)
            if (result && typeof result.then === 'function') {
              const work = Promise.resolve(result).then(null, (err) => userError(state, err))
              state.work = work
              work.finally(() => { if (state.work === work) state.work = null })
            }
          }
        } catch (err) {
          userError(state, err)
        }
        return
      }
      case 'leader':
        if (!state) return
        // This locker's own id is kept once, not once per singleton it leads.
        state.leader = ev.leader === opts.id ? opts.id : ev.leader ?? null
        state.leaderToken = ev.token ?? null
        state.singleton.emit('leader', state.leader, state.leaderToken)
        return
      case 'stop':
        if (state) stopLeading(state, ev.reason)
        return
      case 'removed':
        if (!state) return
        bySerial.delete(ev.serial)
        updateActive()
        state.resolveRemove()
        return
      case 'error': {
        const err = new LockedError(ev.message, ev.code)
        if (state) {
          err.message = `singleton ${JSON.stringify(state.singleton.name)}: ${ev.message}`
          reportError(state.singleton, err)
        } else {
          reportError(locker, err)
        }
      }
    }
  }

  function register (name, fn) {
    if (typeof name !== 'string') {
      throw typeError(`locker(name, fn): name must be a string, got ${describe(name)}`)
    }
    if (name === '' || name.includes('/')) {
      throw rangeError(`locker(name, fn): name must be a non-empty string without '/', got ${JSON.stringify(name)}`)
    }
    if (fn === undefined) fn = noop
    if (typeof fn !== 'function') {
      throw typeError(`locker(name, fn): fn must be a function, got ${describe(fn)}`)
    }
    if (closing) throw new LockedError('locker is closed', 'LOCKER_CLOSED')
    if (byName.has(name)) {
      throw new LockedError(`a singleton named ${JSON.stringify(name)} is already registered on this locker`, 'ALREADY_REGISTERED')
    }
    const state = {
      fn,
      leading: false,
      removing: null,
      resolveRemove: null,
      leader: null,
      term: null,
      work: null,
      termsWon: 0,
      lastTakeoverMs: null,
      since: Date.now(),
      lastStop: null,
      locker: internals
    }
    state.singleton = new Singleton(name, state)
    state.serial = native.register(name)
    bySerial.set(state.serial, state)
    byName.set(name, state)
    updateActive()
    return state.singleton
  }

  function removeSingleton (state) {
    if (state.removing) return state.removing
    if (closing) return closing.then(() => {}, () => {})
    state.removing = new Promise((resolve) => { state.resolveRemove = resolve })
    byName.delete(state.singleton.name)
    // The name is free at once; a new registration of it queues behind this one's resign.
    native.retire(state.serial)
    // Stop before the native resign deletes the key: no other host can start before this.
    stopLeading(state, 'removed')
    drained([state]).then(() => native.remove(state.serial))
    return state.removing
  }

  // What a singleton asks of its locker (shared by all of them, not a closure each).
  const internals = {
    removeSingleton,
    // Asked of the native election itself: events still queued behind a busy JavaScript thread
    // cannot make this answer stale.
    isLeading: (state) => state.leading && !state.removing && !closing && native.isLeading(state.serial),
    // Milliseconds the native election may still lead in its current term; 0 once it is over.
    validFor: (state) => native.isLeading(state.serial) ? native.validFor() : 0
  }

  function observe (name) {
    if (typeof name !== 'string') {
      throw typeError(`locker.observe(name): name must be a string, got ${describe(name)}`)
    }
    if (name === '' || name.includes('/')) {
      throw rangeError(`locker.observe(name): name must be a non-empty string without '/', got ${JSON.stringify(name)}`)
    }
    if (closing) throw new LockedError('locker is closed', 'LOCKER_CLOSED')
    const state = {
      leader: null,
      token: null,
      closed: false,
      close: () => {
        if (state.closed) return
        state.closed = true
        observers.delete(state.serial)
        native.unobserve(state.serial)
      }
    }
    state.emitter = new Observer(name, state)
    state.serial = native.observe(name)
    observers.set(state.serial, state)
    return state.emitter
  }

  // Who leads `name`, with which token, since when: one read from etcd.
  function term (name) {
    if (typeof name !== 'string') {
      throw typeError(`locker.term(name): name must be a string, got ${describe(name)}`)
    }
    if (name === '' || name.includes('/')) {
      throw rangeError(`locker.term(name): name must be a non-empty string without '/', got ${JSON.stringify(name)}`)
    }
    if (closing) return Promise.reject(new LockedError('locker is closed', 'LOCKER_CLOSED'))
    return new Promise((resolve, reject) => {
      queries.set(native.term(name), { name, resolve, reject })
      updateActive()
    })
  }

  const locker = function locker (name, fn) {
    // locked@2.x: locker({ id, path, value, ttl }) makes a value-consensus node.
    if (name !== null && typeof name === 'object') return createNode(locked, endpoints, opts, name)
    return register(name, fn)
  }
  Object.setPrototypeOf(locker, LockerPrototype)
  EventEmitter.call(locker)
  // Renewals cross into JavaScript only while someone listens for them.
  locker.on('newListener', (event) => { if (event === 'renewed') native.reportRenewals(true) })
  locker.on('removeListener', (event) => {
    if (event === 'renewed' && locker.listenerCount('renewed') === 0) native.reportRenewals(false)
  })
  if (opts.handleSignals) watchSignals(locker)

  Object.defineProperties(locker, {
    id: { value: () => opts.id },
    singletons: {
      value: () => Object.fromEntries([...byName].map(([name, state]) => [name, state.singleton]))
    },
    observe: { value: observe },
    term: { value: term },
    stats: {
      value: () => {
        const session = native.stats()
        const singletons = {}
        for (const [name, state] of byName) {
          singletons[name] = {
            state: state.leading ? 'leader' : state.lastStop && state.lastStop !== 'removed' ? 'stepped-down' : 'candidate',
            termsWon: state.termsWon,
            lastTakeoverMs: state.lastTakeoverMs,
            token: state.leading ? state.term.token : null,
            leader: state.leader,
            since: state.since,
            lastStop: state.lastStop
          }
        }
        return {
          id: opts.id,
          ttl: opts.ttl,
          lease: session.lease ?? null,
          validForMs: session.validForMs,
          keepalive: {
            roundTripMs: session.keepaliveRoundTripMs ?? null,
            renewals: session.renewals,
            sinceRenewalMs: session.sinceRenewalMs ?? null
          },
          singletons
        }
      }
    },
    close: {
      value: () => {
        if (closing) return closing
        closing = new Promise((resolve, reject) => { resolveClose = { resolve, reject } })
        updateActive()
        const states = [...bySerial.values()]
        for (const state of states) stopLeading(state, 'closed')
        byName.clear()
        drained(states).then(() => native.close())
        return closing
      }
    }
  })
  return locker
}

// Lockers are callable functions that are also EventEmitters (for connection-level 'error').
const LockerPrototype = Object.create(Function.prototype)
for (const key of Object.getOwnPropertyNames(EventEmitter.prototype)) {
  if (key !== 'constructor') {
    Object.defineProperty(LockerPrototype, key, Object.getOwnPropertyDescriptor(EventEmitter.prototype, key))
  }
}

module.exports = locked
module.exports.locked = locked
module.exports.default = locked
module.exports.Singleton = Singleton
module.exports.Observer = Observer
module.exports.LockedError = LockedError
