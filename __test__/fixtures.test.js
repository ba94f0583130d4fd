'use strict'
// The test fixtures themselves. A free port is only free when it is chosen: until a server binds
// it, any other process (another test file's etcd, an outgoing connection's source port) may take
// it. A fixture that dies on that race takes a whole suite's tests with it, so each fixture that
// binds a chosen port must retry on another when the chosen one turns out to be taken.

const { it } = require('node:test')
const assert = require('node:assert')
const net = require('node:net')
const { startRedis, ping } = require('./helpers/redis')

function holdPort () {
  return new Promise((resolve, reject) => {
    // It drops what connects (the fixture may probe the port before it sees its server fail), so
    // that closing it does not wait on those connections.
    const srv = net.createServer((conn) => conn.destroy())
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => resolve(srv))
  })
}

it('startRedis on a port another process took in the meantime starts on another port', async (t) => {
  const held = await holdPort()
  t.after(() => new Promise((resolve) => held.close(() => resolve())))
  const taken = held.address().port
  const redis = await startRedis({ port: taken })
  t.after(() => redis.close())
  assert.notStrictEqual(redis.port, taken)
  assert.strictEqual(redis.url, `redis://127.0.0.1:${redis.port}`)
  assert.strictEqual(await ping(redis.port), true, 'the server answers PING')
})
