'use strict'

// The errors locked throws and emits. Bad arguments get Node's own classes and codes, as Node's
// built-in APIs do; everything else is a LockedError with a stable `code` to branch on.

class LockedError extends Error {
  constructor (message, code, options) {
    super(message, options)
    this.name = 'LockedError'
    this.code = code
  }
}

function typeError (message) {
  const err = new TypeError(message)
  err.code = 'ERR_INVALID_ARG_TYPE'
  return err
}

function rangeError (message) {
  const err = new RangeError(message)
  err.code = 'ERR_OUT_OF_RANGE'
  return err
}

// A bad argument as a message names it: short, and never the contents of an object.
function describe (value) {
  if (value === null || value === undefined) return String(value)
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'string' ? `the string ${JSON.stringify(value)}` : `a ${typeof value}`
}

/** A call refused because close() was called; `call` names it where the message shows it. */
function lockerClosed (call) {
  return new LockedError(call === undefined ? 'locker is closed' : `${call}: locker is closed`, 'LOCKER_CLOSED')
}

module.exports = { LockedError, typeError, rangeError, describe, lockerClosed }
