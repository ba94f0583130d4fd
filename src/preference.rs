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
use tokio::time::Instant;

use crate::batch::Batcher;
use crate::cluster::Cluster;
use crate::events::{Event, EventSink};
use crate::handover::{Candidate, Choice, Request};
use crate::keys;
use crate::term;
use crate::util::lock;

/// Added to the minimum term as the record measures it (see `consider`).
const MIN_TERM_SLACK_MS: i64 = 50;

/// What a candidate prefers, as its preference key says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preference {
    pub priority: i64,
    pub balance: bool,
}

impl Preference {
    pub fn encode(self) -> String {
        if self.balance {
            format!("{} balance", self.priority)
        } else {
            self.priority.to_string()
        }
    }

    pub fn decode(value: &[u8]) -> Option<Preference> {
        let text = std::str::from_utf8(value).ok()?;
        let (priority, balance) = match text.split_once(' ') {
            Some((priority, "balance")) => (priority, true),
            Some(_) => return None,
            None => (text, false),
        };
        Some(Preference {
            priority: priority.parse().ok()?,
            balance,
        })
    }
}

/// The rendezvous weight of locker `id` for election `name`: FNV-1a over both, then a 64-bit
/// finaliser so that ids differing in one character spread over the whole range. Every host
/// computes the same weight, whatever its platform or version.
pub fn weight(name: &str, id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes().chain([0u8]).chain(id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The candidate that should lead `name` among `candidates` (in create order, the first leads),
/// given the preferences by lease; `None` when whoever leads may stay.
pub fn preferred<'c>(
    name: &str,
    candidates: &'c [Candidate],
    preferences: &HashMap<i64, Preference>,
) -> Option<&'c Candidate> {
    let of = |c: &Candidate| {
        keys::candidate_lease(&c.key)
            .and_then(|lease| preferences.get(&lease).copied())
            .unwrap_or_default()
    };
    let leader = candidates.first()?;
    let top = candidates.iter().map(|c| of(c).priority).max()?;
    let best = candidates.iter().filter(|c| of(c).priority == top);
    let balancing = best.clone().filter(|c| of(c).balance);
    // Ties in weight (the same id twice) go to the earlier candidate.
    let winner = balancing
        .rev()
        .max_by_key(|c| weight(name, &c.id))
        .or_else(|| best.clone().next())?;
    let mine = of(leader);
    let outranked = mine.priority < top || (mine.balance && winner.key != leader.key);
    (outranked && winner.key != leader.key).then_some(winner)
}

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

    /// A handover of ours in `name` failed other than blocked (etcd away, the target gone, the
    /// candidates kept changing) and we lead on: look again, no sooner than a term or a second.
    pub fn retry(&self, name: &str) {
        if self.in_play(name) {
            self.look(name, self.min_term.max(Duration::from_secs(1)));
        }
    }

    /// Our handover in `name` to the candidate created at `target` was blocked.
    pub fn declined(&self, name: &str, target: i64) {
        lock(&self.declined).insert(name.to_string(), target);
    }

    /// What each lease prefers in `name`.
    fn preferences_of(&self, name: &str) -> HashMap<i64, Preference> {
        lock(&self.seen).get(name).cloned().unwrap_or_default()
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

/// Reads the preference keys under the prefix that were there before the watch began.
async fn load(task: &Task) {
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
    if read.is_ok() {
        let mut seen = lock(&task.preferences.seen);
        for (name, lease, p) in found {
            seen.entry(name).or_default().entry(lease).or_insert(p);
        }
    }
}

/// Looks at the names that are due, and asks JavaScript to hand over where someone else should
/// lead. Ends when the locker closes.
pub async fn run(task: Task, synced: impl Future<Output = ()>, mut closing: watch::Receiver<bool>) {
    tokio::select! {
        _ = synced => {}
        _ = closing.wait_for(|c| *c) => return,
    }
    load(&task).await;
    let preferences = task.preferences.clone();
    loop {
        let (ready, next) = preferences.take_due();
        for name in ready {
            if *closing.borrow() {
                return;
            }
            if let Err(retry) = consider(&task, &name).await {
                preferences.look(&name, retry);
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

/// The candidates of `name` in line, and its term record's value, in one read.
async fn read_queue(
    batcher: &Batcher,
    prefix: &str,
    name: &str,
) -> Result<(Vec<Candidate>, Option<Vec<u8>>), ()> {
    let read = Txn::new().and_then([
        TxnOp::get(
            keys::candidates(prefix, name),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend),
            ),
        ),
        TxnOp::get(keys::record(prefix, name), None),
    ]);
    let response = batcher.txn(name, read).await.map_err(|_| ())?;
    let mut gets = response.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    });
    let (Some(queue), Some(record)) = (gets.next(), gets.next()) else {
        return Err(());
    };
    let candidates: Vec<Candidate> = queue
        .kvs()
        .iter()
        .map(|kv| Candidate {
            key: kv.key().to_vec(),
            id: String::from_utf8_lossy(kv.value()).into_owned(),
            revision: kv.create_revision(),
        })
        .collect();
    Ok((
        candidates,
        record.kvs().first().map(|kv| kv.value().to_vec()),
    ))
}

impl Preferences {
    /// The candidate we, first in line in `name` with our key under `lease`, should hand over to:
    /// someone preferred, not declined this term.
    fn target<'c>(
        &self,
        name: &str,
        lease: i64,
        candidates: &'c [Candidate],
    ) -> Option<&'c Candidate> {
        let own = keys::candidate(&keys::candidates(&self.prefix, name), lease);
        candidates.first().filter(|c| c.key == own.as_bytes())?;
        let target = preferred(name, candidates, &self.preferences_of(name))?;
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
        let (candidates, _) = read_queue(batcher, &self.prefix, name).await.ok()?;
        let target = self.target(name, lease, &candidates)?;
        let seen = self.preferences_of(name);
        let ours = |c: &Candidate| {
            keys::candidate_lease(&c.key).is_some_and(|lease| seen.contains_key(&lease))
        };
        let between = candidates[1..].iter().take_while(|c| c.key != target.key);
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
    let (candidates, record) = read_queue(&task.batcher, &preferences.prefix, name)
        .await
        .map_err(|_| Duration::from_secs(1))?;
    let Some(target) = preferences.target(name, lease, &candidates) else {
        return Ok(());
    };
    let token = candidates.first().map_or(0, |c| c.revision);
    let since = record.and_then(|value| term::since_of(&value, token));
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
            Ok(())
        }
        // Our record is not written yet: we were elected just now.
        None => Err(preferences.min_term),
        Some(led) => Err(Duration::from_millis(
            u64::try_from(min_term - led).unwrap_or(0),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(lease: i64, id: &str, revision: i64) -> Candidate {
        Candidate {
            key: format!("p/n/{lease:x}").into_bytes(),
            id: id.into(),
            revision,
        }
    }

    fn prefs(list: &[(i64, i64, bool)]) -> HashMap<i64, Preference> {
        list.iter()
            .map(|&(lease, priority, balance)| (lease, Preference { priority, balance }))
            .collect()
    }

    #[test]
    fn a_preference_reads_back() {
        for p in [
            Preference {
                priority: 5,
                balance: false,
            },
            Preference {
                priority: -3,
                balance: true,
            },
        ] {
            assert_eq!(Preference::decode(p.encode().as_bytes()), Some(p));
        }
        for value in [&b""[..], b"x", b"5 x", b"5 balance x", b"\xff"] {
            assert_eq!(Preference::decode(value), None, "{value:?}");
        }
    }

    #[test]
    fn the_highest_priority_leads_and_the_first_of_them_without_balance() {
        let queue = [
            candidate(1, "a", 5),
            candidate(2, "b", 7),
            candidate(3, "c", 9),
        ];
        assert_eq!(preferred("n", &queue, &HashMap::new()), None);
        let higher = prefs(&[(3, 5, false)]);
        assert_eq!(
            preferred("n", &queue, &higher).map(|c| c.id.as_str()),
            Some("c")
        );
        // Two of the highest: the first in line of them.
        let two = prefs(&[(2, 5, false), (3, 5, false)]);
        assert_eq!(
            preferred("n", &queue, &two).map(|c| c.id.as_str()),
            Some("b")
        );
        // The leader is of the highest: it stays.
        let leader = prefs(&[(1, 5, false), (3, 5, false)]);
        assert_eq!(preferred("n", &queue, &leader), None);
        // A negative priority is outranked by the default.
        let negative = prefs(&[(1, -1, false)]);
        assert_eq!(
            preferred("n", &queue, &negative).map(|c| c.id.as_str()),
            Some("b")
        );
    }

    #[test]
    fn balancing_picks_the_highest_weight_and_only_balancing_leaders_yield_to_it() {
        let queue = [
            candidate(1, "a", 5),
            candidate(2, "b", 7),
            candidate(3, "c", 9),
        ];
        let all = prefs(&[(1, 0, true), (2, 0, true), (3, 0, true)]);
        let best = ["a", "b", "c"]
            .into_iter()
            .max_by_key(|id| weight("n", id))
            .unwrap_or("a");
        let expected = (best != "a").then_some(best);
        assert_eq!(
            preferred("n", &queue, &all).map(|c| c.id.as_str()),
            expected
        );
        // A leader that does not balance stays, whatever the others weigh.
        let leader_plain = prefs(&[(2, 0, true), (3, 0, true)]);
        assert_eq!(preferred("n", &queue, &leader_plain), None);
        // Priority first: a balancing leader outranked goes to the best of the highest.
        let outranked = prefs(&[(1, 0, true), (2, 1, true), (3, 1, true)]);
        let best_of_two = ["b", "c"]
            .into_iter()
            .max_by_key(|id| weight("n", id))
            .unwrap_or("b");
        assert_eq!(
            preferred("n", &queue, &outranked).map(|c| c.id.as_str()),
            Some(best_of_two)
        );
    }

    #[test]
    fn whoever_is_preferred_stays_once_leading() {
        // After handing over, the new leader is first in line: the choice must keep it.
        let ids = ["a", "b", "c", "d"];
        for name in ["build", "cron", "x", "y", "z"] {
            let mut queue: Vec<Candidate> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| candidate(i as i64 + 1, id, i as i64 * 2 + 5))
                .collect();
            let all = prefs(&[(1, 0, true), (2, 0, true), (3, 0, true), (4, 0, true)]);
            if let Some(target) = preferred(name, &queue, &all).cloned() {
                queue.retain(|c| c.key != target.key);
                queue.insert(0, target);
            }
            assert_eq!(preferred(name, &queue, &all), None, "{name}");
        }
    }

    #[test]
    fn weights_spread_names_evenly() {
        let lockers = ["host-1", "host-2", "host-3", "host-4"];
        let mut counts = [0usize; 4];
        for n in 0..4000 {
            let name = format!("job-{n}");
            let (best, _) = lockers
                .iter()
                .enumerate()
                .max_by_key(|(_, id)| weight(&name, id))
                .unwrap_or((0, &"host-1"));
            counts[best] += 1;
        }
        for count in counts {
            assert!((800..=1200).contains(&count), "{counts:?}");
        }
    }
}
