'use strict'
// A BullMQ queue consumed by one host at a time: every host runs this file, only the elected one
// runs a Worker, and when it stops (deploy, crash, lost etcd) another host's Worker takes over.
// For a queue whose jobs must not run in parallel or out of order, or whose consumer holds
// an exclusive resource; for plain throughput let every host consume instead.
//
//   npm install locked bullmq ioredis
//   ETCD_HOSTS=127.0.0.1:2379 REDIS_URL=redis://127.0.0.1:6379 node bullmq-consumer.js
const { Worker } = require('bullmq')
const locked = require('locked')

const redis = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379')
const connection = { host: redis.hostname, port: Number(redis.port) || 6379 }
const queueName = process.env.QUEUE || 'orders'

// handleSignals: on SIGTERM/SIGINT step down, let the jobs in hand finish (up to drainTimeout),
// revoke the lease and exit; the next host starts within milliseconds.
const locker = locked(process.env.ETCD_HOSTS || '127.0.0.1:2379', { id: process.env.HOST_ID, drainTimeout: 30000, handleSignals: true })
locker.on('error', (err) => console.error(`etcd trouble: ${err.code} ${err.message}`))

// Stand-in for the real work. `token` is the term's fencing token: pass it to what the job
// writes, so that a host that lost leadership without knowing it cannot overwrite newer work.
async function handle (job, token) {
  await new Promise((resolve) => setTimeout(resolve, job.data.workMs || 0))
  return { host: locker.id(), token }
}

const consumer = locker(`${queueName}-consumer`, async (remove, { token, signal }) => {
  // A new Worker for each term: it fetches jobs only while this host leads.
  const worker = new Worker(queueName, async (job) => {
    const result = await handle(job, token)
    console.log(`processed job ${job.id} (token ${token})`)
    return result
  }, { connection, autorun: false })
  worker.on('error', (err) => console.error(`worker: ${err.message}`))
  // The term ended: fetch nothing more, and finish the jobs in hand. BullMQ's job locks keep a
  // job from running twice even if another host is elected meanwhile.
  signal.addEventListener('abort', () => worker.close(), { once: true })
  console.log(`consuming ${queueName} (token ${token})`)
  await worker.run()
  await worker.close() // resolves once the jobs in hand are done: close() waits for this promise
  console.log(`stopped consuming ${queueName}`)
})
consumer.on('error', (err) => console.error(`consumer: ${err.code} ${err.message}`))
