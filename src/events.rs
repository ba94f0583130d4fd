//! What the core reports to its user (the binding turns these into JavaScript events).

use std::sync::Arc;

use crate::cluster::Failure;
use crate::keys::LeaderInfo;

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
    /// The singleton handed the lead to another candidate.
    Handover,
    /// The singleton was paused.
    Paused,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Removed => "removed",
            StopReason::Deadline => "deadline",
            StopReason::LeaseLost => "lease-lost",
            StopReason::KeyDeleted => "key-deleted",
            StopReason::Closed => "closed",
            StopReason::Handover => "handover",
            StopReason::Paused => "paused",
        }
    }
}

/// The current term of an election, as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub leader: LeaderInfo,
    /// When the leader was elected, in milliseconds since the Unix epoch by the leader's clock;
    /// `None` until the leader's record is written (or if it could not be).
    pub since_ms: Option<i64>,
    /// The leader's priority (0 without one).
    pub priority: i64,
    /// The locker id of the candidate that should lead instead, by priority and balance (see
    /// `rank`); `None` when the leader should.
    pub preferred: Option<String>,
    /// The locker id of the candidate the leader is handing over to, if its marker is there.
    pub handover: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// The singleton `serial` was elected; `token` is its key's create revision. `takeover` is
    /// the time from this host's watch reporting the deletion that made it first to its election,
    /// when it took over from another host. It also stands for the `Leader` event naming this
    /// locker with that token, which is not sent separately.
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
    /// What an observer saw of its election after a change: who leads and what its candidates
    /// prefer (`None`: nobody leads). Its `since_ms` is not followed (the record is not watched).
    Observed {
        serial: u32,
        term: Option<Term>,
    },
    /// The answer to a query of who leads, and since when (`None`: nobody leads).
    Term {
        serial: u32,
        term: Option<Term>,
    },
    /// The answer to a query of every election under the prefix that has a leader, by name.
    Terms {
        serial: u32,
        terms: Vec<(String, Term)>,
    },
    /// A resign finished: the key is gone (or the lease that held it is).
    Removed {
        serial: u32,
    },
    /// A pause took effect: the election left the queue (its key is gone).
    Paused {
        serial: u32,
    },
    /// The answer to a handover (or its check): who leads after it, or would.
    HandedOver {
        serial: u32,
        leader: LeaderInfo,
    },
    /// Another candidate should lead the election `serial` (see `preference`): the locker id of
    /// the one to hand over to.
    Prefer {
        serial: u32,
        to: String,
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
        let deliver = crate::util::read(&self.deliver);
        if let Some(deliver) = deliver.as_ref() {
            deliver(event);
        }
    }

    /// Delivers nothing from now on, and drops what delivered.
    pub fn detach(&self) {
        let taken = crate::util::write(&self.deliver).take();
        drop(taken);
    }

    /// A debug line; the text is only built when debugging is on.
    pub fn log(&self, line: impl FnOnce() -> String) {
        if self.debug {
            self.emit(Event::Log { line: line() });
        }
    }
}
