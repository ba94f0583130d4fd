#!/usr/bin/env node
'use strict'

// `locked run`: run a command on exactly one host, supervised. `locked status`: who leads.

const { spawn } = require('node:child_process')
const os = require('node:os')
const { performance } = require('node:perf_hooks')
const locked = require('./index.js')
const { DEFAULTS, TTL, ttlFault } = require('./lib/rules.js')
const { guardProcess } = require('./lib/locked.js')

const USAGE = `Usage:
  locked run --hosts HOSTS --name NAME [options] -- COMMAND [ARGS...]
  locked status --hosts HOSTS --name NAME [--prefix PREFIX] [--json]

run: campaign for NAME; while this host leads, run COMMAND (stdio inherited, with LOCKED_TOKEN set to
the fencing token and LOCKED_NAME to NAME). SIGTERM/SIGINT stop the command (SIGTERM, then SIGKILL
after --grace), resign and exit. When leadership is lost (etcd unreachable, lease or key gone), the
command gets SIGTERM, and SIGKILL after --grace but never after the leadership deadline, past which
another host may be elected: a stop at or after the deadline means SIGKILL at once. This host then
campaigns again and, when re-elected, starts the command anew only once the old one is gone, never
two at once. If this process is itself killed with SIGKILL, the command is
killed with it (Linux, via setpriv's parent-death signal); another host then takes over after the
TTL, or at once with --guardian. When the command exits by itself, resign and exit with its code,
or with --restart keep campaigning and run it again when elected.

status: print the current leader of NAME, since when it leads (by its own clock), and its fencing
token. Exits 0 (also when nobody leads), or 1 when etcd does not answer.

Options:
  --hosts HOSTS     etcd hosts, 'host:port[,host:port...]' (required)
  --name NAME       the singleton's name (required)
  --ttl SECONDS     lease TTL in seconds, at least ${TTL.min} (default ${DEFAULTS.ttl})
  --grace DURATION  time between SIGTERM and SIGKILL, e.g. 10s or 500ms (default 10s); when
                    leadership is lost, at most the time left until the leadership deadline
  --prefix PREFIX   key prefix in etcd (default ${DEFAULTS.prefix})
  --id ID           this host's id (default hostname:pid)
  --restart         run the command again each time this host is elected
  --guardian        if this process dies (SIGKILL, OOM killer), a guardian process revokes its
                    lease once the command is gone too, so another host starts at once instead
                    of after the TTL (a lost machine or network still takes the TTL)
  --json            status: print one JSON object {name, leader, token, since} (null when unknown)
  -h, --help        show this help
`

class UsageError extends Error {}

const PDEATHSIG = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => require('node:fs').existsSync(p))

function parseDuration (text) {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text)
  if (!match) throw new UsageError(`invalid duration ${JSON.stringify(text)}: use e.g. 10s or 500ms`)
  const unit = { ms: 1, s: 1000, m: 60000 }[match[2] || 's']
  return Number(match[1]) * unit
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

function parseArgs (argv) {
  const [command, ...rest] = argv
  if (command === '-h' || command === '--help' || command === undefined) return { help: true }
  if (command !== 'run' && command !== 'status') throw new UsageError(`unknown command ${JSON.stringify(command)}`)
  const opts = { command, ttl: DEFAULTS.ttl, grace: 10000, prefix: DEFAULTS.prefix, restart: false, guardian: false, argv: [] }
  const takesValue = new Set(['--hosts', '--name', '--ttl', '--grace', '--prefix', '--id'])
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]
    if (arg === '--') {
      opts.argv = rest.slice(i + 1)
      break
    }
    if (arg === '-h' || arg === '--help') return { help: true }
    if (arg === '--restart' && command === 'run') {
      opts.restart = true
      continue
    }
    if (arg === '--guardian' && command === 'run') {
      opts.guardian = true
      continue
    }
    if (arg === '--json' && command === 'status') {
      opts.json = true
      continue
    }
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined]
    if (!takesValue.has(flag) || (command === 'status' && !['--hosts', '--name', '--prefix'].includes(flag))) {
      throw new UsageError(`unknown option ${JSON.stringify(arg)}`)
    }
    const value = inline ?? rest[++i]
    if (value === undefined) throw new UsageError(`${flag} needs a value`)
    switch (flag) {
      case '--hosts': opts.hosts = value; break
      case '--name': opts.name = value; break
      case '--prefix': opts.prefix = value; break
      case '--id': opts.id = value; break
      case '--grace': opts.grace = parseDuration(value); break
      case '--ttl': opts.ttl = parseTtl(value); break
    }
  }
  if (!opts.hosts) throw new UsageError('--hosts is required')
  if (!opts.name) throw new UsageError('--name is required')
  if (command === 'run' && opts.argv.length === 0) throw new UsageError('no command given: put it after --')
  return opts
}

function log (message) {
  process.stderr.write(`locked: ${message}\n`)
}

async function run (opts) {
  const locker = locked(opts.hosts, { ttl: opts.ttl, prefix: opts.prefix, id: opts.id || `${os.hostname()}:${process.pid}`, guardian: opts.guardian })
  let singleton = null
  let child = null // { proc, exited: Promise<{code, signal}>, stopping: boolean }
  let shuttingDown = false

  locker.on('error', (err) => log(`${err.code}: ${err.message}`))

  // SIGTERM now, SIGKILL after graceMs (at once if it is 0). A later call can only bring the
  // SIGKILL forward: a lost leadership while the command is already stopping tightens the bound.
  function terminate (graceMs = opts.grace) {
    const current = child
    if (!current) return Promise.resolve()
    const killAt = performance.now() + graceMs
    if (current.killAt <= killAt) return current.exited
    current.killAt = killAt
    clearTimeout(current.killTimer)
    if (graceMs <= 0) {
      current.proc.kill('SIGKILL')
    } else {
      if (!current.stopping) current.proc.kill('SIGTERM')
      current.killTimer = setTimeout(() => current.proc.kill('SIGKILL'), graceMs)
    }
    current.stopping = true
    return current.exited
  }

  async function exit (code) {
    shuttingDown = true
    await terminate()
    await locker.close().catch((err) => log(`close: ${err.message}`))
    process.exit(code)
  }

  function startCommand (term) {
    const [file, ...args] = opts.argv
    // If this process is killed outright (SIGKILL), nothing is left to stop the command, and
    // another host takes over after the TTL: the kernel kills the command with us (Linux
    // parent-death signal, set by setpriv), so two hosts never run it at once.
    const [program, argv] = PDEATHSIG ? [PDEATHSIG, ['--pdeathsig', 'SIGKILL', '--', file, ...args]] : [file, args]
    const proc = spawn(program, argv, {
      stdio: 'inherit',
      env: { ...process.env, LOCKED_TOKEN: String(term.token), LOCKED_NAME: opts.name }
    })
    const current = { proc, stopping: false, killAt: Infinity, killTimer: null }
    // Should this process die, the guardian revokes the lease only once the command is gone too:
    // two commands never overlap.
    if (opts.guardian && proc.pid !== undefined) locker[guardProcess](proc.pid)
    current.exited = new Promise((resolve) => {
      proc.on('error', (err) => {
        log(`cannot run ${file}: ${err.message}`)
        resolve({ code: 127, signal: null })
      })
      proc.on('exit', (code, signal) => resolve({ code, signal }))
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
      // Re-elected while the command of an earlier term is still being stopped: never two at once.
      while (child) {
        log(`elected for ${opts.name} (token ${term.token}); waiting for the previous ${opts.argv[0]} (pid ${child.proc.pid}) to end`)
        await child.exited
      }
      if (term.signal.aborted || shuttingDown) return
      log(`elected for ${opts.name} (token ${term.token}); starting ${opts.argv[0]}`)
      startCommand(term)
    })
    singleton.on('stop', (reason) => {
      if (reason === 'removed' || reason === 'closed') return
      // Past the leadership deadline etcd may expire the lease and elect another host, which then
      // starts its own copy: the command must be dead by then, whatever --grace says.
      const left = Math.min(opts.grace, Math.max(0, lastTerm.validUntil - performance.now()))
      log(`lost leadership of ${opts.name} (${reason}); stopping the command${child ? (left > 0 ? ` (SIGKILL in ${Math.ceil(left)} ms at the latest)` : ' with SIGKILL') : ''}`)
      terminate(left)
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

async function status (opts) {
  const locker = locked(opts.hosts, { prefix: opts.prefix })
  const timer = setTimeout(async () => {
    log('no answer from etcd')
    await locker.close().catch(() => {})
    process.exit(1)
  }, 10000)
  let code = 0
  try {
    const term = await locker.term(opts.name)
    if (opts.json) {
      process.stdout.write(JSON.stringify({
        name: opts.name,
        leader: term?.leader ?? null,
        token: term?.token ?? null,
        since: term?.since?.toISOString() ?? null
      }) + '\n')
    } else if (term === null) {
      process.stdout.write(`${opts.name}: no leader\n`)
    } else {
      const since = term.since === null
        ? 'since an unknown time (the election time is not published yet)'
        : `since ${term.since.toISOString()} (${formatAge(Date.now() - term.since.getTime())} ago)`
      process.stdout.write(`${opts.name}: led by ${term.leader} ${since}, token ${term.token}\n`)
    }
  } catch (err) {
    log(`no answer from etcd: ${err.message}`)
    code = 1
  }
  clearTimeout(timer)
  await locker.close().catch(() => {})
  process.exit(code)
}

function main () {
  let opts
  try {
    opts = parseArgs(process.argv.slice(2))
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`locked: ${err.message}\n\n${USAGE}`)
    process.exit(2)
  }
  if (opts.help) {
    process.stdout.write(USAGE)
    return
  }
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
