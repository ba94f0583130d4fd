#!/usr/bin/env node
'use strict'
// Benchmarks `locked` against the npm `etcd3` package's Election on one throwaway local etcd
// (issue 5). Usage:
//
//   npm run bench                 # full run (~10 min on 2 cores), writes bench/results.md
//   npm run bench:quick           # every scenario once, small sizes (CI smoke check, < 2 min)
//   node bench/run.js --only=handoff,crash   # a subset (floor, first, handoff, crash, pause, scale)
//   node bench/run.js --out=path.md          # write the table elsewhere
//
// Exit code 1 if a scenario failed to run (missed targets do not fail the run: absolute and
// even relative numbers are noisy on shared machines).

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { Etcd3 } = require('etcd3')

const { startEtcd, etcdVersion } = require('./etcd')
const scenarios = require('./scenarios')
const { summarize, fmtNum, fmtSummary, fmtRatio, fmtBytes, table } = require('./stats')

const LIBS = ['locked', 'etcd3']
const ALL = ['floor', 'first', 'handoff', 'crash', 'pause', 'scale']

function parseArgs (argv) {
  const args = { quick: false, only: ALL, out: null }
  for (const arg of argv) {
    if (arg === '--quick') args.quick = true
    else if (arg.startsWith('--only=')) args.only = arg.slice(7).split(',').filter(Boolean)
    else if (arg.startsWith('--out=')) args.out = arg.slice(6)
    else if (arg === '--help' || arg === '-h') {
      console.log('usage: node bench/run.js [--quick] [--only=floor,first,handoff,crash,pause,scale] [--out=file.md]')
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
  if (!args.out) {
    args.out = args.quick || args.only !== ALL
      ? path.join(__dirname, '.tmp', args.quick ? 'results-quick.md' : 'results-partial.md')
      : path.join(__dirname, 'results.md')
  }
  return args
}

const ROOT = path.join(__dirname, '..')
// What the published package holds (package.json "files"), plus the binary built here.
const ADDON_FILES = [...require('../package.json').files.filter((f) => f.endsWith('.js')), 'locked.linux-x64-gnu.node']

/**
 * Copies the package's JavaScript and the .node into bench/.tmp, so that every host of
 * this run loads the same build even if someone rebuilds the working tree meanwhile.
 */
function snapshotAddon () {
  const dir = path.join(__dirname, '.tmp', `addon-${process.pid}`)
  fs.mkdirSync(dir, { recursive: true })
  for (const file of ADDON_FILES) fs.copyFileSync(path.join(ROOT, file), path.join(dir, file))
  process.on('exit', () => {
    try { fs.rmSync(dir, { recursive: true, force: true }) } catch {}
  })
  return dir
}

function machine (addonDir) {
  let cpu = 'unknown'
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))
    if (m) cpu = m[1].trim()
  } catch {}
  let commit = 'unknown'
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', timeout: 5000 }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'index.js', 'Cargo.toml', 'Cargo.lock'], { cwd: ROOT, encoding: 'utf8', timeout: 5000 }).trim()
    if (dirty) commit += ' (with uncommitted changes to src/ or index.js)'
  } catch {}
  let addon = 'not found'
  try {
    const file = path.join(addonDir, 'locked.linux-x64-gnu.node')
    const st = fs.statSync(file)
    const mb = st.size / (1024 * 1024)
    addon = `locked.linux-x64-gnu.node, ${mb.toFixed(1)} MB${mb > 15 ? ' (size of a debug build: numbers not representative)' : ' (release build)'}, built ${st.mtime.toISOString()}`
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
    commit,
    addon,
    loadavg: os.loadavg().map((x) => x.toFixed(2)).join(' ')
  }
}

// ---- running ---------------------------------------------------------------------------------

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const started = Date.now()
  const lockedPath = snapshotAddon()
  const info = machine(lockedPath)
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
    capMs: (lib, n) => (args.quick ? 30000 : n >= 10000 ? 60000 : 30000)
  }
  const results = { floor: null, first: {}, handoff: {}, crash: {}, pause: {}, scale: [] }
  const failures = []

  async function attempt (label, fn) {
    const t = Date.now()
    try {
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
    }
    if (args.only.includes('crash')) {
      for (const lib of LIBS) results.crash[lib] = await attempt(`crash failover ${lib}`, () => scenarios.crashFailover(ctx, lib))
    }
    if (args.only.includes('pause')) {
      for (const lib of LIBS) results.pause[lib] = await attempt(`pause ${lib}`, () => scenarios.pause(ctx, lib))
    }
    if (args.only.includes('scale')) {
      const sizes = args.quick ? [1, 50] : [1, 100, 1000, 10000]
      const withCompetitor = args.quick ? [50] : [1000, 10000]
      for (const n of sizes) {
        for (const lib of LIBS) {
          const r = await attempt(`idle/scale ${lib} ${n}`, () => scenarios.idleAndScale(ctx, lib, n, withCompetitor.includes(n)))
          if (r) results.scale.push(r)
        }
      }
    }
  } finally {
    admin.close()
    etcd.stop()
  }

  const seconds = (Date.now() - started) / 1000
  const markdown = render(results, info, args, seconds, failures)
  console.log(markdown)
  fs.mkdirSync(path.dirname(args.out), { recursive: true })
  fs.writeFileSync(args.out, markdown)
  log(`written to ${path.relative(process.cwd(), args.out) || args.out} (${seconds.toFixed(0)} s)`)
  return failures.length === 0 ? 0 : 1
}

// ---- rendering -------------------------------------------------------------------------------

/** 'Txn 3, Range 1' from { Txn: 3, Range: 1 }, largest first. */
function fmtMethods (byMethod) {
  const list = Object.entries(byMethod).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1])
  return list.length ? list.map(([m, v]) => `${m} ${fmtNum(v)}`).join(', ') : 'none'
}

const med = (values) => summarize(values || [])?.median
const p90 = (values) => summarize(values || [])?.p90
const pick = (obj, lib, key) => obj[lib]?.[key]

function render (results, info, args, seconds, failures) {
  const out = []
  const cmd = args.quick ? 'npm run bench:quick' : (args.only === ALL ? 'npm run bench' : `node bench/run.js ${process.argv.slice(2).join(' ')}`)
  out.push(`# locked vs etcd3: benchmark results${args.quick ? ' (quick mode: one round each, small sizes, not for comparison)' : ''}`)
  out.push('')
  out.push(`Command: \`${cmd}\` (${(seconds / 60).toFixed(1)} min). One throwaway single-member etcd on loopback (data dir on tmpfs), ` +
    'every competing host a separate Node process; times from `process.hrtime.bigint()` (CLOCK_MONOTONIC, one clock for all processes). ' +
    'Cells are min / median / p90 / max; ratios compare medians.')
  out.push('')
  out.push(`- Machine: ${info.nproc} CPUs (${info.cpu}), ${info.memGB} GB RAM, load average at start ${info.loadavg} (shared machine: other builds and tests were running)`)
  out.push(`- Node ${info.node}; etcd ${info.etcd}; npm etcd3 ${info.etcd3Version}; locked at ${info.commit}, ${info.addon}`)
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
  if (Object.keys(results.crash).length) {
    both('Crash failover, TTL 2 s: SIGKILL of leader → other host start', (l) => pick(results.crash, l, 'failover'))
    both('Crash failover − TTL', (l) => pick(results.crash, l, 'failover')?.map((x) => x - results.crash[l].ttlMs), { ratio: false })
    const errs = (l) => pick(results.crash, l, 'errors')
    if (errs('locked') || errs('etcd3')) rows.push(['Crash failover: error events from the surviving host', String(errs('locked') ?? '–'), String(errs('etcd3') ?? '–'), ''])
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
      r.takeover !== undefined ? `${fmtNum(r.takeover)} ms` : (r.takeoverDidNotFinish || '–'),
      r.errors ? `${fmtNum(r.errors)}: "${r.firstError}"${r.recampaigns ? `; ${fmtNum(r.recampaigns)} campaigns retried after 5 s` : ''}` : '0'])
    out.push(table(['Names', 'Library', 'all started', 'RSS growth', 'close()', 'close() → competitor started on all', 'error events (first message)'], scaleRows))
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

  // Targets
  const targets = []
  const verdict = (ok) => ok === undefined ? 'not measured' : ok ? 'met' : 'MISSED'
  const hl = med(results.handoff.locked?.handoff)
  const he = med(results.handoff.etcd3?.handoff)
  if (hl !== undefined) {
    targets.push(['Graceful handoff median ≤ 0.25 × etcd3\'s', `${fmtNum(hl)} ms vs ${fmtNum(he)} ms = ${fmtRatio(hl, he)}`, verdict(he !== undefined ? hl <= 0.25 * he : undefined)])
    targets.push(['Graceful handoff median ≤ 3 × floor', `${fmtNum(hl)} ms vs floor ${fmtNum(floorMedian)} ms = ${fmtRatio(hl, floorMedian)}`, verdict(floorMedian !== undefined ? hl <= 3 * floorMedian : undefined)])
  }
  const cl = results.crash.locked
  if (cl) {
    const p = p90(cl.failover)
    const pe = p90(results.crash.etcd3?.failover)
    targets.push(['Crash failover p90 ≤ TTL + 0.6 s', `${fmtNum(p)} ms (TTL ${cl.ttlMs} ms; etcd3 ${fmtNum(pe)} ms)`, verdict(p <= cl.ttlMs + 600)])
  }
  const at = (lib, n) => scale.find((r) => r.lib === lib && r.n === n)
  const il = at('locked', 1000)
  const ie = at('etcd3', 1000)
  if (il?.idle) {
    const a = il.idle.requestsPerSecond
    const b = ie?.idle?.requestsPerSecond
    targets.push(['Idle etcd requests/s with 1000 singletons ≤ 1/100 of etcd3\'s', `${fmtNum(a)}/s vs ${fmtNum(b)}/s = ${fmtRatio(a, b)}`, verdict(b !== undefined ? a <= b / 100 : undefined)])
  }
  if (il?.allStarted !== undefined) {
    const a = il.allStarted
    const b = ie?.allStarted
    targets.push(['1000 names all started ≥ 10 × faster than etcd3', `${fmtNum(a)} ms vs ${fmtNum(b)} ms = ${b ? `${fmtNum(b / a)}× faster` : '–'}`, verdict(b !== undefined ? b >= 10 * a : undefined)])
    const ga = il.rssGrowth
    const gb = ie?.rssGrowth
    targets.push(['RSS growth for 1000 names ≤ 0.1 × etcd3\'s', `${fmtBytes(ga)} vs ${fmtBytes(gb)} = ${fmtRatio(ga, gb)}`, verdict(gb !== undefined ? ga <= 0.1 * gb : undefined)])
  }
  const tl = at('locked', 10000)
  if (tl) {
    const works = tl.allStarted !== undefined && tl.takeover !== undefined
    const te = at('etcd3', 10000)
    const e3 = te ? (te.allStarted !== undefined ? `etcd3: all started in ${fmtNum(te.allStarted)} ms, ${fmtNum(te.idle?.leases)} leases` : `etcd3: ${te.didNotFinish}`) : 'etcd3: not run'
    targets.push(['10 000 names in one process work', works
      ? `all started in ${fmtNum(tl.allStarted)} ms, RSS +${fmtBytes(tl.rssGrowth)}, ${fmtNum(tl.idle?.requestsPerSecond)} req/s idle, close ${fmtNum(tl.close)} ms, takeover ${fmtNum(tl.takeover)} ms; ${e3}`
      : `${tl.didNotFinish || tl.competitorDidNotFinish || tl.takeoverDidNotFinish || 'incomplete'}; ${e3}`, verdict(works)])
  }
  if (targets.length && !args.quick) {
    out.push('## Targets of issue 5')
    out.push('')
    out.push(table(['Target', 'Measured', 'Verdict'], targets))
    out.push('')
  }
  if (failures.length) {
    out.push('## Scenarios that failed to run')
    out.push('')
    for (const f of failures) out.push(`- ${f}`)
    out.push('')
  }
  return out.join('\n')
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
