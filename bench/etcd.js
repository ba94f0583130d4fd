'use strict'
// A throwaway single-member etcd for the benchmark: free loopback ports, a fresh temp data dir,
// killed when the bench ends however it ends (normal exit, exception, signal; a watchdog shell
// kills it even if this process is SIGKILLed).
//
//   const etcd = await startEtcd()
//   etcd.endpoint            // '127.0.0.1:port'
//   await etcd.metrics()     // Map of 'name{labels}' -> number, from etcd's /metrics
//   etcd.cpuSeconds()        // etcd's own user+system CPU so far, from /proc/<pid>/stat
//   etcd.stop()              // SIGKILL, remove the data dir (idempotent)

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const ETCD = process.env.ETCD_BIN || '/usr/bin/etcd'
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const live = new Set() // running etcd handles, for the exit-time safety net
function stopAll () {
  for (const handle of live) handle.stop()
}
process.on('exit', stopAll)

function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

function tempBase () {
  // tmpfs: etcd's fsyncs then cost little, so other work on the machine's disk adds less noise.
  try {
    fs.accessSync('/dev/shm', fs.constants.W_OK)
    if (fs.statSync('/dev/shm').isDirectory()) return '/dev/shm'
  } catch {}
  return os.tmpdir()
}

function httpGet (url, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode, body }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)))
    req.on('error', reject)
  })
}

/** Parses Prometheus text format into a Map of 'name{labels}' (labels as printed) -> value. */
function parseMetrics (text) {
  const out = new Map()
  for (const line of text.split('\n')) {
    if (line === '' || line[0] === '#') continue
    const space = line.lastIndexOf(' ')
    if (space < 0) continue
    const value = Number(line.slice(space + 1))
    if (!Number.isNaN(value)) out.set(line.slice(0, space), value)
  }
  return out
}

function etcdVersion () {
  try {
    const text = execFileSync(ETCD, ['--version'], { encoding: 'utf8', timeout: 5000 })
    const m = /etcd Version:\s*(\S+)/.exec(text)
    return m ? m[1] : text.split('\n')[0]
  } catch (err) {
    return `unknown (${err.message})`
  }
}

async function startOnce () {
  const clientPort = await freePort()
  let peerPort = await freePort()
  for (let i = 0; i < 5 && peerPort === clientPort; i++) peerPort = await freePort()
  const dir = fs.mkdtempSync(path.join(tempBase(), 'locked-bench-etcd-'))
  const client = `http://127.0.0.1:${clientPort}`
  const peer = `http://127.0.0.1:${peerPort}`
  const args = [
    '--name', 'bench',
    '--data-dir', path.join(dir, 'data'),
    '--listen-client-urls', client,
    '--advertise-client-urls', client,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `bench=${peer}`,
    '--initial-cluster-state', 'new',
    '--logger', 'zap',
    '--log-outputs', 'stderr',
    '--log-level', 'error'
  ]
  const child = spawn(ETCD, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk) => { stderr = (stderr + chunk).slice(-4000) })
  let exited = null
  child.on('exit', (code, signal) => { exited = { code, signal } })

  // A watchdog that kills etcd if this process dies without running its exit handlers
  // (SIGKILL). It ends by itself once either process is gone; it polls once a second.
  const watchdog = spawn('/bin/sh', ['-c',
    'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null; rm -rf "$3"',
    'watchdog', String(process.pid), String(child.pid), dir], { stdio: 'ignore', detached: true })
  watchdog.unref()

  let stopped = false
  const handle = {
    endpoint: `127.0.0.1:${clientPort}`,
    url: client,
    pid: child.pid,
    dir,
    stop () {
      if (stopped) return
      stopped = true
      live.delete(handle)
      try { child.kill('SIGKILL') } catch {}
      try { fs.rmSync(dir, { recursive: true, force: true }) } catch {}
    },
    async metrics () {
      const res = await httpGet(`${client}/metrics`)
      if (res.status !== 200) throw new Error(`etcd /metrics answered ${res.status}`)
      return parseMetrics(res.body)
    },
    /** etcd's CPU time (user + system) in seconds, or NaN if /proc is not readable. */
    cpuSeconds () {
      return procCpuSeconds(child.pid)
    }
  }
  live.add(handle)

  // Up when /health says so; bounded to 15 s.
  const deadline = Date.now() + 15000
  while (Date.now() < deadline) {
    if (exited) break
    try {
      const res = await httpGet(`${client}/health`, 1000)
      if (res.status === 200 && /"health":\s*"true"/.test(res.body)) return handle
    } catch {}
    await delay(100)
  }
  handle.stop()
  throw new Error(`etcd did not become healthy on ${client} (${exited ? `exited ${JSON.stringify(exited)}` : 'timeout'}): ${stderr.trim().slice(-800)}`)
}

/** Starts etcd; retries with other ports if one was taken meanwhile (at most 3 attempts). */
async function startEtcd () {
  let last
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce()
    } catch (err) {
      last = err
    }
  }
  throw last
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 2000 }).trim()) || 100
  } catch {
    return 100
  }
})()

/** User + system CPU seconds of process `pid`, from /proc/<pid>/stat. */
function procCpuSeconds (pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the command.
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
  } catch {
    return NaN
  }
}

/** RSS of process `pid` in bytes, from /proc/<pid>/status. */
function procRss (pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(status)
    return m ? Number(m[1]) * 1024 : NaN
  } catch {
    return NaN
  }
}

module.exports = { startEtcd, stopAll, etcdVersion, parseMetrics, procCpuSeconds, procRss }
