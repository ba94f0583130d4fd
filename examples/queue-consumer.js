'use strict'
// One consumer for a queue that must be processed in order: only the elected host consumes, and
// every write it makes carries the fencing token, so a stale leader's writes can be refused.
//
//   ETCD_HOSTS=127.0.0.1:2379 node examples/queue-consumer.js
const locked = require('locked')

const locker = locked(process.env.ETCD_HOSTS || '127.0.0.1:2379', { ttl: 5 })

// Stand-ins for a queue and a store that keeps the highest token it has seen.
const queue = Array.from({ length: 1000 }, (_, i) => `message ${i}`)
const store = { highestToken: 0, write (token, value) {
  if (token < this.highestToken) throw new Error(`stale leader (token ${token} < ${this.highestToken})`)
  this.highestToken = token
  console.log(`stored ${value} with token ${token}`)
} }

locker('orders-consumer', async (remove, term) => {
  console.log(`consuming (token ${term.token})`)
  while (!term.signal.aborted && queue.length > 0) {
    const message = queue.shift()
    store.write(term.token, message)
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  // Returning a promise: remove()/close() wait for it (drainTimeout) before another host starts.
})
locker.on('error', (err) => console.error(`etcd trouble: ${err.code} ${err.message}`))
process.on('SIGINT', () => locker.close().then(() => process.exit(0)))
