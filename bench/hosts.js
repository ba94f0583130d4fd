'use strict'
// The harness side of a competing host (bench/host.js): spawn it, send it commands, wait for
// its events. Every wait is bounded in time; every host is killed when the harness exits.

const { fork } = require('node:child_process')
const path = require('node:path')

const HOST = path.join(__dirname, 'host.js')
const live = new Set()

process.on('exit', () => {
  for (const host of live) host.killNow()
})

class Host {
  /**
   * @param {object} config  { lib, endpoint, ttl, prefix, quiet, register, heartbeat }
   */
  constructor (config) {
    this.config = config
    this.lib = config.lib
    this.events = [] // every message that is not a reply, in arrival order
    this.waiters = new Set()
    this.replies = new Map()
    this.nextId = 1
    this.exited = null
    this.errors = []
    this.child = fork(HOST, [JSON.stringify(config)], {
      execArgv: ['--expose-gc'],
      serialization: 'advanced', // carries the BigInt times as they are
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    })
    this.pid = this.child.pid
    live.add(this)
    this.child.on('message', (msg) => this.#onMessage(msg))
    this.child.on('exit', (code, signal) => {
      this.exited = { code, signal }
      live.delete(this)
      for (const { reject } of this.replies.values()) reject(new Error(`host ${this.pid} exited (${code ?? signal})`))
      this.replies.clear()
      this.#check()
    })
  }

  #onMessage (msg) {
    if (msg.type === 'reply') {
      const pending = this.replies.get(msg.id)
      if (!pending) return
      this.replies.delete(msg.id)
      if (msg.ok) pending.resolve(msg)
      else pending.reject(new Error(`host ${this.lib}/${this.pid}: ${msg.message}`))
      return
    }
    if (msg.type === 'error') this.errors.push(msg)
    msg.seq = this.events.length
    this.events.push(msg)
    this.#check()
  }

  #check () {
    for (const waiter of this.waiters) {
      const found = this.events.find(waiter.predicate)
      if (found) {
        this.waiters.delete(waiter)
        clearTimeout(waiter.timer)
        waiter.resolve(found)
      } else if (this.exited && !waiter.allowExit) {
        this.waiters.delete(waiter)
        clearTimeout(waiter.timer)
        waiter.reject(new Error(`host ${this.lib}/${this.pid} exited (${JSON.stringify(this.exited)}) while waiting for ${waiter.what}`))
      }
    }
  }

  /** Resolves with the first event (already received or to come) matching `predicate`. */
  waitFor (predicate, timeoutMs, what = 'an event') {
    return new Promise((resolve, reject) => {
      const waiter = { predicate, resolve, reject, what, timer: null }
      waiter.timer = setTimeout(() => {
        this.waiters.delete(waiter)
        reject(new TimeoutError(`host ${this.lib}/${this.pid}: no ${what} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.waiters.add(waiter)
      this.#check()
    })
  }

  waitEvent (type, name, timeoutMs) {
    return this.waitFor((e) => e.type === type && (name === undefined || e.name === name), timeoutMs, `${type}${name ? ` of ${name}` : ''}`)
  }

  /** The first matching event after position `from` of the log (see `mark()`). */
  waitEventAfter (from, type, name, timeoutMs) {
    return this.waitFor((e) => e.seq >= from && e.type === type && (name === undefined || e.name === name), timeoutMs, `${type}${name ? ` of ${name}` : ''}`)
  }

  mark () {
    return this.events.length
  }

  ready (timeoutMs = 15000) {
    return this.waitEvent('ready', undefined, timeoutMs)
  }

  request (cmd, args = {}, timeoutMs = 30000) {
    if (this.exited) return Promise.reject(new Error(`host ${this.lib}/${this.pid} has exited`))
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.replies.delete(id)
        reject(new TimeoutError(`host ${this.lib}/${this.pid}: ${cmd} not answered within ${timeoutMs} ms`))
      }, timeoutMs)
      this.replies.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v) },
        reject: (e) => { clearTimeout(timer); reject(e) }
      })
      this.child.send({ ...args, cmd, id })
    })
  }

  signal (sig) {
    const t = process.hrtime.bigint()
    this.child.kill(sig)
    return t
  }

  killNow () {
    if (this.exited) return
    try { this.child.kill('SIGCONT') } catch {}
    try { this.child.kill('SIGKILL') } catch {}
  }

  /** Asks the host to exit; SIGKILLs it if it has not within `timeoutMs`. */
  async stop (timeoutMs = 3000) {
    if (this.exited) return
    const gone = new Promise((resolve) => this.child.once('exit', resolve))
    try { this.child.kill('SIGCONT') } catch {}
    this.request('exit', {}, timeoutMs).catch(() => {})
    const timer = setTimeout(() => this.killNow(), timeoutMs)
    await gone
    clearTimeout(timer)
  }
}

class TimeoutError extends Error {}

async function stopAll (hosts) {
  await Promise.all(hosts.filter(Boolean).map((h) => h.stop()))
}

module.exports = { Host, TimeoutError, stopAll }
