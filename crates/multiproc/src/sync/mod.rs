//! Locks and friends, shared by processes and threads: [`Lock`], [`RLock`],
//! [`Semaphore`], [`BoundedSemaphore`], [`Condition`], [`Event`] and
//! [`Barrier`] (Python's `multiprocessing` synchronization primitives).
//!
//! Each lives in a small anonymous shared-memory segment (a memfd, freed by
//! the kernel when the last process using it lets go, even after `kill -9`)
//! and waits on process-shared futexes, so the same object works between
//! threads of one process and between processes. Every blocking call has a
//! timed variant.
//!
//! A primitive is a handle: `Clone` shares it within a process, and passing
//! it to [`Process::spawn`](crate::Process::spawn) (or sending it in a
//! message) shares it with another process; every copy refers to the same
//! object.
//!
//! [`Lock`], [`RLock`] and [`Condition`] are **robust**: when a holder dies
//! (killed, crashed, or a thread that exits holding it), the next acquirer
//! gets the lock together with [`OwnerDied`], an `Err` that carries the
//! guard, within about 100 ms of waiting, instead of waiting for ever.
//!
//! A process killed right after a [`Semaphore::release`] or a
//! [`ConditionGuard::notify`] woke it, before it took the unit or the
//! notification, does not strand it: another waiter takes it within about
//! 250 ms.
//!
//! A [`Barrier`] whose completing party (the last to arrive, which runs the
//! action) dies before its pass is over breaks within about half a second:
//! the others get [`BarrierError::Broken`] instead of waiting for ever. A
//! party that dies before it arrives, or while it waits for the others, is
//! not noticed (see [`Barrier`]).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use multiproc::{Lock, OwnerDied, Process};
//!
//! fn grab_and_die(lock: Lock) {
//!     lock.acquire().unwrap().leak();
//!     std::process::exit(3); // dies holding the lock
//! }
//!
//! let lock = Lock::new().unwrap();
//! let mut child = Process::spawn(grab_and_die, (lock.clone(),)).unwrap();
//! let _ = child.join();
//! match lock.acquire_timeout(Duration::from_secs(5)) {
//!     Err(multiproc::TryLockError::OwnerDied(died)) => drop(died.into_inner()),
//!     other => panic!("expected OwnerDied, got {other:?}"),
//! }
//! ```

use std::time::Duration;

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard, TimedWait};
pub use error::{BarrierError, LockResult, OwnerDied, ReleaseError, TryLockError, TryLockResult};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};

#[cfg(test)]
mod test;

/// Longest sleep of a waiter that a single wake-up is meant for (a
/// `Semaphore` acquirer, a `Condition` waiter, a queue consumer) before it
/// looks again: the one sleeper a `release`, `notify` or `put` woke may be
/// killed before it acts, and nothing else would wake the others. Only
/// sleepers pay for it; the uncontended paths make no system call and set
/// no timer.
pub(crate) const LOST_WAKE_EVERY: Duration = Duration::from_millis(250);
