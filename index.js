'use strict'

// The package entry. The API itself is in lib/: locked.js makes lockers, core.js runs one (the
// election itself runs in the native core, binding.js), handles.js holds what users get back,
// term.js the terms, options.js and rules.js what input is accepted. v2.js, the locked@2.x
// compatibility layer, is built on that API and plugged in here, so that it depends on the API
// and not the other way round: `locker({ id, path, value, ttl })` still makes a value-consensus node.

const { locked, onObjectCall } = require('./lib/locked.js')
const { Singleton, Observer } = require('./lib/handles.js')
const { LockedError } = require('./lib/errors.js')
const { createNode } = require('./v2.js')

onObjectCall((endpoints, options, nodeOptions) => createNode(locked, endpoints, options, nodeOptions))

module.exports = locked
module.exports.locked = locked
module.exports.default = locked
module.exports.Singleton = Singleton
module.exports.Observer = Observer
module.exports.LockedError = LockedError
