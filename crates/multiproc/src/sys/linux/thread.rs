//! Thread identity for robust locks: who holds a lock, and is that thread
//! still alive?
//!
//! A lock word in shared memory records its owner's thread id (tid). A tid
//! names a thread system-wide (within one pid namespace) but is recycled once
//! the thread is gone, so the owner also records the thread's start time (in
//! clock ticks since boot, field 22 of `/proc/<tid>/stat`): a live thread with
//! the same tid and a different start time is somebody else.

use std::cell::Cell;
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// The calling thread, as recorded in a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadIdentity {
    /// Kernel thread id (`gettid`).
    pub tid: u32,
    /// Start time of the thread in clock ticks since boot.
    pub start: u64,
}

/// What `/proc` says about a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadStatus {
    /// Running or sleeping, started at this time.
    Alive { start: u64 },
    /// Gone, or a zombie: it will never release anything.
    Dead,
}

/// Bumped in the child after every `fork`, so a forked child does not keep
/// its parent's cached identity (its only thread has a new tid).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

thread_local! {
    /// (fork generation, tid, start) of this thread, once computed.
    static CACHED: Cell<Option<(u64, ThreadIdentity)>> = const { Cell::new(None) };
}

extern "C" fn after_fork_in_child() {
    // ORDERING: Relaxed: the child is single-threaded right after fork; this
    // thread reads the counter next, in program order.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The calling thread's identity; cheap after the first call on a thread.
pub(crate) fn current() -> ThreadIdentity {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic, which is
        // async-signal-safe and valid in a freshly forked child.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    // ORDERING: Relaxed: only this thread's own fork handler (program order)
    // changes the value in a way that matters to this thread.
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    CACHED.with(|c| match c.get() {
        Some((g, id)) if g == generation => id,
        _ => {
            let id = compute_current();
            c.set(Some((generation, id)));
            id
        }
    })
}

#[cold]
fn compute_current() -> ThreadIdentity {
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let start = match status(tid) {
        ThreadStatus::Alive { start } => start,
        // /proc unavailable: a start time of 0 disables the reuse check for
        // locks this thread holds, leaving the existence check.
        ThreadStatus::Dead => 0,
    };
    ThreadIdentity { tid, start }
}

/// 1 + the CPU the calling thread runs on (0 if unknown); a few
/// nanoseconds (glibc reads it from the thread's rseq area).
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: no arguments; returns -1 on failure.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu + 1).unwrap_or(0)
}

/// The calling thread's kernel id; cheap after the first call on a thread.
pub(crate) fn current_tid() -> u32 {
    current().tid
}

/// False once thread `tid` is gone or a zombie (it will never finish what it
/// started); true if `/proc` cannot tell.
pub(crate) fn tid_alive(tid: u32) -> bool {
    status(tid) != ThreadStatus::Dead
}

/// Reads `/proc/<tid>/stat`. A thread that cannot be found is dead; if
/// `/proc` itself cannot be read, the thread is assumed alive (never steal a
/// lock on a guess).
pub(crate) fn status(tid: u32) -> ThreadStatus {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => parse_stat(&stat).unwrap_or(ThreadStatus::Alive { start: 0 }),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => ThreadStatus::Dead,
        Err(_) => ThreadStatus::Alive { start: 0 },
    }
}

/// Whether process `pid` is alive and, if `start` is not 0, is the process
/// that started at `start` (not another one under a recycled pid). A
/// process whose main thread is a zombie is alive while other threads run.
pub(crate) fn process_alive(pid: u32, start: u64) -> bool {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => return false,
        Err(_) => return true,
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return true;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3: state is [0], num_threads (20) is [17], starttime (22) is [19].
    let threads: u64 = fields.get(17).and_then(|t| t.parse().ok()).unwrap_or(1);
    let started: u64 = fields.get(19).and_then(|t| t.parse().ok()).unwrap_or(0);
    if start != 0 && started != 0 && started != start {
        return false;
    }
    !(matches!(fields.first(), Some(&("Z" | "X" | "x"))) && threads <= 1)
}

fn parse_stat(stat: &str) -> Option<ThreadStatus> {
    // The command name (field 2) may hold spaces and parentheses: fields
    // after it start after the last ')'. Field 3 is the state, field 22 the
    // start time.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X" | "x") {
        return Some(ThreadStatus::Dead);
    }
    let start = fields.nth(18)?.parse().ok()?;
    Some(ThreadStatus::Alive { start })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn own_thread_is_alive_with_its_start_time() {
        let me = current();
        assert_eq!(status(me.tid), ThreadStatus::Alive { start: me.start });
        assert_eq!(current(), me);
    }

    #[test]
    fn other_threads_differ_and_die() {
        let me = current();
        let other = std::thread::spawn(current).join().unwrap();
        assert_ne!(other.tid, me.tid);
        // Joined: the tid disappears once the kernel has finished the exit, a
        // moment after pthread_join returns (unless recycled already, which
        // gives another start time).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while status(other.tid) == (ThreadStatus::Alive { start: other.start }) {
            assert!(std::time::Instant::now() < deadline, "thread {} still alive after join", other.tid);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(current_tid() == me.tid && tid_alive(me.tid));
    }

    #[test]
    fn parses_names_with_parentheses() {
        let line = "42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 12345 0 0";
        assert_eq!(parse_stat(line), Some(ThreadStatus::Alive { start: 12345 }));
        assert_eq!(parse_stat("42 (x) Z 1"), Some(ThreadStatus::Dead));
    }
}
