'use strict'

// One locker's JavaScript side: the singletons, observers and term() reads it has open, the
// events of its native election routed to them (one method per event kind), and its close. The
// callable locker (locked.js) and the handles (handles.js) call in here.

const path = require('node:path')
const { NativeLocker } = require('./native.js')
const { LockedError, typeError, rangeError, describe, lockerClosed } = require('./errors.js')
const { checkName } = require('./rules.js')
const { normalizeSingletonOptions } = require('./options.js')
const { Log } = require('./log.js')
const { openLockers, watchSignals, unwatchSignals } = require('./process-hooks.js')
const { Registration, Observation, Query } = require('./state.js')
const { TermControl } = require('./term.js')

function noop () {}

function reportError (emitter, err) {
  // Library errors never crash the process: without listeners they are dropped.
  if (emitter.listenerCount('error') > 0) emitter.emit('error', err)
}

// The stop reasons that end a term on their own (etcd unreachable, the lease or key gone), and
// so are worth a warning; the others were asked for.
const ASKED = new Set(['removed', 'closed', 'handover', 'paused'])

// A term as term() and terms() answer it, from the native core's event: who leads, since when,
// with which priority, who should lead instead by priority and balance (the leader itself when
// nobody), and the handover under way, if any.
const termInfo = ({ leader, token, sinceMs, priority, preferred, handoverTo }) => ({
  leader,
  token,
  since: sinceMs == null ? null : new Date(sinceMs),
  priority: priority ?? 0,
  preferred: preferred ?? leader,
  handover: handoverTo == null ? null : { to: handoverTo }
})

// How the native locker starts the guardian (guardian.js), when asked for one. Hosts, TLS
// settings and credentials reach it through its stdin, never its command line or environment.
function guardianSettings (endpoints, options) {
  if (!options.guardian) return undefined
  return {
    node: process.execPath,
    script: path.join(__dirname, 'guardian.js'),
    config: JSON.stringify({ hosts: endpoints, tls: options.tls ?? null, auth: options.auth ?? null })
  }
}

class LockerCore {
  #options // as normalizeOptions (options.js) returns them
  #log // where narration and errors go (log.js)
  #native
  #locker // the callable locker: locker-wide events are emitted on it
  #registrations = new Map() // serial -> Registration not yet confirmed removed
  #registered = new Map() // name -> Registration of the registered singletons
  #observations = new Map() // serial -> Observation
  #queries = new Map() // serial -> Query: term() reads in flight
  #closing = null // the close() promise, once close() was called
  #settleClose // { resolve, reject } of that promise, until the 'closed' event
  #active = false // what the native locker was last told: whether its events keep the process alive
  #paused = false // locker.pause() without resume(): new singletons start paused

  constructor (endpoints, options, locker) {
    this.#options = options
    this.#locker = locker
    this.#log = new Log(options.logger, options.id)
    const { logger, ...settings } = options
    try {
      this.#native = new NativeLocker(endpoints, { ...settings, debug: this.#log.narrate, guardian: guardianSettings(endpoints, options) }, (ev) => this.#onEvent(ev))
    } catch (err) {
      // What the core refuses at construction is a bad value (a certificate or key that does not
      // parse, an endpoint it cannot use).
      throw rangeError(`locked: ${err.message}`)
    }
    openLockers.add(this.#native)
    // Renewals cross into JavaScript only while someone listens for them.
    locker.on('newListener', (event) => { if (event === 'renewed') this.#native.reportRenewals(true) })
    locker.on('removeListener', (event) => {
      if (event === 'renewed' && locker.listenerCount('renewed') === 0) this.#native.reportRenewals(false)
    })
    if (options.handleSignals) watchSignals(locker)
  }

  get id () {
    return this.#options.id
  }

  register (name, fn, options) {
    checkName(name, 'locker(name, fn)')
    if (fn === undefined || fn === null) fn = noop
    if (typeof fn !== 'function') {
      throw typeError(`locker(name, fn): fn must be a function, got ${describe(fn)}`)
    }
    const { priority } = normalizeSingletonOptions(options, 'locker(name, fn, options)')
    if (this.#closing) throw lockerClosed()
    if (this.#registered.has(name)) {
      throw new LockedError(`a singleton named ${JSON.stringify(name)} is already registered on this locker`, 'ALREADY_REGISTERED')
    }
    const registration = new Registration(this, name, fn)
    if (priority !== 0) registration.priority = priority
    if (this.#paused) {
      registration.paused = true
      registration.standby = 'asked'
    }
    registration.serial = this.#native.register(name, this.#paused, priority)
    this.#registrations.set(registration.serial, registration)
    this.#registered.set(name, registration)
    this.#updateActive()
    return registration.singleton
  }

  remove (registration) {
    if (registration.removing) return registration.removing
    if (this.#closing) return this.#closing.then(() => {}, () => {})
    registration.removing = new Promise((resolve) => { registration.resolveRemove = resolve })
    this.#registered.delete(registration.singleton.name)
    // The name is free at once; a new registration of it queues behind this one's resign.
    this.#native.retire(registration.serial)
    // Stop before the native resign deletes the key: no other host can start before this.
    this.#stopLeading(registration, 'removed')
    this.#drained([registration]).then(() => this.#native.remove(registration.serial))
    return registration.removing
  }

  // Checks first (one read, nothing changes), so that a handover that cannot happen leaves the
  // leader's work alone; then stops and drains like remove(), and has the native election hand
  // over. Should that fail while this host still leads, the election starts it again.
  handover (registration, toId) {
    const call = `singleton ${JSON.stringify(registration.singleton.name)}: handover(${toId === undefined ? '' : JSON.stringify(toId)})`
    if (toId !== undefined && (typeof toId !== 'string' || toId === '')) {
      throw typeError(`singleton.handover(toId): toId must be a non-empty string (a locker id) or left out, got ${describe(toId)}`)
    }
    if (this.#closing) return Promise.reject(lockerClosed(call))
    if (registration.removing) return Promise.reject(new LockedError(`${call}: the singleton was removed`, 'REMOVED'))
    if (registration.handingOver) return Promise.reject(new LockedError(`${call}: a handover is already under way`, 'HANDOVER_IN_PROGRESS'))
    if (!this.isLeading(registration)) return Promise.reject(new LockedError(`${call}: this host does not lead`, 'NOT_LEADER'))
    const { serial } = registration
    const name = registration.singleton.name
    const handing = this.#query(call, () => this.#native.handoverCheck(name, serial, toId))
      .then(() => {
        if (!this.isLeading(registration)) throw new LockedError(`${call}: this host does not lead`, 'NOT_LEADER')
        this.#stopLeading(registration, 'handover')
        return this.#drained([registration])
      })
      .then(() => this.#query(call, () => this.#native.handover(serial, toId)))
      .finally(() => { registration.handingOver = null })
    registration.handingOver = handing
    registration.handoverTo = toId ?? null
    return handing
  }

  // Standby: stops and drains like remove() (the key stays meanwhile, so nobody else starts before
  // the work wound down), then the native election leaves the queue; the promise resolves once its
  // key is gone (or resume(), remove() or close() came first). `registration.standby` follows the
  // native side: 'draining', 'asked' (native pause sent), 'paused' (its key is gone), or null.
  pause (registration) {
    const call = `singleton ${JSON.stringify(registration.singleton.name)}: pause()`
    if (this.#closing) return Promise.reject(lockerClosed(call))
    if (registration.removing) return Promise.reject(new LockedError(`${call}: the singleton was removed`, 'REMOVED'))
    if (registration.paused) return registration.pausing ?? Promise.resolve()
    registration.paused = true
    registration.pausing = new Promise((resolve) => { registration.resolvePause = resolve })
    if (registration.standby === null) {
      registration.standby = 'draining'
      this.#stopLeading(registration, 'paused')
      this.#drained([registration]).then(() => this.#drainedForPause(registration))
    }
    return registration.pausing
  }

  #drainedForPause (registration) {
    registration.standby = null
    if (registration.removing || this.#closing) return this.#pauseSettled(registration)
    if (!registration.paused) {
      // Resumed during the drain: the election never left the queue. If it still leads, its work
      // starts again (the same term, the same token).
      const token = registration.control?.term.token
      if (!registration.leading && token !== undefined && this.#native.isLeading(registration.serial)) {
        this.#onStart({ serial: registration.serial, token })
      }
      return
    }
    if (this.#native.pause(registration.serial)) registration.standby = 'asked'
    else this.#pauseSettled(registration)
  }

  resume (registration) {
    if (!registration.paused || registration.removing || this.#closing) return
    registration.paused = false
    this.#pauseSettled(registration)
    // Draining or asked: the resume is carried out once the pause is (#drainedForPause, #onPaused).
    if (registration.standby === 'paused') {
      registration.standby = null
      this.#native.resume(registration.serial)
    }
  }

  // A pause settled (took effect, or was overtaken): its promise resolves.
  #pauseSettled (registration) {
    const resolve = registration.resolvePause
    registration.pausing = null
    registration.resolvePause = null
    if (resolve) resolve()
  }

  pauseAll () {
    if (this.#closing) return Promise.reject(lockerClosed('locker.pause()'))
    this.#paused = true
    return Promise.all([...this.#registered.values()].map((r) => this.pause(r))).then(() => {})
  }

  resumeAll () {
    if (this.#closing) return
    this.#paused = false
    for (const registration of this.#registered.values()) this.resume(registration)
  }

  // Asked of the native election itself: events still queued behind a busy JavaScript thread
  // cannot make this answer stale.
  isLeading (registration) {
    return registration.leading && !registration.removing && !this.#closing && this.#native.isLeading(registration.serial)
  }

  /** Milliseconds the native election may still lead in its current term; 0 once it is over. */
  validFor (registration) {
    return this.#native.isLeading(registration.serial) ? this.#native.validFor() : 0
  }

  observe (name) {
    checkName(name, 'locker.observe(name)')
    if (this.#closing) throw lockerClosed()
    const observation = new Observation(this, name)
    observation.serial = this.#native.observe(name)
    this.#observations.set(observation.serial, observation)
    return observation.observer
  }

  unobserve (observation) {
    if (observation.closed) return
    observation.closed = true
    this.#observations.delete(observation.serial)
    this.#native.unobserve(observation.serial)
  }

  // Who leads `name`, with which token, since when: one read from etcd.
  term (name) {
    checkName(name, 'locker.term(name)')
    return this.#query(`term(${JSON.stringify(name)})`, () => this.#native.term(name))
  }

  // The same for every election under the prefix that has a leader: one consistent read.
  terms () {
    return this.#query('terms()', () => this.#native.terms())
  }

  #query (call, ask) {
    if (this.#closing) return Promise.reject(lockerClosed())
    return new Promise((resolve, reject) => {
      this.#queries.set(ask(), new Query(call, resolve, reject))
      this.#updateActive()
    })
  }

  singletons () {
    return Object.fromEntries([...this.#registered].map(([name, registration]) => [name, registration.singleton]))
  }

  stats () {
    const session = this.#native.stats()
    const singletons = {}
    for (const [name, registration] of this.#registered) {
      const { leading, lastStop } = registration
      singletons[name] = {
        state: leading ? 'leader' : registration.paused ? 'paused' : lastStop && !['removed', 'handover', 'paused'].includes(lastStop) ? 'stepped-down' : 'candidate',
        termsWon: registration.termsWon,
        lastTakeoverMs: registration.lastTakeoverMs,
        token: leading ? registration.control.term.token : null,
        leader: registration.leader,
        since: registration.since,
        lastStop,
        priority: registration.priority,
        // A handover of this host under way: to whom (null: the next in line), and whether this
        // host hands over on its own, to the preferred candidate (priority, balance).
        handover: registration.handingOver ? { to: registration.handoverTo, preferred: registration.handoverPreferred === true } : null
      }
    }
    return {
      id: this.#options.id,
      ttl: this.#options.ttl,
      lease: session.lease ?? null,
      validForMs: session.validForMs,
      keepalive: {
        roundTripMs: session.keepaliveRoundTripMs ?? null,
        renewals: session.renewals,
        sinceRenewalMs: session.sinceRenewalMs ?? null
      },
      guardian: this.#options.guardian ? { pid: this.#native.guardianPid() ?? null } : null,
      balance: this.#options.balance,
      minTermMs: this.#options.minTermMs,
      singletons
    }
  }

  /** On this process's death the guardian waits until `pid` is gone before it revokes the lease. */
  guardProcess (pid) {
    this.#native.guardProcess(pid ?? undefined)
  }

  close () {
    if (this.#closing) return this.#closing
    this.#closing = new Promise((resolve, reject) => { this.#settleClose = { resolve, reject } })
    this.#updateActive()
    const registrations = [...this.#registrations.values()]
    for (const registration of registrations) this.#stopLeading(registration, 'closed')
    this.#registered.clear()
    this.#drained(registrations).then(() => this.#native.close())
    return this.#closing
  }

  // The process stays alive while singletons are registered, or a term() read or close() is
  // pending; observers alone do not hold it.
  #updateActive () {
    const want = this.#registrations.size > 0 || this.#queries.size > 0 || (this.#closing !== null && this.#settleClose !== undefined)
    if (want !== this.#active) {
      this.#active = want
      this.#native.setActive(want)
    }
  }

  // Waits for the work a leader's fn returned (bounded by drainTimeout) so that the next leader
  // does not overlap work that is still winding down.
  #drained (registrations) {
    const work = registrations.map((r) => r.work).filter(Boolean)
    if (work.length === 0) return Promise.resolve()
    let timer
    const timeout = new Promise((resolve) => { timer = setTimeout(resolve, this.#options.drainTimeout) })
    return Promise.race([Promise.allSettled(work), timeout]).finally(() => clearTimeout(timer))
  }

  #userError (registration, err) {
    const { singleton } = registration
    const wrapped = new LockedError(
      `singleton ${JSON.stringify(singleton.name)}: ${err && err.message ? err.message : String(err)}`,
      'USER_FN_THREW',
      { cause: err }
    )
    this.#log.error({ name: singleton.name }, wrapped)
    if (singleton.listenerCount('error') > 0) {
      singleton.emit('error', wrapped)
    } else {
      // Like any EventEmitter without an 'error' listener, but thrown outside the event routing
      // so the other singletons' events still arrive.
      process.nextTick(() => { throw err })
    }
  }

  #stopLeading (registration, reason) {
    if (!registration.leading) return
    registration.leading = false
    registration.lastStop = reason
    registration.since = Date.now()
    // Until the election reports again, who leads is not known; it is no longer this host.
    const wasNamed = registration.leader === this.#options.id
    if (wasNamed) {
      registration.leader = null
      registration.leaderToken = null
    }
    registration.control.end(reason)
    const fields = { name: registration.singleton.name, token: registration.control.term.token, reason }
    if (ASKED.has(reason)) this.#log.info(fields, 'stepped down')
    else this.#log.warn(fields, 'stepped down')
    try {
      registration.singleton.emit('stop', reason)
      if (wasNamed) registration.singleton.emit('leader', null, null)
    } catch (err) {
      this.#userError(registration, err)
    }
  }

  // Each serial belongs to one registration, observation or term() read: the native core numbers
  // them all from one counter, and sends each only the kinds of event that concern it.
  #onEvent (ev) {
    switch (ev.kind) {
      case 'start': this.#onStart(ev); break
      case 'stop': this.#onStop(ev); break
      case 'leader': this.#onLeader(ev); break
      case 'observed': this.#onObserved(ev); break
      case 'removed': this.#onRemoved(ev); break
      case 'handover': this.#onHandover(ev); break
      case 'paused': this.#onPaused(ev); break
      case 'prefer': this.#onPrefer(ev); break
      case 'term': this.#onTerm(ev); break
      case 'terms': this.#onTerms(ev); break
      case 'error': this.#onError(ev); break
      case 'renewed': this.#locker.emit('renewed'); break
      case 'log': this.#log.step(ev.message); break
      case 'closed': this.#onClosed(ev); break
    }
  }

  #registrationOf (ev) {
    return ev.serial == null ? undefined : this.#registrations.get(ev.serial)
  }

  #observationOf (ev) {
    return ev.serial == null ? undefined : this.#observations.get(ev.serial)
  }

  // The read an event answers, no longer in flight.
  #takeQuery (ev) {
    const query = ev.serial == null ? undefined : this.#queries.get(ev.serial)
    if (query) {
      this.#queries.delete(ev.serial)
      this.#updateActive()
    }
    return query
  }

  #onStart (ev) {
    const registration = this.#registrationOf(ev)
    // A start is also the news that this locker leads, with that token (the native core sends
    // no separate 'leader' event for it), whether or not the start is acted on below.
    if (registration) this.#noteLeader(registration, this.#options.id, ev.token)
    // A start that crossed a remove() or close() in flight is not acted on, and neither is
    // one that reaches a JavaScript thread that was busy until after the term had ended (its
    // stop follows): the native election answers for the term as of now.
    if (!registration || registration.removing || registration.paused || registration.standby !== null || this.#closing || !this.#native.isLeading(registration.serial)) return
    registration.leading = true
    registration.termsWon++
    if (ev.takeoverMs != null) registration.lastTakeoverMs = ev.takeoverMs
    registration.since = Date.now()
    registration.control = new TermControl(registration, ev.token)
    const { singleton, control: { term } } = registration
    this.#log.info({ name: singleton.name, token: term.token, takeoverMs: ev.takeoverMs ?? null }, 'elected')
    try {
      singleton.emit('start', term)
      if (registration.leading) {
        const result = registration.fn.call(singleton, () => singleton.remove(), term)
        if (result && typeof result.then === 'function') this.#keepWork(registration, result)
      }
    } catch (err) {
      this.#userError(registration, err)
    }
  }

  // What fn returned, for a resign or close to wait for (#drained).
  #keepWork (registration, result) {
    const work = Promise.resolve(result).then(null, (err) => this.#userError(registration, err))
    registration.work = work
    work.finally(() => { if (registration.work === work) registration.work = null })
  }

  #onStop (ev) {
    const registration = this.#registrationOf(ev)
    if (registration) this.#stopLeading(registration, ev.reason)
  }

  // An observer's election changed: who leads, or what its candidates prefer, or a handover. The
  // 'leader' event follows the leader; 'term' every change.
  #onObserved (ev) {
    const observation = this.#observationOf(ev)
    if (!observation) return
    const leader = ev.leader ?? null
    const token = ev.token ?? null
    const first = observation.term === undefined
    const { since, ...term } = leader === null ? { since: null } : termInfo(ev)
    observation.term = leader === null ? null : term
    if (first || leader !== observation.leader || token !== observation.token) {
      observation.leader = leader
      observation.token = token
      observation.observer.emit('leader', leader, token)
    }
    observation.observer.emit('term', observation.term)
  }

  #onLeader (ev) {
    const registration = this.#registrationOf(ev)
    if (registration) this.#noteLeader(registration, ev.leader, ev.token)
  }

  #noteLeader (registration, leader, token) {
    // This locker's own id is kept once, not once per singleton it leads.
    registration.leader = leader === this.#options.id ? this.#options.id : leader ?? null
    registration.leaderToken = token ?? null
    try {
      registration.singleton.emit('leader', registration.leader, registration.leaderToken)
    } catch (err) {
      // As a throwing 'start' or 'stop' listener: reported, and the events after it still come.
      this.#userError(registration, err)
    }
  }

  #onRemoved (ev) {
    const registration = this.#registrationOf(ev)
    if (!registration) return
    this.#registrations.delete(ev.serial)
    this.#updateActive()
    this.#pauseSettled(registration)
    registration.resolveRemove()
  }

  #onPaused (ev) {
    const registration = this.#registrationOf(ev)
    if (!registration || registration.standby !== 'asked') return
    registration.standby = 'paused'
    this.#pauseSettled(registration)
    if (!registration.paused) {
      // Resumed before the pause took effect.
      registration.standby = null
      this.#native.resume(registration.serial)
    }
  }

  #onHandover (ev) {
    const query = this.#takeQuery(ev)
    if (query) query.resolve({ leader: ev.leader, token: ev.token })
  }

  // The native core found a candidate that should lead instead (a higher priority, or the one
  // balancing prefers), after this host led the minimum term: hand over to it, as handover(toId)
  // does. A refusal (it went away, or a candidate ahead would not step aside) leaves this host
  // leading; the core does not ask again for a blocked target this term.
  #onPrefer (ev) {
    const registration = this.#registrationOf(ev)
    if (!registration || !registration.leading || registration.handingOver || registration.removing || registration.paused || this.#closing) return
    const name = registration.singleton.name
    this.#log.info({ name, to: ev.leader }, 'handing over to the preferred candidate')
    registration.handoverPreferred = true
    this.handover(registration, ev.leader).then(
      () => { registration.handoverPreferred = false },
      (err) => {
        registration.handoverPreferred = false
        this.#log.info({ name, to: ev.leader, code: err.code }, `handover to the preferred candidate did not happen: ${err.message}`)
      })
  }

  #onTerm (ev) {
    const query = this.#takeQuery(ev)
    if (!query) return
    query.resolve(ev.leader == null ? null : termInfo(ev))
  }

  #onTerms (ev) {
    const query = this.#takeQuery(ev)
    if (!query) return
    query.resolve(ev.terms.map((t) => ({ name: t.name, ...termInfo(t) })))
  }

  #onError (ev) {
    const query = this.#takeQuery(ev)
    if (query) {
      query.reject(new LockedError(`${query.call}: ${ev.message}`, ev.code))
      return
    }
    const observation = this.#observationOf(ev)
    if (observation) {
      const { name } = observation.observer
      const err = new LockedError(`observer ${JSON.stringify(name)}: ${ev.message}`, ev.code)
      this.#log.error({ name, observer: true }, err)
      reportError(observation.observer, err)
      return
    }
    const registration = this.#registrationOf(ev)
    const err = new LockedError(ev.message, ev.code)
    if (registration) {
      err.message = `singleton ${JSON.stringify(registration.singleton.name)}: ${ev.message}`
      this.#log.error({ name: registration.singleton.name }, err)
      reportError(registration.singleton, err)
    } else {
      this.#log.error({}, err)
      reportError(this.#locker, err)
    }
  }

  #onClosed (ev) {
    for (const registration of this.#registrations.values()) {
      this.#pauseSettled(registration)
      registration.resolveRemove?.()
    }
    this.#registrations.clear()
    for (const observation of this.#observations.values()) observation.closed = true
    this.#observations.clear()
    for (const query of this.#queries.values()) query.reject(lockerClosed(query.call))
    this.#queries.clear()
    unwatchSignals(this.#locker)
    this.#registered.clear()
    openLockers.delete(this.#native)
    const settle = this.#settleClose
    this.#settleClose = undefined
    this.#updateActive()
    // The last event: let go of the callback that ties the native locker to this core.
    this.#native.dispose()
    if (ev.code) {
      settle.reject(new LockedError(`close: the lease could not be revoked (${ev.message}); it expires within ttl`, ev.code))
    } else {
      settle.resolve()
    }
  }
}

module.exports = { LockerCore }
