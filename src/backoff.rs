//! Jittered exponential backoff, so that hosts recovering from the same outage spread out.

use std::time::Duration;

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

    pub fn reset(&mut self) {
        self.current = self.base;
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
