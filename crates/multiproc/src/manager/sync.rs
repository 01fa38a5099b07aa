//! Lock proxies: [`Lock`], [`RLock`] and [`Semaphore`], with the names and
//! timed forms of [`crate::sync`]. Event, condition and barrier proxies are
//! in `signals_proxy`.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::ManagerError;
use super::client;
use super::protocol::{Kind, Op, Owner};
use super::proxy::{ObjectRef, proxy};
use crate::OwnerDied;

/// Why an acquisition did not simply succeed.
pub enum AcquireError<G> {
    /// Acquired, but the previous holder died holding the lock (its process
    /// exited or was killed): the guard is inside and the lock is held.
    OwnerDied(OwnerDied<G>),
    /// Not acquired: still held when the timeout passed (at once for a try).
    Timeout,
    /// The manager could not be reached, or refused the call.
    Manager(ManagerError),
}

impl<G> AcquireError<G> {
    /// True for [`AcquireError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, AcquireError::Timeout)
    }
}

impl<G> From<ManagerError> for AcquireError<G> {
    fn from(e: ManagerError) -> Self {
        if e.is_timeout() { AcquireError::Timeout } else { AcquireError::Manager(e) }
    }
}

impl<G> fmt::Debug for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            AcquireError::Timeout => f.write_str("Timeout"),
            AcquireError::Manager(e) => f.debug_tuple("Manager").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::OwnerDied(e) => e.fmt(f),
            AcquireError::Timeout => f.write_str("timed out waiting for the lock"),
            AcquireError::Manager(e) => e.fmt(f),
        }
    }
}

impl<G> std::error::Error for AcquireError<G> {}

/// The result of acquiring a manager lock.
pub type AcquireResult<G> = Result<G, AcquireError<G>>;

/// Acquires the lock of `object` for this thread; `guard` makes the guard,
/// which keeps the owner it acquired as (a guard is `Send`: wherever it
/// ends, it releases what this thread took).
pub(crate) fn acquire<G>(
    object: &ObjectRef,
    timeout: Option<Duration>,
    guard: impl FnOnce(Owner) -> G,
) -> AcquireResult<G> {
    let owner = client::owner();
    let owner_died = object.acquired(Op::Acquire { owner, timeout })?;
    let guard = guard(owner);
    if owner_died { Err(AcquireError::OwnerDied(OwnerDied::new(guard))) } else { Ok(guard) }
}

/// Holds a manager [`Lock`] or [`RLock`]; releases it when dropped, on
/// whichever thread that happens (it releases the level its thread took).
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard<'a> {
    object: &'a ObjectRef,
    /// Who acquired it: an `RLock` is released by its owner only.
    owner: Owner,
}

impl LockGuard<'_> {
    /// Keeps the lock held after the guard is gone.
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // A manager that is gone has released it already.
        let _ = self.object.unit(Op::Release { owner: self.owner });
    }
}

/// A lock in a manager (Python's `manager.Lock()`): any thread of any
/// process may release it. If the process holding it dies, the next
/// acquirer gets it with [`AcquireError::OwnerDied`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let manager = multiproc::manager::Manager::start().unwrap();
/// let lock = manager.lock().unwrap();
/// let guard = lock.acquire().unwrap();
/// assert!(lock.is_locked().unwrap());
/// assert!(lock.acquire_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
/// drop(guard);
/// assert!(lock.try_acquire().is_ok());
/// ```
pub struct Lock {
    object: ObjectRef,
    _type: PhantomData<()>,
}

proxy!(Lock, Kind::Lock);

/// A reentrant lock in a manager (Python's `manager.RLock()`): the thread
/// holding it may acquire it again, and only it may release it.
///
/// # Examples
///
/// ```
/// let manager = multiproc::manager::Manager::start().unwrap();
/// let lock = manager.rlock().unwrap();
/// let a = lock.acquire().unwrap();
/// let b = lock.acquire().unwrap();
/// drop(b);
/// assert!(lock.is_locked().unwrap());
/// drop(a);
/// assert!(!lock.is_locked().unwrap());
/// ```
pub struct RLock {
    object: ObjectRef,
    _type: PhantomData<()>,
}

proxy!(RLock, Kind::RLock);

macro_rules! lock_methods {
    ($ty:ident) => {
        impl $ty {
            /// Acquires the lock, waiting as long as it takes.
            ///
            /// # Errors
            ///
            /// [`AcquireError::OwnerDied`] (acquired) when the previous holder
            /// died holding it; [`AcquireError::Manager`] when the manager
            /// cannot be reached.
            pub fn acquire(&self) -> AcquireResult<LockGuard<'_>> {
                acquire(&self.object, None, |owner| LockGuard { object: &self.object, owner })
            }

            /// Acquires the lock if it is free now.
            ///
            /// # Errors
            ///
            /// [`AcquireError::Timeout`] when it is held, or as [`Self::acquire`].
            pub fn try_acquire(&self) -> AcquireResult<LockGuard<'_>> {
                self.acquire_timeout(Duration::ZERO)
            }

            /// Acquires the lock, waiting at most `timeout`.
            ///
            /// # Errors
            ///
            /// [`AcquireError::Timeout`], or as [`Self::acquire`].
            pub fn acquire_timeout(&self, timeout: Duration) -> AcquireResult<LockGuard<'_>> {
                acquire(&self.object, Some(timeout), |owner| LockGuard { object: &self.object, owner })
            }

            /// Releases the lock (for a lock acquired with a guard that was
            /// leaked).
            ///
            /// # Errors
            ///
            /// [`RemoteError::Release`](super::RemoteError::Release) when it is
            /// not held (or, for an `RLock`, held by another thread).
            pub fn release(&self) -> Result<(), ManagerError> {
                self.object.unit(Op::Release { owner: client::owner() })
            }

            /// True while some thread holds the lock.
            ///
            /// # Errors
            ///
            /// The manager cannot be reached.
            pub fn is_locked(&self) -> Result<bool, ManagerError> {
                self.object.bool(Op::IsLocked)
            }
        }
    };
}

lock_methods!(Lock);
lock_methods!(RLock);

impl RLock {
    /// How many times the calling thread holds the lock (0: it does not).
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn depth(&self) -> Result<u32, ManagerError> {
        Ok(self.object.count(Op::Depth { owner: client::owner() })? as u32)
    }

    /// True when the calling thread holds the lock.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn is_owned(&self) -> Result<bool, ManagerError> {
        Ok(self.depth()? > 0)
    }
}

/// A semaphore in a manager (Python's `manager.Semaphore()` and
/// `BoundedSemaphore()`): a counter that `acquire` decrements, waiting
/// while it is zero, and `release` increments. A bounded one refuses to go
/// above its initial value. A semaphore has no owner: a process killed
/// after its `acquire` does not give the unit back (as in Python).
///
/// # Examples
///
/// ```
/// let manager = multiproc::manager::Manager::start().unwrap();
/// let s = manager.bounded_semaphore(1).unwrap();
/// s.acquire().unwrap();
/// assert!(!s.try_acquire().unwrap());
/// s.release().unwrap();
/// assert!(s.release().is_err()); // above its initial value
/// assert_eq!(s.value().unwrap(), 1);
/// ```
pub struct Semaphore {
    object: ObjectRef,
    _type: PhantomData<()>,
}

proxy!(Semaphore, Kind::Semaphore);

impl Semaphore {
    fn acquire_inner(&self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
        match self.object.acquired(Op::Acquire { owner: client::owner(), timeout }) {
            Ok(_) => Ok(true),
            Err(e) if e.is_timeout() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Decrements the counter, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn acquire(&self) -> Result<(), ManagerError> {
        self.acquire_inner(None).map(drop)
    }

    /// Decrements the counter if it is above zero now; false if not.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn try_acquire(&self) -> Result<bool, ManagerError> {
        self.acquire_inner(Some(Duration::ZERO))
    }

    /// Decrements the counter, waiting at most `timeout`; false on timeout.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        self.acquire_inner(Some(timeout))
    }

    /// Increments the counter, waking one waiter.
    ///
    /// # Errors
    ///
    /// A bounded semaphore already at its initial value, or the manager
    /// cannot be reached.
    pub fn release(&self) -> Result<(), ManagerError> {
        self.object.unit(Op::Release { owner: client::owner() })
    }

    /// The counter's value.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn value(&self) -> Result<u32, ManagerError> {
        Ok(self.object.count(Op::SemaphoreValue)? as u32)
    }
}
