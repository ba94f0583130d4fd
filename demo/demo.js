'use strict'
// npm run demo: a throwaway local etcd, three host processes competing for the singleton
// "report", the leader killed with SIGKILL, then a graceful remove() handoff, with timings measured
// on one monotonic clock (process.hrtime.bigint() is system-wide on Linux).

const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { startEtcd } = require('../__test__/helpers/etcd')
const { spawnHost, killAll, now, ms, waitForAny } = require('../__test__/helpers/hosts')

const TTL = 2
const NAME = 'report'
const color = process.stdout.isTTY && !process.env.NO_COLOR
const paint = (code, s) => (color ? `\x1b[${code}m${s}\x1b[0m` : s)
const bold = (s) => paint('1', s)
const dim = (s) => paint('2', s)
const green = (s) => paint('32', s)
const red = (s) => paint('31', s)
const yellow = (s) => paint('33', s)

let t0 = now()
const stamp = (t) => dim(`+${(ms(t - t0) / 1000).toFixed(3)} s`.padStart(10))
const line = (t, who, text) => console.log(`  ${stamp(t)}  ${who.padEnd(7)} ${text}`)
const section = (text) => console.log(`\n${bold(text)}`)

function describeEvent (e, host) {
  switch (e.ev) {
    case 'ready': return `up (pid ${e.pid}), campaigning for "${NAME}"`
    case 'start': return green(`ELECTED for "${NAME}" (fencing token ${e.token})`)
    case 'fn': return null // the user function runs right after 'start'; one line is enough
    case 'stop': return yellow(`stops leading "${NAME}" (${e.reason})`)
    case 'removed': return `remove() resolved: its key is deleted`
    case 'error': return red(`error ${e.code}: ${e.message}`)
    default: return null
  }
}

function onEvent (e, host) {
  const text = describeEvent(e, host)
  if (text) line(e.t, host.label, text)
}

async function main () {
  console.log(bold('locked demo') + ': leader election for Node.js on etcd')
  const etcd = await startEtcd({ members: 1 })
  t0 = now()
  console.log(`etcd ${dim('(throwaway)')} on ${etcd.endpoints[0]}, data in ${etcd.dir}`)
  console.log(`three host processes compete for the singleton "${NAME}" (ttl ${TTL} s)`)

  const hosts = []
  try {
    section('1. Election')
    for (const label of ['host-1', 'host-2', 'host-3']) {
      const h = spawnHost({ endpoints: etcd.endpoints, ttl: TTL, prefix: 'demo', names: [NAME], id: label }, label, { onEvent })
      hosts.push(h)
      await h.ready
      // Join one after the other so the queue order is the start order.
      await etcd.waitKeys(`demo/${NAME}/`, (kvs) => kvs.some((kv) => kv.value === label), 5000, `key of ${label}`)
    }
    const { host: leader } = await waitForAny(hosts, { ev: 'start' }, 5000, 'a leader')
    const queue = (await etcd.keys(`demo/${NAME}/`)).map((kv) => `${kv.value} (rev ${kv.createRevision})`)
    console.log(dim(`  queue in etcd, lowest create revision leads: ${queue.join(' < ')}`))

    section(`2. Crash: SIGKILL the leader (${leader.label})`)
    const rest = hosts.filter((h) => h !== leader)
    const since = rest.map((h) => h.mark())
    const killed = now()
    leader.kill('SIGKILL')
    line(killed, leader.label, red('killed with SIGKILL (no goodbye: its lease must expire)'))
    const { host: second, event: failStart } = await waitForAny(rest, { ev: 'start' }, (TTL + 5) * 1000, 'failover', { since })
    const failover = ms(failStart.t - killed)
    console.log(`  ${bold('failover after SIGKILL: ' + failover.toFixed(0) + ' ms')} ${dim(`(ttl ${TTL} s: etcd expires the dead host's lease, then the next in line starts)`)}`)

    section(`3. Graceful handoff: ${second.label} calls remove()`)
    const last = rest.find((h) => h !== second)
    const sinceLast = last.mark()
    const removing = now()
    line(removing, second.label, 'remove()')
    second.send({ cmd: 'remove', name: NAME })
    const { event: handStart } = await waitForAny([last], { ev: 'start' }, 5000, 'handoff', { since: [sinceLast] })
    const stop = second.find({ ev: 'stop' }).pop()
    await second.waitFor({ ev: 'removed' }, 5000, 'remove() resolved')
    const handoff = ms(handStart.t - removing)
    console.log(`  ${bold('handoff after remove(): ' + handoff.toFixed(1) + ' ms')} ${dim(`(stop of ${second.label} came ${ms(handStart.t - stop.t).toFixed(1)} ms before the start of ${last.label})`)}`)

    section('4. Who leads, since when: locked status')
    const cli = path.join(__dirname, '..', 'cli.js')
    const status = spawnSync(process.execPath, [cli, 'status', '--hosts', etcd.endpoints[0], '--prefix', 'demo', '--name', NAME], { encoding: 'utf8', timeout: 15000 })
    console.log(dim(`  $ node cli.js status --hosts ${etcd.endpoints[0]} --prefix demo --name ${NAME}`))
    console.log(`  ${(status.stdout || status.stderr).trim()}`)

    section('5. Clean up')
    last.send({ cmd: 'close' })
    await last.waitFor({ ev: 'closed' }, 5000, 'close() resolved')
    line(now(), last.label, 'close(): lease revoked')
    console.log(`\n${bold('Summary')}: SIGKILL failover ${failover.toFixed(0)} ms with ttl ${TTL} s; graceful handoff ${handoff.toFixed(1)} ms.`)
  } finally {
    await killAll()
    await etcd.close()
  }
  console.log(dim('etcd and all hosts stopped, temp dir removed.'))
}

main().then(() => process.exit(0), (err) => {
  console.error(red('demo failed: ') + (err && err.stack ? err.stack : err))
  if (/Cannot find module|binding/i.test(String(err && err.message))) {
    console.error(`Is the addon built? Run: npm run build (in ${path.join(__dirname, '..')})`)
  }
  process.exit(1)
})
