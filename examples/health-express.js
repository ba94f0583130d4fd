'use strict'
// Health and "who leads" endpoints for a service that runs leader election, with Express.
//
//   npm install locked express
//   ETCD_HOSTS=127.0.0.1:2379 PORT=8080 node health-express.js
//   curl localhost:8080/healthz     curl localhost:8080/leader
//
// GET /healthz answers 200 on followers as well as on the leader. A readiness check that waited
// for leadership would deadlock a rolling deploy: the new pod is never "ready" while the old one
// leads, and the old one is not stopped until the new one is ready. It answers 503 only when this
// process cannot take part in the election: the locker is closing, or etcd has not answered a
// keepalive for longer than UNHEALTHY_AFTER_MS (restarting the process may then help, e.g. after
// its network broke; a short etcd hiccup should not restart every pod).
//
// GET /leader tells who leads each name, as etcd says (locker.term(): leader id, fencing token,
// elected since), and what this host knows itself.
const express = require('express')
const locked = require('locked')

const ttl = Number(process.env.LOCK_TTL) || 10
// Well above the keepalive interval (ttl / 3), or a healthy process would flap.
const unhealthyAfterMs = Number(process.env.UNHEALTHY_AFTER_MS) || 3 * ttl * 1000
const locker = locked(process.env.ETCD_HOSTS || '127.0.0.1:2379', { id: process.env.HOST_ID, ttl })
locker.on('error', (err) => console.error(`etcd trouble: ${err.code} ${err.message}`))
const names = ['billing', 'invoices']
for (const name of names) {
  const singleton = locker(name, async (remove, { token, signal }) => {
    console.log(`leading ${name} (token ${token})`)
    // A stand-in for the leader's work: it ends with the term and takes a moment to wind down,
    // which close() waits for (drainTimeout) before the next leader starts.
    await new Promise((resolve) => signal.addEventListener('abort', resolve))
    await new Promise((resolve) => setTimeout(resolve, 1000))
    console.log(`${name}: work wound down`)
  })
  singleton.on('error', (err) => console.error(`${name}: ${err.code} ${err.message}`))
}
const startedAt = Date.now()
let closing = false // the locker has no "closed" flag: remember our own close()

const app = express()

app.get('/healthz', (req, res) => {
  const stats = locker.stats()
  // Time since the last answered keepalive; before the first one, since this process started.
  const silentMs = stats.keepalive.sinceRenewalMs ?? Date.now() - startedAt
  const leading = Object.keys(stats.singletons).filter((name) => stats.singletons[name].state === 'leader')
  const ok = !closing && silentMs < unhealthyAfterMs
  res.status(ok ? 200 : 503).json({
    status: closing ? 'closing' : ok ? 'ok' : 'etcd-unreachable',
    id: stats.id,
    leading, // informative only: a follower is just as healthy
    etcdSilentMs: Math.round(silentMs)
  })
})

app.get('/leader', async (req, res) => {
  // One read of etcd per name; it rejects (ETCD_UNAVAILABLE, LOCKER_CLOSED) when it cannot answer.
  const terms = await Promise.all(names.map((name) => locker.term(name)))
  const singletons = locker.singletons()
  res.json(Object.fromEntries(names.map((name, i) => [name, {
    leader: terms[i]?.leader ?? null,
    token: terms[i]?.token ?? null,
    since: terms[i]?.since ?? null,
    self: locker.id(),
    isLeader: singletons[name]?.isLeader() ?? false
  }])))
})

// Express 5 passes a rejected handler here.
app.use((err, req, res, next) => res.status(503).json({ error: err.code || 'ERROR', message: err.message }))

const server = app.listen(Number(process.env.PORT) || 8080, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`)
})

// On SIGTERM: report "closing" while the locker hands over (waiting for leaders' work), then stop.
process.once('SIGTERM', async () => {
  closing = true
  await locker.close()
  server.close()
  server.closeAllConnections()
})
