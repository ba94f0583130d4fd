//! The key layout, written once.
//!
//! Under a locker's prefix, the election `name` keeps its candidates at `<prefix>/<name>/<lease
//! hex>` (the layout of etcd's Go `concurrency.Election` and `etcdctl elect`; the value is the
//! locker id). Names hold no '/', so one name's range never holds another's keys.
//!
//! A leader handing over to a candidate further back leaves a marker at `<prefix>//handover/<name>`
//! (see `handover`): a name is never empty, so no election, ours or `etcdctl elect`'s, takes a key
//! that starts with `<prefix>//` for a candidate.
//!
//! A candidate with a priority, or of a locker that balances, says so at
//! `<prefix>//prefer/<name>/<lease hex>` (see `preference`), beside its candidate key and bound to
//! the same lease.
//!
//! Leaders publish when their terms began in term records `<prefix>//terms/<bucket>/<lease hex>`
//! (see `term`): one per lease and bucket of names, a bucket being a fixed hash of the name, so a
//! locker leading 100 000 names writes (and its lease's revoke deletes) about a thousand records,
//! not 100 000.

use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget, TxnOp};

/// Who leads an election: the locker id in the leader's key, and the key's create revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub id: String,
    pub token: i64,
}

impl LeaderInfo {
    /// The candidate whose key this is.
    pub fn of(kv: &KeyValue) -> LeaderInfo {
        LeaderInfo {
            id: String::from_utf8_lossy(kv.value()).into_owned(),
            token: kv.create_revision(),
        }
    }
}

/// What the marker says: the leader of token `leader` hands over to the candidate created at
/// revision `target`. Written as "<leader token> <target revision>", readable with `etcdctl get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub leader: i64,
    pub target: i64,
}

impl Marker {
    pub fn encode(self) -> String {
        format!("{} {}", self.leader, self.target)
    }

    pub fn decode(value: &[u8]) -> Option<Marker> {
        let text = std::str::from_utf8(value).ok()?;
        let (leader, target) = text.split_once(' ')?;
        Some(Marker {
            leader: leader.parse().ok()?,
            target: target.parse().ok()?,
        })
    }

    /// Whether a candidate created at `revision`, waiting behind the leader of token `leader`,
    /// is asked to step behind the target.
    pub fn asks_to_yield(self, leader: i64, revision: i64) -> bool {
        self.leader == leader && revision < self.target
    }
}

/// A candidate as read: its key, its locker id, its create revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: Vec<u8>,
    pub id: String,
    pub revision: i64,
}

impl Candidate {
    pub fn leader(&self) -> LeaderInfo {
        LeaderInfo {
            id: self.id.clone(),
            token: self.revision,
        }
    }
}

/// `<prefix>/`: every key of a locker's elections.
pub fn all(prefix: &str) -> String {
    format!("{prefix}/")
}

/// Term records are spread over this many buckets per lease: at 100 000 names about a hundred
/// names each, a few kB, so rewriting one for one name stays cheap; at a few names, one record
/// per name, as before buckets.
pub const TERM_BUCKETS: u32 = 1024;

/// The bucket of `name`'s term: FNV-1a of its bytes, fixed forever (every version of every locker
/// must find a name's record in the same bucket).
pub fn term_bucket(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % TERM_BUCKETS
}

/// `<prefix>//terms/<bucket hex>/`: the term records of every lease for the bucket of `name`.
pub fn term_records(prefix: &str, name: &str) -> String {
    term_bucket_range(prefix, term_bucket(name))
}

fn term_bucket_range(prefix: &str, bucket: u32) -> String {
    format!("{prefix}/{TERMS}{bucket:03x}/")
}

/// `<prefix>//terms/<bucket hex>/<lease hex>`: the terms that leader's of `lease` began in `bucket`.
pub fn term_record(prefix: &str, bucket: u32, lease: i64) -> String {
    format!("{}{lease:x}", term_bucket_range(prefix, bucket))
}

const TERMS: &str = "/terms/";

/// Whether `key` is a term record (the names are in its value).
pub fn is_term_record(all: &str, key: &[u8]) -> bool {
    key.strip_prefix(all.as_bytes())
        .is_some_and(|rest| rest.starts_with(TERMS.as_bytes()))
}

/// `<prefix>/<name>/`: the candidates of `name`.
pub fn candidates(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}/")
}

/// `<prefix>/<name>/<lease hex>`, given the candidates' range.
pub fn candidate(candidates: &str, lease: i64) -> String {
    format!("{candidates}{lease:x}")
}

/// `<prefix>//handover/<name>`: the marker of a handover under way in `name` (see `handover`).
pub fn handover(prefix: &str, name: &str) -> String {
    format!("{prefix}/{HANDOVER}{name}")
}

const HANDOVER: &str = "/handover/";

/// The election whose handover marker `key` is.
pub fn handover_of<'k>(all: &str, key: &'k [u8]) -> Option<&'k str> {
    let rest = key.strip_prefix(all.as_bytes())?;
    let name = rest.strip_prefix(HANDOVER.as_bytes())?;
    if name.is_empty() || name.contains(&b'/') {
        return None;
    }
    std::str::from_utf8(name).ok()
}

/// `<prefix>//prefer/<name>/<lease hex>`: what the candidate of `lease` in `name` prefers.
pub fn prefer(prefix: &str, name: &str, lease: i64) -> String {
    format!("{prefix}/{PREFER}{name}/{lease:x}")
}

/// `<prefix>//prefer/`: every candidate's preference.
pub fn preferences(prefix: &str) -> String {
    format!("{prefix}/{PREFER}")
}

const PREFER: &str = "/prefer/";

/// The election and lease whose preference `key` is.
pub fn prefer_of<'k>(all: &str, key: &'k [u8]) -> Option<(&'k str, i64)> {
    let rest = key.strip_prefix(all.as_bytes())?;
    let rest = rest.strip_prefix(PREFER.as_bytes())?;
    let slash = rest.iter().rposition(|b| *b == b'/')?;
    let name = std::str::from_utf8(&rest[..slash]).ok()?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some((name, lease_of(&rest[slash + 1..])?))
}

/// The lease of a candidate key's last part (its lease in hex).
pub fn lease_of(hex: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(hex).ok()?;
    if text.is_empty() {
        return None;
    }
    i64::from_str_radix(text, 16).ok()
}

/// The lease of candidate key `key`.
pub fn candidate_lease(key: &[u8]) -> Option<i64> {
    let slash = key.iter().rposition(|b| *b == b'/')?;
    lease_of(&key[slash + 1..])
}

/// The election a key under `all` belongs to: the name of a candidate key; `None` for a term
/// record, a handover marker, a preference or anything else.
pub fn election_of<'k>(all: &str, key: &'k [u8]) -> Option<&'k str> {
    let rest = key.strip_prefix(all.as_bytes())?;
    if rest.starts_with(b"/") {
        return None;
    }
    let slash = rest.iter().rposition(|b| *b == b'/')?;
    std::str::from_utf8(&rest[..slash]).ok()
}

/// The end of the range of every key starting with `prefix` (which ends with '/').
pub fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Reads the first two created keys of the range `candidates`: the leader, and who is next. A
/// candidate that finds itself next knows the one deletion that makes it the leader, and can
/// tell it from the watch alone.
pub fn first_two_created_op(candidates: &str) -> TxnOp {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(2);
    TxnOp::get(candidates, Some(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_keys_name_their_election() {
        let all = all("p");
        let key = candidate(&candidates("p", "build"), 0x694d);
        assert_eq!(key, "p/build/694d");
        assert_eq!(election_of(&all, key.as_bytes()), Some("build"));
        assert_eq!(
            election_of(&all, term_record("p", 7, 0x694d).as_bytes()),
            None
        );
        assert_eq!(election_of(&all, b"q/build/1"), None);
        assert_eq!(election_of(&all, b"p/\xff/1"), None);
    }

    #[test]
    fn term_records_are_outside_every_election() {
        let all = all("p");
        let key = term_record("p", term_bucket("build"), 0x694d);
        assert_eq!(key, "p//terms/2a3/694d");
        assert!(key.starts_with(&term_records("p", "build")));
        assert!(is_term_record(&all, key.as_bytes()));
        assert!(!is_term_record(&all, b"p/build/1"));
        assert!(!is_term_record(&all, b"p//prefer/build/1"));
        assert_eq!(election_of(&all, key.as_bytes()), None);
        assert_eq!(handover_of(&all, key.as_bytes()), None);
        assert_eq!(prefer_of(&all, key.as_bytes()), None);
        assert_eq!(range_end(&all), b"p0");
    }

    #[test]
    fn a_name_has_the_same_bucket_everywhere() {
        // Pinned: a locker finds another's record only where that one wrote it.
        assert_eq!(term_bucket(""), 0x811c_9dc5 % TERM_BUCKETS);
        assert_eq!(term_bucket("a"), 0xe40c_292c % TERM_BUCKETS);
        assert!((0..5000).all(|i| term_bucket(&format!("n{i}")) < TERM_BUCKETS));
    }

    #[test]
    fn a_handover_marker_is_no_candidate_and_no_record() {
        let all = all("p");
        let marker = handover("p", "build");
        assert_eq!(marker, "p//handover/build");
        assert_eq!(handover_of(&all, marker.as_bytes()), Some("build"));
        assert_eq!(election_of(&all, marker.as_bytes()), None);
        assert!(!marker.starts_with(&candidates("p", "build")));
        assert_eq!(handover_of(&all, b"p/build/1"), None);
        assert_eq!(handover_of(&all, b"p//handover/"), None);
    }

    #[test]
    fn a_preference_names_its_election_and_lease() {
        let all = all("p");
        let key = prefer("p", "build", 0x694d);
        assert_eq!(key, "p//prefer/build/694d");
        assert_eq!(prefer_of(&all, key.as_bytes()), Some(("build", 0x694d)));
        assert!(key.starts_with(&preferences("p")));
        assert_eq!(election_of(&all, key.as_bytes()), None);
        assert_eq!(handover_of(&all, key.as_bytes()), None);
        assert_eq!(prefer_of(&all, b"p//prefer/build/"), None);
        assert_eq!(prefer_of(&all, b"p//prefer//1"), None);
        assert_eq!(prefer_of(&all, b"p/build/1"), None);
        assert_eq!(candidate_lease(b"p/build/694d"), Some(0x694d));
        assert_eq!(candidate_lease(b"p/build/zz"), None);
    }
}
