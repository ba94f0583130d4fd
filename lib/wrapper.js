'use strict'
// `locked run`'s command where no setpriv can give it a parent-death signal (Alpine, distroless
// images, macOS): `locked run` starts `node wrapper.js -- COMMAND [ARGS...]` with a pipe on fd 3
// whose other end only `locked run` holds, and this process runs COMMAND. However `locked run`
// dies (SIGKILL, the OOM killer, a native crash), the kernel closes its end: this process reads
// end-of-file and kills COMMAND with SIGKILL, so the command never outlives its runner.
//
// On the pipe, one JSON object a line. From `locked run`:
//   { env: {...} }     COMMAND's environment; nothing starts before it. This process itself runs
//                      with an empty environment, so NODE_OPTIONS and the like are COMMAND's alone
//   { kill: true }     SIGKILL to COMMAND (`locked run` stopping it past its grace period)
// To `locked run`:
//   { pid }            COMMAND started with this pid
//   { code, signal }   how COMMAND ended (127 if it could not start); this process then exits
//
// SIGTERM is passed on to COMMAND. SIGINT, SIGQUIT and SIGHUP are ignored: a terminal sends
// them to the whole process group, COMMAND included, and passing them on would double them.

const net = require('node:net')
const os = require('node:os')
const { spawn } = require('node:child_process')

const channel = new net.Socket({ fd: 3, readable: true, writable: true })
const argv = process.argv.slice(process.argv.indexOf('--') + 1)
let child = null
let finished = false

function finish (code, signal) {
  if (finished) return
  finished = true
  const status = code ?? 128 + (os.constants.signals[signal] || 0)
  if (!channel.writable) process.exit(status)
  channel.end(JSON.stringify({ code, signal }) + '\n', () => process.exit(status))
}

// Stops COMMAND, or, before it started, ends here without starting it.
function stop (signal) {
  if (child === null) finish(null, signal)
  else child.kill(signal)
}

function start (env) {
  if (child !== null || finished) return
  const [file, ...args] = argv
  child = spawn(file, args, { stdio: 'inherit', env })
  if (child.pid !== undefined) channel.write(JSON.stringify({ pid: child.pid }) + '\n')
  child.on('error', (err) => {
    process.stderr.write(`locked: cannot run ${file}: ${err.message}\n`)
    finish(127, null)
  })
  child.on('exit', (code, signal) => finish(code, signal))
}

for (const signal of ['SIGINT', 'SIGQUIT', 'SIGHUP']) process.on(signal, () => {})
process.on('SIGTERM', () => stop('SIGTERM'))

let buffer = ''
channel.setEncoding('utf8')
channel.on('data', (chunk) => {
  buffer += chunk
  let newline
  while ((newline = buffer.indexOf('\n')) >= 0) {
    const message = JSON.parse(buffer.slice(0, newline))
    buffer = buffer.slice(newline + 1)
    if (message.env) start(message.env)
    if (message.kill) stop('SIGKILL')
  }
})
// `locked run` is gone.
channel.on('end', () => stop('SIGKILL'))
channel.on('error', () => stop('SIGKILL'))
