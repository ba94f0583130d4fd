'use strict'
// `locked run` and `locked status` as separate processes on a real etcd: exactly one command runs,
// the old command is gone before the new one starts (SIGTERM handover, SIGKILL of the runner, a
// leader cut off from etcd, a re-election), and usage errors.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync, execFile } = require('node:child_process')
const { promisify } = require('node:util')
const { startEtcd, freePorts } = require('./helpers/etcd')
const { startProxy } = require('./helpers/proxy')
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

// The supervised command. A shell checks, right after the spawn and before anything slow, which
// commands started earlier in this test (their pids are files in `dir`) are still alive, records
// its own pid, and execs Node with that list: `child-start PID TOKEN alive:PID,...|none` shows
// whether the old command was gone before the new one started, without racing the test's reads.
// With ignoreTerm the command outlives SIGTERM, so only SIGKILL ends it. A zombie (killed, not yet
// reaped by init after its runner died) runs nothing: it counts as gone.
const CHECK = `dir=$1; shift; alive=
for f in "$dir"/*; do
  [ -f "$f" ] || continue
  p=\${f##*/}
  if kill -0 "$p" 2>/dev/null && [ "$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -c1)" != Z ]; then alive="$alive $p"; fi
done
: > "$dir/$$"
ALIVE_BEFORE=$alive exec "$@"`
const NODE_COMMAND = `const alive = process.env.ALIVE_BEFORE.trim().split(/ +/).filter(Boolean)
   console.log('child-start', process.pid, process.env.LOCKED_TOKEN, 'alive:' + (alive.join(',') || 'none'))
   const ignoreTerm = process.argv[1] === 'ignore-term'
   process.on('SIGTERM', () => { console.log('child-term', process.pid); if (!ignoreTerm) process.exit(0) })
   setInterval(() => {}, 1000)`
function command (dir, { ignoreTerm = false } = {}) {
  return ['/bin/sh', '-c', CHECK, 'sh', dir, process.execPath, '-e', NODE_COMMAND, ignoreTerm ? 'ignore-term' : 'exit-on-term']
}

// What a `child-start` line says: { pid, token, alive: [pids alive when it started] }.
function childStart (hit) {
  const [, pid, token, alive] = hit.line.split(' ')
  return { pid: Number(pid), token: Number(token), alive: alive === 'alive:none' ? [] : alive.slice(6).split(',').map(Number) }
}

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

// Arguments of `locked run` for the name 'nightly'; a later --grace in `extra` wins.
function runArgs (prefix, extra, cmd, hosts = etcd.endpoints.join(',')) {
  return ['run', '--hosts', hosts, '--name', 'nightly', '--prefix', prefix, '--ttl', String(TTL), '--grace', '2s', ...extra, '--', ...cmd]
}

// One test's runners and pid directory, cleaned up when the test ends, passed or failed: every
// command still alive and every runner get SIGKILL.
function scope (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'locked-cli-'))
  const runners = []
  t.after(async () => {
    for (const file of fs.readdirSync(dir)) {
      try { process.kill(Number(file), 'SIGKILL') } catch {}
    }
    for (const r of runners) r.proc.kill('SIGKILL')
    await Promise.all(runners.map((r) => r.exited))
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return {
    dir,
    runner (label, args) {
      const r = new Runner(label, args)
      runners.push(r)
      return r
    }
  }
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
  try { process.kill(pid, 0) } catch { return false }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat[stat.lastIndexOf(')') + 2] !== 'Z'
  } catch {
    return false
  }
}

describe('locked run', { timeout: 60000 }, () => {
  it('two runners on one name: exactly one command runs; status shows its leader; SIGTERM hands over after the command is gone', async (t) => {
    const prefix = uniquePrefix('cli1')
    const { dir, runner } = scope(t)
    const spawnedA = Date.now()
    const a = runner('A', runArgs(prefix, ['--id', 'host-a'], command(dir)))
    const startA = await a.waitLine(/^child-start/, 10000, 'A child start')
    const b = runner('B', runArgs(prefix, ['--id', 'host-b'], command(dir)))
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
    const pidA = childStart(startA).pid
    assert.deepStrictEqual(childStart(started).alive, [], `A's command (pid ${pidA}) was gone when B's started`)
    assert.ok(!pidAlive(pidA), 'A\'s command is gone')
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

  it('SIGKILL of the leading runner: its command dies with it, before the other runs it within TTL + 2 s', async (t) => {
    const prefix = uniquePrefix('cli2')
    const { dir, runner } = scope(t)
    const a = runner('A', runArgs(prefix, [], command(dir)))
    const first = await a.waitLine(/^child-start/, 10000, 'A child start')
    const childPid = childStart(first).pid
    const b = runner('B', runArgs(prefix, [], command(dir)))
    await etcd.waitKeys(`${prefix}/nightly/`, (kvs) => kvs.length === 2, 10000, 'both candidates')
    const killed = process.hrtime.bigint()
    a.proc.kill('SIGKILL')
    // The runner says so right before it spawns the command; the command's own first line comes
    // after Node started it, which on a loaded machine is not the runner's doing.
    const starting = await b.waitLine(/^locked: elected for nightly .*; starting /, TTL * 1000 + 2000, 'B starts its command')
    const startedB = await b.waitLine(/^child-start/, 10000, 'B child start')
    assert.deepStrictEqual(childStart(startedB).alive, [], `the killed runner's command (pid ${childPid}) was gone when B's started`)
    assert.ok(!pidAlive(childPid), 'the killed runner\'s command is gone')
    const failover = Number(starting.t - killed) / 1e6
    assert.ok(failover <= TTL * 1000 + 2000, `failover ${failover.toFixed(0)} ms`)
    b.proc.kill('SIGTERM')
    await b.exited
  })

  it('--guardian: SIGKILL of the leading runner (ttl 10): its command dies, then the other runner starts its own at once', async (t) => {
    const prefix = uniquePrefix('cliguard')
    const { dir, runner } = scope(t)
    const args = (label) => ['run', '--hosts', etcd.endpoints.join(','), '--name', 'nightly', '--prefix', prefix, '--ttl', '10', '--guardian', '--', ...command(dir)]
    const a = runner('A', args('A'))
    const first = await a.waitLine(/^child-start/, 10000, 'A child start')
    const childPid = childStart(first).pid
    const b = runner('B', args('B'))
    await etcd.waitKeys(`${prefix}/nightly/`, (kvs) => kvs.length === 2, 10000, 'both candidates')
    // The guardian is told the command's pid only after the spawn; give the line a moment to
    // reach it by waiting for A's next keepalive to be answered (nothing else to wait on).
    await statusUntil(prefix, (info) => info.leader !== null, 'A leads')
    const killed = process.hrtime.bigint()
    a.proc.kill('SIGKILL')
    const starting = await b.waitLine(/^locked: elected for nightly .*; starting /, 5000, 'B starts its command')
    const startedB = await b.waitLine(/^child-start/, 10000, 'B child start')
    assert.deepStrictEqual(childStart(startedB).alive, [], `the killed runner's command (pid ${childPid}) was gone when B's started`)
    const failover = Number(starting.t - killed) / 1e6
    t.diagnostic(`--guardian, ttl 10: SIGKILL of the runner → the other runner starts its command after ${failover.toFixed(1)} ms`)
    assert.ok(failover < 2000, `failover ${failover.toFixed(0)} ms with the guardian (the TTL is 10 s)`)
    b.proc.kill('SIGTERM')
    await b.exited
  })

  it('a command that exits by itself: the runner resigns and exits with its code', async (t) => {
    const prefix = uniquePrefix('cli3')
    const args = ['run', '--hosts', etcd.endpoints[0], '--name', 'once', '--prefix', prefix, '--', process.execPath, '-e', 'process.exit(7)']
    const r = scope(t).runner('R', args)
    const { code } = await r.exited
    assert.strictEqual(code, 7)
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [], 'no key left behind')
  })

  it('a leader cut off from etcd: its command, ignoring SIGTERM, is killed by the leadership deadline, not after --grace, before another host starts one', async (t) => {
    const prefix = uniquePrefix('cli5')
    const { dir, runner } = scope(t)
    const proxy = await startProxy(etcd.endpoints[0])
    t.after(() => proxy.close())
    const a = runner('A', runArgs(prefix, ['--id', 'host-a', '--grace', '60s'], command(dir, { ignoreTerm: true }), proxy.endpoint))
    const pidA = childStart(await a.waitLine(/^child-start/, 10000, 'A child start')).pid
    const b = runner('B', runArgs(prefix, ['--id', 'host-b'], command(dir)))
    await etcd.waitKeys(`${prefix}/nightly/`, (kvs) => kvs.length === 2, 10000, 'both candidates')
    // A partition of A alone: its keepalives go unanswered, no error ever arrives.
    proxy.mode('blackhole')
    await a.waitLine(/^locked: lost leadership of nightly \(deadline\)/, TTL * 1000 + 5000, 'A steps down at its deadline')
    const startedB = await b.waitLine(/^child-start/, TTL * 1000 + 5000, 'B child start')
    assert.deepStrictEqual(childStart(startedB).alive, [], `A's command (pid ${pidA}) was gone when B's started`)
    assert.ok(!pidAlive(pidA), 'A\'s command is gone')
    assert.strictEqual(a.lines.filter((l) => /^child-start/.test(l.line)).length, 1, 'A started its command once')
  })

  it('re-elected while the old command ignores SIGTERM: no second command until the old one is gone', async (t) => {
    const prefix = uniquePrefix('cli6')
    const { dir, runner } = scope(t)
    const a = runner('A', runArgs(prefix, ['--id', 'host-a', '--grace', '60s'], command(dir, { ignoreTerm: true })))
    const first = childStart(await a.waitLine(/^child-start/, 10000, 'A child start'))
    // Deleting the key from outside ends the term at once; A, alone, campaigns and is re-elected.
    const [key] = await etcd.waitKeys(`${prefix}/nightly/`, (kvs) => kvs.length === 1 && kvs, 10000, 'A\'s key')
    assert.strictEqual(await etcd.del(key.key), 1)
    await a.waitLine(/^locked: lost leadership of nightly \(key-deleted\)/, 5000, 'A loses leadership')
    const second = childStart(await a.waitLine(new RegExp(`^child-start (?!${first.pid} )`), 10000, 'A\'s second command start'))
    assert.notStrictEqual(second.pid, first.pid)
    assert.deepStrictEqual(second.alive, [], `the first command (pid ${first.pid}) was gone when the second started`)
    assert.ok(!pidAlive(first.pid), 'the first command is gone')
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
    for (const args of [[], ['bogus'], ['run', '--hosts', '127.0.0.1:2379', '--name', 'x'], ['run', '--name', 'x', '--', 'true'], ['run', '--hosts', 'h:1', '--name', 'x', '--ttl', '1', '--', 'true'], ['run', '--hosts', 'h:1', '--name', 'x', '--wat', '--', 'true'],
      // Refused by locked() itself: still one line and the usage, never a stack trace.
      ['run', '--hosts', 'localhost', '--name', 'x', '--', 'true'], ['run', '--hosts', 'h:1', '--name', 'a/b', '--', 'true'],
      ['run', '--hosts', 'h:1', '--name', 'x', '--ttl', '5000', '--', 'true'], ['status', '--hosts', 'localhost', '--name', 'x']]) {
      const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' })
      if (args.length === 0) {
        assert.strictEqual(r.status, 0, 'no arguments prints the help')
        continue
      }
      assert.strictEqual(r.status, 2, `${args.join(' ')} → exit 2\n${r.stderr}`)
      assert.match(r.stderr, /Usage:/)
      assert.doesNotMatch(r.stderr, /\n\s+at /, `${args.join(' ')}: a stack trace`)
    }
    const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' })
    assert.strictEqual(help.status, 0)
    for (const flag of ['--hosts', '--name', '--ttl', '--grace', '--prefix', '--id', '--restart', '--guardian', '--json']) {
      assert.ok(help.stdout.includes(flag), `--help mentions ${flag}`)
    }
  })
})
