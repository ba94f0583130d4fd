'use strict'
// One election and a handoff between two lockers, in one process: a leads, steps down, b takes
// over. Plain CommonJS so that every runtime the platform checks use runs it as it is (Node of
// any supported version, Bun, Deno, under emulation too). Run from a folder where `locked`
// resolves (an installed project), or with LOCKED_MODULE=<path of the package>; ETCD=host:port.
const locked = require(process.env.LOCKED_MODULE || 'locked')

const hosts = process.env.ETCD
const name = process.env.SMOKE_NAME || 'smoke'
const a = locked(hosts, { ttl: 2, id: 'a' })
const b = locked(hosts, { ttl: 2, id: 'b' })
const timer = setTimeout(() => { console.error('smoke: no handoff in time'); process.exit(1) }, Number(process.env.SMOKE_TIMEOUT_MS || 30000))
const sa = a(name, () => {
  console.log('smoke: a leads')
  const sb = b(name, async () => {
    console.log('smoke: b leads')
    await Promise.all([a.close(), b.close()])
    clearTimeout(timer)
    console.log('handover ok')
  })
  // b has seen a lead: a steps down and b must take over.
  sb.on('leader', (id) => { if (id === 'a') sa.remove() })
})
