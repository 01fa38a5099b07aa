//! Process-wide state that a child made by `fork` does not inherit.
//!
//! `fork` copies memory but not threads: a lock that another thread held at
//! the moment of the fork stays locked forever in the child, and state that
//! names the parent's threads and descriptors is wrong there. Each such
//! global is a [`ProcessLocal`]: a pointer to a lazily allocated mutex. A
//! child made by the `fork` start method calls [`ProcessLocal::forget_in_child`]
//! on every one, which points it at a fresh mutex and leaks the copy without
//! reading it.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A mutex-protected global that is fresh in every forked child.
#[derive(Debug)]
pub(crate) struct ProcessLocal<T: 'static> {
    ptr: AtomicPtr<Mutex<T>>,
    init: fn() -> T,
}

impl<T: 'static> ProcessLocal<T> {
    /// A global whose value starts as `init()`.
    pub(crate) const fn new(init: fn() -> T) -> ProcessLocal<T> {
        ProcessLocal { ptr: AtomicPtr::new(std::ptr::null_mut()), init }
    }

    fn mutex(&self) -> &'static Mutex<T> {
        // ORDERING: Acquire pairs with the AcqRel publication below, so the
        // mutex is fully initialised before it is used.
        let mut ptr = self.ptr.load(Ordering::Acquire);
        if ptr.is_null() {
            let fresh = Box::into_raw(Box::new(Mutex::new((self.init)())));
            ptr = match self.ptr.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => fresh,
                Err(existing) => {
                    // SAFETY: `fresh` came from Box::into_raw above and was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    existing
                }
            };
        }
        // SAFETY: the pointer came from Box::into_raw and is never freed (it is
        // leaked when replaced), so it is valid for 'static.
        unsafe { &*ptr }
    }

    /// Locks the value (recovering it if a panic poisoned the lock).
    pub(crate) fn lock(&self) -> MutexGuard<'static, T> {
        self.mutex().lock().unwrap_or_else(|e| e.into_inner())
    }

    /// In a child made by `fork`: replaces the inherited value with a fresh
    /// one, without locking or dropping the copy (it may be locked by a thread
    /// that does not exist here, and it names the parent's resources).
    pub(crate) fn forget_in_child(&self) {
        // ORDERING: the forked child is single-threaded; Release publishes
        // nothing more than the null pointer for the next `mutex` call.
        self.ptr.store(std::ptr::null_mut(), Ordering::Release);
    }
}
