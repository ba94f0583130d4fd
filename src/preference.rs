//! Who should lead: priorities, and a balanced spread of names over the lockers that balance.
//!
//! Election order stays etcd's recipe (the lowest create revision leads); preferences only decide
//! when a leader hands over, through the same guarded handover as `singleton.handover(toId)`.
//! Safety never rests on them.
//!
//! A candidate with a priority other than 0, or of a locker that balances, writes
//! `<prefix>//prefer/<name>/<lease hex>` ("<priority>" or "<priority> balance") in the same
//! transaction that creates its candidate key, bound to the same lease, and deletes it when it
//! resigns. A candidate without one (priority 0, not balancing, or `etcdctl elect`) has none.
//!
//! Among the live candidates of a name, those of the highest priority are preferred; among them,
//! if any balance, the one whose (name, locker id) hashes highest (rendezvous hashing), so that
//! each of M balancing lockers leads about 1/M of the names and a locker joining or leaving moves
//! only the names it gains or had. A leader outranked by that choice hands over to it once it has
//! led `min_term`: a leader that does not balance never yields for balance, only for priority.
//!
//! The locker's watch keeps every preference it sees (`saw`); a leader looks again when a
//! preference of its name changes, when a candidate is created that outranks a negative priority,
//! and `min_term` after its election, and only where preferences are in play. Idle, nothing is
//! read or written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::batch::Batcher;
use crate::cluster::Cluster;
use crate::events::{Event, EventSink};
use crate::handover::{Candidate, Choice, Request};
use crate::keys;
use crate::rank::{Preference, preferred};
use crate::term;
use crate::util::lock;

/// Added to the minimum term as the record measures it (see `consider`).
const MIN_TERM_SLACK_MS: i64 = 50;

/// The least time before a leader looks again after asking for a handover, or while its term
/// record is missing: each look is a read, and each handover stops and restarts its work.
const RETRY: Duration = Duration::from_secs(2);

pub struct Preferences {
    prefix: String,
    balance: bool,
    min_term: Duration,
    /// Our registrations' priorities other than 0, by name.
    own: Mutex<HashMap<String, i64>>,
    /// Every preference key the watch saw, by name and lease.
    seen: Mutex<HashMap<String, HashMap<i64, Preference>>>,
    /// Names to look at, and when.
    due: Mutex<HashMap<String, Instant>>,
    /// A handover to this candidate (create revision) was blocked: not asked again this term.
    declined: Mutex<HashMap<String, i64>>,
    /// `seen` is to be read again from etcd: at the start, after a watch gap, after a failed read.
    stale: std::sync::atomic::AtomicBool,
    wake: Notify,
}

impl Preferences {
    pub fn new(prefix: String, balance: bool, min_term: Duration) -> Preferences {
        Preferences {
            prefix,
            balance,
            min_term,
            own: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            due: Mutex::new(HashMap::new()),
            declined: Mutex::new(HashMap::new()),
            stale: std::sync::atomic::AtomicBool::new(true),
            wake: Notify::new(),
        }
    }

    pub fn set_priority(&self, name: &str, priority: i64) {
        let mut own = lock(&self.own);
        if priority == 0 {
            own.remove(name);
        } else {
            own.insert(name.to_string(), priority);
        }
    }

    pub fn priority(&self, name: &str) -> i64 {
        lock(&self.own).get(name).copied().unwrap_or(0)
    }

    /// Our candidate's preference in `name`, if it has one to write.
    pub fn own(&self, name: &str) -> Option<Preference> {
        let priority = self.priority(name);
        (priority != 0 || self.balance).then_some(Preference {
            priority,
            balance: self.balance,
        })
    }

    /// The watch may have missed events (a compaction, etcd back without its history): what it
    /// kept is read again, and every name where preferences are in play is looked at.
    pub fn resync(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::SeqCst);
        let names: Vec<String> = lock(&self.seen).keys().cloned().collect();
        for name in names {
            self.look(&name, Duration::ZERO);
        }
        self.wake.notify_one();
    }

    /// The watch saw the preference of `lease` in `name` written (`Some`) or deleted.
    pub fn saw(&self, name: &str, lease: i64, preference: Option<Preference>) {
        {
            let mut seen = lock(&self.seen);
            match preference {
                Some(p) => {
                    seen.entry(name.to_string()).or_default().insert(lease, p);
                }
                None => {
                    if let Some(leases) = seen.get_mut(name) {
                        leases.remove(&lease);
                        if leases.is_empty() {
                            seen.remove(name);
                        }
                    }
                }
            }
        }
        self.look(name, Duration::ZERO);
    }

    /// The watch saw a candidate created in `name`: only a leader of negative priority can be
    /// outranked by a candidate without a preference key.
    pub fn created(&self, name: &str) {
        if self.priority(name) < 0 {
            self.look(name, Duration::ZERO);
        }
    }

    fn in_play(&self, name: &str) -> bool {
        self.own(name).is_some() || lock(&self.seen).contains_key(name)
    }

    /// We were elected in `name`: once we led `min_term`, see whether someone should lead instead.
    pub fn elected(&self, name: &str) {
        lock(&self.declined).remove(name);
        if self.in_play(name) {
            self.look(name, self.min_term);
        }
    }

    /// Our handover in `name` to the candidate created at `target` was blocked.
    pub fn declined(&self, name: &str, target: i64) {
        lock(&self.declined).insert(name.to_string(), target);
    }

    fn look(&self, name: &str, after: Duration) {
        let at = Instant::now() + after;
        let mut due = lock(&self.due);
        let earliest = due.entry(name.to_string()).or_insert(at);
        if at < *earliest {
            *earliest = at;
        }
        drop(due);
        self.wake.notify_one();
    }

    /// The names due now, and when the next one is.
    fn take_due(&self) -> (Vec<String>, Option<Instant>) {
        let now = Instant::now();
        let mut due = lock(&self.due);
        let ready: Vec<String> = due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &ready {
            due.remove(name);
        }
        (ready, due.values().min().copied())
    }
}

/// What the preference task needs of the locker: whether we lead `name`, and with which
/// registration and lease.
pub type LeaderOf = Box<dyn Fn(&str) -> Option<(u32, i64)> + Send + Sync>;

pub struct Task {
    pub preferences: std::sync::Arc<Preferences>,
    pub cluster: std::sync::Arc<Cluster>,
    pub batcher: std::sync::Arc<Batcher>,
    pub events: EventSink,
    pub leader_of: LeaderOf,
}

/// Reads the preference keys under the prefix, for what the watch did not see (those written
/// before it began, or during a gap). Entries are added, never dropped: a stale one only makes a
/// name look (decisions read the name's keys again). False when etcd did not answer.
async fn load(task: &Task) -> bool {
    let from = keys::preferences(&task.preferences.prefix);
    let end = keys::range_end(&from);
    let all = keys::all(&task.preferences.prefix);
    let mut found = Vec::new();
    let read = task
        .cluster
        .read_pages(from.into_bytes(), end, 1000, |kv| {
            if let (Some((name, lease)), Some(p)) = (
                keys::prefer_of(&all, kv.key()),
                Preference::decode(kv.value()),
            ) {
                found.push((name.to_string(), lease, p));
            }
        })
        .await;
    if read.is_err() {
        return false;
    }
    let names: Vec<String> = {
        let mut seen = lock(&task.preferences.seen);
        for (name, lease, p) in found {
            seen.entry(name).or_default().entry(lease).or_insert(p);
        }
        seen.keys().cloned().collect()
    };
    // What was missed may call for a handover where we lead.
    for name in names {
        task.preferences.look(&name, Duration::ZERO);
    }
    true
}

/// Looks at the names that are due, and asks JavaScript to hand over where someone else should
/// lead. Ends when the locker closes.
pub async fn run(task: Task, synced: impl Future<Output = ()>, mut closing: watch::Receiver<bool>) {
    tokio::select! {
        _ = synced => {}
        _ = closing.wait_for(|c| *c) => return,
    }
    let preferences = task.preferences.clone();
    let task = std::sync::Arc::new(task);
    loop {
        let mut reload_at = None;
        if preferences
            .stale
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            && !load(&task).await
        {
            preferences
                .stale
                .store(true, std::sync::atomic::Ordering::SeqCst);
            reload_at = Some(Instant::now() + Duration::from_secs(1));
        }
        let (ready, next) = preferences.take_due();
        let next = match (next, reload_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Side by side: a locker joining a balanced fleet makes hundreds of names due at once, and
        // their reads go to etcd batched; one after the other, each would wait for the last.
        let mut looking = JoinSet::new();
        for name in ready {
            let task = task.clone();
            looking.spawn(async move {
                let result = consider(&task, &name).await;
                (name, result)
            });
        }
        loop {
            tokio::select! {
                done = looking.join_next() => match done {
                    Some(Ok((name, Err(retry)))) => preferences.look(&name, retry),
                    Some(_) => {}
                    None => break,
                },
                // Dropping the set ends what is still looking.
                _ = closing.wait_for(|c| *c) => return,
            }
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = preferences.wake.notified() => {}
            _ = sleep => {}
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}

/// What one read of an election says: its candidates in line, what they prefer (by lease), and
/// the term records of its bucket.
struct Queue {
    candidates: Vec<Candidate>,
    preferences: HashMap<i64, Preference>,
    records: Vec<Vec<u8>>,
}

/// Reads `name`'s queue. Decisions rest on this read, not on what the watch kept (which only
/// says where to look): a watch that missed events (a compaction) cannot make them wrong.
async fn read_queue(batcher: &Batcher, prefix: &str, name: &str) -> Result<Queue, ()> {
    let read = Txn::new().and_then([
        TxnOp::get(
            keys::candidates(prefix, name),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend),
            ),
        ),
        TxnOp::get(
            keys::term_records(prefix, name),
            Some(GetOptions::new().with_prefix()),
        ),
        TxnOp::get(
            format!("{}{name}/", keys::preferences(prefix)),
            Some(GetOptions::new().with_prefix()),
        ),
    ]);
    let response = batcher.txn(name, read).await.map_err(|_| ())?;
    let mut gets = response.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    });
    let (Some(queue), Some(records), Some(preferences)) = (gets.next(), gets.next(), gets.next())
    else {
        return Err(());
    };
    let all = keys::all(prefix);
    let candidates: Vec<Candidate> = queue
        .kvs()
        .iter()
        .map(|kv| Candidate {
            key: kv.key().to_vec(),
            id: String::from_utf8_lossy(kv.value()).into_owned(),
            revision: kv.create_revision(),
        })
        .collect();
    Ok(Queue {
        candidates,
        preferences: preferences
            .kvs()
            .iter()
            .filter_map(|kv| {
                let (_, lease) = keys::prefer_of(&all, kv.key())?;
                Some((lease, Preference::decode(kv.value())?))
            })
            .collect(),
        records: records.kvs().iter().map(|kv| kv.value().to_vec()).collect(),
    })
}

impl Preferences {
    /// The candidate we, first in line in `name` with our key under `lease`, should hand over to:
    /// someone preferred, not declined this term.
    fn target<'q>(&self, name: &str, lease: i64, queue: &'q Queue) -> Option<&'q Candidate> {
        let own = keys::candidate(&keys::candidates(&self.prefix, name), lease);
        queue
            .candidates
            .first()
            .filter(|c| c.key == own.as_bytes())?;
        let target = preferred(name, &queue.candidates, &queue.preferences)?;
        (lock(&self.declined).get(name) != Some(&target.revision)).then_some(target)
    }

    /// Just elected in `name` (our key under `lease`, not yet started): whether to pass the lead
    /// on at once to the candidate that should lead, so that the work starts only there. Only
    /// where preferences are in play, and only when every candidate between is one of ours (it
    /// has a preference key): one of `etcdctl elect` would not step aside, and the name would wait
    /// out the handover's limit without a leader.
    pub async fn pass_on(&self, batcher: &Batcher, name: &str, lease: i64) -> Option<Request> {
        if !self.in_play(name) {
            return None;
        }
        let queue = read_queue(batcher, &self.prefix, name).await.ok()?;
        let target = self.target(name, lease, &queue)?;
        let ours = |c: &Candidate| {
            keys::candidate_lease(&c.key)
                .is_some_and(|lease| queue.preferences.contains_key(&lease))
        };
        let between = queue.candidates[1..]
            .iter()
            .take_while(|c| c.key != target.key);
        if !between.clone().all(ours) {
            return None;
        }
        Some(Request {
            answer: 0,
            to: Some(target.id.clone()),
            checked: Some(Choice {
                target: target.clone(),
                between: between.cloned().collect(),
            }),
            passing_on: true,
        })
    }
}

/// Looks whether someone else should lead `name`, where we lead it; `Err` with when to look again.
async fn consider(task: &Task, name: &str) -> Result<(), Duration> {
    let preferences = &task.preferences;
    let Some((serial, lease)) = (task.leader_of)(name) else {
        return Ok(());
    };
    let queue = read_queue(&task.batcher, &preferences.prefix, name)
        .await
        .map_err(|_| Duration::from_secs(1))?;
    let Some(target) = preferences.target(name, lease, &queue) else {
        return Ok(());
    };
    let token = queue.candidates.first().map_or(0, |c| c.revision);
    let since = term::since_in(queue.records.iter().map(Vec::as_slice), name, token);
    // The record holds the election time in whole ms, taken just before `start` went to
    // JavaScript, which runs the work a moment later (more when its thread is busy): the slack
    // keeps the work's own term at least `min_term` long.
    let min_term = i64::try_from(preferences.min_term.as_millis())
        .unwrap_or(i64::MAX)
        .saturating_add(MIN_TERM_SLACK_MS);
    let led = since.map(|s| term::now_ms().saturating_sub(s));
    match led {
        Some(led) if led >= min_term => {
            task.events
                .log(|| format!("{name}: {} is preferred; handing over to it", target.id));
            task.events.emit(Event::Prefer {
                serial,
                to: target.id.clone(),
            });
            // Looked at again: JavaScript may not act on it (busy with a handover of the user's,
            // a pause undone) or the handover may fail; once it happened, we no longer lead.
            Err(preferences.min_term.max(RETRY))
        }
        // Our record is not written yet: we were elected just now (or it could not be written).
        None => Err(preferences.min_term.max(RETRY)),
        Some(led) => Err(Duration::from_millis(
            u64::try_from(min_term - led).unwrap_or(0),
        )),
    }
}
