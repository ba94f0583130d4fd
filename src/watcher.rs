//! One watch stream per locker over the whole prefix, waking the elections and observers of the
//! names whose keys changed.
//!
//! Waiting candidates need to learn when a key ahead of them goes, leaders when their own key
//! goes, observers when any key of the name comes or goes. Instead of one watch per singleton, a
//! single watch on `<prefix>/` bumps per-name counters; each election or observer re-reads when its
//! counter moves. Elections only count deletions (a new key never changes who is ahead of an
//! existing one). The watch resumes from the revision after the last event it saw, so
//! reconnecting loses nothing; after a compaction, when events may have been lost, everyone looks
//! again, and so they do when etcd comes back behind the revisions already seen (its data lost).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use etcd_client::{EventType, WatchOptions};
use tokio::sync::watch;

use crate::cluster::{self, Cluster, Failure, REQUEST_TIMEOUT};
use crate::events::{Event, EventSink};
use crate::keys;
use crate::keys::{Candidate, Marker};
use crate::preference::Preferences;
use crate::rank::Preference;
use crate::retry::Backoff;
use crate::retry::Throttle;
use crate::signal::{Listener, Signal};
use crate::util::changed;

/// The largest watch message accepted: a revoke of a lease that holds a million keys fits.
const MAX_WATCH_MESSAGE: usize = 1 << 30;

/// The last change of a name that woke its elections, and the revision of the one before: a
/// candidate next in line leads once the deletion of the key ahead is the first change of the
/// name after the read that found it next in line (see `survey::Ahead`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastChange {
    pub revision: i64,
    /// The lease in the deleted candidate key's last part; 0 for any other change (a handover
    /// marker, or a gap in the watch).
    pub lease: i64,
    pub before: i64,
    /// The revision of the election's last read that found exactly one key ahead of its own,
    /// and that own key's create revision (`Watcher::read_next_in_line`): changes up to then
    /// are in what it read.
    read_at: i64,
    read_own: i64,
}

/// The revision given to a gap in the watch: later than any read, so that no deletion seen
/// after it counts as the first change since.
const GAP: i64 = i64::MAX;

impl LastChange {
    fn then(self, revision: i64, lease: i64) -> LastChange {
        LastChange {
            revision,
            lease,
            before: self.revision,
            ..self
        }
    }

    /// Whether this was the deletion of the candidate key of `lease`, with no other change of
    /// the election since the candidate, whose key was created at `created`, read that this key
    /// alone was ahead of it.
    pub fn only_deletion_ahead(self, lease: i64, created: i64) -> bool {
        // A read of another incarnation of our key tells nothing of this one.
        let since = match self.read_own == created {
            true => created.max(self.read_at),
            false => created,
        };
        lease != 0
            && self.lease == lease
            && self.revision != GAP
            && self.revision > since
            && self.before <= since
    }
}

/// Counters of one name, each made when first asked for (most names have no observer).
#[derive(Default)]
struct NameWatch {
    /// Moves when a key of the name is deleted.
    deleted: Option<Signal<LastChange>>,
    /// Moves when a key of the name is created, changed or deleted.
    changed: Option<Signal<()>>,
}

impl NameWatch {
    fn unused(&self) -> bool {
        self.deleted.as_ref().is_none_or(|s| s.listeners() == 0)
            && self.changed.as_ref().is_none_or(|s| s.listeners() == 0)
    }
}

/// Candidate keys deleted lately, with the revision of each deletion: a leader handing over
/// learns from them when the candidates it asked have stepped aside, and commits only then (each
/// commit before that fails its guard, and the read after it only adds to what etcd must answer
/// while the candidates step aside).
struct Deletions {
    recent: VecDeque<(i64, Box<[u8]>)>,
    /// Deletions up to this revision may be missing: dropped from `recent`, missed in a gap of
    /// the watch, or before it first started.
    unknown_to: i64,
}

/// Deletions kept: a handover needs the last few of its name; a mass deletion (a locker of
/// thousands of names closing) passes through and leaves "unknown", where the guard decides.
const RECENT_DELETIONS: usize = 256;

impl Deletions {
    fn record(&mut self, revision: i64, key: &[u8]) {
        if self.recent.len() == RECENT_DELETIONS {
            let dropped = self
                .recent
                .pop_front()
                .map_or(i64::MIN, |(revision, _)| revision);
            self.unknown_to = self.unknown_to.max(dropped);
        }
        self.recent.push_back((revision, key.into()));
    }

    /// Whether the candidate key `key` created at `created` has been deleted; `None` when the
    /// watch cannot tell.
    fn gone(&self, key: &[u8], created: i64) -> Option<bool> {
        let seen = self
            .recent
            .iter()
            .any(|(revision, deleted)| *revision > created && **deleted == *key);
        match seen {
            true => Some(true),
            false if self.unknown_to <= created => Some(false),
            false => None,
        }
    }
}

pub struct Watcher {
    /// `<prefix>/`
    prefix: String,
    names: Mutex<HashMap<String, NameWatch>>,
    /// The handover markers seen, by name (a handful at most: one per handover under way).
    markers: Mutex<HashMap<String, Marker>>,
    synced: watch::Sender<bool>,
    deletions: Mutex<Deletions>,
    /// Told of every preference key, and of candidates created (see `preference`).
    preferences: Arc<Preferences>,
}

impl Watcher {
    pub fn new(prefix: String, preferences: Arc<Preferences>) -> Watcher {
        Watcher {
            prefix,
            preferences,
            names: Mutex::new(HashMap::new()),
            markers: Mutex::new(HashMap::new()),
            synced: watch::channel(false).0,
            deletions: Mutex::new(Deletions {
                recent: VecDeque::with_capacity(RECENT_DELETIONS),
                unknown_to: i64::MAX,
            }),
        }
    }

    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<String, NameWatch>> {
        crate::util::lock(&self.names)
    }

    /// Moves whenever a key of election `name` is deleted (or a handover marker changes), and
    /// tells which.
    pub fn deletions(&self, name: &str) -> Listener<LastChange> {
        let mut names = self.names();
        let entry = names.entry(name.to_string()).or_default();
        entry
            .deleted
            .get_or_insert_with(|| Signal::new(LastChange::default()))
            .subscribe()
    }

    /// A counter that moves whenever a key of election `name` is created, changed or deleted.
    pub fn changes(&self, name: &str) -> Listener<()> {
        let mut names = self.names();
        let entry = names.entry(name.to_string()).or_default();
        entry
            .changed
            .get_or_insert_with(|| Signal::new(()))
            .subscribe()
    }

    /// How many names elections or observers listen to.
    pub fn len(&self) -> usize {
        self.names().len()
    }

    /// The election of `name` read at `revision` that exactly one key is ahead of its own key,
    /// created at `own` (see `survey::Ahead`). Wakes nobody; a read whose revision etcd did not
    /// give (0) notes nothing.
    pub fn read_next_in_line(&self, name: &str, revision: i64, own: i64) {
        if let Some(deleted) = self.names().get(name).and_then(|w| w.deleted.as_ref()) {
            deleted.modify(|d| {
                if revision > d.read_at {
                    d.read_at = revision;
                    d.read_own = own;
                }
                false
            });
        }
    }

    /// Forgets `name` once nobody listens to it any more.
    pub fn release(&self, name: &str) {
        let mut names = self.names();
        if names.get(name).is_some_and(NameWatch::unused) {
            names.remove(name);
        }
    }

    /// Resolves once the watch is established: from then on no deletion goes unnoticed.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        if rx.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The handover under way in `name`, as the watch last saw its marker.
    pub fn handover(&self, name: &str) -> Option<Marker> {
        crate::util::lock(&self.markers).get(name).copied()
    }

    /// Whether a handover by the leader with key `own` (created at `token`) to `target` past
    /// `between` is worth committing now: each candidate between is gone, or the leader's or the
    /// target's key is (the guard then fails and a read tells what happened), or the watch cannot
    /// tell (the guard decides).
    pub fn worth_committing(
        &self,
        own: &[u8],
        token: i64,
        target: &Candidate,
        between: &[Candidate],
    ) -> bool {
        let deletions = crate::util::lock(&self.deletions);
        let maybe_gone = |key: &[u8], created| deletions.gone(key, created) != Some(false);
        maybe_gone(own, token)
            || maybe_gone(&target.key, target.revision)
            || between.iter().all(|c| maybe_gone(&c.key, c.revision))
    }

    fn changed(&self, key: &[u8], value: &[u8], revision: i64, deleted: bool, created: bool) {
        if let Some((name, lease)) = keys::prefer_of(&self.prefix, key) {
            let preference = if deleted {
                None
            } else {
                Preference::decode(value)
            };
            self.preferences.saw(name, lease, preference);
            // Observers report what the candidates prefer.
            if let Some(counter) = self.names().get(name).and_then(|c| c.changed.as_ref()) {
                counter.bump();
            }
            return;
        }
        if let Some(name) = keys::handover_of(&self.prefix, key) {
            let marker = if deleted { None } else { Marker::decode(value) };
            {
                let mut markers = crate::util::lock(&self.markers);
                match marker {
                    Some(marker) => markers.insert(name.to_string(), marker),
                    None => markers.remove(name),
                };
            }
            // The candidates of the name look again, and those ahead of the target step aside;
            // observers report the handover.
            if let Some(counters) = self.names().get(name) {
                if let Some(deleted) = &counters.deleted {
                    deleted.modify(|d| {
                        *d = d.then(revision, 0);
                        true
                    });
                }
                if let Some(changed) = &counters.changed {
                    changed.bump();
                }
            }
            return;
        }
        let Some(name) = keys::election_of(&self.prefix, key) else {
            return;
        };
        if created {
            self.preferences.created(name);
        }
        if deleted {
            // Before the wake-up below: a leader it wakes sees the deletion.
            crate::util::lock(&self.deletions).record(revision, key);
        }
        if let Some(counters) = self.names().get(name) {
            if let Some(counter) = &counters.deleted {
                if deleted {
                    let lease = keys::candidate_lease(key).unwrap_or(0);
                    counter.modify(|d| {
                        *d = d.then(revision, lease);
                        true
                    });
                } else if !created {
                    // A candidate key written over from outside (ours, perhaps, now bound to
                    // another lease): no reason to look now, but the next deletion is not the
                    // only change since, and whoever it wakes reads.
                    counter.modify(|d| {
                        *d = d.then(revision, 0);
                        false
                    });
                }
            }
            if let Some(counter) = &counters.changed {
                counter.bump();
            }
        }
    }

    fn wake_all(&self) {
        // Until the next watch is up, and for what came before it, nobody can tell.
        crate::util::lock(&self.deletions).unknown_to = i64::MAX;
        for counters in self.names().values() {
            if let Some(deleted) = &counters.deleted {
                deleted.modify(|d| {
                    *d = d.then(GAP, 0);
                    true
                });
            }
            if let Some(changed) = &counters.changed {
                changed.bump();
            }
        }
        self.preferences.resync();
    }

    pub async fn run(
        self: Arc<Self>,
        cluster: Arc<Cluster>,
        events: EventSink,
        mut stop: watch::Receiver<bool>,
    ) {
        // 0 means "from now"; afterwards the revision after the last one seen.
        let mut next_revision = 0i64;
        // etcd lost its history: wake everyone once the new watch is up.
        let mut history_lost = false;
        let mut member_changes = cluster.generation();
        let mut backoff = Backoff::rounds();
        let mut recovered = cluster.recoveries();
        let mut errors = Throttle::new();
        // Failures since the watch last worked: one member failing is not worth reporting while
        // another one can take over.
        let mut failures = 0usize;
        while !*stop.borrow() {
            member_changes.borrow_and_update();
            recovered.borrow_and_update();
            let member = tokio::select! {
                m = cluster.member() => m,
                _ = changed(&mut stop) => return,
            };
            let member = match member {
                Ok(member) => member,
                Err(failure) => {
                    failures += 1;
                    if failures >= cluster.members() && errors.should_report() {
                        events.emit(Event::error(None, &failure));
                    }
                    tokio::select! {
                        _ = backoff.wait(&mut recovered) => {}
                        _ = changed(&mut stop) => return,
                    }
                    continue;
                }
            };
            let mut options = WatchOptions::new().with_prefix();
            if next_revision > 0 {
                options = options.with_start_revision(next_revision);
            }
            // A locker that closes deletes all its keys in one revision, which etcd sends as one
            // message: with 100 000 names some 20 MB, past the client's default limit of 4 MB,
            // and the watch would fail on it at every retry while nobody takes over those names.
            // (Asking etcd to fragment it instead costs etcd 3.4 time quadratic in the events:
            // half a minute of its CPU for that revision.)
            let mut client = member
                .client
                .watch_client()
                .max_decoding_message_size(MAX_WATCH_MESSAGE);
            let opened = tokio::select! {
                r = tokio::time::timeout(REQUEST_TIMEOUT, client.watch(self.prefix.clone(), Some(options))) => r,
                _ = changed(&mut stop) => return,
            };
            let failure = match opened {
                Ok(Ok(mut stream)) => loop {
                    let message = tokio::select! {
                        m = stream.message() => m,
                        // Requests moved to another member: follow them.
                        _ = changed(&mut member_changes) => break None,
                        _ = changed(&mut stop) => return,
                    };
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => break Some(Failure::Unavailable("watch stream closed".into())),
                        Err(err) => {
                            break Some(Failure::Unavailable(format!(
                                "watch failed: {}",
                                cluster::describe(&err)
                            )));
                        }
                    };
                    if response.compact_revision() > 0 {
                        events.log(|| {
                            format!(
                                "watch fell behind a compaction at revision {}: everyone looks again",
                                response.compact_revision()
                            )
                        });
                        // Events before the compaction are gone: everyone looks again.
                        next_revision = response.compact_revision();
                        self.wake_all();
                        break None;
                    }
                    if response.canceled() {
                        self.wake_all();
                        let reason = response.cancel_reason();
                        let message = format!("watch canceled: {reason}");
                        // etcd cancels a watch it refuses (no user, no permission) with the
                        // gRPC status in the reason text.
                        let refused = ["InvalidArgument", "PermissionDenied", "Unauthenticated"]
                            .iter()
                            .any(|code| reason.contains(&format!("code = {code}")));
                        break Some(if refused {
                            Failure::Rejected(message)
                        } else {
                            Failure::Unavailable(message)
                        });
                    }
                    if response.created() {
                        let revision = response.header().map_or(0, |h| h.revision());
                        if next_revision > revision + 1 {
                            // etcd is behind what we already saw: it came back without its data
                            // (an empty data dir, a restored snapshot). A watch from our next
                            // revision would wait for a future that this etcd reaches only by
                            // chance, and skip every event until then. Watch again from now;
                            // once that watch is up, everyone looks again.
                            events.log(|| {
                                format!(
                                    "etcd is at revision {revision}, behind the {} already seen: \
                                     it lost its history; watching again from now",
                                    next_revision - 1
                                )
                            });
                            next_revision = 0;
                            history_lost = true;
                            break None;
                        }
                        if next_revision == 0 {
                            next_revision = revision + 1;
                        }
                        if std::mem::take(&mut history_lost) {
                            self.wake_all();
                        }
                        {
                            // Every deletion from here on arrives.
                            let mut deletions = crate::util::lock(&self.deletions);
                            if deletions.unknown_to == i64::MAX {
                                deletions.unknown_to = next_revision - 1;
                            }
                        }
                        events.log(|| {
                            format!("watching {} from revision {next_revision}", self.prefix)
                        });
                        cluster.answered();
                        backoff.reset();
                        errors.reset();
                        failures = 0;
                        self.synced.send_replace(true);
                    }
                    for event in response.events() {
                        if let Some(kv) = event.kv() {
                            next_revision = next_revision.max(kv.mod_revision() + 1);
                            self.changed(
                                kv.key(),
                                kv.value(),
                                kv.mod_revision(),
                                event.event_type() == EventType::Delete,
                                kv.version() == 1,
                            );
                        }
                    }
                },
                Ok(Err(err)) => Some(Failure::Unavailable(format!(
                    "watch failed: {}",
                    cluster::describe(&err)
                ))),
                Err(_) => Some(Failure::Unavailable("watch not established in time".into())),
            };
            if let Some(failure) = failure {
                failures += 1;
                cluster.failed(member.generation);
                if failures >= cluster.members() {
                    if errors.should_report() {
                        events.emit(Event::error(None, &failure));
                    }
                    tokio::select! {
                        _ = backoff.wait(&mut recovered) => {}
                        _ = changed(&mut stop) => return,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_deleted_candidate_wakes_its_name_only() {
        let watcher = Watcher::new(
            "p/".into(),
            Arc::new(Preferences::new("p".into(), false, Duration::ZERO)),
        );
        let mut build = watcher.deletions("build");
        let build2 = watcher.deletions("build2");
        let mut observer = watcher.changes("build");
        watcher.changed(b"p/build/694da2166b8e6d66", b"", 11, true, false);
        assert!(build.has_changed());
        assert!(observer.has_changed());
        assert!(!build2.has_changed());
        build.get_and_update();
        observer.get_and_update();
        // A new candidate changes who observers see queued, never who is ahead of an election.
        watcher.changed(b"p/build/694da2166b8e6d67", b"id", 12, false, false);
        assert!(!build.has_changed());
        assert!(observer.has_changed());
    }

    #[test]
    fn term_records_and_foreign_keys_wake_nobody() {
        let watcher = Watcher::new(
            "p/".into(),
            Arc::new(Preferences::new("p".into(), false, Duration::ZERO)),
        );
        let build = watcher.deletions("build");
        let observer = watcher.changes("build");
        // A term record listing the leader's term, written and deleted.
        let record = keys::term_record("p", keys::term_bucket("build"), 0x1e);
        watcher.changed(record.as_bytes(), b"1 2 build\n", 13, false, true);
        watcher.changed(record.as_bytes(), b"", 14, true, false);
        // Keys outside the prefix, and a key whose name is not UTF-8.
        watcher.changed(b"q/build/1", b"", 15, true, false);
        watcher.changed(b"p/\xff/1", b"", 16, true, false);
        assert!(!build.has_changed());
        assert!(!observer.has_changed());
    }

    #[test]
    fn a_handover_marker_wakes_the_elections_of_its_name_and_is_kept_until_deleted() {
        let watcher = Watcher::new(
            "p/".into(),
            Arc::new(Preferences::new("p".into(), false, Duration::ZERO)),
        );
        let mut build = watcher.deletions("build");
        let other = watcher.deletions("other");
        let observer = watcher.changes("build");
        watcher.changed(b"p//handover/build", b"5 9", 17, false, false);
        assert!(build.has_changed());
        assert!(!other.has_changed());
        assert!(observer.has_changed(), "observers report a handover");
        assert_eq!(
            watcher.handover("build"),
            Some(Marker {
                leader: 5,
                target: 9
            })
        );
        assert_eq!(watcher.handover("other"), None);
        build.get_and_update();
        watcher.changed(b"p//handover/build", b"", 18, true, false);
        assert!(build.has_changed());
        assert_eq!(watcher.handover("build"), None);
    }

    #[test]
    fn a_leader_commits_its_handover_once_the_candidates_it_asked_are_gone() {
        let watcher = Watcher::new(
            "p/".into(),
            Arc::new(Preferences::new("p".into(), false, Duration::ZERO)),
        );
        let candidate = |key: &str, revision| Candidate {
            key: key.as_bytes().to_vec(),
            id: "c".into(),
            revision,
        };
        let (own, target) = (b"p/build/1".as_slice(), candidate("p/build/4", 9));
        let between = [candidate("p/build/2", 7), candidate("p/build/3", 8)];
        let worth = |w: &Watcher| w.worth_committing(own, 5, &target, &between);
        assert!(worth(&watcher), "before the watch is up nobody can tell");
        watcher.deletions.lock().unwrap().unknown_to = 4;
        assert!(!worth(&watcher));
        // Another election's key, one behind the target, and a deletion of the first key
        // between from before it was created (an earlier campaign of the same locker).
        watcher.changed(b"p/other/2", b"", 10, true, false);
        watcher.changed(b"p/build/5", b"", 11, true, false);
        watcher.changed(b"p/build/2", b"", 6, true, false);
        watcher.changed(b"p/build/2", b"", 12, true, false);
        assert!(!worth(&watcher), "one of the two is still there");
        watcher.changed(b"p/build/3", b"", 13, true, false);
        assert!(worth(&watcher));

        // The target leaving, or the leader's own key going, is worth a look too.
        let fresh = || {
            let w = Watcher::new(
                "p/".into(),
                Arc::new(Preferences::new("p".into(), false, Duration::ZERO)),
            );
            w.deletions.lock().unwrap().unknown_to = 4;
            w
        };
        let w = fresh();
        w.changed(b"p/build/4", b"", 10, true, false);
        assert!(worth(&w));
        let w = fresh();
        w.changed(b"p/build/1", b"", 10, true, false);
        assert!(worth(&w));

        // Deletions pushed out by a flood of others, or a gap in the watch: the guard decides.
        let w = fresh();
        for i in 0..RECENT_DELETIONS as i64 {
            w.changed(format!("p/n{i}/1").as_bytes(), b"", 10 + i, true, false);
        }
        assert!(!worth(&w), "all kept: still known");
        w.changed(b"p/n/1", b"", 10_000, true, false);
        assert!(worth(&w));
        let w = fresh();
        w.wake_all();
        assert!(worth(&w));
    }

    #[test]
    fn a_candidate_next_in_line_leads_on_the_deletion_ahead_only_when_nothing_else_changed() {
        // A watcher, and the election of "build" listening to it.
        let fresh = || {
            let w = Watcher::new(
                "p/".into(),
                Arc::new(Preferences::new("p".into(), false, Duration::ZERO)),
            );
            let election = w.deletions("build");
            (w, election)
        };
        // Our key (lease 2) was created at revision 10; the key ahead is lease 1's.
        let leads = |w: &Watcher| w.deletions("build").get().only_deletion_ahead(1, 10);
        let (w, _election) = fresh();
        // Deletions up to our key's creation are in what we read after it.
        w.changed(b"p/build/3", b"", 9, true, false);
        w.changed(b"p/other/1", b"", 11, true, false);
        assert!(!leads(&w), "nothing of ours deleted yet");
        w.changed(b"p/build/1", b"", 12, true, false);
        assert!(leads(&w));

        // Our own key gone in the same revision as the one ahead (one request deleted both),
        // in either order; another key of the name, or a handover marker, changed before it.
        for (first, second) in [("p/build/2", "p/build/1"), ("p/build/1", "p/build/2")] {
            let (w, _election) = fresh();
            w.changed(first.as_bytes(), b"", 12, true, false);
            w.changed(second.as_bytes(), b"", 12, true, false);
            assert!(!leads(&w), "{first} and {second} in one revision");
        }
        let (w, _election) = fresh();
        w.changed(b"p/build/3", b"", 11, true, false);
        w.changed(b"p/build/1", b"", 12, true, false);
        assert!(!leads(&w), "another candidate went first");
        let (w, _election) = fresh();
        w.changed(b"p//handover/build", b"5 9", 11, false, false);
        w.changed(b"p/build/1", b"", 12, true, false);
        assert!(!leads(&w), "a handover marker came first");
        // Our key written over from outside (bound to another lease, or none) wakes nobody, but
        // whoever the next deletion wakes reads; a new candidate behind us changes nothing.
        let (w, election) = fresh();
        w.changed(b"p/build/5", b"x", 11, false, true);
        w.changed(b"p/build/2", b"x", 11, false, false);
        assert!(!election.has_changed());
        w.changed(b"p/build/1", b"", 12, true, false);
        assert!(!leads(&w), "our key was written over first");
        let (w, _election) = fresh();
        w.changed(b"p/build/5", b"x", 11, false, true);
        w.changed(b"p/build/1", b"", 12, true, false);
        assert!(leads(&w), "a new candidate behind us");

        // A change after our key's creation, then a read that found us next in line again: what
        // changed up to that read is in it.
        let (w, _election) = fresh();
        w.changed(b"p/build/0", b"", 11, true, false);
        w.changed(b"p/build/1", b"", 13, true, false);
        assert!(
            !leads(&w),
            "a change after our key's creation, and no read since"
        );
        let (w, _election) = fresh();
        w.changed(b"p/build/0", b"", 11, true, false);
        w.read_next_in_line("build", 12, 10);
        w.changed(b"p/build/1", b"", 13, true, false);
        assert!(leads(&w), "the change at 11 is in the read at 12");
        // ... but not what came after the read, even when the watch delivers it later.
        let (w, _election) = fresh();
        w.read_next_in_line("build", 12, 10);
        w.changed(b"p/build/0", b"", 13, true, false);
        w.changed(b"p/build/1", b"", 14, true, false);
        assert!(!leads(&w), "a change after the read");
        // A read of another incarnation of our key (created at 11) says nothing of ours.
        let (w, _election) = fresh();
        w.changed(b"p/build/0", b"", 11, true, false);
        w.read_next_in_line("build", 12, 11);
        w.changed(b"p/build/1", b"", 13, true, false);
        assert!(!leads(&w), "a read of another key");

        // A gap in the watch may hide our key's deletion: the next deletion does not count.
        let (w, _election) = fresh();
        w.wake_all();
        w.changed(b"p/build/1", b"", 12, true, false);
        assert!(!leads(&w), "after a gap");
        // Nor does the deletion of some other lease's key, or a marker's own change.
        let (w, _election) = fresh();
        w.changed(b"p/build/4", b"", 12, true, false);
        assert!(!leads(&w));
        w.changed(b"p//handover/build", b"", 13, true, false);
        assert!(!leads(&w));
    }

    #[test]
    fn a_preference_wakes_the_observers_of_its_name_only() {
        let watcher = Watcher::new(
            "p/".into(),
            Arc::new(Preferences::new("p".into(), false, Duration::ZERO)),
        );
        let build = watcher.deletions("build");
        let observer = watcher.changes("build");
        let other = watcher.changes("other");
        watcher.changed(b"p//prefer/build/1f", b"5", 19, false, false);
        assert!(observer.has_changed());
        assert!(
            !build.has_changed(),
            "elections do not look again for a preference"
        );
        assert!(!other.has_changed());
    }

    #[test]
    fn a_released_name_is_forgotten_only_when_nobody_listens() {
        let watcher = Watcher::new(
            "p/".into(),
            Arc::new(Preferences::new("p".into(), false, Duration::ZERO)),
        );
        let election = watcher.deletions("build");
        let observer = watcher.changes("build");
        drop(election);
        watcher.release("build");
        assert!(
            watcher.names().contains_key("build"),
            "the observer still listens"
        );
        drop(observer);
        watcher.release("build");
        assert!(!watcher.names().contains_key("build"));
    }
}
