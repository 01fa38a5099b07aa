//! `Semaphore` and `BoundedSemaphore`: counters that processes and threads
//! take and give back.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LOST_WAKE_EVERY;
use super::error::ReleaseError;
use crate::memory::segment::{Shared, SharedObject};
use crate::sys::Deadline;
use crate::sys::imp::futex::{self, FutexWait};

/// The shared part of a semaphore.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SemState {
    tag: AtomicU64,
    /// The count; the futex word.
    value: AtomicU32,
    /// Threads that may be asleep on `value`.
    waiters: AtomicU32,
    /// Largest value for a bounded semaphore; 0 if unbounded.
    max: AtomicU32,
}

// SAFETY: repr(C) atomics only; all-zero is a semaphore at 0; `tag` is a field.
unsafe impl SharedObject for SemState {
    const TAG: u64 = u64::from_le_bytes(*b"mp.Sema\0");
    fn tag(&self) -> &AtomicU64 {
        &self.tag
    }
}

impl SemState {
    fn acquire(&self, deadline: Deadline) -> bool {
        loop {
            // ORDERING: Relaxed: steers the CAS.
            let mut v = self.value.load(Ordering::Relaxed);
            while v > 0 {
                // ORDERING: Acquire on success: pairs with the Release (SeqCst)
                // of the `release` that made this unit available.
                match self.value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return true,
                    Err(now) => v = now,
                }
            }
            // ORDERING: SeqCst, paired with SeqCst in `release`: either the
            // releaser sees our registration and wakes us, or its increment
            // is visible to the futex check (which then does not sleep).
            self.waiters.fetch_add(1, Ordering::SeqCst);
            // In slices: the one sleeper a `release` wakes may die before it
            // takes the unit, and no other wake would come for it.
            let outcome = futex::wait(&self.value, 0, deadline.at_most(LOST_WAKE_EVERY));
            // ORDERING: Relaxed: only a hint for releasers.
            self.waiters.fetch_sub(1, Ordering::Relaxed);
            if outcome == FutexWait::TimedOut && deadline.expired() {
                // A last look: a unit released right at the deadline is ours.
                // ORDERING: Acquire on success, as above.
                let v = self.value.load(Ordering::Relaxed);
                return v > 0 && self.value.compare_exchange(v, v - 1, Ordering::Acquire, Ordering::Relaxed).is_ok();
            }
        }
    }

    fn release(&self) -> Result<(), ReleaseError> {
        // ORDERING: Relaxed load steers the CAS.
        let max = self.max.load(Ordering::Relaxed);
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            if (max != 0 && v >= max) || v == u32::MAX {
                return Err(ReleaseError::TooManyReleases);
            }
            // ORDERING: SeqCst: Release for the acquirer, and the store-load
            // order against `waiters` described in `acquire`.
            match self.value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        // ORDERING: SeqCst: see `acquire`.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.value, 1);
        }
        Ok(())
    }

    fn value(&self) -> u32 {
        // ORDERING: Relaxed: a snapshot.
        self.value.load(Ordering::Relaxed)
    }
}

fn create(value: u32, max: u32) -> io::Result<Shared<SemState>> {
    Shared::create("multiproc-semaphore", |s: &SemState| {
        // ORDERING: Relaxed: published with the tag (see `Shared::place`).
        s.value.store(value, Ordering::Relaxed);
        s.max.store(max, Ordering::Relaxed);
    })
}

/// A counting semaphore shared by processes and threads (Python's
/// `multiprocessing.Semaphore`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let s = multiproc::Semaphore::new(2).unwrap();
/// s.acquire();
/// assert!(s.try_acquire());
/// assert_eq!(s.value(), 0);
/// assert!(!s.acquire_timeout(Duration::from_millis(10)));
/// s.release();
/// assert_eq!(s.value(), 1);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Semaphore {
    state: Shared<SemState>,
}

impl Semaphore {
    /// A semaphore with `value` units.
    ///
    /// # Errors
    ///
    /// The OS refused the memory.
    pub fn new(value: u32) -> io::Result<Semaphore> {
        Ok(Semaphore { state: create(value, 0)? })
    }

    /// Takes a unit, waiting as long as it takes.
    pub fn acquire(&self) {
        self.state.acquire(Deadline::NEVER);
    }

    /// Takes a unit if one is available now.
    #[must_use = "false means no unit was taken"]
    pub fn try_acquire(&self) -> bool {
        self.state.acquire(Deadline::after(Duration::ZERO))
    }

    /// Takes a unit, waiting at most `timeout`; false if none came.
    #[must_use = "false means no unit was taken"]
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.state.acquire(Deadline::after(timeout))
    }

    /// Gives a unit back (any thread or process may), waking one waiter.
    ///
    /// # Panics
    ///
    /// If the value would exceed `u32::MAX`.
    pub fn release(&self) {
        self.state.release().expect("semaphore value overflow");
    }

    /// The current value (a snapshot; Python's `get_value`).
    pub fn value(&self) -> u32 {
        self.state.value()
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore").field("value", &self.value()).finish()
    }
}

/// A semaphore that may not be released above its initial value (Python's
/// `multiprocessing.BoundedSemaphore`).
///
/// # Examples
///
/// ```
/// use multiproc::{BoundedSemaphore, ReleaseError};
///
/// let s = BoundedSemaphore::new(1).unwrap();
/// assert_eq!(s.release(), Err(ReleaseError::TooManyReleases));
/// s.acquire();
/// s.release().unwrap();
/// assert_eq!(s.value(), 1);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedSemaphore {
    state: Shared<SemState>,
}

impl BoundedSemaphore {
    /// A semaphore with `value` units, which is also its maximum.
    ///
    /// # Errors
    ///
    /// The OS refused the memory, or `value` is 0 (such a semaphore could
    /// never be released).
    pub fn new(value: u32) -> io::Result<BoundedSemaphore> {
        if value == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a bounded semaphore needs a value of at least 1"));
        }
        Ok(BoundedSemaphore { state: create(value, value)? })
    }

    /// Takes a unit, waiting as long as it takes.
    pub fn acquire(&self) {
        self.state.acquire(Deadline::NEVER);
    }

    /// Takes a unit if one is available now.
    #[must_use = "false means no unit was taken"]
    pub fn try_acquire(&self) -> bool {
        self.state.acquire(Deadline::after(Duration::ZERO))
    }

    /// Takes a unit, waiting at most `timeout`; false if none came.
    #[must_use = "false means no unit was taken"]
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.state.acquire(Deadline::after(timeout))
    }

    /// Gives a unit back, waking one waiter.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::TooManyReleases`] if the value is already at its maximum.
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.state.release()
    }

    /// The current value (a snapshot).
    pub fn value(&self) -> u32 {
        self.state.value()
    }

    /// The maximum (and initial) value.
    pub fn max_value(&self) -> u32 {
        // ORDERING: Relaxed: set once at creation.
        self.state.max.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore").field("value", &self.value()).field("max", &self.max_value()).finish()
    }
}

#[cfg(test)]
mod test {
    use std::time::Instant;

    use super::super::test::{LONG, PROMPT, spawn_asleep};
    use super::*;

    /// Registers as a sleeper on `state`, sleeps until woken, and vanishes
    /// without taking a unit (its registration stays, as a killed
    /// process's would).
    fn vanishing_acquirer(state: Shared<SemState>) {
        // ORDERING: SeqCst: as in `SemState::acquire`.
        state.waiters.fetch_add(1, Ordering::SeqCst);
        let _ = futex::wait(&state.value, 0, Deadline::after(LONG));
    }

    #[test]
    fn a_woken_acquirer_that_vanishes_does_not_strand_the_unit() {
        for bounded in [false, true] {
            let state =
                if bounded { BoundedSemaphore::new(1).unwrap().state } else { Semaphore::new(0).unwrap().state };
            if bounded {
                assert!(state.acquire(Deadline::NEVER));
            }
            let first = {
                let state = state.clone();
                spawn_asleep(move || vanishing_acquirer(state))
            };
            let second = {
                let state = state.clone();
                spawn_asleep(move || (state.acquire(Deadline::after(LONG)), Instant::now()))
            };
            let released = Instant::now();
            state.release().unwrap();
            let (got, at) = second.join().unwrap();
            // The first sleeper is out of the futex queue if the release
            // woke it; if not, the test did not provoke the lost wake-up.
            let still_asleep = futex::wake_all(&state.value);
            first.join().unwrap();
            assert_eq!(still_asleep, 0, "bounded: {bounded}: the release woke the second acquirer, not the first");
            assert!(got, "bounded: {bounded}: the second acquirer never got the unit");
            let took = at - released;
            assert!(took < PROMPT, "bounded: {bounded}: the unit waited {took:?} for a live acquirer");
            assert_eq!(state.value(), 0);
        }
    }
}
