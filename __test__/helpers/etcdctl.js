'use strict'
// `etcdctl elect ...` (etcd's Go concurrency.Election) as a child process, for interoperation
// tests: lines(n, timeoutMs) resolves its first n output lines. Killed when the test ends.

const { spawn } = require('node:child_process')

function startEtcdctlElect (t, etcd, args) {
  const proc = spawn('etcdctl', [`--endpoints=${etcd.endpoints.join(',')}`, 'elect', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') })
  let out = ''
  let err = ''
  const waiters = []
  proc.stdout.setEncoding('utf8')
  proc.stdout.on('data', (chunk) => {
    out += chunk
    for (const w of [...waiters]) w()
  })
  proc.stderr.on('data', (chunk) => { err += chunk })
  return {
    proc,
    output: () => out,
    lines (n, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const lines = out.split('\n')
          if (lines.length > n) {
            waiters.splice(waiters.indexOf(check), 1)
            clearTimeout(timer)
            resolve(lines.slice(0, n))
            return true
          }
          return false
        }
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(check), 1)
          reject(new Error(`etcdctl elect ${args.join(' ')}: no ${n} lines within ${timeoutMs} ms; output ${JSON.stringify(out)} stderr ${err}`))
        }, timeoutMs)
        waiters.push(check)
        check()
      })
    }
  }
}


module.exports = { startEtcdctlElect }
