'use strict'
// TLS (real certificates made here with openssl, etcd requiring client certificates) and etcd
// authentication (a short --auth-token-ttl: an expired token is renewed, never a spurious stop —
// pitfall 11 of docs/pitfalls.md). No credential (password, private key) may ever appear in an error or on stderr.

const { describe, it, before, after, afterEach } = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const locked = require('..')
const { startEtcd, httpJson, keyOf } = require('./helpers/etcd')
const { makeCerts } = require('./helpers/certs')
const { spawnHost, killAll, now, ms, formatTimeline, assertOneLeaderAtATime } = require('./helpers/hosts')
const { uniquePrefix, quietWindow, until } = require('./helpers/util')
const { lockerSet } = require('./helpers/lockers')

const TTL = 2
const TOKEN_TTL = 5 // seconds, etcd's --auth-token-ttl
let certs
let certDir
const clusters = []
const lockers = lockerSet()
const allHosts = []

// Secrets of this file: no error message, event or stderr line may contain any of them.
const ROOT_PASSWORD = `root-${crypto.randomBytes(6).toString('hex')}`
const APP_PASSWORD = `app-${crypto.randomBytes(6).toString('hex')}`
const OUTSIDER_PASSWORD = `outsider-${crypto.randomBytes(6).toString('hex')}`
const WRONG_PASSWORD = `wrong-${crypto.randomBytes(6).toString('hex')}`
// The role 'app' may read and write keys starting with this (every prefix of this file's lockers).
const APP_PREFIX = 'sec-'

function secrets () {
  const list = [ROOT_PASSWORD, APP_PASSWORD, OUTSIDER_PASSWORD, WRONG_PASSWORD]
  if (certs) {
    for (const c of [certs.client, certs.rogueClient, certs.server, certs.ca]) {
      // The base64 body of a private key, and a long slice of it (a partial echo counts too).
      const body = c.key.split('\n').filter((l) => l && !l.startsWith('-----')).join('')
      list.push(body.slice(0, 40), body.slice(-40))
    }
  }
  return list
}

function assertNoSecret (text, where) {
  for (const secret of secrets()) {
    assert.ok(!String(text).includes(secret), `${where} contains a credential:\n${text}`)
  }
  assert.ok(!/PRIVATE KEY/.test(String(text)), `${where} contains a private key:\n${text}`)
}

// Every event line and the whole stderr of each host.
function assertHostsLeakNothing (hosts) {
  for (const h of hosts) {
    for (const e of h.events) assertNoSecret(JSON.stringify(e, (k, v) => (typeof v === 'bigint' ? String(v) : v)), `event of ${h.label}`)
    assertNoSecret(h.stderr, `stderr of ${h.label}`)
  }
}

// Hosts narrate their steps on stderr (DEBUG=locked), so that log lines are checked too.
function host (config, label) {
  const h = spawnHost(config, label, { env: { DEBUG: 'locked' } })
  allHosts.push(h)
  return h
}

before(() => {
  certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'locked-certs-'))
  certs = makeCerts(certDir)
})
after(async () => {
  await lockers.closeAll({ waitAtMostMs: 3000 })
  await killAll()
  await Promise.all(clusters.map((c) => c.close()))
  fs.rmSync(certDir, { recursive: true, force: true })
})
afterEach(async () => {
  assertHostsLeakNothing(allHosts)
  await killAll()
})

// Auth on, with the user 'app' that may use every prefix of this file's lockers and nothing else.
async function enableAppUser (etcd) {
  await etcd.enableAuth(ROOT_PASSWORD)
  await etcd.etcdctl(['role', 'add', 'app'])
  await etcd.etcdctl(['role', 'grant-permission', 'app', '--prefix=true', 'readwrite', APP_PREFIX])
  await etcd.etcdctl(['user', 'add', 'app', '--new-user-password', APP_PASSWORD])
  await etcd.etcdctl(['user', 'grant-role', 'app', 'app'])
}

// Collects every 'error' of a locker and its singleton, and whether it ever started.
function watchLocker (locker, name) {
  const seen = { errors: [], starts: 0 }
  locker.on('error', (err) => seen.errors.push(err))
  const s = locker(name, () => {})
  s.on('error', (err) => seen.errors.push(err))
  s.on('start', () => { seen.starts++ })
  return seen
}

describe('TLS: etcd requires client certificates', { timeout: 120000 }, () => {
  let etcd
  before(async () => {
    etcd = await startEtcd({ tls: { ca: certs.ca, server: certs.server, client: certs.client } })
    clusters.push(etcd)
  })
  const tlsFiles = () => ({ ca: certs.ca.certFile, cert: certs.client.certFile, key: certs.client.keyFile })

  it('hosts with a client certificate (PEM strings, or Buffers) are elected and hand over', async (t) => {
    const prefix = uniquePrefix('tls')
    const common = { endpoints: etcd.endpoints, ttl: TTL, prefix, names: ['job'], tlsFiles: tlsFiles() }
    const a = host({ ...common, id: `A-${prefix}` }, 'A')
    const start = await a.waitFor({ ev: 'start', name: 'job' }, 10000, 'A start over TLS')
    const b = host({ ...common, id: `B-${prefix}`, tlsAs: 'buffer' }, 'B')
    const o = host({ ...common, names: [], observe: ['job'] }, 'O')
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, b.id), 10000, 'B queued')
    await o.waitFor({ ev: 'observed', name: 'job', leader: a.id }, 10000, 'O sees A')
    const kvs = await etcd.keys(`${prefix}/job/`)
    assert.strictEqual(start.token, keyOf(kvs, a.id).createRevision, 'token = create revision, over TLS too')
    const sent = now()
    a.send({ cmd: 'remove', name: 'job' })
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start')
    await o.waitFor({ ev: 'observed', name: 'job', leader: b.id }, 5000, 'O sees B')
    t.diagnostic(`over TLS: A start ${ms(start.t - a.startedAt).toFixed(0)} ms after spawn; handover ${ms(bStart.t - sent).toFixed(1)} ms`)
    for (const h of [a, b, o]) assert.deepStrictEqual(h.find({ ev: 'error' }), [], `no error on ${h.label}`)
    assert.ok(bStart.token > start.token)
    assertOneLeaderAtATime([a, b], 'job')
  })

  it('no TLS, a CA only, a client certificate of another CA, or the wrong CA: errors, never a start', async (t) => {
    const variants = {
      'no tls option': undefined,
      'a CA but no client certificate': { ca: certs.ca.cert },
      'a client certificate signed by an untrusted CA': { ca: certs.ca.cert, cert: certs.rogueClient.cert, key: certs.rogueClient.key },
      'the wrong CA (the server is not trusted)': { ca: certs.rogueCa.cert, cert: certs.client.cert, key: certs.client.key }
    }
    const runs = Object.entries(variants).map(([label, tls]) => {
      const prefix = uniquePrefix('tlsbad')
      const locker = lockers.open(etcd.endpoints, { ttl: TTL, prefix, tls })
      return { label, prefix, locker, seen: watchLocker(locker, 'job') }
    })
    await until(() => runs.every((r) => r.seen.errors.length > 0), 20000, 'an error from every locker')
    // A certificate problem says so (the TLS alert or the verification error), not only
    // "transport error". Under TLS 1.3 the server's alert about a client certificate can lose the
    // race with the client's first write ("broken pipe"), so it may take a retry or two.
    const namesCertificate = (r) => r.label === 'no tls option' || r.seen.errors.some((err) => /certificate|UnknownIssuer/i.test(err.message))
    await until(() => runs.every(namesCertificate), 20000, 'an error naming the certificate problem from every locker with TLS').catch(() => {})
    // A while longer: retries go on, and none of them may end in a start.
    await quietWindow(2000)
    for (const r of runs) {
      t.diagnostic(`${r.label}: ${r.seen.errors.length} errors, first ${r.seen.errors[0].code}: ${r.seen.errors[0].message}`)
      assert.strictEqual(r.seen.starts, 0, `${r.label}: no start`)
      for (const err of r.seen.errors) {
        assert.ok(err instanceof Error, `${r.label}: an Error`)
        assert.strictEqual(typeof err.code, 'string', `${r.label}: with a code`)
        assertNoSecret(err.message, `${r.label}: error message`)
        assertNoSecret(err.stack, `${r.label}: error stack`)
      }
      assert.deepStrictEqual(await etcd.keys(`${r.prefix}/`), [], `${r.label}: no key`)
      // A certificate problem says so (the TLS alert or the verification error), not only
      // "transport error".
      if (r.label !== 'no tls option') {
        assert.ok(r.seen.errors.some((err) => /certificate|UnknownIssuer/i.test(err.message)),
          `${r.label}: an error names the certificate problem: ${r.seen.errors.map((e) => e.message).join(' | ')}`)
      }
    }
    await Promise.allSettled(runs.map((r) => r.locker.close()))
  })

  it('a malformed or mismatched private key throws at once, without echoing it', () => {
    const cases = {
      'a malformed key': { ca: certs.ca.cert, cert: certs.client.cert, key: 'not a key' },
      'the key of another certificate': { ca: certs.ca.cert, cert: certs.client.cert, key: certs.rogueClient.key },
      'a key as a Buffer, of another certificate': { ca: Buffer.from(certs.ca.cert), cert: Buffer.from(certs.client.cert), key: Buffer.from(certs.rogueClient.key) }
    }
    for (const [label, tls] of Object.entries(cases)) {
      assert.throws(() => locked(etcd.endpoints, { ttl: TTL, prefix: uniquePrefix('tlskey'), tls }), (err) => {
        assert.ok(err instanceof Error)
        assert.match(err.message, /tls/i, `${label}: the message says it is about TLS`)
        assertNoSecret(err.message, `${label}: message`)
        return true
      }, label)
    }
    // Wrong types and a key without its certificate are input errors.
    assert.throws(() => locked(etcd.endpoints, { tls: { ca: 42 } }), TypeError)
    assert.throws(() => locked(etcd.endpoints, { tls: 'pem' }), TypeError)
    assert.throws(() => locked(etcd.endpoints, { tls: { key: certs.client.key } }), (err) => {
      assert.ok(err instanceof RangeError)
      assertNoSecret(err.message, 'key without cert: message')
      return true
    })
  })
})

describe('authentication, with tokens expiring after 5 s', { timeout: 180000 }, () => {
  let etcd
  before(async () => {
    etcd = await startEtcd({ extraArgs: ['--auth-token', 'simple', '--auth-token-ttl', String(TOKEN_TTL)] })
    clusters.push(etcd)
    await enableAppUser(etcd)
    // A user that exists but may not touch the election's keys.
    await etcd.etcdctl(['user', 'add', 'outsider', '--new-user-password', OUTSIDER_PASSWORD])
  })
  const app = { username: 'app', password: APP_PASSWORD }

  it('pitfall 11: leader, candidate and observer idle for more than twice the token TTL: no stop, no error; then handovers work', async (t) => {
    const prefix = `${APP_PREFIX}${uniquePrefix('idle')}`
    const common = { endpoints: etcd.endpoints, ttl: TTL, prefix, auth: app }
    const a = host({ ...common, names: ['job'], id: `A-${prefix}` }, 'A')
    await a.waitFor({ ev: 'start', name: 'job' }, 10000, 'A start')
    const b = host({ ...common, names: ['job'], id: `B-${prefix}` }, 'B')
    const o = host({ ...common, names: [], observe: ['job'] }, 'O')
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, b.id), 10000, 'B queued')
    await o.waitFor({ ev: 'observed', name: 'job', leader: a.id }, 10000, 'O sees A')
    // A token of our own, to show that etcd really expires tokens in this set-up.
    const m = etcd.members[0]
    const auth = await httpJson(`${m.clientUrl}/v3/auth/authenticate`, { method: 'POST', body: { name: 'app', password: APP_PASSWORD } })
    assert.strictEqual(auth.status, 200)
    const idleFrom = now()
    await quietWindow(2 * TOKEN_TTL * 1000 + 2000)
    const probe = await httpJson(`${m.clientUrl}/v3/kv/range`, { method: 'POST', body: { key: Buffer.from(`${prefix}/`).toString('base64') }, headers: { authorization: auth.body.token } })
    t.diagnostic(`idle ${ms(now() - idleFrom).toFixed(0)} ms; a token taken at the start is now refused: HTTP ${probe.status} ${probe.body && probe.body.error}`)
    assert.strictEqual(probe.status, 401, 'the token expired during the idle time (the scenario holds)')
    for (const h of [a, b, o]) {
      assert.deepStrictEqual(h.find({ ev: 'stop' }), [], `no stop on ${h.label}\n${formatTimeline([a, b, o])}`)
      assert.deepStrictEqual(h.find({ ev: 'error' }), [], `no error on ${h.label}\n${formatTimeline([a, b, o])}`)
    }
    // Every host now makes requests with an expired token: they are renewed and go through.
    const sent = now()
    a.send({ cmd: 'remove', name: 'job' })
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start after the idle time')
    await a.waitFor({ ev: 'removed', name: 'job' }, 5000, 'A removed')
    await o.waitFor({ ev: 'observed', name: 'job', leader: b.id }, 5000, 'O sees B')
    t.diagnostic(`handover after the idle time: B start ${ms(bStart.t - sent).toFixed(0)} ms after A's remove`)
    assert.ok(ms(bStart.t - sent) < 3000, 'a prompt handover, not a timeout')
    // And back, after another idle stretch longer than the token TTL.
    await a.request({ cmd: 'register', name: 'job' }, { ev: 'registered', name: 'job' }, 5000)
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, a.id), 5000, 'A queued again')
    await quietWindow(TOKEN_TTL * 1000 + 1000)
    b.send({ cmd: 'remove', name: 'job' })
    const aStart = await a.waitFor((e) => e.ev === 'start' && e.name === 'job' && e.t > bStart.t, 5000, 'A start again')
    assert.ok(aStart.token > bStart.token)
    for (const h of [a, b, o]) assert.deepStrictEqual(h.find({ ev: 'error' }), [], `no error on ${h.label}`)
    assert.deepStrictEqual(a.find({ ev: 'stop' }).map((e) => e.reason), ['removed'])
    assert.deepStrictEqual(b.find({ ev: 'stop' }).map((e) => e.reason), ['removed'])
    assertOneLeaderAtATime([a, b], 'job')
  })

  it('a wrong password: an error that does not contain the password, and never a start', async (t) => {
    const prefix = `${APP_PREFIX}${uniquePrefix('wrongpw')}`
    const w = host({ endpoints: etcd.endpoints, ttl: TTL, prefix, names: ['job'], auth: { username: 'app', password: WRONG_PASSWORD } }, 'W')
    const err = await w.waitFor({ ev: 'error' }, 15000, 'an error event')
    t.diagnostic(`wrong password: ${err.scope} error ${err.code}: ${err.message}`)
    assert.strictEqual(typeof err.code, 'string')
    assert.match(err.message, /auth/i, 'the message says authentication failed')
    // In this process too.
    const locker = lockers.open(etcd.endpoints, { ttl: TTL, prefix, auth: { username: 'app', password: WRONG_PASSWORD } })
    const seen = watchLocker(locker, 'job')
    await until(() => seen.errors.length > 0, 15000, 'an error in this process')
    await quietWindow(2000)
    assert.deepStrictEqual(w.find({ ev: 'start' }), [], 'no start')
    assert.strictEqual(seen.starts, 0, 'no start')
    for (const e of seen.errors) {
      assertNoSecret(e.message, 'error message')
      assertNoSecret(e.stack, 'error stack')
      assertNoSecret(JSON.stringify(e), 'error fields')
    }
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [])
    assertHostsLeakNothing([w])
    await locker.close()
  })

  it('no user, or a user without permission on the prefix: errors, never a start', async (t) => {
    const runs = [
      ['no auth option', undefined, `${APP_PREFIX}${uniquePrefix('nouser')}`],
      ['a user without a role', { username: 'outsider', password: OUTSIDER_PASSWORD }, `${APP_PREFIX}${uniquePrefix('outsider')}`],
      ['a prefix outside the role', app, uniquePrefix('elsewhere')]
    ].map(([label, auth, prefix]) => {
      const locker = lockers.open(etcd.endpoints, { ttl: TTL, prefix, auth })
      return { label, prefix, locker, seen: watchLocker(locker, 'job') }
    })
    await until(() => runs.every((r) => r.seen.errors.length > 0), 20000, 'an error from every locker')
    // A certificate problem says so (the TLS alert or the verification error), not only
    // "transport error". Under TLS 1.3 the server's alert about a client certificate can lose the
    // race with the client's first write ("broken pipe"), so it may take a retry or two.
    const namesCertificate = (r) => r.label === 'no tls option' || r.seen.errors.some((err) => /certificate|UnknownIssuer/i.test(err.message))
    await until(() => runs.every(namesCertificate), 20000, 'an error naming the certificate problem from every locker with TLS').catch(() => {})
    await quietWindow(2000)
    for (const r of runs) {
      t.diagnostic(`${r.label}: ${r.seen.errors.length} errors, codes ${[...new Set(r.seen.errors.map((e) => e.code))]}; first: ${r.seen.errors[0].message}`)
      assert.strictEqual(r.seen.starts, 0, `${r.label}: no start`)
      for (const e of r.seen.errors) assertNoSecret(e.message, `${r.label}: error message`)
      assert.deepStrictEqual(await etcd.keys(`${r.prefix}/`), [], `${r.label}: no key`)
    }
    await Promise.allSettled(runs.map((r) => r.locker.close()))
  })

  // The README's codes: ETCD_UNAVAILABLE means no member answered; a refusal is ETCD_REJECTED.
  it('a refusal (missing user, permission denied) is reported as ETCD_REJECTED, not as etcd being unavailable', async (t) => {
    const runs = [
      ['no auth option', undefined],
      ['a user without a role', { username: 'outsider', password: OUTSIDER_PASSWORD }]
    ].map(([label, auth]) => {
      const prefix = `${APP_PREFIX}${uniquePrefix('codes')}`
      const locker = lockers.open(etcd.endpoints, { ttl: TTL, prefix, auth })
      return { label, locker, seen: watchLocker(locker, 'job') }
    })
    await until(() => runs.every((r) => r.seen.errors.length > 0), 20000, 'an error from every locker')
    // A certificate problem says so (the TLS alert or the verification error), not only
    // "transport error". Under TLS 1.3 the server's alert about a client certificate can lose the
    // race with the client's first write ("broken pipe"), so it may take a retry or two.
    const namesCertificate = (r) => r.label === 'no tls option' || r.seen.errors.some((err) => /certificate|UnknownIssuer/i.test(err.message))
    await until(() => runs.every(namesCertificate), 20000, 'an error naming the certificate problem from every locker with TLS').catch(() => {})
    await quietWindow(1000)
    for (const r of runs) {
      const codes = r.seen.errors.map((e) => `${e.code}: ${e.message}`)
      t.diagnostic(`${r.label}: ${JSON.stringify(codes)}`)
      assert.ok(r.seen.errors.every((e) => e.code === 'ETCD_REJECTED'), `${r.label}: every error is ETCD_REJECTED, got ${JSON.stringify(codes)}`)
    }
    await Promise.allSettled(runs.map((r) => r.locker.close()))
  })

  it('bad auth options throw without echoing the password', () => {
    for (const auth of [{ username: '', password: APP_PASSWORD }, { username: 42, password: APP_PASSWORD }, { username: 'app', password: 42 }, { username: 'app' }, 'app:pw', null]) {
      assert.throws(() => locked(etcd.endpoints, { auth }), (err) => {
        assert.ok(err instanceof TypeError, `TypeError for ${typeof auth}`)
        assertNoSecret(err.message, 'message')
        return true
      })
    }
  })
})

describe('TLS and authentication together', { timeout: 120000 }, () => {
  let etcd
  before(async () => {
    // Server-side TLS only: the client proves who it is with its password.
    etcd = await startEtcd({
      tls: { ca: certs.ca, server: certs.server, client: certs.client, clientCertAuth: false },
      extraArgs: ['--auth-token', 'simple', '--auth-token-ttl', String(TOKEN_TTL)]
    })
    clusters.push(etcd)
    await enableAppUser(etcd)
  })

  it('a CA and a user: elected, handover after the token expired; a wrong password is an error', async (t) => {
    const prefix = `${APP_PREFIX}${uniquePrefix('both')}`
    const common = { endpoints: etcd.endpoints, ttl: TTL, prefix, names: ['job'], tlsFiles: { ca: certs.ca.certFile } }
    const a = host({ ...common, auth: { username: 'app', password: APP_PASSWORD }, id: `A-${prefix}` }, 'A')
    await a.waitFor({ ev: 'start', name: 'job' }, 10000, 'A start')
    const b = host({ ...common, auth: { username: 'app', password: APP_PASSWORD }, id: `B-${prefix}` }, 'B')
    const w = host({ ...common, auth: { username: 'app', password: WRONG_PASSWORD } }, 'W')
    await etcd.waitKeys(`${prefix}/job/`, (kvs) => keyOf(kvs, b.id), 10000, 'B queued')
    const err = await w.waitFor({ ev: 'error' }, 15000, 'W error')
    await quietWindow(TOKEN_TTL * 1000 + 1000)
    const sent = now()
    a.send({ cmd: 'remove', name: 'job' })
    const bStart = await b.waitFor({ ev: 'start', name: 'job' }, 5000, 'B start')
    t.diagnostic(`TLS + auth: handover ${ms(bStart.t - sent).toFixed(0)} ms after A's remove; wrong password: ${err.code}: ${err.message}`)
    for (const h of [a, b]) assert.deepStrictEqual(h.find({ ev: 'error' }), [], `no error on ${h.label}`)
    assert.deepStrictEqual(w.find({ ev: 'start' }), [], 'no start with a wrong password')
    assertOneLeaderAtATime([a, b, w], 'job')
  })
})
