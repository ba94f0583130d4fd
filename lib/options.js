'use strict'

// The arguments of locked(hosts, options), checked and brought into the shape the native core takes.

const { randomUUID } = require('node:crypto')
const { typeError, rangeError, describe } = require('./errors.js')
const { DEFAULTS, TTL, ttlFault, trimPrefix } = require('./rules.js')
const { LEVELS } = require('./log.js')

const HOST = /^(?:http:\/\/)?(?:\[[0-9a-fA-F:.]+\]|[^\s/:,[\]]+):(\d{1,5})\/?$/

/**
 * The etcd endpoints: an array of 'host:port' strings, or one comma-separated string. Returns
 * bare 'host:port' strings (no scheme, no trailing slash): the native core takes them as given.
 */
function normalizeHosts (hosts) {
  let list
  if (typeof hosts === 'string') {
    list = hosts.split(',')
  } else if (Array.isArray(hosts)) {
    list = []
    for (const entry of hosts) {
      if (typeof entry !== 'string') {
        throw typeError(`locked(hosts): every host must be a string like '127.0.0.1:2379', got ${describe(entry)}`)
      }
      list.push(...entry.split(','))
    }
  } else {
    throw typeError(`locked(hosts): hosts must be an array of 'host:port' strings or a 'host:port[,host:port]' string, got ${describe(hosts)}`)
  }
  list = list.map((h) => h.trim()).filter((h) => h !== '')
  if (list.length === 0) throw rangeError('locked(hosts): no etcd host given')
  for (const host of list) {
    const match = HOST.exec(host)
    if (!match || Number(match[1]) < 1 || Number(match[1]) > 65535) {
      throw rangeError(`locked(hosts): invalid etcd host ${JSON.stringify(host)}, expected 'host:port' such as '127.0.0.1:2379'`)
    }
  }
  return list.map((host) => host.replace(/^http:\/\//, '').replace(/\/$/, ''))
}

function normalizeOptions (options) {
  if (options === undefined || options === null) options = {}
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw typeError(`locked(hosts, options): options must be an object, got ${describe(options)}`)
  }
  const { ttl = DEFAULTS.ttl, prefix = DEFAULTS.prefix, id, drainTimeout = DEFAULTS.drainTimeout, handleSignals = false, guardian = false, balance = false, minTermMs = DEFAULTS.minTermMs, tls, auth, logger } = options
  checkTtl(ttl)
  if (typeof prefix !== 'string') {
    throw typeError(`locked: options.prefix must be a string, got ${describe(prefix)}`)
  }
  const trimmed = trimPrefix(prefix)
  if (trimmed === '') throw rangeError('locked: options.prefix must not be empty')
  if (id !== undefined && typeof id !== 'string') {
    throw typeError(`locked: options.id must be a string, got ${describe(id)}`)
  }
  if (id === '') throw rangeError('locked: options.id must not be empty')
  if (typeof drainTimeout !== 'number' || Number.isNaN(drainTimeout)) {
    throw typeError(`locked: options.drainTimeout must be a number of milliseconds, got ${describe(drainTimeout)}`)
  }
  if (drainTimeout < 0) throw rangeError(`locked: options.drainTimeout must not be negative, got ${drainTimeout}`)
  if (typeof handleSignals !== 'boolean') {
    throw typeError(`locked: options.handleSignals must be a boolean, got ${describe(handleSignals)}`)
  }
  if (typeof guardian !== 'boolean') {
    throw typeError(`locked: options.guardian must be a boolean, got ${describe(guardian)}`)
  }
  if (typeof balance !== 'boolean') {
    throw typeError(`locked: options.balance must be a boolean, got ${describe(balance)}`)
  }
  if (typeof minTermMs !== 'number' || Number.isNaN(minTermMs)) {
    throw typeError(`locked: options.minTermMs must be a number of milliseconds, got ${describe(minTermMs)}`)
  }
  if (!Number.isInteger(minTermMs) || minTermMs < 0 || minTermMs > MAX_MIN_TERM_MS) {
    throw rangeError(`locked: options.minTermMs must be a whole number of milliseconds from 0 to ${MAX_MIN_TERM_MS}, got ${minTermMs}`)
  }
  return {
    ttl,
    prefix: trimmed,
    id: id === undefined ? randomUUID() : id,
    drainTimeout,
    handleSignals,
    guardian,
    balance,
    minTermMs,
    tls: normalizeTls(tls),
    auth: normalizeAuth(auth),
    logger: checkLogger(logger)
  }
}

// A day: a leader that must lead longer before it yields never yields in practice.
const MAX_MIN_TERM_MS = 86_400_000

/** The options of locker(name, fn, options): { priority }. */
function normalizeSingletonOptions (options, call) {
  if (options === undefined || options === null) return { priority: 0 }
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw typeError(`${call}: options must be an object { priority }, got ${describe(options)}`)
  }
  const { priority = 0 } = options
  if (typeof priority !== 'number' || Number.isNaN(priority)) {
    throw typeError(`${call}: options.priority must be a number, got ${describe(priority)}`)
  }
  if (!Number.isSafeInteger(priority)) {
    throw rangeError(`${call}: options.priority must be a whole number, got ${priority}`)
  }
  return { priority }
}

function checkTtl (ttl) {
  const fault = ttlFault(ttl)
  if (fault === 'type') {
    throw typeError(`locked: options.ttl must be a number of seconds, got ${describe(ttl)}`)
  }
  if (fault !== null) {
    throw rangeError(`locked: options.ttl must be a whole number of seconds from ${TTL.min} to ${TTL.max}, got ${ttl}`)
  }
}

function pem (value, what) {
  if (value === undefined) return undefined
  if (Buffer.isBuffer(value)) return value.toString('utf8')
  if (typeof value === 'string') return value
  throw typeError(`locked: options.tls.${what} must be a PEM string or Buffer, got ${describe(value)}`)
}

function normalizeTls (tls) {
  if (tls === undefined) return undefined
  if (tls === null || typeof tls !== 'object' || Array.isArray(tls)) {
    throw typeError(`locked: options.tls must be an object { ca, cert, key }, got ${describe(tls)}`)
  }
  const out = { ca: pem(tls.ca, 'ca'), cert: pem(tls.cert, 'cert'), key: pem(tls.key, 'key') }
  if ((out.cert === undefined) !== (out.key === undefined)) {
    throw rangeError('locked: options.tls.cert and options.tls.key must be given together')
  }
  return out
}

/** The logger as given (it keeps its own `this`), once it has a function for every level. */
function checkLogger (logger) {
  if (logger === undefined) return undefined
  if (logger === null || (typeof logger !== 'object' && typeof logger !== 'function')) {
    throw typeError(`locked: options.logger must be an object with debug, info, warn and error functions (pino, console), got ${describe(logger)}`)
  }
  for (const level of LEVELS) {
    if (typeof logger[level] !== 'function') {
      throw typeError(`locked: options.logger.${level} must be a function, got ${describe(logger[level])}`)
    }
  }
  return logger
}

function normalizeAuth (auth) {
  if (auth === undefined) return undefined
  if (auth === null || typeof auth !== 'object' || Array.isArray(auth)) {
    throw typeError(`locked: options.auth must be an object { username, password }, got ${describe(auth)}`)
  }
  // Never echo the values: they are credentials.
  if (typeof auth.username !== 'string' || auth.username === '') {
    throw typeError('locked: options.auth.username must be a non-empty string')
  }
  if (typeof auth.password !== 'string') {
    throw typeError('locked: options.auth.password must be a string')
  }
  return { username: auth.username, password: auth.password }
}

module.exports = { normalizeHosts, normalizeOptions, normalizeSingletonOptions }
