//! Who should lead an election, by what its candidates prefer: the highest priority first, then,
//! among those of it that balance, the one rendezvous hashing picks (see `preference`, which acts
//! on it, and `term`, which reports it). Pure functions of what was read.

use std::collections::HashMap;

use crate::keys::{self, Candidate};

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
