//! Errors of the synchronization primitives.

use std::fmt;

/// The lock was acquired, but its previous owner died while holding it: the
/// data it protects may be half-updated.
///
/// This is an `Err` so that it cannot be ignored by accident; the guard is
/// inside and the lock **is held**. Recover with [`OwnerDied::into_inner`]
/// after checking (or repairing) the protected data. Only the first acquirer
/// after the death is told; the lock is ordinary again afterwards.
///
/// # Examples
///
/// ```
/// use multiproc::{Lock, OwnerDied};
///
/// let lock = Lock::new().unwrap();
/// let guard = match lock.acquire() {
///     Ok(guard) => guard,
///     Err(died) => {
///         // repair the shared data here
///         died.into_inner()
///     }
/// };
/// drop(guard);
/// ```
pub struct OwnerDied<G> {
    inner: G,
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(inner: G) -> OwnerDied<G> {
        OwnerDied { inner }
    }

    /// The guard (or result) that comes with the news; the lock is held.
    pub fn into_inner(self) -> G {
        self.inner
    }

    /// A reference to the guard.
    pub fn get_ref(&self) -> &G {
        &self.inner
    }

    /// A mutable reference to the guard.
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.inner
    }

    pub(crate) fn map<H>(self, f: impl FnOnce(G) -> H) -> OwnerDied<H> {
        OwnerDied { inner: f(self.inner) }
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied { .. }")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the previous owner of the lock died while holding it; the protected data may be inconsistent")
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

/// The result of a blocking acquisition: the guard, or the guard together
/// with the news that the previous owner died.
pub type LockResult<G> = Result<G, OwnerDied<G>>;

/// Why an acquisition with a timeout (or a try) did not simply succeed.
///
/// A timed acquisition fails with [`TryLockError::Timeout`], a try (which
/// does not wait) with [`TryLockError::WouldBlock`].
pub enum TryLockError<G> {
    /// Acquired, but the previous owner died holding the lock (the guard is inside).
    OwnerDied(OwnerDied<G>),
    /// Not acquired: the lock was still held when the timeout passed.
    Timeout,
    /// Not acquired: a `try_acquire` found the lock held (it did not wait).
    WouldBlock,
}

impl<G> TryLockError<G> {
    /// True for [`TryLockError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, TryLockError::Timeout)
    }

    /// True for [`TryLockError::WouldBlock`].
    pub fn is_would_block(&self) -> bool {
        matches!(self, TryLockError::WouldBlock)
    }
}

impl<G> From<OwnerDied<G>> for TryLockError<G> {
    fn from(e: OwnerDied<G>) -> Self {
        TryLockError::OwnerDied(e)
    }
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            TryLockError::Timeout => f.write_str("Timeout"),
            TryLockError::WouldBlock => f.write_str("WouldBlock"),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::OwnerDied(e) => e.fmt(f),
            TryLockError::Timeout => f.write_str("timed out waiting for the lock"),
            TryLockError::WouldBlock => f.write_str("the lock is held (try_acquire does not wait)"),
        }
    }
}

impl<G> std::error::Error for TryLockError<G> {}

/// The result of [`Lock::acquire_timeout`](crate::Lock::acquire_timeout) and
/// friends.
pub type TryLockResult<G> = Result<G, TryLockError<G>>;

/// A release that is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The lock is not held by anyone.
    #[error("release of an unheld lock")]
    NotHeld,
    /// The lock is held, but by another thread or process (an `RLock` may
    /// only be released by its owner).
    #[error("cannot release a lock owned by another thread or process")]
    NotOwner,
    /// A `BoundedSemaphore` released more times than it was acquired.
    #[error("semaphore released too many times")]
    TooManyReleases,
}

/// Why a [`Barrier`](crate::Barrier) wait failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum BarrierError {
    /// The barrier is broken (aborted, reset while waiting, another party
    /// timed out, or the action panicked); call `reset` to use it again.
    #[error("the barrier is broken")]
    Broken,
    /// This party's wait timed out; the barrier is now broken for every party.
    #[error("timed out waiting at the barrier; the barrier is now broken")]
    Timeout,
}
