//! Observing an election without taking part: who leads, and every change, including "nobody".
//!
//! The leader is always the key with the lowest create revision, re-read (with what the
//! candidates prefer and a handover under way, see `term::read`) after every change of the
//! name's keys, its candidates' preferences or its handover marker (so a batch of events can
//! never leave a stale answer), and the shared watch resumes from the last seen revision after
//! errors and compactions.

use std::sync::Arc;

use tokio::sync::watch;

use crate::context::Context;
use crate::events::{Event, Term};
use crate::retry::Backoff;
use crate::retry::Throttle;
use crate::term;
use crate::util::changed;

pub struct Observer {
    shared: Arc<Context>,
    serial: u32,
    name: String,
}

impl Observer {
    pub fn new(shared: Arc<Context>, serial: u32, name: String) -> Observer {
        Observer {
            shared,
            serial,
            name,
        }
    }

    /// Reports the leader until `cancel` is set or the locker closes.
    pub async fn run(self, mut cancel: watch::Receiver<bool>) {
        let shared = self.shared.clone();
        let mut closing = shared.closing.subscribe();
        let mut changes = shared.watcher.changes(&self.name);
        let mut reported: Option<Option<Term>> = None;
        let mut backoff = Backoff::rounds();
        let mut recovered = shared.cluster.recoveries();
        let mut errors = Throttle::new();
        tokio::select! {
            _ = shared.watcher.synced() => {}
            _ = cancel.wait_for(|c| *c) => {}
            _ = closing.wait_for(|c| *c) => {}
        }
        while !*cancel.borrow() && !*closing.borrow() {
            changes.get_and_update();
            recovered.borrow_and_update();
            // Boxed: a request future is some 14 KB, and an idle observer should not carry it.
            let read = tokio::select! {
                r = Box::pin(term::read(&shared.batcher, &shared.prefix, &self.name)) => r,
                _ = changed(&mut cancel) => break,
                _ = changed(&mut closing) => break,
            };
            match read {
                Ok(term) => {
                    backoff.reset();
                    errors.reset();
                    // The election time is not followed (its record is not watched): a change of
                    // it alone is no change.
                    let term = term.map(|t| Term {
                        since_ms: None,
                        ..t
                    });
                    if reported.as_ref() != Some(&term) {
                        reported = Some(term.clone());
                        shared.events.emit(Event::Observed {
                            serial: self.serial,
                            term,
                        });
                    }
                    tokio::select! {
                        _ = changes.changed() => {}
                        _ = changed(&mut cancel) => {}
                        _ = changed(&mut closing) => {}
                    }
                }
                Err(failure) => {
                    if errors.should_report() {
                        shared
                            .events
                            .emit(Event::error(Some(self.serial), &failure));
                    }
                    tokio::select! {
                        _ = backoff.wait(&mut recovered) => {}
                        _ = changed(&mut cancel) => {}
                        _ = changed(&mut closing) => {}
                    }
                }
            }
        }
        drop(changes);
        shared.watcher.release(&self.name);
    }
}
