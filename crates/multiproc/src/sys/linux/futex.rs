//! Process-shared futexes: wait on and wake a 32-bit word in shared memory.

use std::sync::atomic::AtomicU32;

use rustix::thread::futex;

use super::super::Deadline;

/// How a futex wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FutexWait {
    /// Woken, interrupted, or the word no longer held the expected value:
    /// re-check the condition.
    Retry,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or the deadline passes. The
/// futex is process-shared (not `FUTEX_PRIVATE`), so a waker in another
/// process that maps the same memory wakes it.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> FutexWait {
    let timeout = match deadline.remaining() {
        None => None,
        Some(left) if left.is_zero() => return FutexWait::TimedOut,
        Some(left) => {
            Some(rustix::thread::futex::Timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as _ })
        }
    };
    match futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()) {
        Err(rustix::io::Errno::TIMEDOUT) => FutexWait::TimedOut,
        // Ok (woken), EAGAIN (value changed), EINTR: the caller re-checks.
        _ => FutexWait::Retry,
    }
}

/// Wakes up to `count` waiters on `word`; returns how many were woken.
pub(crate) fn wake(word: &AtomicU32, count: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), count).unwrap_or(0)
}

/// Wakes every waiter on `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

/// Wakes up to `count` waiters on the futex word at address `addr`, which
/// may no longer be mapped (then nothing happens) or may by now hold another
/// futex word (whose waiters get a spurious wake-up, which they tolerate).
pub(crate) fn wake_address(addr: usize, count: u32) {
    // SAFETY: FUTEX_WAKE does not read or write the word; the kernel only
    // uses the address to find waiters and answers EFAULT if it is unmapped.
    // No memory of this process is accessed through the pointer.
    unsafe { libc::syscall(libc::SYS_futex, addr as *const u32, libc::FUTEX_WAKE, count, 0usize, 0usize, 0u32) };
}
