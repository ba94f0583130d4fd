//! One singleton's election: campaign, wait for every predecessor to go, lead, resign.
//!
//! The recipe of etcd's Go `concurrency.Election`: the key `<prefix>/<name>/<lease hex>` holds the
//! locker id, bound to the locker's lease and created only if absent (so a retried campaign
//! keeps its place). Candidates are ordered by create revision and the lowest leads. Every check
//! reads our own key and the two lowest keys in one transaction, so that:
//! - a candidate leads only when no key with a lower create revision is left (not merely when the
//!   key right ahead of it went away);
//! - a candidate leads only while its own key still exists and is bound to its current lease (a
//!   candidate whose lease expired while it waited never leads on the stale key).
//!
//! The one exception to "read before leading" reads nothing because a read could tell nothing
//! new: a candidate that read itself next in line leads on the deletion of the key ahead when the
//! watch saw no other change of the name since that read (`survey::Ahead`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::watch;

use crate::cluster::Failure;
use crate::context::Context;
use crate::events::{Event, StopReason};
use crate::handover;
use crate::keys::{self, LeaderInfo};
use crate::retry::Backoff;
use crate::retry::Throttle;
use crate::session::LeaseState;
use crate::signal::Listener;
use crate::survey::{Ahead, Standing, standing_after};
use crate::term;
use crate::util::changed;
use crate::watcher::LastChange;

/// Where a registration is in its life; one channel per registration, shared by the registry
/// (which asks for the resign and waits for the end) and the election task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Running,
    /// The user removed it and its work is winding down: it still campaigns and keeps its key
    /// (so no other host starts yet), but the name is free to be registered again.
    Draining,
    Resign,
    /// Out of the queue on the user's request (standby): the key goes, the registration stays
    /// until resumed (back to `Running`) or removed.
    Paused,
    Done,
}

impl Control {
    pub fn resigning(self) -> bool {
        matches!(self, Control::Resign | Control::Done)
    }

    /// Whether the election is to leave the queue, for good or until resumed.
    pub fn leaves_queue(self) -> bool {
        self.resigning() || self == Control::Paused
    }
}

/// What an election keeps between failed rounds. Made at the first failure of a streak and
/// dropped at the next success: most elections never fail, and each would otherwise carry it.
struct Retrying {
    backoff: Backoff,
    /// Reports the failures of a streak, not every one.
    errors: Throttle,
}

impl Retrying {
    fn new() -> Retrying {
        Retrying {
            backoff: Backoff::rounds(),
            errors: Throttle::new(),
        }
    }
}

/// Our key in etcd, as far as we know.
#[derive(Debug, Clone, Copy)]
struct Held {
    lease: i64,
    revision: i64,
    /// The one key ahead of ours, when our last read found us next in line (the revision of
    /// that read is kept by the watcher, see `Watcher::read_next_in_line`).
    ahead: Option<Ahead>,
}

pub struct Election {
    shared: Arc<Context>,
    serial: u32,
    name: String,
    leading: bool,
    /// Shared with the binding for synchronous checks: the lease of our term, 0 when not leading.
    leading_lease: Arc<AtomicI64>,
    /// The leader last reported to the user (`Some(None)`: reported "no leader").
    reported_leader: Option<Option<LeaderInfo>>,
}

impl Election {
    pub fn new(
        shared: Arc<Context>,
        serial: u32,
        name: String,
        leading_lease: Arc<AtomicI64>,
    ) -> Election {
        Election {
            shared,
            serial,
            name,
            leading: false,
            leading_lease,
            reported_leader: None,
        }
    }

    /// `<prefix>/<name>/`. Built when needed rather than kept: a locker holds thousands of
    /// elections, almost all idle.
    fn candidates(&self) -> String {
        keys::candidates(&self.shared.prefix, &self.name)
    }

    fn key(&self, lease: i64) -> String {
        keys::candidate(&self.candidates(), lease)
    }

    fn emit(&self, event: Event) {
        self.shared.events.emit(event);
    }

    fn step_down(&mut self, reason: StopReason) {
        if self.leading {
            self.leading = false;
            self.leading_lease.store(0, Ordering::SeqCst);
            // Who leads now is not known until the next read; it is no longer us.
            self.reported_leader = None;
            self.shared
                .events
                .log(|| format!("{}: step down ({})", self.name, reason.as_str()));
            self.emit(Event::Stop {
                serial: self.serial,
                reason,
            });
        }
    }

    fn report_leader(&mut self, leader: Option<LeaderInfo>) {
        if self.reported_leader.as_ref() != Some(&leader) {
            self.shared.events.log(|| {
                format!(
                    "{}: leader is {}",
                    self.name,
                    leader.as_ref().map_or("nobody", |l| l.id.as_str())
                )
            });
            self.reported_leader = Some(leader.clone());
            self.emit(Event::Leader {
                serial: self.serial,
                leader,
            });
        }
    }

    /// Campaigns until `resign` is set (then resigns) or the locker closes, then hands the name
    /// to `finished`. Starts once `previous` (the name's previous registration on this locker,
    /// if it is still resigning) is done.
    // Not an `async fn`: that would keep a second copy of its arguments in every election's
    // task (its state moves them into locals), and a locker holds thousands of tasks. For the
    // same reason `finished` is called rather than the name returned: whoever awaited this future
    // would keep what it needs afterwards, a copy of the name included, for the whole election.
    #[allow(clippy::manual_async_fn)]
    pub fn run(
        mut self,
        mut resign: Listener<Control>,
        previous: Option<Listener<Control>>,
        finished: impl FnOnce(String) + Send + 'static,
    ) -> impl Future<Output = ()> {
        async move {
            let shared = self.shared.clone();
            let mut closing = shared.closing.subscribe();
            let mut lease_state = shared.session.subscribe();
            let mut wake = shared.watcher.deletions(&self.name);
            let mut held: Option<Held> = None;
            let mut retrying: Option<Box<Retrying>> = None;
            let mut recovered = shared.cluster.recoveries();
            // For the takeover time reported with `start`.
            let mut waited_behind_other = false;
            let mut woken_at: Option<std::time::Instant> = None;

            // Campaign only once the watch is in place, so that no deletion can go unnoticed.
            // This wait and the other rare ones below are boxed: an election's task is as large
            // as its largest wait, and a locker holds thousands of elections that only ever sit
            // in the idle one.
            Box::pin(async {
                if let Some(mut previous) = previous {
                    previous.wait_for(|c| c == Control::Done).await;
                }
                tokio::select! {
                    _ = shared.watcher.synced() => {}
                    _ = resign.wait_for(Control::resigning) => {}
                    _ = closing.wait_for(|c| *c) => {}
                }
            })
            .await;

            loop {
                if *closing.borrow() {
                    // Closing revokes the lease, which deletes every key at once.
                    self.step_down(StopReason::Closed);
                    break;
                }
                if resign.get().resigning() {
                    self.step_down(StopReason::Removed);
                    if Box::pin(self.resign(held, &mut closing, &mut lease_state)).await {
                        self.emit(Event::Removed {
                            serial: self.serial,
                        });
                    }
                    break;
                }
                if resign.get() == Control::Paused {
                    self.step_down(StopReason::Paused);
                    // Out of the queue: our key goes (whoever is next leads), the registration
                    // stays. Closing, if it took over, removes the key with the lease.
                    Box::pin(self.resign(held, &mut closing, &mut lease_state)).await;
                    held = None;
                    // Out of the queue it no longer follows who leads: not known until resumed.
                    self.report_leader(None);
                    self.emit(Event::Paused {
                        serial: self.serial,
                    });
                    Box::pin(async {
                        tokio::select! {
                            _ = resign.wait_for(|c| c != Control::Paused) => {}
                            _ = closing.wait_for(|c| *c) => {}
                        }
                    })
                    .await;
                    continue;
                }
                let state = *lease_state.borrow_and_update();
                let Some(lease) = state.lease else {
                    self.step_down(StopReason::LeaseLost);
                    held = None;
                    Box::pin(async {
                        tokio::select! {
                            _ = changed(&mut lease_state) => {}
                            _ = resign.changed() => {}
                            _ = changed(&mut closing) => {}
                        }
                    })
                    .await;
                    continue;
                };
                if held.is_some_and(|h| h.lease != lease) {
                    self.step_down(StopReason::LeaseLost);
                    held = None;
                }
                if !state.valid {
                    self.step_down(StopReason::Deadline);
                }
                if let Some(request) = shared.take_handover(self.serial) {
                    // Only the revision is kept across the wait: an election's task is as large
                    // as the state it carries across its largest wait.
                    match held.filter(|h| h.lease == lease).map(|h| h.revision) {
                        Some(revision) if self.leading => {
                            let handed = Box::pin(self.hand_over(
                                request,
                                lease,
                                revision,
                                &mut wake,
                                &mut resign,
                                &mut closing,
                                &mut lease_state,
                            ))
                            .await;
                            if handed {
                                // Campaign again, behind the new leader.
                                held = None;
                            }
                            continue;
                        }
                        _ => self.refuse(request.answer, &handover::Refusal::NotLeader),
                    }
                }

                // Woken by a handover's marker that asks us, behind the leader we last saw, to step
                // behind its target: do so at once rather than read first. The delete is guarded by
                // our key's create revision; at worst a stale marker costs us our place.
                if let (Some(revision), false, Some(Some(leader))) = (
                    held.filter(|h| h.lease == lease).map(|h| h.revision),
                    self.leading,
                    &self.reported_leader,
                ) {
                    let asked = shared
                        .watcher
                        .handover(&self.name)
                        .is_some_and(|m| m.asks_to_yield(leader.token, revision));
                    if asked && Box::pin(self.step_aside(lease, revision)).await {
                        held = None;
                        continue;
                    }
                }

                // Next in line, and the one key ahead was deleted with nothing else of the name
                // changed since the read that told us so: we lead, as a read at that deletion
                // would tell (see `Ahead`). After a gap in the watch, or any other change, we
                // read.
                let next_in_line = {
                    let woke = wake.get_and_update();
                    held.and_then(|h| Some((h.ahead?, h.revision))).is_some_and(
                        |(ahead, created)| woke.only_deletion_ahead(ahead.lease.get(), created),
                    )
                };
                recovered.borrow_and_update();
                let campaigning = held.is_none();
                // A read can be dropped whenever the picture changes: the round starts over. A
                // campaign cannot: once queued it may still reach etcd, and a resign sent before its
                // answer could arrive first and leave the key behind (a candidate nobody runs). So a
                // campaign is always seen through; only closing, whose lease revoke removes every key
                // of ours, cuts it short.
                // Boxed, with the waits beside it: request futures are large, and thousands of idle
                // elections should not each carry room for one.
                let look = Box::pin(async {
                    let look = async {
                        match held {
                            Some(h) if next_in_line => {
                                shared.events.log(|| {
                                    format!(
                                        "{}: the key ahead was deleted, nothing else changed: \
                                         leads without a read",
                                        self.name
                                    )
                                });
                                Ok(Standing::Leader { token: h.revision })
                            }
                            Some(_) => self.check(lease).await,
                            None => self.campaign(lease).await,
                        }
                    };
                    tokio::select! {
                        r = look => Some(r),
                        _ = changed(&mut lease_state), if !campaigning => None,
                        _ = resign.changed(), if !campaigning => None,
                        _ = changed(&mut closing) => None,
                    }
                });
                // `None`: the picture changed, the round starts over.
                let Some(result) = look.await else {
                    continue;
                };
                if resign.get().leaves_queue() {
                    // Resign (or pause) next, knowing what the campaign left in etcd.
                    held = match result {
                        Ok(Standing::Leader { token }) => Some(Held {
                            lease,
                            revision: token,
                            ahead: None,
                        }),
                        // Leaving the queue: no lead on the watch alone.
                        Ok(Standing::Waiting { revision, .. }) => Some(Held {
                            lease,
                            revision,
                            ahead: None,
                        }),
                        Ok(Standing::Gone) => None,
                        Err(_) => held,
                    };
                    continue;
                }

                // Gone right after our campaign: our key exists but is bound to another lease (or
                // none), so the campaign could not create it. Someone wrote it from outside; it is a
                // failure like any other, retried with backoff, not at once as fast as etcd answers.
                let result = match result {
                    Ok(Standing::Gone) if campaigning => Err(Failure::Rejected(format!(
                        "the key {} exists but is not bound to this locker's lease {lease:x} \
                     (was it written from outside?); campaigning again with backoff",
                        self.key(lease)
                    ))),
                    other => other,
                };
                match result {
                    Ok(Standing::Leader { token }) => {
                        retrying = None;
                        held = Some(Held {
                            lease,
                            revision: token,
                            ahead: None,
                        });
                        if !self.leading && shared.session.is_valid(lease) {
                            // Elected, not started: where someone else should lead (priority,
                            // balance), the lead goes there before any work starts here.
                            let passed = Box::pin(self.pass_on(
                                lease,
                                token,
                                &mut wake,
                                &mut resign,
                                &mut closing,
                                &mut lease_state,
                            ))
                            .await;
                            match passed {
                                Some(true) => {
                                    held = None;
                                    continue;
                                }
                                // Failed: the next look leads here (the target is declined).
                                Some(false) => continue,
                                None => {}
                            }
                            self.leading = true;
                            self.leading_lease.store(lease, Ordering::SeqCst);
                            shared
                                .events
                                .log(|| format!("{}: elected with token {token}", self.name));
                            // No `leader` event: JavaScript takes the `start` for one (this
                            // locker leads, with this token). One crossing into JavaScript per
                            // election instead of two: at 100 000 names, a fifth of a takeover.
                            self.reported_leader = Some(Some(LeaderInfo {
                                id: shared.id.clone(),
                                token,
                            }));
                            // Waiting behind another host, then woken by a deletion: a takeover.
                            let takeover = waited_behind_other
                                .then_some(woken_at)
                                .flatten()
                                .map(|at| at.elapsed());
                            waited_behind_other = false;
                            let since_ms = term::now_ms();
                            shared.preferences.elected(&self.name);
                            self.emit(Event::Start {
                                serial: self.serial,
                                token,
                                takeover,
                            });
                            // After `start`, and beside the election: the record is for readers and
                            // never delays a takeover.
                            shared.publisher.began(&self.name, token, lease, since_ms);
                        }
                    }
                    Ok(Standing::Waiting {
                        revision,
                        leader,
                        ahead,
                    }) => {
                        retrying = None;
                        waited_behind_other = leader.id != shared.id;
                        // A lower key can only appear ahead of a leader whose own key was replaced.
                        self.step_down(StopReason::KeyDeleted);
                        let asked_to_yield = shared
                            .watcher
                            .handover(&self.name)
                            .is_some_and(|m| m.asks_to_yield(leader.token, revision));
                        self.report_leader(Some(leader));
                        held = Some(Held {
                            lease,
                            revision,
                            ahead,
                        });
                        if asked_to_yield {
                            // Should the delete fail, the next look finds the marker still there
                            // and tries again.
                            if Box::pin(self.step_aside(lease, revision)).await {
                                held = None;
                            }
                            continue;
                        }
                    }
                    Ok(Standing::Gone) => {
                        self.step_down(StopReason::KeyDeleted);
                        held = None;
                        // Campaign again at once with the same lease; if the lease is gone too, the
                        // put says so and the session grants a new one.
                        continue;
                    }
                    Err(Failure::LeaseNotFound) => {
                        self.step_down(StopReason::LeaseLost);
                        held = None;
                        shared.session.report_lost(lease);
                        Box::pin(async {
                            tokio::select! {
                                _ = lease_state.wait_for(|s| s.lease != Some(lease)) => {}
                                _ = resign.changed() => {}
                                _ = changed(&mut closing) => {}
                            }
                        })
                        .await;
                        continue;
                    }
                    Err(failure) => {
                        let retrying = retrying.get_or_insert_with(|| Box::new(Retrying::new()));
                        if retrying.errors.should_report() {
                            self.emit(Event::error(Some(self.serial), &failure));
                        }
                        Box::pin(async {
                            tokio::select! {
                                _ = retrying.backoff.wait(&mut recovered) => {}
                                _ = changed(&mut lease_state) => {}
                                _ = resign.changed() => {}
                                _ = changed(&mut closing) => {}
                            }
                        })
                        .await;
                        continue;
                    }
                }

                // Nothing to do until a key of this name is deleted or the lease changes.
                loop {
                    tokio::select! {
                        _ = wake.changed() => {
                            woken_at = Some(std::time::Instant::now());
                            break;
                        }
                        // Closing is announced here too (`LeaseState::closing`), so the wait
                        // that every idle election sits in has three branches, not four.
                        _ = changed(&mut lease_state) => {
                            let now = *lease_state.borrow();
                            if now.closing || self.needs_look(lease, now) {
                                break;
                            }
                        }
                        // Draining changes nothing in etcd: only a resign is worth a round.
                        _ = resign.changed() => {
                            if resign.get_and_update().leaves_queue()
                                || shared.handover_asked(self.serial)
                            {
                                break;
                            }
                        }
                    }
                }
            }
            if let Some(request) = shared.take_handover(self.serial) {
                let refusal = if *closing.borrow() {
                    handover::Refusal::Closed
                } else {
                    handover::Refusal::Removed
                };
                self.refuse(request.answer, &refusal);
            }
            drop(wake);
            shared.watcher.release(&self.name);
            finished(self.name);
        }
    }

    /// Just elected with the key of `token`: passes the lead on to the candidate preferences pick,
    /// if someone else should lead. `None`: nobody else should; else whether it was handed on.
    #[allow(clippy::too_many_arguments)]
    async fn pass_on(
        &mut self,
        lease: i64,
        token: i64,
        wake: &mut Listener<LastChange>,
        resign: &mut Listener<Control>,
        closing: &mut watch::Receiver<bool>,
        lease_state: &mut watch::Receiver<LeaseState>,
    ) -> Option<bool> {
        let shared = self.shared.clone();
        let request = shared
            .preferences
            .pass_on(&shared.batcher, &self.name, lease)
            .await?;
        shared.events.log(|| {
            format!(
                "{}: elected; passing the lead on to {} before starting",
                self.name,
                request.to.as_deref().unwrap_or("?")
            )
        });
        Some(
            self.hand_over(request, lease, token, wake, resign, closing, lease_state)
                .await,
        )
    }

    /// Asked by a handover's marker to step behind its target: deletes our key (guarded by its
    /// create revision), so that the campaign that follows queues behind the target. True once
    /// etcd answered.
    async fn step_aside(&self, lease: i64, revision: i64) -> bool {
        self.shared
            .events
            .log(|| format!("{}: stepping behind a handover's target", self.name));
        let txn = handover::step_aside(&self.key(lease), revision);
        self.shared.batcher.txn(&self.name, txn).await.is_ok()
    }

    fn refuse(&self, answer: u32, refusal: &handover::Refusal) {
        self.emit(Event::Error {
            serial: Some(answer),
            code: refusal.code(),
            message: refusal.message(),
        });
    }

    /// Hands the lead over as `handover` describes, while we lead with the key of `token` under
    /// `lease`. Returns true once our key is gone and the target is first in line. JavaScript has
    /// stopped this host's work before asking; if the handover fails while we still lead, `start`
    /// is reported again.
    #[allow(clippy::too_many_arguments)]
    async fn hand_over(
        &mut self,
        request: handover::Request,
        lease: i64,
        token: i64,
        wake: &mut Listener<LastChange>,
        resign: &mut Listener<Control>,
        closing: &mut watch::Receiver<bool>,
        lease_state: &mut watch::Receiver<LeaseState>,
    ) -> bool {
        use handover::Refusal;
        let mut request = request;
        let shared = self.shared.clone();
        let own = self.key(lease);
        let candidates = self.candidates();
        let marker_key = keys::handover(&shared.prefix, &self.name);
        let deadline = tokio::time::Instant::now() + handover::WAIT;
        // The target revision our marker names, once written.
        let mut marked: Option<i64> = None;
        // The target of the last pass, for a preference not to ask again for a blocked one.
        let mut target: Option<i64> = None;
        // A commit was sent and no answer came: etcd may have applied it, and the target lead.
        let mut unanswered_commit = false;
        // What the next pass acts on without reading: the check's choice at first, then the
        // choice a wait began with (a wake-up is worth a guarded attempt before a read).
        let mut known = request.checked.take();
        // Each pass reads the queue or acts on what it knows; etcd changing under us makes another.
        let mut passes = 0;
        let outcome: Result<LeaderInfo, Refusal> = loop {
            passes += 1;
            if passes > 100 {
                break Err(Refusal::Interrupted("the candidates kept changing"));
            }
            wake.get_and_update();
            // One request of the handover, cut short by whatever ends it.
            macro_rules! ask {
                ($txn:expr) => {
                    tokio::select! {
                        r = shared.batcher.txn(&self.name, $txn) => match r {
                            Ok(response) => response,
                            Err(failure) => break Err(Refusal::Failed(failure.code(), failure.message())),
                        },
                        _ = resign.wait_for(Control::resigning) => break Err(Refusal::Removed),
                        _ = closing.wait_for(|c| *c) => break Err(Refusal::Closed),
                        _ = lease_state.wait_for(|s| s.lease != Some(lease) || !s.valid) => {
                            break Err(Refusal::Interrupted("the lease was lost or its deadline passed"))
                        }
                    }
                };
            }
            let (choice, fresh) = match known.take() {
                Some(choice) => (choice, false),
                None => {
                    let read = ask!(handover::read_candidates(&candidates));
                    match handover::choose(
                        &handover::candidates_of(&read),
                        own.as_bytes(),
                        request.to.as_deref(),
                    ) {
                        Ok(choice) => (choice, true),
                        Err(refusal) => break Err(refusal),
                    }
                }
            };
            target = Some(choice.target.revision);
            let asked = marked == Some(choice.target.revision);
            if choice.between.is_empty()
                || (asked
                    && !fresh
                    && shared.watcher.worth_committing(
                        own.as_bytes(),
                        token,
                        &choice.target,
                        &choice.between,
                    ))
            {
                // Nobody between, or the watch saw those asked step aside (or cannot tell): the
                // guard tells.
                let commit = handover::commit(&own, token, &choice, &marker_key, lease);
                unanswered_commit = true;
                let committed = ask!(commit).succeeded();
                unanswered_commit = false;
                if committed {
                    shared.publisher.ended(&self.name, token);
                    break Ok(choice.target.leader());
                }
                // Someone between is still there, or our key or the target's changed: read.
                continue;
            }
            if !asked {
                let marker = handover::Marker {
                    leader: token,
                    target: choice.target.revision,
                };
                if !ask!(handover::mark(&own, token, &marker_key, lease, marker)).succeeded() {
                    continue;
                }
                marked = Some(choice.target.revision);
                shared.events.log(|| {
                    format!(
                        "{}: handing over to {}; waiting for {} candidate(s) ahead of it",
                        self.name,
                        choice.target.id,
                        choice.between.len()
                    )
                });
            }
            // Wait for the candidates ahead of the target to step behind it.
            let asked_to_move = choice.between.len();
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep_until(deadline) => break Err(Refusal::Blocked(asked_to_move)),
                _ = resign.wait_for(Control::resigning) => break Err(Refusal::Removed),
                _ = closing.wait_for(|c| *c) => break Err(Refusal::Closed),
                _ = lease_state.wait_for(|s| s.lease != Some(lease) || !s.valid) => {
                    break Err(Refusal::Interrupted("the lease was lost or its deadline passed"))
                }
            }
            known = Some(choice);
        };
        match outcome {
            Ok(leader) => {
                shared.events.log(|| {
                    format!(
                        "{}: handed over to {} (token {})",
                        self.name, leader.id, leader.token
                    )
                });
                self.step_down(StopReason::Handover);
                if !request.passing_on {
                    self.emit(Event::HandedOver {
                        serial: request.answer,
                        leader,
                    });
                }
                true
            }
            Err(refusal) => {
                let blocked = matches!(refusal, Refusal::Blocked(_));
                if let (true, Some(target)) = (blocked || request.passing_on, target) {
                    shared.preferences.declined(&self.name, target);
                }
                if marked.is_some() && !*closing.borrow() {
                    // Best effort: a marker left behind dies with the lease, and names a token
                    // that no other leader has.
                    let unmark = handover::unmark(&marker_key, lease);
                    let _ = tokio::select! {
                        r = shared.batcher.txn(&self.name, unmark) => r.map(|_| ()),
                        _ = closing.wait_for(|c| *c) => Ok(()),
                    };
                }
                let resumes = self.leading
                    && refusal != Refusal::NotLeader
                    && !resign.get().resigning()
                    && !*closing.borrow()
                    && shared.session.is_valid(lease);
                if resumes && unanswered_commit {
                    // Whether our key is still first only a read can tell: no `start` before it.
                    // Stepped down, the next look elects us again (a new `start`) if it is.
                    shared.events.log(|| {
                        format!("{}: handover's commit unanswered; looking again", self.name)
                    });
                    self.step_down(StopReason::Handover);
                } else if resumes {
                    shared
                        .events
                        .log(|| format!("{}: handover failed; leading on", self.name));
                    self.emit(Event::Start {
                        serial: self.serial,
                        token,
                        takeover: None,
                    });
                }
                if !request.passing_on {
                    self.refuse(request.answer, &refusal);
                }
                false
            }
        }
    }

    /// Whether a lease transition changes anything for us: another lease, a leader whose deadline
    /// passed, or a candidate that may now lead again.
    fn needs_look(&self, lease: i64, now: LeaseState) -> bool {
        now.lease != Some(lease) || now.valid != self.leading
    }

    /// Creates our key if absent and reads where we stand, in one transaction.
    async fn campaign(&self, lease: i64) -> Result<Standing, Failure> {
        let key = self.key(lease);
        self.shared
            .events
            .log(|| format!("{}: campaign with key {key}", self.name));
        let value = self.shared.id.clone();
        let lowest = self.lowest_key();
        let mut create = vec![
            TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::get(key.clone(), None),
            lowest.clone(),
        ];
        // Written with the key, so that whoever sees the candidate sees what it prefers. (None is
        // left under this lease by an earlier candidate of the name: every resign deletes it.)
        if let Some(preference) = self.shared.preferences.own(&self.name) {
            create.push(TxnOp::put(
                keys::prefer(&self.shared.prefix, &self.name, lease),
                preference.encode(),
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then(create)
            .or_else([TxnOp::get(key.clone(), None), lowest]);
        let (response, read_at) = self.shared.batcher.txn_at(&self.name, txn).await?;
        let standing = standing_after(&key, lease, &response);
        self.note_read(&standing, read_at);
        Ok(standing)
    }

    /// Reads where we stand without writing.
    async fn check(&self, lease: i64) -> Result<Standing, Failure> {
        let (standing, read_at) = self
            .shared
            .surveyor
            .check(&self.name, self.key(lease), lease)
            .await?;
        self.note_read(&standing, read_at);
        Ok(standing)
    }

    /// Tells the watcher when a read found us next in line, so that changes up to it do not keep
    /// us from leading on the deletion of the key ahead. Noted even if the round that made the
    /// read is cut short: the note names our key's create revision, and a read of that key that
    /// found one key ahead stays true of it.
    fn note_read(&self, standing: &Standing, read_at: i64) {
        if let Standing::Waiting {
            revision,
            ahead: Some(_),
            ..
        } = standing
        {
            self.shared
                .watcher
                .read_next_in_line(&self.name, read_at, *revision);
        }
    }

    fn lowest_key(&self) -> TxnOp {
        keys::first_two_created_op(&self.candidates())
    }

    /// Deletes our key, guarded so that only our own key of this term can go. Keeps trying
    /// until etcd confirms (a resign that gives up would leave the key blocking everyone for a
    /// whole TTL). Returns false if closing took over (the lease revoke removes the key).
    async fn resign(
        &self,
        held: Option<Held>,
        closing: &mut watch::Receiver<bool>,
        lease_state: &mut watch::Receiver<LeaseState>,
    ) -> bool {
        let Some(lease) = self.shared.session.lease() else {
            // No lease, no key.
            return true;
        };
        let key = self.key(lease);
        // The term that ends with this resign, if we led: its line in our term record goes.
        let term = held.filter(|h| h.lease == lease).map(|h| h.revision);
        let guard = match held {
            Some(h) if h.lease == lease => {
                Compare::create_revision(key.clone(), CompareOp::Equal, h.revision)
            }
            // A campaign may have been cut short after etcd applied it: whatever key of ours
            // exists under this lease is ours to delete.
            _ => Compare::lease(key.clone(), CompareOp::Equal, lease),
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([
                TxnOp::delete(key, None),
                handover::withdraw(&keys::handover(&self.shared.prefix, &self.name), lease),
                // Ours (the key holds our lease), whatever this registration's priority: one of an
                // earlier registration of the name under this lease may still be there.
                TxnOp::delete(keys::prefer(&self.shared.prefix, &self.name, lease), None),
            ])
            // Our key already gone (stepped aside, deleted from outside): the preference goes all
            // the same, or it would rank whatever candidate of ours comes next under this lease.
            .or_else([TxnOp::delete(
                keys::prefer(&self.shared.prefix, &self.name, lease),
                None,
            )]);
        let mut backoff = Backoff::rounds();
        let mut recovered = self.shared.cluster.recoveries();
        let mut errors = Throttle::new();
        loop {
            recovered.borrow_and_update();
            let attempt = self.shared.batcher.txn(&self.name, txn.clone());
            let result = tokio::select! {
                r = attempt => r,
                _ = closing.wait_for(|c| *c) => return false,
                // The lease went away, and the key with it.
                _ = lease_state.wait_for(|s| s.lease != Some(lease)) => return true,
            };
            match result {
                Ok(_) | Err(Failure::LeaseNotFound) => {
                    self.shared
                        .events
                        .log(|| format!("{}: resigned", self.name));
                    if let Some(token) = term {
                        self.shared.publisher.ended(&self.name, token);
                    }
                    return true;
                }
                Err(failure) => {
                    if errors.should_report() {
                        self.emit(Event::error(Some(self.serial), &failure));
                    }
                    tokio::select! {
                        _ = backoff.wait(&mut recovered) => {}
                        _ = closing.wait_for(|c| *c) => return false,
                    }
                }
            }
        }
    }
}
