'use strict'
// `locked run` and `locked status` as separate processes on a real etcd: exactly one command runs,
// the old command is gone before the new one starts (SIGTERM handover, SIGKILL of the runner, a
// leader cut off from etcd, a re-election, also without setpriv, where the command runs under
// lib/wrapper.js); `status` for one name or every name, once or following the changes; usage errors.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync, execFile } = require('node:child_process')
const { promisify } = require('node:util')
const { startEtcd, freePorts } = require('./helpers/etcd')
const { startProxy } = require('./helpers/proxy')
const { uniquePrefix, until, nextEvent, quietWindow } = require('./helpers/util')
const locked = require('..')

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
  constructor (label, args, env = {}) {
    this.label = label
    this.lines = []
    this.waiters = []
    this.proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    procs.add(this.proc)
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => {
      procs.delete(this.proc)
      resolve({ code, signal })
    }))
    for (const [stream, from] of [[this.proc.stdout, 'stdout'], [this.proc.stderr, 'stderr']]) {
      let buf = ''
      stream.on('data', (chunk) => {
        buf += chunk
        let nl
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl)
          buf = buf.slice(nl + 1)
          this.lines.push({ line, from, t: process.hrtime.bigint(), wall: Date.now() })
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
    runner (label, args, env) {
      const r = new Runner(label, args, env)
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
    assert.deepStrictEqual(Object.keys(info), ['name', 'leader', 'token', 'since', 'priority', 'preferred', 'handover'])
    assert.deepStrictEqual([info.priority, info.preferred, info.handover], [0, 'host-a', null])
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

  it('--priority: a runner of higher priority takes over once the leader led 5 s; the old command is gone before the new one starts', async (t) => {
    const prefix = uniquePrefix('clipri')
    const { dir, runner } = scope(t)
    const a = runner('A', runArgs(prefix, ['--id', 'host-a'], command(dir)))
    const startA = await a.waitLine(/^child-start/, 10000, 'A child start')
    const b = runner('B', runArgs(prefix, ['--id', 'host-b', '--priority', '5'], command(dir)))
    const startB = await b.waitLine(/^child-start/, 15000, 'B (priority 5) starts its command')
    await a.waitLine(/^child-term/, 1000, 'A\'s command got SIGTERM')
    assert.ok(startB.wall - startA.wall >= 5000, `A led ${startB.wall - startA.wall} ms: at least the minimum term`)
    assert.deepStrictEqual(childStart(startB).alive, [], `A's command (pid ${childStart(startA).pid}) was gone when B's started`)
    assert.ok(a.has(/lost leadership of nightly \(handover\)/), a.lines.map((l) => l.line).join('\n'))
    // status shows B's priority; B is where it should be.
    const info = await statusUntil(prefix, (x) => x.leader === 'host-b', 'B in status')
    assert.deepStrictEqual([info.priority, info.preferred, info.handover], [5, 'host-b', null])
    assert.match(await status(prefix), /^nightly: led by host-b .*, token \d+, priority 5\n$/)
    assert.strictEqual(a.proc.exitCode, null, 'A stays, queued behind B')
    for (const r of [a, b]) r.proc.kill('SIGTERM')
    await Promise.all([a.exited, b.exited])
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

  it('--priority: a leader cut off from etcd while its command (ignoring SIGTERM) winds down for a handover: killed by the leadership deadline, before the other host starts one', async (t) => {
    const prefix = uniquePrefix('cliprid')
    const { dir, runner } = scope(t)
    const proxy = await startProxy(etcd.endpoints[0])
    t.after(() => proxy.close())
    const a = runner('A', runArgs(prefix, ['--id', 'host-a', '--grace', '60s'], command(dir, { ignoreTerm: true }), proxy.endpoint))
    const pidA = childStart(await a.waitLine(/^child-start/, 10000, 'A child start')).pid
    const b = runner('B', runArgs(prefix, ['--id', 'host-b', '--priority', '5'], command(dir)))
    // After A's minimum term (5 s) it hands over: its command gets SIGTERM, ignores it, and the
    // handover waits for it.
    await a.waitLine(/^child-term/, 15000, 'A\'s command got SIGTERM for the handover')
    proxy.mode('blackhole')
    const startedB = await b.waitLine(/^child-start/, TTL * 1000 + 10000, 'B child start')
    assert.deepStrictEqual(childStart(startedB).alive, [], `A's command (pid ${pidA}) was gone when B's started`)
    assert.ok(!pidAlive(pidA), 'A\'s command is gone')
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
    assert.deepStrictEqual(JSON.parse(await status(prefix, ['--json'])), { name: 'nightly', leader: null, token: null, since: null, priority: null, preferred: null, handover: null })
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
      ['run', '--hosts', 'h:1', '--name', 'x', '--ttl', '5000', '--', 'true'], ['status', '--hosts', 'localhost', '--name', 'x'],
      ['status', '--hosts', 'h:1', '--name', 'a/b'], ['status', '--hosts', 'h:1', '--name', 'a/b', '--watch'], ['status', '--hosts', 'h:1', '--name', ''],
      ['status', '--hosts', 'h:1', '--watch=yes'], ['status', '--hosts', 'h:1', 'extra'],
      ['run', '--hosts', 'h:1', '--name', 'x', '--priority', 'high', '--', 'true'], ['run', '--hosts', 'h:1', '--name', 'x', '--priority', '1.5', '--', 'true']]) {
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
    for (const flag of ['--hosts', '--name', '--ttl', '--grace', '--prefix', '--id', '--restart', '--priority', '--guardian', '--json', '--watch']) {
      assert.ok(help.stdout.includes(flag), `--help mentions ${flag}`)
    }
  })
})

// `locked status` with any arguments (the prefix given), run to its end: { code, stdout, stderr }.
async function statusRun (prefix, args) {
  try {
    const r = await execFileAsync(process.execPath, [CLI, 'status', '--hosts', etcd.endpoints[0], '--prefix', prefix, ...args], { encoding: 'utf8', timeout: 15000 })
    return { code: 0, ...r }
  } catch (err) {
    if (typeof err.code !== 'number') throw err
    return { code: err.code, stdout: err.stdout, stderr: err.stderr }
  }
}

// A locker of the test process itself, closed when the test ends, and its singletons, each
// resolved once elected.
function testLocker (t, prefix, id, hosts = etcd.endpoints) {
  const locker = locked(hosts, { prefix, id, ttl: 5 })
  t.after(() => locker.close())
  return {
    locker,
    async lead (name) {
      const singleton = locker(name, () => {})
      await nextEvent(singleton, 'start', 10000, `${id} elected for ${name}`)
      return singleton
    }
  }
}

// What status prints for a term, the election time as a pattern (its age keeps changing).
function termPattern (name, leader, token) {
  return new RegExp(`^${name}: led by ${leader} since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z \\(\\d+s ago\\), token ${token}$`)
}

describe('locked status', { timeout: 60000 }, () => {
  it('without --name: a line per election, sorted by name (--json: an array); nothing under the prefix: a line that says so ([] in JSON)', async (t) => {
    const prefix = uniquePrefix('clistall')
    const empty = await statusRun(prefix, [])
    assert.deepStrictEqual([empty.code, empty.stdout, empty.stderr], [0, `no elections under the prefix "${prefix}"\n`, ''])
    assert.deepStrictEqual(JSON.parse((await statusRun(prefix, ['--json'])).stdout), [])

    const { locker, lead } = testLocker(t, prefix, 'host-s')
    await lead('beta')
    await lead('alpha')
    // Each leader publishes its election time right after its election: wait for both (bounded).
    const terms = await until(async () => {
      const all = await locker.terms()
      return all.every((term) => term.since !== null) && all
    }, 5000, 'both election times')
    const json = await statusRun(prefix, ['--json'])
    assert.strictEqual(json.code, 0, json.stderr)
    assert.deepStrictEqual(JSON.parse(json.stdout), terms.map((term) => ({ name: term.name, leader: 'host-s', token: term.token, since: term.since.toISOString(), priority: 0, preferred: 'host-s', handover: null })))
    assert.deepStrictEqual(JSON.parse(json.stdout).map((x) => x.name), ['alpha', 'beta'])
    const text = await statusRun(prefix, [])
    assert.strictEqual(text.code, 0, text.stderr)
    const lines = text.stdout.trimEnd().split('\n')
    assert.strictEqual(lines.length, 2, text.stdout)
    terms.forEach((term, i) => {
      assert.match(lines[i], termPattern(term.name, 'host-s', term.token))
      assert.ok(lines[i].includes(`since ${term.since.toISOString()} (`), lines[i])
    })

    const [port] = await freePorts(1)
    const r = spawnSync(process.execPath, [CLI, 'status', '--hosts', `127.0.0.1:${port}`], { encoding: 'utf8', timeout: 15000 })
    assert.deepStrictEqual([r.status, r.stdout], [1, ''], r.stderr)
    assert.match(r.stderr, /^locked: no answer from etcd: terms\(\)/)
  })

  it('--watch --name: the current state, then a line per change (new leader, new token, nobody leads), NDJSON with --json; SIGINT exits 0', async (t) => {
    const prefix = uniquePrefix('cliwatch1')
    const { runner } = scope(t)
    const args = ['status', '--hosts', etcd.endpoints[0], '--prefix', prefix, '--name', 'nightly', '--watch']
    const text = runner('watch', args)
    const json = runner('watch --json', [...args, '--json'])
    const stdout = (r) => r.lines.filter((l) => l.from === 'stdout').map((l) => l.line)
    await text.waitLine(/^nightly: no leader$/, 10000, 'the current state')
    await json.waitLine(/^\{/, 10000, 'the current state')

    const a = testLocker(t, prefix, 'host-a')
    const b = testLocker(t, prefix, 'host-b')
    const singletonA = await a.lead('nightly')
    // The term with its election time, which the leader publishes right after its election.
    const published = (locker, id) => until(async () => {
      const term = await locker.term('nightly')
      return term && term.leader === id && term.since !== null && term
    }, 10000, `${id} leads`)
    // Each step waits for both watches: a leader removed while one of them still waits for its
    // election time would be shown there without it.
    const shownInBoth = async (pattern, what) => {
      await text.waitLine(pattern, 10000, what)
      await json.waitLine(new RegExp(`"leader":${what === 'nobody leads' ? 'null' : `"${what.split(' ')[0]}"`}`), 10000, `${what} (JSON)`)
    }
    const first = await published(a.locker, 'host-a')
    await shownInBoth(termPattern('nightly', 'host-a', first.token), 'host-a leads')
    b.locker('nightly', () => {})
    await etcd.waitKeys(`${prefix}/nightly/`, (kvs) => kvs.length === 2, 10000, 'both candidates')
    await singletonA.remove() // B takes over: a new leader and a new token
    const second = await published(b.locker, 'host-b')
    await shownInBoth(termPattern('nightly', 'host-b', second.token), 'host-b leads')
    await b.locker.singletons().nightly.remove()
    await text.waitLine(/^nightly: no leader$/, 10000, 'nobody leads')
    await until(() => stdout(text).length === 4 && stdout(json).length === 4, 10000, 'the last change in both')

    assert.deepStrictEqual(stdout(text).map((l) => l.replace(/ since .*,/, ',')), [
      'nightly: no leader', `nightly: led by host-a, token ${first.token}`, `nightly: led by host-b, token ${second.token}`, 'nightly: no leader'
    ])
    const objects = stdout(json).map((l) => JSON.parse(l))
    assert.deepStrictEqual(objects.map(({ leader, token }) => [leader, token]), [[null, null], ['host-a', first.token], ['host-b', second.token], [null, null]])
    assert.strictEqual(objects[1].since, first.since.toISOString())
    assert.strictEqual(objects[2].since, second.since.toISOString())
    for (const r of [text, json]) {
      assert.deepStrictEqual(r.lines.filter((l) => l.from === 'stderr'), [], `${r.label}: nothing on stderr`)
      r.proc.kill('SIGINT')
      assert.deepStrictEqual(await r.exited, { code: 0, signal: null }, r.label)
    }
  })

  it('--watch without --name: every election, then new ones too (listed again every 5 s); SIGTERM exits 0', async (t) => {
    const prefix = uniquePrefix('cliwatchall')
    const { runner } = scope(t)
    const { locker, lead } = testLocker(t, prefix, 'host-w')
    const alpha = await lead('alpha')
    const watch = runner('watch', ['status', '--hosts', etcd.endpoints[0], '--prefix', prefix, '--watch'])
    const alphaTerm = await locker.term('alpha')
    await watch.waitLine(termPattern('alpha', 'host-w', alphaTerm.token), 10000, 'alpha in the first listing')
    await lead('beta')
    const betaTerm = await locker.term('beta')
    // Found by the next listing: within 5 s, and some margin on a loaded machine.
    await watch.waitLine(termPattern('beta', 'host-w', betaTerm.token), 9000, 'beta, a new name')
    await alpha.remove()
    await watch.waitLine(/^alpha: no leader$/, 10000, 'alpha: nobody leads')
    const out = watch.lines.filter((l) => l.from === 'stdout').map((l) => l.line)
    assert.strictEqual(out.length, 3, out.join('\n'))
    assert.deepStrictEqual(watch.lines.filter((l) => l.from === 'stderr'), [])
    watch.proc.kill('SIGTERM')
    assert.deepStrictEqual(await watch.exited, { code: 0, signal: null })
  })

  it('--watch while etcd does not answer: one line on stderr per kind of error, not one per retry or name; the watch goes on', async (t) => {
    const prefix = uniquePrefix('cliwatchdown')
    const proxy = await startProxy(etcd.endpoints[0])
    t.after(() => proxy.close())
    const { runner } = scope(t)
    const { locker, lead } = testLocker(t, prefix, 'host-d')
    await lead('alpha')
    await lead('beta')
    const watch = runner('watch', ['status', '--hosts', proxy.endpoint, '--prefix', prefix, '--watch'])
    await watch.waitLine(/^beta: led by host-d /, 10000, 'the first listing')
    proxy.mode('reset')
    const first = await watch.waitLine(/^locked: /, 15000, 'an error on stderr')
    // Two observers and the listing every 5 s keep failing meanwhile (each observer reports
    // every 5 s): without the grouping, this window has more lines than kinds of errors.
    await quietWindow(7000)
    const errors = watch.lines.filter((l) => l.from === 'stderr').map((l) => l.line)
    t.diagnostic(`stderr during the outage: ${JSON.stringify(errors)}`)
    assert.match(first.line, /^locked: ETCD_UNAVAILABLE: /)
    const codes = errors.map((l) => /^locked: ([A-Z_]+): /.exec(l)?.[1])
    assert.ok(codes.every(Boolean), errors.join('\n'))
    assert.strictEqual(new Set(codes).size, codes.length, `one line per kind of error:\n${errors.join('\n')}`)
    proxy.mode('pass')
    const gamma = await lead('gamma')
    await watch.waitLine(termPattern('gamma', 'host-d', (await locker.term('gamma')).token), 15000, 'a new name after the outage')
    await gamma.remove()
    await watch.waitLine(/^gamma: no leader$/, 10000, 'a change after the outage')
    watch.proc.kill('SIGTERM')
    assert.deepStrictEqual(await watch.exited, { code: 0, signal: null })
  })
})

// A PATH without setpriv, as on Alpine or distroless images: `locked run` runs the command under
// lib/wrapper.js. Every program the tests start there is named by its full path.
function noSetprivEnv (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'locked-nosetpriv-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  return { PATH: dir }
}

// The supervised command of the tests below: records its pid in `dir` (for the cleanup), then
// appends `start PID MS` and `tick PID MS` lines (wall-clock milliseconds) to `log` every 20 ms.
const TICKER = `const fs = require('node:fs')
  const [log, dir, onTerm] = process.argv.slice(1)
  fs.writeFileSync(dir + '/' + process.pid, '')
  const write = (what) => fs.appendFileSync(log, what + ' ' + process.pid + ' ' + Date.now() + '\\n')
  process.on('SIGTERM', () => { console.log('child-term', process.pid); if (onTerm === 'exit') process.exit(0) })
  write('start')
  console.log('child-start', process.pid, process.env.LOCKED_TOKEN)
  setInterval(() => write('tick'), 20)`
function ticker (log, dir, onTerm = 'exit') {
  return [process.execPath, '-e', TICKER, log, dir, onTerm]
}

// The parent of a process, from /proc.
function parentOf (pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
}

describe('locked run without setpriv', { timeout: 60000 }, () => {
  for (const guardian of [false, true]) {
    const ttl = guardian ? 10 : TTL
    it(`${guardian ? '--guardian, ttl 10' : `ttl ${TTL}`}: SIGKILL of the leading runner kills its command within 1 s; the other runner starts its own ${guardian ? 'at once' : 'after the TTL'}, never while the first runs`, async (t) => {
      const prefix = uniquePrefix(guardian ? 'cliwrapg' : 'cliwrap')
      const { dir, runner } = scope(t)
      const env = noSetprivEnv(t)
      const log = path.join(dir, '..', `${path.basename(dir)}.log`)
      t.after(() => fs.rmSync(log, { force: true }))
      const args = ['run', '--hosts', etcd.endpoints.join(','), '--name', 'nightly', '--prefix', prefix, '--ttl', String(ttl), ...(guardian ? ['--guardian'] : []), '--', ...ticker(log, dir)]
      const a = runner('A', args, env)
      const pidA = Number((await a.waitLine(/^child-start/, 10000, 'A child start')).line.split(' ')[1])
      // The command runs under the wrapper, which runs under the runner.
      const wrapper = parentOf(pidA)
      assert.notStrictEqual(wrapper, a.proc.pid, 'a wrapper between the runner and its command')
      assert.match(fs.readFileSync(`/proc/${wrapper}/cmdline`, 'utf8'), /lib\/wrapper\.js\0--\0/)
      assert.strictEqual(parentOf(wrapper), a.proc.pid)
      const b = runner('B', args, env)
      await etcd.waitKeys(`${prefix}/nightly/`, (kvs) => kvs.length === 2, 10000, 'both candidates')
      if (guardian) await statusUntil(prefix, (info) => info.leader !== null, 'A leads') // see the --guardian test above

      const killed = Date.now()
      a.proc.kill('SIGKILL')
      await until(() => !pidAlive(pidA), 5000, 'A\'s command gone')
      const goneMs = Date.now() - killed
      const pidB = Number((await b.waitLine(/^child-start/, ttl * 1000 + 5000, 'B child start')).line.split(' ')[1])
      const lines = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split(' ')).map(([what, pid, ms]) => ({ what, pid: Number(pid), ms: Number(ms) }))
      const lastA = Math.max(...lines.filter((l) => l.pid === pidA).map((l) => l.ms))
      const startB = lines.find((l) => l.pid === pidB && l.what === 'start').ms
      t.diagnostic(`after the SIGKILL of A: A's command last wrote at ${lastA - killed} ms and was gone by ${goneMs} ms; B's started at ${startB - killed} ms`)
      assert.ok(goneMs < 1000, `A's command gone after ${goneMs} ms`)
      assert.ok(lastA < startB, `A's command wrote at ${lastA}, after B's started at ${startB}`)
      assert.ok(lines.filter((l) => l.pid !== pidA && l.pid !== pidB).length === 0, 'no third command')
      if (guardian) assert.ok(startB - killed < 3000, `B started ${startB - killed} ms after the SIGKILL, with the guardian (ttl 10 s)`)
      else assert.ok(startB - killed > 1000 * ttl / 3, `B started ${startB - killed} ms after the SIGKILL: not before A's lease could expire`)
      b.proc.kill('SIGTERM')
      assert.strictEqual((await b.exited).code, 143)
    })
  }

  it('SIGTERM reaches the command through the wrapper, then SIGKILL after --grace; exit codes pass through; a missing command exits 127', async (t) => {
    const prefix = uniquePrefix('cliwrapterm')
    const { dir, runner } = scope(t)
    const env = noSetprivEnv(t)
    const log = path.join(dir, '..', `${path.basename(dir)}.log`)
    t.after(() => fs.rmSync(log, { force: true }))
    const base = ['run', '--hosts', etcd.endpoints[0], '--prefix', prefix, '--grace', '500ms']
    const a = runner('A', [...base, '--name', 'stubborn', '--', ...ticker(log, dir, 'ignore')], env)
    const pid = Number((await a.waitLine(/^child-start/, 10000, 'the command starts')).line.split(' ')[1])
    const sent = Date.now()
    a.proc.kill('SIGTERM')
    await a.waitLine(new RegExp(`^child-term ${pid}$`), 5000, 'the command gets SIGTERM')
    assert.strictEqual((await a.exited).code, 143)
    const waited = Date.now() - sent
    assert.ok(!pidAlive(pid), 'the command is gone when the runner exits')
    assert.ok(waited >= 450, `the runner waited --grace before the SIGKILL (${waited} ms)`)

    const seven = runner('exit 7', [...base, '--name', 'seven', '--', process.execPath, '-e', 'process.exit(7)'], env)
    const killed = runner('SIGKILL', [...base, '--name', 'killed', '--', process.execPath, '-e', 'process.kill(process.pid, "SIGKILL")'], env)
    const missing = runner('missing', [...base, '--name', 'missing', '--', path.join(dir, 'no-such-command')], env)
    assert.strictEqual((await seven.exited).code, 7)
    assert.strictEqual((await killed.exited).code, 137)
    assert.strictEqual((await missing.exited).code, 127)
    assert.ok(missing.has(/^locked: cannot run .*no-such-command: .*ENOENT/), missing.lines.map((l) => l.line).join('\n'))
  })

  it('the wrapper killed on its own (the OOM killer may pick it): the runner kills the command and counts it ended only once it is gone', async (t) => {
    const prefix = uniquePrefix('cliwrapkill')
    const { dir, runner } = scope(t)
    const env = noSetprivEnv(t)
    const log = path.join(dir, '..', `${path.basename(dir)}.log`)
    t.after(() => fs.rmSync(log, { force: true }))
    const a = runner('A', ['run', '--hosts', etcd.endpoints[0], '--prefix', prefix, '--name', 'nightly', '--', ...ticker(log, dir)], env)
    const pid = Number((await a.waitLine(/^child-start/, 10000, 'the command starts')).line.split(' ')[1])
    process.kill(parentOf(pid), 'SIGKILL')
    await a.waitLine(/^locked: the wrapper of .* died \(SIGKILL\); killing /, 5000, 'the runner notices')
    const { code } = await a.exited
    assert.ok(!pidAlive(pid), 'the command is gone when the runner exits')
    assert.strictEqual(code, 137, 'the command ended by SIGKILL')
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [], 'resigned')
  })
})
