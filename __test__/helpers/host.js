'use strict'
// A competing host, run as a child process by hosts.js (or by hand):
//
//   node host.js '{"endpoints":["127.0.0.1:2379"],"ttl":2,"prefix":"t1","names":["build"]}'
//
// Config (argv[2], JSON): { endpoints, ttl, prefix, id, names: [], throw: [names whose fn throws],
//   noErrorListeners: bool (do not listen to 'error' events; an uncaught exception is printed as
//   'uncaught' and exits 1, or only printed with uncaught: 'log'), stdinExit: bool (default true: exit
//   when stdin closes, i.e. when the parent died), keepAlive: bool (default true: stdin keeps the
//   process alive; false leaves the process lifetime to the addon alone) }.
//
// stdout: one JSON line per event: { t: <process.hrtime.bigint() as string>, ev, name, id, ...details }
//   ready                       set up (every name of the config registered)
//   start    { token }          the singleton's 'start' event (term.token)
//   fn       { token }          the user fn was called (after the 'start' listeners)
//   stop     { reason }         the singleton's 'stop' event
//   error    { code, message, scope: 'singleton'|'locker'|'command' }
//   registered / removed / closed / pong / singletons { names } / exiting { code }
//   uncaught { message }        (only when noErrorListeners: an uncaught exception reached the top)
//
// stdin: one JSON command per line:
//   { cmd: 'register', name, throw? }  { cmd: 'remove', name, via?: 'fn' }  { cmd: 'close' }
//   { cmd: 'exit', code }  { cmd: 'throw', name }  { cmd: 'ping' }  { cmd: 'singletons' }
//   { cmd: 'leading' } (prints { ev: 'leading', names } — the names whose fn ran since the last start)

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

if (config.noErrorListeners) {
  // Report what reached the top, then die like Node would.
  process.on('uncaughtException', (err) => {
    emit('uncaught', { message: err && err.message, code: err && err.code })
    if (config.uncaught !== 'log') process.exit(1)
  })
}

function register (name) {
  const s = locker(name, function (remove, term) {
    fnRemoves.set(name, remove)
    emit('fn', { name, token: term && term.token, argc: arguments.length, removeType: typeof remove })
    if (throwNext.has(name)) {
      throwNext.delete(name)
      throw new Error(`fn of ${name} threw on purpose`)
    }
  })
  singletons.set(name, s)
  s.on('start', (term) => {
    leading.add(name)
    emit('start', { name, token: term && term.token, termKeys: term ? Object.keys(term) : null })
  })
  s.on('stop', (reason) => {
    leading.delete(name)
    emit('stop', { name, reason })
  })
  if (!config.noErrorListeners) s.on('error', (err) => emit('error', { name, scope: 'singleton', ...errorFields(err) }))
  return s
}

function main () {
  const opts = {}
  if (config.ttl !== undefined) opts.ttl = config.ttl
  if (config.prefix !== undefined) opts.prefix = config.prefix
  if (config.id !== undefined) opts.id = config.id
  locker = locked(config.endpoints, opts)
  if (!config.noErrorListeners) locker.on('error', (err) => emit('error', { name: null, scope: 'locker', ...errorFields(err) }))
  for (const name of config.names || []) register(name)
  emit('ready', { names: config.names || [], pid: process.pid })
}

function command (msg) {
  switch (msg.cmd) {
    case 'register': {
      if (msg.throw) throwNext.add(msg.name)
      try {
        register(msg.name)
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
    case 'close':
      Promise.resolve(locker.close()).then(
        () => emit('closed', {}),
        (err) => emit('error', { name: null, scope: 'command', ...errorFields(err) })
      )
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
    case 'singletons':
      emit('singletons', { names: Object.keys(locker.singletons()) })
      break
    case 'leading':
      emit('leading', { names: [...leading] })
      break
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
