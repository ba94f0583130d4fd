'use strict'
// A host whose locker lives in a worker thread. Same protocol as host.js (argv[2] config, JSON
// lines out, JSON commands in), plus { cmd: 'terminate' }: worker.terminate(), then prints
// 'terminated' with the exit code. The main thread never loads the addon, and it stays alive on
// stdin after the worker is gone, so a test can watch what the worker's lease does.

const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads')

if (isMainThread) {
  const config = JSON.parse(process.argv[2] || '{}')
  const print = (ev, fields) => process.stdout.write(JSON.stringify({ t: process.hrtime.bigint().toString(), ev, ...fields }) + '\n')
  const worker = new Worker(__filename, { workerData: config })
  let workerGone = false
  worker.on('message', (line) => process.stdout.write(line + '\n'))
  worker.on('error', (err) => print('error', { scope: 'worker', code: err.code, message: err.message }))
  worker.on('exit', (code) => { workerGone = true; print('worker-exit', { code }) })
  let buffered = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk) => {
    buffered += chunk
    let i
    while ((i = buffered.indexOf('\n')) >= 0) {
      const msg = JSON.parse(buffered.slice(0, i))
      buffered = buffered.slice(i + 1)
      if (msg.cmd === 'terminate') {
        const t0 = process.hrtime.bigint()
        worker.terminate().then((code) => print('terminated', { code, since: String(t0) }))
      } else if (msg.cmd === 'ping') {
        print('pong', { workerGone })
      } else if (msg.cmd === 'exit') {
        print('exiting', { code: msg.code || 0 })
        process.exit(msg.code || 0)
      } else if (!workerGone) {
        worker.postMessage(msg)
      }
    }
  })
  process.stdin.on('end', () => process.exit(0))
} else {
  const locked = require(workerData.module || '../..')
  const opts = { ttl: workerData.ttl, prefix: workerData.prefix, guardian: !!workerData.guardian }
  if (workerData.id) opts.id = workerData.id
  const locker = locked(workerData.endpoints, opts)
  const emit = (ev, fields) => parentPort.postMessage(JSON.stringify({ t: process.hrtime.bigint().toString(), ev, id: locker.id(), thread: 'worker', ...fields }))
  locker.on('error', (err) => emit('error', { name: null, scope: 'locker', code: err.code, message: err.message }))
  const singletons = new Map()
  for (const name of workerData.names || []) {
    const s = locker(name, (remove, term) => emit('fn', { name, token: term && term.token }))
    s.on('start', (term) => emit('start', { name, token: term && term.token }))
    s.on('stop', (reason) => emit('stop', { name, reason }))
    s.on('error', (err) => emit('error', { name, scope: 'singleton', code: err.code, message: err.message }))
    singletons.set(name, s)
  }
  parentPort.on('message', (msg) => {
    if (msg.cmd === 'remove') singletons.get(msg.name).remove().then(() => emit('removed', { name: msg.name }))
    if (msg.cmd === 'close') locker.close().then(() => emit('closed', {}))
    if (msg.cmd === 'guardian') emit('guardian', { pid: locker.stats().guardian ? locker.stats().guardian.pid : null })
  })
  emit('ready', { names: workerData.names || [] })
}
