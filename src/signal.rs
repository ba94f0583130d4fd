//! A small value that tasks wait on, for the per-name state a locker holds by the hundred
//! thousand: one per registration (its `Control`) and one or two per watched name (deletion and
//! change counters).
//!
//! `tokio::sync::watch` would do, but each of its channels takes some 350 bytes (it spreads its
//! waiters over eight queues against contention that a per-name value never sees); a `Signal` is
//! a value, a version and one queue of waiters, about 80 bytes. Like a watch channel, a listener
//! wakes on every change after the version it last saw, so a change made between a read and a
//! wait is never missed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::util::lock;

struct Inner<T> {
    value: Mutex<T>,
    version: AtomicU64,
    waiters: Notify,
}

/// The writing side. Not `Clone`: its owner is the one writer, and `listeners` counts the rest.
pub struct Signal<T> {
    inner: Arc<Inner<T>>,
}

pub struct Listener<T> {
    inner: Arc<Inner<T>>,
    seen: u64,
}

impl<T: Copy> Signal<T> {
    pub fn new(value: T) -> Signal<T> {
        Signal {
            inner: Arc::new(Inner {
                value: Mutex::new(value),
                version: AtomicU64::new(0),
                waiters: Notify::new(),
            }),
        }
    }

    pub fn get(&self) -> T {
        *lock(&self.inner.value)
    }

    pub fn set(&self, value: T) {
        self.modify(|v| {
            *v = value;
            true
        });
    }

    /// Changes the value in place; listeners wake only if `change` says it changed something.
    pub fn modify(&self, change: impl FnOnce(&mut T) -> bool) -> bool {
        let changed = change(&mut lock(&self.inner.value));
        if changed {
            // After the value, so that a listener that sees the new version reads the new value.
            self.inner.version.fetch_add(1, Ordering::AcqRel);
            self.inner.waiters.notify_waiters();
        }
        changed
    }

    /// A listener that wakes on changes after this call.
    pub fn subscribe(&self) -> Listener<T> {
        Listener {
            inner: self.inner.clone(),
            seen: self.inner.version.load(Ordering::Acquire),
        }
    }

    pub fn listeners(&self) -> usize {
        Arc::strong_count(&self.inner) - 1
    }
}

impl Signal<()> {
    /// For a signal that only counts events.
    pub fn bump(&self) {
        self.set(());
    }
}

impl<T: Copy> Listener<T> {
    pub fn get(&self) -> T {
        *lock(&self.inner.value)
    }

    /// The value, marking it seen: `changed` waits for the next change after it.
    pub fn get_and_update(&mut self) -> T {
        // The version before the value: a change in between makes `changed` return at once,
        // never miss it.
        self.seen = self.inner.version.load(Ordering::Acquire);
        self.get()
    }

    #[cfg(test)]
    pub fn has_changed(&self) -> bool {
        self.inner.version.load(Ordering::Acquire) != self.seen
    }

    /// Resolves at the first change not yet seen (at once if one happened already).
    pub async fn changed(&mut self) {
        loop {
            let notified = self.inner.waiters.notified();
            tokio::pin!(notified);
            // Registered before the version is read: a change after the read wakes us.
            notified.as_mut().enable();
            let version = self.inner.version.load(Ordering::Acquire);
            if version != self.seen {
                self.seen = version;
                return;
            }
            notified.await;
        }
    }

    /// Resolves with the first value (the current one included) that `ready` accepts.
    pub async fn wait_for(&mut self, ready: impl Fn(T) -> bool) -> T {
        loop {
            let value = self.get_and_update();
            if ready(value) {
                return value;
            }
            self.changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_sees_each_change_after_what_it_read() {
        let signal = Signal::new(1u8);
        let mut listener = signal.subscribe();
        assert!(!listener.has_changed());
        signal.set(2);
        assert!(listener.has_changed());
        assert_eq!(listener.get_and_update(), 2);
        assert!(!listener.has_changed());
        assert!(!signal.modify(|_| false), "an unchanged value wakes nobody");
        assert!(!listener.has_changed());
    }

    #[test]
    fn listeners_are_counted() {
        let signal = Signal::new(());
        assert_eq!(signal.listeners(), 0);
        let listener = signal.subscribe();
        assert_eq!(signal.listeners(), 1);
        drop(listener);
        assert_eq!(signal.listeners(), 0);
    }

    #[tokio::test]
    async fn a_waiting_listener_wakes_on_a_change_from_another_task() {
        let signal = Arc::new(Signal::new(0u32));
        let mut listener = signal.subscribe();
        let writer = {
            let signal = signal.clone();
            tokio::spawn(async move {
                for v in 1..=3 {
                    tokio::task::yield_now().await;
                    signal.set(v);
                }
            })
        };
        let value = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            listener.wait_for(|v| v == 3),
        )
        .await;
        assert_eq!(value.ok(), Some(3));
        let _ = writer.await;
    }
}
