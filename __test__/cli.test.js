'use strict'
// `locked run` and `locked status` as separate processes on a real etcd: exactly one command runs,
// a killed supervisor hands over within the TTL, SIGTERM hands over at once, and usage errors.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const path = require('node:path')
const { spawn, spawnSync, execFile } = require('node:child_process')
const { promisify } = require('node:util')
const { startEtcd, freePorts } = require('./helpers/etcd')
const { uniquePrefix } = require('./helpers/util')

const CLI = path.join(__dirname, '..', 'cli.js')
const execFileAsync = promisify(execFile)
const TTL = 2
let etcd
const procs = new Set()

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  for (const p of procs) p.kill('SIGKILL')
  if (etcd) await etcd.close()
})

// The supervised command: prints its token, reports SIGTERM, and runs until told otherwise.
const COMMAND = [
  process.execPath, '-e',
  `console.log('child-start', process.pid, process.env.LOCKED_TOKEN)
   process.on('SIGTERM', () => { console.log('child-term', process.pid); process.exit(0) })
   setInterval(() => {}, 1000)`
]

class Runner {
  constructor (label, args) {
    this.label = label
    this.lines = []
    this.waiters = []
    this.proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    procs.add(this.proc)
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => {
      procs.delete(this.proc)
      resolve({ code, signal })
    }))
    for (const stream of [this.proc.stdout, this.proc.stderr]) {
      let buf = ''
      stream.on('data', (chunk) => {
        buf += chunk
        let nl
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl)
          buf = buf.slice(nl + 1)
          this.lines.push({ line, t: process.hrtime.bigint(), wall: Date.now() })
          this.waiters = this.waiters.filter((w) => !w.check())
        }
      })
    }
  }

  waitLine (re, timeoutMs, description) {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          const hit = this.lines.find((l) => re.test(l.line))
          if (hit) { clearTimeout(timer); resolve(hit) }
          return Boolean(hit)
        }
      }
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter)
        reject(new Error(`${this.label}: timeout after ${timeoutMs} ms waiting for ${description}\n${this.lines.map((l) => l.line).join('\n')}`))
      }, timeoutMs)
      if (!waiter.check()) this.waiters.push(waiter)
    })
  }

  has (re) { return this.lines.some((l) => re.test(l.line)) }
}

function runArgs (prefix, extra = []) {
  return ['run', '--hosts', etcd.endpoints.join(','), '--name', 'nightly', '--prefix', prefix, '--ttl', String(TTL), '--grace', '2s', ...extra, '--', ...COMMAND]
}

// `locked status` for the name 'nightly', in a child process (the test's own event loop keeps
// reading the runners' output meanwhile).
async function status (prefix, extra = []) {
  const args = [CLI, 'status', '--hosts', etcd.endpoints[0], '--name', 'nightly', '--prefix', prefix, ...extra]
  const r = await execFileAsync(process.execPath, args, { encoding: 'utf8', timeout: 15000 })
  return r.stdout
}

// Runs `status --json` until done(info) is true (bounded); done may assert on every answer.
async function statusUntil (prefix, done, description) {
  const deadline = Date.now() + 5000
  let info
  do {
    info = JSON.parse(await status(prefix, ['--json']))
    if (done(info)) return info
  } while (Date.now() < deadline)
  throw new Error(`timeout waiting for ${description}; last status: ${JSON.stringify(info)}`)
}

function pidAlive (pid) {
  try { process.kill(pid, 0); return true } catch { return false }
}

describe('locked run', { timeout: 60000 }, () => {
  it('two runners on one name: exactly one command runs; status shows its leader', async () => {
    const prefix = uniquePrefix('cli1')
    const spawnedA = Date.now()
    const a = new Runner('A', runArgs(prefix, ['--id', 'host-a']))
    const startA = await a.waitLine(/^child-start/, 10000, 'A child start')
    const b = new Runner('B', runArgs(prefix, ['--id', 'host-b']))
    await etcd.waitKeys(`${prefix}/nightly/`, (kvs) => kvs.length === 2, 10000, 'both candidates')
    const tokenA = Number(startA.line.split(' ')[2])
    // The leader publishes its election time right after its election: wait for it (bounded).
    const info = await statusUntil(prefix, (x) => x.since !== null, 'A\'s election time')
    assert.deepStrictEqual(Object.keys(info), ['name', 'leader', 'token', 'since'])
    assert.strictEqual(info.name, 'nightly')
    assert.strictEqual(info.leader, 'host-a')
    assert.strictEqual(info.token, tokenA, 'the token the command got in LOCKED_TOKEN')
    const since = Date.parse(info.since)
    assert.ok(since >= spawnedA && since <= startA.wall, `elected ${info.since}: after the runner started, before its command did`)
    const text = await status(prefix)
    assert.match(text, new RegExp(`^nightly: led by host-a since ${info.since.replace(/[.]/g, '[.]')} \\(\\d+s ago\\), token ${tokenA}\n$`))
    assert.ok(!b.has(/^child-start/), 'the second runner did not start its command')

    // SIGTERM to the leader: its command gets SIGTERM, it resigns, the other starts at once.
    const sent = process.hrtime.bigint()
    const sentWall = Date.now()
    a.proc.kill('SIGTERM')
    await a.waitLine(/^child-term/, 5000, 'A child got SIGTERM')
    const started = await b.waitLine(/^child-start/, 5000, 'B child start')
    const handover = Number(started.t - sent) / 1e6
    assert.ok(handover < TTL * 1000, `handover at once, not after the TTL (${handover.toFixed(0)} ms)`)
    const { code } = await a.exited
    assert.strictEqual(code, 143, 'exits with 128 + SIGTERM')
    // status follows the handover: B, its token, and B's election time (never A's).
    const tokenB = Number(started.line.split(' ')[2])
    const infoB = await statusUntil(prefix, (x) => {
      assert.ok(x.token === tokenB || x.token === tokenA, JSON.stringify(x))
      if (x.token === tokenB) assert.ok(x.since === null || Date.parse(x.since) >= sentWall, `B's term shows ${x.since}`)
      return x.token === tokenB && x.since !== null
    }, 'B\'s election time')
    assert.strictEqual(infoB.leader, 'host-b')
    assert.strictEqual(infoB.token, tokenB)
    assert.ok(Date.parse(infoB.since) >= sentWall && Date.parse(infoB.since) <= started.wall, `B elected ${infoB.since}`)
    b.proc.kill('SIGTERM')
    await b.exited
  })

  it('SIGKILL of the leading runner: its command dies with it, the other runs within TTL + 2 s', async () => {
    const prefix = uniquePrefix('cli2')
    const a = new Runner('A', runArgs(prefix))
    const first = await a.waitLine(/^child-start/, 10000, 'A child start')
    const childPid = Number(first.line.split(' ')[1])
    const b = new Runner('B', runArgs(prefix))
    await etcd.waitKeys(`${prefix}/nightly/`, (kvs) => kvs.length === 2, 10000, 'both candidates')
    const killed = process.hrtime.bigint()
    a.proc.kill('SIGKILL')
    // The runner says so right before it spawns the command; the command's own first line comes
    // after Node started it, which on a loaded machine is not the runner's doing.
    const starting = await b.waitLine(/^locked: elected for nightly .*; starting /, TTL * 1000 + 2000, 'B starts its command')
    await b.waitLine(/^child-start/, 10000, 'B child start')
    assert.ok(!pidAlive(childPid), 'the killed runner\'s command is gone')
    const failover = Number(starting.t - killed) / 1e6
    assert.ok(failover <= TTL * 1000 + 2000, `failover ${failover.toFixed(0)} ms`)
    b.proc.kill('SIGTERM')
    await b.exited
  })

  it('a command that exits by itself: the runner resigns and exits with its code', async () => {
    const prefix = uniquePrefix('cli3')
    const args = ['run', '--hosts', etcd.endpoints[0], '--name', 'once', '--prefix', prefix, '--', process.execPath, '-e', 'process.exit(7)']
    const r = new Runner('R', args)
    const { code } = await r.exited
    assert.strictEqual(code, 7)
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [], 'no key left behind')
  })

  it('status: nobody leads (text and JSON); etcd not answering exits 1', async () => {
    const prefix = uniquePrefix('cli4')
    assert.strictEqual(await status(prefix), 'nightly: no leader\n')
    assert.deepStrictEqual(JSON.parse(await status(prefix, ['--json'])), { name: 'nightly', leader: null, token: null, since: null })
    const [port] = await freePorts(1)
    const r = spawnSync(process.execPath, [CLI, 'status', '--hosts', `127.0.0.1:${port}`, '--name', 'nightly'], { encoding: 'utf8', timeout: 15000 })
    assert.strictEqual(r.status, 1, r.stderr)
    assert.strictEqual(r.stdout, '')
    assert.match(r.stderr, /no answer from etcd/)
  })

  it('usage errors exit with code 2 and --help documents every flag', () => {
    for (const args of [[], ['bogus'], ['run', '--hosts', '127.0.0.1:2379', '--name', 'x'], ['run', '--name', 'x', '--', 'true'], ['run', '--hosts', 'h:1', '--name', 'x', '--ttl', '1', '--', 'true'], ['run', '--hosts', 'h:1', '--name', 'x', '--wat', '--', 'true']]) {
      const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' })
      if (args.length === 0) {
        assert.strictEqual(r.status, 0, 'no arguments prints the help')
        continue
      }
      assert.strictEqual(r.status, 2, `${args.join(' ')} → exit 2\n${r.stderr}`)
      assert.match(r.stderr, /Usage:/)
    }
    const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' })
    assert.strictEqual(help.status, 0)
    for (const flag of ['--hosts', '--name', '--ttl', '--grace', '--prefix', '--id', '--restart', '--json']) {
      assert.ok(help.stdout.includes(flag), `--help mentions ${flag}`)
    }
  })
})
