//! Helpers shared by the `queue_*` integration tests.

#![allow(dead_code)] // each test file uses a different subset

use std::time::Duration;

use multiproc::Process;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Upper bound for any blocking call in these tests: far above the real
/// time, so a loaded machine does not fail them, but a hang still ends.
pub const LONG: Duration = Duration::from_secs(30);

/// Slack allowed on top of a timeout ("≈T" means ≥ T and < T + SLACK), and
/// the bound for "at once": generous, so that a loaded 2-core machine (other
/// builds and tests running) does not fail the tests. The tight figures
/// belong in the benchmark.
pub const SLACK: Duration = Duration::from_secs(5);

/// A child that is killed and reaped when dropped (so a failing test leaves
/// no process behind).
pub struct Child<R: Serialize + DeserializeOwned>(pub Process<R>);

impl<R: Serialize + DeserializeOwned> Child<R> {
    /// Joins with the long timeout and returns the child's value.
    pub fn join(&mut self) -> R {
        self.0.join_timeout(LONG).expect("child failed")
    }
}

impl<R: Serialize + DeserializeOwned> Drop for Child<R> {
    fn drop(&mut self) {
        if self.0.exitcode().is_none() {
            let _ = self.0.kill();
        }
        let _ = self.0.join_timeout(LONG);
    }
}

/// Threads of this process.
pub fn count_threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("read /proc/self/task").count()
}

/// In a child: says it is ready on `ready`, then blocks in `get` (with the
/// long timeout); reports whether it ended with `Closed`, and after how many
/// milliseconds.
pub fn blocked_get(q: multiproc::Queue<u8>, ready: multiproc::Queue<u8>) -> (bool, u64) {
    ready.put(0).unwrap();
    let t = std::time::Instant::now();
    let closed = matches!(q.get_timeout(LONG), Err(multiproc::GetError::Closed));
    (closed, t.elapsed().as_millis() as u64)
}

/// Bytes in memory of this process's queue memory file, found by name among
/// its descriptors (for a child that holds one queue; the largest if more).
pub fn queue_blocks() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir("/proc/self/fd").unwrap();
    fds.filter_map(Result::ok)
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("multiproc-queue")))
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .map(|m| m.blocks() * 512)
        .max()
        .unwrap_or(0)
}

/// The apparent length of this process's queue memory file (the largest,
/// if it has several): how far into the file writes reached.
pub fn queue_file_len() -> u64 {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap();
    fds.filter_map(Result::ok)
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("multiproc-queue")))
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// A few random microseconds (less than `max_micros`), from the clock and
/// the round (no rand dependency): where a kill lands.
pub fn jitter(round: u32, max_micros: u64) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    let mut x = nanos ^ (u64::from(round) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    Duration::from_micros(x % max_micros)
}
