'use strict'

// What ties lockers to the process they run in: its exit and its termination signals.

const os = require('node:os')

// Lockers still open when the process exits: `process.exit()` skips native cleanup hooks, so
// revoke their leases here and let other hosts take over at once instead of after a TTL.
const openLockers = new Set()
process.on('exit', () => {
  for (const native of openLockers) native.closeSync()
})

// Lockers created with `handleSignals: true`: on SIGTERM/SIGINT they close (stepping down and
// revoking the lease), then the signal takes its default course unless the application listens too.
const signalLockers = new Set()
function onSignal (signal) {
  const closing = [...signalLockers].map((l) => l.close().catch(() => {}))
  Promise.all(closing).then(() => {
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('SIGINT', onSignal)
    if (process.listenerCount(signal) > 0) return
    // The kernel delivers no signal to PID 1 (a container's first process) that it has no
    // handler for, so re-raising it there would leave the process running: exit as the signal
    // would have, with 128 + its number.
    if (process.pid === 1) process.exit(128 + os.constants.signals[signal])
    process.kill(process.pid, signal)
  })
}
function watchSignals (locker) {
  if (signalLockers.size === 0) {
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  }
  signalLockers.add(locker)
}
function unwatchSignals (locker) {
  if (signalLockers.delete(locker) && signalLockers.size === 0) {
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('SIGINT', onSignal)
  }
}

module.exports = { openLockers, watchSignals, unwatchSignals }
