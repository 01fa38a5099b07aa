//! Where a background call's outcome lands: the state behind
//! [`RedisAsync`](crate::RedisAsync). The call's thread completes it once;
//! waiting threads sleep on a condition variable and a polled future
//! leaves its waker, so nothing polls in a loop.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use crate::error::RedisPoolError;

pub(crate) type Outcome<T> = Result<T, RedisPoolError>;
pub(crate) type OkCallback<T> = Box<dyn FnOnce(&T) + Send>;
pub(crate) type ErrCallback = Box<dyn FnOnce(&RedisPoolError) + Send>;

/// One outcome, delivered once.
pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
    cond: Condvar,
}

pub(crate) struct SlotState<T> {
    /// The outcome; `None` once done means taken.
    pub outcome: Option<Outcome<T>>,
    done: bool,
    /// `complete` ran (or is running the callbacks): later callbacks run
    /// on their caller's thread.
    claimed: bool,
    /// A late callback is running with the outcome lent out.
    in_callback: bool,
    waker: Option<Waker>,
    on_ok: Option<OkCallback<T>>,
    on_err: Option<ErrCallback>,
}

impl<T> SlotState<T> {
    /// The outcome is known and no callback holds it.
    pub(crate) fn settled(&self) -> bool {
        self.done && !self.in_callback
    }
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Slot<T> {
        Slot {
            state: Mutex::new(SlotState {
                outcome: None,
                done: false,
                claimed: false,
                in_callback: false,
                waker: None,
                on_ok: None,
                on_err: None,
            }),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the outcome (once), runs the matching callback, then wakes
    /// every waiter and the future: as in Python, the result is ready only
    /// after its callback returned.
    pub(crate) fn complete(&self, outcome: Outcome<T>) {
        let (on_ok, on_err) = {
            let mut st = self.lock();
            if st.claimed {
                return;
            }
            st.claimed = true;
            (st.on_ok.take(), st.on_err.take())
        };
        run_callback(&outcome, on_ok, on_err);
        let waker = {
            let mut st = self.lock();
            st.outcome = Some(outcome);
            st.done = true;
            st.waker.take()
        };
        self.cond.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits until settled or `deadline`; the guard when settled.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, SlotState<T>>> {
        let mut st = self.lock();
        loop {
            if st.settled() {
                return Some(st);
            }
            match deadline {
                None => st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    st = self.cond.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
    }

    /// Leaves `waker` to be woken on completion; the outcome if settled.
    pub(crate) fn poll(&self, waker: &Waker) -> Option<Outcome<T>> {
        let mut st = self.lock();
        if st.settled() {
            return Some(st.outcome.take().unwrap_or(Err(RedisPoolError::Taken)));
        }
        match &mut st.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        None
    }

    /// Attaches callbacks: kept for `complete` when it has not run yet,
    /// else run here at once with the outcome lent out (not at all when
    /// the outcome was taken).
    pub(crate) fn attach(&self, on_ok: Option<OkCallback<T>>, on_err: Option<ErrCallback>) {
        let mut st = self.lock();
        if !st.claimed {
            if on_ok.is_some() {
                st.on_ok = on_ok;
            }
            if on_err.is_some() {
                st.on_err = on_err;
            }
            return;
        }
        drop(st);
        let Some(mut st) = self.wait_until(None) else { unreachable!("no deadline") };
        let Some(outcome) = st.outcome.take() else { return };
        st.in_callback = true;
        drop(st);
        run_callback(&outcome, on_ok, on_err);
        let mut st = self.lock();
        st.outcome = Some(outcome);
        st.in_callback = false;
        let waker = st.waker.take();
        drop(st);
        self.cond.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Runs the callback that matches the outcome; a panicking callback is
/// logged and otherwise ignored (the result still arrives).
fn run_callback<T>(outcome: &Outcome<T>, on_ok: Option<OkCallback<T>>, on_err: Option<ErrCallback>) {
    let run = || match (outcome, on_ok, on_err) {
        (Ok(v), Some(cb), _) => cb(v),
        (Err(e), _, Some(cb)) => cb(e),
        _ => {}
    };
    if panic::catch_unwind(AssertUnwindSafe(run)).is_err() {
        tracing::error!("a redis pool result callback panicked; the panic was ignored");
    }
}
