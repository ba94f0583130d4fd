'use strict'
// A TCP proxy on a free loopback port, to cut a client off from etcd without touching etcd.
//
//   const p = await startProxy('127.0.0.1:2379')
//   p.endpoint            // '127.0.0.1:<port>': give this to the client instead of etcd's
//   p.mode('blackhole')   // connections stay open, nothing is forwarded either way (a partition)
//   p.mode('blackhole', 'down')  // one direction only: 'up' swallows what the client sends (and
//                         // new connections never reach the target), 'down' forwards the client's
//                         // requests but swallows the answers (etcd acts on requests whose answers
//                         // are lost); 'both' is the default
//   p.mode('reset')       // every connection is destroyed (RST), new ones are destroyed at once
//   p.mode('pass')        // forward again; black-holed connections are destroyed (their byte
//                         // streams have gaps), new connections work
//   await p.close()
//   await closeProxies()  // every proxy still open: after() in each file that starts proxies
//
// p.stats: { accepted, active, mode, direction } for debugging.

const net = require('node:net')

const MODES = new Set(['pass', 'blackhole', 'reset'])
const DIRECTIONS = new Set(['both', 'up', 'down'])
const liveProxies = new Set()
process.on('exit', () => {
  for (const p of liveProxies) p._destroyAll()
})

function hardDestroy (sock) {
  if (!sock || sock.destroyed) return
  // RST rather than FIN when possible: the peer sees a reset connection, like a dead host's kernel.
  // Not once end() was called: libuv refuses to reset a socket that is shutting down, and Node 20
  // then leaves the handle neither open nor closed, so the process spins at exit, never ending.
  if (typeof sock.resetAndDestroy === 'function' && sock._handle && !sock.writableEnded) {
    try { sock.resetAndDestroy(); return } catch {}
  }
  sock.destroy()
}

function splitHostPort (target) {
  const t = String(target).replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '')
  const i = t.lastIndexOf(':')
  if (i < 0) throw new TypeError(`target must be host:port, got ${target}`)
  return { host: t.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(t.slice(i + 1)) }
}

async function startProxy (target, { mode = 'pass', direction = 'both', port = 0 } = {}) {
  if (!MODES.has(mode)) throw new RangeError(`unknown mode ${mode}`)
  if (!DIRECTIONS.has(direction)) throw new RangeError(`unknown direction ${direction}`)
  const { host, port: targetPort } = splitHostPort(target)
  // { client, upstream, up, down, blackholed }: up/down say which direction is swallowed;
  // blackholed (either one) means the byte streams have gaps and the connection cannot be resumed.
  const conns = new Set()
  let current = mode
  let currentDirection = direction
  let accepted = 0

  // Marks a connection black-holed in the current direction(s).
  function hole (conn) {
    if (currentDirection !== 'down') conn.up = true
    if (currentDirection !== 'up') conn.down = true
    conn.blackholed = true
  }

  function drop (conn) {
    conns.delete(conn)
    hardDestroy(conn.client)
    hardDestroy(conn.upstream)
  }

  function connectUpstream (conn) {
    const upstream = net.connect({ host, port: targetPort })
    conn.upstream = upstream
    upstream.setNoDelay(true)
    // Bytes from the client that arrived before the upstream connected.
    const pending = []
    let connected = false
    upstream.on('connect', () => {
      connected = true
      for (const chunk of pending) upstream.write(chunk)
      pending.length = 0
    })
    conn.sendUp = (chunk) => {
      if (connected) upstream.write(chunk)
      else pending.push(chunk)
    }
    upstream.on('data', (chunk) => {
      if (conn.down) return // swallowed
      if (!conn.client.destroyed) conn.client.write(chunk)
    })
    upstream.on('end', () => { if (!conn.down) conn.client.end() })
    upstream.on('error', () => drop(conn))
    upstream.on('close', () => { if (!conn.blackholed) drop(conn) })
  }

  const server = net.createServer({ pauseOnConnect: false }, (client) => {
    accepted++
    client.setNoDelay(true)
    if (current === 'reset') {
      client.on('error', () => {})
      hardDestroy(client)
      return
    }
    const conn = { client, upstream: null, up: false, down: false, blackholed: false, sendUp: null }
    if (current === 'blackhole') hole(conn)
    conns.add(conn)
    client.on('error', () => drop(conn))
    client.on('close', () => drop(conn))
    client.on('end', () => { if (!conn.up && conn.upstream) conn.upstream.end() })
    client.on('data', (chunk) => {
      if (conn.up || !conn.sendUp) return // swallowed: the sender believes it was sent
      conn.sendUp(chunk)
    })
    // A connection accepted while the way up is black-holed never reaches the target (like a SYN
    // that got an answer from nowhere); it is simply held open.
    if (!conn.up) connectUpstream(conn)
  })

  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })

  const proxy = {
    endpoint: `127.0.0.1:${server.address().port}`,
    port: server.address().port,
    target: `${host}:${targetPort}`,
    // mode(m, direction = 'both'); direction only matters for 'blackhole'.
    mode (m, direction = 'both') {
      if (m === undefined) return current
      if (!MODES.has(m)) throw new RangeError(`unknown mode ${m}`)
      if (!DIRECTIONS.has(direction)) throw new RangeError(`unknown direction ${direction}`)
      const prev = current
      current = m
      currentDirection = direction
      if (m === 'reset') {
        for (const conn of [...conns]) drop(conn)
      } else if (m === 'blackhole') {
        for (const conn of conns) hole(conn)
      } else if (m === 'pass' && prev !== 'pass') {
        // Black-holed connections lost bytes (in one direction or both): they cannot be resumed.
        for (const conn of [...conns]) if (conn.blackholed) drop(conn)
      }
      return current
    },
    get direction () { return currentDirection },
    get stats () { return { accepted, active: conns.size, mode: current, direction: currentDirection } },
    _destroyAll () {
      for (const conn of [...conns]) drop(conn)
    },
    close () {
      liveProxies.delete(proxy)
      proxy._destroyAll()
      return new Promise((resolve) => server.close(() => resolve()))
    }
  }
  liveProxies.add(proxy)
  server.unref() // a forgotten proxy must not keep the process alive
  return proxy
}

function closeProxies () {
  return Promise.all([...liveProxies].map((p) => p.close()))
}

module.exports = { startProxy, closeProxies }
