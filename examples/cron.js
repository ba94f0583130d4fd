'use strict'
// A cron-style job that must run on one host only: every host runs this file, the elected one
// does the work every few seconds, and another host takes over if it dies.
//
//   ETCD_HOSTS=127.0.0.1:2379 node examples/cron.js   (start it two or three times)
const locked = require('..')

const locker = locked(process.env.ETCD_HOSTS || '127.0.0.1:2379', { ttl: 5 })
const everyMs = 3000

locker('nightly-report', (remove, term) => {
  console.log(`elected (token ${term.token}): running the report every ${everyMs / 1000} s`)
  const timer = setInterval(() => {
    // Check right before acting: after a pause (GC, SIGSTOP) the deadline may have passed.
    if (!term.signal.aborted) console.log(`report run at ${new Date().toISOString()} (token ${term.token})`)
  }, everyMs)
  term.signal.addEventListener('abort', () => {
    clearInterval(timer)
    console.log(`no longer leading (${term.signal.reason.reason}); waiting for my turn`)
  })
})
locker.on('error', (err) => console.error(`etcd trouble: ${err.code} ${err.message}`))
process.on('SIGINT', () => locker.close().then(() => process.exit(0)))
