//! `locked`: leader election for Node.js services on etcd, as a native addon.
//!
//! Modelled on etcd's Go `concurrency` package: a session (lease, keepalive, leadership deadline),
//! elections (campaign, wait for every predecessor, resign) and observers, all of a locker sharing
//! one session, one watch and one batching queue. Modules depend downwards only:
//!
//! ```text
//! binding            N-API: JavaScript values in, events out
//!   locker           registry of elections and observers, lifecycle (open, closing, closed)
//!     election       campaign, wait, lead, resign, hand over (with its Control input)
//!     observer       who leads, without taking part
//!       context      what elections and observers work with
//!         handover   handing the lead to a chosen candidate: marker, choice, transactions
//!         preference who should lead: priorities, balance; asks leaders to hand over
//!         term       leaders' term records: write, read
//!         session    lease, keepalive, leadership deadline
//!         watcher    one watch over the prefix, waking elections and observers (and the
//!                    handover markers it sees)
//!         guardian   a child process that revokes the lease when this process dies
//!         survey     where candidates stand: one check, or all of them in one read
//!         batch      many elections' transactions in one request
//!           events   what the core reports (Event, StopReason, Term)
//!             rank   who should lead by priority and balance (pure)
//!             keys   the key layout, LeaderInfo, candidates and handover markers as read
//!             cluster  members, failover, the request retry layer, Failure
//!               retry, clock, signal, util
//! allocator          the native heap (mimalloc), set up when the addon loads
//! ```

mod allocator;
mod batch;
mod binding;
mod clock;
mod cluster;
mod context;
mod election;
mod events;
mod guardian;
mod handover;
mod keys;
mod locker;
mod observer;
mod preference;
mod rank;
mod retry;
mod session;
mod signal;
mod survey;
mod term;
mod util;
mod watcher;
