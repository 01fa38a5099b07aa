//! `AsyncResult`: the handle of a call that runs in the background.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use super::error::{PoolError, TaskError};
use super::outcome::OutcomeSlot;

/// Where a pool call's outcome lands.
pub(crate) type Slot<T> = OutcomeSlot<T, PoolError>;

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
        let slot = Arc::new(Slot::new());
        slot.complete(Err(error));
        AsyncResult { slot, cancel: None }
    }

    /// True once the outcome is known (Python's `ready()`).
    pub fn ready(&self) -> bool {
        self.slot.ready()
    }

    /// Whether the call succeeded (Python's `successful()`).
    ///
    /// # Errors
    ///
    /// [`PoolError::NotReady`] before the outcome is known, or
    /// [`PoolError::Taken`] after `get` took it.
    pub fn successful(&self) -> Result<bool, PoolError> {
        self.slot.successful()
    }

    /// Waits until the outcome is known.
    pub fn wait(&self) {
        self.slot.wait();
    }

    /// Waits at most `timeout`; true when the outcome is known.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait_timeout(timeout)
    }

    /// Waits for the outcome and returns it.
    ///
    /// # Errors
    ///
    /// The call failed ([`PoolError::Task`] with what happened to the task),
    /// or the value was taken by an earlier `get_timeout`.
    pub fn get(self) -> Result<T, PoolError> {
        self.slot.get()
    }

    /// Waits at most `timeout` for the outcome. On timeout the call goes on
    /// and this result can be asked again; once the outcome is returned, it
    /// is gone from here.
    ///
    /// # Errors
    ///
    /// [`PoolError::Timeout`] after ≈`timeout`, or as for [`AsyncResult::get`].
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<T, PoolError> {
        self.slot.get_timeout(timeout)
    }

    /// Runs `callback` with the value if the call succeeds (Python's
    /// `callback=`).
    pub fn callback(self, callback: impl FnOnce(&T) + Send + 'static) -> Self {
        self.slot.attach(Some(Box::new(callback)), None);
        self
    }

    /// Runs `callback` with the error if the call fails (Python's
    /// `error_callback=`).
    pub fn error_callback(self, callback: impl FnOnce(&PoolError) + Send + 'static) -> Self {
        self.slot.attach(None, Some(Box::new(callback)));
        self
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
        self.slot.poll_take(cx.waker())
    }
}
