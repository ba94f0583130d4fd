'use strict'
// Prometheus metrics for leader election, with prom-client: who leads, how often this host won,
// how long takeovers and keepalives take, and how long a name went without a leader.
//
//   npm install locked prom-client
//   ETCD_HOSTS=127.0.0.1:2379 PORT=9464 node prometheus.js     then: curl localhost:9464/metrics
//
// lockedMetrics(locker, { registry }) registers the metrics; track(singleton) adds a name. Most
// figures are read from locker.stats() when Prometheus scrapes; what a snapshot cannot show (each
// takeover, each keepalive, time without a leader) is recorded from events as it happens.
const http = require('node:http')
const { performance } = require('node:perf_hooks')
const client = require('prom-client')
const locked = require('locked')

// Seconds are Prometheus's unit: buckets from half a millisecond (a loopback etcd) to 5 s.
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

function lockedMetrics (locker, { registry = client.register } = {}) {
  const tracked = new Set()
  const flushes = new Set() // per tracked name: count the leaderless time up to now
  const registers = [registry]
  new client.Gauge({
    name: 'locked_leader',
    help: '1 while this host leads the name, else 0',
    labelNames: ['name'],
    registers,
    collect () {
      // stats() only lists registered names: a removed name, or a closed locker, reads as 0.
      const { singletons } = locker.stats()
      for (const name of tracked) this.set({ name }, singletons[name]?.state === 'leader' ? 1 : 0)
    }
  })
  new client.Gauge({
    name: 'locked_lease_valid_seconds',
    help: 'Time left to the leadership deadline, if etcd stopped answering now (0 once passed)',
    registers,
    collect () { this.set(locker.stats().validForMs / 1000) }
  })
  const termsWon = new client.Counter({
    name: 'locked_terms_won_total', help: 'Terms this host was elected for', labelNames: ['name'], registers
  })
  const takeover = new client.Histogram({
    name: 'locked_takeover_seconds',
    help: 'From the previous leader\'s key deletion reaching this host to its own election',
    labelNames: ['name'],
    buckets: BUCKETS,
    registers
  })
  const roundTrip = new client.Histogram({
    name: 'locked_keepalive_round_trip_seconds', help: 'Round trip of each answered lease keepalive', buckets: BUCKETS, registers
  })
  // Time with no leader known to this host: while it knows none, plus its own takeovers (the old
  // leader had already stepped down when its key was deleted). A crashed leader's remaining TTL is
  // invisible to every host: etcd reports the deletion only when the lease expires.
  const leaderless = new client.Counter({
    name: 'locked_leaderless_seconds_total',
    help: 'Seconds this host saw the name without a leader, including its takeovers',
    labelNames: ['name'],
    registers,
    collect () { for (const flush of flushes) flush() }
  })

  // One histogram sample per answered keepalive ('renewed' fires after each one).
  locker.on('renewed', () => {
    const { roundTripMs } = locker.stats().keepalive
    if (roundTripMs != null) roundTrip.observe(roundTripMs / 1000)
  })

  function track (singleton) {
    const { name } = singleton
    tracked.add(name)
    termsWon.inc({ name }, 0) // export 0 before the first election
    let noLeaderSince = singleton.leader() === null ? performance.now() : null
    let lastTakeoverMs = null
    let left = false // after remove() or close(), this host no longer sees the election
    const flush = () => {
      if (noLeaderSince === null) return
      const now = performance.now()
      leaderless.inc({ name }, (now - noLeaderSince) / 1000)
      noLeaderSince = now
    }
    flushes.add(flush)
    singleton.on('leader', (id) => {
      if (id === null && noLeaderSince === null && !left) noLeaderSince = performance.now()
      if (id !== null) { flush(); noLeaderSince = null }
    })
    singleton.on('start', () => {
      termsWon.inc({ name })
      // stats() keeps only the last takeover; a new value means this term was one.
      const ms = locker.stats().singletons[name]?.lastTakeoverMs ?? null
      if (ms !== null && ms !== lastTakeoverMs) {
        takeover.observe({ name }, ms / 1000)
        leaderless.inc({ name }, ms / 1000)
      }
      lastTakeoverMs = ms
    })
    singleton.on('stop', (reason) => {
      if (reason === 'removed' || reason === 'closed') { flush(); flushes.delete(flush); noLeaderSince = null; left = true }
    })
    return singleton
  }

  return { track }
}

module.exports = { lockedMetrics }

// A runnable demo: one singleton and a /metrics endpoint.
if (require.main === module) {
  const locker = locked(process.env.ETCD_HOSTS || '127.0.0.1:2379', { id: process.env.HOST_ID, handleSignals: true })
  const registry = new client.Registry()
  const { track } = lockedMetrics(locker, { registry })
  const job = track(locker('report', (remove, term) => console.log(`leading report (token ${term.token})`)))
  job.on('error', (err) => console.error(`report: ${err.code} ${err.message}`))
  locker.on('error', (err) => console.error(`etcd trouble: ${err.code} ${err.message}`))

  const server = http.createServer(async (req, res) => {
    if (req.url !== '/metrics') return res.writeHead(404).end()
    res.setHeader('content-type', registry.contentType)
    res.end(await registry.metrics())
  })
  // Unref'd: the locker keeps the process alive, so handleSignals' close on SIGTERM ends it.
  server.listen(Number(process.env.PORT) || 9464, '127.0.0.1', () => {
    console.log(`metrics on http://127.0.0.1:${server.address().port}/metrics`)
  }).unref()
}
