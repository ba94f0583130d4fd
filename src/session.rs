//! The session: one etcd lease per locker, kept alive, and the leadership deadline it implies.
//!
//! The deadline is the send time of the last answered keepalive plus the TTL etcd granted, minus
//! a margin. etcd cannot expire the lease before it received that keepalive plus the TTL, so a
//! leader that stops by the deadline stops before anyone else can be elected, even when etcd is
//! silent (frozen, partitioned). The lease itself is kept after a local step-down: etcd renews
//! leases after a restart or a raft leader change, and giving the lease up early would leave the
//! old key blocking the successor. Only etcd saying the lease is gone makes us grant a new one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::Stamp;
use crate::cluster::{Cluster, Failure, REQUEST_TIMEOUT};
use crate::events::{Event, EventSink};
use crate::retry::Backoff;
use crate::retry::Throttle;
use crate::util::{changed, lock};

/// What elections need to know about the lease. Published only on transitions (a new lease,
/// the deadline passed, renewed again), never on every keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    pub lease: Option<i64>,
    /// The leadership deadline has not passed.
    pub valid: bool,
    /// The locker is closing (see `Context::begin_closing`). Carried here as well so that an idle
    /// election, of which a locker holds thousands, waits on one channel for both.
    pub closing: bool,
}

/// Health of the lease, for monitoring.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health {
    pub lease: Option<i64>,
    /// Round trip of the last answered keepalive.
    pub round_trip: Option<Duration>,
    pub renewals: u64,
    /// Time since the last answered keepalive was sent.
    pub since_renewal: Option<Duration>,
}

pub struct Session {
    /// Report every renewal as an event (for users who asked for them).
    pub report_renewals: std::sync::atomic::AtomicBool,
    cluster: Arc<Cluster>,
    health: Mutex<(Option<Duration>, u64, Option<Instant>)>,
    ttl: i64,
    state: watch::Sender<LeaseState>,
    /// On the deadline clock, which keeps counting while the machine is suspended.
    deadline: Mutex<Option<Stamp>>,
    /// Lease ids that elections learned from etcd to be gone.
    lost: watch::Sender<i64>,
    /// Set when the locker revokes its lease to close: from then on a lease gone is no news.
    revoking: watch::Sender<bool>,
    events: EventSink,
}

enum KeepAliveEnd {
    LeaseGone,
    Stopped,
}

/// The safety margin subtracted from the lease TTL: room for the `stop` event to reach the
/// application's code before etcd could elect someone else.
pub fn margin(ttl: i64) -> Duration {
    Duration::from_millis((ttl as u64 * 150).clamp(300, 1500))
}

impl Session {
    pub fn new(cluster: Arc<Cluster>, ttl: i64, events: EventSink) -> Session {
        Session {
            report_renewals: std::sync::atomic::AtomicBool::new(false),
            cluster,
            ttl,
            state: watch::channel(LeaseState {
                lease: None,
                valid: false,
                closing: false,
            })
            .0,
            deadline: Mutex::new(None),
            health: Mutex::new((None, 0, None)),
            lost: watch::channel(0).0,
            revoking: watch::channel(false).0,
            events,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    pub fn lease(&self) -> Option<i64> {
        self.state.borrow().lease
    }

    /// Whether a leader holding `lease` may act now: checked right before `start`.
    pub fn is_valid(&self, lease: i64) -> bool {
        let deadline = self.lock_deadline();
        let state = *self.state.borrow();
        state.lease == Some(lease) && deadline.is_some_and(|d| Stamp::now() < d)
    }

    /// Time left until the leadership deadline; `None` if it has passed or there is no lease.
    /// Read straight from the clock, so a process resuming from a pause learns the truth before
    /// any timer had a chance to fire.
    pub fn valid_for(&self) -> Option<Duration> {
        let deadline = *self.lock_deadline();
        let now = Stamp::now();
        deadline.filter(|d| *d > now).map(|d| d.since(now))
    }

    /// An election learned from etcd that `lease` is gone (a put failed with "lease not found").
    pub fn report_lost(&self, lease: i64) {
        self.lost.send_replace(lease);
    }

    fn lock_deadline(&self) -> std::sync::MutexGuard<'_, Option<Stamp>> {
        lock(&self.deadline)
    }

    pub fn health(&self) -> Health {
        let (round_trip, renewals, sent) = *lock(&self.health);
        Health {
            lease: self.lease(),
            round_trip,
            renewals,
            since_renewal: sent.map(|s| s.elapsed()),
        }
    }

    fn renewed(&self, lease: i64, sent: Instant, sent_at: Stamp, ttl: i64) {
        {
            let mut health = lock(&self.health);
            *health = (Some(sent.elapsed()), health.1 + 1, Some(sent));
        }
        if self
            .report_renewals
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.events.emit(Event::Renewed);
        }
        let mut deadline = self.lock_deadline();
        let until = sent_at + Duration::from_secs(ttl.max(0) as u64) - margin(self.ttl);
        *deadline = Some(until);
        let valid = Stamp::now() < until;
        let was_valid = self.state.borrow().valid;
        if valid && !was_valid && self.state.borrow().lease == Some(lease) {
            self.events
                .log(|| format!("lease {lease:x} renewed again: leadership valid"));
        }
        self.state.send_if_modified(|s| {
            let next = LeaseState {
                lease: Some(lease),
                valid,
                closing: s.closing,
            };
            let changed = *s != next;
            *s = next;
            changed
        });
    }

    fn clear(&self) {
        let mut deadline = self.lock_deadline();
        *deadline = None;
        self.state.send_if_modified(|s| {
            let changed = s.lease.is_some() || s.valid;
            *s = LeaseState {
                lease: None,
                valid: false,
                closing: s.closing,
            };
            changed
        });
    }

    /// Grants a lease, keeps it alive, grants a new one when etcd says it is gone; until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::grants();
        let mut recovered = self.cluster.recoveries();
        let mut errors = Throttle::new();
        while !*stop.borrow() {
            recovered.borrow_and_update();
            let sent = Instant::now();
            let sent_at = Stamp::now();
            let ttl = self.ttl;
            let granted = tokio::select! {
                r = self.cluster.request(|mut c: Client| async move { c.lease_grant(ttl, None).await }) => r,
                _ = changed(&mut stop) => return,
            };
            match granted {
                Ok(grant) => {
                    backoff.reset();
                    errors.reset();
                    self.events
                        .log(|| format!("lease {:x} granted, ttl {} s", grant.id(), grant.ttl()));
                    self.renewed(grant.id(), sent, sent_at, grant.ttl());
                    match self.keep_alive(grant.id(), grant.ttl(), &mut stop).await {
                        KeepAliveEnd::Stopped => return,
                        // A keepalive crossed the revoke of a close: the lease is gone because
                        // we revoked it.
                        KeepAliveEnd::LeaseGone if *self.revoking.borrow() => return,
                        KeepAliveEnd::LeaseGone => {
                            self.events.log(|| {
                                format!("lease {:x} is gone; granting a new one", grant.id())
                            });
                            self.clear();
                            self.events
                                .emit(Event::error(None, &Failure::LeaseNotFound));
                        }
                    }
                }
                Err(failure) => {
                    if errors.should_report() {
                        self.events.emit(Event::error(None, &failure));
                    }
                    tokio::select! {
                        _ = backoff.wait(&mut recovered) => {}
                        _ = changed(&mut stop) => return,
                    }
                }
            }
        }
    }

    async fn keep_alive(
        &self,
        lease: i64,
        granted_ttl: i64,
        stop: &mut watch::Receiver<bool>,
    ) -> KeepAliveEnd {
        let period = Duration::from_millis(self.ttl as u64 * 1000 / 3);
        let answer_within = period.clamp(Duration::from_millis(500), REQUEST_TIMEOUT);
        let retry_after = (period / 2).min(Duration::from_millis(500));
        let mut lost = self.lost.subscribe();
        let mut revoking = self.revoking.subscribe();
        let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream, u64)> = None;
        let mut errors = Throttle::new();
        let mut failures = 0usize;
        let mut next = Instant::now() + period;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = changed(&mut lost) => {
                    if *lost.borrow_and_update() == lease {
                        return KeepAliveEnd::LeaseGone;
                    }
                    continue;
                }
                _ = changed(stop) => return KeepAliveEnd::Stopped,
                // No keepalive after the revoke went out: it could only find the lease gone.
                _ = revoking.wait_for(|r| *r) => return KeepAliveEnd::Stopped,
            }
            let member = match self.cluster.member().await {
                Ok(member) => member,
                Err(failure) => {
                    failures += 1;
                    if failures >= self.cluster.members() && errors.should_report() {
                        self.events.emit(Event::error(None, &failure));
                    }
                    next = Instant::now() + retry_after;
                    continue;
                }
            };
            if stream.as_ref().is_some_and(|s| s.2 != member.generation) {
                stream = None;
            }
            let sent = Instant::now();
            let sent_at = Stamp::now();
            let exchange = async {
                match stream.as_mut() {
                    Some((keeper, answers, _)) => {
                        keeper.keep_alive().await?;
                        answers
                            .message()
                            .await?
                            .ok_or_else(|| {
                                etcd_client::Error::LeaseKeepAliveError(
                                    "keepalive stream closed".into(),
                                )
                            })
                            .map(Some)
                    }
                    None => {
                        // Opening the stream sends the first keepalive and consumes its answer
                        // (failing if it says the lease is gone), which renews the lease to
                        // the TTL granted.
                        let mut client = member.client.clone();
                        let (keeper, answers) = client.lease_keep_alive(lease).await?;
                        stream = Some((keeper, answers, member.generation));
                        Ok(None)
                    }
                }
            };
            let outcome = match tokio::time::timeout(answer_within, exchange).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => Ok(answer.ttl()),
                // An answer with TTL 0 is etcd's way of saying the lease is gone.
                Ok(Ok(Some(_))) => Err(Failure::LeaseNotFound),
                Ok(Ok(None)) if stream.is_some() => Ok(granted_ttl),
                Ok(Ok(None)) => Err(Failure::Unavailable("keepalive stream closed".into())),
                Ok(Err(err)) => Err(Failure::from_etcd(err)),
                Err(_) => Err(Failure::Unavailable(format!(
                    "keepalive not answered within {} ms",
                    answer_within.as_millis()
                ))),
            };
            match outcome {
                Ok(ttl) => {
                    self.cluster.answered();
                    errors.reset();
                    failures = 0;
                    self.renewed(lease, sent, sent_at, ttl);
                    next = sent + period;
                }
                Err(Failure::LeaseNotFound) => return KeepAliveEnd::LeaseGone,
                Err(failure) => {
                    self.events.log(|| {
                        format!("keepalive of lease {lease:x} failed: {}", failure.message())
                    });
                    stream = None;
                    failures += 1;
                    self.cluster.failed(member.generation);
                    if failures < self.cluster.members() {
                        // Another member may answer: try it at once, without alarming anyone.
                        next = Instant::now();
                        continue;
                    }
                    if errors.should_report() {
                        self.events.emit(Event::error(None, &failure));
                    }
                    next = Instant::now() + retry_after;
                }
            }
        }
    }

    /// Publishes the step-down when the deadline passes without a renewal. One timer for the
    /// whole locker, however many singletons it leads. Timers run on the monotonic clock, which
    /// stands still while the machine is suspended: waiting in steps of at most a second lets a
    /// resumed machine notice within a second (synchronous checks notice at once).
    pub async fn guard_deadline(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        const STEP: Duration = Duration::from_secs(1);
        let mut state = self.subscribe();
        loop {
            tokio::select! {
                r = state.wait_for(|s| s.valid) => if r.is_err() { return },
                _ = changed(&mut stop) => return,
            }
            loop {
                let deadline = *self.lock_deadline();
                let Some(deadline) = deadline else { break };
                let left = deadline.since(Stamp::now());
                if !left.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(left.min(STEP)) => {}
                        _ = changed(&mut stop) => return,
                    }
                    continue;
                }
                let current = self.lock_deadline();
                if current.is_none_or(|d| Stamp::now() >= d) {
                    self.state
                        .send_if_modified(|s| std::mem::replace(&mut s.valid, false));
                    break;
                }
            }
        }
    }

    /// Tells every subscriber that the locker closes.
    pub fn begin_closing(&self) {
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.closing, true));
    }

    /// Revokes the lease, deleting every key bound to it at once.
    pub async fn revoke(&self) -> Result<(), Failure> {
        let Some(lease) = self.lease() else {
            return Ok(());
        };
        self.revoking.send_replace(true);
        let result = self
            .cluster
            .request(|mut c: Client| async move { c.lease_revoke(lease).await })
            .await;
        match result {
            Ok(_) | Err(Failure::LeaseNotFound) => {
                self.clear();
                Ok(())
            }
            Err(failure) => Err(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_fifteen_percent_of_the_ttl_within_bounds() {
        // Never less than 300 ms: room for the stop to reach the application even at TTL 2.
        assert_eq!(margin(2), Duration::from_millis(300));
        assert_eq!(margin(3), Duration::from_millis(450));
        assert_eq!(margin(5), Duration::from_millis(750));
        assert_eq!(margin(10), Duration::from_millis(1500));
        // Never more than 1.5 s: a long TTL should not cut every term short by a lot.
        assert_eq!(margin(60), Duration::from_millis(1500));
        for ttl in 2..=3600 {
            let m = margin(ttl);
            assert!(
                m > Duration::ZERO && m < Duration::from_secs(ttl as u64),
                "ttl {ttl}"
            );
        }
    }
}
