//! Handing the lead to a chosen candidate, without ever letting a third one lead.
//!
//! Candidates are ordered by create revision, so a leader that deletes its key is followed by the
//! next one in line, whoever that is. To hand over to a candidate `T` further back, the candidates
//! between the leader and `T` must first step behind `T`. Nobody may delete another's key for
//! that: a candidate of etcd's own recipe (`etcdctl elect`) never re-reads its key once queued and
//! would go on to lead without one. So the leader asks instead. It writes a marker beside the
//! candidates, bound to its lease and guarded by its key, naming its own token and `T`'s create
//! revision. Every candidate of ours sees it on the locker's watch; one that is ahead of `T`
//! deletes its own key and campaigns again, which puts it behind `T`. Once nobody is left between
//! them, the leader deletes its key (and the marker) in a transaction that also requires `T`'s
//! key to be the one it chose: `T` is then the first in line and leads, and the old leader
//! campaigns again behind it. A candidate that does not step aside (one of `etcdctl elect`) stops
//! the handover, which then fails after a while and leaves everything as it was.
//!
//! Safety never rests on the marker: every candidate still leads only when its own key is the
//! first. A stale marker can at worst make a candidate give up its place.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use etcd_client::{TxnOpResponse, TxnResponse};

pub use crate::keys::{Candidate, Marker};

/// How long a leader waits for the candidates ahead of its target to step behind it. Ours do so
/// within milliseconds; one that has not by then is not going to.
pub const WAIT: Duration = Duration::from_secs(5);

/// A handover asked of an election: to whom (`None`: the next in line), and the serial its
/// answer carries.
#[derive(Debug)]
pub struct Request {
    pub answer: u32,
    pub to: Option<String>,
    /// What the check before the drain chose, if it checked the same target: the handover acts
    /// on it at once (its transactions are guarded) instead of reading the queue again.
    pub checked: Option<Choice>,
    /// Nobody asked: a candidate just elected passes the lead on to the preferred one before its
    /// work starts (see `preference`). Nothing is reported either way.
    pub passing_on: bool,
}

/// Why a handover cannot go on; each has the code JavaScript gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This host does not lead (any more).
    NotLeader,
    /// No live candidate has the id asked for.
    NotACandidate(String),
    /// Nobody else is queued.
    NoCandidate,
    /// Candidates ahead of the target did not step behind it in time (how many were asked).
    Blocked(usize),
    /// The singleton was removed first.
    Removed,
    /// The locker started closing first.
    Closed,
    /// The lease was lost or its deadline passed, or etcd kept changing under the handover.
    Interrupted(&'static str),
    /// etcd did not answer, or refused.
    Failed(&'static str, String),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotLeader => "NOT_LEADER",
            Refusal::NotACandidate(_) => "NOT_A_CANDIDATE",
            Refusal::NoCandidate => "NO_CANDIDATE",
            Refusal::Blocked(_) => "HANDOVER_BLOCKED",
            Refusal::Removed => "REMOVED",
            Refusal::Closed => "LOCKER_CLOSED",
            Refusal::Interrupted(_) => "HANDOVER_INTERRUPTED",
            Refusal::Failed(code, _) => code,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::NotLeader => "this host does not lead".into(),
            Refusal::NotACandidate(id) => format!("{id:?} is not a live candidate"),
            Refusal::NoCandidate => "no other candidate is queued".into(),
            Refusal::Blocked(n) => format!(
                "{n} candidate(s) ahead of the target did not step behind it within {} s \
                 (candidates that are not of this library, such as etcdctl elect, never do)",
                WAIT.as_secs()
            ),
            Refusal::Removed => "the singleton was removed".into(),
            Refusal::Closed => "the locker is closing".into(),
            Refusal::Interrupted(why) => format!("interrupted: {why}"),
            Refusal::Failed(_, message) => message.clone(),
        }
    }
}

/// The target, and the candidates between the leader and it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub target: Candidate,
    pub between: Vec<Candidate>,
}

/// Picks the target among `candidates` (in create order) for the leader whose key is `own`:
/// the first candidate with locker id `to`, or without `to` the next in line.
pub fn choose(candidates: &[Candidate], own: &[u8], to: Option<&str>) -> Result<Choice, Refusal> {
    match candidates.first() {
        Some(first) if first.key == own => {}
        _ => return Err(Refusal::NotLeader),
    }
    let others = &candidates[1..];
    let found = match to {
        None => others.first().map(|c| (0, c)),
        Some(id) => others.iter().enumerate().find(|(_, c)| c.id == id),
    };
    match (found, to) {
        (Some((at, target)), _) => Ok(Choice {
            target: target.clone(),
            between: others[..at].to_vec(),
        }),
        (None, Some(id)) => Err(Refusal::NotACandidate(id.to_string())),
        (None, None) => Err(Refusal::NoCandidate),
    }
}

/// Reads every candidate of the election, in create order.
pub fn read_candidates(candidates: &str) -> Txn {
    Txn::new().and_then([TxnOp::get(
        candidates,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend),
        ),
    )])
}

pub fn candidates_of(response: &TxnResponse) -> Vec<Candidate> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        })
        .flat_map(|get| {
            get.kvs()
                .iter()
                .map(|kv| Candidate {
                    key: kv.key().to_vec(),
                    id: String::from_utf8_lossy(kv.value()).into_owned(),
                    revision: kv.create_revision(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Writes the marker, if our key is still the one of our term.
pub fn mark(own: &str, token: i64, marker_key: &str, lease: i64, marker: Marker) -> Txn {
    Txn::new()
        .when([Compare::create_revision(own, CompareOp::Equal, token)])
        .and_then([TxnOp::put(
            marker_key,
            marker.encode(),
            Some(PutOptions::new().with_lease(lease)),
        )])
}

/// The handover itself: our key and the marker go, if our key and the target's
/// are still the ones chosen and every candidate that was between them has left that place (its
/// key is gone, or was made again, behind the target).
pub fn commit(own: &str, token: i64, choice: &Choice, marker_key: &str, lease: i64) -> Txn {
    let target = &choice.target;
    let mut guards = vec![
        Compare::create_revision(own, CompareOp::Equal, token),
        Compare::create_revision(target.key.clone(), CompareOp::Equal, target.revision),
    ];
    guards.extend(
        choice
            .between
            .iter()
            .map(|c| Compare::create_revision(c.key.clone(), CompareOp::NotEqual, c.revision)),
    );
    Txn::new()
        .when(guards)
        .and_then([TxnOp::delete(own, None), withdraw(marker_key, lease)])
}

/// Deletes the marker if `lease` wrote it. Nested in a handover and in every resign, so that no
/// marker outlives its leader's term.
pub fn withdraw(marker_key: &str, lease: i64) -> TxnOp {
    TxnOp::txn(unmark(marker_key, lease))
}

/// Takes back a marker of ours (a handover that did not happen).
pub fn unmark(marker_key: &str, lease: i64) -> Txn {
    Txn::new()
        .when([Compare::lease(marker_key, CompareOp::Equal, lease)])
        .and_then([TxnOp::delete(marker_key, None)])
}

/// A candidate asked to step behind the target: its key goes, if it is still the one created at
/// `revision`; it then campaigns again.
pub fn step_aside(own: &str, revision: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(own, CompareOp::Equal, revision)])
        .and_then([TxnOp::delete(own, None)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(key: &str, id: &str, revision: i64) -> Candidate {
        Candidate {
            key: key.as_bytes().to_vec(),
            id: id.into(),
            revision,
        }
    }

    fn queue() -> Vec<Candidate> {
        vec![
            candidate("p/n/1", "a", 5),
            candidate("p/n/2", "b", 7),
            candidate("p/n/3", "c", 9),
            candidate("p/n/4", "c", 11),
        ]
    }

    #[test]
    fn the_target_is_the_named_candidate_or_the_next_in_line() {
        let next = choose(&queue(), b"p/n/1", None);
        assert_eq!(
            next.map(|c| (c.target.revision, c.between.len())),
            Ok((7, 0))
        );
        let named = choose(&queue(), b"p/n/1", Some("c"));
        assert_eq!(
            named.map(|c| (c.target.revision, c.between)),
            Ok((9, vec![candidate("p/n/2", "b", 7)]))
        );
    }

    #[test]
    fn only_the_leader_hands_over_and_only_to_a_live_candidate() {
        assert_eq!(choose(&queue(), b"p/n/2", None), Err(Refusal::NotLeader));
        assert_eq!(choose(&[], b"p/n/1", None), Err(Refusal::NotLeader));
        assert_eq!(
            choose(&queue(), b"p/n/1", Some("z")),
            Err(Refusal::NotACandidate("z".into()))
        );
        // The leader's own id names no other candidate.
        assert_eq!(
            choose(&queue(), b"p/n/1", Some("a")),
            Err(Refusal::NotACandidate("a".into()))
        );
        assert_eq!(
            choose(&queue()[..1], b"p/n/1", None),
            Err(Refusal::NoCandidate)
        );
    }

    #[test]
    fn a_marker_asks_only_the_candidates_ahead_of_its_target_under_its_leader() {
        let marker = Marker {
            leader: 5,
            target: 9,
        };
        assert_eq!(Marker::decode(marker.encode().as_bytes()), Some(marker));
        assert!(marker.asks_to_yield(5, 7));
        assert!(!marker.asks_to_yield(5, 9), "the target stays");
        assert!(!marker.asks_to_yield(5, 11), "those behind stay");
        assert!(
            !marker.asks_to_yield(6, 7),
            "another leader's marker is stale"
        );
        for value in [&b""[..], b"5", b"5 x", b"\xff"] {
            assert_eq!(Marker::decode(value), None);
        }
    }
}
