//! What a locker's elections and observers work with: its identity, the connection to etcd, the
//! lease, the shared watch, the batcher, where events go, and the signal that the locker closes.
//! The locker builds it and owns the registry of elections; the elections only use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::batch::Batcher;
use crate::cluster::Cluster;
use crate::events::EventSink;
use crate::handover;
use crate::session::Session;
use crate::survey::Surveyor;
use crate::term;
use crate::watcher::Watcher;

pub struct Context {
    /// This locker's id: the value of its candidate keys.
    pub id: String,
    pub prefix: String,
    pub cluster: Arc<Cluster>,
    pub batcher: Arc<Batcher>,
    /// Answers elections' checks, many at once after a mass change (see `survey`).
    pub surveyor: Surveyor,
    pub session: Arc<Session>,
    pub watcher: Arc<Watcher>,
    pub events: EventSink,
    /// Writes leaders' term records (see `term`).
    pub publisher: term::Publisher,
    /// The first step of a close: set, elections and observers step down and end without
    /// touching etcd (the lease revoke that follows removes every key at once).
    pub closing: watch::Sender<bool>,
    /// Priorities and balance: who should lead (see `preference`).
    pub preferences: Arc<crate::preference::Preferences>,
    /// Handovers asked for and not yet taken up, by the serial of the election asked.
    pub handovers: Mutex<HashMap<u32, handover::Request>>,
    /// What the last handover check of an election chose, by its serial, and for which target.
    pub checked: Mutex<HashMap<u32, (Option<String>, handover::Choice)>>,
}

impl Context {
    /// The first step of a close: every election and observer steps down and ends.
    pub fn begin_closing(&self) {
        self.closing.send_replace(true);
        // After `closing`: an election woken by the lease state finds `closing` already set.
        self.session.begin_closing();
    }

    pub fn take_handover(&self, serial: u32) -> Option<handover::Request> {
        crate::util::lock(&self.handovers).remove(&serial)
    }

    pub fn handover_asked(&self, serial: u32) -> bool {
        crate::util::lock(&self.handovers).contains_key(&serial)
    }
}
