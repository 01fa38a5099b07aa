//! `Lock` across real processes and threads: mutual exclusion, timeouts,
//! release rules, handles passed to children. SPEC.md, "Locks and friends".

mod sync_support;

use std::time::{Duration, Instant};

use multiproc::{Event, Lock, RawValue, ReleaseError, TryLockError};
use sync_support::{Kid, LONG, PROMPT, assert_about};

/// Adds 1 to `total` `n` times under the lock, with a non-atomic
/// read-modify-write that loses updates without mutual exclusion.
fn add_locked(lock: Lock, total: RawValue<u64>, n: u32) {
    for _ in 0..n {
        let _held = lock.acquire().expect("no owner died");
        let v = total.get();
        std::hint::spin_loop();
        total.set(v + 1);
    }
}

#[test]
fn counter_is_exact_with_processes_and_threads() {
    let lock = Lock::new().unwrap();
    let total = RawValue::new(0u64).unwrap();
    let kids: Vec<Kid<()>> = (0..3).map(|_| Kid::spawn(add_locked, (lock.clone(), total.clone(), 3000u32))).collect();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (lock, total) = (lock.clone(), total.clone());
            std::thread::spawn(move || add_locked(lock, total, 3000))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for k in kids {
        k.join();
    }
    assert_eq!(total.get(), 5 * 3000);
    assert!(!lock.locked());
}

/// Holds the lock until `release` is set (or 20 s pass).
fn hold(lock: Lock, holding: Event, release: Event) {
    let _held = lock.acquire().unwrap();
    holding.set();
    assert!(release.wait_timeout(LONG));
}

#[test]
fn timeouts_and_try_while_another_process_holds_it() {
    let lock = Lock::new().unwrap();
    let (holding, release) = (Event::new().unwrap(), Event::new().unwrap());
    let kid = Kid::spawn(hold, (lock.clone(), holding.clone(), release.clone()));
    assert!(holding.wait_timeout(LONG));

    let start = Instant::now();
    assert!(matches!(lock.try_acquire(), Err(TryLockError::WouldBlock)));
    // The holder lets go only when told: a try_acquire that waited would wait for ever.
    assert!(start.elapsed() < PROMPT, "try_acquire must not wait");

    let t = Duration::from_millis(300);
    let start = Instant::now();
    assert!(lock.acquire_timeout(t).unwrap_err().is_timeout());
    assert_about(start, t);

    release.set();
    let guard = lock.acquire_timeout(LONG).expect("free after the child let go");
    drop(guard);
    kid.join();
}

#[test]
fn releasing_an_unheld_lock_is_an_error() {
    let lock = Lock::new().unwrap();
    assert_eq!(lock.release(), Err(ReleaseError::NotHeld));
    lock.acquire().unwrap().leak();
    assert!(lock.locked());
    assert_eq!(lock.release(), Ok(()));
    assert_eq!(lock.release(), Err(ReleaseError::NotHeld));
    assert_eq!(ReleaseError::NotHeld.to_string(), "release of an unheld lock");
}

fn release_it(lock: Lock) -> Result<(), ReleaseError> {
    lock.release()
}

fn try_it(lock: Lock) -> bool {
    lock.try_acquire().is_ok()
}

#[test]
fn a_lock_passed_to_a_child_is_the_same_lock() {
    let lock = Lock::new().unwrap();
    let guard = lock.acquire().unwrap();
    assert!(!Kid::spawn(try_it, (lock.clone(),)).join(), "the child must see the lock held");
    drop(guard);
    assert!(Kid::spawn(try_it, (lock.clone(),)).join(), "the child must get the free lock");
    assert!(!lock.locked());

    // Like Python's Lock, another process may release it (a hand-over).
    lock.acquire().unwrap().leak();
    assert_eq!(Kid::spawn(release_it, (lock.clone(),)).join(), Ok(()));
    assert!(!lock.locked());
    assert_eq!(Kid::spawn(release_it, (lock.clone(),)).join(), Err(ReleaseError::NotHeld));
}

#[test]
fn a_waiter_is_woken_by_release_in_another_thread() {
    let lock = Lock::new().unwrap();
    let guard = lock.acquire().unwrap();
    let l2 = lock.clone();
    let waiter = std::thread::spawn(move || {
        let g = l2.acquire_timeout(LONG).expect("acquired");
        let at = Instant::now();
        drop(g);
        at
    });
    std::thread::sleep(Duration::from_millis(200));
    let released = Instant::now();
    drop(guard);
    let acquired = waiter.join().unwrap();
    assert!(acquired >= released, "the waiter got the lock before it was released");
    let took = acquired - released;
    assert!(took < PROMPT, "woken {took:?} after the release");
}
