'use strict'

// Where a locker's narration and errors go. With the `logger` option, to that logger, called as
// pino and console both accept it: `logger.info({ locker, name, ... }, 'message')`. Without one,
// DEBUG=locked (or LOCKED_LOG=debug) prints the native core's steps on stderr, as it always did.

const LEVELS = Object.freeze(['debug', 'info', 'warn', 'error'])

// DEBUG=locked, DEBUG=locked:* or any pattern matching either, in a list (`DEBUG=app,locked`) as
// the `debug` package reads it, or LOCKED_LOG=debug.
function debugEnabled () {
  if (/^debug$/i.test(process.env.LOCKED_LOG || '')) return true
  const patterns = (process.env.DEBUG || '').split(/[\s,]+/).filter(Boolean)
  let on = false
  for (const p of patterns) {
    const negated = p.startsWith('-')
    const re = new RegExp('^' + (negated ? p.slice(1) : p).replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$')
    if (re.test('locked') || re.test('locked:')) on = !negated
  }
  return on
}

// Whether a logger would print debug lines. Only a logger that says so (pino's isLevelEnabled)
// spares the native core its narration; for any other it is narrated.
function wantsDebug (logger) {
  if (typeof logger.isLevelEnabled !== 'function') return true
  try {
    return logger.isLevelEnabled('debug') !== false
  } catch {
    return true
  }
}

class Log {
  #logger
  #id

  /** `logger`: the validated option (or undefined); `id`: the locker's id, on every line. */
  constructor (logger, id) {
    this.#logger = logger ?? null
    this.#id = id
  }

  /** Whether the native core should narrate its steps (each one reaches step()). */
  get narrate () {
    return debugEnabled() || (this.#logger !== null && wantsDebug(this.#logger))
  }

  /** A step the native core narrated. */
  step (line) {
    if (this.#logger === null) {
      process.stderr.write(`locked ${this.#id} ${line}\n`)
    } else {
      this.#call('debug', {}, line)
    }
  }

  info (fields, message) { this.#call('info', fields, message) }
  warn (fields, message) { this.#call('warn', fields, message) }

  /** An error the library reports (an 'error' event), with its code; `fields` names where. */
  error (fields, err) {
    this.#call('error', { ...fields, code: err.code, err }, err.message)
  }

  #call (level, fields, message) {
    if (this.#logger === null) return
    try {
      this.#logger[level]({ locker: this.#id, ...fields }, message)
    } catch (err) {
      // A logger that throws is a bug of the application: like a listener that throws, it
      // surfaces as an uncaught exception, but outside the event routing, which goes on.
      process.nextTick(() => { throw err })
    }
  }
}

module.exports = { Log, LEVELS, debugEnabled }
