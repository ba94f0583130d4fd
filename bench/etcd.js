'use strict'
// The benchmark's etcd: one member from the tests' own fixture (free loopback ports, a fresh data
// dir on tmpfs, killed however this process ends, also by SIGKILL), with what only the benchmark
// reads: etcd's whole /metrics and its CPU time.
//
//   const etcd = await startEtcd()
//   etcd.endpoint            // '127.0.0.1:port'
//   await etcd.metrics()     // Map of 'name{labels}' -> number, from etcd's /metrics
//   etcd.cpuSeconds()        // etcd's own user+system CPU so far, from /proc/<pid>/stat
//   await etcd.stop()        // SIGKILL, remove the data dir (idempotent)

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const fixture = require('../__test__/helpers/etcd')

const ETCD = process.env.ETCD_BIN || 'etcd'

function etcdVersion () {
  try {
    const text = execFileSync(ETCD, ['--version'], { encoding: 'utf8', timeout: 5000 })
    const m = /etcd Version:\s*(\S+)/.exec(text)
    return m ? m[1] : text.split('\n')[0]
  } catch (err) {
    return `unknown (${err.message})`
  }
}

async function startEtcd () {
  // etcd's info-level log would cost it CPU the benchmark charges to the libraries.
  const cluster = await fixture.startEtcd({ members: 1, extraArgs: ['--log-level', 'error'] })
  const member = cluster.members[0]
  return {
    endpoint: member.endpoint,
    url: member.clientUrl,
    dir: cluster.dir,
    metrics: () => member.metrics(3000),
    cpuSeconds: () => procCpuSeconds(member.pid),
    stop: () => cluster.close()
  }
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 2000 }).trim()) || 100
  } catch {
    return 100
  }
})()

/** User + system CPU seconds of process `pid`, from /proc/<pid>/stat (NaN where unreadable). */
function procCpuSeconds (pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the command.
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
  } catch {
    return NaN
  }
}

// How many term records locked writes for these names: one per bucket of names (keys under
// `<prefix>//terms/`, see docs/how-it-works.md).
function termRecords (names) {
  return new Set(names.map(fixture.termBucket)).size
}

module.exports = { startEtcd, etcdVersion, termRecords }
