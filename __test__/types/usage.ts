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
  const r: 'removed' | 'deadline' | 'lease-lost' | 'key-deleted' | 'closed' | 'handover' | 'paused' = reason
  void r
})
void job.handover().then((h: locked.Handover) => { const who: string = h.leader; const t: number = h.token; void who; void t })
void job.handover('host-b')
// @ts-expect-error toId is a locker id
void job.handover(42)
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
const state: 'leader' | 'candidate' | 'stepped-down' | 'paused' = stats.singletons.job.state
const pausedJob: Promise<void> = job.pause()
job.resume()
const pausedAll: Promise<void> = locker.pause()
locker.resume()
void pausedJob; void pausedAll
const handingTo: string | null | undefined = stats.singletons.job.handover?.to
const rtt: number | null = stats.keepalive.roundTripMs
const guardianPid: number | null | undefined = stats.guardian?.pid
void state; void rtt; void guardianPid; void handingTo
void locked(['127.0.0.1:2379'], { guardian: true })
// Preferred leaders: a priority per singleton, balance and the minimum term per locker.
const balancer: locked.Locker = locked(['127.0.0.1:2379'], { balance: true, minTermMs: 2000 })
const urgent: locked.Singleton = balancer('urgent', null, { priority: 10 })
balancer('plain', async () => {}, {})
const priority: number = stats.singletons.job.priority
const selfStarted: boolean | undefined = stats.singletons.job.handover?.preferred
const balancing: boolean = stats.balance
const minTerm: number = stats.minTermMs
void urgent; void priority; void selfStarted; void balancing; void minTerm
// @ts-expect-error: a priority is a number
balancer('x', null, { priority: 'high' })
// @ts-expect-error: balance is a boolean
void locked(['127.0.0.1:2379'], { balance: 'yes' })
// A logger as pino and console take it: fields, then the message.
const consoleLogger: locked.Logger = console
type LogFn = (obj: object, msg?: string, ...args: unknown[]) => void
const pinoLike: { debug: LogFn, info: LogFn, warn: LogFn, error: LogFn, level: string } = { debug () {}, info () {}, warn () {}, error () {}, level: 'info' }
void locked(['127.0.0.1:2379'], { logger: consoleLogger })
void locked(['127.0.0.1:2379'], { logger: pinoLike })
void locked(['127.0.0.1:2379'], { logger: { debug (fields, message) { const m: string = message; void fields; void m }, info () {}, warn () {}, error () {} } })
const observer: locked.Observer = locker.observe('job')
observer.on('leader', (id) => { const s: string | null = id; void s })
observer.on('term', (term) => { const p: number | undefined = term?.priority; const to: string | undefined = term?.handover?.to; const pref: string | undefined = term?.preferred; void p; void to; void pref })
const observedTerm: locked.ObservedTerm | null = observer.term()
void observedTerm
// @ts-expect-error: an observer does not follow the election time
void observer.term()?.since
observer.close()
void locker.term('job').then((info: locked.TermInfo | null) => {
  if (info !== null) {
    const who: string = info.leader
    const token: number = info.token
    const since: Date | null = info.since
    void who; void token; void since
  }
})
void locker.terms().then((all) => {
  for (const t of all) {
    const name: string = t.name
    const info: locked.TermInfo = t
    void name; void info
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
// Every event on every emitter, with every way to add and remove a listener; each call returns
// the emitter, so they chain.
const onStart = (term: locked.Term): void => { void term.token }
const onStop = (reason: locked.StopReason): void => { void reason }
const onLeader = (leader: string | null, token: number | null): void => { void leader; void token }
const onError = (err: locked.LockedError): void => { const code: locked.ErrorCode = err.code; void code }
const onRenewed = (): void => {}
const onValue = (value: string, leaderId: string): void => { void value; void leaderId }
const onDeselect = (): void => {}
const singletonChain: locked.Singleton = job
  .on('start', onStart).once('start', onStart).off('start', onStart)
  .addListener('start', onStart).removeListener('start', onStart)
  .prependListener('start', onStart).prependOnceListener('start', onStart)
  .on('stop', onStop).once('stop', onStop).off('stop', onStop)
  .addListener('stop', onStop).removeListener('stop', onStop)
  .prependListener('stop', onStop).prependOnceListener('stop', onStop)
  .on('leader', onLeader).once('leader', onLeader).off('leader', onLeader)
  .addListener('leader', onLeader).removeListener('leader', onLeader)
  .prependListener('leader', onLeader).prependOnceListener('leader', onLeader)
  .on('error', onError).once('error', onError).off('error', onError)
  .addListener('error', onError).removeListener('error', onError)
  .prependListener('error', onError).prependOnceListener('error', onError)
const observerChain: locked.Observer = observer
  .on('leader', onLeader).once('leader', onLeader).off('leader', onLeader)
  .addListener('leader', onLeader).removeListener('leader', onLeader)
  .prependListener('leader', onLeader).prependOnceListener('leader', onLeader)
  .on('error', onError).once('error', onError).off('error', onError)
  .addListener('error', onError).removeListener('error', onError)
  .prependListener('error', onError).prependOnceListener('error', onError)
const lockerChain: locked.Locker = locker
  .on('error', onError).once('error', onError).off('error', onError)
  .addListener('error', onError).removeListener('error', onError)
  .prependListener('error', onError).prependOnceListener('error', onError)
  .on('renewed', onRenewed).once('renewed', onRenewed).off('renewed', onRenewed)
  .addListener('renewed', onRenewed).removeListener('renewed', onRenewed)
  .prependListener('renewed', onRenewed).prependOnceListener('renewed', onRenewed)
let nodeChain: locked.Node = node
for (const event of ['change', 'select', 'refresh', 'ping'] as const) {
  nodeChain = nodeChain.on(event, onValue).once(event, onValue).off(event, onValue)
    .addListener(event, onValue).removeListener(event, onValue)
    .prependListener(event, onValue).prependOnceListener(event, onValue)
}
nodeChain = nodeChain
  .on('deselect', onDeselect).once('deselect', onDeselect).off('deselect', onDeselect)
  .addListener('deselect', onDeselect).removeListener('deselect', onDeselect)
  .prependListener('deselect', onDeselect).prependOnceListener('deselect', onDeselect)
  .on('error', onError).once('error', onError).off('error', onError)
  .addListener('error', onError).removeListener('error', onError)
  .prependListener('error', onError).prependOnceListener('error', onError)
void singletonChain; void observerChain; void lockerChain; void nodeChain
// Listeners are typed from the event's name.
observer.once('leader', (id, token) => { const s: string | null = id; const t: number | null = token; void s; void t })
locker.once('error', (err) => { const code: locked.ErrorCode = err.code; void code })
node.once('ping', (value, leaderId) => { const v: string = value; const i: string = leaderId; void v; void i })
// @ts-expect-error: a singleton has no 'renewed' event (the locker has)
job.on('renewed', onRenewed)
// @ts-expect-error: an observer has no 'start' event
observer.on('start', onStart)
// @ts-expect-error: an observer has no 'stop' event
observer.addListener('stop', onStop)
// @ts-expect-error: a locker has no 'leader' event (its singletons have)
locker.once('leader', onLeader)
// @ts-expect-error: a locker has no 'start' event
locker.removeListener('start', onStart)
// @ts-expect-error: a node has no 'start' event
node.on('start', onStart)
// @ts-expect-error: 'leader' listeners get a string or null, not a term
job.off('leader', onStart)
// @ts-expect-error: 'error' listeners get a LockedError, not a reason
observer.removeListener('error', onStop)
// @ts-expect-error: 'renewed' listeners get no term
locker.prependListener('renewed', onStart)
// @ts-expect-error: 'select' listeners get a value string, not a term
node.once('select', onStart)
// @ts-expect-error: 'leader' listeners get a string, not a number, first
observer.once('leader', (leader: number) => { void leader })
// @ts-expect-error: 'start' listeners get a term, not a reason
job.addListener('start', onStop)
// @ts-expect-error: 'stop' listeners get a reason, not a term
job.removeListener('stop', onStart)
// @ts-expect-error: 'start' listeners get a term, not a leader
job.prependOnceListener('start', onLeader)
// @ts-expect-error: 'deselect' listeners get nothing
node.removeListener('deselect', onError)
// @ts-expect-error: 'ping' listeners get a value string
node.prependListener('ping', onError)
// @ts-expect-error: 'error' listeners get a LockedError
observer.prependOnceListener('error', onStart)
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
// @ts-expect-error: terms() takes no name
void locker.terms('job')
// @ts-expect-error: terms() resolves to a list, not one TermInfo
const one: Promise<locked.TermInfo | null> = locker.terms()
void one
// @ts-expect-error: isLeader returns a boolean
const wrong: string = job.isLeader()
void wrong
