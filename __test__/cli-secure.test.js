'use strict'
// `locked run` and `locked status` as separate processes on a secured etcd: TLS with a client
// certificate (--cacert, --cert, --key), and a user with a password (--user, LOCKED_PASSWORD,
// ETCDCTL_PASSWORD, --password-file); LOCKED_HOSTS and ETCDCTL_ENDPOINTS in place of --hosts. The
// password never shows: not in the runner's command line, not in the command's environment, not
// in any output. Failures are one line and an exit code, never a stack trace.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { spawn } = require('node:child_process')
const { startEtcd, freePorts } = require('./helpers/etcd')
const { makeCerts } = require('./helpers/certs')
const { uniquePrefix, until } = require('./helpers/util')

const CLI = path.join(__dirname, '..', 'cli.js')
const ROOT_PASSWORD = `root-${crypto.randomBytes(6).toString('hex')}`
const APP_PASSWORD = `app-${crypto.randomBytes(6).toString('hex')}`
const WRONG_PASSWORD = `wrong-${crypto.randomBytes(6).toString('hex')}`
// The role 'app' may read and write the keys starting with this, and nothing else.
const APP_PREFIX = 'clisec-'
// The role 'reader' (user 'reader', password APP_PASSWORD) may only read the keys starting with this.
const READER_PREFIX = 'clisecro-'
// The variables the CLI reads: only what a test sets may count, not the environment of the run.
const CLI_VARIABLES = ['LOCKED_HOSTS', 'ETCDCTL_ENDPOINTS', 'LOCKED_PASSWORD', 'ETCDCTL_PASSWORD']

let tmp
let certs

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locked-cli-secure-'))
  certs = makeCerts(path.join(tmp, 'certs'))
})
after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
})

// The supervised command: prints its pid, its token and its whole environment, then waits.
const CHILD = `console.log('child-start', process.pid, process.env.LOCKED_TOKEN)
  console.log('child-env', JSON.stringify(process.env))
  process.on('SIGTERM', () => process.exit(0))
  setInterval(() => {}, 1000)`
const childCommand = ['--', process.execPath, '-e', CHILD]

function cliEnv (extra) {
  const env = { ...process.env }
  for (const variable of CLI_VARIABLES) delete env[variable]
  return { ...env, ...extra }
}

// One `locked` process: its output by lines, each awaited with a timeout.
class Cli {
  constructor (label, args, env) {
    this.label = label
    this.lines = []
    this.stdout = ''
    this.stderr = ''
    this.waiters = []
    this.proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cliEnv(env) })
    for (const [stream, field] of [[this.proc.stdout, 'stdout'], [this.proc.stderr, 'stderr']]) {
      let buf = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk) => {
        this[field] += chunk
        buf += chunk
        let nl
        while ((nl = buf.indexOf('\n')) >= 0) {
          this.lines.push(buf.slice(0, nl))
          buf = buf.slice(nl + 1)
          this.waiters = this.waiters.filter((w) => !w())
        }
      })
    }
    // Resolves once the process is gone and its output read to the end.
    this.exited = Promise.all([
      new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal }))),
      new Promise((resolve) => this.proc.stdout.on('close', resolve)),
      new Promise((resolve) => this.proc.stderr.on('close', resolve))
    ]).then(([status]) => ({ ...status, stdout: this.stdout, stderr: this.stderr }))
  }

  waitLine (re, timeoutMs, description) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.lines.find((l) => re.test(l))
        if (hit !== undefined) { clearTimeout(timer); resolve(hit) }
        return hit !== undefined
      }
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check)
        reject(new Error(`${this.label}: timeout after ${timeoutMs} ms waiting for ${description}\n${this.lines.join('\n')}`))
      }, timeoutMs)
      if (!check()) this.waiters.push(check)
    })
  }

  has (re) { return this.lines.some((l) => re.test(l)) }
}

// A test's processes: every `locked` process and every command they started get SIGKILL when the
// test ends, passed or failed.
function scope (t) {
  const clis = []
  const children = new Set()
  t.after(async () => {
    for (const pid of children) {
      try { process.kill(pid, 'SIGKILL') } catch {}
    }
    for (const c of clis) c.proc.kill('SIGKILL')
    await Promise.all(clis.map((c) => c.exited))
  })
  return {
    cli (label, args, env = {}) {
      const c = new Cli(label, args, env)
      clis.push(c)
      return c
    },
    // `locked ...` run to its end (bounded).
    async complete (label, args, env = {}, timeoutMs = 20000) {
      const c = this.cli(label, args, env)
      const timer = setTimeout(() => c.proc.kill('SIGKILL'), timeoutMs)
      const r = await c.exited
      clearTimeout(timer)
      assert.notStrictEqual(r.signal, 'SIGKILL', `${label}: still running after ${timeoutMs} ms\n${r.stderr}`)
      return r
    },
    // The command a runner started: { pid, token, env }, once it printed them.
    async child (runner, timeoutMs = 15000) {
      const [, pid, token] = (await runner.waitLine(/^child-start /, timeoutMs, 'the command starts')).split(' ')
      children.add(Number(pid))
      const env = JSON.parse((await runner.waitLine(/^child-env /, timeoutMs, 'the command\'s environment')).slice('child-env '.length))
      return { pid: Number(pid), token: Number(token), env }
    }
  }
}

function procText (pid, file) {
  return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8').split('\0').join(' ')
}

// The pids of a process's children, as /proc lists them per thread.
function childPids (pid) {
  return fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
    } catch {
      return []
    }
  })
}

// What a failure must look like: one line on stderr, no stack trace, no password.
function assertOneLine (r, label) {
  const lines = r.stderr.trimEnd().split('\n')
  assert.strictEqual(lines.length, 1, `${label}: one line on stderr, got\n${r.stderr}`)
  assert.match(lines[0], /^locked: /, label)
  assert.doesNotMatch(r.stderr, /\n\s+at /, `${label}: no stack trace`)
}

function assertNoPassword (text, where) {
  for (const secret of [ROOT_PASSWORD, APP_PASSWORD, WRONG_PASSWORD]) {
    assert.ok(!String(text).includes(secret), `${where} contains a password:\n${text}`)
  }
}

describe('locked on etcd with TLS and client certificates', { timeout: 90000 }, () => {
  let etcd
  before(async () => { etcd = await startEtcd({ tls: { ca: certs.ca, server: certs.server, client: certs.client } }) })
  after(async () => { if (etcd) await etcd.close() })
  const tlsArgs = () => ['--cacert', certs.ca.certFile, '--cert', certs.client.certFile, '--key', certs.client.keyFile]

  it('status and run reach it with --cacert, --cert and --key; LOCKED_HOSTS before ETCDCTL_ENDPOINTS, which may say https://', async (t) => {
    const s = scope(t)
    const prefix = uniquePrefix('clitls')
    const [deadPort] = await freePorts(1)
    const status = (extra, env) => s.complete('status', ['status', '--name', 'nightly', '--prefix', prefix, ...tlsArgs(), ...extra], env)
    const none = await status(['--hosts', etcd.endpoints[0]])
    assert.strictEqual(none.code, 0, none.stderr)
    assert.strictEqual(none.stdout, 'nightly: no leader\n')

    // LOCKED_HOSTS wins over ETCDCTL_ENDPOINTS (here a port nobody listens on).
    const runner = s.cli('R', ['run', '--name', 'nightly', '--prefix', prefix, '--id', 'host-tls', '--ttl', '2', ...tlsArgs(), ...childCommand],
      { LOCKED_HOSTS: etcd.endpoints[0], ETCDCTL_ENDPOINTS: `127.0.0.1:${deadPort}` })
    const child = await s.child(runner)
    assert.strictEqual(child.env.LOCKED_NAME, 'nightly')
    // ETCDCTL_ENDPOINTS as etcdctl takes it: https:// hosts.
    const json = await status(['--json'], { ETCDCTL_ENDPOINTS: `https://${etcd.endpoints[0]}` })
    assert.strictEqual(json.code, 0, json.stderr)
    const info = JSON.parse(json.stdout)
    assert.strictEqual(info.leader, 'host-tls')
    assert.strictEqual(info.token, child.token, 'the token the command got in LOCKED_TOKEN')

    runner.proc.kill('SIGTERM')
    const { code } = await runner.exited
    assert.strictEqual(code, 143)
    assert.strictEqual((await status(['--hosts', etcd.endpoints[0]])).stdout, 'nightly: no leader\n', 'resigned')
  })

  it('no CA, no TLS at all, an unreadable CA file, or a certificate without its key: an exit code and one line', async (t) => {
    const s = scope(t)
    const prefix = uniquePrefix('clitlsbad')
    const hosts = etcd.endpoints[0]
    const base = ['status', '--hosts', hosts, '--name', 'nightly', '--prefix', prefix]
    const [noCa, noTls] = await Promise.all([
      s.complete('no CA', [...base, '--cert', certs.client.certFile, '--key', certs.client.keyFile]),
      s.complete('no TLS', base)
    ])
    for (const [label, r] of [['no CA', noCa], ['no TLS', noTls]]) {
      t.diagnostic(`${label}: exit ${r.code}: ${r.stderr.trimEnd()}`)
      assert.strictEqual(r.code, 1, `${label}: ${r.stderr}`)
      assert.strictEqual(r.stdout, '')
      assertOneLine(r, label)
      assert.match(r.stderr, /no answer from etcd/)
    }
    assert.match(noCa.stderr, /certificate/i, 'says that the certificate is the trouble')

    // `run` without the CA: the members cannot be verified, which locked reports as etcd being
    // unavailable, as it does an outage; it says why and never starts the command.
    const runner = s.cli('R', ['run', '--hosts', hosts, '--name', 'nightly', '--prefix', prefix, '--cert', certs.client.certFile, '--key', certs.client.keyFile, ...childCommand])
    await runner.waitLine(/^locked: ETCD_UNAVAILABLE: .*certificate/i, 15000, 'the certificate error')
    assert.ok(!runner.has(/^child-start/), 'no command started')
    runner.proc.kill('SIGTERM')
    assert.strictEqual((await runner.exited).code, 143)

    const missing = path.join(tmp, 'no-such-ca.crt')
    for (const [label, args] of [
      ['a CA file that does not exist', ['--cacert', missing]],
      ['--cert without --key', ['--cacert', certs.ca.certFile, '--cert', certs.client.certFile]],
      ['--key without --cert', ['--key', certs.client.keyFile]]
    ]) {
      const r = await s.complete(label, [...base, ...args])
      assert.strictEqual(r.code, 2, `${label}: ${r.stderr}`)
      const [first, blank, usage] = r.stderr.split('\n')
      assert.match(first, /^locked: /, label)
      assert.deepStrictEqual([blank, usage], ['', 'Usage:'], `${label}: one line, then the usage`)
      assert.doesNotMatch(r.stderr, /\n\s+at /, `${label}: no stack trace`)
      assert.doesNotMatch(r.stderr, /PRIVATE KEY/)
    }
  })
})

describe('locked on etcd with authentication', { timeout: 90000 }, () => {
  let etcd
  let passwordFile
  before(async () => {
    etcd = await startEtcd({})
    await etcd.enableAuth(ROOT_PASSWORD)
    await etcd.etcdctl(['role', 'add', 'app'])
    await etcd.etcdctl(['role', 'grant-permission', 'app', '--prefix=true', 'readwrite', APP_PREFIX])
    await etcd.etcdctl(['user', 'add', 'app', '--new-user-password', APP_PASSWORD])
    await etcd.etcdctl(['user', 'grant-role', 'app', 'app'])
    await etcd.etcdctl(['role', 'add', 'reader'])
    await etcd.etcdctl(['role', 'grant-permission', 'reader', '--prefix=true', 'read', READER_PREFIX])
    await etcd.etcdctl(['user', 'add', 'reader', '--new-user-password', APP_PASSWORD])
    await etcd.etcdctl(['user', 'grant-role', 'reader', 'reader'])
    passwordFile = path.join(tmp, 'password')
    fs.writeFileSync(passwordFile, `${APP_PASSWORD}\n`, { mode: 0o600 })
  })
  after(async () => { if (etcd) await etcd.close() })

  // The command and the runner while it runs: the password is in neither's command line nor in the
  // command's environment (as the kernel shows it, and as the command sees it).
  function assertPasswordHidden (runner, child) {
    assertNoPassword(procText(runner.proc.pid, 'cmdline'), 'the runner\'s /proc cmdline')
    assertNoPassword(procText(child.pid, 'cmdline'), 'the command\'s /proc cmdline')
    assertNoPassword(procText(child.pid, 'environ'), 'the command\'s /proc environ')
    assertNoPassword(JSON.stringify(child.env), 'the environment the command prints')
    for (const variable of ['LOCKED_PASSWORD', 'ETCDCTL_PASSWORD']) assert.ok(!(variable in child.env), `${variable} reaches the command`)
    assert.ok(Number.isInteger(child.token) && child.token > 0, 'the command still gets LOCKED_TOKEN')
  }

  it('--user with LOCKED_PASSWORD: elected; the password is not in the runner\'s command line nor the command\'s or the guardian\'s environment; status with --password-file or ETCDCTL_PASSWORD', async (t) => {
    const s = scope(t)
    const prefix = `${APP_PREFIX}${uniquePrefix('pwenv')}`
    const runner = s.cli('R', ['run', '--hosts', etcd.endpoints[0], '--name', 'nightly', '--prefix', prefix, '--id', 'host-auth', '--user', 'app', '--guardian', ...childCommand],
      { LOCKED_PASSWORD: APP_PASSWORD })
    const child = await s.child(runner)
    assertPasswordHidden(runner, child)
    // The guardian, a child of the runner too, gets the password on its stdin only.
    const guardian = await until(() => childPids(runner.proc.pid).find((pid) => {
      try { return procText(pid, 'cmdline').includes('guardian.js') } catch { return false }
    }), 10000, 'the guardian process')
    assertNoPassword(procText(guardian, 'environ'), 'the guardian\'s /proc environ')

    const byFile = await s.complete('status --password-file', ['status', '--hosts', etcd.endpoints[0], '--name', 'nightly', '--prefix', prefix, '--json', '--user', 'app', '--password-file', passwordFile])
    assert.strictEqual(byFile.code, 0, byFile.stderr)
    const info = JSON.parse(byFile.stdout)
    assert.strictEqual(info.leader, 'host-auth')
    assert.strictEqual(info.token, child.token)
    const byEtcdctlVariable = await s.complete('status ETCDCTL_PASSWORD', ['status', '--name', 'nightly', '--prefix', prefix, '--user', 'app'],
      { LOCKED_HOSTS: etcd.endpoints[0], ETCDCTL_PASSWORD: APP_PASSWORD })
    assert.strictEqual(byEtcdctlVariable.code, 0, byEtcdctlVariable.stderr)
    assert.match(byEtcdctlVariable.stdout, new RegExp(`^nightly: led by host-auth .*, token ${child.token}\n$`))

    runner.proc.kill('SIGTERM')
    const r = await runner.exited
    assert.strictEqual(r.code, 143)
    for (const out of [r.stdout, r.stderr, byFile.stdout, byFile.stderr, byEtcdctlVariable.stdout, byEtcdctlVariable.stderr]) assertNoPassword(out, 'output')
  })

  it('--user with --password-file: elected; ETCDCTL_PASSWORD in the runner\'s environment does not reach the command either', async (t) => {
    const s = scope(t)
    const prefix = `${APP_PREFIX}${uniquePrefix('pwfile')}`
    const runner = s.cli('R', ['run', '--hosts', etcd.endpoints[0], '--name', 'nightly', '--prefix', prefix, '--user', 'app', '--password-file', passwordFile, ...childCommand],
      { ETCDCTL_PASSWORD: APP_PASSWORD })
    const child = await s.child(runner)
    assertPasswordHidden(runner, child)
    runner.proc.kill('SIGTERM')
    const r = await runner.exited
    assert.strictEqual(r.code, 143)
    assertNoPassword(r.stdout + r.stderr, 'output')
  })

  it('a wrong password, or no permission on the prefix: status and run exit 1 with one line that names no password, and no command starts; a missing password is a usage error', async (t) => {
    const s = scope(t)
    const prefix = `${APP_PREFIX}${uniquePrefix('pwwrong')}`
    const hosts = etcd.endpoints[0]
    const outside = uniquePrefix('pwelsewhere')
    const [status, run, denied] = await Promise.all([
      s.complete('status', ['status', '--hosts', hosts, '--name', 'nightly', '--prefix', prefix, '--user', 'app'], { LOCKED_PASSWORD: WRONG_PASSWORD }),
      s.complete('run', ['run', '--hosts', hosts, '--name', 'nightly', '--prefix', prefix, '--user', 'app', ...childCommand], { LOCKED_PASSWORD: WRONG_PASSWORD }),
      s.complete('run outside the role', ['run', '--hosts', hosts, '--name', 'nightly', '--prefix', outside, '--user', 'app', ...childCommand], { LOCKED_PASSWORD: APP_PASSWORD })
    ])
    for (const [label, r, cause] of [['status', status, /authentication failed/], ['run', run, /authentication failed/], ['run outside the role', denied, /permission denied/]]) {
      t.diagnostic(`${label}: exit ${r.code}: ${r.stderr.trimEnd()}`)
      assert.strictEqual(r.code, 1, `${label}: ${r.stderr}`)
      assertOneLine(r, label)
      assert.match(r.stderr, cause)
      assertNoPassword(r.stdout + r.stderr, `${label}: output`)
      assert.doesNotMatch(r.stdout, /child-start/, `${label}: no command started`)
    }
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [], 'no key')
    assert.deepStrictEqual(await etcd.keys(`${outside}/`), [], 'no key')

    const base = ['run', '--hosts', hosts, '--name', 'nightly', '--prefix', prefix]
    for (const [label, args] of [
      ['--user without a password', ['--user', 'app']],
      ['an empty user name', ['--user', `:${WRONG_PASSWORD}`]],
      ['the password twice', ['--user', `app:${WRONG_PASSWORD}`, '--password-file', passwordFile]],
      ['--password-file without --user', ['--password-file', passwordFile]],
      ['a password typed after --user NAME', ['--user', 'app', WRONG_PASSWORD]],
      ['a misspelt flag with a password', [`--usr=app:${WRONG_PASSWORD}`]]
    ]) {
      const r = await s.complete(label, [...base, ...args, ...childCommand])
      assert.strictEqual(r.code, 2, `${label}: ${r.stderr}`)
      assert.match(r.stderr, /^locked: [^\n]+\n\nUsage:/, `${label}: one line, then the usage`)
      assertNoPassword(r.stdout + r.stderr, `${label}: output`)
      assert.doesNotMatch(r.stdout, /child-start/)
    }
  })

  it('a user that may read the prefix but not write it: the election\'s own error (a singleton\'s, not the locker\'s) reaches stderr, and run exits 1', async (t) => {
    const s = scope(t)
    const prefix = `${READER_PREFIX}${uniquePrefix('ro')}`
    // The lease and the watch work for this user; the campaign's write is refused.
    const r = await s.complete('run as reader', ['run', '--hosts', etcd.endpoints[0], '--name', 'nightly', '--prefix', prefix, '--user', 'reader', ...childCommand],
      { LOCKED_PASSWORD: APP_PASSWORD })
    t.diagnostic(`exit ${r.code}: ${r.stderr.trimEnd()}`)
    assert.strictEqual(r.code, 1, r.stderr)
    assertOneLine(r, 'run as reader')
    assert.match(r.stderr, /^locked: ETCD_REJECTED: singleton "nightly": .*permission denied/)
    assertNoPassword(r.stdout + r.stderr, 'output')
    assert.doesNotMatch(r.stdout, /child-start/, 'no command started')
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [], 'no key')
  })
})
