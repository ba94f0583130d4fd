'use strict'
// A TCP proxy on a free loopback port, to cut a client off from etcd without touching etcd.
//
//   const p = await startProxy('127.0.0.1:2379')
//   p.endpoint            // '127.0.0.1:<port>': give this to the client instead of etcd's
//   p.mode('blackhole')   // connections stay open, nothing is forwarded either way (a partition)
//   p.mode('reset')       // every connection is destroyed (RST), new ones are destroyed at once
//   p.mode('pass')        // forward again; black-holed connections are destroyed (their byte
//                         // streams have gaps), new connections work
//   await p.close()
//
// p.stats: { accepted, active } for debugging.

const net = require('node:net')

const MODES = new Set(['pass', 'blackhole', 'reset'])
const liveProxies = new Set()
process.on('exit', () => {
  for (const p of liveProxies) p._destroyAll()
})

function hardDestroy (sock) {
  if (!sock || sock.destroyed) return
  // RST rather than FIN when possible: the peer sees a reset connection, like a dead host's kernel.
  if (typeof sock.resetAndDestroy === 'function' && sock._handle) {
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

async function startProxy (target, { mode = 'pass', port = 0 } = {}) {
  if (!MODES.has(mode)) throw new RangeError(`unknown mode ${mode}`)
  const { host, port: targetPort } = splitHostPort(target)
  const conns = new Set() // { client, upstream, blackholed }
  let current = mode
  let accepted = 0

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
      if (conn.blackholed) return // swallowed
      if (!conn.client.destroyed) conn.client.write(chunk)
    })
    upstream.on('end', () => { if (!conn.blackholed) conn.client.end() })
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
    const conn = { client, upstream: null, blackholed: current === 'blackhole', sendUp: null }
    conns.add(conn)
    client.on('error', () => drop(conn))
    client.on('close', () => drop(conn))
    client.on('end', () => { if (!conn.blackholed && conn.upstream) conn.upstream.end() })
    client.on('data', (chunk) => {
      if (conn.blackholed) return // swallowed: the sender believes it was sent
      conn.sendUp(chunk)
    })
    // A connection accepted during a blackhole never reaches the target (like a SYN that got an
    // answer from nowhere); it is simply held open.
    if (!conn.blackholed) connectUpstream(conn)
  })

  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })

  const proxy = {
    endpoint: `127.0.0.1:${server.address().port}`,
    port: server.address().port,
    target: `${host}:${targetPort}`,
    mode (m) {
      if (m === undefined) return current
      if (!MODES.has(m)) throw new RangeError(`unknown mode ${m}`)
      const prev = current
      current = m
      if (m === 'reset') {
        for (const conn of [...conns]) drop(conn)
      } else if (m === 'blackhole') {
        for (const conn of conns) conn.blackholed = true
      } else if (m === 'pass' && prev !== 'pass') {
        // Black-holed connections lost bytes in both directions: they cannot be resumed.
        for (const conn of [...conns]) if (conn.blackholed) drop(conn)
      }
      return current
    },
    get stats () { return { accepted, active: conns.size, mode: current } },
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

module.exports = { startProxy }
