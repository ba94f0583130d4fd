//! The native heap: mimalloc, committing memory as it is used and giving freed pages back at once.
//!
//! A locker keeps a small record, a task and a few map entries per registered name, allocated and
//! freed on the tokio threads and the JavaScript thread. Under glibc's malloc those small blocks,
//! spread over per-thread arenas, cost about 4.5 KB of resident memory per name at 100 000 names
//! against about 1.9 KB that was live then; mimalloc kept them at about 3.1 KB. Its defaults suit a
//! process that owns the machine (arenas committed eagerly, freed pages kept 10 ms or more), not
//! an addon inside someone else's Node.js process, so both are turned off when the addon loads:
//! with them, 1000 names cost 18 MB of resident memory instead of 9 MB.
//!
//! Only the addon's own Rust allocations go through it; Node.js and V8 keep their allocator.

use libmimalloc_sys::{mi_option_set, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// `mi_option_e` in the mimalloc.h bundled with the pinned libmimalloc-sys (Cargo.toml), which names
// only the older options; the unit test below checks these numbers against mimalloc's own names.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
const PURGE_DELAY: mi_option_t = 15;

// Runs when the addon is loaded, before any election allocates. A setting given in the
// environment (MIMALLOC_ARENA_EAGER_COMMIT, MIMALLOC_PURGE_DELAY), which mimalloc reads itself, is
// left as given.
#[napi_derive::module_init]
fn configure() {
    for (option, variable) in [
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT"),
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY"),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: a plain setter on mimalloc's option table, called at load, before the addon
            // starts any thread of its own.
            unsafe { mi_option_set(option, 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    // mimalloc reads MIMALLOC_<NAME> from the environment (and `configure` then leaves it), so a
    // copy of this test binary started with those variables shows which number each name has.
    #[test]
    fn option_numbers_match_mimallocs_names() {
        if std::env::var_os("LOCKED_ALLOCATOR_PROBE").is_some() {
            // SAFETY: reads from mimalloc's option table.
            let (eager, purge) = unsafe {
                (
                    mi_option_get(ARENA_EAGER_COMMIT),
                    mi_option_get(PURGE_DELAY),
                )
            };
            println!("probe: arena_eager_commit={eager} purge_delay={purge}");
            return;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let output = std::process::Command::new(exe)
            .args([
                "allocator::tests::option_numbers_match_mimallocs_names",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LOCKED_ALLOCATOR_PROBE", "1")
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "7")
            .env("MIMALLOC_PURGE_DELAY", "1234")
            .output()
            .expect("the test binary runs again");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("probe: arena_eager_commit=7 purge_delay=1234"),
            "mimalloc's options are not numbered as this module assumes: {stdout}"
        );
    }
}
