//! Thread ids as owner tags in shared memory: the calling thread's id (cached,
//! and refreshed after `fork`), and whether a recorded id is still alive.

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bumped in a child after every `fork`: the child's only thread has a new
/// tid, so per-thread caches made before the fork are stale.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);
static ATFORK: Once = Once::new();

thread_local! {
    /// (fork generation, tid) of this thread, once computed.
    static CACHED: Cell<(u32, u32)> = const { Cell::new((u32::MAX, 0)) };
}

extern "C" fn bump_generation_in_child() {
    // ORDERING: Relaxed: right after fork the child has one thread, which reads
    // the counter next in program order.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The calling thread's kernel id (`gettid`); no system call after the first
/// call on a thread.
pub(crate) fn current_tid() -> u32 {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic, which is
        // async-signal-safe and valid in a freshly forked child.
        unsafe { libc::pthread_atfork(None, None, Some(bump_generation_in_child)) };
    });
    // ORDERING: Relaxed: only this thread's own fork handler (earlier in its
    // program order) changes the value in a way that matters here.
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    CACHED.with(|c| {
        let (g, tid) = c.get();
        if g == generation {
            return tid;
        }
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        c.set((generation, tid));
        tid
    })
}

/// False once thread `tid` is gone or a zombie (it will never finish what it
/// started). If `/proc` cannot tell, the thread is taken to be alive: a live
/// owner's work must never be thrown away on a guess.
pub(crate) fn tid_alive(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => {
            // The state (field 3) follows the command name, which may hold
            // spaces and parentheses: it starts after the last ')'.
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X" | "x"))
        }
        Err(e) => !(e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn threads_have_distinct_live_ids_that_die() {
        let me = current_tid();
        assert_eq!(me, current_tid());
        assert!(tid_alive(me));
        let other = std::thread::spawn(current_tid).join().unwrap();
        assert_ne!(other, me);
        // Joined: the tid disappears once the kernel has finished the exit
        // (a moment after pthread_join returns).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while tid_alive(other) {
            assert!(std::time::Instant::now() < deadline, "thread {other} still alive after join");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
