import locked = require('../..')
const l = locked(['127.0.0.1:2379'], { ttl: 5 })
const s = l('x', (remove, term) => { const n: number = term.token; void remove() })
s.on('stop', (r) => { const x: locked.StopReason = r })
s.on('error', (e) => e.code)
const id: string = l.id()
void l.close()
const d = locked.default('a:1')
const e = locked.locked('a:1')
// @ts-expect-error
l(5)
// @ts-expect-error
locked(['a:1'], { ttl: '5' })
