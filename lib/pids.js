'use strict'

// Whether a process can still run, for the guardian and `locked run`, which both wait for a
// process that is not their child to be gone.

const fs = require('node:fs')

// A killed process whose parent died stays a zombie until the init process reaps it, which can
// take a while; a zombie runs nothing, so it counts as gone.
function alive (pid) {
  try {
    process.kill(pid, 0)
  } catch (err) {
    return err.code === 'EPERM'
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat[stat.lastIndexOf(')') + 2] !== 'Z'
  } catch {
    return true // no /proc here: trust the signal check
  }
}

module.exports = { alive }
