//! Thread identity for robust locks: who holds a lock, and is that thread
//! still alive?
//!
//! A lock word in shared memory records its owner's thread id (tid). A tid
//! names a thread system-wide (within one pid namespace) but is recycled once
//! the thread is gone, so the owner also records the thread's start time (in
//! clock ticks since boot, field 22 of `/proc/<tid>/stat`): a live thread with
//! the same tid and a different start time is somebody else.

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use super::proc::{self, Lookup};

/// The calling thread, as recorded in a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadIdentity {
    /// Kernel thread id (`gettid`).
    pub tid: u32,
    /// Start time of the thread in clock ticks since boot.
    pub start: u64,
    /// The process's pid namespace (0: unknown), in which `tid` is valid.
    pub pidns: u32,
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
    ThreadIdentity { tid, start, pidns: proc::pid_namespace() }
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

/// What `/proc` says about thread `tid`. It is dead only when that is
/// certain (see [`super::proc`]); if `/proc` cannot tell, it is alive (never
/// steal a lock on a guess).
pub(crate) fn status(tid: u32) -> ThreadStatus {
    match proc::lookup(tid) {
        Lookup::Found(stat) if stat.is_zombie() => ThreadStatus::Dead,
        Lookup::Found(stat) => ThreadStatus::Alive { start: stat.start },
        Lookup::Gone => ThreadStatus::Dead,
        Lookup::Unknown => ThreadStatus::Alive { start: 0 },
    }
}

/// Whether process `pid` is alive and, if `start` is not 0, is the process
/// that started at `start` (not another one under a recycled pid). A
/// process whose main thread is a zombie is alive while other threads run.
pub(crate) fn process_alive(pid: u32, start: u64) -> bool {
    match proc::lookup(pid) {
        Lookup::Found(stat) => {
            if start != 0 && stat.start != 0 && stat.start != start {
                return false;
            }
            !(stat.is_zombie() && stat.threads <= 1)
        }
        Lookup::Gone => false,
        Lookup::Unknown => true,
    }
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
}
