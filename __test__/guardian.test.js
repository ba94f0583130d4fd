'use strict'
// The guardian (option `guardian: true`): a killed leader's lease is revoked at once by a child
// process that sees the leader's pipe close, so another host starts in milliseconds instead of a
// TTL; a frozen leader keeps its pipe, so nothing is revoked; the guardian never outlives its
// locker, and never learns a credential from its command line or environment.

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const locked = require('..')
const { startEtcd } = require('./helpers/etcd')
const { makeCerts } = require('./helpers/certs')
const { spawnHost, killAll, ms, now, assertOneLeaderAtATime, leaderAndFollower } = require('./helpers/hosts')
const { uniquePrefix, nextEvent, within, quietWindow, until } = require('./helpers/util')

const TTL = 10
let etcd

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await killAll()
  if (etcd) await etcd.close()
})
afterEach(killAll)

const alive = (pid) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return err.code === 'EPERM'
  }
}

// Guardian processes whose parent is `ppid` (read from the process table).
function guardiansOf (ppid) {
  const found = []
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8')
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (parent === ppid && cmdline.includes('guardian.js')) found.push(Number(entry))
    } catch {}
  }
  return found
}

async function guardianPid (h) {
  let pid = null
  await until(async () => {
    const reply = await h.request({ cmd: 'guardian' }, { ev: 'guardian' }, 5000)
    pid = reply.pid
    return pid != null
  }, 10000, `${h.label}'s guardian`)
  return pid
}

// A leads `names` with a guardian, B waits on all of them.
const withGuardian = (prefix, names) => leaderAndFollower(etcd, { prefix, ttl: TTL, names, leader: { guardian: true } })

describe('the guardian', { timeout: 120000 }, () => {
  for (const count of [1, 1000]) {
    it(`SIGKILL of a leader of ${count} name(s) with ttl ${TTL}: another host takes over at once, not after the TTL`, async (t) => {
      const prefix = uniquePrefix(`gkill${count}`)
      const names = Array.from({ length: count }, (_, i) => `n${i}`)
      const [a, b] = await withGuardian(prefix, names)
      const gpid = await guardianPid(a)
      const mark = b.mark()
      const killed = now()
      a.kill('SIGKILL')
      const first = await b.waitFor({ ev: 'start' }, 3000, 'B\'s first start', { since: mark })
      for (const name of names) await b.waitFor({ ev: 'start', name }, 5000, `B leads ${name}`, { since: mark })
      const last = b.events.slice(mark).filter((e) => e.ev === 'start').reduce((m, e) => (e.t > m ? e.t : m), 0n)
      t.diagnostic(`SIGKILL → B's first start ${ms(first.t - killed).toFixed(1)} ms, all ${count} ${ms(last - killed).toFixed(1)} ms (ttl ${TTL} s)`)
      // Far below the TTL: only the guardian's revoke can explain it (the bench reports the times).
      assert.ok(ms(first.t - killed) < 1000, `B started ${ms(first.t - killed).toFixed(0)} ms after the kill`)
      await until(() => !alive(gpid), 5000, 'the guardian exits after its revoke')
      assertOneLeaderAtATime([a, b], names[0])
    })
  }

  it('a leader frozen for 3 s (ttl 10) keeps its lease: nobody else starts, and it still leads after SIGCONT', async () => {
    const prefix = uniquePrefix('gstop')
    const [a, b] = await withGuardian(prefix, ['job'])
    const gpid = await guardianPid(a)
    const mark = b.mark()
    a.pause()
    await quietWindow(3000) // the freeze itself: what must not happen meanwhile is a revoke
    a.resume()
    const reply = await a.request({ cmd: 'isLeader', name: 'job' }, { ev: 'isLeader', name: 'job' }, 5000)
    assert.strictEqual(reply.value, true, 'A still leads after SIGCONT')
    assert.deepStrictEqual(b.events.slice(mark).filter((e) => e.ev === 'start'), [], 'B must not start')
    assert.deepStrictEqual(a.find({ ev: 'stop' }), [], 'A never stopped')
    assert.ok(alive(gpid), 'the guardian is still on duty')
  })

  it('the guardian killed alone: the leader keeps leading, reports an error, and gets a new guardian; no lease revoked', async () => {
    const prefix = uniquePrefix('galone')
    const [a, b] = await withGuardian(prefix, ['job'])
    const before = await etcd.keys(`${prefix}/job/`)
    const gpid = await guardianPid(a)
    process.kill(gpid, 'SIGKILL')
    const err = await a.waitFor({ ev: 'error', code: 'GUARDIAN_EXITED' }, 5000, 'A reports its guardian gone')
    assert.strictEqual(err.scope, 'locker')
    let next = null
    await until(async () => {
      next = (await a.request({ cmd: 'guardian' }, { ev: 'guardian' }, 5000)).pid
      return next != null && next !== gpid
    }, 10000, 'a new guardian')
    assert.ok(alive(next))
    const reply = await a.request({ cmd: 'isLeader', name: 'job' }, { ev: 'isLeader', name: 'job' }, 5000)
    assert.strictEqual(reply.value, true, 'A still leads')
    assert.deepStrictEqual(await etcd.keys(`${prefix}/job/`), before, 'the keys (and their lease) are untouched')
    assert.deepStrictEqual(b.find({ ev: 'start' }), [])
    // The new guardian serves too.
    const mark = b.mark()
    const killed = now()
    a.kill('SIGKILL')
    const start = await b.waitFor({ ev: 'start', name: 'job' }, 3000, 'B takes over through the new guardian', { since: mark })
    assert.ok(ms(start.t - killed) < 1000)
  })

  it('close(), process.exit() and 100 create/close cycles leave no guardian behind and report no error', async () => {
    const prefix = uniquePrefix('gclose')
    const errors = []
    for (let i = 0; i < 100; i++) {
      const l = locked(etcd.endpoints, { ttl: TTL, prefix, guardian: true })
      l.on('error', (err) => errors.push(err))
      const s = l(`n${i % 3}`)
      await nextEvent(s, 'start', 10000, `cycle ${i} elected`)
      await l.close()
    }
    await until(() => guardiansOf(process.pid).length === 0, 5000, 'every guardian gone after close()')
    assert.deepStrictEqual(errors.map((e) => e.code), [])
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [])

    // process.exit(): the exit revokes the lease itself; the guardian goes without a second try.
    const [a, b] = await withGuardian(uniquePrefix('gexit'), ['job'])
    const gpid = await guardianPid(a)
    a.send({ cmd: 'exit', code: 0 })
    await a.exited
    await b.waitFor({ ev: 'start', name: 'job' }, 3000, 'B takes over after A\'s exit')
    await until(() => !alive(gpid), 5000, 'the guardian exits with its locker\'s process')
  })

  it('a terminated worker thread leaves no guardian behind, and its lease goes at once', async () => {
    const prefix = uniquePrefix('gworker')
    const w = spawnHost({ endpoints: etcd.endpoints, ttl: TTL, prefix, names: ['job'], guardian: true }, 'W', { script: path.join(__dirname, 'helpers', 'worker-host.js') })
    await w.waitFor({ ev: 'start', name: 'job' }, 10000, 'the worker leads')
    const b = spawnHost({ endpoints: etcd.endpoints, ttl: TTL, prefix, names: ['job'] }, 'B')
    await b.ready
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 10000, 'B queued')
    const gpid = await guardianPid(w)
    w.send({ cmd: 'terminate' })
    await w.waitFor({ ev: 'terminated' }, 5000, 'worker terminated')
    await b.waitFor({ ev: 'start', name: 'job' }, 3000, 'B takes over')
    await until(() => !alive(gpid), 5000, 'the guardian gone with its worker')
    assert.deepStrictEqual(guardiansOf(w.pid), [])
  })

  it('with TLS and a password: the guardian revokes with them, and neither appears in its command line or environment', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'locked-gcerts-'))
    const certs = makeCerts(dir)
    const secure = await startEtcd({
      tls: { ca: certs.ca, server: certs.server, client: certs.client, clientCertAuth: false },
      extraArgs: ['--auth-token', 'simple']
    })
    try {
      const password = `pw-${uniquePrefix('secret')}`
      await secure.enableAuth(password)
      const prefix = uniquePrefix('gsecure')
      const common = { endpoints: secure.endpoints, ttl: TTL, prefix, names: ['job'], tlsFiles: { ca: certs.ca.certFile }, auth: { username: 'root', password } }
      const a = spawnHost({ ...common, guardian: true }, 'A')
      await a.waitFor({ ev: 'start', name: 'job' }, 15000, 'A leads')
      const b = spawnHost(common, 'B')
      await b.ready
      await secure.waitKeys(`${prefix}/job/`, (kvs) => kvs.length === 2, 15000, 'B queued')
      const gpid = await guardianPid(a)
      for (const file of ['cmdline', 'environ']) {
        const text = fs.readFileSync(`/proc/${gpid}/${file}`, 'utf8')
        assert.ok(!text.includes(password), `the password is in the guardian's ${file}`)
        assert.ok(!text.includes('BEGIN CERTIFICATE'), `a certificate is in the guardian's ${file}`)
      }
      const killed = now()
      a.kill('SIGKILL')
      const start = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B takes over through the guardian')
      assert.ok(ms(start.t - killed) < 1000, `B started ${ms(start.t - killed).toFixed(0)} ms after the kill`)
    } finally {
      await killAll()
      await secure.close()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a bad guardian option is a TypeError', () => {
    assert.throws(() => locked(etcd.endpoints, { guardian: 'yes' }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' })
  })

  it('without the option there is no guardian', async () => {
    const l = locked(etcd.endpoints, { ttl: TTL, prefix: uniquePrefix('gnone') })
    try {
      await nextEvent(l('job'), 'start', 10000, 'elected')
      assert.strictEqual(l.stats().guardian, null)
      assert.deepStrictEqual(guardiansOf(process.pid), [])
    } finally {
      await within(l.close(), 5000, 'close')
    }
  })
})
