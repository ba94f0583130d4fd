'use strict'
// The recipes of docs/recipes.md (examples/), each run as users run a copy of it — its own Node
// process, `require('locked')` — against a real etcd (and a real redis-server for the queue), two
// hosts at a time: what each shows is read from its HTTP endpoints, its output and etcd's keys.
// The recipes are independent (each uses its own names), so they run concurrently.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const YAML = require('yaml')
const { Queue } = require('bullmq')
const { startEtcd, freePorts, httpJson, keyOf } = require('./helpers/etcd')
const { startProxy, closeProxies } = require('./helpers/proxy')
const { startRedis } = require('./helpers/redis')
const { runProgram, killPrograms } = require('./helpers/programs')
const { until, within } = require('./helpers/util')

let etcd, redis
before(async () => { [etcd, redis] = await Promise.all([startEtcd({ members: 1 }), startRedis()]) })
after(async () => {
  await killPrograms()
  await closeProxies()
  if (redis) await redis.close()
  if (etcd) await etcd.close()
})

// Two hosts of a recipe: A is started and elected first, then B queues behind it. A recipe with an
// HTTP endpoint binds it after it registers, so its key or election can come first: `serving` is the
// line it prints once it listens, awaited on both before the test asks them anything.
async function twoHosts (file, name, env = {}, { elected = new RegExp(`leading ${name}`), serving } = {}) {
  const [pa, pb] = await freePorts(2)
  const start = (id, port) => runProgram(`examples/${file}`, {
    label: `${file} ${id}`, env: { ETCD_HOSTS: etcd.endpoints.join(','), HOST_ID: id, PORT: String(port), ...env }
  })
  const a = start('A', pa)
  await a.waitOutput(elected, 20000)
  const b = start('B', pb)
  await etcd.waitKeys(`locked/${name}/`, (kvs) => keyOf(kvs, 'B'), 20000, `B's key for ${name}`)
  if (serving) await Promise.all([a.waitOutput(serving, 20000), b.waitOutput(serving, 20000)])
  return { a, b, pa, pb }
}

// Hands over from A to B: SIGTERM to A, which must leave etcd; B must be elected.
async function handOver ({ a, b }, name, elected = new RegExp(`leading ${name} \\(token (\\d+)\\)`)) {
  a.kill('SIGTERM')
  const exit = await a.exited
  const [, token] = await b.waitOutput(elected, 10000)
  const kvs = await etcd.keys(`locked/${name}/`)
  assert.strictEqual(keyOf(kvs, 'A'), undefined, 'A\'s key is gone')
  return { exit, token: Number(token) }
}

// One sample of a Prometheus text exposition: 'locked_leader{name="x"}' -> 1 (undefined if absent).
function sample (text, series) {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

const get = async (port, route) => httpJson(`http://127.0.0.1:${port}${route}`, { timeoutMs: 5000 })

describe('recipes', { concurrency: true, timeout: 120000 }, () => {
  it('prometheus.js: the leader gauge, terms won, keepalive and takeover histograms and leaderless seconds of a real election', async () => {
    const hosts = await twoHosts('prometheus.js', 'report', {}, { serving: /metrics on http:/ })
    const scrape = async (port) => {
      const res = await get(port, '/metrics')
      assert.strictEqual(res.status, 200)
      return res.body
    }
    // Keepalives are answered every TTL/3 (10 s here): wait for one on each.
    const [a, b] = await Promise.all([hosts.pa, hosts.pb].map((port) => until(async () => {
      const text = await scrape(port)
      return sample(text, 'locked_keepalive_round_trip_seconds_count') >= 1 && text
    }, 15000, 'a keepalive sample')))
    assert.strictEqual(sample(a, 'locked_leader{name="report"}'), 1)
    assert.strictEqual(sample(b, 'locked_leader{name="report"}'), 0)
    assert.strictEqual(sample(a, 'locked_terms_won_total{name="report"}'), 1)
    assert.strictEqual(sample(b, 'locked_terms_won_total{name="report"}'), 0)
    assert.strictEqual(sample(a, 'locked_takeover_seconds_count{name="report"}'), undefined, 'A took over from nobody')
    for (const text of [a, b]) {
      const rtt = sample(text, 'locked_keepalive_round_trip_seconds_sum') / sample(text, 'locked_keepalive_round_trip_seconds_count')
      assert.ok(rtt > 0 && rtt < 1, `keepalive round trip ${rtt} s`)
      const valid = sample(text, 'locked_lease_valid_seconds')
      // At most TTL − margin (1.5 s) after a keepalive, which comes every TTL/3.
      assert.ok(valid > 3 && valid <= 8.5, `lease valid for ${valid} s (TTL 10)`)
    }
    // Before any takeover B counted only the moment before it first heard of A.
    const leaderlessBefore = sample(b, 'locked_leaderless_seconds_total{name="report"}')
    assert.ok(leaderlessBefore >= 0 && leaderlessBefore < 5, `B leaderless ${leaderlessBefore} s`)

    await handOver(hosts, 'report')
    const after = await scrape(hosts.pb)
    assert.strictEqual(sample(after, 'locked_leader{name="report"}'), 1)
    assert.strictEqual(sample(after, 'locked_terms_won_total{name="report"}'), 1)
    assert.strictEqual(sample(after, 'locked_takeover_seconds_count{name="report"}'), 1)
    const takeover = sample(after, 'locked_takeover_seconds_sum{name="report"}')
    assert.ok(takeover > 0 && takeover < 1, `takeover ${takeover} s after a graceful handover`)
    const leaderless = sample(after, 'locked_leaderless_seconds_total{name="report"}')
    assert.ok(leaderless >= leaderlessBefore + takeover - 1e-9, `leaderless ${leaderless} s counts the takeover of ${takeover} s`)
  })

  it('opentelemetry.js: the same figures as OpenTelemetry metrics, read through an SDK MetricReader', async () => {
    const hosts = await twoHosts('opentelemetry.js', 'digest', {}, { serving: /metrics on http:/ })
    const read = async (port) => {
      const res = await get(port, '/metrics.json')
      assert.strictEqual(res.status, 200)
      return (metric, attrs = {}) => res.body.find((p) => p.name === metric &&
        Object.entries(attrs).every(([k, v]) => p.attributes[k] === v))?.value
    }
    const [a, b] = await Promise.all([hosts.pa, hosts.pb].map((port) => until(async () => {
      const m = await read(port)
      return m('locked.keepalive.round_trip')?.count >= 1 && m
    }, 15000, 'a keepalive sample')))
    const digest = { name: 'digest' }
    assert.strictEqual(a('locked.leader', digest), 1)
    assert.strictEqual(b('locked.leader', digest), 0)
    assert.strictEqual(a('locked.terms_won', digest), 1)
    assert.strictEqual(b('locked.terms_won', digest), 0)
    assert.strictEqual(a('locked.takeover.duration', digest), undefined)
    const rtt = a('locked.keepalive.round_trip')
    assert.ok(rtt.sum > 0 && rtt.sum / rtt.count < 1, `keepalive round trip ${JSON.stringify(rtt)}`)
    assert.ok(a('locked.lease.valid') > 3 && a('locked.lease.valid') <= 8.5)

    await handOver(hosts, 'digest')
    const m = await read(hosts.pb)
    assert.strictEqual(m('locked.leader', digest), 1)
    assert.strictEqual(m('locked.terms_won', digest), 1)
    const takeover = m('locked.takeover.duration', digest)
    assert.strictEqual(takeover.count, 1)
    assert.ok(takeover.sum > 0 && takeover.sum < 1, `takeover ${takeover.sum} s`)
    assert.ok(m('locked.leaderless', digest) >= takeover.sum, 'leaderless time counts the takeover')
  })

  it('health-express.js: /healthz ready on the follower too, 503 only when cut off from etcd for long or closing; /leader names the leader', async () => {
    // B reaches etcd through a proxy the test can cut.
    const proxy = await startProxy(etcd.endpoints[0])
    const env = { LOCK_TTL: '2', UNHEALTHY_AFTER_MS: '2500' }
    const [pa, pb] = await freePorts(2)
    const start = (id, port, hostsEnv) => runProgram('examples/health-express.js', {
      label: `health ${id}`, env: { ...env, ETCD_HOSTS: hostsEnv, HOST_ID: id, PORT: String(port) }
    })
    const a = start('A', pa, etcd.endpoints.join(','))
    await Promise.all([a.waitOutput(/leading billing/, 20000), a.waitOutput(/leading invoices/, 20000)])
    const b = start('B', pb, proxy.endpoint)
    await etcd.waitKeys('locked/invoices/', (kvs) => keyOf(kvs, 'B'), 20000, 'B queued')
    await Promise.all([a.waitOutput(/listening on http:/, 20000), b.waitOutput(/listening on http:/, 20000)])

    const [ha, hb] = await Promise.all([get(pa, '/healthz'), get(pb, '/healthz')])
    assert.deepStrictEqual([ha.status, ha.body.status, ha.body.leading.sort()], [200, 'ok', ['billing', 'invoices']])
    assert.deepStrictEqual([hb.status, hb.body.status, hb.body.leading], [200, 'ok', []], 'a follower is ready')
    const [la, lb] = await Promise.all([get(pa, '/leader'), get(pb, '/leader')])
    for (const name of ['billing', 'invoices']) {
      assert.strictEqual(la.body[name].leader, 'A')
      assert.strictEqual(lb.body[name].token, la.body[name].token, 'both hosts read the same term')
      assert.ok(Math.abs(Date.parse(lb.body[name].since) - Date.now()) < 60000, `since ${lb.body[name].since}`)
      assert.deepStrictEqual([la.body[name].isLeader, lb.body[name].isLeader, lb.body[name].self], [true, false, 'B'])
    }

    // B cut off: healthy while its last keepalive is recent, 503 once etcd was silent 2.5 s.
    proxy.mode('blackhole')
    const cutAt = Date.now()
    const down = await until(async () => { const r = await get(pb, '/healthz'); return r.status === 503 && r }, 10000, 'B unhealthy')
    const afterMs = Date.now() - cutAt
    assert.strictEqual(down.body.status, 'etcd-unreachable')
    // Its last answered keepalive may have been up to TTL/3 (0.67 s) before the cut.
    assert.ok(afterMs >= 2500 - 700, `B unhealthy ${afterMs} ms after the cut: not at the first silence`)
    proxy.mode('pass')
    await until(async () => (await get(pb, '/healthz')).status === 200, 20000, 'B healthy again')

    // A on SIGTERM: 503 "closing" while its work winds down, then exit 0; B takes both names.
    a.kill('SIGTERM')
    const closing = await until(async () => {
      try { const r = await get(pa, '/healthz'); return r.status === 503 && r } catch { return { gone: true } }
    }, 5000, 'A closing')
    assert.strictEqual(closing.body?.status, 'closing', 'A answered "closing" while handing over')
    assert.deepStrictEqual(await a.exited, { code: 0, signal: null })
    await Promise.all([b.waitOutput(/leading billing/, 15000), b.waitOutput(/leading invoices/, 15000)])
    const lb2 = await get(pb, '/leader')
    assert.deepStrictEqual([lb2.body.billing.leader, lb2.body.billing.isLeader], ['B', true])
    assert.ok(lb2.body.billing.token > la.body.billing.token, 'a larger fencing token')
  })

  it('nestjs.js: the provider campaigns on module init; app.close() on SIGTERM hands over to the other app', async () => {
    const hosts = await twoHosts('nestjs.js', 'cleanup')
    const { exit } = await handOver(hosts, 'cleanup')
    // enableShutdownHooks re-raises the signal once the application closed.
    assert.deepStrictEqual(exit, { code: null, signal: 'SIGTERM' }, hosts.a.output())
    assert.match(hosts.a.output(), /cleanup: work wound down/, 'the leader\'s work ended before the process did')
  })

  it('bullmq-consumer.js: only the elected host consumes, each job once; after the leader stops the other continues', async () => {
    const queue = new Queue('orders', { connection: { host: '127.0.0.1', port: redis.port } })
    try {
      const hosts = await twoHosts('bullmq-consumer.js', 'orders-consumer', { REDIS_URL: redis.url }, { elected: /consuming orders/ })
      await queue.addBulk(Array.from({ length: 30 }, (_, n) => ({ name: 'order', data: { n, workMs: 50 } })))
      const processedBy = (p) => [...p.output().matchAll(/processed job (\S+)/g)].map((m) => m[1])
      await until(() => processedBy(hosts.a).length >= 5, 15000, 'A processed 5 jobs')
      assert.strictEqual(processedBy(hosts.b).length, 0, 'the follower consumed nothing')
      hosts.a.kill('SIGTERM')
      await hosts.a.exited
      await until(async () => (await queue.getJobCounts('completed')).completed === 30, 20000, 'every job completed')
      const ids = [...processedBy(hosts.a), ...processedBy(hosts.b)]
      assert.strictEqual(new Set(ids).size, 30, 'each job processed exactly once')
      assert.strictEqual(ids.length, 30)
      assert.ok(processedBy(hosts.b).length > 0, 'B continued after A stopped')
      const jobs = await queue.getJobs(['completed'], 0, -1)
      const by = (id) => jobs.filter((j) => j.returnvalue.host === id)
      assert.deepStrictEqual([by('A').length, by('B').length], [processedBy(hosts.a).length, processedBy(hosts.b).length])
      assert.ok(Math.max(...by('A').map((j) => j.finishedOn)) <= Math.min(...by('B').map((j) => j.processedOn)),
        'B started its first job only after A had finished its last')
      assert.ok(by('B')[0].returnvalue.token > by('A')[0].returnvalue.token, 'B worked with a larger fencing token')
      assert.strictEqual((await queue.getJobCounts('failed')).failed, 0)
    } finally {
      await queue.close()
    }
  })

  it('cron.js: croner runs the schedule on the leader only, and on the next host after a handover, never twice for one tick', async () => {
    const env = { CRON_SCHEDULE: '* * * * * *' } // every second
    const hosts = await twoHosts('cron.js', 'nightly-report', env, { elected: /elected \(token/ })
    const runs = (p, since = 0) => [...p.output().slice(since).matchAll(/report run at (\S+) by (\S+)/g)].map((m) => ({ at: m[1], by: m[2] }))
    await until(() => runs(hosts.a).length >= 2, 10000, 'two runs on A')
    hosts.a.kill('SIGINT')
    assert.deepStrictEqual(await hosts.a.exited, { code: 0, signal: null })
    await until(() => runs(hosts.b).length >= 2, 10000, 'two runs on B')
    const [ra, rb] = [runs(hosts.a), runs(hosts.b)]
    assert.ok(ra.every((r) => r.by === 'A') && rb.every((r) => r.by === 'B'))
    const lastA = ra[ra.length - 1].at
    assert.ok(rb.every((r) => r.at > lastA), `B's runs (${rb.map((r) => r.at)}) all come after A's last tick ${lastA}`)
    assert.match(hosts.b.output(), /elected[^]*report run at/, 'B ran nothing before it was elected')
  })

  describe('kubernetes/', () => {
    const dir = path.join(__dirname, '..', 'examples', 'kubernetes')
    const manifest = YAML.parse(fs.readFileSync(path.join(dir, 'deployment.yaml'), 'utf8'))
    const pod = manifest.spec.template.spec
    const container = pod.containers[0]
    const env = Object.fromEntries(container.env.filter((e) => 'value' in e).map((e) => [e.name, e.value]))
    const graceMs = pod.terminationGracePeriodSeconds * 1000
    const preStop = container.lifecycle.preStop.exec.command
    const preStopMs = preStop[0] === 'sleep' ? Number(preStop[1]) * 1000 : NaN
    // The pod's env, as the kubelet would give it, with this test's etcd and a free port.
    const podEnv = (name, port) => ({ ...env, ETCD_HOSTS: etcd.endpoints.join(','), PORT: String(port), POD_NAME: name })

    it('deployment.yaml: the grace period covers the preStop sleep and app.js\'s drainTimeout; probes reach /healthz on PORT', async () => {
      assert.deepStrictEqual(container.env.find((e) => e.name === 'POD_NAME').valueFrom, { fieldRef: { fieldPath: 'metadata.name' } })
      assert.ok(Number.isFinite(preStopMs), `preStop is a sleep: ${preStop}`)
      assert.strictEqual(Number(env.PORT), container.ports.find((p) => p.name === 'probes').containerPort)
      for (const probe of [container.readinessProbe, container.livenessProbe]) assert.deepStrictEqual(probe.httpGet, { path: '/healthz', port: 'probes' })
      // What app.js makes of the manifest's env: its own words at start-up.
      const [port] = await freePorts(1)
      const app = runProgram('examples/kubernetes/app.js', { label: 'k8s config', env: podEnv('reconciler-config', port) })
      const [, ttl, drainMs] = await app.waitOutput(/pod reconciler-config: ttl (\d+) s, drainTimeout (\d+) ms/)
      app.kill('SIGTERM')
      await app.exited
      assert.deepStrictEqual([Number(ttl), Number(drainMs)], [Number(env.LOCK_TTL), Number(env.DRAIN_TIMEOUT_MS)], 'app.js uses the manifest\'s settings')
      assert.ok(graceMs >= preStopMs + Number(drainMs) + 5000,
        `terminationGracePeriodSeconds (${graceMs / 1000}) ≥ preStop ${preStopMs / 1000} s + drainTimeout ${drainMs / 1000} s + 5 s`)
    })

    it('app.js as PID 1 (like in a container): SIGTERM drains the step in hand, hands over and exits 0 within the grace period', async (t) => {
      // A PID namespace of its own makes node PID 1, where an unhandled SIGTERM would do nothing.
      const pid1 = spawnSync('unshare', ['--pid', '--fork', 'true']).status === 0
      if (!pid1) t.diagnostic('unshare --pid is not available here: app.js runs as an ordinary process')
      const command = pid1 ? ['unshare', '--pid', '--fork', '--kill-child'] : undefined
      const [pa, pb] = await freePorts(2)
      const a = runProgram('examples/kubernetes/app.js', { label: 'pod a', env: podEnv('reconciler-a', pa), command })
      const [, tokenA] = await a.waitOutput(/leading reconciler \(token (\d+)\)/, 20000)
      const b = runProgram('examples/kubernetes/app.js', { label: 'pod b', env: podEnv('reconciler-b', pb) })
      await etcd.waitKeys('locked/reconciler/', (kvs) => keyOf(kvs, 'reconciler-b'), 20000, 'pod b queued')
      await Promise.all([a.waitOutput(/probes on :/, 20000), b.waitOutput(/probes on :/, 20000)])
      assert.deepStrictEqual([(await get(pa, '/healthz')).status, (await get(pb, '/healthz')).status], [200, 200], 'leader and follower ready')

      // The node process itself: unshare's only child.
      const nodePid = pid1
        ? await until(() => Number(fs.readFileSync(`/proc/${a.proc.pid}/task/${a.proc.pid}/children`, 'utf8').trim()), 5000, 'the pid of node')
        : a.proc.pid
      if (pid1) assert.match(a.output(), /pod reconciler-a/) // (its own pid inside is 1)
      const sentAt = Date.now()
      process.kill(nodePid, 'SIGTERM')
      // The kubelet's SIGKILL would come after the grace period (less the preStop sleep).
      const exit = await within(a.exited, graceMs - preStopMs, 'pod a exits within the grace period')
      const tookMs = Date.now() - sentAt
      assert.deepStrictEqual(exit, { code: 0, signal: null }, a.output())
      assert.ok(tookMs < graceMs - preStopMs, `exited ${tookMs} ms after SIGTERM, within the ${(graceMs - preStopMs) / 1000} s left after preStop`)
      const at = (p, re) => Date.parse(p.output().match(new RegExp(`^(\\S+) ${re}`, 'm'))[1])
      const [, tokenB] = await b.waitOutput(/leading reconciler \(token (\d+)\)/, 10000)
      assert.ok(Number(tokenB) > Number(tokenA))
      assert.ok(at(a, 'reconciler: work wound down') <= at(b, 'leading reconciler'), 'pod b led only after pod a\'s work wound down')
      assert.strictEqual(keyOf(await etcd.keys('locked/reconciler/'), 'reconciler-a'), undefined, 'pod a\'s key is gone')
    })
  })
})
