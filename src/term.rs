//! A leader's term as anyone can read it: who leads, with which fencing token, and since when.
//!
//! etcd keeps no timestamps, so a leader publishes the wall-clock time of its election itself, in
//! a term record at `<prefix>/<name>`: next to the candidates' range `<prefix>/<name>/`, never
//! inside it (names hold no '/'), so no election mistakes it for a candidate. The record is bound
//! to the leader's lease and written only while the leader's key of that term still exists: a
//! late write from a leader that has lost its key fails its guard instead of overwriting its
//! successor's record. A reader trusts a record only when it names the token of the key that
//! leads; until the new leader's record is written, the time is unknown, never the predecessor's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::batch::Batcher;
use crate::cluster::{Cluster, Failure};
use crate::events::EventSink;
use crate::events::Term;
use crate::keys::{self, Candidate, Marker};
use crate::rank::{self, Preference};
use crate::retry::Backoff;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// "<token> <since ms>": readable with `etcdctl get`.
fn encode(token: i64, since_ms: i64) -> String {
    format!("{token} {since_ms}")
}

fn decode(value: &[u8]) -> Option<(i64, i64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (token, since) = text.split_once(' ')?;
    Some((token.parse().ok()?, since.parse().ok()?))
}

/// The election time a record says, if it is the record of the term of `token`.
pub fn since_of(record: &[u8], token: i64) -> Option<i64> {
    decode(record)
        .filter(|(published, _)| *published == token)
        .map(|(_, since)| since)
}

/// A term whose record is to be written: the key `own_key` of the election `name`, created at
/// revision `token` under `lease`.
pub struct Publication {
    pub name: String,
    pub own_key: String,
    pub token: i64,
    pub lease: i64,
    pub since_ms: i64,
    /// The election's "leading in lease" flag: retries stop once the term is over.
    pub leading: Arc<AtomicI64>,
}

/// Hands term records to the locker's publishing task.
pub struct Publisher {
    queue: mpsc::UnboundedSender<Publication>,
}

/// Records written at once: a mass election (thousands of names) queues small publications
/// instead of holding thousands of requests in flight.
const CONCURRENT_WRITES: usize = 64;

impl Publisher {
    pub fn new() -> (Publisher, mpsc::UnboundedReceiver<Publication>) {
        let (queue, pending) = mpsc::unbounded_channel();
        (Publisher { queue }, pending)
    }

    pub fn publish(&self, publication: Publication) {
        // Fails only once the publishing task ended, when the locker closes: nothing to write.
        let _ = self.queue.send(publication);
    }
}

/// Writes queued records, a few at a time, until the locker closes.
/// What writing records needs.
#[derive(Clone)]
pub struct Writer {
    pub prefix: String,
    pub batcher: Arc<Batcher>,
    pub events: EventSink,
}

pub async fn run(
    writer: Writer,
    mut closing: watch::Receiver<bool>,
    mut pending: mpsc::UnboundedReceiver<Publication>,
) {
    let mut writing = JoinSet::new();
    let watching = closing.clone();
    loop {
        tokio::select! {
            Some(publication) = pending.recv(), if writing.len() < CONCURRENT_WRITES => {
                writing.spawn(write(writer.clone(), watching.clone(), publication));
            }
            Some(_) = writing.join_next(), if !writing.is_empty() => {}
            _ = closing.wait_for(|c| *c) => return,
            else => return,
        }
    }
}

/// Writes one record if the key of its term still exists. Retries while etcd is unavailable and
/// the term may still be ours (a retry for a term that has ended fails its guard); gives up when
/// etcd refuses, or the lease is gone.
async fn write(writer: Writer, closing: watch::Receiver<bool>, publication: Publication) {
    let Publication {
        name,
        own_key,
        token,
        lease,
        since_ms,
        leading,
    } = publication;
    let txn = Txn::new()
        .when([Compare::create_revision(own_key, CompareOp::Equal, token)])
        .and_then([TxnOp::put(
            keys::record(&writer.prefix, &name),
            encode(token, since_ms),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let mut backoff = Backoff::rounds();
    loop {
        let failure = match writer.batcher.txn(&name, txn.clone()).await {
            // Also when the guard failed: the term is over, and so is its record.
            Ok(_) => {
                writer
                    .events
                    .log(|| format!("{name}: published term {token}"));
                return;
            }
            Err(failure) => failure,
        };
        let retry = matches!(failure, Failure::Unavailable(_))
            && leading.load(Ordering::SeqCst) == lease
            && !*closing.borrow();
        writer.events.log(|| {
            format!(
                "{name}: term record not written{}: {}",
                if retry { ", retrying" } else { "" },
                failure.message()
            )
        });
        if !retry {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Deletes the record if `lease` wrote it: a record of ours is ours to remove when we leave, and
/// a successor's (another lease) is left alone. Meant to be nested in a resign.
pub fn withdraw(record: &str, lease: i64) -> TxnOp {
    TxnOp::txn(
        Txn::new()
            .when([Compare::lease(record, CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(record, None)]),
    )
}

/// What one election's keys say of its term: its candidates, their preferences, the record, a
/// handover marker.
#[derive(Default)]
struct Queue {
    candidates: Vec<Candidate>,
    preferences: HashMap<i64, Preference>,
    record: Option<(i64, i64)>,
    marker: Option<Marker>,
}

impl Queue {
    fn candidate(&mut self, key: &[u8], value: &[u8], create_revision: i64) {
        self.candidates.push(Candidate {
            key: key.to_vec(),
            id: String::from_utf8_lossy(value).into_owned(),
            revision: create_revision,
        });
    }

    /// Who leads, since when, with which priority; who should lead instead; to whom it hands over.
    fn term(mut self, name: &str) -> Option<Term> {
        self.candidates.sort_by_key(|c| c.revision);
        let first = self.candidates.first()?;
        let token = first.revision;
        let priority = keys::candidate_lease(&first.key)
            .and_then(|lease| self.preferences.get(&lease))
            .map_or(0, |p| p.priority);
        let preferred =
            rank::preferred(name, &self.candidates, &self.preferences).map(|c| c.id.clone());
        let handover = self
            .marker
            .filter(|m| m.leader == token)
            .and_then(|m| self.candidates.iter().find(|c| c.revision == m.target))
            .map(|c| c.id.clone());
        Some(Term {
            leader: first.leader(),
            since_ms: self
                .record
                .filter(|(published, _)| *published == token)
                .map(|(_, since)| since),
            priority,
            preferred,
            handover,
        })
    }
}

/// Reads who leads `name`, since when, and what its candidates prefer, in one consistent read.
pub async fn read(batcher: &Batcher, prefix: &str, name: &str) -> Result<Option<Term>, Failure> {
    let txn = Txn::new().and_then([
        TxnOp::get(
            keys::candidates(prefix, name),
            Some(GetOptions::new().with_prefix()),
        ),
        TxnOp::get(keys::record(prefix, name), None),
        TxnOp::get(
            format!("{}{name}/", keys::preferences(prefix)),
            Some(GetOptions::new().with_prefix()),
        ),
        TxnOp::get(keys::handover(prefix, name), None),
    ]);
    let response = batcher.txn(name, txn).await?;
    let mut gets = response.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    });
    let (Some(candidates), Some(record), Some(preferences), Some(marker)) =
        (gets.next(), gets.next(), gets.next(), gets.next())
    else {
        return Err(Failure::Unavailable(
            "etcd answered the read without its results".into(),
        ));
    };
    let all = keys::all(prefix);
    let mut queue = Queue::default();
    for kv in candidates.kvs() {
        queue.candidate(kv.key(), kv.value(), kv.create_revision());
    }
    queue.record = record.kvs().first().and_then(|kv| decode(kv.value()));
    for kv in preferences.kvs() {
        if let (Some((_, lease)), Some(p)) = (
            keys::prefer_of(&all, kv.key()),
            Preference::decode(kv.value()),
        ) {
            queue.preferences.insert(lease, p);
        }
    }
    queue.marker = marker
        .kvs()
        .first()
        .and_then(|kv| Marker::decode(kv.value()));
    Ok(queue.term(name))
}

/// Keys read per request by `list`: enough to be quick, and well inside the client's 4 MB
/// message limit even with long prefixes.
const LIST_PAGE: i64 = 1000;

/// The election of every key under `all`, in key order, as `list` sorts them out.
#[derive(Default)]
struct Listing {
    names: BTreeMap<String, Queue>,
}

impl Listing {
    fn queue(&mut self, name: &str) -> &mut Queue {
        self.names.entry(name.to_string()).or_default()
    }

    fn add(&mut self, all: &str, key: &[u8], value: &[u8], create_revision: i64) {
        if let Some(name) = keys::election_of(all, key) {
            self.queue(name).candidate(key, value, create_revision);
        } else if let Some(name) = keys::record_of(all, key) {
            self.queue(name).record = decode(value);
        } else if let Some((name, lease)) = keys::prefer_of(all, key) {
            if let Some(p) = Preference::decode(value) {
                self.queue(name).preferences.insert(lease, p);
            }
        } else if let Some(name) = keys::handover_of(all, key) {
            self.queue(name).marker = Marker::decode(value);
        }
    }

    /// The elections that have a leader, by name, each with the time of its record when that
    /// record is the leader's own.
    fn terms(self) -> Vec<(String, Term)> {
        self.names
            .into_iter()
            .filter_map(|(name, queue)| {
                let term = queue.term(&name)?;
                Some((name, term))
            })
            .collect()
    }
}

/// Every election under `prefix` that has a leader, by name: one consistent snapshot, read in
/// pages pinned to the revision of the first.
pub async fn list(cluster: &Cluster, prefix: &str) -> Result<Vec<(String, Term)>, Failure> {
    let all = keys::all(prefix);
    let end = keys::range_end(&all);
    let mut listing = Listing::default();
    cluster
        .read_pages(all.clone().into_bytes(), end, LIST_PAGE, |kv| {
            listing.add(&all, kv.key(), kv.value(), kv.create_revision());
        })
        .await?;
    Ok(listing.terms())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::LeaderInfo;

    #[test]
    fn a_record_reads_back() {
        assert_eq!(
            decode(encode(42, 1_764_144_000_123).as_bytes()),
            Some((42, 1_764_144_000_123))
        );
    }

    #[test]
    fn a_listing_finds_each_leader_and_trusts_only_its_own_record() {
        let mut listing = Listing::default();
        // Key order, as etcd returns them: a record sorts before its candidates.
        listing.add("p/", b"p/a", b"7 1000", 0);
        listing.add("p/", b"p/a/1f", b"late", 9);
        listing.add("p/", b"p/a/2e", b"first", 7);
        listing.add("p/", b"p/b", b"3 2000", 0);
        listing.add("p/", b"p/b/4", b"leader", 5);
        listing.add("p/", b"p/c", b"8 3000", 0); // a record without candidates: nobody leads
        listing.add("p/", b"p/d/x/y", b"foreign", 4);
        let terms = listing.terms();
        let names: Vec<&str> = terms.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "d/x"]);
        assert_eq!(
            terms[0].1.leader,
            LeaderInfo {
                id: "first".into(),
                token: 7
            }
        );
        assert_eq!(terms[0].1.since_ms, Some(1000));
        // b's record names token 3, its leader has token 5: the time is unknown.
        assert_eq!(terms[1].1.since_ms, None);
        assert_eq!((terms[0].1.priority, &terms[0].1.preferred), (0, &None));
    }

    #[test]
    fn a_listing_shows_priorities_the_preferred_candidate_and_a_handover() {
        let mut listing = Listing::default();
        listing.add("p/", b"p//handover/a", b"7 9", 0);
        listing.add("p/", b"p//prefer/a/1e", b"5", 0);
        listing.add("p/", b"p//prefer/a/2e", b"2", 0);
        listing.add("p/", b"p/a/1e", b"later", 9);
        listing.add("p/", b"p/a/2e", b"first", 7);
        listing.add("p/", b"p/b/3", b"alone", 4);
        listing.add("p/", b"p//handover/b", b"3 4", 0); // not b's leader's token
        let terms = listing.terms();
        let a = &terms[0].1;
        assert_eq!((a.leader.id.as_str(), a.priority), ("first", 2));
        assert_eq!(a.preferred.as_deref(), Some("later"));
        assert_eq!(a.handover.as_deref(), Some("later"));
        let b = &terms[1].1;
        assert_eq!((b.priority, &b.preferred, &b.handover), (0, &None, &None));
    }

    #[test]
    fn a_foreign_value_is_no_record() {
        for value in [&b""[..], b"42", b"42 x", b"x 1", b"\xff\xfe", b"1 2 3"] {
            assert_eq!(decode(value), None, "{value:?}");
        }
    }
}
