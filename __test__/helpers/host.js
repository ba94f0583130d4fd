'use strict'
// A competing host, run as a child process by hosts.js (or by hand):
//
//   node host.js '{"endpoints":["127.0.0.1:2379"],"ttl":2,"prefix":"t1","names":["build"]}'
//
// Config (argv[2], JSON): { endpoints, ttl, prefix, id, names: [], throw: [names whose fn throws],
//   noErrorListeners: bool (do not listen to 'error' events; an uncaught exception is printed as
//   'uncaught' and exits 1, or only printed with uncaught: 'log'), stdinExit: bool (default true: exit
//   when stdin closes, i.e. when the parent died), keepAlive: bool (default true: stdin keeps the
//   process alive; false leaves the process lifetime to the addon alone),
//   drainTimeout, handleSignals, guardian, auth: { username, password } (passed to locked() as is),
//   tlsFiles: { ca, cert, key } (PEM file paths, read here and passed as tls; tlsAs: 'buffer' passes
//   Buffers instead of strings), work: { [name]: { settleAfterAbortMs } | { never: true } } (fn
//   returns a promise that settles that long after term.signal aborted, or never),
//   ownSignalListener: ['SIGTERM', ...] (the app's own listeners: print 'signal'),
//   observe: [names] (locker.observe(name) at set-up), balance, minTermMs (passed to locked() as
//   is), priorities: { [name]: priority } (locker(name, fn, { priority })) }.
//
// stdout: one JSON line per event: { t: <process.hrtime.bigint() as string>, ev, name, id, ...details }
//   ready                       set up (every name of the config registered)
//   start    { token, validFor, isLeader, aborted, leader, sinceRenewalMs, validForMs }   the
//                               singleton's 'start' event (validFor = term.validUntil -
//                               performance.now() at that moment; sinceRenewalMs / validForMs: the
//                               lease as locker.stats() tells it then, see renewal())
//   fn       { token }          the user fn was called (after the 'start' listeners)
//   stop     { reason, isLeader, aborted, abortReason, sinceRenewalMs, validForMs }   the
//                               singleton's 'stop' event (lease figures as for start)
//   aborted  { token, reason, code, errorName, stopSeen, isLeader, validFor }   term.signal aborted
//   settled  { token, sinceAbortMs }   the promise fn returned (config.work) settled
//   leader   { leader }         the singleton's 'leader' event;  observed { leader }: an observer's
//   signal   { signal }         the app's own signal listener (ownSignalListener) ran
//   error    { code, message, scope: 'singleton'|'locker'|'command' }
//   registered / removed / closed / pong / singletons { names } / exiting { code }
//   uncaught { message }        (only when noErrorListeners: an uncaught exception reached the top)
//
// stdin: one JSON command per line:
//   { cmd: 'register', name, throw?, priority? }  { cmd: 'remove', name, via?: 'fn' }  { cmd: 'close' }
//   { cmd: 'handover', name, to? } -> handedOver { leader, token } (or error, scope 'command')
//   { cmd: 'pause', name? } -> paused (pause() resolved; without name: the locker's)
//   { cmd: 'resume', name? } -> resumed
//   { cmd: 'guardian' } -> guardian { pid } (null while none runs)
//   { cmd: 'exit', code }  { cmd: 'closeAndExit' } (close(), then process.exit() right after)
//   { cmd: 'throw', name }  { cmd: 'ping' }  { cmd: 'singletons' }
//   { cmd: 'stats' } -> stats { sinceRenewalMs, validForMs, renewals } (see renewal())
//   { cmd: 'leading' } (prints { ev: 'leading', names } — the names whose fn ran since the last start)
//   { cmd: 'isLeader', name } -> isLeader { value, validFor, leader }
//   { cmd: 'term', name }     -> term { token, validUntil, validFor, aborted } of the last term
//   { cmd: 'observe', name } -> observing; { cmd: 'unobserve', name } -> unobserved
//   { cmd: 'probe', name, gapMs = 1000, everyMs = 10 }: a setInterval calls isLeader() every
//     everyMs; the first tick after a gap longer than gapMs (the process was stopped) prints
//     resumed { value, stopSeen, gapMs, validFor } and ends the interval. Prints probing first.
//   { cmd: 'block', name, ms }: prints blocking { value }, blocks the JS thread for ms (no event
//     can be delivered meanwhile), then calls isLeader() before returning to the event loop and
//     prints unblocked { value, blockedMs, stopSeen }.

const fs = require('node:fs')
const { performance } = require('node:perf_hooks')

const config = JSON.parse(process.argv[2] || '{}')
const locked = require(config.module || '../..')

function emit (ev, fields) {
  const line = { t: process.hrtime.bigint().toString(), ev, ...fields }
  if (locker) {
    try { line.id = locker.id() } catch {}
  }
  // Pipes are written synchronously on Linux, so lines written just before exit are not lost.
  process.stdout.write(JSON.stringify(line) + '\n')
}

const errorFields = (err) => ({
  code: err && err.code,
  message: err && err.message,
  errorName: err && err.name,
  cause: err && err.cause && err.cause.message
})

let locker = null
const singletons = new Map() // name -> singleton
const fnRemoves = new Map() // name -> the remove passed to the user fn
const throwNext = new Set(config.throw || [])
const leading = new Set()
const terms = new Map() // name -> the last term handed to fn
const stops = new Map() // name -> number of 'stop' events so far
const observers = new Map() // name -> Observer

const stopCount = (name) => stops.get(name) || 0
const round = (x) => Math.round(x * 10) / 10
const roundOrNull = (x) => (typeof x === 'number' ? round(x) : null)

// The lease as the locker reports it right now: how long ago the last answered keepalive was sent,
// and the session's time left to its deadline. A parent can place that keepalive on its timeline
// (event time − sinceRenewalMs) and check the deadline against it.
function renewal () {
  try {
    const s = locker.stats()
    return { sinceRenewalMs: roundOrNull(s.keepalive.sinceRenewalMs), validForMs: roundOrNull(s.validForMs), renewals: s.keepalive.renewals }
  } catch (err) {
    return { sinceRenewalMs: null, validForMs: null, renewalError: err && err.message }
  }
}

if (config.noErrorListeners) {
  // Report what reached the top, then die like Node would.
  process.on('uncaughtException', (err) => {
    emit('uncaught', { message: err && err.message, code: err && err.code })
    if (config.uncaught !== 'log') process.exit(1)
  })
}

function register (name, priority = (config.priorities || {})[name]) {
  const s = locker(name, function (remove, term) {
    fnRemoves.set(name, remove)
    emit('fn', { name, token: term && term.token, argc: arguments.length, removeType: typeof remove })
    if (throwNext.has(name)) {
      throwNext.delete(name)
      throw new Error(`fn of ${name} threw on purpose`)
    }
    if (!term) return
    terms.set(name, term)
    const stopsBefore = stopCount(name)
    let abortedAt = null
    term.signal.addEventListener('abort', () => {
      abortedAt = performance.now()
      const r = term.signal.reason
      emit('aborted', {
        name,
        token: term.token,
        reason: r && r.reason,
        code: r && r.code,
        errorName: r && r.name,
        message: r && r.message,
        isError: r instanceof Error,
        isLockedError: r instanceof locked.LockedError,
        stopSeen: stopCount(name) > stopsBefore,
        isLeader: s.isLeader(),
        validFor: round(term.validUntil - performance.now())
      })
    }, { once: true })
    const work = config.work && config.work[name]
    if (work) {
      return new Promise((resolve) => {
        if (work.never) return
        const settle = () => setTimeout(() => {
          emit('settled', { name, token: term.token, sinceAbortMs: round(performance.now() - abortedAt) })
          resolve()
        }, work.settleAfterAbortMs || 0)
        if (term.signal.aborted) settle()
        else term.signal.addEventListener('abort', settle, { once: true })
      })
    }
  }, priority === undefined ? undefined : { priority })
  singletons.set(name, s)
  s.on('start', (term) => {
    leading.add(name)
    emit('start', {
      name,
      token: term && term.token,
      // What the term offers: own data (token) and the getters of its class (signal, validUntil).
      termKeys: term ? ['token', 'signal', 'validUntil', 'end'].filter((k) => k in term) : null,
      termOwnKeys: term ? Object.keys(term) : null,
      validFor: term ? round(term.validUntil - performance.now()) : null,
      isLeader: s.isLeader(),
      aborted: term ? term.signal.aborted : null,
      leader: s.leader(),
      ...renewal()
    })
  })
  s.on('stop', (reason) => {
    leading.delete(name)
    stops.set(name, stopCount(name) + 1)
    const term = terms.get(name)
    emit('stop', {
      name,
      reason,
      isLeader: s.isLeader(),
      aborted: term ? term.signal.aborted : null,
      abortReason: term && term.signal.reason ? term.signal.reason.reason : null,
      ...renewal()
    })
  })
  s.on('leader', (leader) => emit('leader', { name, leader }))
  if (!config.noErrorListeners) s.on('error', (err) => emit('error', { name, scope: 'singleton', ...errorFields(err) }))
  return s
}

function observe (name) {
  const o = locker.observe(name)
  observers.set(name, o)
  o.on('leader', (leader) => emit('observed', { name, leader }))
  if (!config.noErrorListeners) o.on('error', (err) => emit('error', { name, scope: 'observer', ...errorFields(err) }))
  return o
}

function main () {
  const opts = {}
  for (const key of ['ttl', 'prefix', 'id', 'drainTimeout', 'handleSignals', 'auth', 'guardian', 'balance', 'minTermMs']) {
    if (config[key] !== undefined) opts[key] = config[key]
  }
  if (config.tlsFiles) {
    opts.tls = {}
    for (const [k, file] of Object.entries(config.tlsFiles)) {
      const buf = fs.readFileSync(file)
      opts.tls[k] = config.tlsAs === 'buffer' ? buf : buf.toString('utf8')
    }
  }
  for (const signal of config.ownSignalListener || []) {
    process.on(signal, () => emit('signal', { signal }))
  }
  locker = locked(config.endpoints, opts)
  if (!config.noErrorListeners) locker.on('error', (err) => emit('error', { name: null, scope: 'locker', ...errorFields(err) }))
  for (const name of config.names || []) register(name)
  for (const name of config.observe || []) observe(name)
  emit('ready', { names: config.names || [], pid: process.pid })
}

function isLeaderOf (name) {
  const s = singletons.get(name)
  return s ? s.isLeader() : null
}

function validFor (name) {
  const term = terms.get(name)
  return term ? round(term.validUntil - performance.now()) : null
}

function command (msg) {
  switch (msg.cmd) {
    case 'register': {
      if (msg.throw) throwNext.add(msg.name)
      try {
        register(msg.name, msg.priority)
        emit('registered', { name: msg.name })
      } catch (err) {
        emit('error', { name: msg.name, scope: 'command', ...errorFields(err) })
      }
      break
    }
    case 'remove': {
      const s = singletons.get(msg.name)
      if (!s) { emit('error', { name: msg.name, scope: 'command', code: 'NO_SUCH_NAME', message: 'not registered here' }); break }
      const remove = msg.via === 'fn' ? fnRemoves.get(msg.name) : () => s.remove()
      let p
      try {
        p = remove()
      } catch (err) {
        emit('error', { name: msg.name, scope: 'command', ...errorFields(err) })
        break
      }
      Promise.resolve(p).then(
        () => emit('removed', { name: msg.name, isPromise: !!(p && typeof p.then === 'function') }),
        (err) => emit('error', { name: msg.name, scope: 'command', ...errorFields(err) })
      )
      break
    }
    case 'handover': {
      const s = singletons.get(msg.name)
      if (!s) { emit('error', { name: msg.name, scope: 'command', code: 'NO_SUCH_NAME', message: 'not registered here' }); break }
      let p
      try {
        p = msg.to === undefined ? s.handover() : s.handover(msg.to)
      } catch (err) {
        emit('error', { name: msg.name, scope: 'command', ...errorFields(err) })
        break
      }
      p.then(
        (result) => emit('handedOver', { name: msg.name, ...result }),
        (err) => emit('error', { name: msg.name, scope: 'command', ...errorFields(err) })
      )
      break
    }
    case 'pause': {
      const target = msg.name === undefined ? locker : singletons.get(msg.name)
      if (!target) { emit('error', { name: msg.name, scope: 'command', code: 'NO_SUCH_NAME', message: 'not registered here' }); break }
      target.pause().then(
        () => emit('paused', { name: msg.name ?? null }),
        (err) => emit('error', { name: msg.name ?? null, scope: 'command', ...errorFields(err) })
      )
      break
    }
    case 'resume': {
      const target = msg.name === undefined ? locker : singletons.get(msg.name)
      if (!target) { emit('error', { name: msg.name, scope: 'command', code: 'NO_SUCH_NAME', message: 'not registered here' }); break }
      target.resume()
      emit('resumed', { name: msg.name ?? null })
      break
    }
    case 'close':
      Promise.resolve(locker.close()).then(
        () => emit('closed', {}),
        (err) => emit('error', { name: null, scope: 'command', ...errorFields(err) })
      )
      break
    case 'closeAndExit':
      // close() starts (its native part runs once the drain, here empty, resolved), and the process
      // exits before the asynchronous lease revoke can have finished.
      locker.close().catch(() => {})
      setImmediate(() => {
        emit('exiting', { code: 0 })
        process.exit(0)
      })
      break
    case 'exit':
      emit('exiting', { code: msg.code || 0 })
      process.exit(msg.code || 0)
      break
    case 'throw':
      throwNext.add(msg.name)
      emit('armed', { name: msg.name })
      break
    case 'ping':
      emit('pong', {})
      break
    case 'guardian': {
      const g = locker.stats().guardian
      emit('guardian', { pid: g ? g.pid : null })
      break
    }
    case 'stats':
      emit('stats', renewal())
      break
    case 'singletons':
      emit('singletons', { names: Object.keys(locker.singletons()) })
      break
    case 'leading':
      emit('leading', { names: [...leading] })
      break
    case 'isLeader': {
      const s = singletons.get(msg.name)
      emit('isLeader', { name: msg.name, value: isLeaderOf(msg.name), validFor: validFor(msg.name), leader: s ? s.leader() : null })
      break
    }
    case 'term': {
      const term = terms.get(msg.name)
      emit('term', {
        name: msg.name,
        token: term ? term.token : null,
        validUntil: term ? term.validUntil : null,
        validFor: validFor(msg.name),
        aborted: term ? term.signal.aborted : null
      })
      break
    }
    case 'observe':
      try {
        observe(msg.name)
        emit('observing', { name: msg.name })
      } catch (err) {
        emit('error', { name: msg.name, scope: 'command', ...errorFields(err) })
      }
      break
    case 'unobserve': {
      const o = observers.get(msg.name)
      if (o) o.close()
      observers.delete(msg.name)
      emit('unobserved', { name: msg.name, leader: o ? o.leader() : null })
      break
    }
    case 'probe': {
      const gapMs = msg.gapMs || 1000
      const stopsBefore = stopCount(msg.name)
      let last = performance.now()
      const timer = setInterval(() => {
        const t = performance.now()
        // isLeader() first: nothing else may run between the wake-up and this call.
        const value = isLeaderOf(msg.name)
        if (t - last > gapMs) {
          clearInterval(timer)
          emit('resumed', { name: msg.name, value, stopSeen: stopCount(msg.name) > stopsBefore, gapMs: round(t - last), validFor: validFor(msg.name) })
        }
        last = t
      }, msg.everyMs || 10)
      emit('probing', { name: msg.name, value: isLeaderOf(msg.name) })
      break
    }
    case 'block': {
      const stopsBefore = stopCount(msg.name)
      // The clock starts before 'blocking' is printed: a SIGSTOP sent on seeing it lands in the block.
      const start = performance.now()
      emit('blocking', { name: msg.name, value: isLeaderOf(msg.name), validFor: validFor(msg.name) })
      const cell = new Int32Array(new SharedArrayBuffer(4))
      // Bounded: at most ms of waiting in slices (a stopped process wakes up past its end).
      while (performance.now() - start < msg.ms) Atomics.wait(cell, 0, 0, Math.min(50, msg.ms))
      const value = isLeaderOf(msg.name)
      const blockedMs = round(performance.now() - start)
      emit('unblocked', { name: msg.name, value, blockedMs, stopSeen: stopCount(msg.name) > stopsBefore, validFor: validFor(msg.name) })
      break
    }
    default:
      emit('error', { name: null, scope: 'command', code: 'BAD_COMMAND', message: JSON.stringify(msg) })
  }
}

// Commands from the parent; when stdin closes, the parent is gone: exit. With keepAlive: false,
// stdin does not keep the process alive (the process-lifetime tests watch the addon do that).
let buffered = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => {
  buffered += chunk
  let i
  while ((i = buffered.indexOf('\n')) >= 0) {
    const line = buffered.slice(0, i).trim()
    buffered = buffered.slice(i + 1)
    if (!line) continue
    let msg
    try { msg = JSON.parse(line) } catch { emit('error', { scope: 'command', code: 'BAD_JSON', message: line }); continue }
    command(msg)
  }
})
if (config.stdinExit !== false) {
  process.stdin.on('end', () => process.exit(0))
}
if (config.keepAlive === false && typeof process.stdin.unref === 'function') process.stdin.unref()

try {
  main()
} catch (err) {
  emit('error', { name: null, scope: 'setup', ...errorFields(err) })
  process.exitCode = 2
}
