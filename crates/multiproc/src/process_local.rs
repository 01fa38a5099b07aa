//! Process-wide state that a child made by `fork` does not inherit.
//!
//! `fork` copies memory but not threads: a lock that another thread held at
//! the moment of the fork stays locked forever in the child, and state that
//! names the parent's threads and descriptors is wrong there. Each such
//! global is a [`ProcessLocal`]: a pointer to a lazily allocated mutex. On
//! first use it registers itself in a process-wide list, and a child made by
//! the `fork` start method calls [`reset_all_in_forked_child`], which points
//! every registered global at a fresh mutex and leaks the copy without
//! reading it. Other per-process state that must change after a fork
//! registers a [`ForkHook`] the same way. Nobody keeps a list by hand.

use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Something to reset in a child made by `fork`.
trait ForkReset: Sync {
    /// Called in the forked child, while it is single-threaded.
    fn reset_in_forked_child(&self);
}

/// One entry of the registry: a lock-free, push-only list (a forked child
/// walks it without taking any lock a vanished thread might hold).
struct Node {
    item: &'static dyn ForkReset,
    next: *mut Node,
}

/// The head of the registry.
static REGISTERED: AtomicPtr<Node> = AtomicPtr::new(std::ptr::null_mut());

/// Adds `item` to the registry (once per item: the caller's flag says so).
fn register(item: &'static dyn ForkReset, done: &AtomicBool) {
    // ORDERING: AcqRel: only one caller pushes the item.
    if done.swap(true, Ordering::AcqRel) {
        return;
    }
    let node = Box::into_raw(Box::new(Node { item, next: std::ptr::null_mut() }));
    // ORDERING: Relaxed load; the Release CAS publishes the node's fields to
    // the Acquire load in `reset_all_in_forked_child`.
    let mut head = REGISTERED.load(Ordering::Relaxed);
    loop {
        // SAFETY: `node` is ours until the CAS publishes it.
        unsafe { (*node).next = head };
        match REGISTERED.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

/// In a child made by `fork`, while it is single-threaded: resets every
/// registered global and runs every registered hook.
pub(crate) fn reset_all_in_forked_child() {
    // ORDERING: Acquire pairs with the Release push in `register`.
    let mut node = REGISTERED.load(Ordering::Acquire);
    while !node.is_null() {
        // SAFETY: nodes are leaked boxes, never freed or changed after
        // publication.
        let n = unsafe { &*node };
        n.item.reset_in_forked_child();
        node = n.next;
    }
}

/// A mutex-protected global that is fresh in every forked child.
#[derive(Debug)]
pub(crate) struct ProcessLocal<T: 'static> {
    ptr: AtomicPtr<Mutex<T>>,
    init: fn() -> T,
    registered: AtomicBool,
}

impl<T: Send + 'static> ProcessLocal<T> {
    /// A global whose value starts as `init()`.
    pub(crate) const fn new(init: fn() -> T) -> ProcessLocal<T> {
        ProcessLocal { ptr: AtomicPtr::new(std::ptr::null_mut()), init, registered: AtomicBool::new(false) }
    }

    fn mutex(&'static self) -> &'static Mutex<T> {
        // ORDERING: Acquire pairs with the AcqRel publication below, so the
        // mutex is fully initialised before it is used.
        let mut ptr = self.ptr.load(Ordering::Acquire);
        if ptr.is_null() {
            register(self, &self.registered);
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
    pub(crate) fn lock(&'static self) -> MutexGuard<'static, T> {
        self.mutex().lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Send + 'static> ForkReset for ProcessLocal<T> {
    /// Replaces the inherited value with a fresh one, without locking or
    /// dropping the copy (it may be locked by a thread that does not exist
    /// here, and it names the parent's resources).
    fn reset_in_forked_child(&self) {
        // ORDERING: the forked child is single-threaded; Release publishes
        // nothing more than the null pointer for the next `mutex` call.
        self.ptr.store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// A function to run in every child made by `fork`, registered on first
/// [`arm`](ForkHook::arm).
#[derive(Debug)]
pub(crate) struct ForkHook {
    run: fn(),
    registered: AtomicBool,
}

impl ForkHook {
    /// A hook that runs `run` in forked children once armed.
    pub(crate) const fn new(run: fn()) -> ForkHook {
        ForkHook { run, registered: AtomicBool::new(false) }
    }

    /// Registers the hook (idempotent).
    pub(crate) fn arm(&'static self) {
        register(self, &self.registered);
    }
}

impl ForkReset for ForkHook {
    fn reset_in_forked_child(&self) {
        (self.run)();
    }
}

#[cfg(test)]
mod test {
    use super::*;

    static COUNTER: ProcessLocal<u32> = ProcessLocal::new(|| 7);

    #[test]
    fn a_used_global_registers_itself_and_resets() {
        *COUNTER.lock() += 1;
        assert_eq!(*COUNTER.lock(), 8);
        // Find it in the registry (resetting everything would disturb the
        // other tests of this process) and do what a forked child does: the
        // value starts over; the old mutex is leaked, not dropped.
        let mut node = REGISTERED.load(Ordering::Acquire);
        let mut found = None;
        while !node.is_null() {
            // SAFETY: as in `reset_all_in_forked_child`.
            let n = unsafe { &*node };
            if std::ptr::addr_eq(n.item as *const dyn ForkReset, &COUNTER as *const ProcessLocal<u32>) {
                found = Some(n.item);
            }
            node = n.next;
        }
        found.expect("the global registered itself on first use").reset_in_forked_child();
        assert_eq!(*COUNTER.lock(), 7);
    }
}
