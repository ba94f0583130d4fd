//! Where candidates stand: read for one election on its own, or, when thousands of elections of
//! a locker look at once, for all of them in one paged read of the whole prefix.
//!
//! Thousands look at once after a mass change: another locker with as many names closed, and
//! its lease revoke woke every successor here. Checked one by one (in batched transactions), a
//! takeover of 100 000 names got through about 14 000 names a second on one etcd; the prefix
//! holds only a few keys per name, and reading it whole, pinned to one revision, answers every
//! one of them from a single consistent snapshot. A lone check (the common case: one handoff)
//! goes out at once, as before, through the batcher.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use etcd_client::{KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::batch::Batcher;
use crate::cluster::{Cluster, Failure};
use crate::events::EventSink;
use crate::keys::{self, LeaderInfo};
use crate::util::changed;

/// Where a candidate stands, as of one consistent read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Our key is the lowest: `token` is its create revision.
    Leader { token: i64 },
    /// Keys with lower create revisions exist; the lowest holds `leader`'s id. `ahead`: the only
    /// one, where the read told.
    Waiting {
        revision: i64,
        leader: LeaderInfo,
        ahead: Option<Ahead>,
    },
    /// Our key is gone, or no longer bound to our lease.
    Gone,
}

/// The one candidate ahead of a waiting one, as a read found it. No key created later can get
/// ahead, so once the watch shows this key deleted, with no other change of the election after
/// that read (the watcher keeps its revision, see `Watcher::read_next_in_line`), the waiting one
/// leads: that is what a read at the deletion's revision would tell, known without making it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ahead {
    /// The lease in the key's last part, as the watch tells deleted keys apart. (Never 0, which
    /// keeps an election's `Option<Ahead>` as small as this.)
    pub lease: std::num::NonZeroI64,
}

/// Where the candidate with `key` under `lease` stands, given that key as read (`own`) and the
/// first two created keys of its election (`lowest`, `next`), all from one snapshot.
fn standing(
    key: &str,
    lease: i64,
    own: Option<&KeyValue>,
    lowest: Option<&KeyValue>,
    next: Option<&KeyValue>,
) -> Standing {
    let Some(own) = own else {
        return Standing::Gone;
    };
    if own.key() != key.as_bytes() || own.lease() != lease {
        return Standing::Gone;
    }
    match lowest {
        Some(first) if first.key() == own.key() => Standing::Leader {
            token: own.create_revision(),
        },
        Some(first) => {
            let next_in_line = next.is_some_and(|kv| kv.key() == own.key());
            let ahead = keys::candidate_lease(first.key())
                .and_then(std::num::NonZeroI64::new)
                .filter(|_| next_in_line)
                .map(|lease| Ahead { lease });
            Standing::Waiting {
                revision: own.create_revision(),
                leader: LeaderInfo::of(first),
                ahead,
            }
        }
        // Our key exists, so the range cannot be empty; treat it as "not first" to be safe.
        None => Standing::Waiting {
            revision: own.create_revision(),
            leader: LeaderInfo {
                id: String::new(),
                token: 0,
            },
            ahead: None,
        },
    }
}

/// Where a candidate stands after a transaction whose last two reads were its own key and the
/// first two created keys of its election (a campaign, or a check).
pub fn standing_after(key: &str, lease: i64, response: &TxnResponse) -> Standing {
    let gets: Vec<_> = response
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        })
        .collect();
    let [own, first] = gets.as_slice() else {
        return Standing::Gone;
    };
    let first = first.kvs();
    standing(key, lease, own.kvs().first(), first.first(), first.get(1))
}

/// Below this many elections looking at once, each reads on its own.
const SURVEY_MIN: usize = 1000;
/// ... and below this share of the locker's names (the read covers all of them, and the keys of
/// other lockers' names too).
const SURVEY_MIN_SHARE: usize = 8;
/// Keys per page of a survey.
const SURVEY_PAGE: i64 = 10_000;
/// Parts of a survey read side by side.
const SURVEY_PARTS: usize = 4;
/// A flood of checks has ended when none came for this long.
const FLOOD_QUIET: std::time::Duration = std::time::Duration::from_millis(5);
/// Checks in flight on their own: enough to fill most of the batcher's batches.
const MAX_ALONE: usize = 512;

struct Ask {
    name: Arc<str>,
    /// Our candidate key.
    key: String,
    lease: i64,
    /// Where it stands, and the revision it was read at.
    reply: oneshot::Sender<Result<(Standing, i64), Failure>>,
}

pub struct Surveyor {
    queue: mpsc::UnboundedSender<Ask>,
}

impl Surveyor {
    /// Starts the task that answers checks; it ends when `stop` is set. `names` tells how many
    /// names the locker has.
    pub fn start(
        prefix: String,
        cluster: Arc<Cluster>,
        batcher: Arc<Batcher>,
        names: impl Fn() -> usize + Send + 'static,
        events: EventSink,
        runtime: &tokio::runtime::Handle,
        stop: watch::Receiver<bool>,
    ) -> (Surveyor, tokio::task::JoinHandle<()>) {
        let (queue, pending) = mpsc::unbounded_channel();
        let task = runtime.spawn(run(prefix, cluster, batcher, names, events, pending, stop));
        (Surveyor { queue }, task)
    }

    /// Where the candidate of election `name` with `key` under `lease` stands, read without
    /// writing, and the revision it was read at.
    pub async fn check(
        &self,
        name: &str,
        key: String,
        lease: i64,
    ) -> Result<(Standing, i64), Failure> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Ask {
                name: Arc::from(name),
                key,
                lease,
                reply,
            })
            .map_err(|_| Failure::closed())?;
        answer.await.unwrap_or_else(|_| Err(Failure::closed()))
    }
}

async fn run(
    prefix: String,
    cluster: Arc<Cluster>,
    batcher: Arc<Batcher>,
    names: impl Fn() -> usize,
    events: EventSink,
    mut pending: mpsc::UnboundedReceiver<Ask>,
    mut stop: watch::Receiver<bool>,
) {
    let prefix: Arc<str> = Arc::from(prefix);
    let mut alone = JoinSet::new();
    let mut surveys = JoinSet::new();
    // Checks not sent yet: elections woken by one mass change arrive one by one, each as soon as
    // its task runs, so they are held while the batcher is full (or a survey runs), and then
    // answered together.
    let mut held: Vec<Ask> = Vec::new();
    loop {
        tokio::select! {
            next = pending.recv() => match next {
                Some(ask) => held.push(ask),
                None => break,
            },
            Some(_) = alone.join_next(), if !alone.is_empty() => {}
            Some(_) = surveys.join_next(), if !surveys.is_empty() => {}
            _ = changed(&mut stop) => break,
        }
        while let Ok(next) = pending.try_recv() {
            held.push(next);
        }
        if !surveys.is_empty() {
            continue;
        }
        held.retain(|ask| !ask.reply.is_closed());
        if held.len() >= SURVEY_MIN && held.len() * SURVEY_MIN_SHARE >= names() {
            // A flood: let it end first, so that one read answers all of it (each read covers
            // the keys of every name between the first and the last one asked).
            loop {
                tokio::select! {
                    next = pending.recv() => match next {
                        Some(ask) => held.push(ask),
                        None => break,
                    },
                    _ = tokio::time::sleep(FLOOD_QUIET) => break,
                    // The locker is closing: its close waits for this task to end.
                    _ = changed(&mut stop) => {
                        alone.abort_all();
                        return;
                    }
                }
                while let Ok(next) = pending.try_recv() {
                    held.push(next);
                }
            }
            let cluster = cluster.clone();
            let prefix = prefix.clone();
            let asks = std::mem::take(&mut held);
            let events = events.clone();
            surveys.spawn(async move {
                let started = std::time::Instant::now();
                let checks = asks.len();
                let keys = survey(prefix, cluster, asks).await;
                events.log(|| {
                    format!(
                        "survey: {checks} checks answered from {keys} keys read in {} ms",
                        started.elapsed().as_millis()
                    )
                });
            });
            continue;
        }
        let room = MAX_ALONE.saturating_sub(alone.len()).min(held.len());
        for ask in held.drain(..room) {
            alone.spawn(check_alone(prefix.clone(), batcher.clone(), ask));
        }
    }
    alone.abort_all();
    surveys.abort_all();
}

async fn check_alone(prefix: Arc<str>, batcher: Arc<Batcher>, mut ask: Ask) {
    let txn = Txn::new().and_then([
        TxnOp::get(ask.key.clone(), None),
        keys::first_two_created_op(&keys::candidates(&prefix, &ask.name)),
    ]);
    let result = tokio::select! {
        r = batcher.txn_at(&ask.name, txn) => r,
        // Nobody waits any more: dropping the transaction takes it out of the batcher's queue.
        _ = ask.reply.closed() => return,
    };
    let _ = ask.reply.send(
        result.map(|(response, read_at)| (standing_after(&ask.key, ask.lease, &response), read_at)),
    );
}

/// For each election asked about: its first two created candidates, and the asking candidate's
/// key.
#[derive(Default)]
struct Seen {
    lowest: Option<KeyValue>,
    next: Option<KeyValue>,
    own: Option<KeyValue>,
}

/// Answers `asks` from reads of the span of keys their names cover. The names, in key order, are
/// cut into parts read side by side (etcd serves them on several cores); each part is read in
/// pages pinned to the revision of its first, so it is one consistent snapshot of its names.
/// Every read is linearizable and starts after its asks arrived, so each answer is as fresh as a
/// check of its own would have been.
async fn survey(prefix: Arc<str>, cluster: Arc<Cluster>, mut asks: Vec<Ask>) -> usize {
    asks.sort_by(|a, b| candidates_order(&a.name, &b.name));
    let per_part = asks.len().div_ceil(SURVEY_PARTS);
    let mut parts = JoinSet::new();
    while !asks.is_empty() {
        let rest = asks.split_off(per_part.min(asks.len()));
        let part = std::mem::replace(&mut asks, rest);
        parts.spawn(survey_part(prefix.clone(), cluster.clone(), part));
    }
    let mut keys = 0;
    while let Some(read) = parts.join_next().await {
        keys += read.unwrap_or(0);
    }
    keys
}

/// The order of the candidates' ranges `<prefix>/<name>/` of two names in etcd's key order, which
/// is not the names' own order: "a-b" sorts before "a" there, because '-' sorts before '/'.
fn candidates_order(a: &str, b: &str) -> std::cmp::Ordering {
    let slash = || std::iter::once(b'/');
    a.bytes().chain(slash()).cmp(b.bytes().chain(slash()))
}

/// Answers one part; returns how many keys it read.
async fn survey_part(prefix: Arc<str>, cluster: Arc<Cluster>, asks: Vec<Ask>) -> usize {
    // The span from the lowest of the names' candidates' ranges to the end of the highest. (The
    // asks come sorted so that the parts' spans do not overlap; the span holds every name of
    // the part whatever the order.)
    let ranges = asks.iter().map(|ask| keys::candidates(&prefix, &ask.name));
    let (Some(from), Some(last)) = (ranges.clone().min(), ranges.max()) else {
        return 0;
    };
    let all = keys::all(&prefix);
    let from = from.into_bytes();
    let end = keys::range_end(&last);
    let mut seen: HashMap<Arc<str>, Seen> = asks
        .iter()
        .map(|ask| (ask.name.clone(), Seen::default()))
        .collect();
    let own_keys: HashSet<&[u8]> = asks.iter().map(|a| a.key.as_bytes()).collect();
    let mut read = 0;
    let outcome = cluster
        .read_pages(from, end, SURVEY_PAGE, |kv| {
            read += 1;
            let Some(name) = keys::election_of(&all, kv.key()) else {
                return;
            };
            let Some(entry) = seen.get_mut(name) else {
                return;
            };
            let before = |seen: &Option<KeyValue>| {
                seen.as_ref()
                    .is_none_or(|s| kv.create_revision() < s.create_revision())
            };
            if before(&entry.lowest) {
                entry.next = entry.lowest.replace(kv.clone());
            } else if before(&entry.next) {
                entry.next = Some(kv.clone());
            }
            if own_keys.contains(kv.key()) {
                entry.own = Some(kv.clone());
            }
        })
        .await;
    drop(own_keys);
    for ask in asks {
        let answer = match &outcome {
            Ok(read_at) => {
                let entry = seen.get(&ask.name);
                // Only a key equal to ours is ours (an ask with a stale lease has another key).
                let own = entry
                    .and_then(|e| e.own.as_ref())
                    .filter(|kv| kv.key() == ask.key.as_bytes());
                let standing = standing(
                    &ask.key,
                    ask.lease,
                    own,
                    entry.and_then(|e| e.lowest.as_ref()),
                    entry.and_then(|e| e.next.as_ref()),
                );
                Ok((standing, *read_at))
            }
            Err(failure) => Err(failure.clone()),
        };
        let _ = ask.reply.send(answer);
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_as_their_candidates_keys_do() {
        // Names hold no '/'; "a" and "a-b" are the pair whose order differs.
        let mut names = ["a", "a-b", "a0", "a.b", "ab", "b"];
        names.sort_by(|a, b| candidates_order(a, b));
        let keys: Vec<String> = names.iter().map(|n| keys::candidates("p", n)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(names[..3], ["a-b", "a.b", "a"]);
    }
}
