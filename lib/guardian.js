'use strict'
// The guardian: a small process that revokes a locker's lease the moment the process that holds
// it dies, so that another host takes over at once instead of after the TTL.
//
// The locker starts it (option `guardian: true`) and keeps the write end of its stdin; nothing
// else holds that end. When the locker's process dies for any reason (SIGKILL, the OOM killer, a
// native crash), the kernel closes it, and the guardian reads end-of-file: it revokes the lease it
// was last told about (through etcd's JSON gateway, with the locker's TLS settings and
// credentials) and exits. A frozen process keeps its end open, so a pause revokes nothing: the
// TTL and the leadership deadline handle that as before.
//
// Everything arrives on stdin, one JSON object a line, never on the command line or in the
// environment (other users can read those under /proc):
//   { hosts: ['h:p', ...], tls: { ca, cert, key } | null, auth: { username, password } | null }
//   { lease: '<hex id>' | null }   the lease to revoke if the locker dies (null: none)
//   { waitFor: <pid> | null }      on the locker's death, first end this process (SIGKILL) and
//                                  wait (bounded) until it is gone: `locked run`'s command must end
//                                  before anyone else can start theirs, also where no parent-death
//                                  signal killed it with its runner
//   { exit: true }                 the locker closed: exit without revoking

const http = require('node:http')
const https = require('node:https')
const { alive } = require('./pids.js')

// Terminal signals go to the whole foreground process group; the guardian answers only to its
// pipe, so that a Ctrl-C handled gracefully by the application does not end its guardian.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => {})

let config = null
let lease = null
let waitFor = null
let buffer = ''

process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => {
  buffer += chunk
  let newline
  while ((newline = buffer.indexOf('\n')) >= 0) {
    const line = buffer.slice(0, newline)
    buffer = buffer.slice(newline + 1)
    let message
    try {
      message = JSON.parse(line)
    } catch {
      continue
    }
    if (message.exit) process.exit(0)
    if ('hosts' in message) config = message
    if ('lease' in message) lease = message.lease
    if ('waitFor' in message) waitFor = message.waitFor
  }
})
process.stdin.on('end', () => { onParentGone().finally(() => process.exit(0)) })
process.stdin.on('error', () => { onParentGone().finally(() => process.exit(0)) })

let gone = null
function onParentGone () {
  if (gone === null) gone = (async () => {
    if (config === null || lease === null) return
    if (waitFor !== null) {
      try { process.kill(waitFor, 'SIGKILL') } catch {}
      await processGone(waitFor, 5000)
    }
    await revoke(lease)
  })()
  return gone
}

async function processGone (pid, capMs) {
  const until = Date.now() + capMs
  while (alive(pid) && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 2))
}

function post (host, route, body, headers) {
  const secure = config.tls !== null && config.tls !== undefined
  const data = Buffer.from(JSON.stringify(body))
  return new Promise((resolve, reject) => {
    const bare = host.replace(/^https?:\/\//, '').replace(/\/+$/, '')
    const req = (secure ? https : http).request(`${secure ? 'https' : 'http'}://${bare}${route}`, {
      method: 'POST',
      agent: false,
      timeout: 1000,
      headers: { 'content-type': 'application/json', 'content-length': data.length, ...headers },
      ...(secure ? { ca: config.tls.ca, cert: config.tls.cert, key: config.tls.key } : {})
    }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        let parsed = null
        try { parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) } catch {}
        resolve({ status: res.statusCode, body: parsed })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end(data)
  })
}

async function revokeOn (host, id) {
  const headers = {}
  if (config.auth) {
    const auth = await post(host, '/v3/auth/authenticate', { name: config.auth.username, password: config.auth.password }, {})
    if (auth.status !== 200 || !auth.body || !auth.body.token) throw new Error(`authentication failed (HTTP ${auth.status})`)
    headers.authorization = auth.body.token
  }
  const res = await post(host, '/v3/lease/revoke', { ID: id }, headers)
  // Revoked, or already gone (the locker's own exit revoked it first): either way, done.
  const message = res.body && (res.body.error || res.body.message)
  if (res.status === 200 || /lease not found/.test(message || '')) return
  throw new Error(`HTTP ${res.status} ${message || ''}`)
}

// A few rounds over the members, each request bounded: a member that is down or cut off must
// not keep the others from being asked, and the guardian must not outlive its parent for long.
async function revoke (hex) {
  const id = BigInt('0x' + hex).toString()
  for (let round = 0; round < 3; round++) {
    for (const host of config.hosts) {
      try {
        await revokeOn(host, id)
        return
      } catch {}
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}
