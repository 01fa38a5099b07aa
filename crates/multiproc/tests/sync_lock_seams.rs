//! Seams of `Lock` found in review (issue 13, item 5): a guard whose hold
//! was ended by `Lock::release` leaves the next owner's hold alone, and a
//! `try_acquire` that finds the lock held says "would block", not "timeout".

use std::time::Duration;

use multiproc::{Lock, Process, TryLockError};

/// Holds the lock for a moment in another process, then reports whether it
/// still held it right before letting go.
fn hold_in_child(lock: Lock, hold: Duration) -> bool {
    let held = lock.acquire_timeout(Duration::from_secs(20)).ok();
    std::thread::sleep(hold);
    let still = lock.locked();
    drop(held);
    still
}

#[test]
fn a_released_guard_does_not_unlock_the_next_owner() {
    let lock = Lock::new().unwrap();
    let stale = lock.acquire().unwrap();
    lock.release().unwrap(); // Python-style release of our own hold
    // Another thread takes the lock; our stale guard must not free it.
    let (taken_tx, taken_rx) = std::sync::mpsc::channel();
    let (drop_tx, drop_rx) = std::sync::mpsc::channel::<()>();
    let other = lock.clone();
    let t = std::thread::spawn(move || {
        let g = other.acquire_timeout(Duration::from_secs(20)).expect("the lock is free");
        taken_tx.send(()).unwrap();
        drop_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let still = other.locked();
        drop(g);
        still
    });
    taken_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    drop(stale);
    assert!(lock.locked(), "dropping a released guard unlocked another thread's hold");
    assert!(matches!(lock.try_acquire(), Err(TryLockError::WouldBlock)));
    drop_tx.send(()).unwrap();
    assert!(t.join().unwrap());
    assert!(!lock.locked());
}

#[test]
fn a_released_guard_does_not_unlock_a_later_hold_of_the_same_thread() {
    let lock = Lock::new().unwrap();
    let stale = lock.acquire().unwrap();
    lock.release().unwrap();
    let fresh = lock.acquire_timeout(Duration::from_secs(5)).expect("free after release");
    drop(stale);
    assert!(lock.locked(), "the stale guard released the fresh hold");
    drop(fresh);
    assert!(!lock.locked());
}

#[test]
fn a_released_guard_does_not_unlock_another_process() {
    let lock = Lock::new().unwrap();
    let stale = lock.acquire().unwrap();
    lock.release().unwrap();
    let mut child = Process::spawn(hold_in_child, (lock.clone(), Duration::from_millis(300))).unwrap();
    // Wait until the child holds it.
    let start = std::time::Instant::now();
    while !lock.locked() {
        assert!(start.elapsed() < Duration::from_secs(20), "the child never took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(stale);
    assert!(child.join_timeout(Duration::from_secs(20)).unwrap(), "the child's hold was released under it");
}

#[test]
fn try_acquire_on_a_held_lock_would_block_and_says_so() {
    let lock = Lock::new().unwrap();
    let _held = lock.acquire().unwrap();
    let err = lock.try_acquire().unwrap_err();
    assert!(err.is_would_block() && !err.is_timeout());
    assert!(!err.to_string().contains("timed out"), "{err}");
    let timed = lock.acquire_timeout(Duration::from_millis(20)).unwrap_err();
    assert!(timed.is_timeout() && !timed.is_would_block());
    let r = multiproc::RLock::new().unwrap();
    let other = r.clone();
    let _mine = r.acquire().unwrap();
    let tried = std::thread::spawn(move || other.try_acquire().map(drop).unwrap_err().is_would_block());
    assert!(tried.join().unwrap());
}
