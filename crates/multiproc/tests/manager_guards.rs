//! Manager lock guards: a guard is `Send`, so it may end on another thread
//! than the one that acquired it; the lock it holds must still be released.
//! Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use multiproc::manager::Manager;
use sync_support::LONG;

/// Runs `try_take` on a fresh thread (another owner in the manager's eyes).
fn free_for_another_thread<F: FnOnce() -> bool + Send>(try_take: F) -> bool {
    std::thread::scope(|s| s.spawn(try_take).join().unwrap())
}

#[test]
fn rlock_and_condition_guards_dropped_on_another_thread_release_their_lock() {
    let m = Manager::start().unwrap();
    let (rlock, cond) = (m.rlock().unwrap(), m.condition().unwrap());
    let (rlock_guard, cond_guard) = (rlock.acquire().unwrap(), cond.acquire().unwrap());
    std::thread::scope(|s| {
        s.spawn(move || {
            drop(rlock_guard);
            drop(cond_guard);
        });
    });
    assert!(!rlock.is_locked().unwrap(), "the RLock stayed held after its guard was dropped");
    assert!(free_for_another_thread(|| rlock.acquire_timeout(LONG).is_ok()));
    assert!(free_for_another_thread(|| cond.acquire_timeout(LONG).is_ok()));
    m.shutdown().unwrap();
}
