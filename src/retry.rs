//! Retrying: jittered exponential backoff, so that hosts recovering from the same outage spread
//! out, and a throttle for reporting the failures of a streak.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::util::changed;

pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        let seed = (uuid::Uuid::new_v4().as_u128() as u64) | 1;
        Backoff {
            base,
            max,
            current: base,
            seed,
        }
    }

    /// Between attempts of one request, moving from member to member.
    pub fn attempts() -> Backoff {
        Backoff::new(Duration::from_millis(25), Duration::from_millis(400))
    }

    /// Between rounds of an election, an observer, a watch or a term record that failed.
    pub fn rounds() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// Between lease grants that failed.
    pub fn grants() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(2))
    }

    pub fn reset(&mut self) {
        self.current = self.base;
    }

    /// Waits out the next delay, or less: until `recovered` (the cluster's `recoveries`) moves,
    /// which says etcd answers again. Callers mark it seen when they start an attempt, so only
    /// a recovery after the attempt counts.
    pub async fn wait(&mut self, recovered: &mut watch::Receiver<u64>) {
        tokio::select! {
            _ = tokio::time::sleep(self.next_delay()) => {}
            _ = changed(recovered) => {}
        }
    }

    /// The next delay: between half and all of the current step, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: plenty for jitter.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.current.as_millis() as u64;
        let delay = step / 2 + self.seed % (step / 2 + 1);
        self.current = (self.current * 2).min(self.max);
        Duration::from_millis(delay)
    }
}

/// Decides which failures of a streak to report: none while the streak is younger than a grace
/// period (a member failing over, or an etcd raft election, heals within it, and reporting those
/// would only alarm), then one at once and at most one every few seconds, so an outage does not
/// flood the event loop.
pub struct Throttle {
    streak_since: Option<Instant>,
    last: Option<Instant>,
}

const GRACE: Duration = Duration::from_secs(2);
const THROTTLE_INTERVAL: Duration = Duration::from_secs(5);

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            streak_since: None,
            last: None,
        }
    }

    pub fn should_report(&mut self) -> bool {
        let now = Instant::now();
        let since = *self.streak_since.get_or_insert(now);
        if now.duration_since(since) < GRACE {
            return false;
        }
        match self.last {
            Some(last) if now.duration_since(last) < THROTTLE_INTERVAL => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// A success ends the streak.
    pub fn reset(&mut self) {
        self.streak_since = None;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert!((50..=100).contains(&delays[0]), "{delays:?}");
        assert!((400..=800).contains(&delays[5]), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
