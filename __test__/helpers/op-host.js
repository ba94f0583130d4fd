'use strict'
// A host for the randomized operation test (chaos/operations.test.js), run by hosts.js's spawnHost
// with options.script. Unlike host.js it can close its locker and open a new one in the same
// process, re-register a name in the very tick of its remove(), and run a locked@2.x node, and it
// tags every singleton event with the registration (`reg`, chosen by the test) and the locker
// generation (`gen`) it belongs to, so the test can tell an old registration's events from those
// of its successor under the same name.
//
// Config (argv[2], JSON): { endpoints, ttl, prefix, v2Path, nodeId, idBase?, names: [{ name, reg }],
//   balance?, minTermMs? (passed to locked()) }. Each registration's priority follows from its reg
//   number (priorityOf, shared with the test).
//
// stdout: one JSON line per event: { t: <process.hrtime.bigint() as string>, ev, ...details }
//   ready { gen, id }                 opened { gen, id }    (a locker was made)
//   registered { name, reg, gen }     register-failed { name, reg, gen, code, message }
//   start { name, reg, gen, token }   stop { name, reg, gen, reason }   fn { name, reg, gen, token }
//   leader { name, reg, gen, leader, token }      error { scope, name, reg, gen, code, message }
//   removed { name, reg, gen }        (the promise of that registration's remove() resolved)
//   closed { gen } / close-failed { gen, code, message }
//   term { q, name, gen, result: null | { leader, token, since } } / term-failed { q, name, gen, code, message }
//   observed { name, gen, leader, token }
//   start/stop with name 'v2' (the node's select / deselect), v2-change { value, leaderId },
//   node-started { n } / node-start-failed { n, code, message } (node.start() returned / threw),
//   node-stopped { n } (the promise of node.stop() resolved)
//   state { q, gen, leaders: { name: leader() }, node: { started, selected, id, value } }
//   command-error { cmd, code, message }   (a command that could not be carried out)
//
// stdin: one JSON command per line:
//   { cmd: 'register', name, reg }
//   { cmd: 'remove', name, reg }                  remove() of that registration (if it is current)
//   { cmd: 'reregister', name, reg, newReg }      remove() and locker(name) in the same tick
//   { cmd: 'close' }                              close() of the current locker
//   { cmd: 'open', names: [{ name, reg }] }      a new locker (new id), registering these names
//   { cmd: 'reopen', names }                      close() and, in the same tick, open
//   { cmd: 'node-start', value, n } / { cmd: 'node-stop', n }
//   { cmd: 'term', name, q } / { cmd: 'observe', name } / { cmd: 'unobserve', name }
//   { cmd: 'pause', name, reg } -> paused { name, reg, gen } / { cmd: 'resume', name, reg }
//   { cmd: 'handover', name, reg, to? }           handover() of that registration -> handed-over
//                                                 { name, reg, gen, to, leader, token } or
//                                                 handover-refused { name, reg, gen, to, code, message }
//   { cmd: 'state', q } / { cmd: 'exit' }

const config = JSON.parse(process.argv[2] || '{}')
const locked = require(config.module || '../..')
const { priorityOf } = require('./preferences')

function emit (ev, fields) {
  process.stdout.write(JSON.stringify({ t: process.hrtime.bigint().toString(), ev, ...fields }) + '\n')
}

const errFields = (err) => ({ code: err && err.code, message: err && err.message })

let locker = null
let gen = 0
const current = new Map() // name -> { s, reg, gen } registered on the current locker
const observers = new Map() // name -> Observer of the current locker
let node = null // one 2.x node per process, made once: each node holds a locker (and lease) of its own
let nodeStarted = false

function open (names) {
  gen++
  const g = gen
  // The test names handover targets by id: `<idBase>-<generation>` when it gives an idBase.
  const opts = { ttl: config.ttl, prefix: config.prefix, balance: config.balance === true, ...(config.idBase ? { id: `${config.idBase}-${g}` } : {}) }
  if (config.minTermMs !== undefined) opts.minTermMs = config.minTermMs
  locker = locked(config.endpoints, opts)
  locker.on('error', (err) => emit('error', { scope: 'locker', gen: g, ...errFields(err) }))
  current.clear()
  observers.clear()
  emit('opened', { gen: g, id: locker.id() })
  for (const { name, reg } of names) register(name, reg)
}

function register (name, reg) {
  const g = gen
  let s
  try {
    s = locker(name, (remove, term) => { emit('fn', { name, reg, gen: g, token: term && term.token }) }, { priority: priorityOf(reg) })
  } catch (err) {
    emit('register-failed', { name, reg, gen: g, ...errFields(err) })
    return
  }
  current.set(name, { s, reg, gen: g })
  s.on('start', (term) => emit('start', { name, reg, gen: g, token: term.token }))
  s.on('stop', (reason) => emit('stop', { name, reg, gen: g, reason }))
  s.on('leader', (leader, token) => emit('leader', { name, reg, gen: g, leader, token }))
  s.on('error', (err) => emit('error', { scope: 'singleton', name, reg, gen: g, ...errFields(err) }))
  emit('registered', { name, reg, gen: g })
}

function remove (name, reg) {
  const entry = current.get(name)
  if (!entry || entry.reg !== reg) {
    emit('command-error', { cmd: 'remove', name, reg, code: 'NOT_REGISTERED', message: `registration ${reg} of ${name} is not current here` })
    return false
  }
  current.delete(name)
  const g = entry.gen
  let p
  try {
    p = entry.s.remove()
  } catch (err) {
    emit('error', { scope: 'remove', name, reg, gen: g, ...errFields(err) })
    return true
  }
  Promise.resolve(p).then(
    () => emit('removed', { name, reg, gen: g }),
    (err) => emit('error', { scope: 'remove', name, reg, gen: g, ...errFields(err) })
  )
  return true
}

function close () {
  const g = gen
  const l = locker
  let p
  try {
    p = l.close()
  } catch (err) {
    emit('close-failed', { gen: g, ...errFields(err), threw: true })
    return
  }
  p.then(() => emit('closed', { gen: g }), (err) => emit('close-failed', { gen: g, ...errFields(err) }))
}

function nodeStart (value, n) {
  if (!node) {
    node = locker({ id: config.nodeId, path: config.v2Path, value, ttl: config.ttl })
    node.on('select', () => emit('start', { name: 'v2' }))
    node.on('deselect', () => emit('stop', { name: 'v2', reason: 'deselect' }))
    node.on('change', (v, id) => emit('v2-change', { value: v, leaderId: id }))
    node.on('error', (err) => emit('error', { scope: 'node', name: 'v2', ...errFields(err) }))
  }
  try {
    node.start()
  } catch (err) {
    emit('node-start-failed', { n, ...errFields(err) })
    return
  }
  nodeStarted = true
  emit('node-started', { n })
}

function command (msg) {
  switch (msg.cmd) {
    case 'register':
      register(msg.name, msg.reg)
      break
    case 'remove':
      remove(msg.name, msg.reg)
      break
    case 'reregister':
      // The point is the same tick: nothing may run between remove() and locker(name). When the
      // old registration never came to be (its locker(name) threw), the name is simply registered.
      remove(msg.name, msg.reg)
      register(msg.name, msg.newReg)
      break
    case 'handover': {
      const entry = current.get(msg.name)
      if (!entry || entry.reg !== msg.reg) {
        emit('command-error', { cmd: 'handover', name: msg.name, reg: msg.reg, code: 'NOT_REGISTERED', message: `registration ${msg.reg} of ${msg.name} is not current here` })
        break
      }
      const { reg, gen: g } = entry
      entry.s.handover(msg.to).then(
        (r) => emit('handed-over', { name: msg.name, reg, gen: g, to: msg.to ?? null, leader: r.leader, token: r.token }),
        (err) => emit('handover-refused', { name: msg.name, reg, gen: g, to: msg.to ?? null, ...errFields(err) })
      )
      break
    }
    case 'pause':
    case 'resume': {
      const entry = current.get(msg.name)
      if (!entry || entry.reg !== msg.reg) {
        emit('command-error', { cmd: msg.cmd, name: msg.name, reg: msg.reg, code: 'NOT_REGISTERED', message: `registration ${msg.reg} of ${msg.name} is not current here` })
        break
      }
      const { reg, gen: g } = entry
      if (msg.cmd === 'resume') {
        entry.s.resume()
        break
      }
      entry.s.pause().then(
        () => emit('paused', { name: msg.name, reg, gen: g }),
        (err) => emit('error', { scope: 'pause', name: msg.name, reg, gen: g, ...errFields(err) })
      )
      break
    }
    case 'close':
      close()
      break
    case 'open':
      open(msg.names)
      break
    case 'reopen':
      close()
      open(msg.names)
      break
    case 'node-start':
      nodeStart(String(msg.value), msg.n)
      break
    case 'node-stop': {
      if (!node) { emit('node-stopped', { n: msg.n, never: true }); break }
      nodeStarted = false
      node.stop().then(() => emit('node-stopped', { n: msg.n }), (err) => emit('error', { scope: 'node-stop', name: 'v2', n: msg.n, ...errFields(err) }))
      break
    }
    case 'term': {
      const g = gen
      let p
      try { p = locker.term(msg.name) } catch (err) { emit('term-failed', { q: msg.q, name: msg.name, gen: g, threw: true, ...errFields(err) }); break }
      p.then(
        (r) => emit('term', { q: msg.q, name: msg.name, gen: g, result: r && { leader: r.leader, token: r.token, since: r.since && r.since.getTime() } }),
        (err) => emit('term-failed', { q: msg.q, name: msg.name, gen: g, ...errFields(err) })
      )
      break
    }
    case 'observe': {
      if (observers.has(msg.name)) break
      const g = gen
      try {
        const o = locker.observe(msg.name)
        observers.set(msg.name, o)
        o.on('leader', (leader, token) => emit('observed', { name: msg.name, gen: g, leader, token }))
        o.on('error', (err) => emit('error', { scope: 'observer', name: msg.name, gen: g, ...errFields(err) }))
      } catch (err) {
        emit('command-error', { cmd: 'observe', name: msg.name, ...errFields(err) })
      }
      break
    }
    case 'unobserve': {
      const o = observers.get(msg.name)
      if (o) o.close()
      observers.delete(msg.name)
      break
    }
    case 'state': {
      const leaders = {}
      for (const [name, { s }] of current) leaders[name] = s.leader()
      const observed = {}
      for (const [name, o] of observers) observed[name] = { leader: o.leader(), token: o.token() }
      emit('state', {
        q: msg.q,
        gen,
        leaders,
        observed,
        node: node ? { started: nodeStarted, selected: node.isSelected(), id: node.id(), value: node.value() } : null
      })
      break
    }
    case 'exit':
      emit('exiting', { code: 0 })
      process.exit(0)
      break
    default:
      emit('command-error', { cmd: msg.cmd, code: 'BAD_COMMAND', message: JSON.stringify(msg) })
  }
}

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
    try { msg = JSON.parse(line) } catch { emit('command-error', { code: 'BAD_JSON', message: line }); continue }
    try {
      command(msg)
    } catch (err) {
      emit('command-error', { cmd: msg.cmd, ...errFields(err) })
    }
  }
})
// The parent is gone: leave (process exit revokes every open locker's lease).
process.stdin.on('end', () => process.exit(0))

open(config.names || [])
emit('ready', { gen, id: locker.id(), pid: process.pid })
