'use strict'
// Test fixture: real etcd processes on free loopback ports, in a fresh temp dir.
//
//   const { startEtcd } = require('./helpers/etcd')
//   const cluster = await startEtcd({ members: 3 })
//   cluster.endpoints            // ['127.0.0.1:p1', ...]
//   cluster.members[0].kill()    // SIGKILL and wait for exit; .start() brings it back (same data, same ports)
//   await cluster.leader()       // the member that is the raft leader
//   await cluster.heal()         // every member running and unfrozen again (afterEach)
//   await cluster.keys('locked/build/')   // [{ key, value, lease, leaseHex, createRevision, modRevision }]
//   keyOf(kvs, host.id)          // the candidate key a locker id holds among those
//   await cluster.etcdctl(['lease', 'revoke', hex])
//   await cluster.close()        // SIGKILL everything, remove the temp dir
//
// TLS: startEtcd({ tls: { ca, server, client, clientCertAuth = true } }) with certificates from
// ./certs.js ({ certFile, keyFile, cert, key } each): the client URLs are https://, members require
// a client certificate signed by `ca`, and the fixture itself (health, keys, etcdctl) uses `client`.
// Auth: after `await cluster.enableAuth('rootpw')` (user root, `etcdctl auth enable`), the
// fixture's own requests (keys, gateway, etcdctl) authenticate as root.
//
// Every etcd started here is SIGKILLed when this process exits, whatever happened to the test.

const { spawn, execFile } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const https = require('node:https')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { quietWindow, retryPortRace } = require('./util')

const ETCD = process.env.ETCD_BIN || 'etcd'
const ETCDCTL = process.env.ETCDCTL_BIN || 'etcdctl'

// ---- safety net ------------------------------------------------------------------------------
const liveProcs = new Set()
const liveDirs = new Set()

function killEverythingSync () {
  for (const proc of liveProcs) {
    try { proc.kill('SIGKILL') } catch {}
  }
  liveProcs.clear()
  for (const dir of liveDirs) {
    // A process that was just SIGKILLed may still be dying on the other CPU: retry briefly.
    try { fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 }) } catch {}
  }
  liveDirs.clear()
}

process.on('exit', killEverythingSync)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  // Clean up, then die of the same signal (the listener is gone after `once`).
  process.once(sig, () => {
    killEverythingSync()
    process.kill(process.pid, sig)
  })
}

// The exit hook above cannot run when this process is SIGKILLed (a test runner's timeout, an
// impatient Ctrl-C twice): a small shell then outlives it, kills etcd and removes its files. It
// polls once a second; when etcd exits first (a test stopped or killed a member, and may start it
// again on the same data, beside the other members' files), it ends without touching anything.
function watchOver (pid, dir) {
  const watchdog = spawn('/bin/sh', ['-c',
    'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill -0 "$1" 2>/dev/null || { kill -9 "$2" 2>/dev/null; rm -rf "$3"; }',
    'etcd-watchdog', String(process.pid), String(pid), dir], { stdio: 'ignore', detached: true })
  watchdog.unref()
}

// ---- small utilities -------------------------------------------------------------------------
function tempBase () {
  if (process.env.LOCKED_TEST_TMP) return process.env.LOCKED_TEST_TMP
  // tmpfs makes etcd's fsyncs cheap, which keeps raft stable on a loaded machine.
  try {
    fs.accessSync('/dev/shm', fs.constants.W_OK)
    if (fs.statSync('/dev/shm').isDirectory()) return '/dev/shm'
  } catch {}
  return os.tmpdir()
}

// `count` distinct free loopback ports: all are held open until every one is chosen.
async function freePorts (count) {
  const servers = []
  try {
    for (let i = 0; i < count; i++) {
      const srv = net.createServer()
      servers.push(srv)
      await new Promise((resolve, reject) => {
        srv.once('error', reject)
        srv.listen(0, '127.0.0.1', resolve)
      })
    }
    return servers.map((s) => s.address().port)
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(() => resolve()))))
  }
}

// Minimal HTTP/JSON request with a hard timeout. Resolves { status, body } (body parsed if JSON).
// For https:// URLs, `tls` is { ca, cert, key } (PEM texts) of the client.
function httpJson (url, { method = 'GET', body, timeoutMs = 1000, tls, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
    const secure = url.startsWith('https:')
    const req = (secure ? https : http).request(url, {
      method,
      agent: false,
      headers: { ...headers, ...(data ? { 'content-type': 'application/json', 'content-length': data.length } : {}) },
      timeout: timeoutMs,
      ...(secure && tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {})
    }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let parsed = text
        try { parsed = JSON.parse(text) } catch {}
        resolve({ status: res.statusCode, body: parsed })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms: ${method} ${url}`)))
    req.on('error', reject)
    if (data) req.write(data)
    req.end()
  })
}

const b64 = (s) => Buffer.from(s, 'utf8').toString('base64')
const unb64 = (s) => Buffer.from(s || '', 'base64').toString('utf8')

// The end of the key range for "every key starting with prefix" (etcd's clientv3.GetPrefixRangeEnd).
function prefixRangeEnd (prefix) {
  const buf = Buffer.from(prefix, 'utf8')
  for (let i = buf.length - 1; i >= 0; i--) {
    if (buf[i] < 0xff) {
      const end = Buffer.from(buf.subarray(0, i + 1))
      end[i]++
      return end
    }
  }
  return Buffer.from([0])
}

function tailFile (file, lines = 30) {
  try {
    const text = fs.readFileSync(file, 'utf8').trimEnd().split('\n')
    return text.slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

// ---- one member ------------------------------------------------------------------------------
class Member {
  constructor ({ name, dir, clientPort, peerPort, initialCluster, token, heartbeatMs, electionMs, extraArgs, tls }) {
    this.name = name
    this.dir = dir
    this.dataDir = path.join(dir, `${name}.etcd`)
    this.logFile = path.join(dir, `${name}.log`)
    this.stderrFile = path.join(dir, `${name}.stderr`)
    this.clientPort = clientPort
    this.peerPort = peerPort
    this.clientUrl = `${tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`
    // What the fixture's own requests to this member use: { ca, cert, key } PEM texts, or undefined.
    this.clientTls = tls ? { ca: tls.ca.cert, cert: tls.client && tls.client.cert, key: tls.client && tls.client.key } : undefined
    this.peerUrl = `http://127.0.0.1:${peerPort}`
    this.endpoint = `127.0.0.1:${clientPort}`
    this.args = [
      '--name', name,
      '--data-dir', this.dataDir,
      '--listen-client-urls', this.clientUrl,
      '--advertise-client-urls', this.clientUrl,
      '--listen-peer-urls', this.peerUrl,
      '--initial-advertise-peer-urls', this.peerUrl,
      '--initial-cluster', initialCluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', token,
      '--heartbeat-interval', String(heartbeatMs),
      '--election-timeout', String(electionMs),
      '--logger', 'zap',
      '--log-outputs', this.logFile,
      // (etcd requires client certificates whenever it has a --trusted-ca-file.)
      ...(tls
        ? ['--cert-file', tls.server.certFile, '--key-file', tls.server.keyFile,
            ...(tls.clientCertAuth === false ? [] : ['--client-cert-auth', '--trusted-ca-file', tls.ca.certFile])]
        : []),
      ...extraArgs
    ]
    this.proc = null
    this.paused = false
    this._exited = null
    this.starts = 0
  }

  get running () {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null
  }

  get pid () {
    return this.proc ? this.proc.pid : undefined
  }

  // Spawn the process (no health wait). Resolves once spawned (rejects if it cannot be spawned).
  _spawn () {
    if (this.running) throw new Error(`etcd member ${this.name} is already running (pid ${this.proc.pid})`)
    const errFd = fs.openSync(this.stderrFile, 'a')
    let proc
    try {
      proc = spawn(ETCD, this.args, { stdio: ['ignore', errFd, errFd] })
    } finally {
      fs.closeSync(errFd)
    }
    // Not ref'd: a forgotten cluster must not keep the test process alive (the exit hook kills it).
    // Explicit waits (stop/kill) ref it again until the exit arrives.
    proc.unref()
    this.proc = proc
    this.paused = false
    this.starts++
    liveProcs.add(proc)
    watchOver(proc.pid, this.dir)
    this._exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        liveProcs.delete(proc)
        resolve({ code, signal })
      })
    })
    return new Promise((resolve, reject) => {
      proc.once('spawn', resolve)
      proc.once('error', (err) => {
        liveProcs.delete(proc)
        reject(new Error(`cannot run ${ETCD}: ${err.message} (install etcd: apt-get install etcd-server etcd-client)`))
      })
    })
  }

  async health (timeoutMs = 1000) {
    try {
      const res = await httpJson(`${this.clientUrl}/health`, { timeoutMs, tls: this.clientTls })
      return res.status === 200 && res.body && String(res.body.health) === 'true'
    } catch {
      return false
    }
  }

  // Poll /health until it says true. Fails early if the process exits.
  async waitHealthy (timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs
    while (true) {
      if (!this.running) {
        const err = new Error(`etcd member ${this.name} exited while starting:\n${tailFile(this.stderrFile)}\n${tailFile(this.logFile, 10)}`)
        err.exited = true
        err.addressInUse = /address already in use/i.test(tailFile(this.stderrFile, 200) + tailFile(this.logFile, 200))
        throw err
      }
      if (await this.health(1000)) return
      if (Date.now() > deadline) {
        throw new Error(`etcd member ${this.name} (${this.clientUrl}) not healthy after ${timeoutMs} ms; log ${this.logFile}:\n${tailFile(this.logFile, 15)}`)
      }
      await quietWindow(100)
    }
  }

  // Restart with the same data dir and ports, and wait until healthy (pass { wait: false } to skip,
  // e.g. when several members of a cluster without quorum come back together).
  async start ({ wait = true, timeoutMs = 20000 } = {}) {
    await this._spawn()
    if (wait) await this.waitHealthy(timeoutMs)
    return this
  }

  async _signalAndWait (signal) {
    if (!this.running) return this._exited ? this._exited : { code: null, signal: null }
    const proc = this.proc
    proc.ref()
    proc.kill(signal)
    // A stopped process only acts on SIGTERM once continued (SIGKILL works regardless).
    if (this.paused && signal !== 'SIGKILL') this.proc.kill('SIGCONT')
    this.paused = false
    const result = await this._exited
    proc.unref()
    return result
  }

  // Graceful stop: SIGTERM, wait for the exit.
  stop () { return this._signalAndWait('SIGTERM') }
  // Crash: SIGKILL, wait for the exit.
  kill () { return this._signalAndWait('SIGKILL') }

  // Freeze (like a partition or a VM stall: connections stay open, nothing answers).
  pause () {
    if (!this.running) throw new Error(`etcd member ${this.name} is not running`)
    this.proc.kill('SIGSTOP')
    this.paused = true
  }

  resume () {
    if (!this.running) throw new Error(`etcd member ${this.name} is not running`)
    this.proc.kill('SIGCONT')
    this.paused = false
  }

  // { memberId, leaderId, raftTerm, revision, ... } from the gRPC gateway (ids as decimal strings).
  async status (timeoutMs = 1000) {
    const res = await httpJson(`${this.clientUrl}/v3/maintenance/status`, { method: 'POST', body: {}, timeoutMs, tls: this.clientTls, headers: await this.cluster._authHeaders(this, timeoutMs) })
    if (res.status !== 200 || typeof res.body !== 'object') throw new Error(`status of ${this.name}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
    const b = res.body
    return {
      memberId: String(b.header && b.header.member_id),
      leaderId: String(b.leader || '0'),
      raftTerm: Number(b.raftTerm || b.raft_term || 0),
      revision: Number(b.header && b.header.revision),
      raw: b
    }
  }

  // Every sample of this member's Prometheus /metrics (served on the client URL): a Map of
  // 'name{labels}' (labels as printed) to its number.
  async metrics (timeoutMs = 2000) {
    const res = await httpJson(`${this.clientUrl}/metrics`, { timeoutMs, tls: this.clientTls })
    if (res.status !== 200) throw new Error(`metrics of ${this.name}: HTTP ${res.status}`)
    const samples = new Map()
    for (const line of String(res.body).split('\n')) {
      if (line === '' || line[0] === '#') continue
      const space = line.lastIndexOf(' ')
      const value = Number(line.slice(space + 1))
      if (space > 0 && !Number.isNaN(value)) samples.set(line.slice(0, space), value)
    }
    return samples
  }

  // One counter or gauge without labels, as a number: etcd's own record of what it did, e.g.
  // 'etcd_debugging_server_lease_expired_total' (leases this member found expired and revoked).
  async metric (name, timeoutMs = 2000) {
    const value = (await this.metrics(timeoutMs)).get(name)
    if (value === undefined) throw new Error(`metric ${name} of ${this.name}: not found`)
    return value
  }

  log (lines = 40) { return tailFile(this.logFile, lines) }
}

// ---- the cluster -----------------------------------------------------------------------------
async function startEtcdOnce (opts) {
  const count = opts.members || 1
  const heartbeatMs = opts.heartbeatMs || 100
  const electionMs = opts.electionMs || 1000
  const extraArgs = opts.extraArgs || []
  const dir = fs.mkdtempSync(path.join(opts.tmpDir || tempBase(), 'locked-etcd-'))
  liveDirs.add(dir)
  const ports = await freePorts(count * 2)
  const names = Array.from({ length: count }, (_, i) => `m${i}`)
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[2 * i + 1]}`).join(',')
  const token = `locked-test-${process.pid}-${path.basename(dir)}`
  const members = names.map((name, i) => new Member({
    name, dir, clientPort: ports[2 * i], peerPort: ports[2 * i + 1], initialCluster, token, heartbeatMs, electionMs, extraArgs, tls: opts.tls
  }))
  const cluster = new Cluster(dir, members, opts.tls)
  try {
    await Promise.all(members.map((m) => m._spawn()))
    await Promise.all(members.map((m) => m.waitHealthy(opts.timeoutMs || 30000)))
  } catch (err) {
    await cluster.close()
    throw err
  }
  return cluster
}

// startEtcd({ members: 1 | 3, heartbeatMs = 100, electionMs = 1000, extraArgs = [], timeoutMs = 30000, tls })
async function startEtcd (opts = {}) {
  return retryPortRace(() => startEtcdOnce(opts))
}

class Cluster {
  constructor (dir, members, tls) {
    this.dir = dir
    this.members = members
    for (const m of members) m.cluster = this
    this.tls = tls
    // { username, password } the fixture's own requests authenticate with (see enableAuth).
    this.auth = null
    this.closed = false
  }

  // Headers for a gateway request to member m: with auth on, a fresh token (simple tokens may
  // expire between two calls of a test, so none is kept).
  async _authHeaders (m, timeoutMs = 3000) {
    if (!this.auth) return {}
    const res = await httpJson(`${m.clientUrl}/v3/auth/authenticate`, {
      method: 'POST', body: { name: this.auth.username, password: this.auth.password }, timeoutMs, tls: m.clientTls
    })
    if (res.status !== 200 || !res.body || !res.body.token) throw new Error(`authenticate on ${m.name}: HTTP ${res.status}`)
    return { authorization: res.body.token }
  }

  // Turns on etcd authentication: creates user root (role root) with this password, enables auth,
  // and from then on the fixture authenticates as root.
  async enableAuth (rootPassword) {
    await this.etcdctl(['user', 'add', 'root', '--new-user-password', rootPassword])
    await this.etcdctl(['auth', 'enable'])
    this.auth = { username: 'root', password: rootPassword }
  }

  get endpoints () { return this.members.map((m) => m.endpoint) }
  get clientUrls () { return this.members.map((m) => m.clientUrl) }

  member (nameOrEndpoint) {
    return this.members.find((m) => m.name === nameOrEndpoint || m.endpoint === nameOrEndpoint || m.clientUrl === nameOrEndpoint)
  }

  // Every member running and unfrozen again, for afterEach: a test that paused or stopped members
  // must not leave the next one a smaller cluster. The ones that were down start together, as a
  // 3-member cluster reports healthy only once a quorum is back.
  async heal () {
    for (const m of this.members) if (m.paused) m.resume()
    const down = this.members.filter((m) => !m.running)
    await Promise.all(down.map((m) => m.start({ wait: false })))
    await Promise.all(down.map((m) => m.waitHealthy()))
  }

  // Members that can answer now (running and not frozen).
  live () { return this.members.filter((m) => m.running && !m.paused) }

  // The member that is the raft leader, as seen by a live member that knows one. Retries while an
  // election is in progress, up to timeoutMs.
  async leader ({ timeoutMs = 10000 } = {}) {
    const deadline = Date.now() + timeoutMs
    let last = 'no live member'
    while (true) {
      for (const m of this.live()) {
        try {
          const st = await m.status(1000)
          if (st.leaderId === '0') { last = `${m.name} sees no leader`; continue }
          const leader = await this._memberById(st.leaderId)
          if (leader) return leader
          last = `leader id ${st.leaderId} matches no live member`
        } catch (err) {
          last = err.message
        }
      }
      if (Date.now() > deadline) throw new Error(`no raft leader found within ${timeoutMs} ms (${last})`)
      await quietWindow(100)
    }
  }

  async _memberById (id) {
    for (const m of this.live()) {
      try {
        if ((await m.status(1000)).memberId === id) return m
      } catch {}
    }
    return undefined
  }

  // Run etcdctl against the live members (or the given endpoints). Resolves stdout.
  etcdctl (args, { endpoints, timeoutMs = 10000 } = {}) {
    const eps = endpoints || this.live().map((m) => (this.tls ? m.clientUrl : m.endpoint))
    return new Promise((resolve, reject) => {
      const security = []
      if (this.tls) {
        security.push(`--cacert=${this.tls.ca.certFile}`)
        if (this.tls.client) security.push(`--cert=${this.tls.client.certFile}`, `--key=${this.tls.client.keyFile}`)
      }
      // Through the environment, so that the password is not in the command line of an error.
      const env = { ...process.env, ETCDCTL_API: '3' }
      if (this.auth) env.ETCDCTL_USER = `${this.auth.username}:${this.auth.password}`
      execFile(ETCDCTL, [`--endpoints=${eps.join(',')}`, '--dial-timeout=2s', '--command-timeout=5s', ...security, ...args], {
        env,
        timeout: timeoutMs
      }, (err, stdout, stderr) => {
        if (err) {
          err.message = `etcdctl ${args.join(' ')} failed: ${err.message}\n${stderr}`
          reject(err)
        } else {
          resolve(stdout)
        }
      })
    })
  }

  // POST to the gRPC gateway of the first live member that answers.
  async gateway (route, body, timeoutMs = 3000) {
    let lastErr
    for (const m of this.live()) {
      try {
        const res = await httpJson(`${m.clientUrl}${route}`, { method: 'POST', body, timeoutMs, tls: m.clientTls, headers: await this._authHeaders(m, timeoutMs) })
        if (res.status === 200) return res.body
        lastErr = new Error(`${route} on ${m.name}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
      } catch (err) {
        lastErr = err
      }
    }
    throw lastErr || new Error('no live etcd member')
  }

  // Every key under prefix, ordered by create revision:
  // [{ key, value, lease (decimal string), leaseHex, createRevision, modRevision }]
  async keys (prefix) {
    // etcd's gateway refuses requests from a client with a certificate once auth is on; etcdctl
    // answers the same range then.
    const body = this.tls && this.auth
      ? JSON.parse(await this.etcdctl(['get', '--prefix', '-w', 'json', prefix]))
      : await this.gateway('/v3/kv/range', {
        key: b64(prefix),
        range_end: prefixRangeEnd(prefix).toString('base64')
      })
    const kvs = (body.kvs || []).map((kv) => ({
      key: unb64(kv.key),
      value: unb64(kv.value),
      lease: String(kv.lease || '0'),
      leaseHex: BigInt(kv.lease || 0).toString(16),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision)
    }))
    return kvs.sort((a, b) => a.createRevision - b.createRevision)
  }

  // Poll keys(prefix) until predicate(kvs) is truthy; resolves its value.
  async waitKeys (prefix, predicate, timeoutMs = 10000, description = 'keys condition') {
    const deadline = Date.now() + timeoutMs
    let kvs = []
    while (true) {
      try {
        kvs = await this.keys(prefix)
        const v = predicate(kvs)
        if (v) return v
      } catch {}
      if (Date.now() > deadline) {
        throw new Error(`timeout after ${timeoutMs} ms waiting for ${description}; keys under ${prefix}: ${JSON.stringify(kvs.map((k) => [k.key, k.value, k.createRevision]))}`)
      }
      await quietWindow(50)
    }
  }

  // Revoke a lease (hex id as in the election keys) with etcdctl, a second, independent client.
  revoke (leaseHex) {
    return this.etcdctl(['lease', 'revoke', leaseHex])
  }

  // Delete one key with etcdctl (an operator's `etcdctl del`). Resolves the number of keys deleted.
  async del (key) {
    const out = await this.etcdctl(['del', key])
    return Number(out.trim()) || 0
  }

  // Ids (hex) of every lease etcd holds (`etcdctl lease list`).
  async leases () {
    const out = await this.etcdctl(['lease', 'list'])
    return out.split('\n').slice(1).map((s) => s.trim()).filter((s) => /^[0-9a-f]+$/i.test(s))
  }

  // Seconds a lease has left (`etcdctl lease timetolive`), -1 when it is gone.
  async leaseTtl (leaseHex) {
    const out = await this.etcdctl(['lease', 'timetolive', leaseHex, '-w', 'json'])
    // The id in the JSON is a 64-bit number: read only the ttl.
    const m = /"ttl":(-?\d+)/.exec(out)
    if (!m) throw new Error(`lease timetolive ${leaseHex}: unexpected output ${out}`)
    return Number(m[1])
  }

  // Wait until every member runs, answers, and all agree on one raft leader and term that has not
  // changed for quietMs (after a member came back, a raft election may still follow). Resolves
  // { leader (member name), raftTerm, waitedMs }.
  async settled ({ quietMs = 1000, timeoutMs = 30000 } = {}) {
    const started = Date.now()
    let stableSince = null
    let last = null
    let why = 'not checked yet'
    while (true) {
      let seen = null
      try {
        if (this.live().length !== this.members.length) throw new Error('a member is down or frozen')
        const st = await Promise.all(this.members.map((m) => m.status(1000)))
        const views = new Set(st.map((x) => `${x.leaderId}/${x.raftTerm}`))
        if (views.size !== 1 || st[0].leaderId === '0') throw new Error(`no agreement: ${[...views].join(' ')}`)
        seen = [...views][0]
        const leader = st.find((x) => x.memberId === st[0].leaderId)
        if (!leader) throw new Error(`leader ${st[0].leaderId} is not a member`)
        if (seen !== last) { last = seen; stableSince = Date.now() }
        if (Date.now() - stableSince >= quietMs) {
          const m = this.members[st.indexOf(leader)]
          return { leader: m.name, raftTerm: st[0].raftTerm, waitedMs: Date.now() - started }
        }
      } catch (err) {
        why = err.message
        last = null
        stableSince = null
      }
      if (Date.now() - started > timeoutMs) throw new Error(`etcd not settled within ${timeoutMs} ms: ${why}`)
      await quietWindow(100)
    }
  }

  async close () {
    if (this.closed) return
    this.closed = true
    await Promise.all(this.members.map((m) => m.kill()))
    try { fs.rmSync(this.dir, { recursive: true, force: true }) } catch {}
    liveDirs.delete(this.dir)
  }
}

// The key of the locker with this id among kvs (from keys()): an election key's value is the id.
const keyOf = (kvs, id) => kvs.find((kv) => kv.value === id)

// Term records, as the library writes them (docs/how-it-works.md, "The term record"): one per lease
// and bucket of names at `<prefix>//terms/<bucket hex>/<lease hex>`, one line per term,
// "<token> <since ms> <name>" (a name's backslashes and line breaks escaped).
const TERM_BUCKETS = 1024

// The bucket of a name: FNV-1a of its UTF-8 bytes.
function termBucket (name) {
  let hash = 0x811c9dc5
  for (const byte of Buffer.from(name)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0
  return (hash % TERM_BUCKETS).toString(16).padStart(3, '0')
}

// The key of the record of lease leaseHex for the bucket of name.
function termRecordKey (prefix, name, leaseHex) {
  return `${prefix}//terms/${termBucket(name)}/${leaseHex}`
}

// Every term line of the records among kvs (as keys() reads them) under prefix:
// [{ name, token, since, key, lease, leaseHex }].
function termLines (kvs, prefix) {
  const lines = []
  for (const kv of kvs) {
    if (!kv.key.startsWith(`${prefix}//terms/`)) continue
    for (const line of kv.value.split('\n')) {
      const m = /^(\d+) (\d+) (.+)$/.exec(line)
      if (!m) continue
      const name = m[3].replace(/\\(.)/g, (_, c) => ({ n: '\n', r: '\r' })[c] || c)
      lines.push({ name, token: Number(m[1]), since: Number(m[2]), key: kv.key, lease: kv.lease, leaseHex: kv.leaseHex })
    }
  }
  return lines
}

module.exports = { startEtcd, freePorts, httpJson, prefixRangeEnd, keyOf, termBucket, termRecordKey, termLines }
