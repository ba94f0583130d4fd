// Compiled with `tsc --strict` by the test suite: every line must type-check, and every
// `@ts-expect-error` line must fail to.
import locked = require('../..')

const locker: locked.Locker = locked(['127.0.0.1:2379'], { ttl: 5, prefix: 'app', id: 'a', drainTimeout: 1000, handleSignals: true })
locked('127.0.0.1:2379,127.0.0.1:22379')
locked.default('127.0.0.1:2379')
locked.locked('127.0.0.1:2379')

const job: locked.Singleton = locker('job', async function (remove, term) {
  const token: number = term.token
  const signal: AbortSignal = term.signal
  const until: number = term.validUntil
  const self: locked.Singleton = this
  void token; void signal; void until; void self
  await remove()
})
locker('bare')
const name: string = job.name
const leads: boolean = job.isLeader()
const leader: string | null = job.leader()
void name; void leads; void leader
job.on('start', (term) => { const n: number = term.token; void n })
job.on('stop', (reason) => {
  const r: 'removed' | 'deadline' | 'lease-lost' | 'key-deleted' | 'closed' = reason
  void r
})
job.on('error', (err) => { const code: locked.ErrorCode = err.code; void code })
job.on('leader', (id) => { const s: string | null = id; void s })
const removed: Promise<void> = job.remove()
void removed

const all: Record<string, locked.Singleton> = locker.singletons()
void all
const id: string = locker.id()
void id
locker.on('error', (err: locked.LockedError) => { void err.message })
const stats: locked.Stats = locker.stats()
const state: 'leader' | 'candidate' | 'stepped-down' = stats.singletons.job.state
const rtt: number | null = stats.keepalive.roundTripMs
const guardianPid: number | null | undefined = stats.guardian?.pid
void state; void rtt; void guardianPid
void locked(['127.0.0.1:2379'], { guardian: true })
// A logger as pino and console take it: fields, then the message.
const consoleLogger: locked.Logger = console
type LogFn = (obj: object, msg?: string, ...args: unknown[]) => void
const pinoLike: { debug: LogFn, info: LogFn, warn: LogFn, error: LogFn, level: string } = { debug () {}, info () {}, warn () {}, error () {}, level: 'info' }
void locked(['127.0.0.1:2379'], { logger: consoleLogger })
void locked(['127.0.0.1:2379'], { logger: pinoLike })
void locked(['127.0.0.1:2379'], { logger: { debug (fields, message) { const m: string = message; void fields; void m }, info () {}, warn () {}, error () {} } })
const observer: locked.Observer = locker.observe('job')
observer.on('leader', (id) => { const s: string | null = id; void s })
observer.close()
void locker.term('job').then((info: locked.TermInfo | null) => {
  if (info !== null) {
    const who: string = info.leader
    const token: number = info.token
    const since: Date | null = info.since
    void who; void token; void since
  }
})
const node: locked.Node = locker({ id: 'n1', path: '/master', value: 10, ttl: 10 })
node.on('change', (value, leaderId) => { const v: string = value; const i: string = leaderId; void v; void i })
node.on('deselect', () => {})
node.start()
const elected: string | null = node.value()
void elected
void node.stop()
const closed: Promise<void> = locker.close()
void closed

// @ts-expect-error: a name must be a string
locker(5)
// @ts-expect-error: a node needs a path
locker({ value: 1 })
// @ts-expect-error: fn must be a function
locker('x', 'not a function')
// @ts-expect-error: ttl is a number
locked(['127.0.0.1:2379'], { ttl: '5' })
// @ts-expect-error: unknown option
locked(['127.0.0.1:2379'], { tll: 5 })
// Every event on every emitter, both ways.
const onLeader = (leader: string | null, token: number | null): void => { void leader; void token }
job.on('leader', onLeader).off('leader', onLeader).addListener('leader', onLeader).removeListener('leader', onLeader)
const onRenewed = (): void => {}
locker.on('renewed', onRenewed).once('renewed', onRenewed).off('renewed', onRenewed)
locker.addListener('renewed', onRenewed).removeListener('renewed', onRenewed)
const onSelect = (value: string, leaderId: string): void => { void value; void leaderId }
node.on('select', onSelect).once('select', onSelect).off('select', onSelect)
// @ts-expect-error: Node is a type only; nodes come from locker({ path, value })
void new locked.Node()
// @ts-expect-error: a logger has debug, info, warn and error
locked(['127.0.0.1:2379'], { logger: { info () {} } })
// @ts-expect-error: a logger is an object of functions
locked(['127.0.0.1:2379'], { logger: 'pino' })
// @ts-expect-error: guardian is a boolean
locked(['127.0.0.1:2379'], { guardian: 'yes' })
// @ts-expect-error: hosts are strings
locked([2379])
// @ts-expect-error: stop listeners get a reason string, not a term
job.on('stop', (reason: locked.Term) => { void reason })
// @ts-expect-error: there is no such event
job.on('elected', () => {})
// @ts-expect-error: term.token is read-only
job.on('start', (term) => { term.token = 1 })
// @ts-expect-error: term() needs a name
void locker.term()
// @ts-expect-error: term() resolves to a TermInfo or null, not a string
const leaderName: Promise<string> = locker.term('job')
void leaderName
// @ts-expect-error: isLeader returns a boolean
const wrong: string = job.isLeader()
void wrong
