//! Shared by the workspace's integration tests (a dev-dependency only).
//!
//! A test that changes process-global state the other tests of its binary
//! must not see (its process limits, its user ids) runs its body in a fresh
//! copy of the test binary: [`run_in_fresh_copy`] re-runs the binary on that
//! one test, with a marker variable set, and waits for it within a timeout;
//! in the copy, [`in_fresh_copy`] is true and the test runs its body.
//!
//! [`NoRoomForThreads`] makes thread starts fail (EAGAIN) until dropped, to
//! test what the code does when the host is out of threads.
//!
//! [`model_calls`] counts the model calls that ran a set of requests, from
//! the rows each request learned its call had, to check the metrics exactly
//! under dynamic batching.
//!
//! [`mark`], [`marker_dir`], [`markers`] and [`all_marked`] let a test see
//! that tasks ran in other processes before their results were asked for.
//!
//! [`Alive`] counts the guards a test handed out that are still alive;
//! [`process_exists`] says whether a process has not been reaped yet;
//! [`wait_until`] waits, bounded, for a condition.
//!
//! [`REDIS_BUSY_SCRIPT`] keeps a Redis server busy, so that it answers
//! other clients `BUSY`.
//!
//! ```no_run
//! use std::time::Duration;
//! use multiproc_test_support::{in_fresh_copy, run_in_fresh_copy, NoRoomForThreads};
//!
//! const MARKER: &str = "MY_TEST_NO_THREADS";
//!
//! #[test]
//! fn refuses_threads() {
//!     if in_fresh_copy(MARKER) {
//!         let limit = NoRoomForThreads::new();
//!         assert!(std::thread::Builder::new().spawn(|| ()).is_err());
//!         drop(limit);
//!         return;
//!     }
//!     run_in_fresh_copy("refuses_threads", MARKER, Duration::from_secs(60));
//! }
//! ```

#![warn(missing_docs)]

mod alive;
mod markers;

pub use alive::Alive;

pub use markers::{all_marked, mark, marker_dir, markers};

/// A Lua script that spins for `ARGV[1]` ms by the server's clock, then
/// returns 1: run with `EVAL script 0 ms`, it makes Redis answer other
/// clients `BUSY` once it has run past `busy-reply-threshold`.
pub const REDIS_BUSY_SCRIPT: &str = r"
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local stop = now() + tonumber(ARGV[1]) * 1000
while now() < stop do end
return 1
";

/// Looks at `done` every millisecond until it holds; panics naming `what`
/// once `limit` has passed.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// True while a process with this pid exists (a zombie counts: it was not reaped).
pub fn process_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

use std::process::Command;
use std::time::{Duration, Instant};

/// Lets this process start no thread or process until dropped: its soft
/// limit of processes (RLIMIT_NPROC, counted per real user) is set to 1.
/// Root is exempt from that limit, so a root process first takes the real
/// and effective ids of `nobody` (keeping root as its saved id, to come back
/// when dropped).
///
/// It changes the whole process: use it only in a fresh copy of the test
/// binary ([`run_in_fresh_copy`]).
#[derive(Debug)]
pub struct NoRoomForThreads {
    old: libc::rlimit,
    was_root: bool,
}

/// The uid of `nobody`.
const NOBODY: libc::uid_t = 65534;

impl NoRoomForThreads {
    /// Lowers the limit (as `nobody` when root).
    ///
    /// # Panics
    ///
    /// If the ids or the limit cannot be changed.
    #[allow(clippy::new_without_default)]
    pub fn new() -> NoRoomForThreads {
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        let was_root = unsafe { libc::geteuid() } == 0;
        // SAFETY: setresuid(2) with plain ids; glibc applies it to every thread.
        assert!(!was_root || unsafe { libc::setresuid(NOBODY, NOBODY, 0) } == 0, "cannot become nobody");
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit(2) writes the limit into `old`, a valid rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut old) }, 0);
        let low = libc::rlimit { rlim_cur: 1, rlim_max: old.rlim_max };
        // SAFETY: setrlimit(2) reads `low`, a valid rlimit; it lowers only
        // the soft limit, which the drop raises back.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &low) }, 0);
        NoRoomForThreads { old, was_root }
    }
}

impl Drop for NoRoomForThreads {
    fn drop(&mut self) {
        // SAFETY: as above; the old soft limit is at most the hard one, and
        // root is the saved id of a process that was root.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NPROC, &self.old);
            if self.was_root {
                libc::setresuid(0, 0, 0);
            }
        }
    }
}

/// True in the fresh copy that [`run_in_fresh_copy`] started with `marker`.
pub fn in_fresh_copy(marker: &str) -> bool {
    std::env::var_os(marker).is_some()
}

/// Runs the test `test` (its exact name) alone in a fresh copy of this test
/// binary, with the variable `marker` set, and waits for it.
///
/// # Panics
///
/// If the copy fails, or does not end within `timeout` (it is then killed
/// and reaped).
pub fn run_in_fresh_copy(test: &str, marker: &str, timeout: Duration) {
    let mut copy = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(marker, "1")
        .spawn()
        .expect("cannot start a copy of the test binary");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = copy.try_wait().expect("cannot wait for the test's copy") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = copy.kill();
            let _ = copy.wait();
            panic!("the test's copy did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the test's copy failed: {status}");
}

/// How many model calls ran a set of requests, from what each request
/// learned: `(its rows, the rows of the call it ran in)`. A call of `c`
/// rows answers requests whose rows add up to `c`, so the calls of `c`
/// rows are the rows answered `c`, divided by `c`.
///
/// ```
/// // A call of 8 (3 + 5), a call of 6 (3 + 3), a call of 5 alone.
/// let answers = [(3, 8), (5, 8), (3, 6), (3, 6), (5, 5)];
/// assert_eq!(multiproc_test_support::model_calls(&answers), 3);
/// ```
///
/// # Panics
///
/// If the rows answered some call size are not a multiple of it: the
/// answers cannot come from whole calls.
pub fn model_calls(answers: &[(u64, u64)]) -> u64 {
    let mut rows_by_call = std::collections::BTreeMap::<u64, u64>::new();
    for &(rows, call) in answers {
        *rows_by_call.entry(call).or_default() += rows;
    }
    rows_by_call
        .into_iter()
        .map(|(call, rows)| {
            assert!(call > 0 && rows % call == 0, "{rows} rows answered calls of {call} rows: {answers:?}");
            rows / call
        })
        .sum()
}
