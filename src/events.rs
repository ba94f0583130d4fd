//! What the core reports to its user (the binding turns these into JavaScript events).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::Failure;

/// Why a leader stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The user removed the singleton.
    Removed,
    /// No keepalive was answered in time: etcd may expire the lease soon.
    Deadline,
    /// etcd says the lease is gone (expired or revoked).
    LeaseLost,
    /// The leader's key was deleted by someone else.
    KeyDeleted,
    /// The locker was closed.
    Closed,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Removed => "removed",
            StopReason::Deadline => "deadline",
            StopReason::LeaseLost => "lease-lost",
            StopReason::KeyDeleted => "key-deleted",
            StopReason::Closed => "closed",
        }
    }
}

/// Who leads an election: the locker id in the leader's key, and the key's create revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub id: String,
    pub token: i64,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// The singleton `serial` was elected; `token` is its key's create revision. `takeover` is
    /// the time from this host's watch reporting the deletion that made it first to its election,
    /// when it took over from another host.
    Start {
        serial: u32,
        token: i64,
        takeover: Option<std::time::Duration>,
    },
    Stop {
        serial: u32,
        reason: StopReason,
    },
    /// The leader of the election changed: the id of the locker that leads, or none.
    Leader {
        serial: u32,
        leader: Option<LeaderInfo>,
    },
    /// The answer to a query of who leads, and since when (`None`: nobody leads).
    Term {
        serial: u32,
        term: Option<crate::term::Term>,
    },
    /// A resign finished: the key is gone (or the lease that held it is).
    Removed {
        serial: u32,
    },
    /// Something failed; `serial` is `None` for locker-wide (connection) trouble.
    Error {
        serial: Option<u32>,
        code: &'static str,
        message: String,
    },
    /// A step of the election, for debug output.
    Log {
        line: String,
    },
    /// A keepalive was answered (reported only when asked for).
    Renewed,
    /// The locker is closed; `error` says why the lease could not be revoked, if it could not.
    Closed {
        error: Option<Failure>,
    },
}

impl Event {
    pub fn error(serial: Option<u32>, failure: &Failure) -> Event {
        Event::Error {
            serial,
            code: failure.code(),
            message: failure.message(),
        }
    }
}

type Deliver = Box<dyn Fn(Event) + Send + Sync>;

/// Where events go, and whether the election's steps are also narrated (`DEBUG=locked`).
pub struct Events {
    /// Taken away once the locker has closed: what delivers events to JavaScript holds the
    /// JavaScript side alive, and a closed locker must be free to go.
    deliver: std::sync::RwLock<Option<Deliver>>,
    debug: bool,
}

pub type EventSink = Arc<Events>;

impl Events {
    pub fn new(deliver: impl Fn(Event) + Send + Sync + 'static, debug: bool) -> EventSink {
        Arc::new(Events {
            deliver: std::sync::RwLock::new(Some(Box::new(deliver))),
            debug,
        })
    }

    pub fn emit(&self, event: Event) {
        let deliver = self.deliver.read().unwrap_or_else(|e| e.into_inner());
        if let Some(deliver) = deliver.as_ref() {
            deliver(event);
        }
    }

    /// Delivers nothing from now on, and drops what delivered.
    pub fn detach(&self) {
        let taken = self
            .deliver
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(taken);
    }

    /// A debug line; the text is only built when debugging is on.
    pub fn log(&self, line: impl FnOnce() -> String) {
        if self.debug {
            self.emit(Event::Log { line: line() });
        }
    }
}

/// Decides which failures of a streak to report: none while the streak is younger than a grace
/// period (a member failing over, or an etcd raft election, heals within it, and reporting those
/// would only alarm), then one at once and at most one every few seconds, so an outage does not
/// flood the event loop.
pub struct Throttle {
    streak_since: Option<Instant>,
    last: Option<Instant>,
}

const GRACE: Duration = Duration::from_secs(2);
const THROTTLE_INTERVAL: Duration = Duration::from_secs(5);

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            streak_since: None,
            last: None,
        }
    }

    pub fn should_report(&mut self) -> bool {
        let now = Instant::now();
        let since = *self.streak_since.get_or_insert(now);
        if now.duration_since(since) < GRACE {
            return false;
        }
        match self.last {
            Some(last) if now.duration_since(last) < THROTTLE_INTERVAL => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// A success ends the streak.
    pub fn reset(&mut self) {
        self.streak_since = None;
        self.last = None;
    }
}
