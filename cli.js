#!/usr/bin/env node
'use strict'

// `locked run`: run a command on exactly one host, supervised. `locked status`: who leads.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { performance } = require('node:perf_hooks')
const { setTimeout: delay } = require('node:timers/promises')
const util = require('node:util')
const { alive } = require('./lib/pids.js')
const locked = require('./index.js')
const { DEFAULTS, TTL, ttlFault } = require('./lib/rules.js')
const { guardProcess } = require('./lib/locked.js')

// How often `status --watch` without --name lists the elections again: an observer follows the
// name it was given, and nothing announces a new name. The only time locked polls etcd.
const RELIST_MS = 5000
// After a change, how long `status --watch` waits for the new leader to publish its election time.
const SINCE_TRIES = 10
const SINCE_RETRY_MS = 200

const USAGE = `Usage:
  locked run --hosts HOSTS --name NAME [options] -- COMMAND [ARGS...]
  locked status --hosts HOSTS [--name NAME] [--prefix PREFIX] [--json] [--watch]

run: campaign for NAME; while this host leads, run COMMAND (stdio inherited, with LOCKED_TOKEN set to
the fencing token and LOCKED_NAME to NAME). SIGTERM/SIGINT stop the command (SIGTERM, then SIGKILL
after --grace), resign and exit. When leadership is lost (etcd unreachable, lease or key gone), the
command gets SIGTERM, and SIGKILL after --grace but never after the leadership deadline, past which
another host may be elected: a stop at or after the deadline means SIGKILL at once. This host then
campaigns again and, when re-elected, starts the command anew only once the old one is gone, never
two at once. If this process is itself killed with SIGKILL, the command is killed with it: by the
kernel (Linux, setpriv's parent-death signal) when setpriv is on the PATH, else by a small Node.js
process between the two (lib/wrapper.js) that kills it when its pipe to this process closes.
Another host then takes over after the TTL, or at once with --guardian. When the command exits by
itself, resign and exit with its code, or with --restart keep campaigning and run it again when
elected. Exits 1 if etcd refuses it before it was ever elected (a wrong password, no permission on
the prefix).

status: print the current leader of NAME, since when it leads (by its own clock), and its fencing
token; without --name, the same for every election under the prefix, a line each. Exits 0 (also
when nobody leads), or 1 when etcd does not answer or refuses. With --watch: print that, then a
line per change (a new leader, a new token, nobody leads) until SIGINT or SIGTERM (exit 0); etcd
trouble is one line on stderr per kind of error, and the watch goes on. Without --name, --watch
lists the elections again every ${RELIST_MS / 1000} s to follow new ones (the only time locked polls etcd).

Options:
  --hosts HOSTS     etcd hosts, 'host:port[,host:port...]' (required, unless LOCKED_HOSTS or
                    ETCDCTL_ENDPOINTS is set); 'https://host:port' hosts mean TLS
  --name NAME       the singleton's name (required for run)
  --ttl SECONDS     lease TTL in seconds, at least ${TTL.min} (default ${DEFAULTS.ttl})
  --grace DURATION  time between SIGTERM and SIGKILL, e.g. 10s or 500ms (default 10s); when
                    leadership is lost, at most the time left until the leadership deadline
  --prefix PREFIX   key prefix in etcd (default ${DEFAULTS.prefix})
  --id ID           this host's id (default hostname:pid)
  --restart         run the command again each time this host is elected
  --priority N      run: the host of the highest priority leads; a leader of a lower one hands
                    over to it (stops the command, then the other host starts its own) once it has
                    led 5 s (default 0; whole number, may be negative)
  --guardian        if this process dies (SIGKILL, OOM killer), a guardian process revokes its
                    lease once the command is gone too, so another host starts at once instead
                    of after the TTL (a lost machine or network still takes the TTL)
  --json            status: print one JSON object {name, leader, token, since} (null when unknown),
                    without --name an array of them; with --watch one object a line
  --watch           status: follow the changes
  -h, --help        show this help

A secured etcd (run and status, as etcdctl's flags):
  --cacert FILE     TLS, trusting the members' certificates signed by this CA (PEM file); without
                    it, TLS trusts the system's roots
  --cert FILE       TLS with this client certificate (PEM file), for members that require one
  --key FILE        the client certificate's private key (PEM file); goes with --cert
  --user NAME[:PASSWORD]
                    log in as the etcd user NAME. Without ':PASSWORD' (which anyone on this
                    machine can read in the process list), the password is read from
                    --password-file, else from LOCKED_PASSWORD, else from ETCDCTL_PASSWORD
  --password-file FILE
                    the password of --user: the file's content, without a trailing newline

Environment:
  LOCKED_HOSTS      the etcd hosts when --hosts is not given, else ETCDCTL_ENDPOINTS
  LOCKED_PASSWORD   the password of --user NAME, else ETCDCTL_PASSWORD; neither variable is
                    passed on to COMMAND

Example:
  locked run --hosts https://etcd1:2379,https://etcd2:2379 --cacert /etc/etcd/ca.crt \\
    --user app --password-file /run/secrets/etcd-password --name nightly -- node report.js
`

class UsageError extends Error {}

// setpriv (util-linux) on the PATH gives the command a parent-death signal; BusyBox's setpriv (a
// link to busybox) has no --pdeathsig. Where there is none (Alpine, distroless images, macOS), the
// command runs under lib/wrapper.js instead.
const SETPRIV = process.platform === 'linux' ? findSetpriv() : null
const WRAPPER = path.join(__dirname, 'lib', 'wrapper.js')

function findSetpriv () {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!path.isAbsolute(dir)) continue
    const file = path.join(dir, 'setpriv')
    try {
      fs.accessSync(file, fs.constants.X_OK)
      if (path.basename(fs.realpathSync(file)) === 'setpriv') return file
    } catch {}
  }
  return null
}

const PASSWORD_VARIABLES = ['LOCKED_PASSWORD', 'ETCDCTL_PASSWORD']

const SHARED_OPTIONS = {
  hosts: { type: 'string' },
  name: { type: 'string' },
  prefix: { type: 'string' },
  cacert: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  user: { type: 'string' },
  'password-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' }
}
const OPTIONS = {
  run: {
    ...SHARED_OPTIONS,
    ttl: { type: 'string' },
    grace: { type: 'string' },
    id: { type: 'string' },
    restart: { type: 'boolean' },
    guardian: { type: 'boolean' },
    priority: { type: 'string' }
  },
  status: { ...SHARED_OPTIONS, json: { type: 'boolean' }, watch: { type: 'boolean' } }
}

function parseDuration (text) {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text)
  if (!match) throw new UsageError(`invalid duration ${JSON.stringify(text)}: use e.g. 10s or 500ms`)
  const unit = { ms: 1, s: 1000, m: 60000 }[match[2] || 's']
  return Number(match[1]) * unit
}

function parsePriority (text) {
  const priority = /^-?\d+$/.test(text) ? Number(text) : NaN
  if (!Number.isSafeInteger(priority)) throw new UsageError(`--priority must be a whole number, got ${JSON.stringify(text)}`)
  return priority
}

function parseTtl (text) {
  const ttl = /^\d+$/.test(text) ? Number(text) : NaN
  // Above the maximum, locked() refuses it with its own message.
  const fault = ttlFault(ttl)
  if (fault !== null && fault !== 'max') {
    throw new UsageError(`--ttl must be a whole number of seconds, at least ${TTL.min}, got ${JSON.stringify(text)}`)
  }
  return ttl
}

// util.parseArgs words its errors for programs in general, over several lines; this says in one
// line which argument is wrong, from the same arguments parsed leniently. It never echoes a value:
// it could be a password (--user NAME:PASSWORD, or a password typed after --user NAME).
function parseFailure (args, options, err) {
  const { tokens } = util.parseArgs({ args, options, strict: false, allowPositionals: true, tokens: true })
  for (const token of tokens) {
    if (token.kind === 'option-terminator') break
    if (token.kind !== 'option') continue
    const option = Object.hasOwn(options, token.name) ? options[token.name] : null
    if (option === null) return `unknown option ${JSON.stringify(token.rawName)}`
    if (option.type === 'boolean' && token.value !== undefined) return `${token.rawName} takes no value`
    // In strict mode a value that starts with '-' must be attached with '=': it more likely is
    // the next option, given by mistake in place of the value.
    if (option.type === 'string' && (token.value === undefined || (!token.inlineValue && /^-./.test(token.value)))) {
      return `${token.rawName} needs a value (one that starts with '-' goes as ${token.rawName}=VALUE)`
    }
  }
  return err.message.split('\n')[0]
}

function parseArgs (argv) {
  const [command, ...rest] = argv
  if (command === '-h' || command === '--help' || command === undefined) return { help: true }
  if (command !== 'run' && command !== 'status') throw new UsageError(`unknown command ${JSON.stringify(command)}`)
  const options = OPTIONS[command]
  let parsed
  try {
    parsed = util.parseArgs({ args: rest, options, strict: true, allowPositionals: true, tokens: true })
  } catch (err) {
    if (!String(err.code).startsWith('ERR_PARSE_ARGS_')) throw err
    throw new UsageError(parseFailure(rest, options, err))
  }
  const { values, tokens } = parsed
  if (values.help) return { help: true }
  const terminator = tokens.findIndex((t) => t.kind === 'option-terminator')
  const before = terminator === -1 ? tokens : tokens.slice(0, terminator)
  if (before.some((t) => t.kind === 'positional')) {
    throw new UsageError(command === 'run' ? 'unexpected argument before --: the command and its arguments go after --' : 'status takes no arguments besides its options')
  }
  const argvAfter = terminator === -1 ? [] : tokens.slice(terminator + 1).map((t) => t.value)
  if (command === 'status' && terminator !== -1) throw new UsageError('status runs no command: nothing goes after --')
  const opts = {
    command,
    hosts: values.hosts ?? fromEnvironment('LOCKED_HOSTS') ?? fromEnvironment('ETCDCTL_ENDPOINTS'),
    name: values.name,
    ttl: values.ttl === undefined ? DEFAULTS.ttl : parseTtl(values.ttl),
    grace: values.grace === undefined ? 10000 : parseDuration(values.grace),
    prefix: values.prefix ?? DEFAULTS.prefix,
    id: values.id,
    restart: values.restart ?? false,
    guardian: values.guardian ?? false,
    priority: values.priority === undefined ? 0 : parsePriority(values.priority),
    json: values.json ?? false,
    watch: values.watch ?? false,
    cacert: values.cacert,
    cert: values.cert,
    key: values.key,
    user: values.user,
    passwordFile: values['password-file'],
    argv: argvAfter
  }
  if (!opts.hosts) throw new UsageError('--hosts is required (or set LOCKED_HOSTS)')
  if (command === 'run' && !opts.name) throw new UsageError('--name is required')
  if (opts.name === '') throw new UsageError('--name must not be empty')
  if (command === 'run' && opts.argv.length === 0) throw new UsageError('no command given: put it after --')
  return opts
}

function fromEnvironment (variable) {
  const value = process.env[variable]
  return value === undefined || value === '' ? undefined : value
}

function readOptionFile (flag, file) {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new UsageError(`cannot read ${flag} ${JSON.stringify(file)}: ${err.code === 'ENOENT' ? 'no such file' : err.code || err.message}`)
  }
}

// The hosts, TLS and credentials of locked(hosts, { tls, auth }) from the flags and environment.
// Hosts written as etcdctl takes them, 'https://host:port' (ETCDCTL_ENDPOINTS), mean TLS: locked()
// takes the host without the scheme, and TLS from its tls option.
function connection (opts) {
  const hosts = opts.hosts.split(',').map((h) => h.trim()).filter((h) => h !== '')
  const secure = hosts.filter((h) => /^https:\/\//i.test(h))
  if (secure.length > 0 && secure.length < hosts.length) {
    throw new UsageError('--hosts: either every host is https:// or none is')
  }
  let tls
  if (opts.cacert !== undefined || opts.cert !== undefined || opts.key !== undefined || secure.length > 0) {
    if ((opts.cert === undefined) !== (opts.key === undefined)) throw new UsageError('--cert and --key go together')
    tls = {
      ca: opts.cacert === undefined ? undefined : readOptionFile('--cacert', opts.cacert),
      cert: opts.cert === undefined ? undefined : readOptionFile('--cert', opts.cert),
      key: opts.key === undefined ? undefined : readOptionFile('--key', opts.key)
    }
  }
  let auth
  if (opts.user !== undefined) {
    const colon = opts.user.indexOf(':')
    const username = colon === -1 ? opts.user : opts.user.slice(0, colon)
    if (username === '') throw new UsageError('--user needs a user name: --user NAME[:PASSWORD]')
    let password = colon === -1 ? undefined : opts.user.slice(colon + 1)
    if (opts.passwordFile !== undefined) {
      if (password !== undefined) throw new UsageError('the password goes either in --user NAME:PASSWORD or in --password-file, not both')
      password = readOptionFile('--password-file', opts.passwordFile).replace(/\r?\n$/, '')
      if (password === '') throw new UsageError(`--password-file ${JSON.stringify(opts.passwordFile)} is empty`)
    }
    password ??= fromEnvironment('LOCKED_PASSWORD') ?? fromEnvironment('ETCDCTL_PASSWORD')
    if (password === undefined) {
      throw new UsageError(`--user ${username} needs a password: in LOCKED_PASSWORD, in --password-file FILE, or as --user ${username}:PASSWORD`)
    }
    auth = { username, password }
  } else if (opts.passwordFile !== undefined) {
    throw new UsageError('--password-file needs --user NAME')
  }
  return { hosts: hosts.map((h) => h.replace(/^https:\/\//i, '')), tls, auth }
}

function log (message) {
  process.stderr.write(`locked: ${message}\n`)
}

// The command of one term: { proc, pid, signal(name), exited: Promise<{ code, signal }>, stopping,
// killAt, killTimer }. `pid` is the command's own; onPid(pid) is called once it is known.
function spawnCommand (opts, term, onPid) {
  const env = { ...process.env, LOCKED_TOKEN: String(term.token), LOCKED_NAME: opts.name }
  const current = { proc: null, pid: undefined, stopping: false, killAt: Infinity, killTimer: null }
  if (SETPRIV) {
    // If this process is killed outright (SIGKILL), nothing is left to stop the command, and
    // another host takes over after the TTL: the kernel kills the command with us (Linux
    // parent-death signal, set by setpriv), so two hosts never run it at once.
    const [file, ...args] = opts.argv
    const proc = spawn(SETPRIV, ['--pdeathsig', 'SIGKILL', '--', file, ...args], { stdio: 'inherit', env })
    Object.assign(current, { proc, pid: proc.pid, signal: (signal) => proc.kill(signal), exited: exitOf(proc, file) })
    if (proc.pid !== undefined) process.nextTick(onPid, proc.pid)
  } else {
    spawnWrapped(current, opts.argv, env, onPid)
  }
  return current
}

function exitOf (proc, file) {
  return new Promise((resolve) => {
    proc.on('error', (err) => {
      log(`cannot run ${file}: ${err.message}`)
      resolve({ code: 127, signal: null })
    })
    proc.on('exit', (code, signal) => resolve({ code, signal }))
  })
}

// Without setpriv, the command runs under lib/wrapper.js, which kills it when its pipe to this
// process reaches end-of-file (this process died), reports on that pipe the command's pid and how
// it ended, and passes SIGTERM on; SIGKILL is asked for on the pipe (a SIGKILL to the wrapper
// would leave the command running). Should the wrapper die alone (the OOM killer may pick it), the
// command is killed here, and counts as ended only once it is gone.
function spawnWrapped (current, argv, env, onPid) {
  const proc = spawn(process.execPath, [WRAPPER, '--', ...argv], { stdio: ['inherit', 'inherit', 'inherit', 'pipe'], env: {} })
  const channel = proc.stdio[3]
  let ended = null // { code, signal } as the wrapper reported it
  channel.on('error', () => {})
  channel.write(JSON.stringify({ env }) + '\n')
  readLines(channel, (message) => {
    if (message.pid !== undefined) {
      current.pid = message.pid
      onPid(message.pid)
    }
    if (message.code !== undefined) ended = { code: message.code, signal: message.signal }
  })
  current.proc = proc
  current.signal = (signal) => signal === 'SIGKILL' ? channel.write('{"kill":true}\n') : proc.kill(signal)
  current.exited = new Promise((resolve) => {
    proc.on('error', (err) => {
      log(`cannot run ${process.execPath}: ${err.message}`)
      resolve({ code: 127, signal: null })
    })
    proc.on('close', async (code, signal) => {
      if (ended === null && current.pid !== undefined && alive(current.pid)) {
        log(`the wrapper of ${argv[0]} died (${signal || code}); killing ${argv[0]} (pid ${current.pid})`)
        try { process.kill(current.pid, 'SIGKILL') } catch {}
        while (alive(current.pid)) await delay(10)
      }
      resolve(ended ?? { code, signal })
    })
  })
}

function readLines (stream, onMessage) {
  let buffer = ''
  stream.setEncoding('utf8')
  stream.on('data', (chunk) => {
    buffer += chunk
    let newline
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline)
      buffer = buffer.slice(newline + 1)
      try { onMessage(JSON.parse(line)) } catch {}
    }
  })
}

// SIGTERM now, SIGKILL after graceMs (at once if it is 0). A later call can only bring the
// SIGKILL forward: a lost leadership while the command is already stopping tightens the bound.
function stopCommand (current, graceMs) {
  const killAt = performance.now() + graceMs
  if (current.killAt <= killAt) return current.exited
  current.killAt = killAt
  clearTimeout(current.killTimer)
  if (graceMs <= 0) {
    current.signal('SIGKILL')
  } else {
    if (!current.stopping) current.signal('SIGTERM')
    current.killTimer = setTimeout(() => current.signal('SIGKILL'), graceMs)
  }
  current.stopping = true
  return current.exited
}

async function run (opts) {
  const { hosts, tls, auth } = opts.connection
  // A drain (a handover to a host of higher priority) waits for the command to end: SIGTERM, then
  // SIGKILL after --grace.
  const locker = locked(hosts, { ttl: opts.ttl, prefix: opts.prefix, id: opts.id || `${os.hostname()}:${process.pid}`, guardian: opts.guardian, drainTimeout: opts.grace + 1000, tls, auth })
  let singleton = null
  let child = null // the running command, from spawnCommand
  let shuttingDown = false
  let everElected = false
  let refused = false

  // etcd refusing a host that never led is a setting to fix (a wrong password, no permission on
  // the prefix), not an outage to wait out: say so once and exit. Once it has led, it keeps going.
  function onError (err) {
    if (refused) return
    log(`${err.code}: ${err.message}`)
    if (err.code === 'ETCD_REJECTED' && !everElected && !shuttingDown) {
      refused = true
      exit(1)
    }
  }
  locker.on('error', onError)

  function terminate (graceMs = opts.grace) {
    return child ? stopCommand(child, graceMs) : Promise.resolve()
  }

  // A command stopped while this host still holds the lease (a handover to a host of higher
  // priority, or SIGTERM) runs out its --grace only while the lease is sure to hold: should the
  // leadership deadline come first (etcd unreachable meanwhile), another host may start its own
  // copy then, so it is killed at the deadline. Checked against the clock every 100 ms, no etcd.
  function killByDeadline () {
    const current = child
    if (!current) return
    const timer = setInterval(() => stopCommand(current, locker.stats().validForMs), 100)
    current.exited.then(() => clearInterval(timer))
  }

  async function exit (code) {
    shuttingDown = true
    const stopping = terminate()
    killByDeadline()
    await stopping
    await locker.close().catch((err) => log(`close: ${err.message}`))
    process.exit(code)
  }

  function startCommand (term) {
    // Should this process die, the guardian revokes the lease only once the command is gone too:
    // two commands never overlap.
    const current = spawnCommand(opts, term, (pid) => {
      if (opts.guardian && child === current) locker[guardProcess](pid)
    })
    child = current
    current.exited.then(async ({ code, signal }) => {
      clearTimeout(current.killTimer)
      if (child === current) {
        child = null
        if (opts.guardian) locker[guardProcess](null)
      }
      if (current.stopping || shuttingDown) return
      // The command ended by itself while this host led.
      const status = code ?? 128 + (os.constants.signals[signal] || 0)
      if (opts.restart) {
        log(`command exited (${signal || code}); campaigning again`)
        await singleton.remove()
        register()
      } else {
        await exit(status)
      }
    })
  }

  function register () {
    let lastTerm = null
    singleton = locker(opts.name, async (remove, term) => {
      lastTerm = term
      everElected = true
      // Re-elected while the command of an earlier term is still being stopped: never two at once.
      while (child) {
        log(`elected for ${opts.name} (token ${term.token}); waiting for the previous ${opts.argv[0]} (pid ${child.pid ?? child.proc.pid}) to end`)
        await child.exited
      }
      if (term.signal.aborted || shuttingDown) return
      log(`elected for ${opts.name} (token ${term.token}); starting ${opts.argv[0]}`)
      startCommand(term)
      // The term's work is the command: a handover to a host of higher priority hands over only
      // once it has ended.
      const running = child
      if (running) await running.exited
    }, { priority: opts.priority })
    singleton.on('error', onError)
    singleton.on('stop', (reason) => {
      if (reason === 'removed' || reason === 'closed') return
      // Past the leadership deadline etcd may expire the lease and elect another host, which then
      // starts its own copy: the command must be dead by then, whatever --grace says. A handover
      // (to a host of higher priority) waits for the command to end before it hands over: --grace.
      const left = reason === 'handover' ? opts.grace : Math.min(opts.grace, Math.max(0, lastTerm.validUntil - performance.now()))
      log(`lost leadership of ${opts.name} (${reason}); stopping the command${child ? (left > 0 ? ` (SIGKILL in ${Math.ceil(left)} ms at the latest)` : ' with SIGKILL') : ''}`)
      terminate(left)
      if (reason === 'handover') killByDeadline()
    })
  }

  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      if (shuttingDown) return
      log(`${signal}: stopping the command and resigning`)
      exit(128 + os.constants.signals[signal])
    })
  }
  register()
}

function formatAge (ms) {
  const s = Math.max(0, Math.floor(ms / 1000))
  const parts = [[Math.floor(s / 86400), 'd'], [Math.floor(s / 3600) % 24, 'h'], [Math.floor(s / 60) % 60, 'm'], [s % 60, 's']]
  const first = parts.findIndex(([n]) => n > 0)
  return first === -1 ? '0s' : parts.slice(first, first + 2).map(([n, unit]) => `${n}${unit}`).join(' ')
}

// A term as status prints it: { name, leader, token, since, priority, preferred, handover } (since
// as ISO text; null when unknown; all null when nobody leads). preferred: who should lead by
// priority and balance (the leader itself when it should); handover: { to } while one is under way.
function termRecord (name, term) {
  if (!term) return { name, leader: null, token: null, since: null, priority: null, preferred: null, handover: null }
  return { name, leader: term.leader, token: term.token, since: term.since?.toISOString() ?? null, priority: term.priority, preferred: term.preferred, handover: term.handover }
}

function termLine (record) {
  if (record.leader === null) return `${record.name}: no leader`
  const since = record.since === null
    ? 'since an unknown time (the election time is not published yet)'
    : `since ${record.since} (${formatAge(Date.now() - Date.parse(record.since))} ago)`
  const extra = [
    record.priority ? `, priority ${record.priority}` : '',
    record.handover ? `; handing over to ${record.handover.to}` : record.preferred !== record.leader ? `; ${record.preferred} is preferred` : ''
  ].join('')
  return `${record.name}: led by ${record.leader} ${since}, token ${record.token}${extra}`
}

function printTerm (opts, record) {
  process.stdout.write(`${opts.json ? JSON.stringify(record) : termLine(record)}\n`)
}

function noElections (opts) {
  return `no elections under the prefix ${JSON.stringify(opts.prefix)}`
}

async function status (opts) {
  const { hosts, tls, auth } = opts.connection
  const locker = locked(hosts, { prefix: opts.prefix, tls, auth })
  if (opts.watch) return new StatusWatch(opts, locker).start()
  const timer = setTimeout(async () => {
    log('no answer from etcd')
    await locker.close().catch(() => {})
    process.exit(1)
  }, 10000)
  let code = 0
  try {
    if (opts.name !== undefined) {
      printTerm(opts, termRecord(opts.name, await locker.term(opts.name)))
    } else {
      const records = (await locker.terms()).map((term) => termRecord(term.name, term))
      if (opts.json) process.stdout.write(`${JSON.stringify(records)}\n`)
      else if (records.length === 0) process.stdout.write(`${noElections(opts)}\n`)
      else for (const record of records) printTerm(opts, record)
    }
  } catch (err) {
    if (err instanceof TypeError || err instanceof RangeError) throw err // a bad name: a usage error
    log(err.code === 'ETCD_REJECTED' ? err.message : `no answer from etcd: ${err.message}`)
    code = 1
  }
  clearTimeout(timer)
  await locker.close().catch(() => {})
  process.exit(code)
}

// `status --watch`: the current state, then a line per change (a new leader, a new token, nobody
// leads) until SIGINT or SIGTERM. An observer per name reports its changes; without --name, the
// elections are listed again every RELIST_MS to follow new names too. etcd trouble: one line on
// stderr per kind of error, again only after etcd answered in between.
class StatusWatch {
  #opts
  #locker
  #follows = new Map() // name -> { name, observer, shown, dirty, reading }
  #reported = new Set() // the codes of the errors reported since etcd last answered
  #answered = false // whether etcd ever answered
  #listed = false // whether the elections were listed once
  #closing = false
  #timer = null
  #keepAlive = null

  constructor (opts, locker) {
    this.#opts = opts
    this.#locker = locker
  }

  start () {
    // Observers alone do not keep a process alive.
    this.#keepAlive = setInterval(() => {}, 2 ** 30)
    for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => this.#stop(0))
    this.#locker.on('error', (err) => this.#failed(err))
    if (this.#opts.name !== undefined) this.#follow(this.#opts.name)
    else this.#relist()
  }

  async #stop (code) {
    if (this.#closing) return
    this.#closing = true
    clearTimeout(this.#timer)
    clearInterval(this.#keepAlive)
    await this.#locker.close().catch(() => {})
    process.exit(code)
  }

  async #relist () {
    try {
      const terms = await this.#locker.terms()
      this.#ok()
      if (!this.#listed && terms.length === 0 && !this.#opts.json) process.stdout.write(`${noElections(this.#opts)}\n`)
      this.#listed = true
      for (const term of terms) {
        if (!this.#follows.has(term.name) && !this.#closing) this.#show(this.#follow(term.name), termRecord(term.name, term))
      }
    } catch (err) {
      this.#failed(err)
    }
    if (!this.#closing) this.#timer = setTimeout(() => this.#relist(), RELIST_MS)
  }

  #follow (name) {
    const follow = { name, observer: this.#locker.observe(name), shown: null, dirty: false, reading: false }
    // Every change: a new leader or token, and also who should lead or a handover under way.
    follow.observer.on('term', () => this.#changed(follow))
    follow.observer.on('error', (err) => this.#failed(err))
    this.#follows.set(name, follow)
    return follow
  }

  // One read at a time per name; a change during a read makes one more read after it.
  async #changed (follow) {
    follow.dirty = true
    if (follow.reading) return
    follow.reading = true
    while (follow.dirty && !this.#closing) {
      follow.dirty = false
      this.#show(follow, await this.#read(follow))
    }
    follow.reading = false
  }

  // The name's term, as read after a change: a new leader publishes its election time right after
  // its election, so wait a little for it. If etcd does not answer, what the observer saw.
  async #read (follow) {
    for (let attempt = 1; ; attempt++) {
      let term
      try {
        term = await this.#locker.term(follow.name)
        this.#ok()
      } catch (err) {
        this.#failed(err)
        const seen = follow.observer.term()
        return termRecord(follow.name, seen && { ...seen, since: null })
      }
      if (term === null || term.since !== null || attempt >= SINCE_TRIES || follow.dirty || this.#closing) return termRecord(follow.name, term)
      await delay(SINCE_RETRY_MS)
      // A change came while waiting: this leader is shown (its time unknown) before the read that
      // change calls for, rather than skipped when its term was short.
      if (follow.dirty) return termRecord(follow.name, term)
    }
  }

  // Prints a name's term when its leader, token, priority, preferred candidate or handover differs
  // from the last one printed.
  #show (follow, record) {
    const shown = JSON.stringify([record.leader, record.token, record.priority, record.preferred, record.handover])
    if (shown === follow.shown || this.#closing) return
    follow.shown = shown
    printTerm(this.#opts, record)
  }

  #ok () {
    this.#answered = true
    this.#reported.clear()
  }

  #failed (err) {
    if (this.#closing) return
    // Refused before it ever answered: a setting to fix (a wrong password, no permission).
    if (err.code === 'ETCD_REJECTED' && !this.#answered) {
      log(err.message)
      this.#stop(1)
      return
    }
    if (this.#reported.has(err.code)) return
    this.#reported.add(err.code)
    log(`${err.code}: ${err.message}`)
  }
}

function main () {
  let opts
  try {
    opts = parseArgs(process.argv.slice(2))
    if (!opts.help) opts.connection = connection(opts)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`locked: ${err.message}\n\n${USAGE}`)
    process.exit(2)
  }
  if (opts.help) {
    process.stdout.write(USAGE)
    return
  }
  // The command, and the guardian, inherit this environment: an etcd password must not reach them.
  for (const variable of PASSWORD_VARIABLES) delete process.env[variable]
  // Bad hosts, names or TTLs are refused by locked() (TypeError, RangeError) before anything
  // runs: usage errors too, in one line. Anything else is a failure of the run itself.
  const work = opts.command === 'run' ? run(opts) : status(opts)
  work.catch((err) => {
    if (err instanceof TypeError || err instanceof RangeError) {
      process.stderr.write(`locked: ${err.message}\n\n${USAGE}`)
      process.exit(2)
    }
    process.stderr.write(`locked: ${err && err.message ? err.message : String(err)}\n`)
    process.exit(1)
  })
}

main()
