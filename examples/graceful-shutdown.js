'use strict'
// A service that hands its singleton over at once when stopped (SIGTERM from systemd, Kubernetes
// or Docker), instead of leaving the others to wait for the lease to expire.
//
//   ETCD_HOSTS=127.0.0.1:2379 node examples/graceful-shutdown.js   then: kill -TERM <pid>
const locked = require('locked')

const locker = locked(process.env.ETCD_HOSTS || '127.0.0.1:2379', { ttl: 10, drainTimeout: 5000 })

locker('scheduler', async (remove, term) => {
  console.log(`pid ${process.pid} leads the scheduler (token ${term.token})`)
  // The work ends when leadership does; close() waits for this promise before resigning.
  await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
  console.log('finishing the current step before handing over')
})
locker.on('error', (err) => console.error(`etcd trouble: ${err.code} ${err.message}`))

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, async () => {
    console.log(`${signal}: handing over`)
    await locker.close() // steps down, waits for the work, revokes the lease
    process.exit(0)
  })
}
// The same, built in: locked(hosts, { handleSignals: true })
