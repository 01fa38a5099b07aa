//! How a manager call waits: on a condition variable, until its object is
//! ready, its timeout passes, or its caller goes away.
//!
//! Each call runs on its connection's thread, so a wait blocks only that
//! client. The wait wakes at least every [`SLICE`] to check that the client
//! is still connected (a client waits for its answer without sending, so a
//! readable socket means it hung up) and that the manager is not stopping;
//! a client that is gone gets nothing, and its wait takes nothing from the
//! object (a queue item stays for the next taker).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::protocol::RemoteError;
use super::server::Caller;
use crate::sys::Deadline;

/// How often a waiting call checks that its client is still there.
const SLICE: Duration = Duration::from_millis(100);

/// Locks an object's state, recovering it if a thread panicked holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a call waiting on an object's state waits on: a condition variable
/// that knows whether anyone waits. `Condvar::notify_all` makes a system
/// call even with no waiter (one `futex` wake per queue `put` and `get`,
/// seen with `strace`), and most changes have no waiter: a notify skips the
/// call then.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    cv: Condvar,
    /// Calls inside [`wait_while`] on this. Changed and read only with the
    /// object's mutex held (waiters count themselves before they sleep, and
    /// every notify comes with the state change it announces, under that
    /// mutex), so the mutex orders it.
    count: AtomicUsize,
    /// The object was removed: waiting calls end with `Removed`.
    removed: AtomicBool,
}

impl Waiters {
    /// Wakes every waiting call, if there is one. Call it with the object's
    /// mutex held (see [`Waiters::count`]).
    pub(crate) fn notify_all(&self) {
        // ORDERING: Relaxed: the object's mutex, held here and by every
        // waiter while it counts itself, orders the count.
        if self.count.load(Ordering::Relaxed) > 0 {
            self.cv.notify_all();
        }
    }

    /// The object whose state `state` guards was removed: ends every call
    /// waiting on it (now or later) with `Removed`.
    pub(crate) fn retire<S>(&self, state: &Mutex<S>) {
        let _guard = lock(state);
        // ORDERING: Relaxed: set and read with the object's mutex held.
        self.removed.store(true, Ordering::Relaxed);
        self.cv.notify_all();
    }
}

/// Waits while `blocked(state)` is true, for at most `timeout` (`None`:
/// as long as it takes). Returns the guard with `Ok` when the state is ready
/// (and the caller still there), with `Err(Timeout)` when time ran out or
/// the caller went away (nobody reads that answer), or with `Err(Removed)`
/// when the object was removed (see [`Waiters::retire`]).
pub(crate) fn wait_while<'a, S>(
    waiters: &Waiters,
    mut guard: MutexGuard<'a, S>,
    timeout: Option<Duration>,
    caller: &Caller<'_>,
    mut blocked: impl FnMut(&mut S) -> bool,
) -> (MutexGuard<'a, S>, Result<(), RemoteError>) {
    if !blocked(&mut guard) {
        return (guard, Ok(()));
    }
    // A timeout past the clock's end (`Duration::MAX`) never expires.
    let deadline = Deadline::from_timeout(timeout);
    // ORDERING: Relaxed: counted with the mutex held (see `Waiters::count`).
    waiters.count.fetch_add(1, Ordering::Relaxed);
    // Counted among the manager's waiting calls once it sleeps (a try
    // without waiting, as the dispatcher makes first, is not a wait).
    let mut counted = None;
    let outcome = loop {
        // ORDERING: Relaxed: the mutex is held (see `Waiters::retire`).
        if waiters.removed.load(Ordering::Relaxed) {
            break Err(RemoteError::Removed);
        }
        let slice = match deadline.remaining() {
            None => SLICE,
            Some(left) if !left.is_zero() => left.min(SLICE),
            Some(_) => break Err(RemoteError::Timeout),
        };
        counted.get_or_insert_with(|| caller.waiting());
        guard = waiters.cv.wait_timeout(guard, slice).unwrap_or_else(|e| e.into_inner()).0;
        let ready = !blocked(&mut guard);
        // The slow path only: a wait that ends checks its caller once more,
        // so what it takes goes to a client that is there to receive it.
        if caller.gone() {
            break Err(RemoteError::Timeout);
        }
        if ready {
            break Ok(());
        }
    };
    // ORDERING: Relaxed: the mutex is held again here.
    waiters.count.fetch_sub(1, Ordering::Relaxed);
    (guard, outcome)
}
