//! `Lock`: a robust mutual-exclusion lock shared by processes and threads.

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

/// The shared part of a [`Lock`].
#[derive(Debug)]
#[repr(C)]
pub(crate) struct LockState {
    tag: AtomicU64,
    pub(crate) raw: RawMutex,
}

// SAFETY: repr(C) atomics only; all-zero is an unlocked lock; `tag` is a field.
unsafe impl SharedObject for LockState {
    const TAG: u64 = u64::from_le_bytes(*b"mp.Lock\0");
    fn tag(&self) -> &AtomicU64 {
        &self.tag
    }
}

/// A lock that processes and threads can share (Python's
/// `multiprocessing.Lock`), robust to a holder that dies.
///
/// [`acquire`](Lock::acquire) returns a guard that releases the lock when
/// dropped. Clone the `Lock` to share it between threads; pass it to
/// [`Process::spawn`](crate::Process::spawn) (or send it in a message) to
/// share it with another process: every copy refers to the same lock.
///
/// **Robust**: if the holder dies (killed, crashed, or a thread that exits
/// while holding it), the next acquirer gets the lock within about 100 ms of
/// waiting, together with [`OwnerDied`] (an `Err` holding the guard).
///
/// The lock is not reentrant: acquiring it twice on one thread waits for
/// ever (or until the timeout); use [`RLock`](crate::RLock) for that.
///
/// # Examples
///
/// ```
/// use multiproc::{Lock, Process, RawValue};
///
/// fn add(lock: Lock, total: RawValue<u64>) {
///     for _ in 0..1000 {
///         let _held = lock.acquire().unwrap();
///         total.set(total.get() + 1); // not atomic: the lock makes it safe
///     }
/// }
///
/// let lock = Lock::new().unwrap();
/// let total = RawValue::new(0u64).unwrap();
/// let mut kids: Vec<_> = (0..2).map(|_| Process::spawn(add, (lock.clone(), total.clone())).unwrap()).collect();
/// for k in &mut kids { k.join().unwrap(); }
/// assert_eq!(total.get(), 2000);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lock {
    state: Shared<LockState>,
}

impl Lock {
    /// A new, unlocked lock in its own small shared-memory segment.
    ///
    /// # Errors
    ///
    /// The OS refused the memory (memfd or mmap failed).
    pub fn new() -> io::Result<Lock> {
        Ok(Lock { state: Shared::create("multiproc-lock", |_| {})? })
    }

    /// Waits until the lock is free and takes it.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (holding the guard: the lock **is** acquired) if the
    /// previous owner died while holding it.
    pub fn acquire(&self) -> LockResult<LockGuard<'_>> {
        match self.state.raw.lock(Deadline::NEVER) {
            Ok(how) => self.guard(how),
            Err(_) => unreachable!("a wait without a deadline does not time out"),
        }
    }

    /// Takes the lock if it is free right now. Does not look for a dead
    /// owner (use [`acquire_timeout`](Lock::acquire_timeout) for that).
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] if the lock is held.
    pub fn try_acquire(&self) -> TryLockResult<LockGuard<'_>> {
        if self.state.raw.try_lock() { Ok(self.new_guard()) } else { Err(TryLockError::WouldBlock) }
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// # Errors
    ///
    /// [`TryLockError::Timeout`] after about `timeout`;
    /// [`TryLockError::OwnerDied`] (with the guard) if the previous owner died
    /// holding it.
    pub fn acquire_timeout(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
        match self.state.raw.lock(Deadline::after(timeout)) {
            Ok(how) => self.guard(how).map_err(TryLockError::OwnerDied),
            Err(_) => Err(TryLockError::Timeout),
        }
    }

    /// Releases the lock, whoever holds it (Python's `release`: after
    /// [`LockGuard::leak`], or to hand the lock to another process).
    ///
    /// # Errors
    ///
    /// [`ReleaseError::NotHeld`] if the lock is not held.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// assert_eq!(lock.release(), Err(multiproc::ReleaseError::NotHeld));
    /// lock.acquire().unwrap().leak();
    /// assert!(lock.locked());
    /// lock.release().unwrap();
    /// assert!(!lock.locked());
    /// ```
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.state.raw.unlock_any().map_err(|_| ReleaseError::NotHeld)
    }

    /// True if someone holds the lock (a snapshot; Python's `locked()`).
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// let held = lock.acquire().unwrap();
    /// assert!(lock.locked());
    /// drop(held);
    /// assert!(!lock.locked());
    /// ```
    pub fn locked(&self) -> bool {
        self.state.raw.is_locked()
    }

    /// Old name of [`Lock::locked`].
    #[deprecated(since = "0.1.0", note = "use `locked`, Python's name")]
    pub fn is_locked(&self) -> bool {
        self.locked()
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        &self.state.raw
    }

    pub(crate) fn same_as(&self, other: &Lock) -> bool {
        self.state.same_as(&other.state)
    }

    /// A guard for the lock, which the calling thread took through `raw()`.
    pub(crate) fn assume_held(&self) -> LockGuard<'_> {
        self.new_guard()
    }

    pub(crate) fn from_state(state: Shared<LockState>) -> Lock {
        Lock { state }
    }

    fn guard(&self, how: Acquired) -> LockResult<LockGuard<'_>> {
        match how {
            Acquired::Clean => Ok(self.new_guard()),
            Acquired::OwnerDied => Err(OwnerDied::new(self.new_guard())),
        }
    }

    /// A guard for the hold the calling thread just took. Each hold gets a
    /// new ticket in the lock's `count` (unused by a plain lock otherwise),
    /// so a guard can tell its own hold from a later one.
    fn new_guard(&self) -> LockGuard<'_> {
        // ORDERING: Relaxed: only the holder writes `count`, and the guard's
        // drop reads it on the same thread; see `LockGuard::drop`.
        let ticket = self.state.raw.count.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        LockGuard { lock: self, ticket, _not_send: PhantomData }
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").field("locked", &self.locked()).finish()
    }
}

/// Holds a [`Lock`]; releases it when dropped.
///
/// The guard stays on the thread that acquired the lock (it is not `Send`):
/// the lock's owner, for the purpose of detecting a dead owner, is that
/// thread.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    /// The lock's `count` when this hold began.
    ticket: u32,
    _not_send: PhantomData<*const ()>,
}

impl LockGuard<'_> {
    /// Keeps the lock held without a guard; release it later with
    /// [`Lock::release`] (from any thread or process). If the acquiring
    /// thread exits before then, the next acquirer is told [`OwnerDied`].
    pub fn leak(self) {
        std::mem::forget(self);
    }

    pub(crate) fn lock(&self) -> &Lock {
        self.lock
    }
}

impl Drop for LockGuard<'_> {
    /// Releases the lock, unless [`Lock::release`] already released this
    /// hold: then the lock is left alone, even if another thread (or this
    /// one, through another guard) holds it now.
    fn drop(&mut self) {
        let raw = self.lock.raw();
        // ORDERING: Relaxed: if the ticket still matches, this thread wrote
        // it (and holds the lock unless it was released by someone else);
        // a stale read can only be of another holder's ticket, and then the
        // CAS in `unlock_if_owned` fails because the word holds that
        // holder's id, not ours.
        if raw.count.load(Ordering::Relaxed) == self.ticket {
            raw.unlock_if_owned();
        }
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard { .. }")
    }
}
