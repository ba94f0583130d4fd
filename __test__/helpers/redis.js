'use strict'
// Test fixture: a throwaway redis-server (Debian package redis-server) on a free loopback port, in
// a fresh temp dir, with nothing persisted. For the recipes that use a Redis-backed queue.
//
//   const { startRedis } = require('./helpers/redis')
//   const redis = await startRedis()
//   redis.url        // 'redis://127.0.0.1:<port>'
//   await redis.close()   // SIGKILL, remove the temp dir (also done when this process exits)

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { freePorts } = require('./etcd')
const { until, retryPortRace } = require('./util')

const REDIS = process.env.REDIS_SERVER_BIN || 'redis-server'
const live = new Set()

function killEverythingSync () {
  for (const r of live) r.killSync()
}
process.on('exit', killEverythingSync)
// A test run stopped by a signal skips 'exit': clean up first, then let the signal take its course.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.prependOnceListener(sig, () => {
    killEverythingSync()
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
  })
}

// Whether a redis server on this port answers PING.
function ping (port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1')
    let answer = ''
    sock.setTimeout(500, () => { sock.destroy(); resolve(false) })
    sock.on('error', () => resolve(false))
    // Whatever else holds the port may just hang up: that is no PONG either.
    sock.on('close', () => resolve(false))
    sock.on('connect', () => sock.write('PING\r\n'))
    sock.on('data', (d) => {
      answer += d
      if (answer.includes('\r\n')) { sock.destroy(); resolve(answer.startsWith('+PONG')) }
    })
  })
}

// startRedis({ port }): `port` is only the first one tried (the fixture's own test passes a taken one).
async function startRedis ({ port } = {}) {
  return retryPortRace(async (attempt) => startRedisOnce(attempt === 0 && port !== undefined ? port : (await freePorts(1))[0]))
}

async function startRedisOnce (port) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'locked-redis-'))
  const log = path.join(dir, 'redis.log')
  const proc = spawn(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--logfile', log,
    '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { stdio: 'ignore' })
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  const server = {
    port,
    url: `redis://127.0.0.1:${port}`,
    killSync () {
      try { proc.kill('SIGKILL') } catch {}
      fs.rmSync(dir, { recursive: true, force: true })
      live.delete(server)
    },
    async close () {
      proc.kill('SIGKILL')
      await exited
      server.killSync()
    }
  }
  live.add(server)
  await new Promise((resolve, reject) => {
    proc.once('spawn', resolve)
    proc.once('error', (err) => reject(new Error(`cannot run ${REDIS}: ${err.message} (install it: apt-get install redis-server)`)))
  }).catch((err) => { server.killSync(); throw err })
  try {
    await until(async () => proc.exitCode === null && proc.signalCode === null ? ping(port) : Promise.reject(new Error('exited')), 10000, `redis-server on port ${port}`)
  } catch (err) {
    let tail = ''
    try { tail = fs.readFileSync(log, 'utf8').split('\n').slice(-10).join('\n') } catch {}
    server.killSync()
    const failure = new Error(`redis-server did not start: ${err.message}\n${tail}`)
    // Between freePorts() and redis binding it, another process may have taken the port.
    failure.addressInUse = /address already in use/i.test(tail)
    throw failure
  }
  return server
}

module.exports = { startRedis, ping }
