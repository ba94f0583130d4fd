//! A leader's term as anyone can read it: who leads, with which fencing token, and since when.
//!
//! etcd keeps no timestamps, so a leader publishes the wall-clock time of its election itself, in
//! a term record. One record per name would double the keys of a locker, and the keys its lease's
//! revoke deletes when it closes (at 100 000 names that revoke is most of a takeover's time); so
//! a locker keeps one record per bucket of names (see `keys::term_bucket`) at
//! `<prefix>//terms/<bucket>/<lease hex>`, bound to its lease and written by nobody else. Its value
//! lists the terms that locker's leaders began there: name, token, time.
//!
//! A record is rewritten as terms begin and end, a moment after the fact and without a guard: a
//! line can outlive its term for a while (a resign, a key deleted from outside). So a reader
//! trusts a line only when it names the token of the key that leads the name now; tokens are create
//! revisions, never reused, so an old line never passes for a newer term. Until the new leader's
//! line is written, the time is unknown, never the predecessor's.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::batch::Batcher;
use crate::cluster::{Cluster, Failure};
use crate::events::EventSink;
use crate::events::Term;
use crate::keys::{self, Candidate, Marker};
use crate::rank::{self, Preference};
use crate::retry::Backoff;
use crate::session::Session;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A term as a record lists it: its token and when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Began {
    token: i64,
    since_ms: i64,
}

/// One line per term, "<token> <since ms> <name>", readable with `etcdctl get`; backslashes and
/// line breaks in a name are escaped, so any name fits on its line.
fn encode(terms: &BTreeMap<String, Began>) -> String {
    let mut value = String::new();
    for (name, began) in terms {
        value.push_str(&format!("{} {} ", began.token, began.since_ms));
        for c in name.chars() {
            match c {
                '\\' => value.push_str("\\\\"),
                '\n' => value.push_str("\\n"),
                '\r' => value.push_str("\\r"),
                c => value.push(c),
            }
        }
        value.push('\n');
    }
    value
}

/// The terms a record lists; lines that are not a term's are skipped.
fn decode(value: &[u8]) -> impl Iterator<Item = (String, Began)> + '_ {
    value.split(|b| *b == b'\n').filter_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let (token, rest) = line.split_once(' ')?;
        let (since, name) = rest.split_once(' ')?;
        let began = Began {
            token: token.parse().ok()?,
            since_ms: since.parse().ok()?,
        };
        let mut unescaped = String::with_capacity(name.len());
        let mut chars = name.chars();
        while let Some(c) = chars.next() {
            unescaped.push(if c == '\\' {
                match chars.next()? {
                    'n' => '\n',
                    'r' => '\r',
                    '\\' => '\\',
                    _ => return None,
                }
            } else {
                c
            });
        }
        (!unescaped.is_empty()).then_some((unescaped, began))
    })
}

/// When the term of `token` in `name` began, if one of `records` (a bucket's, as read) says.
pub fn since_in<'r>(
    records: impl IntoIterator<Item = &'r [u8]>,
    name: &str,
    token: i64,
) -> Option<i64> {
    records.into_iter().find_map(|value| {
        decode(value)
            .find(|(listed, began)| listed == name && began.token == token)
            .map(|(_, began)| began.since_ms)
    })
}

/// What changes a locker's records: a term of one of its leaders began, or ended.
pub enum Change {
    Began {
        name: String,
        token: i64,
        lease: i64,
        since_ms: i64,
    },
    Ended {
        name: String,
        token: i64,
    },
}

/// Hands the changes of terms to the locker's record-writing task.
pub struct Publisher {
    queue: mpsc::UnboundedSender<Change>,
}

impl Publisher {
    pub fn new() -> (Publisher, mpsc::UnboundedReceiver<Change>) {
        let (queue, pending) = mpsc::unbounded_channel();
        (Publisher { queue }, pending)
    }

    /// The term of `token` in `name`, under `lease`, began at `since_ms`.
    pub fn began(&self, name: &str, token: i64, lease: i64, since_ms: i64) {
        // Fails only once the writing task ended, when the locker closes: nothing to write.
        let _ = self.queue.send(Change::Began {
            name: name.to_string(),
            token,
            lease,
            since_ms,
        });
    }

    /// The term of `token` in `name` ended (a resign, a handover): its line goes.
    pub fn ended(&self, name: &str, token: i64) {
        let _ = self.queue.send(Change::Ended {
            name: name.to_string(),
            token,
        });
    }
}

/// What the locker's records should say, and which of them etcd does not have yet.
#[derive(Default)]
struct Records {
    /// The lease of the terms below: a term under a newer lease means the older one is gone,
    /// and its records with it.
    lease: i64,
    buckets: HashMap<u32, BTreeMap<String, Began>>,
    /// Changed since last written.
    dirty: BTreeSet<u32>,
    /// Being written: a bucket is written by one request at a time, so that an older value can
    /// never land after a newer one.
    writing: HashSet<u32>,
}

/// A record to write: its bucket, its lease, and its value (`None`: no term left, delete it).
struct Write {
    bucket: u32,
    lease: i64,
    value: Option<String>,
}

impl Records {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Began {
                name,
                token,
                lease,
                since_ms,
            } => {
                if lease != self.lease {
                    self.lease = lease;
                    self.buckets.clear();
                    self.dirty.clear();
                }
                let bucket = keys::term_bucket(&name);
                self.buckets
                    .entry(bucket)
                    .or_default()
                    .insert(name, Began { token, since_ms });
                self.dirty.insert(bucket);
            }
            Change::Ended { name, token } => {
                let bucket = keys::term_bucket(&name);
                let Some(terms) = self.buckets.get_mut(&bucket) else {
                    return;
                };
                // Only that term's line: a later term of the name may have begun meanwhile.
                if terms.get(&name).is_some_and(|b| b.token == token) {
                    terms.remove(&name);
                    self.dirty.insert(bucket);
                }
            }
        }
    }

    /// The next record to write, if one changed and is not being written.
    fn next_write(&mut self) -> Option<Write> {
        let bucket = *self.dirty.iter().find(|b| !self.writing.contains(b))?;
        self.dirty.remove(&bucket);
        self.writing.insert(bucket);
        let terms = self.buckets.get(&bucket).filter(|t| !t.is_empty());
        let value = terms.map(encode);
        if terms.is_none() {
            self.buckets.remove(&bucket);
        }
        Some(Write {
            bucket,
            lease: self.lease,
            value,
        })
    }

    fn written(&mut self, bucket: u32) {
        self.writing.remove(&bucket);
    }
}

/// Records written at once: a mass election (thousands of names) changes many buckets at once;
/// each write takes the bucket's value as it is when it goes, so the changes meanwhile gather.
const CONCURRENT_WRITES: usize = 16;

/// What writing records needs.
#[derive(Clone)]
pub struct Writer {
    pub prefix: String,
    pub batcher: Arc<Batcher>,
    pub session: Arc<Session>,
    pub events: EventSink,
}

/// Keeps the records in etcd up to date with the terms of this locker's leaders, until the
/// locker closes (its lease's revoke then deletes them).
pub async fn run(
    writer: Writer,
    mut closing: watch::Receiver<bool>,
    mut changes: mpsc::UnboundedReceiver<Change>,
) {
    let mut records = Records::default();
    let mut writing = JoinSet::new();
    let watching = closing.clone();
    loop {
        while writing.len() < CONCURRENT_WRITES {
            let Some(next) = records.next_write() else {
                break;
            };
            writing.spawn(write(writer.clone(), watching.clone(), next));
        }
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { return };
                records.apply(change);
                // Everything waiting goes into the same writes.
                while let Ok(change) = changes.try_recv() {
                    records.apply(change);
                }
            }
            Some(done) = writing.join_next(), if !writing.is_empty() => {
                if let Ok(bucket) = done {
                    records.written(bucket);
                }
            }
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}

/// Writes one record. Retries while etcd is unavailable and the lease is still ours; gives up when
/// etcd refuses, or the lease is gone (and its records with it).
async fn write(writer: Writer, closing: watch::Receiver<bool>, write: Write) -> u32 {
    let Write {
        bucket,
        lease,
        value,
    } = write;
    let key = keys::term_record(&writer.prefix, bucket, lease);
    let terms = value.as_deref().map_or(0, |v| v.lines().count());
    let txn = Txn::new().and_then([match value {
        Some(value) => TxnOp::put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        ),
        None => TxnOp::delete(key.as_str(), None),
    }]);
    // Names hold no '/': no election's transaction shares a batch slot with this one.
    let slot = format!("/terms/{bucket:03x}");
    let mut backoff = Backoff::rounds();
    loop {
        let failure = match writer.batcher.txn(&slot, txn.clone()).await {
            Ok(_) => {
                writer
                    .events
                    .log(|| format!("term record {key} written: {terms} terms"));
                return bucket;
            }
            Err(failure) => failure,
        };
        let retry = matches!(failure, Failure::Unavailable(_))
            && writer.session.lease() == Some(lease)
            && !*closing.borrow();
        writer.events.log(|| {
            format!(
                "term record {key} not written{}: {}",
                if retry { ", retrying" } else { "" },
                failure.message()
            )
        });
        if !retry {
            return bucket;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// What one election's keys say of its term: its candidates, their preferences, the record, a
/// handover marker.
#[derive(Default)]
struct Queue {
    candidates: Vec<Candidate>,
    preferences: HashMap<i64, Preference>,
    /// The lines of the name's terms in the records read: the leader's, perhaps, and older ones.
    terms: Vec<Began>,
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
                .terms
                .iter()
                .find(|began| began.token == token)
                .map(|began| began.since_ms),
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
        TxnOp::get(
            keys::term_records(prefix, name),
            Some(GetOptions::new().with_prefix()),
        ),
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
    let (Some(candidates), Some(records), Some(preferences), Some(marker)) =
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
    for kv in records.kvs() {
        queue.terms.extend(
            decode(kv.value())
                .filter(|(listed, _)| listed == name)
                .map(|(_, began)| began),
        );
    }
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
        } else if keys::is_term_record(all, key) {
            for (name, began) in decode(value) {
                self.queue(&name).terms.push(began);
            }
        } else if let Some((name, lease)) = keys::prefer_of(all, key) {
            if let Some(p) = Preference::decode(value) {
                self.queue(name).preferences.insert(lease, p);
            }
        } else if let Some(name) = keys::handover_of(all, key) {
            self.queue(name).marker = Marker::decode(value);
        }
    }

    /// The elections that have a leader, by name, each with the time its record lists for the
    /// leader's term.
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

    fn record(lines: &[(&str, i64, i64)]) -> String {
        encode(
            &lines
                .iter()
                .map(|(name, token, since_ms)| {
                    (
                        name.to_string(),
                        Began {
                            token: *token,
                            since_ms: *since_ms,
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn a_record_reads_back_whatever_the_names() {
        let names = ["build", "a b", "line\nbreak", "back\\slash\\n", "\r", "ü ✓"];
        let lines: Vec<(&str, i64, i64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, 40 + i as i64, 1_764_144_000_123))
            .collect();
        let value = record(&lines);
        assert_eq!(value.lines().count(), names.len(), "{value:?}");
        let mut read: Vec<(String, Began)> = decode(value.as_bytes()).collect();
        read.sort_by_key(|(_, b)| b.token);
        let read: Vec<(&str, i64, i64)> = read
            .iter()
            .map(|(n, b)| (n.as_str(), b.token, b.since_ms))
            .collect();
        assert_eq!(read, lines);
    }

    #[test]
    fn a_reader_takes_only_the_line_of_the_term_asked_for() {
        let old = record(&[("build", 3, 1000), ("deploy", 7, 1500)]);
        let new = record(&[("build", 9, 2000)]);
        let records = [old.as_bytes(), new.as_bytes()];
        assert_eq!(since_in(records, "build", 9), Some(2000));
        assert_eq!(since_in(records, "build", 3), Some(1000));
        assert_eq!(since_in(records, "build", 7), None);
        assert_eq!(since_in(records, "buil", 3), None);
        assert_eq!(since_in(records, "deploy", 7), Some(1500));
    }

    #[test]
    fn a_foreign_value_lists_no_term() {
        for value in [
            &b""[..],
            b"42",
            b"42 x",
            b"x 1 a",
            b"1 2 ",
            b"1 2 a\\x",
            b"1 2 a\\",
            b"\xff\xfe",
        ] {
            assert_eq!(decode(value).count(), 0, "{value:?}");
        }
        // One bad line spoils only itself.
        assert_eq!(decode(b"x\n1 2 a\n").count(), 1);
    }

    fn began(name: &str, token: i64, lease: i64) -> Change {
        Change::Began {
            name: name.into(),
            token,
            lease,
            since_ms: token * 10,
        }
    }

    fn ended(name: &str, token: i64) -> Change {
        Change::Ended {
            name: name.into(),
            token,
        }
    }

    /// Every write there is to do, done.
    fn written(records: &mut Records) {
        while let Some(write) = records.next_write() {
            records.written(write.bucket);
        }
    }

    /// Names of the same bucket, and one of another.
    fn names() -> (String, String, String) {
        let first = "n0".to_string();
        let bucket = keys::term_bucket(&first);
        let same = (1..)
            .map(|i| format!("n{i}"))
            .find(|n| keys::term_bucket(n) == bucket)
            .unwrap_or_default();
        let other = (1..)
            .map(|i| format!("n{i}"))
            .find(|n| keys::term_bucket(n) != bucket)
            .unwrap_or_default();
        (first, same, other)
    }

    #[test]
    fn terms_that_begin_meanwhile_go_into_one_write_of_their_bucket() {
        let (a, b, c) = names();
        let mut records = Records::default();
        records.apply(began(&a, 5, 0x10));
        records.apply(began(&b, 6, 0x10));
        records.apply(began(&c, 7, 0x10));
        let first = records.next_write().expect("a write");
        let second = records.next_write().expect("another write");
        assert!(records.next_write().is_none());
        let (same, other) = if first.bucket == keys::term_bucket(&a) {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(same.lease, 0x10);
        let value = same.value.expect("a value");
        assert_eq!(since_in([value.as_bytes()], &a, 5), Some(50));
        assert_eq!(since_in([value.as_bytes()], &b, 6), Some(60));
        let value = other.value.expect("a value");
        assert_eq!(since_in([value.as_bytes()], &c, 7), Some(70));
    }

    #[test]
    fn a_bucket_is_written_again_only_after_its_write_came_back() {
        let (a, b, _) = names();
        let mut records = Records::default();
        records.apply(began(&a, 5, 0x10));
        let first = records.next_write().expect("a write");
        records.apply(began(&b, 6, 0x10));
        // Its earlier write is still on its way: a second one could overtake it.
        assert!(records.next_write().is_none());
        records.written(first.bucket);
        let second = records
            .next_write()
            .expect("the write of what changed meanwhile");
        let value = second.value.expect("a value");
        assert_eq!(since_in([value.as_bytes()], &a, 5), Some(50));
        assert_eq!(since_in([value.as_bytes()], &b, 6), Some(60));
    }

    #[test]
    fn an_ended_term_leaves_its_record_and_an_empty_record_is_deleted() {
        let (a, b, _) = names();
        let mut records = Records::default();
        records.apply(began(&a, 5, 0x10));
        records.apply(began(&b, 6, 0x10));
        written(&mut records);
        // The end of an earlier term of the name changes nothing.
        records.apply(ended(&a, 4));
        assert!(records.next_write().is_none());
        records.apply(ended(&a, 5));
        let write = records.next_write().expect("a write");
        let value = write.value.expect("b's term is left");
        assert_eq!(since_in([value.as_bytes()], &a, 5), None);
        assert_eq!(since_in([value.as_bytes()], &b, 6), Some(60));
        records.written(write.bucket);
        records.apply(ended(&b, 6));
        assert!(records.next_write().expect("a write").value.is_none());
    }

    #[test]
    fn a_new_lease_starts_the_records_anew() {
        let (a, b, c) = names();
        let mut records = Records::default();
        records.apply(began(&a, 5, 0x10));
        records.apply(began(&c, 6, 0x10));
        written(&mut records);
        records.apply(began(&b, 9, 0x11));
        let write = records.next_write().expect("a write");
        assert!(
            records.next_write().is_none(),
            "c's bucket went with the old lease"
        );
        assert_eq!(write.lease, 0x11);
        let value = write.value.expect("a value");
        assert_eq!(since_in([value.as_bytes()], &b, 9), Some(90));
        assert_eq!(since_in([value.as_bytes()], &a, 5), None);
    }

    #[test]
    fn a_listing_finds_each_leader_and_trusts_only_its_term_line() {
        let mut listing = Listing::default();
        // Key order, as etcd returns them: records sort before every candidate.
        let older = record(&[("b", 3, 2000)]);
        let newer = record(&[("a", 7, 1000), ("c", 8, 3000)]);
        listing.add("p/", b"p//terms/001/1e", older.as_bytes(), 0);
        listing.add("p/", b"p//terms/002/2e", newer.as_bytes(), 0);
        listing.add("p/", b"p/a/1f", b"late", 9);
        listing.add("p/", b"p/a/2e", b"first", 7);
        listing.add("p/", b"p/b/4", b"leader", 5);
        listing.add("p/", b"p/d/x/y", b"foreign", 4);
        let terms = listing.terms();
        let names: Vec<&str> = terms.iter().map(|(n, _)| n.as_str()).collect();
        // c's line without candidates: nobody leads c.
        assert_eq!(names, ["a", "b", "d/x"]);
        assert_eq!(
            terms[0].1.leader,
            LeaderInfo {
                id: "first".into(),
                token: 7
            }
        );
        assert_eq!(terms[0].1.since_ms, Some(1000));
        // b's line names token 3, its leader has token 5: the time is unknown.
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
}
