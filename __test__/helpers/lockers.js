'use strict'
// The in-process lockers of a test file, so that each is closed in after() (or afterEach) even
// when its test failed half-way: an open locker keeps its lease, its connections and the event
// loop alive, and its keys would stand in the way of the next test.
//
//   const lockers = lockerSet()
//   const l = lockers.open(etcd.endpoints, { ttl: 2, prefix })
//   after(() => lockers.closeAll({ waitAtMostMs: 3000 }))

const locked = require('../..')
const { quietWindow } = require('./util')

function lockerSet () {
  const open = new Set()
  return {
    open (hosts, options) {
      const l = locked(hosts, options)
      open.add(l)
      return l
    },
    // waitAtMostMs: a close that hangs (etcd gone, a test that broke the locker) must not hold up
    // the rest of the clean-up; without it every close is awaited.
    async closeAll ({ waitAtMostMs } = {}) {
      const list = [...open]
      open.clear()
      const closing = list.map((l) => l.close().catch(() => {}))
      await Promise.all(waitAtMostMs === undefined ? closing : closing.map((c) => Promise.race([c, quietWindow(waitAtMostMs)])))
    }
  }
}

module.exports = { lockerSet }
