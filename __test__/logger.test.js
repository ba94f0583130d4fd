'use strict'
// The `logger` option: the election's narration and its errors reach the application's logger,
// called as pino and console take it (an object of fields, then the message). Without a logger,
// DEBUG=locked (also locked:* and comma lists) prints the narration on stderr.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert')
const locked = require('..')
const { startEtcd, freePorts } = require('./helpers/etcd')
const { spawnHost, killAll } = require('./helpers/hosts')
const { uniquePrefix, nextEvent, until } = require('./helpers/util')
const { lockerSet } = require('./helpers/lockers')

let etcd
const lockers = lockerSet()

before(async () => { etcd = await startEtcd({ members: 1 }) })
after(async () => {
  await lockers.closeAll({ waitAtMostMs: 3000 })
  await killAll()
  if (etcd) await etcd.close()
})

// A logger that keeps every call: { level, args }. `debugEnabled` answers isLevelEnabled('debug')
// as pino does; left undefined, the logger has no isLevelEnabled, like console.
function collectingLogger ({ debugEnabled } = {}) {
  const calls = []
  const logger = { calls }
  for (const level of ['debug', 'info', 'warn', 'error']) {
    logger[level] = function (...args) {
      assert.strictEqual(this, logger, 'called as a method of the logger (pino needs its this)')
      calls.push({ level, args })
    }
  }
  if (debugEnabled !== undefined) logger.isLevelEnabled = (level) => level !== 'debug' || debugEnabled
  return logger
}

// Every call as pino takes it: a plain object of fields naming the locker, then a string.
function assertPinoShape (calls, lockerId) {
  assert.ok(calls.length > 0, 'the logger was called')
  for (const { level, args } of calls) {
    assert.strictEqual(args.length, 2, `${level}: two arguments, got ${args.length}`)
    const [fields, message] = args
    assert.strictEqual(Object.getPrototypeOf(fields), Object.prototype, `${level}: the first argument is a plain object`)
    assert.strictEqual(typeof message, 'string', `${level}: the second argument is a string`)
    assert.strictEqual(fields.locker, lockerId, `${level} ${message}: fields.locker is the locker id`)
  }
}

const find = (logger, level, message) =>
  logger.calls.filter((c) => c.level === level && (message === undefined || c.args[1] === message))

describe('options.logger', { timeout: 60000 }, () => {
  it('must be an object with debug, info, warn and error functions (TypeError with a code)', () => {
    const noop = () => {}
    const full = { debug: noop, info: noop, warn: noop, error: noop }
    for (const [label, logger] of [
      ['null', null],
      ['a string', 'pino'],
      ['a number', 1],
      ['an object without error()', { debug: noop, info: noop, warn: noop }],
      ['an object whose info is not a function', { ...full, info: 'yes' }],
      ['an empty object', {}]
    ]) {
      assert.throws(() => locked(etcd.endpoints, { logger }), (err) => {
        assert.ok(err instanceof TypeError, `${label}: a TypeError`)
        assert.strictEqual(err.code, 'ERR_INVALID_ARG_TYPE', `${label}: its code`)
        assert.match(err.message, /options\.logger/, `${label}: the message names the option`)
        return true
      }, label)
    }
    const locker = lockers.open(etcd.endpoints, { logger: full, prefix: uniquePrefix('valid') })
    const withConsole = lockers.open(etcd.endpoints, { logger: console, prefix: uniquePrefix('console') })
    return Promise.all([locker.close(), withConsole.close()])
  })

  it('gets the narration: the native steps (debug), elected and stepped down (info), in pino shape', async () => {
    const prefix = uniquePrefix('narration')
    const logger = collectingLogger()
    const locker = lockers.open(etcd.endpoints, { ttl: 2, prefix, logger })
    const job = locker('job')
    const [term] = await nextEvent(job, 'start', 5000, 'start of job')
    const [elected] = find(logger, 'info', 'elected')
    assert.ok(elected, `an 'elected' line at info; calls: ${JSON.stringify(logger.calls.map((c) => c.args[1]))}`)
    assert.strictEqual(elected.args[0].name, 'job')
    assert.strictEqual(elected.args[0].token, term.token, 'the fencing token of the term')
    const steps = find(logger, 'debug').map((c) => c.args[1])
    assert.ok(steps.some((m) => /^lease [0-9a-f]+ granted, ttl 2 s$/.test(m)), `the lease grant at debug; got ${JSON.stringify(steps)}`)
    assert.ok(steps.some((m) => m.startsWith(`job: campaign with key ${prefix}/job/`)), 'the campaign at debug')
    assert.strictEqual(find(logger, 'info', 'stepped down').length, 0, 'not stepped down yet')
    await job.remove()
    const [stepped] = find(logger, 'info', 'stepped down')
    assert.ok(stepped, "a 'stepped down' line at info after remove()")
    assert.deepStrictEqual({ ...stepped.args[0], locker: undefined }, { locker: undefined, name: 'job', token: term.token, reason: 'removed' })
    assert.deepStrictEqual(find(logger, 'error'), [], 'no error')
    assertPinoShape(logger.calls, locker.id())
    await locker.close()
  })

  it('a leader whose key is deleted from outside: stepped down at warn, with its reason', async () => {
    const prefix = uniquePrefix('warn')
    const logger = collectingLogger()
    const locker = lockers.open(etcd.endpoints, { ttl: 2, prefix, logger })
    const job = locker('job')
    await nextEvent(job, 'start', 5000, 'start of job')
    const [key] = await etcd.keys(`${prefix}/job/`)
    const stopped = nextEvent(job, 'stop', 5000, 'stop of job')
    await etcd.del(key.key)
    assert.deepStrictEqual(await stopped, ['key-deleted'])
    const [warned] = find(logger, 'warn', 'stepped down')
    assert.ok(warned, 'a warning')
    assert.strictEqual(warned.args[0].reason, 'key-deleted')
    assert.strictEqual(warned.args[0].name, 'job')
    // It campaigns again at once (the start may come before a listener could be added here).
    await until(() => find(logger, 'info', 'elected').length === 2, 10000, 'elected again')
    assert.strictEqual(job.isLeader(), true)
    assertPinoShape(logger.calls, locker.id())
    await locker.close()
  })

  it('gets every error: etcd unreachable (locker and singleton) and a throwing fn, with code and err', async () => {
    const [closedPort] = await freePorts(1) // nothing listens there
    const logger = collectingLogger()
    const down = lockers.open(`127.0.0.1:${closedPort}`, { ttl: 2, prefix: uniquePrefix('down'), logger })
    down('job') // no 'error' listeners anywhere: logged all the same
    const unavailable = await until(() => find(logger, 'error').find((c) => c.args[0].code === 'ETCD_UNAVAILABLE'), 20000, 'ETCD_UNAVAILABLE logged')
    const [fields, message] = unavailable.args
    assert.ok(fields.err instanceof locked.LockedError, 'fields.err is the error')
    assert.strictEqual(fields.err.message, message, 'the message is the error message')
    assertPinoShape(logger.calls, down.id())

    const up = collectingLogger()
    const locker = lockers.open(etcd.endpoints, { ttl: 2, prefix: uniquePrefix('throws'), logger: up })
    const job = locker('job', () => { throw new Error('boom') })
    const [emitted] = await nextEvent(job, 'error', 5000, 'USER_FN_THREW')
    const [logged] = find(up, 'error')
    assert.ok(logged, 'the error reached the logger')
    assert.strictEqual(logged.args[0].code, 'USER_FN_THREW')
    assert.strictEqual(logged.args[0].name, 'job')
    assert.strictEqual(logged.args[0].err, emitted, 'the same error the singleton emitted')
    assert.strictEqual(logged.args[0].err.cause.message, 'boom')
    assertPinoShape(up.calls, locker.id())
    await Promise.all([down.close().catch(() => {}), locker.close()])
  })

  it("a logger whose debug level is off (pino's isLevelEnabled) gets no native steps, and the rest", async () => {
    const logger = collectingLogger({ debugEnabled: false })
    const locker = lockers.open(etcd.endpoints, { ttl: 2, prefix: uniquePrefix('quiet'), logger })
    const job = locker('job')
    await nextEvent(job, 'start', 5000, 'start of job')
    assert.strictEqual(find(logger, 'info', 'elected').length, 1, 'elected at info')
    assert.deepStrictEqual(find(logger, 'debug'), [], 'no debug line: the native core did not narrate')
    await locker.close()
  })

  it('reaches the locked@2.x nodes of the locker too', async () => {
    const logger = collectingLogger()
    const locker = locked(etcd.endpoints, { logger })
    const node = locker({ id: 'n1', path: `/${uniquePrefix('node')}`, value: 'v', ttl: 2 })
    const selected = nextEvent(node, 'select', 5000, 'select')
    node.start()
    await selected
    await node.stop()
    assert.ok(find(logger, 'info', 'elected').some((c) => c.args[0].locker === 'n1:::v'), 'the node was elected, logged with its locker id')
    assert.ok(find(logger, 'info', 'stepped down').some((c) => c.args[0].reason === 'removed'), 'stop() stepped down')
    await locker.close()
  })
})

describe('DEBUG without a logger', { timeout: 60000 }, () => {
  for (const DEBUG of ['locked', 'locked:*', 'app,locked', 'app:*,locked:*', '*']) {
    it(`DEBUG=${DEBUG} narrates on stderr`, async () => {
      const h = spawnHost({ endpoints: etcd.endpoints, ttl: 2, prefix: uniquePrefix('debug'), names: ['job'], id: 'dbg' }, 'debug', { env: { DEBUG, LOCKED_LOG: '' } })
      const start = await h.waitFor({ ev: 'start' }, 10000, 'start')
      await until(() => h.stderr.includes(`locked dbg job: elected with token ${start.token}\n`), 5000, `the election narrated on stderr; got ${JSON.stringify(h.stderr)}`)
      h.kill()
    })
  }

  for (const DEBUG of ['', 'app', 'locked,-locked', 'lockedx']) {
    it(`DEBUG=${JSON.stringify(DEBUG)} prints nothing`, async () => {
      const h = spawnHost({ endpoints: etcd.endpoints, ttl: 2, prefix: uniquePrefix('silent'), names: ['job'], id: 'dbg' }, 'silent', { env: { DEBUG, LOCKED_LOG: '' } })
      await h.waitFor({ ev: 'start' }, 10000, 'start')
      // The narration of the election would have been written before the start event was.
      await h.request({ cmd: 'ping' }, { ev: 'pong' }, 5000)
      assert.strictEqual(h.stderr, '', 'nothing on stderr')
      h.kill()
    })
  }
})
