#!/usr/bin/env node
'use strict'
// Benchmarks `locked` against the npm `etcd3` package's Election on one throwaway local etcd
// against the project's performance targets (bench/README.md lists them). Usage:
//
//   npm run bench                 # full run (~17.5 min on 2 cores), writes bench/results.md
//   npm run bench:quick           # every scenario once, small sizes (CI smoke check, < 2 min)
//   node bench/run.js --only=handoff,crash   # a subset (floor, first, handoff, crash, guardian, pause, scale, balance)
//   node bench/run.js --out=path.md          # write the table elsewhere
//
// The full run writes bench/results.md and the summary table of docs/benchmarks.md (between its
// bench:summary markers); both name the commit measured and whether the working tree differed
// from it. Quick and partial runs write under bench/.tmp/ only, never over the real results.
//
// Exit code 1 if a scenario failed to run or left a number of the table unmeasured (missed
// targets do not fail the run: absolute and even relative numbers are noisy on shared machines).

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { Etcd3 } = require('etcd3')

const { startEtcd, etcdVersion } = require('./etcd')
const scenarios = require('./scenarios')
const { summarize, fmtNum, fmtSummary, fmtRatio, fmtBytes, table } = require('./stats')

const LIBS = ['locked', 'etcd3']
const ALL = ['floor', 'first', 'handoff', 'crash', 'guardian', 'pause', 'scale', 'balance']
// Crash rounds per library. Beyond the lease, a crash failover is mostly etcd's reaping, which
// lands anywhere in its 500 ms tick, and the target compares two p90s of it within 20 ms. With
// the library's parts as measured and the reaping uniform over the tick, the difference of the
// two p90s varies from run to run with a standard deviation of about 53 ms over 20 rounds, 22 ms
// over 100 and 15 ms over 200: a library 8 ms faster than etcd3 would be judged to miss in 29%,
// 10% and 3% of runs. Each round waits out the TTL, and the rounds of a batch are spaced a tick
// apart (see crashFailover), so 200 rounds take about 3.5 minutes per library.
const CRASH_ROUNDS = 200

function parseArgs (argv) {
  const args = { quick: false, only: ALL, out: null }
  for (const arg of argv) {
    if (arg === '--quick') args.quick = true
    else if (arg.startsWith('--only=')) args.only = arg.slice(7).split(',').filter(Boolean)
    else if (arg.startsWith('--out=')) args.out = arg.slice(6)
    else if (arg === '--help' || arg === '-h') {
      console.log(`usage: node bench/run.js [--quick] [--only=${ALL.join(',')}] [--out=file.md]`)
      process.exit(0)
    } else {
      console.error(`unknown argument ${arg}`)
      process.exit(2)
    }
  }
  for (const s of args.only) {
    if (!ALL.includes(s)) {
      console.error(`unknown scenario ${s}; known: ${ALL.join(', ')}`)
      process.exit(2)
    }
  }
  args.full = !args.quick && args.only === ALL
  if (!args.out) {
    args.out = args.full
      ? path.join(__dirname, 'results.md')
      : path.join(__dirname, '.tmp', args.quick ? 'results-quick.md' : 'results-partial.md')
  }
  // Only the full run, written where the docs say the results are, updates docs/benchmarks.md.
  args.readme = args.full && path.resolve(args.out) === path.join(__dirname, 'results.md')
  return args
}

const ROOT = path.join(__dirname, '..')
// What the published package holds (package.json "files": files and folders), plus the binary
// built here.
const PACKAGE_FILES = require('../package.json').files.map((f) => f.replace(/^\.\//, ''))
const NATIVE = 'locked.linux-x64-gnu.node'
const ADDON_FILES = [...PACKAGE_FILES, NATIVE]

/**
 * Copies the package (folders whole) and the .node into bench/.tmp, so that every host of this
 * run loads the same build even if someone rebuilds the working tree meanwhile. Only the package's
 * own files: a host that needs anything else from the working tree fails here, as it would once
 * published.
 */
function snapshotAddon () {
  const dir = path.join(__dirname, '.tmp', `addon-${process.pid}`)
  fs.mkdirSync(dir, { recursive: true })
  for (const file of ADDON_FILES) {
    const from = path.join(ROOT, file)
    if (fs.statSync(from).isDirectory()) fs.cpSync(from, path.join(dir, file), { recursive: true })
    else fs.copyFileSync(from, path.join(dir, file))
  }
  process.on('exit', () => {
    try { fs.rmSync(dir, { recursive: true, force: true }) } catch {}
  })
  return dir
}

/** Whether `file` (a path relative to the repository) is, or lies in, what the snapshot copies. */
function inPackage (file) {
  return ADDON_FILES.some((f) => file === f || file.startsWith(f.replace(/\/?$/, '/')))
}

// Files whose changes change what is measured: the Rust core, the package's JavaScript, the bench.
function isMeasured (file) {
  return /^(src\/|bench\/.*\.js$|Cargo\.(toml|lock)$|build\.rs$|package\.json$)/.test(file) || inPackage(file)
}

/** The commit measured, and what in the working tree differs from it. */
function gitState () {
  const git = (...a) => execFileSync('git', a, { cwd: ROOT, encoding: 'utf8', timeout: 5000 })
  const state = { commit: 'unknown', date: '', changed: [] }
  try {
    state.commit = git('rev-parse', '--short', 'HEAD').trim()
    state.date = git('log', '-1', '--format=%cI').trim()
    // Porcelain lines are 'XY path' (renames 'XY old -> new'); untracked files count too.
    state.changed = git('status', '--porcelain', '--untracked-files=all').split('\n').filter(Boolean)
      .map((line) => line.slice(3).replace(/^.* -> /, ''))
  } catch {}
  state.measuredChanged = state.changed.filter(isMeasured)
  return state
}

// long: for results.md; short: for the README's one sentence.
function describeGit (g, { long = true } = {}) {
  if (g.commit === 'unknown') return 'an unknown commit (git not available)'
  const at = `commit ${g.commit}${long && g.date ? ` (${g.date})` : ''}`
  const list = (files) => files.slice(0, 6).join(', ') + (files.length > 6 ? `, … (${files.length} files)` : '')
  if (!long) {
    if (g.changed.length === 0) return at
    if (g.measuredChanged.length === 0) return `${at} (uncommitted changes only in files that do not affect the numbers: ${list(g.changed)})`
    return `${at} WITH UNCOMMITTED CHANGES to ${list(g.measuredChanged)}`
  }
  if (g.changed.length === 0) return `${at}, working tree clean`
  const others = g.changed.length - g.measuredChanged.length
  if (g.measuredChanged.length === 0) return `${at}; the working tree differs only in files not measured (${others}: ${list(g.changed)})`
  return `${at} WITH UNCOMMITTED CHANGES to measured files (${list(g.measuredChanged)})` + (others ? ` and ${others} other file${others === 1 ? '' : 's'}` : '')
}

/** The addon as built in the working tree, and whether a source file is newer than it. */
function addonState () {
  const file = path.join(ROOT, NATIVE)
  let st
  try { st = fs.statSync(file) } catch { return `${NATIVE} not found` }
  const mb = st.size / (1024 * 1024)
  let text = `${NATIVE}, ${mb.toFixed(1)} MB${mb > 15 ? ' (size of a debug build: numbers not representative)' : ' (release build)'}, built ${st.mtime.toISOString()}`
  const sources = ['Cargo.toml', 'Cargo.lock', 'build.rs']
  const walk = (dir) => {
    for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name)
      if (e.isDirectory()) walk(rel)
      else sources.push(rel)
    }
  }
  try { walk('src') } catch {}
  let newest = null
  for (const rel of sources) {
    try {
      const m = fs.statSync(path.join(ROOT, rel)).mtimeMs
      if (!newest || m > newest.m) newest = { rel, m }
    } catch {}
  }
  if (newest && newest.m > st.mtimeMs) text += ` — OLDER THAN ${newest.rel} (changed ${new Date(newest.m).toISOString()}): not rebuilt since`
  return text
}

function machine () {
  let cpu = 'unknown'
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))
    if (m) cpu = m[1].trim()
  } catch {}
  let etcd3Version = 'unknown'
  try {
    etcd3Version = require('etcd3/package.json').version
  } catch {}
  return {
    nproc: os.availableParallelism ? os.availableParallelism() : os.cpus().length,
    cpu,
    memGB: (os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    etcd: etcdVersion(),
    etcd3Version,
    git: gitState(),
    addon: addonState(),
    date: new Date().toISOString(),
    loadavg: os.loadavg().map((x) => x.toFixed(2)).join(' ')
  }
}

// ---- running ---------------------------------------------------------------------------------

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const started = Date.now()
  // Read before the snapshot, so the state recorded is the state measured.
  const info = machine()
  const lockedPath = snapshotAddon()
  const log = (...a) => console.error(`[bench ${((Date.now() - started) / 1000).toFixed(1)}s]`, ...a)
  log(`${args.quick ? 'quick' : 'full'} run: ${args.only.join(', ')}`)

  const etcd = await startEtcd()
  log(`etcd ${info.etcd} on ${etcd.endpoint} (data in ${etcd.dir})`)
  const admin = new Etcd3({ hosts: `http://${etcd.endpoint}` })
  const ctx = {
    etcd,
    admin,
    quick: args.quick,
    lockedPath,
    log,
    // The same cap for both libraries; a size that does not finish in time is reported so.
    capMs: (lib, n) => (args.quick ? 30000 : n >= 100000 ? 120000 : n >= 10000 ? 60000 : 30000)
  }
  const results = { floor: null, first: {}, handoff: {}, crash: {}, guardian: { ttl10: {} }, pause: {}, scale: [], balance: null }
  const failures = []

  async function attempt (label, fn) {
    const t = Date.now()
    try {
      const clean = await scenarios.cleanEtcd(ctx)
      log(`${label}: etcd compacted at revision ${clean.revision}${clean.leases ? `, ${clean.leases} lease(s) left by earlier scenarios revoked` : ''}`)
      const r = await fn()
      log(`${label}: done in ${((Date.now() - t) / 1000).toFixed(1)} s`)
      return r
    } catch (err) {
      log(`${label}: FAILED: ${err.stack || err}`)
      failures.push(`${label}: ${err.message}`)
      return null
    }
  }

  try {
    if (args.only.includes('floor')) results.floor = await attempt('floor', () => scenarios.floor(ctx))
    if (args.only.includes('first')) {
      for (const lib of LIBS) results.first[lib] = await attempt(`first election ${lib}`, () => scenarios.firstElection(ctx, lib))
    }
    if (args.only.includes('handoff')) {
      for (const lib of LIBS) results.handoff[lib] = await attempt(`handoff ${lib}`, () => scenarios.handoff(ctx, lib))
      const load = args.quick ? 100 : 10000
      results.handoffLoaded = await attempt(`handoff locked, ${load} other names leading`, () => scenarios.handoffUnderLoad(ctx, load))
      results.handover = await attempt('handover locked', () => scenarios.handover(ctx))
    }
    if (args.only.includes('crash')) {
      for (const lib of LIBS) results.crash[lib] = await attempt(`crash failover ${lib}`, () => scenarios.crashFailover(ctx, lib, { rounds: args.quick ? 1 : CRASH_ROUNDS, parallel: args.quick ? 1 : 10 }))
    }
    if (args.only.includes('guardian')) {
      const many = args.quick ? 50 : 1000
      results.guardian.one = await attempt('crash failover with guardian, 1 name', () => scenarios.crashGuardian(ctx, 1))
      results.guardian.many = await attempt(`crash failover with guardian, ${many} names`, () => scenarios.crashGuardian(ctx, many))
      // The same TTL without a guardian, for both libraries: each round waits out the TTL, so
      // fewer rounds, five pairs at a time.
      for (const lib of LIBS) {
        results.guardian.ttl10[lib] = await attempt(`crash failover ${lib}, TTL ${scenarios.GUARDIAN_TTL} s, no guardian`,
          () => scenarios.crashFailover(ctx, lib, { ttl: scenarios.GUARDIAN_TTL, rounds: args.quick ? 1 : 10, parallel: 5 }))
      }
    }
    if (args.only.includes('pause')) {
      for (const lib of LIBS) results.pause[lib] = await attempt(`pause ${lib}`, () => scenarios.pause(ctx, lib))
    }
    if (args.only.includes('scale')) {
      const sizes = args.quick ? [1, 50] : [1, 100, 1000, 10000, 100000]
      const withCompetitor = args.quick ? [50] : [1000, 10000, 100000]
      for (const n of sizes) {
        // etcd3 needs a lease, a keepalive stream and a watch per name: at 10 000 names it does
        // not finish queueing a competitor within a minute, so 100 000 is locked's alone.
        for (const lib of n > 10000 ? ['locked'] : LIBS) {
          const r = await attempt(`idle/scale ${lib} ${n}`, () => scenarios.idleAndScale(ctx, lib, n, withCompetitor.includes(n)))
          if (r) results.scale.push(r)
        }
      }
    }
    if (args.only.includes('balance')) results.balance = await attempt('balance locked', () => scenarios.balance(ctx))
  } finally {
    admin.close()
    await etcd.stop()
  }

  for (const gap of gaps(results, args)) {
    log(`incomplete: ${gap}`)
    failures.push(`not measured: ${gap}`)
  }
  const seconds = (Date.now() - started) / 1000
  const markdown = render(results, info, args, seconds, failures)
  console.log(markdown)
  fs.mkdirSync(path.dirname(args.out), { recursive: true })
  fs.writeFileSync(args.out, markdown)
  log(`written to ${path.relative(process.cwd(), args.out) || args.out} (${seconds.toFixed(0)} s)`)
  if (args.readme) {
    if (failures.length) log('docs/benchmarks.md not updated: the run is incomplete')
    else if (updateReadme(renderSummary(results, info))) log('docs/benchmarks.md: summary table updated')
    else failures.push('docs/benchmarks.md: no bench:summary markers to write the summary between')
  }
  if (failures.length) log(`${failures.length} problem(s):\n  ${failures.join('\n  ')}`)
  return failures.length === 0 ? 0 : 1
}

// ---- completeness: a run that leaves a number of the table unmeasured fails ---------------------

/**
 * What the table would show as missing, for every scenario that ran. locked must produce every
 * number; etcd3 not finishing in time (a scale size, a paused leader that never stops) is itself
 * a measurement, shown in the table as such.
 */
function gaps (results, args) {
  const out = []
  const empty = (values) => !Array.isArray(values) || values.filter(Number.isFinite).length === 0
  const want = (cond, what) => { if (cond) out.push(what) }
  if (args.only.includes('balance')) want(!results.balance || results.balance.steps.length !== 5, 'balance: the five steps')
  if (args.only.includes('floor') && results.floor) {
    want(empty(results.floor.deleteToEvent), 'floor: delete → watch event')
    want(empty(results.floor.deleteRoundTrip), 'floor: delete round trip')
  }
  for (const lib of LIBS) {
    const first = results.first[lib]
    if (first) for (const k of ['warm', 'fresh', 'freshFromSpawn']) want(empty(first[k]), `first election ${lib}: ${k}`)
    if (results.handoff[lib]) want(empty(results.handoff[lib].handoff), `handoff ${lib}`)
    if (results.crash[lib]) want(empty(results.crash[lib].failover), `crash failover ${lib}`)
    const t10 = results.guardian.ttl10[lib]
    if (t10) want(empty(t10.failover), `crash failover ${lib}, TTL ${t10.ttlMs / 1000} s, no guardian`)
    const pause = results.pause[lib]
    if (pause) {
      want(empty(pause.takeover), `pause ${lib}: takeover`)
      if (lib === 'locked') want(empty(pause.resumeToStop), `pause ${lib}: the old leader's stop after SIGCONT (${pause.noStop} of ${pause.rounds} never stopped)`)
    }
  }
  if (args.only.includes('handoff')) {
    want(empty(results.handoffLoaded?.handoff), 'handoff of one name among many leading')
    want(empty(results.handover?.next), 'handover() to the next in line')
    want(empty(results.handover?.past2), 'handover() past two candidates')
  }
  for (const g of [results.guardian.one, results.guardian.many]) {
    if (!g) continue
    const label = `crash failover with guardian, ${g.n} name${g.n === 1 ? '' : 's'}`
    want(empty(g.first), `${label}: first start`)
    want(empty(g.last), `${label}: last start`)
    want(empty(g.guardianRss), `${label}: guardian RSS`)
  }
  for (const r of results.scale) {
    if (r.lib !== 'locked') continue
    const label = `scale ${r.lib} ${r.n}`
    const unfinished = r.didNotFinish || r.competitorDidNotFinish || r.takeoverDidNotFinish
    if (unfinished) out.push(`${label}: ${unfinished}`)
    else want(!r.idle, `${label}: idle window`)
  }
  return out
}

// ---- rendering -------------------------------------------------------------------------------

/** 'Txn 3, Range 1' from { Txn: 3, Range: 1 }, largest first. */
function fmtMethods (byMethod) {
  const list = Object.entries(byMethod).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1])
  return list.length ? list.map(([m, v]) => `${m} ${fmtNum(v)}`).join(', ') : 'none'
}

/** '4 etcd requests (Txn 4)' from { Txn: 4 }. */
function fmtRequests (byMethod) {
  const total = Object.values(byMethod).reduce((a, b) => a + b, 0)
  return `${fmtNum(total)} etcd request${total === 1 ? '' : 's'} (${fmtMethods(byMethod)})`
}

/** The guardian's memory over every round of both sizes: 'min / median / max MB (RssAnon …)'. */
function guardianMemory (g) {
  const all = (key) => [g.one, g.many].flatMap((r) => r?.[key] ?? [])
  const mb = (values) => {
    const s = summarize(values)
    return s ? `${[s.min, s.median, s.max].map((x) => fmtNum(x / 2 ** 20)).join(' / ')} MB` : null
  }
  const rss = mb(all('guardianRss'))
  if (!rss) return null
  const anon = mb(all('guardianRssAnon'))
  return `${rss}${anon ? ` (${anon})` : ''}, min / median / max, n=${all('guardianRss').length}`
}

const med = (values) => summarize(values || [])?.median
const p90 = (values) => summarize(values || [])?.p90
const pick = (obj, lib, key) => obj[lib]?.[key]

function render (results, info, args, seconds, failures) {
  const out = []
  const cmd = args.quick ? 'npm run bench:quick' : (args.only === ALL ? 'npm run bench' : `node bench/run.js ${process.argv.slice(2).join(' ')}`)
  out.push(`# locked vs etcd3: benchmark results${args.quick ? ' (quick mode: one round each, small sizes, not for comparison)' : ''}`)
  out.push('')
  out.push(`Command: \`${cmd}\` (${(seconds / 60).toFixed(1)} min). One throwaway single-member etcd on loopback (data dir on tmpfs), compacted before each scenario, leftover leases revoked; ` +
    'every competing host a separate Node process; times from `process.hrtime.bigint()` (CLOCK_MONOTONIC, one clock for all processes). ' +
    'Cells are min / median / p90 / max; ratios compare medians.')
  out.push('')
  out.push(`- Machine: ${info.nproc} CPUs (${info.cpu}), ${info.memGB} GB RAM, load average at start ${info.loadavg} (a shared machine: other work may run meanwhile)`)
  out.push(`- Node ${info.node}; etcd ${info.etcd}; npm etcd3 ${info.etcd3Version}; run ${info.date}`)
  out.push(`- locked at ${describeGit(info.git)}`)
  out.push(`- ${info.addon}`)
  out.push('')

  // Latencies
  const fl = results.floor
  const floorMedian = med(fl?.deleteToEvent)
  const rows = []
  const both = (label, get, { ratio = true } = {}) => {
    const a = get('locked')
    const b = get('etcd3')
    rows.push([label, fmtSummary(summarize(a || [])), fmtSummary(summarize(b || [])), ratio ? fmtRatio(med(a), med(b)) : ''])
  }
  if (fl) {
    rows.push(['Floor: etcd delete → watch event (harness deletes, another process watches with etcd3)', fmtSummary(summarize(fl.deleteToEvent)), '(same etcd)', ''])
    rows.push(['Floor: delete round trip alone', fmtSummary(summarize(fl.deleteRoundTrip)), '(same etcd)', ''])
  }
  if (Object.keys(results.first).length) {
    both('First election, warm process: register → start', (l) => pick(results.first, l, 'warm'))
    both('First election, fresh process: new client + register → start', (l) => pick(results.first, l, 'fresh'))
    both('Fresh process, spawn → start (includes Node startup)', (l) => pick(results.first, l, 'freshFromSpawn'))
  }
  if (Object.keys(results.handoff).length) {
    both('Graceful handoff (3 hosts): leader remove() → next host start', (l) => pick(results.handoff, l, 'handoff'))
    const hl = results.handoffLoaded
    if (hl) rows.push([`Graceful handoff of one name while ${fmtNum(hl.load)} other names lead on the same locker (2 hosts, both candidates for all)`, fmtSummary(summarize(hl.handoff)), '(etcd3 cannot queue that many)', ''])
    if (floorMedian) {
      const ratio = (l) => med(pick(results.handoff, l, 'handoff')) / floorMedian
      rows.push(['Handoff median ÷ floor median', fmtRatio(ratio('locked'), 1), fmtRatio(ratio('etcd3'), 1), ''])
    }
    const perHandoff = (l) => {
      const r = pick(results.handoff, l, 'requestsPerHandoff')
      return r ? fmtMethods(r) : '–'
    }
    rows.push(['etcd requests per handoff round, by method (remove → start + 20 ms)', perHandoff('locked'), perHandoff('etcd3'), ''])
    const errs = (l) => pick(results.handoff, l, 'errors')
    if (errs('locked') || errs('etcd3')) rows.push(['Handoff: error events from the hosts', String(errs('locked') ?? '–'), String(errs('etcd3') ?? '–'), ''])
    const doubles = (l) => pick(results.handoff, l, 'doubleStarts')
    if (doubles('locked') || doubles('etcd3')) rows.push(['Handoff rounds with two hosts starting', String(doubles('locked') ?? '–'), String(doubles('etcd3') ?? '–'), ''])
  }
  const ho = results.handover
  if (ho) {
    const vsFloor = (v) => floorMedian ? ` (median ${fmtRatio(med(v), floorMedian)} the floor)` : ''
    rows.push(['`handover()` to the next in line (4 hosts): call → target\'s start', fmtSummary(summarize(ho.next)) + vsFloor(ho.next), '(no handover in etcd3)', ''])
    rows.push(['`handover(id)` of the last in line, past 2 candidates that step aside: call → target\'s start', fmtSummary(summarize(ho.past2)) + vsFloor(ho.past2), '(no handover in etcd3)', ''])
    if (ho.wrongStarts || ho.errors) rows.push(['Handover rounds where another host started / error events', `${ho.wrongStarts} / ${ho.errors}`, '', ''])
  }
  if (Object.keys(results.crash).length) {
    both('Crash failover, TTL 2 s: SIGKILL of leader → other host start', (l) => pick(results.crash, l, 'failover'))
    both('Crash failover − TTL', (l) => pick(results.crash, l, 'failover')?.map((x) => x - results.crash[l].ttlMs), { ratio: false })
    const part = (key) => (l) => pick(results.crash, l, 'parts')?.[key]
    both('… of which SIGKILL → lease expiry (last keepalive sent + TTL)', part('killToExpiry'), { ratio: false })
    both('… lease expiry → etcd deletes the key (etcd\'s reaping)', part('expiryToDeletion'), { ratio: false })
    both('… key deleted → other host start (the library)', part('deletionToStart'))
    both('Crash failover beyond the lease: lease expiry → other host start', part('beyondExpiry'), { ratio: false })
    const errs = (l) => pick(results.crash, l, 'errors')
    if (errs('locked') || errs('etcd3')) rows.push(['Crash failover: error events from the surviving host', String(errs('locked') ?? '–'), String(errs('etcd3') ?? '–'), ''])
  }
  const g = results.guardian
  if (g.one || g.many || Object.keys(g.ttl10).length) {
    const ttl = scenarios.GUARDIAN_TTL
    const pairs = Math.max(g.ttl10.locked?.parallel ?? 0, g.ttl10.etcd3?.parallel ?? 0)
    if (Object.keys(g.ttl10).length) {
      both(`Crash failover, TTL ${ttl} s, no guardian: SIGKILL of leader → other host start${pairs > 1 ? ` (${pairs} pairs at a time)` : ''}`, (l) => pick(g.ttl10, l, 'failover'))
    }
    const vsEtcd3 = (values) => fmtRatio(med(values), med(g.ttl10.etcd3?.failover))
    if (g.one) rows.push([`Crash failover, TTL ${ttl} s, locked with \`guardian: true\`: SIGKILL of leader → other host start`, fmtSummary(summarize(g.one.first)), '(has no guardian: the row above)', vsEtcd3(g.one.first)])
    if (g.many) {
      rows.push([`Same, ${fmtNum(g.many.n)} names on the killed leader: SIGKILL → the successor's first start`, fmtSummary(summarize(g.many.first)), '(no guardian)', vsEtcd3(g.many.first)])
      rows.push([`Same, ${fmtNum(g.many.n)} names: SIGKILL → the successor's last start (all ${fmtNum(g.many.n)} led again)`, fmtSummary(summarize(g.many.last)), '(no guardian)', vsEtcd3(g.many.last)])
    }
    const mem = guardianMemory(g)
    if (mem) rows.push(['Guardian process memory just before the kill: VmRSS (RssAnon, its own anonymous memory)', mem, '–', ''])
    const errors = [g.one, g.many].reduce((n, r) => n + (r?.errors ?? 0), 0)
    if (errors) rows.push(['Crash failover with guardian: error events from both hosts', String(errors), '–', ''])
  }
  if (Object.keys(results.pause).length) {
    both('Pause 4 s (SIGSTOP), TTL 2 s: SIGSTOP → other host start', (l) => pick(results.pause, l, 'takeover'))
    both('Pause: SIGCONT → old leader\'s stop event', (l) => pick(results.pause, l, 'resumeToStop'))
    both('Pause: two hosts believe they lead (other host start → old leader stop)', (l) => pick(results.pause, l, 'overlap'))
    const frac = (l) => {
      const r = results.pause[l]
      if (!r) return '–'
      return `${r.stillLeadingAtFirstTick} of ${r.rounds}` + (r.noStop ? `; ${r.noStop} never stopped within 10 s` : '')
    }
    const fracCheck = (l) => {
      const r = results.pause[l]
      return r ? `${r.checkSaysLeadingAtFirstTick} of ${r.rounds}` : '–'
    }
    rows.push(['Pause: old leader still thinks it leads at its first timer tick after SIGCONT', frac('locked'), frac('etcd3'), ''])
    rows.push(['Pause: the synchronous check at that tick says it leads (locked: isLeader(); etcd3 has none, so its event state)', fracCheck('locked'), fracCheck('etcd3'), ''])
  }
  if (rows.length) {
    out.push('## Latency')
    out.push('')
    out.push(table(['Measure', 'locked', 'etcd3', 'locked / etcd3'], rows))
    out.push('')
  }

  // Idle cost
  const scale = results.scale
  if (scale.length) {
    out.push('## Idle cost (one host, TTL 5 s, all singletons leading)')
    out.push('')
    const idleRows = scale.map((r) => {
      if (!r.idle) return [fmtNum(r.n), r.lib, r.didNotFinish || 'not measured', '', '', '', '', '', '', '']
      const i = r.idle
      const methods = fmtMethods(i.perMethod)
      return [fmtNum(r.n), r.lib, fmtNum(i.requestsPerSecond), methods || 'none', `${fmtNum(i.hostCpuPercent)} %`, `${fmtNum(i.etcdCpuPercent)} %`,
        fmtBytes(i.rss), fmtNum(i.leases), fmtNum(i.keepAliveStreams), `${fmtNum(i.grpcWatchStreams)} / ${fmtNum(i.watchers)}`]
    })
    out.push(table(['Singletons', 'Library', 'etcd requests/s', 'by gRPC method (msgs/s)', 'host CPU (1 core = 100 %)', 'etcd CPU', 'host RSS',
      'leases', 'keepalive streams', 'watch streams / watchers'], idleRows))
    out.push('')
    out.push(`Requests are gRPC messages received by etcd (\`grpc_server_msg_received_total\`, every keepalive on a stream counts) over a ${scale.find((r) => r.idle)?.idle.seconds.toFixed(0) ?? '?'} s idle window; ` +
      'leases from LeaseLeases, streams open from `grpc_server_started_total − grpc_server_handled_total`, watchers from `etcd_debugging_mvcc_watcher_total`, all relative to before the host started.')
    out.push('')

    out.push('## Scale (one process registers N names; then a competitor queues on all of them and the first host closes)')
    out.push('')
    const scaleRows = scale.map((r) => [fmtNum(r.n), r.lib,
      r.allStarted !== undefined ? `${fmtNum(r.allStarted)} ms` : r.didNotFinish,
      r.rssGrowth !== undefined ? `${fmtBytes(r.rssGrowth)} (${fmtNum(r.rssGrowth / r.n / 1024)} KB/name)` : '–',
      r.close !== undefined ? `${fmtNum(r.close)} ms` : (r.competitorDidNotFinish || '–'),
      r.takeoverFirst !== undefined ? `${fmtNum(r.takeoverFirst)} ms` : '–',
      r.takeover !== undefined ? `${fmtNum(r.takeover)} ms` : (r.takeoverDidNotFinish || '–'),
      r.errors ? `${fmtNum(r.errors)}: "${r.firstError}"${r.recampaigns ? `; ${fmtNum(r.recampaigns)} campaigns retried after 5 s` : ''}` : '0'])
    out.push(table(['Names', 'Library', 'all started', 'RSS growth', 'close()', 'close() → competitor started the first', 'close() → competitor started on all', 'error events (first message)'], scaleRows))
    out.push('')
    const reqRows = scale.filter((r) => r.startupRequests && r.n > 1).map((r) => {
      const total = Object.values(r.startupRequests).reduce((a, b) => a + b, 0)
      return [fmtNum(r.n), r.lib, fmtNum(total), fmtNum(total / r.n), fmtMethods(r.startupRequests)]
    })
    if (reqRows.length) {
      out.push('etcd requests from register until all started (gRPC messages received by etcd; the harness sends none in that window):')
      out.push('')
      out.push(table(['Names', 'Library', 'requests', 'per name', 'by method'], reqRows))
      out.push('')
    }
  }

  const bal = results.balance
  if (bal) {
    out.push(`## Balance (locked only: ${fmtNum(bal.names)} names, \`balance: true\`, minTermMs ${fmtNum(bal.minTermMs)}, TTL ${bal.ttl} s)`)
    out.push('')
    out.push(table(['Step', 'settled after', 'shares (N/M = fair)', 'share range / fair', 'names moved', 'fewest possible', 'moved / fewest', 'moves in the quiet after'],
      bal.steps.map((s) => [s.label, `${fmtNum(s.settleMs)} ms`, `${s.shares.join(' / ')} (${fmtNum(s.fair)})`,
        `${fmtNum(Math.min(...s.shares) / s.fair)}–${fmtNum(Math.max(...s.shares) / s.fair)}`, String(s.moves), String(s.minimum),
        s.minimum ? fmtRatio(s.moves, s.minimum) : '–', `${s.movesAfter} in ${s.quietMs / 1000} s`])))
    out.push('')
    out.push('Settled: every name has a leader and no start or stop came for minTermMs + 2 s; the time is that of the step\'s last start. ' +
      'A move is a start on another locker than the name\'s leader before the step; the fewest possible are the names the joiner leads after the step, or the names the killed locker led. ' +
      'The next in line of a killed leader\'s name, once elected, passes the lead on to the survivor balancing picks before its work starts, so such a name moves once.')
    out.push('')
  }

  const targets = judgeTargets(results)
  if (args.quick) {
    out.push('## Findings')
    out.push('')
    out.push('Quick mode: one round each at small sizes, so the targets are not judged. `npm run bench` judges them.')
    out.push('')
  } else if (targets.length || results.pause.locked || results.handoff.locked || results.guardian.one) {
    out.push('## Findings')
    out.push('')
    out.push('Generated from this run; the targets are listed in bench/README.md.')
    out.push('')
    if (targets.length) {
      const judged = targets.filter((t) => t.ok !== undefined)
      const missed = judged.filter((t) => !t.ok)
      out.push(`${judged.length - missed.length} of ${judged.length} targets met` +
        (missed.length ? `; missed: ${missed.map((t) => `${t.target} (${t.measured})`).join('; ')}.` : '.') +
        (judged.length < targets.length ? ` ${targets.length - judged.length} not measured in this run.` : ''))
      out.push('')
      out.push(table(['Target', 'Measured', 'Verdict'], targets.map((t) => [t.target, t.measured, t.ok === undefined ? 'not measured' : t.ok ? 'met' : 'MISSED'])))
      out.push('')
    }
    for (const line of observations(results)) out.push(`- ${line}`)
    out.push('')
  }
  if (failures.length) {
    out.push('## Problems of this run (exit code 1)')
    out.push('')
    for (const f of failures) out.push(`- ${f}`)
    out.push('')
  }
  return out.join('\n')
}

/** The targets (bench/README.md): [{ target, measured, ok (undefined when not measured) }]. */
function judgeTargets (results) {
  const targets = []
  const add = (target, measured, ok) => targets.push({ target, measured, ok })
  const floorMedian = med(results.floor?.deleteToEvent)
  const hl = med(results.handoff.locked?.handoff)
  const he = med(results.handoff.etcd3?.handoff)
  if (hl !== undefined) {
    add('Graceful handoff median ≤ 0.25 × etcd3\'s', `${fmtNum(hl)} ms vs ${fmtNum(he)} ms = ${fmtRatio(hl, he)}`, he !== undefined ? hl <= 0.25 * he : undefined)
    add('Graceful handoff median ≤ 3 × floor', `${fmtNum(hl)} ms vs floor ${fmtNum(floorMedian)} ms = ${fmtRatio(hl, floorMedian)}`, floorMedian !== undefined ? hl <= 3 * floorMedian : undefined)
  }
  const ho = results.handover
  if (ho) {
    for (const [label, values] of [['to the next in line', ho.next], ['past 2 candidates', ho.past2]]) {
      const m = med(values)
      add(`handover() ${label}: median ≤ 3 × floor, no other host starting`, `${fmtNum(m)} ms vs floor ${fmtNum(floorMedian)} ms = ${fmtRatio(m, floorMedian)}; ${ho.wrongStarts} wrong starts`,
        m !== undefined && floorMedian !== undefined ? m <= 3 * floorMedian && ho.wrongStarts === 0 : undefined)
    }
  }
  const loaded = results.handoffLoaded
  if (loaded) {
    // Like with like: the p90 of the handoff against the p90 of etcd's own delete → watch event.
    const lp = p90(loaded.handoff)
    const fp = p90(results.floor?.deleteToEvent)
    add(`Graceful handoff p90 with ${fmtNum(loaded.load)} other names leading ≤ 2 × floor p90`, `${fmtNum(lp)} ms vs floor p90 ${fmtNum(fp)} ms = ${fmtRatio(lp, fp)}`, lp !== undefined && fp !== undefined ? lp <= 2 * fp : undefined)
  }
  const cl = results.crash.locked
  if (cl) {
    const p = p90(cl.failover)
    const pe = p90(results.crash.etcd3?.failover)
    add('Crash failover p90 ≤ TTL + 0.6 s', `${fmtNum(p)} ms (TTL ${cl.ttlMs} ms; etcd3 ${fmtNum(pe)} ms)`, p !== undefined ? p <= cl.ttlMs + 600 : undefined)
    // Judged from the lease's expiry on, the time a library can lose: SIGKILL → start − TTL
    // adds where the kill fell in the keepalive period (up to TTL/3 either way), which is chance.
    const bp = p90(cl.parts?.beyondExpiry)
    const be = p90(results.crash.etcd3?.parts?.beyondExpiry)
    add('Crash failover beyond the lease (lease expiry → start), p90 ≤ etcd3\'s p90 + 20 ms', `${fmtNum(bp)} ms vs ${fmtNum(be)} ms (SIGKILL → start − TTL, p90: ${fmtNum(p - cl.ttlMs)} ms vs ${fmtNum(pe - cl.ttlMs)} ms)`, bp !== undefined && be !== undefined ? bp <= be + 20 : undefined)
    const lp = p90(cl.parts?.deletionToStart)
    const le = p90(results.crash.etcd3?.parts?.deletionToStart)
    add('Crash failover, the library\'s part (key deleted → start), p90 ≤ etcd3\'s p90 + 20 ms', `${fmtNum(lp)} ms vs ${fmtNum(le)} ms`, lp !== undefined && le !== undefined ? lp <= le + 20 : undefined)
  }
  const at = (lib, n) => results.scale.find((r) => r.lib === lib && r.n === n)
  const il = at('locked', 1000)
  const ie = at('etcd3', 1000)
  if (il) {
    const a = il.idle?.requestsPerSecond
    const b = ie?.idle?.requestsPerSecond
    add('Idle etcd requests/s with 1000 singletons ≤ 1/100 of etcd3\'s', `${fmtNum(a)}/s vs ${fmtNum(b)}/s = ${fmtRatio(a, b)}`, a !== undefined && b !== undefined ? a <= b / 100 : undefined)
    const s = il.allStarted
    const t = ie?.allStarted
    add('1000 names all started ≥ 10 × faster than etcd3', `${fmtNum(s)} ms vs ${fmtNum(t)} ms = ${s && t ? `${fmtNum(t / s)}× faster` : '–'}`, s !== undefined && t !== undefined ? t >= 10 * s : undefined)
    const ga = il.rssGrowth
    const gb = ie?.rssGrowth
    add('RSS growth for 1000 names ≤ 0.1 × etcd3\'s', `${fmtBytes(ga)} vs ${fmtBytes(gb)} = ${fmtRatio(ga, gb)}`, ga !== undefined && gb !== undefined ? ga <= 0.1 * gb : undefined)
    add('RSS growth for 1000 names ≤ 0.05 × etcd3\'s', `${fmtBytes(ga)} vs ${fmtBytes(gb)} = ${fmtRatio(ga, gb)}`, ga !== undefined && gb !== undefined ? ga <= 0.05 * gb : undefined)
  }
  const hundred = at('locked', 100000)
  if (hundred) {
    const h = hundred
    const idleOk = h.idle && h.idle.requestsPerSecond <= 1.1 * (3 / 5) // one keepalive per TTL/3, TTL 5 s
    const ok = h.allStarted !== undefined && h.allStarted <= 3000 && h.rssGrowth <= 300 * 2 ** 20 && idleOk && h.takeover !== undefined && h.takeover <= 2000
    add('100 000 names in one process: all started ≤ 3 s, RSS growth ≤ 300 MB, idle one keepalive per TTL/3, close() → a competitor leads all ≤ 2 s',
      h.allStarted !== undefined
        ? `all started in ${fmtNum(h.allStarted)} ms, RSS +${fmtBytes(h.rssGrowth)}, ${fmtNum(h.idle?.requestsPerSecond)} req/s idle, close ${fmtNum(h.close)} ms, close → competitor led all ${h.takeover !== undefined ? `${fmtNum(h.takeover)} ms` : `: ${h.takeoverDidNotFinish || h.competitorDidNotFinish}`}`
        : h.didNotFinish, ok)
  }
  // The guardian's target: a SIGKILLed leader (TTL 10 s) is replaced within 200 ms, for 1
  // and for 1000 names on the locker; goal median ≤ 50 ms. For many names the successor's last
  // start counts: until then some of the names have no leader.
  const g = results.guardian
  const without = (l) => med(g.ttl10[l]?.failover)
  const withoutText = ` (TTL ${scenarios.GUARDIAN_TTL} s; without guardian: locked ${fmtNum(without('locked'))} ms, etcd3 ${fmtNum(without('etcd3'))} ms)`
  const guardianTarget = (label, values, extra = '') => {
    const m = med(values)
    const p = p90(values)
    add(`SIGKILL of a leader with \`guardian: true\`, ${label}: median ≤ 50 ms and p90 ≤ 200 ms`,
      `median ${fmtNum(m)} ms, p90 ${fmtNum(p)} ms (n=${values?.length ?? 0})${extra}${withoutText}`,
      m !== undefined && p !== undefined ? m <= 50 && p <= 200 : undefined)
  }
  if (g.one) guardianTarget('1 name → the other host\'s start', g.one.first)
  if (g.many) guardianTarget(`${fmtNum(g.many.n)} names → the successor's last start`, g.many.last, `; its first start: median ${fmtNum(med(g.many.first))} ms, p90 ${fmtNum(p90(g.many.first))} ms`)
  const tl = at('locked', 10000)
  if (tl) {
    const works = tl.allStarted !== undefined && tl.takeover !== undefined
    const te = at('etcd3', 10000)
    const e3 = te ? (te.allStarted !== undefined ? `etcd3: all started in ${fmtNum(te.allStarted)} ms, ${fmtNum(te.idle?.leases)} leases` : `etcd3: ${te.didNotFinish}`) : 'etcd3: not run'
    add('10 000 names in one process work', works
      ? `all started in ${fmtNum(tl.allStarted)} ms, RSS +${fmtBytes(tl.rssGrowth)}, ${fmtNum(tl.idle?.requestsPerSecond)} req/s idle, close ${fmtNum(tl.close)} ms, takeover ${fmtNum(tl.takeover)} ms; ${e3}`
      : `${tl.didNotFinish || tl.competitorDidNotFinish || tl.takeoverDidNotFinish || 'incomplete'}; ${e3}`, works)
  }
  const bal = results.balance
  if (bal) {
    const moving = bal.steps.filter((s) => s.minimum > 0)
    const shareOk = bal.steps.every((s) => s.shares.every((x) => x >= 0.8 * s.fair && x <= 1.2 * s.fair))
    const movesOk = moving.every((s) => s.moves <= 1.2 * s.minimum)
    const quietOk = bal.steps.every((s) => s.movesAfter === 0)
    add(`Balance, ${fmtNum(bal.names)} names, 1 → 4 lockers then one SIGKILLed: every share within 0.8–1.2 × N/M`,
      bal.steps.map((s) => `${s.label}: ${s.shares.join('/')}`).join('; '), shareOk)
    add('Balance: names moved ≤ 1.2 × the fewest possible at each step',
      moving.map((s) => `${s.label}: ${s.moves} vs ${s.minimum}`).join('; '), movesOk)
    add(`Balance: no move in the ${bal.steps[0]?.quietMs / 1000} s after settling`, bal.steps.map((s) => `${s.movesAfter}`).join(', ') + ' moves', quietOk)
  }
  return targets
}

/** Facts of the run beyond the targets, each with its numbers. */
function observations (results) {
  const lines = []
  for (const lib of LIBS) {
    const p = results.pause[lib]
    if (!p) continue
    lines.push(`Pause, ${lib}: after SIGCONT the old leader's first timer tick ran while it still believed it led in ${p.stillLeadingAtFirstTick} of ${p.rounds} rounds; ` +
      (lib === 'locked' ? `isLeader() at that tick said "leading" in ${p.checkSaysLeadingAtFirstTick} of ${p.rounds}` : 'it has no synchronous check') +
      (p.noStop ? `; ${p.noStop} never stopped within 10 s` : '') + '.')
  }
  for (const lib of LIBS) {
    const h = results.handoff[lib]
    if (h?.doubleStarts) lines.push(`Handoff, ${lib}: ${h.doubleStarts} of ${h.handoff.length} rounds had two hosts starting.`)
  }
  const perRound = LIBS.filter((lib) => results.handoff[lib]?.requestsPerHandoff).map((lib) => `${lib} ${fmtRequests(results.handoff[lib].requestsPerHandoff)}`)
  if (perRound.length) lines.push(`etcd requests per handoff (remove → start + 20 ms): ${perRound.join(', ')}.`)
  const events = (n) => `${fmtNum(n)} error event${n === 1 ? '' : 's'}`
  for (const r of results.scale) {
    if (r.errors) lines.push(`${fmtNum(r.n)} names, ${r.lib}: ${events(r.errors)}, the first "${r.firstError}"${r.recampaigns ? `; ${fmtNum(r.recampaigns)} campaigns retried after 5 s` : ''}.`)
  }
  for (const lib of LIBS) {
    const e = results.crash[lib]?.errors
    if (e) lines.push(`Crash failover, ${lib}: ${events(e)} from the surviving host.`)
  }
  const g = results.guardian
  for (const r of [g.one, g.many]) {
    if (r?.errors) lines.push(`Crash failover with guardian, ${fmtNum(r.n)} name${r.n === 1 ? '' : 's'}: ${events(r.errors)} from the two hosts.`)
  }
  for (const lib of LIBS) {
    const e = g.ttl10[lib]?.errors
    if (e) lines.push(`Crash failover at TTL ${scenarios.GUARDIAN_TTL} s, ${lib}: ${events(e)} from the surviving host.`)
  }
  const mem = guardianMemory(g)
  if (mem) {
    lines.push(`Guardian memory (/proc/<pid>/status of the locker's guardian, read just before each kill): VmRSS ${mem}. ` +
      'VmRSS counts the pages of the node binary and libraries it shares with every other Node.js process; RssAnon is what it adds on its own.')
  }
  return lines
}

// ---- the summary table of docs/benchmarks.md (the README links to it) ----------------------------

const README = path.join(ROOT, 'docs', 'benchmarks.md')
const SUMMARY_START = '<!-- bench:summary:start (written by `npm run bench`, do not edit by hand) -->'
const SUMMARY_END = '<!-- bench:summary:end -->'

/** The README's summary: medians and spreads of the headline measures of a full run. */
function renderSummary (results, info) {
  const cell = (values) => {
    const s = summarize(values || [])
    return s ? `${[s.min, s.median, s.p90, s.max].map((x) => fmtNum(x)).join(' / ')} ms` : '–'
  }
  const at = (lib, n) => results.scale.find((r) => r.lib === lib && r.n === n)
  const rows = []
  const both = (label, f) => rows.push([label, f('locked'), f('etcd3')])
  both('Graceful handoff, 3 hosts: `remove()` → next host\'s `start`', (l) => cell(results.handoff[l]?.handoff))
  rows.push(['etcd\'s own floor: delete → watch event', cell(results.floor?.deleteToEvent), '(same etcd)'])
  if (results.handover) {
    rows.push(['`handover()` to the next in line, 4 hosts: call → its `start`', cell(results.handover.next), '(no handover)'])
    rows.push(['`handover(id)` past 2 candidates: call → the target\'s `start`', cell(results.handover.past2), '(no handover)'])
  }
  both('First election in a warm process: register → `start`', (l) => cell(results.first[l]?.warm))
  both('Crash failover, TTL 2 s: SIGKILL of the leader → another host\'s `start`', (l) => cell(results.crash[l]?.failover))
  const g = results.guardian
  if (g.one || g.many || Object.keys(g.ttl10).length) {
    const ttl = scenarios.GUARDIAN_TTL
    both(`Crash failover, TTL ${ttl} s, no guardian: SIGKILL of the leader → another host's \`start\``, (l) => cell(g.ttl10[l]?.failover))
    rows.push([`The same with \`guardian: true\` (TTL ${ttl} s)`, cell(g.one?.first), '(no guardian)'])
    if (g.many) rows.push([`With \`guardian: true\`, ${fmtNum(g.many.n)} names on the killed leader: the successor's first start`, cell(g.many.first), '(no guardian)'])
    if (g.many) rows.push([`With \`guardian: true\`, ${fmtNum(g.many.n)} names: the successor's last start (all led again)`, cell(g.many.last), '(no guardian)'])
    const mem = guardianMemory(g)
    if (mem) rows.push(['Guardian process memory: VmRSS (RssAnon)', mem.replace(/, n=\d+$/, ''), '(no guardian)'])
  }
  both(`After a ${(results.pause.locked?.pauseMs ?? 4000) / 1000} s SIGSTOP (TTL 2 s), \`isLeader()\` at the first timer tick says "leading"`, (l) => {
    const p = results.pause[l]
    if (!p) return '–'
    return `${p.checkSaysLeadingAtFirstTick} of ${p.rounds}` + (l === 'locked' ? '' : ' (no such check; event state)')
  })
  both('Idle, one host with 1000 singletons: etcd requests/s, leases, host CPU', (l) => {
    const i = at(l, 1000)?.idle
    return i ? `${fmtNum(i.requestsPerSecond)}/s, ${fmtNum(i.leases)} lease${i.leases === 1 ? '' : 's'}, ${fmtNum(i.hostCpuPercent)} %` : (at(l, 1000)?.didNotFinish || '–')
  })
  both('1000 names in one process: all started / RSS growth', (l) => {
    const r = at(l, 1000)
    return r?.allStarted !== undefined ? `${fmtNum(r.allStarted)} ms / ${fmtBytes(r.rssGrowth)}` : (r?.didNotFinish || '–')
  })
  both('10 000 names in one process: all started / RSS growth / competitor took over all after `close()`', (l) => {
    const r = at(l, 10000)
    if (!r) return '–'
    if (r.allStarted === undefined) return r.didNotFinish
    const takeover = r.takeover !== undefined ? `${fmtNum(r.takeover)} ms` : (r.competitorDidNotFinish || r.takeoverDidNotFinish || '–')
    return `${fmtNum(r.allStarted)} ms / ${fmtBytes(r.rssGrowth)} / ${takeover}`
  })
  const targets = judgeTargets(results).filter((t) => t.ok !== undefined)
  const missed = targets.filter((t) => !t.ok)
  const floor = med(results.floor?.deleteToEvent)
  const handoff = med(results.handoff.locked?.handoff)
  const perRound = results.handoff.locked?.requestsPerHandoff
  return [
    `Measured by \`npm run bench\` on ${info.date.slice(0, 10)}, locked at ${describeGit(info.git, { long: false })}, on a ${info.nproc}-core ` +
      `test machine (${info.cpu.split(' ').slice(0, 2).join(' ')}, Node ${info.node}, etcd ${info.etcd} single member on loopback, shared with other work), ` +
      `side by side with the npm \`etcd3\` package's Election (${info.etcd3Version}) on the same etcd; min / median / p90 / max. ` +
      'Full results, and every target judged, in [`bench/results.md`](../bench/results.md).',
    '',
    table(['Measure', 'locked', 'etcd3'], rows),
    '',
    `Targets: ${targets.length - missed.length} of ${targets.length} met` + (missed.length ? ` (missed: ${missed.map((t) => t.target).join('; ')})` : '') + '. ' +
      `The handoff median is ${fmtRatio(handoff, floor)} etcd's own delete → watch median` + (perRound ? `; a handoff costs ${fmtRequests(perRound)}.` : '.')
  ].join('\n')
}

/** Puts the summary between the README's markers; false when the markers are missing. */
function updateReadme (summary) {
  const text = fs.readFileSync(README, 'utf8')
  const a = text.indexOf(SUMMARY_START)
  const b = text.indexOf(SUMMARY_END)
  if (a < 0 || b < a) return false
  fs.writeFileSync(README, `${text.slice(0, a + SUMMARY_START.length)}\n${summary}\n${text.slice(b)}`)
  return true
}

// ---- process hygiene: etcd and every host die with the harness ------------------------------

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    console.error(`bench: ${sig}, cleaning up`)
    process.exit(130) // 'exit' handlers in etcd.js and hosts.js kill etcd and the hosts
  })
}
process.on('unhandledRejection', (err) => {
  console.error('bench: unhandled rejection:', err)
  process.exit(1)
})

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error('bench failed:', err)
    process.exit(1)
  }
)
