//! The clock of the leadership deadline.
//!
//! A leader must stop before etcd can expire its lease, and etcd's clock keeps running while this
//! machine is suspended. Linux's CLOCK_MONOTONIC (what `Instant` reads) stops during suspend, so
//! a deadline measured on it would still lie ahead after the machine slept through it. The
//! deadline is measured on CLOCK_BOOTTIME instead, which counts the time suspended. On macOS,
//! `Instant` reads a clock that stops during sleep too (CLOCK_UPTIME_RAW); its CLOCK_MONOTONIC
//! keeps counting, and is used there.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time on the deadline clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(Duration);

impl Stamp {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    pub fn now() -> Stamp {
        #[cfg(target_os = "linux")]
        const SUSPEND_COUNTING: libc::clockid_t = libc::CLOCK_BOOTTIME;
        #[cfg(target_os = "macos")]
        const SUSPEND_COUNTING: libc::clockid_t = libc::CLOCK_MONOTONIC;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill in.
        let rc = unsafe { libc::clock_gettime(SUSPEND_COUNTING, &mut ts) };
        if rc != 0 {
            return Stamp(fallback());
        }
        Stamp(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    /// Elsewhere the monotonic clock (Windows' keeps counting during sleep).
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    pub fn now() -> Stamp {
        Stamp(fallback())
    }

    /// Time from `earlier` to this stamp (zero if `earlier` is later).
    pub fn since(self, earlier: Stamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

fn fallback() -> Duration {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now).elapsed()
}

impl Add<Duration> for Stamp {
    type Output = Stamp;
    fn add(self, d: Duration) -> Stamp {
        Stamp(self.0 + d)
    }
}

impl Sub<Duration> for Stamp {
    type Output = Stamp;
    fn sub(self, d: Duration) -> Stamp {
        Stamp(self.0.saturating_sub(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_move_forward_with_real_time() {
        let a = Stamp::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = Stamp::now();
        assert!(b > a);
        assert!(b.since(a) >= Duration::from_millis(20));
        assert_eq!(a.since(b), Duration::ZERO);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_deadline_clock_counts_at_least_what_the_monotonic_clock_counts() {
        // CLOCK_BOOTTIME = CLOCK_MONOTONIC + time suspended: never behind it.
        let boot = Stamp::now();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let monotonic = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        assert!(boot.0 + Duration::from_millis(5) >= monotonic);
    }
}
