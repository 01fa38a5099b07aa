//! `Event`: a flag that processes and threads can wait for.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::memory::segment::{Shared, SharedObject};
use crate::sys::Deadline;
use crate::sys::imp::futex::{self, FutexWait};

/// The shared part of an [`Event`].
#[derive(Debug)]
#[repr(C)]
pub(crate) struct EventState {
    tag: AtomicU64,
    /// Bit 0: set; bits 1–31: how many times it was set (wrapping), so a
    /// waiter woken by a `set` that a `clear` already undid still knows it
    /// was set. The futex word.
    flag: AtomicU32,
}

const SET: u32 = 1;

/// The number of sets a flag word has seen (wrapping).
fn sets(w: u32) -> u32 {
    w >> 1
}

// SAFETY: repr(C) atomics only; all-zero is a clear event; `tag` is a field.
unsafe impl SharedObject for EventState {
    const TAG: u64 = u64::from_le_bytes(*b"mp.Event");
    fn tag(&self) -> &AtomicU64 {
        &self.tag
    }
}

/// A flag shared by processes and threads (Python's `multiprocessing.Event`):
/// [`wait`](Event::wait) blocks until some thread or process calls
/// [`set`](Event::set).
///
/// Whatever a thread did before `set` is visible to a thread that returns
/// from `wait` because of it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Event, Process};
///
/// fn wait_for_go(go: Event) -> bool { go.wait_timeout(Duration::from_secs(10)) }
///
/// let go = Event::new().unwrap();
/// let mut child = Process::spawn(wait_for_go, (go.clone(),)).unwrap();
/// go.set();
/// assert!(child.join().unwrap());
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Event {
    state: Shared<EventState>,
}

impl Event {
    /// A new event, not set.
    ///
    /// # Errors
    ///
    /// The OS refused the memory.
    pub fn new() -> io::Result<Event> {
        Ok(Event { state: Shared::create("multiproc-event", |_| {})? })
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        // ORDERING: Release: what the setter did before is visible to a
        // waiter that Acquire-loads the flag.
        let was = self.state.flag.fetch_update(Ordering::Release, Ordering::Relaxed, |w| {
            (w & SET == 0).then(|| (w & !SET).wrapping_add(2) | SET)
        });
        if was.is_ok() {
            futex::wake_all(&self.state.flag);
        }
    }

    /// Clears the flag; later waits block until the next `set`.
    pub fn clear(&self) {
        // ORDERING: Relaxed: clearing publishes nothing.
        self.state.flag.fetch_and(!SET, Ordering::Relaxed);
    }

    /// True if the flag is set.
    pub fn is_set(&self) -> bool {
        // ORDERING: Acquire: pairs with `set`.
        self.state.flag.load(Ordering::Acquire) & SET != 0
    }

    /// Waits until the flag is set (also returns if a `set` during the wait
    /// was undone by a `clear` before this waiter woke).
    pub fn wait(&self) {
        self.wait_until(Deadline::NEVER);
    }

    /// Waits at most `timeout` for the flag; returns whether it was set
    /// (Python's `wait(timeout)`): true also when a `set` that happened
    /// during the wait was undone by a `clear` before this waiter woke.
    #[must_use = "false means the timeout passed with the event not set"]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(timeout))
    }

    /// True once the event is set, or was set at some moment since the
    /// wait began (even if cleared again before this waiter woke, as with
    /// Python's `threading.Event`); false at the deadline.
    fn wait_until(&self, deadline: Deadline) -> bool {
        // ORDERING: Acquire: pairs with `set`.
        let start = self.state.flag.load(Ordering::Acquire);
        let was_set = |w: u32| w & SET != 0 || sets(w) != sets(start);
        let mut w = start;
        loop {
            if was_set(w) {
                return true;
            }
            let timed_out = futex::wait(&self.state.flag, w, deadline) == FutexWait::TimedOut;
            // ORDERING: Acquire: pairs with `set`.
            w = self.state.flag.load(Ordering::Acquire);
            if timed_out {
                return was_set(w);
            }
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("set", &self.is_set()).finish()
    }
}
