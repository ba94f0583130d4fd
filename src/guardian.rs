//! The guardian: a child process that revokes the locker's lease when this process dies.
//!
//! Only a lease TTL can tell that a machine is gone or cut off, but a process that dies on a live
//! machine (SIGKILL, the OOM killer, a native crash) can be noticed at once: the guardian holds the
//! read end of a pipe whose write end only this process holds, and the kernel closes that end when
//! the process dies. The guardian then revokes the lease it was last told about and exits
//! (`lib/guardian.js` is the program). A frozen process keeps its end open: nothing is revoked.
//!
//! This task starts the guardian, tells it every new lease (and, for `locked run`, the command
//! whose end it must wait for), starts a new one if it dies, and tells it to exit when the
//! locker closes.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::events::{Event, EventSink};
use crate::retry::Backoff;
use crate::session::LeaseState;
use crate::util::{changed, lock};

/// How to start the guardian, from the binding.
#[derive(Clone)]
pub struct Settings {
    /// The Node.js executable.
    pub node: String,
    /// `lib/guardian.js`.
    pub script: String,
    /// The first line it reads: hosts, TLS settings, credentials (JSON).
    pub config: String,
}

/// The running guardian, shared with the locker for what must happen synchronously.
#[derive(Default)]
pub struct Handle {
    stdin: Mutex<Option<ChildStdin>>,
    pid: Mutex<Option<u32>>,
}

impl Handle {
    pub fn pid(&self) -> Option<u32> {
        *lock(&self.pid)
    }

    fn send(&self, line: &str) -> bool {
        let mut stdin = lock(&self.stdin);
        match stdin.as_mut() {
            Some(pipe) => pipe.write_all(line.as_bytes()).is_ok(),
            None => false,
        }
    }

    /// The locker closed: the guardian exits without revoking (the close revokes, or did).
    pub fn dismiss(&self) {
        self.send("{\"exit\":true}\n");
        lock(&self.stdin).take();
    }
}

fn lease_line(lease: Option<i64>) -> String {
    match lease {
        Some(id) => format!("{{\"lease\":\"{id:x}\"}}\n"),
        None => "{\"lease\":null}\n".to_string(),
    }
}

fn wait_for_line(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("{{\"waitFor\":{pid}}}\n"),
        None => "{\"waitFor\":null}\n".to_string(),
    }
}

fn spawn(settings: &Settings) -> std::io::Result<Child> {
    let mut command = Command::new(&settings.node);
    command
        .arg(&settings.script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group: a Ctrl-C in the terminal reaches the application, which may close
    // gracefully, not its guardian.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn()
}

/// Resolves when `child` has exited (waited for on a plain thread: the runtime has no child
/// reaper, and Node's own reaps only its own children).
fn exited(mut child: Child) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    // Should no thread be had, the receiver reports the guardian gone, and a new one is tried.
    let _ = std::thread::Builder::new()
        .name("locked-guardian-wait".into())
        .spawn(move || {
            let _ = child.wait();
            let _ = tx.send(());
        });
    rx
}

pub async fn run(
    settings: Settings,
    handle: Arc<Handle>,
    mut lease: watch::Receiver<LeaseState>,
    mut wait_for: watch::Receiver<Option<u32>>,
    events: EventSink,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::rounds();
    while !*stopped.borrow() {
        // fork and exec block: off the runtime's one thread, so no election waits for them.
        let spawning = settings.clone();
        let spawned = tokio::task::spawn_blocking(move || spawn(&spawning))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => {
                events.emit(Event::Error {
                    serial: None,
                    code: "GUARDIAN_FAILED",
                    message: format!("cannot start the guardian ({}): {err}", settings.node),
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = changed(&mut stopped) => return,
                }
            }
        };
        let pid = child.id();
        let started = std::time::Instant::now();
        *lock(&handle.stdin) = child.stdin.take();
        *lock(&handle.pid) = Some(pid);
        events.log(|| format!("guardian started (pid {pid})"));
        let mut known = lease.borrow_and_update().lease;
        let first = format!(
            "{}\n{}{}",
            settings.config,
            lease_line(known),
            wait_for_line(*wait_for.borrow_and_update())
        );
        handle.send(&first);
        let mut gone = exited(child);
        loop {
            tokio::select! {
                _ = &mut gone => break,
                _ = changed(&mut lease) => {
                    let now = lease.borrow_and_update().lease;
                    if now != known {
                        known = now;
                        handle.send(&lease_line(now));
                    }
                }
                _ = changed(&mut wait_for) => {
                    let pid = *wait_for.borrow_and_update();
                    handle.send(&wait_for_line(pid));
                }
                _ = changed(&mut stopped) => {
                    handle.dismiss();
                    // Bounded: it exits as soon as it reads the line.
                    let _ = tokio::time::timeout(Duration::from_secs(2), gone).await;
                    *lock(&handle.pid) = None;
                    return;
                }
            }
        }
        // It died on its own (killed, out of memory): this process lives on, and so must its
        // protection.
        lock(&handle.stdin).take();
        if started.elapsed() > Duration::from_secs(10) {
            backoff.reset();
        }
        *lock(&handle.pid) = None;
        events.emit(Event::Error {
            serial: None,
            code: "GUARDIAN_EXITED",
            message: format!("the guardian (pid {pid}) exited; starting a new one"),
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = changed(&mut stopped) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_lease_in_hex_as_the_keys_do() {
        assert_eq!(lease_line(Some(0x694d)), "{\"lease\":\"694d\"}\n");
        assert_eq!(lease_line(None), "{\"lease\":null}\n");
        assert_eq!(wait_for_line(Some(42)), "{\"waitFor\":42}\n");
    }
}
