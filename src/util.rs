//! Small helpers shared by every module: waiting on watch channels, and locks.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

/// Resolves when the value changes. A closed channel never changes again, so it never resolves
/// (instead of resolving at once on every poll and spinning the caller's loop).
pub async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Locks `mutex`. The data behind every lock here stays consistent at every await and panic
/// point, so a lock poisoned by a panicking holder is used as it is.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads `rwlock` (see `lock` on poisoning).
pub fn read<T>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes `rwlock` (see `lock` on poisoning).
pub fn write<T>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock.write().unwrap_or_else(|e| e.into_inner())
}
