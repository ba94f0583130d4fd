'use strict'
// A cron job that must run on one host only, scheduled with croner: every host runs this file,
// the elected one runs the schedule, and another host takes it over if that one stops or dies.
//
//   npm install locked croner
//   ETCD_HOSTS=127.0.0.1:2379 node cron.js   (start it two or three times)
const { Cron } = require('croner')
const locked = require('locked')

// Every 3 s for the demo; '0 3 * * *' would be 03:00 every day.
const schedule = process.env.CRON_SCHEDULE || '*/3 * * * * *'
const locker = locked(process.env.ETCD_HOSTS || '127.0.0.1:2379', { id: process.env.HOST_ID, ttl: 5 })

// Stand-in for the job. A run that a failover interrupts may be repeated by the next leader:
// keep the job idempotent (e.g. record the scheduled time it covered, with the fencing token).
async function runReport (scheduledAt, { token }) {
  console.log(`report run at ${scheduledAt.toISOString()} by ${locker.id()} (token ${token})`)
}

const report = locker('nightly-report', async (remove, term) => {
  console.log(`elected (token ${term.token}): running the report on "${schedule}"`)
  let running = Promise.resolve()
  // The schedule lives only as long as the term; protect: a slow run never overlaps the next one.
  const job = new Cron(schedule, { protect: true, catch: (err) => console.error(`report failed: ${err.message}`) }, (self) => {
    // Check right before acting: after a pause (GC, SIGSTOP) the term may be over.
    if (!report.isLeader()) return
    running = runReport(self.currentRun(), term)
    return running
  })
  await new Promise((resolve) => term.signal.addEventListener('abort', resolve, { once: true }))
  job.stop()
  console.log(`no longer leading (${term.signal.reason.reason}); waiting for my turn`)
  // A run in progress finishes before the next leader starts: close() waits for this promise.
  await running.catch(() => {})
})
report.on('error', (err) => console.error(`nightly-report: ${err.code} ${err.message}`))
locker.on('error', (err) => console.error(`etcd trouble: ${err.code} ${err.message}`))
process.on('SIGINT', () => locker.close().then(() => process.exit(0)))
