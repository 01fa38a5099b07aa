//! `Condition`: wait for a notification while releasing a lock.
//!
//! # Algorithm (maintainer's notes)
//!
//! `counts` packs the number of registered waiters (low 32 bits) and of
//! wake permits not yet taken (high 32 bits), with permits ≤ waiters.
//! A waiter registers while holding the lock (noting `seq`), releases it,
//! and sleeps on the `seq` futex until it can take a permit (then it was
//! notified) or its deadline passes (then it unregisters). `notify(n)`,
//! called with the lock held, bumps `seq`, adds `k = min(n, waiters −
//! permits)` permits and wakes `k` sleepers. Every permit is taken by
//! exactly one waiter, and a waiter takes at most one, so exactly `k` waits
//! return "notified".
//!
//! Only a waiter that has seen `seq` move since it registered may take a
//! permit: a notify is for the waiters that were waiting when it ran. (A
//! waiter that registered after it could otherwise take the permit of an
//! older one and leave that one asleep: with `notify_all` and `wait_for`,
//! for ever.) Permits left by earlier notifies are at most the waiters
//! registered before the last one, so a newer waiter that times out leaves
//! them to those. `seq` is bumped before the permits are added: a waiter
//! that sees a permit also sees the bump (its Acquire load of `counts`
//! follows notify's Release), so it never leaves behind a permit that was
//! counted for it.
//!
//! A waiter sleeps at most `LOST_WAKE_EVERY` at a time and then looks at
//! the permits again: the sleeper a notify woke may be killed before it
//! takes its permit, and the permit then goes to another waiter that the
//! notify covered, instead of leaving it asleep for ever.
//!
//! Known limit: a waiter killed while it waits stays counted, so a later
//! `notify(n)` may hand one of its permits to nobody (and wake one live
//! waiter fewer). Python's `Condition` has the same limit; the lock itself
//! stays robust.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LOST_WAKE_EVERY;
use super::error::{LockResult, OwnerDied, TryLockError, TryLockResult};
use super::lock::{Lock, LockGuard, LockState};
use crate::memory::raw_mutex::Acquired;
use crate::memory::segment::{Shared, SharedObject};
use crate::sys::Deadline;
use crate::sys::imp::futex;

const ONE_WAITER: u64 = 1;
const ONE_PERMIT: u64 = 1 << 32;

/// The shared part of a [`Condition`] (beside its lock).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CondState {
    tag: AtomicU64,
    /// Bumped by every notify; the futex word waiters sleep on.
    seq: AtomicU32,
    _pad: AtomicU32,
    /// Waiters (low half) and permits (high half).
    counts: AtomicU64,
}

// SAFETY: repr(C) atomics only; all-zero means no waiters; `tag` is a field.
unsafe impl SharedObject for CondState {
    const TAG: u64 = u64::from_le_bytes(*b"mp.Cond\0");
    fn tag(&self) -> &AtomicU64 {
        &self.tag
    }
}

fn waiters(c: u64) -> u64 {
    c & 0xFFFF_FFFF
}

fn permits(c: u64) -> u64 {
    c >> 32
}

/// Waiters not yet given a permit. The counters are shared memory another
/// process could scribble over, so arithmetic on them never panics: bogus
/// counts only make notifies wake too few or too many.
fn unserved(c: u64) -> u64 {
    waiters(c).saturating_sub(permits(c))
}

/// A condition variable shared by processes and threads (Python's
/// `multiprocessing.Condition`), with its own [`Lock`] or one you give it.
///
/// Acquire it to get a [`ConditionGuard`]; on the guard, `wait*` releases
/// the lock while waiting and takes it back before returning, and
/// `notify(n)` wakes exactly `min(n, waiting)` waiters, in any process.
/// The lock is robust: if its holder dies, the next acquirer (including a
/// waiter taking it back) gets [`OwnerDied`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Condition, Process, RawValue};
///
/// fn produce(cond: Condition, ready: RawValue<u32>) {
///     let g = cond.acquire().unwrap();
///     ready.set(1);
///     g.notify_all();
/// }
///
/// let cond = Condition::new().unwrap();
/// let ready = RawValue::new(0u32).unwrap();
/// let mut g = cond.acquire().unwrap();
/// let mut child = Process::spawn(produce, (cond.clone(), ready.clone())).unwrap();
/// let (g, ok) = g.wait_for_timeout(Duration::from_secs(10), || ready.get() == 1).unwrap();
/// assert!(ok);
/// drop(g);
/// child.join().unwrap();
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    lock: Lock,
    state: Shared<CondState>,
}

impl Condition {
    /// A condition with a lock of its own.
    ///
    /// # Errors
    ///
    /// The OS refused the memory.
    pub fn new() -> io::Result<Condition> {
        let lock_state = Shared::<LockState>::create_sized("multiproc-condition", 128, |_| {})?;
        let state = lock_state.sibling::<CondState>(64, |_| {})?;
        Ok(Condition { lock: Lock::from_state(lock_state), state })
    }

    /// A condition that uses `lock` (Python's `Condition(lock)`): holding the
    /// lock through any handle is holding the condition's lock.
    ///
    /// # Errors
    ///
    /// The OS refused the memory.
    pub fn with_lock(lock: Lock) -> io::Result<Condition> {
        Ok(Condition { lock, state: Shared::create("multiproc-condition", |_| {})? })
    }

    /// The condition's lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (with the guard; the lock is held) if the previous owner
    /// died holding it.
    pub fn acquire(&self) -> LockResult<ConditionGuard<'_>> {
        self.lock.acquire().map(|g| self.wrap(g)).map_err(|e| e.map(|g| self.wrap(g)))
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Lock::acquire_timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> TryLockResult<ConditionGuard<'_>> {
        match self.lock.acquire_timeout(timeout) {
            Ok(g) => Ok(self.wrap(g)),
            Err(TryLockError::OwnerDied(e)) => Err(TryLockError::OwnerDied(e.map(|g| self.wrap(g)))),
            Err(TryLockError::Timeout) => Err(TryLockError::Timeout),
            Err(TryLockError::WouldBlock) => Err(TryLockError::WouldBlock),
        }
    }

    /// Wraps a guard of this condition's lock, obtained through
    /// [`Condition::lock`].
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another lock.
    pub fn guard<'a>(&'a self, guard: LockGuard<'a>) -> ConditionGuard<'a> {
        assert!(guard.lock().same_as(&self.lock), "the guard belongs to a different lock than the condition's");
        self.wrap(guard)
    }

    fn wrap<'a>(&'a self, guard: LockGuard<'a>) -> ConditionGuard<'a> {
        ConditionGuard { cond: self, guard }
    }

    /// Waits for a permit or the deadline, with the lock released; returns
    /// whether a notify woke us. `registered_at` is `seq` when we registered.
    fn wait_released(&self, registered_at: u32, deadline: Deadline) -> bool {
        let state = &*self.state;
        loop {
            // ORDERING: Acquire: pairs with the AcqRel of notify's permit CAS,
            // so the `seq` bump made before it is visible to the next load.
            let c = state.counts.load(Ordering::Acquire);
            // ORDERING: Acquire, as above (see the module notes).
            let seen = state.seq.load(Ordering::Acquire);
            if seen != registered_at && permits(c) > 0 {
                // ORDERING: AcqRel: takes a permit atomically with leaving.
                if state
                    .counts
                    .compare_exchange(c, c.wrapping_sub(ONE_PERMIT + ONE_WAITER), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if deadline.expired() {
                // ORDERING: AcqRel: leaves only if no permit arrived meanwhile
                // (a permit makes the CAS fail, and the loop takes it if it
                // is ours to take).
                if state
                    .counts
                    .compare_exchange(c, c.wrapping_sub(ONE_WAITER), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return false;
                }
                continue;
            }
            // In slices: a sleeper woken by a notify may die before it takes
            // its permit, and no other wake would come for the permit.
            futex::wait(&state.seq, seen, deadline.at_most(LOST_WAKE_EVERY));
        }
    }

    fn notify(&self, n: u64) -> usize {
        let state = &*self.state;
        // ORDERING: Relaxed: steers the CAS.
        let mut c = state.counts.load(Ordering::Relaxed);
        if n == 0 || unserved(c) == 0 {
            return 0;
        }
        // Bump first: whoever takes one of the permits below must see that a
        // notify happened since it registered (see the module notes).
        // ORDERING: Relaxed: published by the Release of the CAS below.
        state.seq.fetch_add(1, Ordering::Relaxed);
        let given = loop {
            let k = n.min(unserved(c));
            if k == 0 {
                return 0;
            }
            // ORDERING: AcqRel: publishes the permits to the waiters that
            // take them.
            match state.counts.compare_exchange_weak(
                c,
                c.wrapping_add(k * ONE_PERMIT),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break k,
                Err(now) => c = now,
            }
        };
        futex::wake(&state.seq, given.min(u64::from(u32::MAX)) as u32);
        given as usize
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ORDERING: Relaxed: a snapshot.
        let c = self.state.counts.load(Ordering::Relaxed);
        f.debug_struct("Condition").field("lock", &self.lock).field("waiting", &unserved(c)).finish()
    }
}

/// The lock of a [`Condition`], held; the place to wait and notify.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    guard: LockGuard<'a>,
}

/// A guard and a flag, as returned by the timed waits.
pub type TimedWait<'a> = (ConditionGuard<'a>, bool);

impl<'a> ConditionGuard<'a> {
    /// Releases the lock, waits for a notify, takes the lock back.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (with the guard; the lock is held again) if, while we
    /// waited, a holder of the lock died holding it.
    pub fn wait(self) -> LockResult<ConditionGuard<'a>> {
        match self.wait_until(Deadline::NEVER) {
            Ok((g, _)) => Ok(g),
            Err(e) => Err(e.map(|(g, _)| g)),
        }
    }

    /// As [`wait`](ConditionGuard::wait), for at most `timeout`; the flag is
    /// true if a notify woke us, false after the timeout.
    ///
    /// # Errors
    ///
    /// As [`wait`](ConditionGuard::wait).
    pub fn wait_timeout(self, timeout: Duration) -> LockResult<TimedWait<'a>> {
        self.wait_until(Deadline::after(timeout))
    }

    /// Waits until `condition()` is true (checked with the lock held, first
    /// before any wait).
    ///
    /// # Errors
    ///
    /// As [`wait`](ConditionGuard::wait).
    pub fn wait_for(self, condition: impl FnMut() -> bool) -> LockResult<ConditionGuard<'a>> {
        match self.wait_for_until(Deadline::NEVER, condition) {
            Ok((g, _)) => Ok(g),
            Err(e) => Err(e.map(|(g, _)| g)),
        }
    }

    /// Waits at most `timeout` until `condition()` is true; the flag is the
    /// last value of `condition()` (Python's `wait_for(predicate, timeout)`).
    ///
    /// # Errors
    ///
    /// As [`wait`](ConditionGuard::wait).
    pub fn wait_for_timeout(self, timeout: Duration, condition: impl FnMut() -> bool) -> LockResult<TimedWait<'a>> {
        self.wait_for_until(Deadline::after(timeout), condition)
    }

    fn wait_for_until(self, deadline: Deadline, mut condition: impl FnMut() -> bool) -> LockResult<TimedWait<'a>> {
        let mut guard = self;
        loop {
            if condition() {
                return Ok((guard, true));
            }
            if deadline.expired() {
                return Ok((guard, false));
            }
            guard = match guard.wait_until(deadline) {
                Ok((g, _)) => g,
                Err(e) => {
                    let (g, _) = e.into_inner();
                    let now = condition();
                    return Err(OwnerDied::new((g, now)));
                }
            };
        }
    }

    fn wait_until(self, deadline: Deadline) -> LockResult<TimedWait<'a>> {
        let cond = self.cond;
        // Register while holding the lock: a notify after our release counts us.
        // ORDERING: AcqRel: the counter is also changed without the lock (by
        // waiters leaving), so every change is an ordered RMW.
        cond.state.counts.fetch_add(ONE_WAITER, Ordering::AcqRel);
        // ORDERING: Acquire: see `wait_released`.
        let seen = cond.state.seq.load(Ordering::Acquire);
        // Released as the guard would be: not at all if `Lock::release`
        // already ended this hold (the lock may be another thread's now).
        drop(self.guard);
        let notified = cond.wait_released(seen, deadline);
        let how = cond.lock.raw().lock(Deadline::NEVER).expect("a wait without a deadline does not time out");
        let guard = cond.wrap(cond.lock.assume_held());
        match how {
            Acquired::Clean => Ok((guard, notified)),
            Acquired::OwnerDied => Err(OwnerDied::new((guard, notified))),
        }
    }

    /// Wakes up to `n` waiters; returns how many (exactly `min(n, waiting)`).
    pub fn notify(&self, n: usize) -> usize {
        self.cond.notify(n as u64)
    }

    /// Wakes every waiter; returns how many.
    pub fn notify_all(&self) -> usize {
        self.cond.notify(u64::from(u32::MAX))
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConditionGuard { .. }")
    }
}

#[cfg(test)]
mod test {
    use std::time::Instant;

    use super::super::test::{LONG, PROMPT, spawn_asleep};
    use super::*;

    /// Registers as a waiter of `cond`, sleeps until woken, and vanishes
    /// without taking a permit (still counted, as a killed process would
    /// be).
    fn vanishing_waiter(cond: Condition) {
        let guard = cond.acquire().unwrap();
        // ORDERING: as in `ConditionGuard::wait_until`.
        cond.state.counts.fetch_add(ONE_WAITER, Ordering::AcqRel);
        let seen = cond.state.seq.load(Ordering::Acquire);
        drop(guard);
        let _ = futex::wait(&cond.state.seq, seen, Deadline::after(LONG));
    }

    #[test]
    fn a_notified_waiter_that_vanishes_does_not_strand_its_permit() {
        let cond = Condition::new().unwrap();
        let first = {
            let cond = cond.clone();
            spawn_asleep(move || vanishing_waiter(cond))
        };
        let second = {
            let cond = cond.clone();
            spawn_asleep(move || {
                let (guard, notified) = cond.acquire().unwrap().wait_timeout(LONG).unwrap();
                drop(guard);
                (notified, Instant::now())
            })
        };
        let notified_at = Instant::now();
        assert_eq!(cond.acquire().unwrap().notify(1), 1);
        let (notified, at) = second.join().unwrap();
        // The first waiter is out of the futex queue if the notify woke it;
        // if not, the test did not provoke the lost wake-up.
        let still_asleep = futex::wake_all(&cond.state.seq);
        first.join().unwrap();
        assert_eq!(still_asleep, 0, "the notify woke the second waiter, not the first");
        assert!(notified, "the second waiter was never notified");
        let took = at - notified_at;
        assert!(took < PROMPT, "the permit waited {took:?} for a live waiter");
    }
}
