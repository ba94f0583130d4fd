'use strict'
// One competing host of the benchmark, in its own process: it runs elections with either
// `locked` or the npm `etcd3` package's Election and reports what happens, with times on the
// machine-wide monotonic clock (`process.hrtime.bigint()`), to the harness over IPC.
//
// Started by bench/hosts.js with one argument, a JSON config:
//   { lib: 'locked' | 'etcd3', endpoint, ttl, prefix, quiet, register: [names]?, guardian?, reportRenewals?,
//     balance?, minTermMs? (locked only) }
// Commands (from the harness): register, remove, close, stats, exit, and with locked handover and
// id; each answered with
// { type: 'reply', id, ... }. Events (to the harness): start, stop, allStarted, firstStart, error,
// renewed (with reportRenewals: when each keepalive of the leader's lease was sent).

const now = () => process.hrtime.bigint()
const tSpawned = now()

const config = JSON.parse(process.argv[2])
const { lib, endpoint, ttl, prefix } = config
let quiet = Boolean(config.quiet)

// The harness going away (finished or crashed) ends this host too, always.
process.on('disconnect', () => process.exit(0))

function send (message) {
  if (process.connected) process.send(message)
}

const elections = new Map() // name -> { leading, handle }
let started = 0 // leaderships currently held
let expect = 0 // send 'allStarted' when `started` reaches this
let firstPending = false // send 'firstStart' at the next start (also when quiet)
let lastStart = 0n

function onStart (name) {
  const t = now()
  const e = elections.get(name)
  if (!e || e.leading) return
  e.leading = true
  started++
  lastStart = t
  if (!quiet) send({ type: 'start', name, t })
  // A quiet host of many names still tells when the first of a batch started, so that a takeover
  // has its first and its last start without a message per name slowing the host meanwhile.
  if (firstPending) {
    firstPending = false
    send({ type: 'firstStart', name, t })
  }
  if (expect > 0 && started === expect) {
    send({ type: 'allStarted', t, count: started })
    expect = 0
  }
}

function onStop (name, reason) {
  const t = now()
  const e = elections.get(name)
  if (!e) return
  if (e.leading) {
    e.leading = false
    started--
  }
  if (!quiet) send({ type: 'stop', name, t, reason: String(reason) })
}

// ---- the two libraries behind one small interface -------------------------------------------

function lockedDriver () {
  const tRequire = now()
  // A snapshot of the addon taken when the bench started (see run.js), else the working tree.
  const locked = require(config.lockedPath || '..')
  const tCreate = now()
  const locker = locked([endpoint], { ttl, prefix, ...(config.guardian ? { guardian: true } : {}), ...(config.balance ? { balance: true, minTermMs: config.minTermMs } : {}) })
  locker.on('error', (err) => send({ type: 'error', where: 'locker', message: err.message }))
  // When each answered keepalive was sent: etcd renews the lease when it receives one, so the
  // last one sent before a crash tells when etcd may expire the lease at the earliest.
  if (config.reportRenewals) {
    locker.on('renewed', () => {
      const since = locker.stats().keepalive.sinceRenewalMs ?? 0
      send({ type: 'renewed', t: now() - BigInt(Math.round(since * 1e6)) })
    })
  }
  return {
    tRequire,
    tCreate,
    register (name) {
      const s = locker(name)
      s.on('start', () => onStart(name))
      s.on('stop', (reason) => onStop(name, reason))
      s.on('error', (err) => send({ type: 'error', where: name, message: err.message }))
      return s
    },
    async remove (name, s) {
      await s.remove()
    },
    handover (name, s, to) {
      return s.handover(to)
    },
    id () {
      return locker.id()
    },
    // The synchronous check a leader's code can make before acting (against the deadline).
    isLeader (s) {
      return s.isLeader()
    },
    guardianPid () {
      return locker.stats().guardian?.pid ?? null
    },
    async close () {
      await locker.close()
    }
  }
}

function etcd3Driver () {
  const tRequire = now()
  const { Etcd3 } = require('etcd3')
  const tCreate = now()
  const client = new Etcd3({ hosts: `http://${endpoint}` })
  const ns = client.namespace(`${prefix}/`)
  const value = `host-${process.pid}`
  let closing = false

  function campaign (name) {
    const c = ns.election(name, ttl).campaign(value)
    c.on('elected', () => onStart(name))
    // etcd3 says when it writes a keepalive (its campaign's lease is a public property).
    if (config.reportRenewals) c.lease.on('keepaliveFired', () => send({ type: 'renewed', t: now() }))
    // etcd3's only way of saying "you no longer lead, or will not": the campaign failed. Do
    // what etcd3's documentation shows: stop, and campaign again after 5 s.
    c.on('error', (err) => {
      onStop(name, `error: ${err.message}`)
      send({ type: 'error', where: name, message: err.message })
      const e = elections.get(name)
      if (closing || !e || e.handle !== c || e.retries >= MAX_RECAMPAIGNS) return
      e.retries++
      recampaigns++
      setTimeout(() => {
        if (!closing && elections.get(name) === e && e.handle === c) e.handle = campaign(name)
      }, 5000 + Math.floor(Math.random() * 1000))
    })
    return c
  }

  return {
    tRequire,
    tCreate,
    register: campaign,
    async remove (name, c) {
      await c.resign()
      onStop(name, 'removed')
    },
    async close () {
      closing = true
      await Promise.all([...elections.values()].map((e) => e.handle.resign()))
      for (const name of elections.keys()) onStop(name, 'closed')
      client.close()
    }
  }
}

const MAX_RECAMPAIGNS = 10
let recampaigns = 0

const driver = lib === 'locked' ? lockedDriver() : etcd3Driver()

function register (names) {
  for (const name of names) {
    const e = { leading: false, handle: null, retries: 0 }
    elections.set(name, e)
    e.handle = driver.register(name)
  }
}

// ---- commands --------------------------------------------------------------------------------

const commands = {
  register ({ names, expectAll }) {
    if (expectAll) {
      expect = started + names.length
      firstPending = true
    }
    const t0 = now()
    register(names)
    return { t0, t1: now() }
  },
  async remove ({ name }) {
    const e = elections.get(name)
    if (!e) throw new Error(`no election ${name}`)
    const t0 = now()
    await driver.remove(name, e.handle)
    elections.delete(name)
    return { t0, t1: now() }
  },
  // locked only: handover() of a name this host leads, to `to` (a locker id) or the next in line.
  async handover ({ name, to }) {
    const e = elections.get(name)
    if (!e) throw new Error(`no election ${name}`)
    const t0 = now()
    const result = await driver.handover(name, e.handle, to)
    return { t0, t1: now(), ...result }
  },
  id () {
    return { lockerId: driver.id() }
  },
  async close () {
    const t0 = now()
    await driver.close()
    return { t0, t1: now() }
  },
  stats () {
    if (typeof global.gc === 'function') global.gc()
    const mem = process.memoryUsage()
    return {
      t: now(),
      cpu: process.cpuUsage(),
      rss: mem.rss,
      heapUsed: mem.heapUsed,
      external: mem.external,
      started,
      lastStart,
      recampaigns,
      guardianPid: driver.guardianPid ? driver.guardianPid() : null
    }
  },
  leading ({ name }) {
    const e = elections.get(name)
    return { leading: Boolean(e && e.leading) }
  },
  setQuiet ({ value }) {
    quiet = Boolean(value)
    return {}
  },
  // For the floor: an etcd3 watch on a prefix reporting each deletion with its arrival time.
  async floorWatch ({ prefix: watched }) {
    const { Etcd3 } = require('etcd3')
    const client = new Etcd3({ hosts: `http://${endpoint}` })
    const watcher = await client.watch().prefix(watched).create()
    watcher.on('delete', (kv) => send({ type: 'deleted', t: now(), key: kv.key.toString() }))
    return {}
  },
  exit () {
    setImmediate(() => process.exit(0))
    return {}
  }
}

process.on('message', async (msg) => {
  if (!msg || typeof msg.cmd !== 'string') return
  const handler = commands[msg.cmd]
  try {
    if (!handler) throw new Error(`unknown command ${msg.cmd}`)
    const result = await handler(msg)
    send({ type: 'reply', id: msg.id, ok: true, ...result })
  } catch (err) {
    send({ type: 'reply', id: msg.id, ok: false, message: err && err.message ? err.message : String(err) })
  }
})

// ---- resume detection for the pause scenario ------------------------------------------------
// A 10 ms heartbeat: a gap much longer than that means this process was stopped (SIGSTOP). The
// first tick after the gap reports whether this host still believed it led at that moment.
if (config.heartbeat) {
  let last = now()
  const timer = setInterval(() => {
    const t = now()
    if (t - last > 500_000_000n) {
      let leading = 0
      let checked = 0
      for (const e of elections.values()) {
        if (e.leading) leading++
        // Libraries without a synchronous check only have what their events said.
        if (driver.isLeader ? driver.isLeader(e.handle) : e.leading) checked++
      }
      send({ type: 'resumed', t, gapFrom: last, leading, checked })
    }
    last = t
  }, 10)
  timer.unref()
}

// ---- startup ---------------------------------------------------------------------------------

let tRegister = null
if (Array.isArray(config.register) && config.register.length > 0) {
  expect = config.register.length
  tRegister = now()
  register(config.register)
}
send({ type: 'ready', tSpawned, tRequire: driver.tRequire, tCreate: driver.tCreate, tRegister, pid: process.pid })
