'use strict'
// The programs in examples/ as child processes, run the way a user runs a copy of them: they
// `require('locked')`. Within the package that finds the package itself (its `exports`), but not
// from a folder with a package.json of its own (examples/kubernetes/): NODE_PATH holds a temporary
// node_modules with one symlink, locked -> the repository root, so that every program finds it.
//
//   const { runProgram, killPrograms } = require('./helpers/programs')
//   const p = runProgram('examples/cron.js', { env: { ETCD_HOSTS: etcd.endpoints.join(',') } })
//   await p.waitOutput(/elected/, 10000)       // resolves the match; output so far in p.output()
//   const mark = p.mark(); ...; await p.waitOutput(/again/, 5000, { since: mark })
//   p.kill('SIGTERM'); const { code, signal } = await p.exited
//   after(killPrograms)                         // SIGKILL whatever is still running

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ROOT = path.join(__dirname, '..', '..')
const live = new Set()
let modulesDir = null

function killEverythingSync () {
  for (const p of live) {
    try { p.proc.kill('SIGKILL') } catch {}
  }
  if (modulesDir) fs.rmSync(path.dirname(modulesDir), { recursive: true, force: true })
  modulesDir = null
}
process.on('exit', killEverythingSync)
// A test run stopped by a signal skips 'exit': clean up first, then let the signal take its course.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.prependOnceListener(sig, () => {
    killEverythingSync()
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
  })
}

// A node_modules folder whose only entry is `locked`, a symlink to this repository.
function lockedModules () {
  if (modulesDir) return modulesDir
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'locked-programs-'))
  fs.mkdirSync(path.join(dir, 'node_modules'))
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'locked'), 'dir')
  modulesDir = path.join(dir, 'node_modules')
  return modulesDir
}

class Program {
  constructor (file, { env = {}, args = [], label, command } = {}) {
    this.file = file
    this.label = label || path.basename(file)
    this.out = ''
    this.waiters = []
    this.exitInfo = null
    const nodePath = [lockedModules(), process.env.NODE_PATH].filter(Boolean).join(path.delimiter)
    // command: a wrapper to run node under (e.g. ['unshare', '--pid', '--fork']).
    const argv = [...(command || []), process.execPath, path.resolve(ROOT, file), ...args]
    this.proc = spawn(argv[0], argv.slice(1), {
      cwd: ROOT,
      env: { ...process.env, NODE_PATH: nodePath, ...env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    live.add(this)
    for (const stream of [this.proc.stdout, this.proc.stderr]) {
      stream.setEncoding('utf8')
      stream.on('data', (chunk) => {
        this.out += chunk
        if (process.env.LOCKED_TEST_VERBOSE) process.stderr.write(`[${this.label}] ${chunk}`)
        this._check()
      })
    }
    this.exited = new Promise((resolve) => {
      // 'close': the process is gone and its output fully read.
      this.proc.once('close', (code, signal) => {
        live.delete(this)
        this.exitInfo = { code, signal }
        resolve(this.exitInfo)
        this._check()
      })
    })
  }

  output () { return this.out }

  // A position in the output: pass as { since } to match only what comes after it.
  mark () { return this.out.length }

  // The first match of `re` in the output (from `since` on), already printed or to come. Rejects
  // after timeoutMs, or when the program exits without printing it, with the output so far.
  waitOutput (re, timeoutMs = 10000, { since = 0 } = {}) {
    return new Promise((resolve, reject) => {
      const w = { re, since, resolve, reject }
      w.timer = setTimeout(() => this._settle(w, new Error(`${this.label}: no ${re} within ${timeoutMs} ms`)), timeoutMs)
      this.waiters.push(w)
      this._check()
    })
  }

  _check () {
    for (const w of [...this.waiters]) {
      const m = this.out.slice(w.since).match(w.re)
      if (m) this._settle(w, null, m)
      else if (this.exitInfo) this._settle(w, new Error(`${this.label} exited (${JSON.stringify(this.exitInfo)}) without printing ${w.re}`))
    }
  }

  _settle (w, err, match) {
    const i = this.waiters.indexOf(w)
    if (i < 0) return
    this.waiters.splice(i, 1)
    clearTimeout(w.timer)
    if (err) {
      err.message += `; its output:\n${this.out.trimEnd().split('\n').slice(-40).join('\n')}`
      w.reject(err)
    } else {
      w.resolve(match)
    }
  }

  kill (signal = 'SIGKILL') {
    if (this.exitInfo) return false
    try { return this.proc.kill(signal) } catch { return false }
  }
}

function runProgram (file, options) {
  return new Program(file, options)
}

// SIGKILL every program still running and wait until each is gone.
async function killPrograms () {
  const running = [...live]
  for (const p of running) p.kill('SIGKILL')
  await Promise.all(running.map((p) => p.exited))
}

module.exports = { runProgram, killPrograms, lockedModules }
