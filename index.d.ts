import { EventEmitter } from 'node:events'

declare namespace locked {
  /** Options of `locked(hosts, options)`. */
  interface LockerOptions {
    /** Lease TTL in seconds (whole number, 2 to 3600). Default 10. */
    ttl?: number
    /** Key prefix in etcd: candidates are `<prefix>/<name>/<lease id hex>`, the leaders' term records `<prefix>//terms/<bucket>/<lease id hex>`. Default `'locked'`. */
    prefix?: string
    /** This locker's id, stored as the value of its keys. Default: a random UUID v4. */
    id?: string
    /**
     * How long `remove()` and `close()` wait, in milliseconds, for the promise a leader's `fn`
     * returned to settle before resigning. Default 10000.
     */
    drainTimeout?: number
    /** Close this locker on SIGTERM/SIGINT, then let the signal take its course. Default false. */
    handleSignals?: boolean
    /**
     * Start a guardian process that revokes this locker's lease the moment this process dies
     * (SIGKILL, the OOM killer, a crash), so another host takes over in milliseconds instead of
     * after the TTL. A frozen process, a lost machine or a partition still take the TTL.
     * Default false.
     */
    guardian?: boolean
    /**
     * Take part in balancing: among the candidates of a name that balance (after priority), the
     * one rendezvous hashing of (name, locker id) picks leads, so that M balancing lockers lead
     * about 1/M of the names each. A leader that balances hands over to the preferred candidate
     * once it has led `minTermMs`; a locker without `balance` never yields for balance.
     * Default false.
     */
    balance?: boolean
    /**
     * How long a leader leads, in milliseconds, before it hands over to a preferred candidate (a
     * higher priority, or balance), so that leadership never flaps. Whole number, 0 to 86400000.
     * Default 5000.
     */
    minTermMs?: number
    /** Connect with TLS (`https`): the CA of the members, and a client certificate if required. */
    tls?: { ca?: string | Buffer, cert?: string | Buffer, key?: string | Buffer }
    /** etcd user; an expired auth token is renewed transparently. */
    auth?: { username: string, password: string }
    /**
     * Where the election's narration and errors go (pino, console, or any object of that shape).
     * Without one, `DEBUG=locked` prints the narration on stderr.
     */
    logger?: Logger
  }

  /**
   * A logger as pino and console both accept it: `logger.info({ locker, name, token }, 'elected')`.
   * `debug`: the native core's steps; `info`: elected, stepped down when asked (`removed`,
   * `closed`); `warn`: stepped down on its own (`deadline`, `lease-lost`, `key-deleted`);
   * `error`: every error the locker, its singletons and observers report (`fields.err`, `fields.code`).
   */
  interface Logger {
    debug (fields: Record<string, unknown>, message: string): void
    info (fields: Record<string, unknown>, message: string): void
    warn (fields: Record<string, unknown>, message: string): void
    error (fields: Record<string, unknown>, message: string): void
  }

  /** Handed to `fn` and to `'start'` listeners for each term this host leads. */
  interface Term {
    /**
     * The create revision of this host's key: it grows with every new term cluster-wide, so a
     * resource can reject writes carrying a lower token than one it has seen (fencing).
     */
    readonly token: number
    /** Aborted when this term ends; `signal.reason` is a `LockedError` with `reason` set. */
    readonly signal: AbortSignal
    /**
     * The local leadership deadline, comparable with `performance.now()`; moves forward with
     * every renewal and is frozen once the term ended.
     */
    readonly validUntil: number
  }

  /** The current term of an election, as `locker.term(name)` reads it from etcd. */
  interface TermInfo {
    /** The locker id of the leader. */
    leader: string
    /** The leader's fencing token (its key's create revision). */
    token: number
    /**
     * When the leader was elected, by the leader's clock; null for a moment after an election
     * (until the leader has published it), or when the leader cannot write it.
     */
    since: Date | null
    /** The leader's `priority` (0 without one). */
    priority: number
    /**
     * The locker id of the candidate that should lead by priority and balance: the leader's own
     * id when it should, another one while the leader has yet to hand over (see `minTermMs`).
     */
    preferred: string
    /** The handover the leader has under way, to the candidate of this locker id; else null. */
    handover: { to: string } | null
  }

  /** What an observer reports: a `TermInfo` without the election time (not followed). */
  type ObservedTerm = Omit<TermInfo, 'since'>

  /** Who leads after a handover: the new leader's locker id and fencing token. */
  interface Handover {
    readonly leader: string
    readonly token: number
  }

  /** Why a leader stopped leading. */
  type StopReason = 'removed' | 'deadline' | 'lease-lost' | 'key-deleted' | 'closed' | 'handover' | 'paused'

  /** Stable values of `LockedError.code`. */
  type ErrorCode =
    | 'ETCD_UNAVAILABLE'
    | 'ETCD_REJECTED'
    | 'LEASE_NOT_FOUND'
    | 'USER_FN_THREW'
    | 'LOCKER_CLOSED'
    | 'ALREADY_REGISTERED'
    | 'LEADERSHIP_ENDED'
    | 'GUARDIAN_EXITED'
    | 'GUARDIAN_FAILED'
    | 'NO_NATIVE_BINARY'
    | 'NOT_LEADER'
    | 'NOT_A_CANDIDATE'
    | 'NO_CANDIDATE'
    | 'HANDOVER_BLOCKED'
    | 'HANDOVER_INTERRUPTED'
    | 'HANDOVER_IN_PROGRESS'
    | 'REMOVED'

  class LockedError extends Error {
    readonly code: ErrorCode
    /** On the error a term's signal is aborted with: why the term ended. */
    readonly reason?: StopReason
  }

  /** The events of a Singleton, by name: each one's listener. */
  interface SingletonEvents {
    /** This host was elected; `fn` runs right after the listeners. */
    start: (term: Term) => void
    /** This host no longer leads. */
    stop: (reason: StopReason) => void
    /** The leader changed: its locker id and fencing token, or null while nobody is known to lead. */
    leader: (leader: string | null, token: number | null) => void
    /** `err.code` tells what failed (`USER_FN_THREW`, `ETCD_UNAVAILABLE`, ...); the election goes on. */
    error: (err: LockedError) => void
  }

  /** The events of an Observer, by name. */
  interface ObserverEvents {
    /** The first event reports the current state, then one per change; null when nobody leads. */
    leader: (leader: string | null, token: number | null) => void
    /**
     * The first event reports the current state, then one per change of the leader, its
     * priority, who should lead, or a handover under way; null when nobody leads.
     */
    term: (term: ObservedTerm | null) => void
    /** etcd trouble; observing resumes by itself. */
    error: (err: LockedError) => void
  }

  /** The events of a locker, by name. */
  interface LockerEvents {
    /** Connection-level trouble (etcd unreachable, lease lost, the guardian). */
    error: (err: LockedError) => void
    /** Every answered keepalive of this locker's lease. */
    renewed: () => void
  }

  /** The events of a locked@2.x node, by name. */
  interface NodeEvents {
    /** The elected value or leader changed (every node). */
    change: (value: string, leaderId: string) => void
    /** This node was elected; its value is the cluster's. */
    select: (value: string, leaderId: string) => void
    /** This node was the leader and is no longer. */
    deselect: () => void
    /** The leader renewed its term (on the leader). */
    refresh: (value: string, leaderId: string) => void
    /** The leader still holds its term (every node that knows a leader). */
    ping: (value: string, leaderId: string) => void
    error: (err: LockedError) => void
  }

  /** Called each time this host is elected; `remove()` un-registers this host. */
  type SingletonFn = (this: Singleton, remove: () => Promise<void>, term: Term) => unknown

  class Singleton extends EventEmitter {
    readonly name: string
    /** Steps down if leading, then deletes this host's key; resolves once etcd confirmed. */
    remove (): Promise<void>
    /**
     * Hands the lead to the candidate with locker id `toId` (without it: the next in line). This
     * host's work stops and drains as in `remove()`; then that candidate leads, never another, and
     * this host stays registered and queues again. Rejects (`NOT_LEADER`, `NOT_A_CANDIDATE`,
     * `NO_CANDIDATE`, `HANDOVER_BLOCKED`, `HANDOVER_IN_PROGRESS`, `REMOVED`, `LOCKER_CLOSED`,
     * `HANDOVER_INTERRUPTED`) when it cannot happen; one that fails after the drain while this
     * host still leads starts its work again (a new `start` with the same token).
     */
    handover (toId?: string): Promise<Handover>
    /**
     * Standby: if this host leads, its work stops and drains as in `remove()` and the next in line
     * leads; then it leaves the queue but stays registered, and never leads until `resume()`.
     * Resolves once its key is gone (or `resume()`, `remove()` or `close()` came first). While
     * paused, `leader()` is null (not followed).
     */
    pause (): Promise<void>
    /** Back in the queue after `pause()`, behind the candidates queued meanwhile. */
    resume (): void
    /** Whether this host leads now, checked against the leadership deadline at call time. */
    isLeader (): boolean
    /** The locker id of the current leader, or null when nobody leads or it is not known yet. */
    leader (): string | null

    on<E extends keyof SingletonEvents> (event: E, listener: SingletonEvents[E]): this
    once<E extends keyof SingletonEvents> (event: E, listener: SingletonEvents[E]): this
    off<E extends keyof SingletonEvents> (event: E, listener: SingletonEvents[E]): this
    addListener<E extends keyof SingletonEvents> (event: E, listener: SingletonEvents[E]): this
    removeListener<E extends keyof SingletonEvents> (event: E, listener: SingletonEvents[E]): this
    prependListener<E extends keyof SingletonEvents> (event: E, listener: SingletonEvents[E]): this
    prependOnceListener<E extends keyof SingletonEvents> (event: E, listener: SingletonEvents[E]): this
  }

  /** Options of `locker(name, fn, options)`. */
  interface SingletonOptions {
    /**
     * The highest-priority live candidate leads: a leader of a lower priority hands over to it
     * (drained, as `handover()`) once it has led the locker's `minTermMs`. A safe integer, may be
     * negative; default 0. Candidates without one (and `etcdctl elect`) count as 0.
     */
    priority?: number
  }

  /** A snapshot for health endpoints and metrics: `locker.stats()`. */
  interface Stats {
    id: string
    ttl: number
    /** The lease id in hex (as in the keys), or null while there is none. */
    lease: string | null
    /** Milliseconds until the leadership deadline (0 when it has passed). */
    validForMs: number
    keepalive: {
      /** Round trip of the last answered keepalive, in ms. */
      roundTripMs: number | null
      renewals: number
      /** Milliseconds since the last answered keepalive was sent. */
      sinceRenewalMs: number | null
    }
    /** With `guardian: true`: its process id (null while it is being started again); else null. */
    guardian: { pid: number | null } | null
    /** The `balance` option. */
    balance: boolean
    /** The `minTermMs` option. */
    minTermMs: number
    singletons: Record<string, {
      state: 'leader' | 'candidate' | 'stepped-down' | 'paused'
      termsWon: number
      /**
       * For the last term this host took over from another host: ms from the deletion of the
       * previous leader's key reaching this host to its election; null if it never took over.
       */
      lastTakeoverMs: number | null
      /** The fencing token of the current term, or null when not leading. */
      token: number | null
      /** The current leader's locker id, or null. */
      leader: string | null
      /** When the state last changed (ms since the epoch). */
      since: number
      lastStop: StopReason | null
      /** Its `priority` (0 unless given). */
      priority: number
      /**
       * A handover of this host under way: to whom (`to: null`: the next in line), and whether this
       * host started it on its own, to the preferred candidate (`preferred: true`); else null.
       */
      handover: { to: string | null, preferred: boolean } | null
    }>
  }

  /** Follows the leader of an election without taking part in it. */
  class Observer extends EventEmitter {
    readonly name: string
    /** The locker id of the current leader, or null when nobody leads or it is not known yet. */
    leader (): string | null
    /** The current leader's fencing token (its key's create revision), or null. */
    token (): number | null
    /** What the last `'term'` event reported: null when nobody leads, or before the first. */
    term (): ObservedTerm | null
    /** Stops observing. */
    close (): void

    on<E extends keyof ObserverEvents> (event: E, listener: ObserverEvents[E]): this
    once<E extends keyof ObserverEvents> (event: E, listener: ObserverEvents[E]): this
    off<E extends keyof ObserverEvents> (event: E, listener: ObserverEvents[E]): this
    addListener<E extends keyof ObserverEvents> (event: E, listener: ObserverEvents[E]): this
    removeListener<E extends keyof ObserverEvents> (event: E, listener: ObserverEvents[E]): this
    prependListener<E extends keyof ObserverEvents> (event: E, listener: ObserverEvents[E]): this
    prependOnceListener<E extends keyof ObserverEvents> (event: E, listener: ObserverEvents[E]): this
  }

  /** Options of a locked@2.x node: `locker({ id, path, value, ttl })`. */
  interface NodeOptions {
    /** This node's id; generated when absent. */
    id?: string
    /** The etcd path the nodes compete on, e.g. '/master'. */
    path: string
    /** This node's value: the cluster's value while this node is elected. */
    value: string | number | boolean
    /** Lease TTL of this node in seconds (at least 2). Default: the locker's. */
    ttl?: number
  }

  /** A locked@2.x value-consensus node, made by `locker({ path, value })` (not constructible). */
  interface Node extends EventEmitter {
    start (): void
    /** Stops competing; a leader hands over at once. */
    stop (): Promise<void>
    /** The elected node's id, or null before any. */
    id (): string | null
    /** The elected node's value, or null before any. */
    value (): string | null
    localid (): string
    /** The value as given in the options. */
    localvalue (): string | number | boolean
    /** `localid() + ':::' + localvalue()` */
    localdata (): string
    isSelected (): boolean

    on<E extends keyof NodeEvents> (event: E, listener: NodeEvents[E]): this
    once<E extends keyof NodeEvents> (event: E, listener: NodeEvents[E]): this
    off<E extends keyof NodeEvents> (event: E, listener: NodeEvents[E]): this
    addListener<E extends keyof NodeEvents> (event: E, listener: NodeEvents[E]): this
    removeListener<E extends keyof NodeEvents> (event: E, listener: NodeEvents[E]): this
    prependListener<E extends keyof NodeEvents> (event: E, listener: NodeEvents[E]): this
    prependOnceListener<E extends keyof NodeEvents> (event: E, listener: NodeEvents[E]): this
  }

  /** A locker: call it to register a singleton. Also an EventEmitter for connection errors. */
  interface Locker extends EventEmitter {
    (name: string, fn?: SingletonFn | null, options?: SingletonOptions): Singleton
    /** locked@2.x: a value-consensus node on `options.path`. */
    (options: NodeOptions): Node
    /** This locker's id. */
    id (): string
    /** The singletons registered on this locker, by name. */
    singletons (): Record<string, Singleton>
    /** Lease health and the state of every singleton, for health endpoints and metrics. */
    stats (): Stats
    /** Pauses every singleton of this locker (see `Singleton.pause()`), and those registered later. */
    pause (): Promise<void>
    /** Resumes every singleton of this locker. */
    resume (): void
    /** Follows the leader of `name` without campaigning. */
    observe (name: string): Observer
    /**
     * Reads who leads `name` now, with its fencing token and the time it was elected; null when
     * nobody leads. Works for any name, also one this locker does not campaign for.
     */
    term (name: string): Promise<TermInfo | null>
    /**
     * Every election under this locker's prefix that has a leader, sorted by name: one
     * consistent read of etcd (in pages pinned to one revision), also for names this locker
     * does not campaign for.
     */
    terms (): Promise<Array<TermInfo & { name: string }>>
    /** Steps down everywhere and revokes the lease; resolves once etcd confirmed. */
    close (): Promise<void>

    on<E extends keyof LockerEvents> (event: E, listener: LockerEvents[E]): this
    once<E extends keyof LockerEvents> (event: E, listener: LockerEvents[E]): this
    off<E extends keyof LockerEvents> (event: E, listener: LockerEvents[E]): this
    addListener<E extends keyof LockerEvents> (event: E, listener: LockerEvents[E]): this
    removeListener<E extends keyof LockerEvents> (event: E, listener: LockerEvents[E]): this
    prependListener<E extends keyof LockerEvents> (event: E, listener: LockerEvents[E]): this
    prependOnceListener<E extends keyof LockerEvents> (event: E, listener: LockerEvents[E]): this
  }
}

/**
 * Creates a locker on the given etcd hosts: an array of `'host:port'`, or one string of
 * comma-separated `'host:port'` (an `http://` prefix is allowed).
 */
declare function locked (hosts: string | readonly string[], options?: locked.LockerOptions): locked.Locker

declare namespace locked {
  export { locked }
  export { locked as default }
}

export = locked
