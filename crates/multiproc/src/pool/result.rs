//! `AsyncResult`: the handle of a call that runs in the background.

use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::error::{PoolError, TaskError};

type OkCallback<T> = Box<dyn FnOnce(&T) + Send>;
type ErrCallback = Box<dyn FnOnce(&PoolError) + Send>;

/// Where a background call's outcome lands.
pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
    cond: Condvar,
}

struct SlotState<T> {
    outcome: Option<Result<T, PoolError>>,
    done: bool,
    /// A `complete` call owns the outcome (later ones are ignored).
    claimed: bool,
    /// A callback attached late is running with the outcome taken out.
    in_callback: bool,
    waker: Option<Waker>,
    on_ok: Option<OkCallback<T>>,
    on_err: Option<ErrCallback>,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Arc<Slot<T>> {
        Arc::new(Slot {
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
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the outcome (the first one wins), runs the matching callback,
    /// then wakes every waiter. As in Python, the result is ready only after
    /// its callback returned.
    pub(crate) fn complete(&self, outcome: Result<T, PoolError>) {
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
}

/// Runs the callback that matches the outcome; a panicking callback is
/// reported on stderr and otherwise ignored (it must not stop the pool).
fn run_callback<T>(outcome: &Result<T, PoolError>, on_ok: Option<OkCallback<T>>, on_err: Option<ErrCallback>) {
    let run = || match (outcome, on_ok, on_err) {
        (Ok(v), Some(cb), _) => cb(v),
        (Err(e), _, Some(cb)) => cb(e),
        _ => {}
    };
    if panic::catch_unwind(AssertUnwindSafe(run)).is_err() {
        tracing::error!("a pool result callback panicked; the panic was ignored");
    }
}

/// States of a task that can be cancelled until the scheduler takes it.
pub(crate) const TASK_PENDING: u8 = 0;
pub(crate) const TASK_TAKEN: u8 = 1;
pub(crate) const TASK_CANCELLED: u8 = 2;

/// The outcome of a call that runs in the background: Python's
/// `AsyncResult`, also a [`Future`].
///
/// Exactly one of the callbacks runs per call: [`AsyncResult::callback`]
/// with the value, or [`AsyncResult::error_callback`] with the error. Callbacks run
/// on the pool's scheduler thread (or at once, on the caller's thread, if the
/// result is already there) and should be quick. A callback attached after
/// the outcome was taken out (by [`AsyncResult::get_timeout`] or by polling
/// the future) does not run: there is nothing left to give it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::Pool;
///
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// let pool = Pool::new(1).unwrap();
/// let r = pool.apply_async(add, (2, 3));
/// assert!(r.wait_timeout(Duration::from_secs(10)));
/// assert!(r.ready());
/// assert!(r.successful().unwrap());
/// assert_eq!(r.get().unwrap(), 5);
/// ```
pub struct AsyncResult<T> {
    slot: Arc<Slot<T>>,
    cancel: Option<Arc<AtomicU8>>,
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult").field("ready", &self.ready()).finish()
    }
}

impl<T> AsyncResult<T> {
    pub(crate) fn new(slot: Arc<Slot<T>>, cancel: Option<Arc<AtomicU8>>) -> AsyncResult<T> {
        AsyncResult { slot, cancel }
    }

    /// An already failed result (a call refused by a closed pool).
    pub(crate) fn failed(error: PoolError) -> AsyncResult<T> {
        let slot = Slot::new();
        slot.complete(Err(error));
        AsyncResult { slot, cancel: None }
    }

    /// True once the outcome is known (Python's `ready()`).
    pub fn ready(&self) -> bool {
        let st = self.slot.lock();
        st.done && !st.in_callback
    }

    /// Whether the call succeeded (Python's `successful()`).
    ///
    /// # Errors
    ///
    /// [`PoolError::NotReady`] before the outcome is known, or
    /// [`PoolError::Taken`] after `get` took it.
    pub fn successful(&self) -> Result<bool, PoolError> {
        let st = self.slot.lock();
        if !st.done || st.in_callback {
            return Err(PoolError::NotReady);
        }
        st.outcome.as_ref().map(Result::is_ok).ok_or(PoolError::Taken)
    }

    /// Waits until the outcome is known.
    pub fn wait(&self) {
        let mut st = self.slot.lock();
        while !st.done || st.in_callback {
            st = self.slot.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits at most `timeout`; true when the outcome is known.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout)).is_some()
    }

    /// Waits until done or `deadline`; the guard when done.
    fn wait_until(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, SlotState<T>>> {
        let mut st = self.slot.lock();
        loop {
            if st.done && !st.in_callback {
                return Some(st);
            }
            match deadline {
                None => st = self.slot.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    st = self.slot.cond.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
    }

    /// Waits for the outcome and returns it.
    ///
    /// # Errors
    ///
    /// The call failed ([`PoolError::Task`] with what happened to the task),
    /// or the value was taken by an earlier `get_timeout`.
    pub fn get(self) -> Result<T, PoolError> {
        self.wait_until(None).expect("no deadline").outcome.take().unwrap_or(Err(PoolError::Taken))
    }

    /// Waits at most `timeout` for the outcome. On timeout the call goes on
    /// and this result can be asked again; once the outcome is returned, it
    /// is gone from here.
    ///
    /// # Errors
    ///
    /// [`PoolError::Timeout`] after ≈`timeout`, or as for [`AsyncResult::get`].
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<T, PoolError> {
        match self.wait_until(Instant::now().checked_add(timeout)) {
            Some(mut st) => st.outcome.take().unwrap_or(Err(PoolError::Taken)),
            None => Err(PoolError::Timeout(timeout)),
        }
    }

    /// Runs `callback` with the value if the call succeeds (Python's
    /// `callback=`).
    pub fn callback(self, callback: impl FnOnce(&T) + Send + 'static) -> Self {
        self.attach(Some(Box::new(callback)), None)
    }

    /// Runs `callback` with the error if the call fails (Python's
    /// `error_callback=`).
    pub fn error_callback(self, callback: impl FnOnce(&PoolError) + Send + 'static) -> Self {
        self.attach(None, Some(Box::new(callback)))
    }

    /// Old name of [`AsyncResult::callback`].
    #[deprecated(since = "0.1.0", note = "use `callback`, Python's name")]
    pub fn on_success(self, callback: impl FnOnce(&T) + Send + 'static) -> Self {
        self.callback(callback)
    }

    /// Old name of [`AsyncResult::error_callback`].
    #[deprecated(since = "0.1.0", note = "use `error_callback`, Python's name")]
    pub fn on_error(self, callback: impl FnOnce(&PoolError) + Send + 'static) -> Self {
        self.error_callback(callback)
    }

    fn attach(self, on_ok: Option<OkCallback<T>>, on_err: Option<ErrCallback>) -> Self {
        let mut st = self.slot.lock();
        if !st.claimed {
            if on_ok.is_some() {
                st.on_ok = on_ok;
            }
            if on_err.is_some() {
                st.on_err = on_err;
            }
            drop(st);
            return self;
        }
        // Done or finishing: run it here, with the outcome lent out of the slot.
        while !st.done || st.in_callback {
            st = self.slot.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let Some(outcome) = st.outcome.take() else {
            drop(st);
            return self;
        };
        st.in_callback = true;
        drop(st);
        run_callback(&outcome, on_ok, on_err);
        let mut st = self.slot.lock();
        st.outcome = Some(outcome);
        st.in_callback = false;
        drop(st);
        self.slot.cond.notify_all();
        self
    }

    /// Cancels the task if it has not been handed to a worker yet; true when
    /// it was cancelled (its outcome is then [`TaskError::Cancelled`]).
    /// Only single tasks (`apply_async`, `Executor::submit`) can be cancelled.
    pub fn cancel(&self) -> bool {
        let Some(state) = &self.cancel else {
            return false;
        };
        // ORDERING: the scheduler CASes the same word; whoever wins owns the task.
        let won = state.compare_exchange(TASK_PENDING, TASK_CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if won {
            self.slot.complete(Err(PoolError::Task { index: None, error: TaskError::Cancelled }));
        }
        won
    }

    /// True if [`AsyncResult::cancel`] cancelled the task.
    pub fn cancelled(&self) -> bool {
        // ORDERING: Acquire pairs with the winning CAS.
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Acquire) == TASK_CANCELLED)
    }
}

impl<T> Future for AsyncResult<T> {
    type Output = Result<T, PoolError>;

    /// Ready with the outcome; polling again after that gives
    /// [`PoolError::Taken`].
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.slot.lock();
        if st.done && !st.in_callback {
            return Poll::Ready(st.outcome.take().unwrap_or(Err(PoolError::Taken)));
        }
        match &mut st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
