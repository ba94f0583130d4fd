//! A leader's term as anyone can read it: who leads, with which fencing token, and since when.
//!
//! etcd keeps no timestamps, so a leader publishes the wall-clock time of its election itself, in
//! a term record at `<prefix>/<name>`: next to the candidates' range `<prefix>/<name>/`, never
//! inside it (names hold no '/'), so no election mistakes it for a candidate. The record is bound
//! to the leader's lease and written only while the leader's key of that term still exists: a
//! late write from a leader that has lost its key fails its guard instead of overwriting its
//! successor's record. A reader trusts a record only when it names the token of the key that
//! leads; until the new leader's record is written, the time is unknown, never the predecessor's.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::cluster::Failure;
use crate::events::LeaderInfo;
use crate::locker::Shared;

/// The current term of an election, as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub leader: LeaderInfo,
    /// When the leader was elected, in milliseconds since the Unix epoch by the leader's clock;
    /// `None` until the leader's record is written (or if it could not be).
    pub since_ms: Option<i64>,
}

/// Where the term record of the election `<prefix>/<name>/` lives.
pub fn record_key(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}")
}

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
pub async fn run(shared: Arc<Shared>, mut pending: mpsc::UnboundedReceiver<Publication>) {
    let mut closing = shared.closing.subscribe();
    let mut writing = JoinSet::new();
    loop {
        tokio::select! {
            Some(publication) = pending.recv(), if writing.len() < CONCURRENT_WRITES => {
                writing.spawn(write(shared.clone(), publication));
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
async fn write(shared: Arc<Shared>, publication: Publication) {
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
            record_key(&shared.prefix, &name),
            encode(token, since_ms),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let failure = match shared.batcher.txn(&name, txn.clone()).await {
            // Also when the guard failed: the term is over, and so is its record.
            Ok(_) => {
                shared
                    .events
                    .log(|| format!("{name}: published term {token}"));
                return;
            }
            Err(failure) => failure,
        };
        let retry = matches!(failure, Failure::Unavailable(_))
            && leading.load(Ordering::SeqCst) == lease
            && !*shared.closing.borrow();
        shared.events.log(|| {
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

/// Reads who leads `name`, and since when, in one consistent read.
pub async fn read(shared: &Shared, name: &str) -> Result<Option<Term>, Failure> {
    let record = record_key(&shared.prefix, name);
    let lowest = TxnOp::get(
        format!("{record}/"),
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1),
        ),
    );
    let txn = Txn::new().and_then([lowest, TxnOp::get(record, None)]);
    let response = shared.batcher.txn(name, txn).await?;
    let mut gets = response.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    });
    let (Some(lowest), Some(record)) = (gets.next(), gets.next()) else {
        return Err(Failure::Unavailable(
            "etcd answered the read without its results".into(),
        ));
    };
    let Some(first) = lowest.kvs().first() else {
        return Ok(None);
    };
    let token = first.create_revision();
    let since_ms = record
        .kvs()
        .first()
        .and_then(|kv| decode(kv.value()))
        .filter(|(published, _)| *published == token)
        .map(|(_, since)| since);
    Ok(Some(Term {
        leader: LeaderInfo {
            id: String::from_utf8_lossy(first.value()).into_owned(),
            token,
        },
        since_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back() {
        assert_eq!(
            decode(encode(42, 1_764_144_000_123).as_bytes()),
            Some((42, 1_764_144_000_123))
        );
    }

    #[test]
    fn a_foreign_value_is_no_record() {
        for value in [&b""[..], b"42", b"42 x", b"x 1", b"\xff\xfe", b"1 2 3"] {
            assert_eq!(decode(value), None, "{value:?}");
        }
    }

    #[test]
    fn the_record_is_outside_the_candidates_range() {
        let record = record_key("locked", "build");
        assert!(!record.starts_with("locked/build/"));
        // Nor in the range of a name it is a prefix of.
        assert!(!record.starts_with("locked/buil/"));
    }
}
