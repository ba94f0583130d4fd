'use strict'

// The package entry: the API of lib/ (README, "How it works", says what is where), with the
// locked@2.x nodes of v2.js plugged in here, so that the compatibility layer depends on the API
// and not the other way round: `locker({ id, path, value, ttl })` still makes a node.

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
