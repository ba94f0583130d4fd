//! Observing an election without taking part: who leads, and every change, including "nobody".
//!
//! The leader is always the key with the lowest create revision, re-read after every change of
//! the name's keys (so a batch of events can never leave a stale answer), and the shared watch
//! resumes from the last seen revision after errors and compactions.

use std::sync::Arc;

use etcd_client::Client;
use tokio::sync::watch;

use crate::cluster::Failure;
use crate::context::Context;
use crate::events::Event;
use crate::keys::{self, LeaderInfo};
use crate::retry::Backoff;
use crate::retry::Throttle;
use crate::util::changed;

pub struct Observer {
    shared: Arc<Context>,
    serial: u32,
    name: String,
    /// `<prefix>/<name>/`
    prefix: String,
}

impl Observer {
    pub fn new(shared: Arc<Context>, serial: u32, name: String) -> Observer {
        let prefix = keys::candidates(&shared.prefix, &name);
        Observer {
            shared,
            serial,
            name,
            prefix,
        }
    }

    /// Reports the leader until `cancel` is set or the locker closes.
    pub async fn run(self, mut cancel: watch::Receiver<bool>) {
        let shared = self.shared.clone();
        let mut closing = shared.closing.subscribe();
        let mut changes = shared.watcher.changes(&self.name);
        let mut reported: Option<Option<LeaderInfo>> = None;
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
                r = Box::pin(self.leader()) => r,
                _ = changed(&mut cancel) => break,
                _ = changed(&mut closing) => break,
            };
            match read {
                Ok(leader) => {
                    backoff.reset();
                    errors.reset();
                    if reported.as_ref() != Some(&leader) {
                        reported = Some(leader.clone());
                        shared.events.emit(Event::Leader {
                            serial: self.serial,
                            leader,
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

    async fn leader(&self) -> Result<Option<LeaderInfo>, Failure> {
        let prefix = self.prefix.clone();
        let response = self
            .shared
            .cluster
            .request(|mut c: Client| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(keys::first_created())).await }
            })
            .await?;
        Ok(response.kvs().first().map(LeaderInfo::of))
    }
}
