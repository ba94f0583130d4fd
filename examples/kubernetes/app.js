'use strict'
// Entry point of a Deployment whose pods elect one leader (deployment.yaml, Dockerfile).
//
// Every pod runs the same code; the elected one runs the "reconciler". On SIGTERM (a rolling
// deploy, a drained node, kubectl delete) it finishes the step in hand, hands over within
// milliseconds and exits, well inside terminationGracePeriodSeconds.
const http = require('node:http')
const locked = require('locked')

const options = {
  id: process.env.POD_NAME, // the pod's name (downward API): `locked status` shows who leads
  ttl: Number(process.env.LOCK_TTL) || 10, // a crashed or cut-off pod is replaced after about this
  drainTimeout: Number(process.env.DRAIN_TIMEOUT_MS) || 20000, // must fit in the grace period
  handleSignals: true // SIGTERM/SIGINT: step down, wait for the work (drainTimeout), revoke the lease
}
const log = (msg) => console.log(`${new Date().toISOString()} ${msg}`)
const locker = locked(process.env.ETCD_HOSTS, options)
locker.on('error', (err) => log(`etcd trouble: ${err.code} ${err.message}`))
log(`pod ${locker.id()}: ttl ${options.ttl} s, drainTimeout ${options.drainTimeout} ms`)

// Stand-in for one step of the leader's work (a reconcile pass, a batch), carrying the token.
const step = (token) => new Promise((resolve) => setTimeout(resolve, 1000))

const reconciler = locker('reconciler', async (remove, { token, signal }) => {
  log(`leading reconciler (token ${token})`)
  while (!signal.aborted) await step(token) // the step in hand finishes; no new one starts
  log('reconciler: work wound down')
})
reconciler.on('error', (err) => log(`reconciler: ${err.code} ${err.message}`))

// Probes: ready and live on followers too (a readiness that waited for leadership would stall
// the rolling deploy: maxUnavailable 0 waits for the new pod while the old one leads). 503 only
// while shutting down, or when etcd has not answered for 3 TTLs. examples/health-express.js has more.
let shuttingDown = false
const startedAt = Date.now()
const server = http.createServer((req, res) => {
  if (req.url !== '/healthz') return res.writeHead(404).end()
  const silentMs = locker.stats().keepalive.sinceRenewalMs ?? Date.now() - startedAt
  const ok = !shuttingDown && silentMs < 3 * options.ttl * 1000
  res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'unavailable\n')
})
server.listen(Number(process.env.PORT) || 8080, () => log(`probes on :${server.address().port}/healthz`))

// handleSignals closes the locker on SIGTERM and then ends the process as the signal would (as
// PID 1, where the kernel ignores a re-raised signal, it exits with 143). We listen as well, to
// close the probe server and exit 0 once the handover is done: while a listener is attached,
// locked leaves the exit to us. process.on, not once.
process.on('SIGTERM', async () => {
  if (shuttingDown) return
  shuttingDown = true
  log('SIGTERM: handing over')
  try {
    await locker.close() // the close handleSignals began: resolves once the lease is revoked
  } catch (err) {
    log(`close: ${err.message}`) // etcd unreachable: the lease expires within the TTL
  }
  server.close()
  log('exiting')
  process.exit(0)
})
