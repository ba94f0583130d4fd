'use strict'
// The JS API in this process: shapes, host formats, bad input, unreachable etcd.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const { EventEmitter } = require('node:events')
const locked = require('..')
const { startEtcd, freePorts } = require('./helpers/etcd')
const { spawnHost, killAll } = require('./helpers/hosts')
const { uniquePrefix, nextEvent, within, UUID_V4 } = require('./helpers/util')
const { lockerSet } = require('./helpers/lockers')

let etcd
const lockers = lockerSet()

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await lockers.closeAll({ waitAtMostMs: 3000 })
  await killAll()
  if (etcd) await etcd.close()
})

describe('API shapes', { timeout: 60000 }, () => {
  it('locked is a function; a locker is callable with id(), singletons(), close() and events', async () => {
    assert.strictEqual(typeof locked, 'function')
    const locker = lockers.open(etcd.endpoints, { ttl: 2, prefix: uniquePrefix('shape') })
    assert.strictEqual(typeof locker, 'function', 'the locker is callable')
    assert.strictEqual(typeof locker.id, 'function')
    assert.strictEqual(typeof locker.singletons, 'function')
    assert.strictEqual(typeof locker.close, 'function')
    assert.strictEqual(typeof locker.on, 'function', 'the locker is an EventEmitter for connection errors')
    assert.match(locker.id(), UUID_V4, 'id() is a uuid v4')
    assert.strictEqual(locker.id(), locker.id(), 'id() is stable')
    assert.deepStrictEqual(locker.singletons(), {})
    const other = lockers.open(etcd.endpoints, { ttl: 2 })
    assert.notStrictEqual(other.id(), locker.id(), 'each locker has its own id')
    const named = lockers.open(etcd.endpoints, { ttl: 2, id: 'my-host-1' })
    assert.strictEqual(named.id(), 'my-host-1', 'options.id is used')
    await Promise.all([locker.close(), other.close(), named.close()])
  })

  it('a singleton has name, on, remove; singletons() lists the registered ones', async () => {
    const prefix = uniquePrefix('singleton')
    const locker = lockers.open(etcd.endpoints, { ttl: 2, prefix })
    const calls = []
    const build = locker('build', function (remove, term) { calls.push({ remove, term, self: this }) })
    assert.strictEqual(build.name, 'build')
    assert.strictEqual(typeof build.on, 'function')
    assert.strictEqual(typeof build.remove, 'function')
    assert.ok(build instanceof EventEmitter, 'a singleton is an EventEmitter')
    assert.deepStrictEqual(Object.keys(locker.singletons()), ['build'])
    assert.strictEqual(locker.singletons().build, build)
    const [term] = await nextEvent(build, 'start', 5000, 'start of build')
    assert.strictEqual(typeof term.token, 'number')
    assert.strictEqual(calls.length, 1, 'fn is called right after the start listeners')
    assert.strictEqual(calls[0].term.token, term.token)
    assert.strictEqual(typeof calls[0].remove, 'function')

    const test = locker('test', () => {})
    assert.deepStrictEqual(Object.keys(locker.singletons()).sort(), ['build', 'test'])
    await nextEvent(test, 'start', 5000, 'start of test')

    const stopped = nextEvent(build, 'stop', 5000, 'stop of build')
    const p = build.remove()
    assert.ok(p instanceof Promise, 'remove() returns a Promise')
    assert.deepStrictEqual(Object.keys(locker.singletons()), ['test'], 'a removed singleton is gone from singletons() at once')
    await p
    assert.deepStrictEqual(await stopped, ['removed'])
    assert.deepStrictEqual((await etcd.keys(`${prefix}/build/`)), [], 'the key is deleted when remove() resolves')
    // The name can be registered again once removed.
    const again = locker('build', () => {})
    await nextEvent(again, 'start', 5000, 'start of build again')
    const closed = locker.close()
    assert.ok(closed instanceof Promise, 'close() returns a Promise')
    await closed
    assert.deepStrictEqual(await etcd.keys(`${prefix}/`), [], 'close() deleted every key (lease revoked)')
  })

  it('a singleton\'s listeners: names of Object.prototype are ordinary event names, none is there before it is added', async () => {
    const locker = lockers.open(etcd.endpoints, { ttl: 2, prefix: uniquePrefix('listeners') })
    const s = locker('listeners', () => {})
    for (const name of ['toString', 'constructor', 'hasOwnProperty', '__proto__']) {
      assert.strictEqual(s.listenerCount(name), 0, `no ${name} listener before one is added`)
      assert.strictEqual(s.emit(name), false, `emit('${name}') finds nobody`)
    }
    const heard = []
    const listener = (v) => heard.push(['__proto__', v])
    s.on('__proto__', listener)
    s.once('toString', (v) => heard.push(['toString', v]))
    s.on('start', () => {})
    assert.deepStrictEqual(s.eventNames().sort(), ['__proto__', 'start', 'toString'])
    assert.strictEqual(s.emit('__proto__', 1), true)
    assert.strictEqual(s.emit('toString', 2), true)
    assert.strictEqual(s.emit('toString', 3), false, 'a once listener is gone after its call')
    s.off('__proto__', listener)
    assert.deepStrictEqual(s.eventNames(), ['start'])
    assert.deepStrictEqual(heard, [['__proto__', 1], ['toString', 2]])
    s.removeAllListeners()
    assert.deepStrictEqual(s.eventNames(), [])
    await locker.close()
  })

  for (const [label, form] of [
    ['an array', (ep) => [ep]],
    ['a "h:p" string', (ep) => ep],
    ['a "h1:p1,h2:p2" string', (ep) => `${ep},localhost:${ep.split(':')[1]}`],
    ['an "http://" prefix', (ep) => `http://${ep}`],
    ['an array of "http://" hosts', (ep) => [`http://${ep}`, `http://localhost:${ep.split(':')[1]}`]],
    ['"http://h:p/" with a trailing slash', (ep) => `http://${ep}/`]
  ]) {
    it(`hosts given as ${label} work`, async () => {
      const prefix = uniquePrefix('hosts')
      const locker = lockers.open(form(etcd.endpoints[0]), { ttl: 2, prefix })
      const s = locker('h', () => {})
      await nextEvent(s, 'start', 5000, `start with hosts as ${label}`)
      await locker.close()
    })
  }

  it('duplicate names on one locker throw; the same name on two lockers compete', async () => {
    const prefix = uniquePrefix('dup')
    const a = lockers.open(etcd.endpoints, { ttl: 2, prefix })
    const b = lockers.open(etcd.endpoints, { ttl: 2, prefix })
    const sa = a('dup', () => {})
    assert.throws(() => a('dup', () => {}), Error, 'registering the same name twice throws')
    await nextEvent(sa, 'start', 5000)
    const sb = b('dup', () => {})
    await etcd.waitKeys(`${prefix}/dup/`, (kvs) => kvs.length === 2, 5000, 'two candidates')
    const bStart = nextEvent(sb, 'start', 5000, 'b start after a removed')
    await sa.remove()
    await bStart
    await Promise.all([a.close(), b.close()])
  })
})

describe('bad input', { timeout: 30000 }, () => {
  const ep = () => etcd.endpoints
  it('wrong types throw TypeError synchronously', () => {
    for (const hosts of [undefined, null, 42, {}, true, [42], [null], () => {}]) {
      assert.throws(() => locked(hosts), TypeError, `hosts = ${String(hosts)}`)
    }
    for (const options of ['ttl', 42, true]) {
      assert.throws(() => locked(ep(), options), TypeError, `options = ${String(options)}`)
    }
    assert.throws(() => locked(ep(), { ttl: '10' }), TypeError, 'ttl as a string')
    assert.throws(() => locked(ep(), { prefix: 42 }), TypeError, 'prefix as a number')
    assert.throws(() => locked(ep(), { id: 42 }), TypeError, 'id as a number')
    const locker = lockers.open(ep(), { ttl: 2, prefix: uniquePrefix('types') })
    assert.throws(() => locker(), TypeError, 'no name')
    assert.throws(() => locker(42, () => {}), TypeError, 'name as a number')
    assert.throws(() => locker({}, () => {}), TypeError, 'name as an object')
    assert.throws(() => locker('x', 'not a function'), TypeError, 'fn as a string')
    assert.throws(() => locker('x', 42), TypeError, 'fn as a number')
    assert.deepStrictEqual(locker.singletons(), {}, 'nothing was registered by the failed calls')
    return locker.close()
  })

  it('empty hosts or a ttl below 2 throw RangeError', () => {
    assert.throws(() => locked([]), RangeError, 'hosts = []')
    assert.throws(() => locked(''), RangeError, "hosts = ''")
    for (const ttl of [1, 0, -1, 1.9]) {
      assert.throws(() => locked(ep(), { ttl }), RangeError, `ttl = ${ttl}`)
    }
  })

  it('unreachable etcd: error events with a code, no start, and the process does not crash', async () => {
    const [closedPort] = await freePorts(1) // nothing listens there
    const endpoints = [`127.0.0.1:${closedPort}`]
    const prefix = uniquePrefix('unreachable')
    // One host listens to errors; one does not (errors must then be dropped, not thrown).
    const a = spawnHost({ endpoints, ttl: 2, prefix, names: ['u'] }, 'A')
    const quiet = spawnHost({ endpoints, ttl: 2, prefix, names: ['u'], noErrorListeners: true, uncaught: 'log' }, 'quiet')
    const first = await a.waitFor({ ev: 'error' }, 20000, 'an error event')
    assert.strictEqual(typeof first.code, 'string', 'the error has a code')
    assert.ok(first.code.length > 0)
    assert.ok(first.errorName && /Error/.test(first.errorName), 'an Error object')
    const second = await a.waitFor((e) => e.ev === 'error' && e.i > first.i, 20000, 'a second error event (it keeps trying)')
    assert.strictEqual(typeof second.code, 'string')
    // The silent host is still alive and well after the same time.
    await quiet.request({ cmd: 'ping' }, { ev: 'pong' }, 5000)
    await a.request({ cmd: 'ping' }, { ev: 'pong' }, 5000)
    assert.deepStrictEqual(a.find({ ev: 'start' }), [], 'no start')
    assert.deepStrictEqual(quiet.find({ ev: 'start' }), [], 'no start')
    assert.deepStrictEqual(quiet.find({ ev: 'uncaught' }), [], 'no uncaught exception')
    assert.ok(a.alive && quiet.alive)
    // And in this process too: a locker on a dead port emits errors and nothing else.
    const locker = lockers.open(endpoints, { ttl: 2, prefix })
    let gotError
    const firstError = new Promise((resolve) => { gotError = resolve })
    locker.on('error', (err) => gotError(err))
    const s = locker('u', () => { throw new Error('must not be elected') })
    s.on('error', (err) => gotError(err))
    let started = false
    s.on('start', () => { started = true })
    const err = await within(firstError, 20000, 'an error event in this process')
    assert.ok(err instanceof Error)
    assert.strictEqual(typeof err.code, 'string')
    assert.strictEqual(started, false)
    a.kill()
    quiet.kill()
  })
})
