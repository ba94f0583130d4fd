'use strict'
// OpenTelemetry metrics for leader election: the same figures as prometheus.js, through the
// OpenTelemetry API, so any exporter (OTLP, Prometheus, a vendor's) can ship them.
//
//   npm install locked @opentelemetry/api @opentelemetry/sdk-metrics
//   ETCD_HOSTS=127.0.0.1:2379 PORT=9465 node opentelemetry.js   then: curl localhost:9465/metrics.json
//
// lockedInstruments(locker, meter) needs only @opentelemetry/api, like any instrumentation: the
// application decides where the numbers go. The demo below reads them on request with a plain
// MetricReader; in production put e.g. a PeriodicExportingMetricReader with an OTLP exporter there.
const http = require('node:http')
const { performance } = require('node:perf_hooks')
const { MeterProvider, MetricReader } = require('@opentelemetry/sdk-metrics')
const locked = require('locked')

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

function lockedInstruments (locker, meter) {
  const names = new Map() // name -> { noLeaderSince, leaderlessMs, lastTakeoverMs }
  // Observable instruments are read from locker.stats() when the reader collects.
  meter.createObservableGauge('locked.leader', { description: '1 while this host leads the name, else 0' })
    .addCallback((result) => {
      const { singletons } = locker.stats() // a removed name or a closed locker reads as 0
      for (const name of names.keys()) result.observe(singletons[name]?.state === 'leader' ? 1 : 0, { name })
    })
  meter.createObservableGauge('locked.lease.valid', { unit: 's', description: 'Time left to the leadership deadline, if etcd stopped answering now (0 once passed)' })
    .addCallback((result) => result.observe(locker.stats().validForMs / 1000))
  // Cumulative seconds without a leader known to this host, its own takeovers included.
  meter.createObservableCounter('locked.leaderless', { unit: 's', description: 'Seconds this host saw the name without a leader' })
    .addCallback((result) => {
      const now = performance.now()
      for (const [name, n] of names) result.observe((n.leaderlessMs + (n.noLeaderSince === null ? 0 : now - n.noLeaderSince)) / 1000, { name })
    })
  const termsWon = meter.createCounter('locked.terms_won', { description: 'Terms this host was elected for' })
  const takeover = meter.createHistogram('locked.takeover.duration', {
    unit: 's', description: 'From the previous leader\'s key deletion reaching this host to its election', advice: { explicitBucketBoundaries: BUCKETS }
  })
  const roundTrip = meter.createHistogram('locked.keepalive.round_trip', {
    unit: 's', description: 'Round trip of each answered lease keepalive', advice: { explicitBucketBoundaries: BUCKETS }
  })

  locker.on('renewed', () => { // after each answered keepalive
    const { roundTripMs } = locker.stats().keepalive
    if (roundTripMs != null) roundTrip.record(roundTripMs / 1000)
  })

  function track (singleton) {
    const { name } = singleton
    const n = { noLeaderSince: singleton.leader() === null ? performance.now() : null, leaderlessMs: 0, lastTakeoverMs: null, left: false }
    names.set(name, n)
    termsWon.add(0, { name })
    const endGap = () => {
      if (n.noLeaderSince !== null) n.leaderlessMs += performance.now() - n.noLeaderSince
      n.noLeaderSince = null
    }
    singleton.on('leader', (id) => {
      if (id !== null) endGap()
      else if (n.noLeaderSince === null && !n.left) n.noLeaderSince = performance.now()
    })
    singleton.on('start', () => {
      termsWon.add(1, { name })
      // stats() keeps only the last takeover; a new value means this term was one.
      const ms = locker.stats().singletons[name]?.lastTakeoverMs ?? null
      if (ms !== null && ms !== n.lastTakeoverMs) {
        takeover.record(ms / 1000, { name })
        n.leaderlessMs += ms
      }
      n.lastTakeoverMs = ms
    })
    // After remove() or close() this host no longer sees the election: stop the clock.
    singleton.on('stop', (reason) => {
      if (reason === 'removed' || reason === 'closed') { n.left = true; endGap() }
    })
    return singleton
  }

  return { track }
}

module.exports = { lockedInstruments }

// A runnable demo: one singleton, and the collected metrics as JSON on /metrics.json.
if (require.main === module) {
  class OnDemandReader extends MetricReader { // collects only when asked
    async onForceFlush () {}
    async onShutdown () {}
  }
  const reader = new OnDemandReader()
  const meter = new MeterProvider({ readers: [reader] }).getMeter('locked-example')
  const locker = locked(process.env.ETCD_HOSTS || '127.0.0.1:2379', { id: process.env.HOST_ID, handleSignals: true })
  const { track } = lockedInstruments(locker, meter)
  const job = track(locker('digest', (remove, term) => console.log(`leading digest (token ${term.token})`)))
  job.on('error', (err) => console.error(`digest: ${err.code} ${err.message}`))
  locker.on('error', (err) => console.error(`etcd trouble: ${err.code} ${err.message}`))

  const server = http.createServer(async (req, res) => {
    if (req.url !== '/metrics.json') return res.writeHead(404).end()
    const { resourceMetrics } = await reader.collect()
    // One entry per data point: { name, unit, attributes, value } (a histogram's value has count and sum).
    const points = resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics.flatMap(({ descriptor, dataPoints }) =>
      dataPoints.map(({ attributes, value }) => ({ name: descriptor.name, unit: descriptor.unit, attributes, value }))))
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(points))
  })
  // Unref'd: the locker keeps the process alive, so handleSignals' close on SIGTERM ends it.
  server.listen(Number(process.env.PORT) || 9465, '127.0.0.1', () => {
    console.log(`metrics on http://127.0.0.1:${server.address().port}/metrics.json`)
  }).unref()
}
