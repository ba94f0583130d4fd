//! The locker: one session (lease) and one watch for any number of singletons, a registry of
//! their elections, and an orderly close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::batch::Batcher;
use crate::cluster::{Cluster, Failure, Security};
use crate::election::Election;
use crate::events::{Event, EventSink};
use crate::observer::Observer;
use crate::session::Session;
use crate::term;
use crate::watcher::Watcher;

pub struct Options {
    pub endpoints: Vec<String>,
    pub security: Security,
    pub ttl: i64,
    pub prefix: String,
    pub id: String,
}

/// What every election of a locker shares.
pub struct Shared {
    pub id: String,
    pub prefix: String,
    pub cluster: Arc<Cluster>,
    pub batcher: Batcher,
    pub session: Arc<Session>,
    pub watcher: Arc<Watcher>,
    pub events: EventSink,
    /// Writes leaders' term records (see `term`).
    pub publisher: term::Publisher,
    /// Set when the locker closes: elections step down and end without touching etcd.
    pub closing: watch::Sender<bool>,
    registry: Mutex<Registry>,
    observers: Mutex<HashMap<u32, watch::Sender<bool>>>,
}

/// Where a registration is in its life; one channel per registration, shared by the registry
/// (which asks for the resign and waits for the end) and the election task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Running,
    /// The user removed it and its work is winding down: it still campaigns and keeps its key
    /// (so no other host starts yet), but the name is free to be registered again.
    Draining,
    Resign,
    Done,
}

impl Control {
    pub fn resigning(self) -> bool {
        matches!(self, Control::Resign | Control::Done)
    }
}

struct Entry {
    control: Arc<watch::Sender<Control>>,
    /// The lease of the term the election leads in, 0 while it does not lead.
    leading: Arc<AtomicI64>,
}

/// Registrations by serial; `latest` names the newest registration of each name (older ones of
/// the same name are still resigning).
#[derive(Default)]
struct Registry {
    entries: HashMap<u32, Entry>,
    latest: HashMap<String, u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    AlreadyRegistered,
    Closed,
}

pub struct Locker {
    shared: Arc<Shared>,
    runtime: Handle,
    /// Ends the background tasks (keepalive, deadline guard, watch, batching).
    stop: watch::Sender<bool>,
    phase: AtomicU8,
    next_serial: Mutex<u32>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

impl Locker {
    pub fn new(options: Options, events: EventSink, runtime: Handle) -> Result<Locker, Failure> {
        let cluster = Arc::new(Cluster::new(options.endpoints, options.security)?);
        let session = Arc::new(Session::new(cluster.clone(), options.ttl, events.clone()));
        let watcher = Arc::new(Watcher::new(format!("{}/", options.prefix)));
        let stop = watch::channel(false).0;
        let (publisher, publications) = term::Publisher::new();
        let (batcher, batching) = Batcher::start(cluster.clone(), &runtime, stop.subscribe());
        let mut background = vec![
            runtime.spawn(session.clone().run(stop.subscribe())),
            runtime.spawn(session.clone().guard_deadline(stop.subscribe())),
            runtime.spawn(
                watcher
                    .clone()
                    .run(cluster.clone(), events.clone(), stop.subscribe()),
            ),
            batching,
        ];
        let shared = Arc::new(Shared {
            id: options.id,
            prefix: options.prefix,
            batcher,
            cluster,
            session,
            watcher,
            events,
            publisher,
            closing: watch::channel(false).0,
            registry: Mutex::new(Registry::default()),
            observers: Mutex::new(HashMap::new()),
        });
        // Ends when the locker closes (`closing`), which also drops the records still queued.
        background.push(runtime.spawn(term::run(shared.clone(), publications)));
        Ok(Locker {
            shared,
            runtime,
            stop,
            phase: AtomicU8::new(OPEN),
            next_serial: Mutex::new(0),
            background: Mutex::new(background),
        })
    }

    /// Starts campaigning for `name`; returns the serial that tags its events. A name whose
    /// previous registration is still draining or resigning campaigns once that resign is
    /// confirmed.
    pub fn register(&self, name: &str) -> Result<u32, RegisterError> {
        if self.phase.load(Ordering::SeqCst) != OPEN {
            return Err(RegisterError::Closed);
        }
        let mut registry = lock(&self.shared.registry);
        let previous = match registry
            .latest
            .get(name)
            .and_then(|serial| registry.entries.get(serial))
        {
            Some(entry) if *entry.control.borrow() == Control::Running => {
                return Err(RegisterError::AlreadyRegistered);
            }
            Some(entry) => Some(entry.control.subscribe()),
            None => None,
        };
        let serial = self.next_serial();
        let control = Arc::new(watch::channel(Control::Running).0);
        let leading = Arc::new(AtomicI64::new(0));
        registry.entries.insert(
            serial,
            Entry {
                control: control.clone(),
                leading: leading.clone(),
            },
        );
        registry.latest.insert(name.to_string(), serial);
        drop(registry);
        let shared = self.shared.clone();
        let name = name.to_string();
        self.runtime.spawn(async move {
            if let Some(mut previous) = previous {
                let _ = previous.wait_for(|c| *c == Control::Done).await;
            }
            Election::new(shared.clone(), serial, name.clone(), leading)
                .run(control.subscribe())
                .await;
            control.send_replace(Control::Done);
            let mut registry = lock(&shared.registry);
            registry.entries.remove(&serial);
            if registry.latest.get(&name) == Some(&serial) {
                registry.latest.remove(&name);
            }
        });
        Ok(serial)
    }

    /// Whether the election `serial` leads right now: it has not stepped down, and the lease of
    /// its term is still this locker's lease with the deadline ahead. Read from the clock, so a
    /// process resuming from a pause gets the truth before any event is delivered.
    pub fn is_leading(&self, serial: u32) -> bool {
        let lease = lock(&self.shared.registry)
            .entries
            .get(&serial)
            .map_or(0, |e| e.leading.load(Ordering::SeqCst));
        lease != 0 && self.shared.session.is_valid(lease)
    }

    /// Frees the name of registration `serial` for a new registration while its work winds
    /// down; it keeps its place (and key) until `remove`.
    pub fn retire(&self, serial: u32) {
        let registry = lock(&self.shared.registry);
        if let Some(entry) = registry.entries.get(&serial) {
            entry.control.send_if_modified(|c| {
                let running = *c == Control::Running;
                if running {
                    *c = Control::Draining;
                }
                running
            });
        }
    }

    /// Asks the election `serial` to resign; `Event::Removed` follows once etcd confirmed.
    pub fn remove(&self, serial: u32) -> bool {
        let registry = lock(&self.shared.registry);
        match registry.entries.get(&serial) {
            Some(entry) if !entry.control.borrow().resigning() => {
                entry.control.send_replace(Control::Resign);
                true
            }
            _ => false,
        }
    }

    /// Starts reporting the leader of `name` (as `Event::Leader` with the returned serial).
    pub fn observe(&self, name: &str) -> Result<u32, RegisterError> {
        if self.phase.load(Ordering::SeqCst) != OPEN {
            return Err(RegisterError::Closed);
        }
        let serial = self.next_serial();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        lock(&self.shared.observers).insert(serial, cancel_tx);
        let shared = self.shared.clone();
        let observer = Observer::new(shared.clone(), serial, name.to_string());
        self.runtime.spawn(async move {
            observer.run(cancel_rx).await;
            lock(&shared.observers).remove(&serial);
        });
        Ok(serial)
    }

    /// Reads who leads `name` and since when; the answer comes as `Event::Term` (or
    /// `Event::Error`) with the returned serial, unless the locker closes first.
    pub fn term(&self, name: &str) -> Result<u32, RegisterError> {
        if self.phase.load(Ordering::SeqCst) != OPEN {
            return Err(RegisterError::Closed);
        }
        let serial = self.next_serial();
        let shared = self.shared.clone();
        let name = name.to_string();
        self.runtime.spawn(async move {
            let mut closing = shared.closing.subscribe();
            let read = tokio::select! {
                r = term::read(&shared, &name) => r,
                // The binding answers every query still open when the locker has closed.
                _ = closing.wait_for(|c| *c) => return,
            };
            shared.events.emit(match read {
                Ok(term) => Event::Term { serial, term },
                Err(failure) => Event::error(Some(serial), &failure),
            });
        });
        Ok(serial)
    }

    pub fn unobserve(&self, serial: u32) {
        if let Some(cancel) = lock(&self.shared.observers).remove(&serial) {
            cancel.send_replace(true);
        }
    }

    fn next_serial(&self) -> u32 {
        let mut next = lock(&self.next_serial);
        *next = next.wrapping_add(1);
        *next
    }

    /// How long leaders of this locker may still act (negative: the deadline has passed).
    pub fn valid_for(&self) -> Option<Duration> {
        self.shared.session.valid_for()
    }

    pub fn report_renewals(&self, on: bool) {
        self.shared
            .session
            .report_renewals
            .store(on, Ordering::Relaxed);
    }

    pub fn health(&self) -> crate::session::Health {
        self.shared.session.health()
    }

    fn begin_close(&self) -> bool {
        if self
            .phase
            .compare_exchange(OPEN, CLOSING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        self.shared.closing.send_replace(true);
        true
    }

    fn pending_elections(&self) -> Vec<watch::Receiver<Control>> {
        lock(&self.shared.registry)
            .entries
            .values()
            .map(|e| e.control.subscribe())
            .collect()
    }

    /// Steps every leader down, revokes the lease (deleting every key at once), stops all
    /// tasks, lets go of the connections, then emits `Event::Closed` (the last event).
    pub fn close(self: &Arc<Self>) {
        if !self.begin_close() {
            return;
        }
        let locker = self.clone();
        let pending = self.pending_elections();
        self.runtime.spawn(async move {
            for mut done in pending {
                let _ = done.wait_for(|c| *c == Control::Done).await;
            }
            let result = locker.shared.session.revoke().await;
            locker.finish().await;
            locker.shared.events.emit(Event::Closed {
                error: result.err(),
            });
            locker.shared.events.detach();
        });
    }

    /// Ends every task and drops the connections.
    async fn finish(&self) {
        self.phase.store(CLOSED, Ordering::SeqCst);
        self.stop.send_replace(true);
        let background: Vec<_> = lock(&self.background).drain(..).collect();
        for task in background {
            let _ = task.await;
        }
        self.shared.cluster.shutdown();
    }

    /// For process exit and worker termination, when nothing asynchronous will run again:
    /// revokes the lease, waiting at most `cap`, and ends every task. Also when an
    /// asynchronous close is under way: its revoke may not get to run before the process ends.
    pub fn close_now(&self, cap: Duration) {
        if self.phase.swap(CLOSED, Ordering::SeqCst) == CLOSED {
            return;
        }
        self.shared.closing.send_replace(true);
        let (tx, rx) = std::sync::mpsc::channel();
        let session = self.shared.session.clone();
        self.runtime.spawn(async move {
            let _ = tokio::time::timeout(cap, session.revoke()).await;
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(cap + Duration::from_millis(50));
        self.stop.send_replace(true);
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
        self.shared.cluster.shutdown();
        self.shared.events.detach();
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        // A locker dropped without close: end its tasks; its lease expires on its own.
        self.shared.closing.send_replace(true);
        self.stop.send_replace(true);
    }
}

const OPEN: u8 = 0;
const CLOSING: u8 = 1;
const CLOSED: u8 = 2;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_election_is_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let events = crate::events::Events::new(|_| {}, false);
        let locker = Locker::new(
            Options {
                endpoints: vec!["127.0.0.1:1".into()],
                security: Security::default(),
                ttl: 2,
                prefix: "p".into(),
                id: "i".into(),
            },
            events,
            rt.handle().clone(),
        )
        .unwrap();
        let (_tx, rx) = watch::channel(Control::Running);
        let leading = Arc::new(AtomicI64::new(0));
        let fut = Election::new(locker.shared.clone(), 1, "n".into(), leading).run(rx);
        // Every registered name keeps one such task for its whole life: keep it small (request
        // futures are boxed while in flight).
        let size = std::mem::size_of_val(&fut);
        assert!(size < 1536, "an idle election takes {size} bytes");
    }
}
