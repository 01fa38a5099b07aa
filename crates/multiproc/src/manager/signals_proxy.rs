//! [`Event`], [`Condition`] and [`Barrier`] proxies.

use std::marker::PhantomData;
use std::time::Duration;

use super::ManagerError;
use super::protocol::{Kind, Op, Owner};
use super::proxy::{ObjectRef, proxy};
use super::sync::{AcquireResult, acquire};
use crate::sys::Deadline;

/// An event in a manager (Python's `manager.Event()`): a flag that
/// processes wait to see set.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let manager = multiproc::manager::Manager::start().unwrap();
/// let e = manager.event().unwrap();
/// assert!(!e.wait_timeout(Duration::from_millis(10)).unwrap());
/// e.set().unwrap();
/// assert!(e.is_set().unwrap());
/// e.wait().unwrap();
/// e.clear().unwrap();
/// assert!(!e.is_set().unwrap());
/// ```
pub struct Event {
    object: ObjectRef,
    _type: PhantomData<()>,
}

proxy!(Event, Kind::Event);

impl Event {
    /// Sets the flag, waking every waiter.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn set(&self) -> Result<(), ManagerError> {
        self.object.unit(Op::Set)
    }

    /// Clears the flag.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.object.unit(Op::ClearEvent)
    }

    /// True when the flag is set.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn is_set(&self) -> Result<bool, ManagerError> {
        self.object.bool(Op::IsSet)
    }

    /// Waits until the flag is set (a `set` undone at once by a `clear`
    /// still wakes every waiter, as in Python).
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn wait(&self) -> Result<(), ManagerError> {
        self.object.bool(Op::Wait { timeout: None }).map(drop)
    }

    /// Waits at most `timeout` for the flag; true if it is set, or was set
    /// while this call waited.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        self.object.bool(Op::Wait { timeout: Some(timeout) })
    }
}

/// A condition variable in a manager (Python's `manager.Condition()`), with
/// its own reentrant lock: acquire it, then [`wait`](ConditionGuard::wait)
/// (which releases the lock while waiting) or [`notify`](Condition::notify).
/// Each notify wakes exactly that many waiters.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let manager = multiproc::manager::Manager::start().unwrap();
/// let cond = manager.condition().unwrap();
/// let mut guard = cond.acquire().unwrap();
/// assert!(!guard.wait_timeout(Duration::from_millis(10)).unwrap()); // nobody notified
/// drop(guard);
/// assert_eq!(cond.notify_all().unwrap(), 0);
/// ```
pub struct Condition {
    object: ObjectRef,
    _type: PhantomData<()>,
}

proxy!(Condition, Kind::Condition);

/// Holds a [`Condition`]'s lock; releases it when dropped.
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct ConditionGuard<'a> {
    object: &'a ObjectRef,
    /// Who acquired it: the condition's lock is reentrant, released (and
    /// waited on) by its owner only.
    owner: Owner,
}

impl Condition {
    /// Acquires the condition's lock, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`Lock::acquire`](super::Lock::acquire).
    pub fn acquire(&self) -> AcquireResult<ConditionGuard<'_>> {
        acquire(&self.object, None, |owner| ConditionGuard { object: &self.object, owner })
    }

    /// Acquires the condition's lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Lock::acquire_timeout`](super::Lock::acquire_timeout).
    pub fn acquire_timeout(&self, timeout: Duration) -> AcquireResult<ConditionGuard<'_>> {
        acquire(&self.object, Some(timeout), |owner| ConditionGuard { object: &self.object, owner })
    }

    /// Wakes up to `n` waiters; returns how many it woke.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn notify(&self, n: usize) -> Result<usize, ManagerError> {
        Ok(self.object.count(Op::Notify(n as u64))? as usize)
    }

    /// Wakes every waiter; returns how many it woke.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn notify_all(&self) -> Result<usize, ManagerError> {
        Ok(self.object.count(Op::NotifyAll)? as usize)
    }
}

impl ConditionGuard<'_> {
    /// Keeps the lock held after the guard is gone.
    pub fn leak(self) {
        std::mem::forget(self);
    }

    fn wait_inner(&mut self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
        self.object.bool(Op::CondWait { owner: self.owner, timeout })
    }

    /// Releases the lock, waits for a notify, and takes the lock back.
    ///
    /// # Errors
    ///
    /// [`RemoteError::OwnerDied`](super::RemoteError::OwnerDied) when the
    /// lock was taken back from a holder that died holding it (it is held
    /// again: the guard stays valid); the manager cannot be reached.
    pub fn wait(&mut self) -> Result<(), ManagerError> {
        self.wait_inner(None).map(drop)
    }

    /// As [`ConditionGuard::wait`], waiting at most `timeout` for the
    /// notify; true if notified. The lock is held again either way.
    ///
    /// # Errors
    ///
    /// As [`ConditionGuard::wait`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool, ManagerError> {
        self.wait_inner(Some(timeout))
    }

    /// Waits until `condition()` is true (checked with the lock held, before
    /// each wait and after each notify).
    ///
    /// # Errors
    ///
    /// As [`ConditionGuard::wait`].
    pub fn wait_for(&mut self, mut condition: impl FnMut() -> bool) -> Result<(), ManagerError> {
        while !condition() {
            self.wait()?;
        }
        Ok(())
    }

    /// As [`ConditionGuard::wait_for`], for at most `timeout`; returns the
    /// last value of `condition()`.
    ///
    /// # Errors
    ///
    /// As [`ConditionGuard::wait`].
    pub fn wait_for_timeout(
        &mut self,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) -> Result<bool, ManagerError> {
        // A timeout past the clock's end (`Duration::MAX`) never expires.
        let deadline = Deadline::after(timeout);
        loop {
            if condition() {
                return Ok(true);
            }
            match deadline.remaining() {
                Some(left) if left.is_zero() => return Ok(false),
                Some(left) => self.wait_timeout(left)?,
                None => self.wait_timeout(timeout)?,
            };
        }
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        let _ = self.object.unit(Op::Release { owner: self.owner });
    }
}

/// A barrier in a manager (Python's `manager.Barrier(parties)`): each
/// `wait` blocks until `parties` callers are waiting, then all go on; each
/// gets a distinct index in `0..parties`. A timeout, [`abort`](Barrier::abort)
/// or [`reset`](Barrier::reset) breaks it for every waiter
/// ([`RemoteError::BarrierBroken`](super::RemoteError::BarrierBroken)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let manager = multiproc::manager::Manager::start().unwrap();
/// let b = manager.barrier(1).unwrap();
/// assert_eq!(b.wait().unwrap(), 0);
/// let b2 = manager.barrier(2).unwrap();
/// assert!(b2.wait_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
/// assert!(b2.is_broken().unwrap());
/// b2.reset().unwrap();
/// assert!(!b2.is_broken().unwrap());
/// ```
pub struct Barrier {
    object: ObjectRef,
    _type: PhantomData<()>,
}

proxy!(Barrier, Kind::Barrier);

impl Barrier {
    /// Waits for every party; returns this caller's index.
    ///
    /// # Errors
    ///
    /// `BarrierBroken`, or the manager cannot be reached.
    pub fn wait(&self) -> Result<usize, ManagerError> {
        Ok(self.object.count(Op::BarrierWait { timeout: None })? as usize)
    }

    /// As [`Barrier::wait`], for at most `timeout` (a timeout breaks the barrier).
    ///
    /// # Errors
    ///
    /// `Timeout`, `BarrierBroken`, or the manager cannot be reached.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, ManagerError> {
        Ok(self.object.count(Op::BarrierWait { timeout: Some(timeout) })? as usize)
    }

    /// Breaks the barrier: waiters and later waits fail until a reset.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn abort(&self) -> Result<(), ManagerError> {
        self.object.unit(Op::Abort)
    }

    /// Returns the barrier to its first state; current waiters fail.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn reset(&self) -> Result<(), ManagerError> {
        self.object.unit(Op::Reset)
    }

    /// The number of parties.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn parties(&self) -> Result<usize, ManagerError> {
        Ok(self.object.count(Op::Parties)? as usize)
    }

    /// The number of parties waiting now.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn n_waiting(&self) -> Result<usize, ManagerError> {
        Ok(self.object.count(Op::NWaiting)? as usize)
    }

    /// True when the barrier is broken.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn is_broken(&self) -> Result<bool, ManagerError> {
        self.object.bool(Op::IsBroken)
    }
}
