'use strict'
// Run from scripts/pack-check.sh: elections with the installed package in the project given, once
// through require() and once through import, against a throwaway etcd.
const assert = require('node:assert')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { startEtcd } = require('../__test__/helpers/etcd')

const project = process.argv[2]
const platform = process.argv[3] || 'linux-x64-gnu'

// Two lockers compete for one name; the leader removes itself and the other takes over.
const election = (load) => `${load}
const hosts = process.env.ETCD
const a = locked(hosts, { ttl: 2, id: 'a' })
const b = locked(hosts, { ttl: 2, id: 'b' })
const timer = setTimeout(() => { console.error('timed out'); process.exit(1) }, 15000)
const sa = a('job', () => {
  const sb = b('job', async () => {
    await Promise.all([a.close(), b.close()])
    clearTimeout(timer)
    console.log('handover ok')
  })
  sb.on('leader', (id) => { if (id === 'a') sa.remove() })
})
`

async function main () {
  const etcd = await startEtcd({ members: 1 })
  try {
    const env = { ...process.env, ETCD: etcd.endpoints.join(',') }
    const resolved = spawnSync(process.execPath, ['-p', `require.resolve('locked') + ' ' + require.resolve('locked-${platform}')`], { cwd: project, encoding: 'utf8' })
    assert.strictEqual(resolved.status, 0, resolved.stderr)
    for (const file of resolved.stdout.trim().split(' ')) {
      assert.ok(file.startsWith(path.join(project, 'node_modules')), `${file} comes from the installed packages`)
    }
    // Only the entry points are public: the package.json, not the files behind them.
    const exported = spawnSync(process.execPath, ['-e', `
      for (const p of ['locked/v2.js', 'locked/binding.js', 'locked/lib/core.js']) {
        try { require(p); throw new Error(p + ' can be required') } catch (e) { if (e.code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw e }
      }
      console.log(require('locked/package.json').version)`], { cwd: project, encoding: 'utf8' })
    assert.strictEqual(exported.status, 0, exported.stderr)
    console.log(`pack-check: locked/package.json (${exported.stdout.trim()}) is exported, the files behind the entry points are not`)
    const runs = [
      ['require()', ['-e', election("const locked = require('locked')")]],
      ['import', ['--input-type=module', '-e', election("import locked from 'locked'")]],
      ['named import', ['--input-type=module', '-e', election("import { locked } from 'locked'")]]
    ]
    for (const [how, args] of runs) {
      const r = spawnSync(process.execPath, args, { cwd: project, env, encoding: 'utf8', timeout: 30000 })
      assert.strictEqual(r.status, 0, `${how}: exit ${r.status}\n${r.stdout}${r.stderr}`)
      assert.match(r.stdout, /handover ok/, `${how}: ${r.stdout}${r.stderr}`)
      console.log(`pack-check: election through ${how}: ok`)
    }
    const cli = spawnSync(path.join(project, 'node_modules', '.bin', 'locked'), ['--help'], { encoding: 'utf8' })
    assert.strictEqual(cli.status, 0, cli.stderr)
    assert.match(cli.stdout, /locked run/)
    console.log('pack-check: the locked command is installed')
  } finally {
    await etcd.close()
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
