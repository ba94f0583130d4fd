//! Small helpers for waiting on watch channels inside `select!`.

use tokio::sync::watch;

/// Resolves when the value changes. A closed channel never changes again, so it never resolves
/// (instead of resolving at once on every poll and spinning the caller's loop).
pub async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
