//! `RLock`: a reentrant robust lock.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{LockResult, OwnerDied, ReleaseError, TryLockError, TryLockResult};
use crate::memory::raw_mutex::{Acquired, RawMutex};
use crate::memory::segment::{Shared, SharedObject};
use crate::sys::Deadline;

/// The shared part of an [`RLock`].
#[derive(Debug)]
#[repr(C)]
pub(crate) struct RLockState {
    tag: AtomicU64,
    raw: RawMutex,
}

// SAFETY: repr(C) atomics only; all-zero is unlocked with depth 0; `tag` is a field.
unsafe impl SharedObject for RLockState {
    const TAG: u64 = u64::from_le_bytes(*b"mp.RLock");
    fn tag(&self) -> &AtomicU64 {
        &self.tag
    }
}

/// A reentrant lock (Python's `multiprocessing.RLock`): the thread that
/// holds it may acquire it again, and it is free once every acquisition has
/// been released. Only the owner may release it.
///
/// Robust like [`Lock`](crate::Lock): when the owner dies, the next acquirer
/// gets the lock (at depth 1) and [`OwnerDied`].
///
/// # Examples
///
/// ```
/// let r = multiproc::RLock::new().unwrap();
/// let outer = r.acquire().unwrap();
/// let inner = r.acquire().unwrap(); // same thread: no deadlock
/// assert_eq!(r.depth(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!r.locked());
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RLock {
    state: Shared<RLockState>,
}

impl RLock {
    /// A new, unlocked reentrant lock.
    ///
    /// # Errors
    ///
    /// The OS refused the memory.
    pub fn new() -> io::Result<RLock> {
        Ok(RLock { state: Shared::create("multiproc-rlock", |_| {})? })
    }

    /// Takes the lock (again, if this thread already holds it).
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (with the guard; the lock is held) if the previous owner
    /// died holding it.
    pub fn acquire(&self) -> LockResult<RLockGuard<'_>> {
        match self.acquire_until(Deadline::NEVER) {
            Ok(g) => Ok(g),
            Err(TryLockError::OwnerDied(e)) => Err(e),
            Err(TryLockError::Timeout | TryLockError::WouldBlock) => {
                unreachable!("a wait without a deadline does not time out")
            }
        }
    }

    /// Takes the lock if it is free or already ours (does not look for a
    /// dead owner).
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] if another thread holds it.
    pub fn try_acquire(&self) -> TryLockResult<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
        if self.raw().try_lock() {
            self.set_depth(1);
            Ok(self.new_guard())
        } else {
            Err(TryLockError::WouldBlock)
        }
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// # Errors
    ///
    /// [`TryLockError::Timeout`] after about `timeout`;
    /// [`TryLockError::OwnerDied`] (with the guard) after a dead owner.
    pub fn acquire_timeout(&self, timeout: Duration) -> TryLockResult<RLockGuard<'_>> {
        self.acquire_until(Deadline::after(timeout))
    }

    fn acquire_until(&self, deadline: Deadline) -> TryLockResult<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
        let how = self.raw().lock(deadline).map_err(|_| TryLockError::Timeout)?;
        self.set_depth(1);
        match how {
            Acquired::Clean => Ok(self.new_guard()),
            Acquired::OwnerDied => Err(TryLockError::OwnerDied(OwnerDied::new(self.new_guard()))),
        }
    }

    fn reenter(&self) -> Option<RLockGuard<'_>> {
        if !self.raw().is_owned_by_current() {
            return None;
        }
        // ORDERING: Relaxed: the depth is only touched by the owner thread.
        let depth = self.raw().count.load(Ordering::Relaxed);
        self.set_depth(depth.checked_add(1).expect("RLock acquired too many times"));
        Some(self.new_guard())
    }

    /// Releases one level of a lock this thread holds (Python's `release`,
    /// after [`RLockGuard::leak`]).
    ///
    /// # Errors
    ///
    /// [`ReleaseError::NotHeld`] if nobody holds it,
    /// [`ReleaseError::NotOwner`] if another thread or process does.
    pub fn release(&self) -> Result<(), ReleaseError> {
        if !self.raw().is_owned_by_current() {
            return Err(if self.raw().is_locked() { ReleaseError::NotOwner } else { ReleaseError::NotHeld });
        }
        // ORDERING: Relaxed: owner-only field.
        let depth = self.raw().count.load(Ordering::Relaxed);
        if depth <= 1 {
            self.set_depth(0);
            self.raw().unlock();
        } else {
            self.set_depth(depth - 1);
        }
        Ok(())
    }

    /// True if some thread holds the lock (Python's `locked()`).
    pub fn locked(&self) -> bool {
        self.raw().is_locked()
    }

    /// Old name of [`RLock::locked`].
    #[deprecated(since = "0.1.0", note = "use `locked`, Python's name")]
    pub fn is_locked(&self) -> bool {
        self.locked()
    }

    /// True if the calling thread holds the lock.
    pub fn is_owned(&self) -> bool {
        self.raw().is_owned_by_current()
    }

    /// How many times the calling thread holds the lock (0 if it does not).
    pub fn depth(&self) -> u32 {
        // ORDERING: Relaxed: owner-only field, read by the owner.
        if self.is_owned() { self.raw().count.load(Ordering::Relaxed) } else { 0 }
    }

    fn set_depth(&self, depth: u32) {
        // ORDERING: Relaxed: owner-only field; the lock word's Acquire and
        // Release order it for the next owner (who overwrites it anyway).
        self.raw().count.store(depth, Ordering::Relaxed);
    }

    fn raw(&self) -> &RawMutex {
        &self.state.raw
    }

    fn new_guard(&self) -> RLockGuard<'_> {
        RLockGuard { lock: self, _not_send: PhantomData }
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock").field("locked", &self.locked()).field("owned", &self.is_owned()).finish()
    }
}

/// One level of an [`RLock`] held by this thread; released when dropped.
#[must_use = "the lock level is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// Keeps this level held without a guard; release it later on this
    /// thread with [`RLock::release`].
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // The guard proves this thread holds a level (guards are not Send);
        // an error here means the user released a level by hand as well.
        let _ = self.lock.release();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLockGuard { .. }")
    }
}
