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
use crate::context::Context;
use crate::election::{Control, Election};
use crate::events::{Event, EventSink};
use crate::guardian;
use crate::handover;
use crate::keys;
use crate::observer::Observer;
use crate::preference::{self, Preferences};
use crate::session::Session;
use crate::signal::{Listener, Signal};
use crate::survey::Surveyor;
use crate::term;
use crate::util::lock;
use crate::watcher::Watcher;

pub struct Options {
    pub endpoints: Vec<String>,
    pub security: Security,
    pub ttl: i64,
    pub prefix: String,
    pub id: String,
    /// Start a guardian that revokes the lease when this process dies.
    pub guardian: Option<guardian::Settings>,
    /// Take part in balancing names over the lockers that balance (see `preference`).
    pub balance: bool,
    /// How long a leader leads before it hands over to a preferred candidate.
    pub min_term: Duration,
}

struct Entry {
    control: Arc<Signal<Control>>,
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

/// Where a locker is in its life: open, closing (its elections step down, then the lease is
/// revoked), closed (every task ended, connections dropped).
const OPEN: u8 = 0;
const CLOSING: u8 = 1;
const CLOSED: u8 = 2;

pub struct Locker {
    context: Arc<Context>,
    registry: Arc<Mutex<Registry>>,
    observers: Arc<Mutex<HashMap<u32, watch::Sender<bool>>>>,
    runtime: Handle,
    /// The second step of a close, after the lease revoke: the background tasks (keepalive,
    /// deadline guard, watch, batching, term records) end.
    stopped: watch::Sender<bool>,
    /// OPEN, CLOSING or CLOSED.
    phase: AtomicU8,
    guardian: Option<Arc<guardian::Handle>>,
    /// The process the guardian waits for before it revokes (`locked run`'s command).
    guarded_process: watch::Sender<Option<u32>>,
    next_serial: Mutex<u32>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

impl Locker {
    pub fn new(options: Options, events: EventSink, runtime: Handle) -> Result<Locker, Failure> {
        let cluster = Arc::new(Cluster::new(options.endpoints, options.security)?);
        let session = Arc::new(Session::new(cluster.clone(), options.ttl, events.clone()));
        let preferences = Arc::new(Preferences::new(
            options.prefix.clone(),
            options.balance,
            options.min_term,
        ));
        let watcher = Arc::new(Watcher::new(
            keys::all(&options.prefix),
            preferences.clone(),
        ));
        let registry = Arc::new(Mutex::new(Registry::default()));
        let stopped = watch::channel(false).0;
        let closing = watch::channel(false).0;
        let (publisher, publications) = term::Publisher::new();
        let (batcher, batching) = Batcher::start(cluster.clone(), &runtime, stopped.subscribe());
        let batcher = Arc::new(batcher);
        let names = {
            let watcher = watcher.clone();
            move || watcher.len()
        };
        let (surveyor, surveying) = Surveyor::start(
            options.prefix.clone(),
            cluster.clone(),
            batcher.clone(),
            names,
            events.clone(),
            &runtime,
            stopped.subscribe(),
        );
        let writer = term::Writer {
            prefix: options.prefix.clone(),
            batcher: batcher.clone(),
            session: session.clone(),
            events: events.clone(),
        };
        let guarded_process = watch::channel(None).0;
        let mut background = vec![
            runtime.spawn(session.clone().run(stopped.subscribe())),
            runtime.spawn(session.clone().guard_deadline(stopped.subscribe())),
            runtime.spawn(watcher.clone().run(
                cluster.clone(),
                events.clone(),
                stopped.subscribe(),
            )),
            batching,
            surveying,
            // Ends as the locker starts closing: the lease's revoke deletes the records.
            runtime.spawn(term::run(writer, closing.subscribe(), publications)),
            runtime.spawn(preference::run(
                preference::Task {
                    preferences: preferences.clone(),
                    cluster: cluster.clone(),
                    batcher: batcher.clone(),
                    events: events.clone(),
                    leader_of: leader_of(&registry),
                },
                {
                    let watcher = watcher.clone();
                    async move { watcher.synced().await }
                },
                closing.subscribe(),
            )),
        ];
        let guardian = options.guardian.map(|settings| {
            let handle = Arc::new(guardian::Handle::default());
            background.push(runtime.spawn(guardian::run(
                settings,
                handle.clone(),
                session.subscribe(),
                guarded_process.subscribe(),
                events.clone(),
                stopped.subscribe(),
            )));
            handle
        });
        let context = Arc::new(Context {
            id: options.id,
            prefix: options.prefix,
            batcher,
            surveyor,
            cluster,
            session,
            watcher,
            events,
            publisher,
            closing,
            preferences,
            handovers: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashMap::new()),
        });
        Ok(Locker {
            context,
            registry,
            observers: Arc::new(Mutex::new(HashMap::new())),
            runtime,
            stopped,
            phase: AtomicU8::new(OPEN),
            guardian,
            guarded_process,
            next_serial: Mutex::new(0),
            background: Mutex::new(background),
        })
    }

    /// Starts campaigning for `name`; returns the serial that tags its events. A name whose
    /// previous registration is still draining or resigning campaigns once that resign is
    /// confirmed.
    pub fn register(&self, name: &str, paused: bool, priority: i64) -> Result<u32, RegisterError> {
        if self.phase.load(Ordering::SeqCst) != OPEN {
            return Err(RegisterError::Closed);
        }
        let mut registry = lock(&self.registry);
        let previous = match registry
            .latest
            .get(name)
            .and_then(|serial| registry.entries.get(serial))
        {
            Some(entry) if matches!(entry.control.get(), Control::Running | Control::Paused) => {
                return Err(RegisterError::AlreadyRegistered);
            }
            Some(entry) => Some(entry.control.subscribe()),
            None => None,
        };
        let serial = self.next_serial();
        let control = Arc::new(Signal::new(if paused {
            Control::Paused
        } else {
            Control::Running
        }));
        let leading = Arc::new(AtomicI64::new(0));
        registry.entries.insert(
            serial,
            Entry {
                control: control.clone(),
                leading: leading.clone(),
            },
        );
        registry.latest.insert(name.to_string(), serial);
        // Under the registry's lock, so that no registration of the name comes between.
        self.context.preferences.set_priority(name, priority);
        drop(registry);
        // Boxed: tokio puts a task's future in a block aligned to 128 bytes, which mimalloc can
        // only serve from the size class of the future plus 127 bytes; a future of 736 bytes took
        // 1024. Boxed, the future takes a plain block (768 bytes) and the task one of 128.
        self.runtime.spawn(Box::pin(election_task(
            self.context.clone(),
            self.registry.clone(),
            serial,
            name.to_string(),
            leading,
            control,
            previous,
        )));
        Ok(serial)
    }

    /// Whether the election `serial` leads right now: it has not stepped down, and the lease of
    /// its term is still this locker's lease with the deadline ahead. Read from the clock, so a
    /// process resuming from a pause gets the truth before any event is delivered.
    pub fn is_leading(&self, serial: u32) -> bool {
        let lease = lock(&self.registry)
            .entries
            .get(&serial)
            .map_or(0, |e| e.leading.load(Ordering::SeqCst));
        lease != 0 && self.context.session.is_valid(lease)
    }

    /// Frees the name of registration `serial` for a new registration while its work winds
    /// down; it keeps its place (and key) until `remove`.
    pub fn retire(&self, serial: u32) {
        let registry = lock(&self.registry);
        if let Some(entry) = registry.entries.get(&serial) {
            entry.control.modify(|c| match *c {
                Control::Running => {
                    *c = Control::Draining;
                    true
                }
                // Out of the queue, no work to drain: it resigns at once.
                Control::Paused => {
                    *c = Control::Resign;
                    true
                }
                _ => false,
            });
        }
    }

    /// Checks, with one read, that the election `serial` of `name` leads and who it would hand
    /// over to; the answer comes as `Event::HandedOver` (or `Event::Error`) with the returned
    /// serial. Nothing changes in etcd.
    pub fn handover_check(
        &self,
        name: &str,
        serial: u32,
        to: Option<String>,
    ) -> Result<u32, RegisterError> {
        if self.phase.load(Ordering::SeqCst) != OPEN {
            return Err(RegisterError::Closed);
        }
        let lease = lock(&self.registry)
            .entries
            .get(&serial)
            .map_or(0, |e| e.leading.load(Ordering::SeqCst));
        let answer = self.next_serial();
        let context = self.context.clone();
        let name = name.to_string();
        self.runtime.spawn(async move {
            let mut closing = context.closing.subscribe();
            let candidates = keys::candidates(&context.prefix, &name);
            let read = tokio::select! {
                r = context.batcher.txn(&name, handover::read_candidates(&candidates)) => r,
                _ = closing.wait_for(|c| *c) => return,
            };
            let own = keys::candidate(&candidates, lease);
            let chosen = match read {
                Ok(_) if lease == 0 => Err(handover::Refusal::NotLeader),
                Ok(response) => handover::choose(
                    &handover::candidates_of(&response),
                    own.as_bytes(),
                    to.as_deref(),
                )
                .map(|choice| {
                    let leader = choice.target.leader();
                    lock(&context.checked).insert(serial, (to, choice));
                    leader
                }),
                Err(failure) => Err(handover::Refusal::Failed(failure.code(), failure.message())),
            };
            context.events.emit(match chosen {
                Ok(leader) => Event::HandedOver {
                    serial: answer,
                    leader,
                },
                Err(refusal) => Event::Error {
                    serial: Some(answer),
                    code: refusal.code(),
                    message: refusal.message(),
                },
            });
        });
        Ok(answer)
    }

    /// Asks the election `serial` to hand the lead to `to` (or the next in line); the answer
    /// comes as `Event::HandedOver` (or `Event::Error`) with the returned serial.
    pub fn handover(&self, serial: u32, to: Option<String>) -> Result<u32, RegisterError> {
        if self.phase.load(Ordering::SeqCst) != OPEN {
            return Err(RegisterError::Closed);
        }
        let answer = self.next_serial();
        let registry = lock(&self.registry);
        let Some(entry) = registry.entries.get(&serial) else {
            return Err(RegisterError::Closed);
        };
        let checked = lock(&self.context.checked)
            .remove(&serial)
            .filter(|(checked_to, _)| *checked_to == to)
            .map(|(_, choice)| choice);
        lock(&self.context.handovers).insert(
            serial,
            handover::Request {
                answer,
                to,
                checked,
                passing_on: false,
            },
        );
        // Wakes the election without changing its control.
        entry.control.modify(|_| true);
        Ok(answer)
    }

    /// Takes the election `serial` out of the queue until `resume` (see `Control::Paused`);
    /// `Event::Paused` follows once its key is gone.
    pub fn pause(&self, serial: u32) -> bool {
        self.switch(serial, Control::Running, Control::Paused)
    }

    pub fn resume(&self, serial: u32) -> bool {
        self.switch(serial, Control::Paused, Control::Running)
    }

    fn switch(&self, serial: u32, from: Control, to: Control) -> bool {
        lock(&self.registry)
            .entries
            .get(&serial)
            .is_some_and(|entry| {
                entry.control.modify(|c| {
                    let switch = *c == from;
                    if switch {
                        *c = to;
                    }
                    switch
                })
            })
    }

    /// Asks the election `serial` to resign; `Event::Removed` follows once etcd confirmed.
    pub fn remove(&self, serial: u32) -> bool {
        let registry = lock(&self.registry);
        match registry.entries.get(&serial) {
            Some(entry) if !entry.control.get().resigning() => {
                entry.control.set(Control::Resign);
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
        lock(&self.observers).insert(serial, cancel_tx);
        let observers = self.observers.clone();
        let observer = Observer::new(self.context.clone(), serial, name.to_string());
        self.runtime.spawn(async move {
            observer.run(cancel_rx).await;
            lock(&observers).remove(&serial);
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
        let context = self.context.clone();
        let name = name.to_string();
        self.runtime.spawn(async move {
            let mut closing = context.closing.subscribe();
            let read = tokio::select! {
                r = term::read(&context.batcher, &context.prefix, &name) => r,
                // The binding answers every query still open when the locker has closed.
                _ = closing.wait_for(|c| *c) => return,
            };
            context.events.emit(match read {
                Ok(term) => Event::Term { serial, term },
                Err(failure) => Event::error(Some(serial), &failure),
            });
        });
        Ok(serial)
    }

    /// Reads every election under the prefix that has a leader; the answer comes as
    /// `Event::Terms` (or `Event::Error`) with the returned serial, unless the locker closes first.
    pub fn terms(&self) -> Result<u32, RegisterError> {
        if self.phase.load(Ordering::SeqCst) != OPEN {
            return Err(RegisterError::Closed);
        }
        let serial = self.next_serial();
        let context = self.context.clone();
        self.runtime.spawn(async move {
            let mut closing = context.closing.subscribe();
            let read = tokio::select! {
                r = Box::pin(term::list(&context.cluster, &context.prefix)) => r,
                // The binding answers every query still open when the locker has closed.
                _ = closing.wait_for(|c| *c) => return,
            };
            context.events.emit(match read {
                Ok(terms) => Event::Terms { serial, terms },
                Err(failure) => Event::error(Some(serial), &failure),
            });
        });
        Ok(serial)
    }

    pub fn unobserve(&self, serial: u32) {
        if let Some(cancel) = lock(&self.observers).remove(&serial) {
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
        self.context.session.valid_for()
    }

    pub fn report_renewals(&self, on: bool) {
        self.context
            .session
            .report_renewals
            .store(on, Ordering::Relaxed);
    }

    pub fn health(&self) -> crate::session::Health {
        self.context.session.health()
    }

    fn begin_close(&self) -> bool {
        if self
            .phase
            .compare_exchange(OPEN, CLOSING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        self.context.begin_closing();
        true
    }

    fn pending_elections(&self) -> Vec<Listener<Control>> {
        lock(&self.registry)
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
                done.wait_for(|c| c == Control::Done).await;
            }
            let result = locker.context.session.revoke().await;
            locker.finish().await;
            locker.context.events.emit(Event::Closed {
                error: result.err(),
            });
            locker.context.events.detach();
        });
    }

    /// Ends every task and drops the connections.
    async fn finish(&self) {
        self.phase.store(CLOSED, Ordering::SeqCst);
        self.stopped.send_replace(true);
        let background: Vec<_> = lock(&self.background).drain(..).collect();
        for task in background {
            let _ = task.await;
        }
        self.context.cluster.shutdown();
    }

    /// For process exit and worker termination, when nothing asynchronous will run again:
    /// revokes the lease, waiting at most `cap`, and ends every task. Also when an
    /// asynchronous close is under way: its revoke may not get to run before the process ends.
    pub fn close_now(&self, cap: Duration) {
        if self.phase.swap(CLOSED, Ordering::SeqCst) == CLOSED {
            return;
        }
        self.context.begin_closing();
        let (tx, rx) = std::sync::mpsc::channel();
        let session = self.context.session.clone();
        self.runtime.spawn(async move {
            let revoked = tokio::time::timeout(cap, session.revoke()).await;
            let _ = tx.send(matches!(revoked, Ok(Ok(()))));
        });
        let revoked = matches!(rx.recv_timeout(cap + Duration::from_millis(50)), Ok(true));
        // A guardian stays on duty unless the lease is surely gone: this process ending is its
        // cue to revoke it.
        if let (true, Some(guardian)) = (revoked, &self.guardian) {
            guardian.dismiss();
        }
        self.stopped.send_replace(true);
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
        self.context.cluster.shutdown();
        self.context.events.detach();
    }

    /// The guardian's process id, while one runs.
    pub fn guardian_pid(&self) -> Option<u32> {
        self.guardian.as_ref().and_then(|g| g.pid())
    }

    /// Makes the guardian, on this process's death, wait for `pid` to be gone before it revokes.
    pub fn guard_process(&self, pid: Option<u32>) {
        self.guarded_process.send_replace(pid);
    }

    pub fn id(&self) -> &str {
        &self.context.id
    }
}

/// The task of one registration, for its whole life: waits for the name's previous registration
/// to be done, runs the election, then leaves the registry.
/// Which registration leads `name` on this locker, and in which lease: for the preference task.
fn leader_of(registry: &Arc<Mutex<Registry>>) -> preference::LeaderOf {
    let registry = Arc::downgrade(registry);
    Box::new(move |name| {
        let registry = registry.upgrade()?;
        let registry = lock(&registry);
        let serial = *registry.latest.get(name)?;
        let lease = registry
            .entries
            .get(&serial)?
            .leading
            .load(Ordering::SeqCst);
        (lease != 0).then_some((serial, lease))
    })
}

fn election_task(
    context: Arc<Context>,
    registry: Arc<Mutex<Registry>>,
    serial: u32,
    name: String,
    leading: Arc<AtomicI64>,
    control: Arc<Signal<Control>>,
    previous: Option<Listener<Control>>,
) -> impl Future<Output = ()> {
    let resign = control.subscribe();
    Election::new(context.clone(), serial, name, leading).run(resign, previous, move |name| {
        control.set(Control::Done);
        let mut registry = lock(&registry);
        registry.entries.remove(&serial);
        if registry.latest.get(&name) == Some(&serial) {
            registry.latest.remove(&name);
        }
        drop(registry);
        // A handover asked for after the election had ended: nobody else will answer it.
        if let Some(request) = context.take_handover(serial) {
            let refusal = handover::Refusal::Removed;
            context.events.emit(Event::Error {
                serial: Some(request.answer),
                code: refusal.code(),
                message: refusal.message(),
            });
        }
    })
}

impl Drop for Locker {
    fn drop(&mut self) {
        // A locker dropped without close: end its tasks; its lease expires on its own.
        self.context.begin_closing();
        self.stopped.send_replace(true);
    }
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
                guardian: None,
                balance: false,
                min_term: Duration::ZERO,
            },
            events,
            rt.handle().clone(),
        )
        .unwrap();
        let fut = election_task(
            locker.context.clone(),
            locker.registry.clone(),
            1,
            "n".into(),
            Arc::new(AtomicI64::new(0)),
            Arc::new(Signal::new(Control::Running)),
            None,
        );
        // Every registered name keeps one such task for its whole life, almost always idle, so
        // its largest state sets the cost of a name (request futures are boxed while in flight).
        // It is spawned boxed (see `register`), so it takes a block of the next size class of
        // mimalloc: 768 bytes. Unboxed, a future of 992 bytes took 1280 bytes, one of 736 took 1024.
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 768, "an idle election's task takes {size} bytes");
    }
}
