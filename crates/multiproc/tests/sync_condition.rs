//! `Condition`: wait, wait_timeout, wait_for, and notify(n) waking exactly n
//! waiters across processes and threads. SPEC.md, "Locks and friends".

mod sync_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc::{Condition, Lock, RawValue};
use sync_support::{Kid, LONG, assert_about, wait_until};

/// Registers (counted under the condition's lock, so a count seen by the
/// notifier under the lock means "waiting"), waits, counts its wake-up.
fn waiter(cond: Condition, registered: RawValue<u32>, woken: RawValue<u32>) -> bool {
    let g = cond.acquire().unwrap();
    registered.as_atomic().fetch_add(1, Ordering::SeqCst);
    let (g, notified) = g.wait_timeout(LONG).unwrap();
    if notified {
        woken.as_atomic().fetch_add(1, Ordering::SeqCst);
    }
    drop(g);
    notified
}

fn registered_under_lock(cond: &Condition, registered: &RawValue<u32>) -> u32 {
    let _g = cond.acquire().unwrap();
    registered.get()
}

#[test]
fn notify_n_wakes_exactly_n_across_processes_and_threads() {
    let cond = Condition::new().unwrap();
    let registered = RawValue::new(0u32).unwrap();
    let woken = RawValue::new(0u32).unwrap();
    let kids: Vec<Kid<bool>> =
        (0..4).map(|_| Kid::spawn(waiter, (cond.clone(), registered.clone(), woken.clone()))).collect();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (c, r, w) = (cond.clone(), registered.clone(), woken.clone());
            std::thread::spawn(move || waiter(c, r, w))
        })
        .collect();
    wait_until("six waiters", || registered_under_lock(&cond, &registered) == 6);

    // notify(2): exactly two return, the others keep waiting.
    assert_eq!(cond.acquire().unwrap().notify(2), 2);
    wait_until("two wake-ups", || woken.get() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(woken.get(), 2, "notify(2) must wake exactly two");

    assert_eq!(cond.acquire().unwrap().notify(3), 3);
    wait_until("five wake-ups", || woken.get() >= 5);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(woken.get(), 5, "notify(3) must wake exactly three");

    // More than are waiting: only the one left.
    assert_eq!(cond.acquire().unwrap().notify(10), 1);
    wait_until("six wake-ups", || woken.get() >= 6);
    assert_eq!(cond.acquire().unwrap().notify_all(), 0, "nobody is left");

    for k in kids {
        assert!(k.join(), "every child waiter was notified, none timed out");
    }
    for t in threads {
        assert!(t.join().unwrap());
    }
    assert_eq!(woken.get(), 6);
}

#[test]
fn notify_all_wakes_everyone_waiting() {
    let cond = Condition::new().unwrap();
    let registered = RawValue::new(0u32).unwrap();
    let woken = RawValue::new(0u32).unwrap();
    let kids: Vec<Kid<bool>> =
        (0..3).map(|_| Kid::spawn(waiter, (cond.clone(), registered.clone(), woken.clone()))).collect();
    wait_until("three waiters", || registered_under_lock(&cond, &registered) == 3);
    assert_eq!(cond.acquire().unwrap().notify_all(), 3);
    for k in kids {
        assert!(k.join());
    }
}

#[test]
fn wait_timeout_takes_about_t_and_reports_no_notify() {
    let cond = Condition::new().unwrap();
    let g = cond.acquire().unwrap();
    let t = Duration::from_millis(250);
    let start = Instant::now();
    let (g, notified) = g.wait_timeout(t).unwrap();
    assert_about(start, t);
    assert!(!notified);
    assert!(cond.lock().locked(), "the lock is held again after the wait");
    assert_eq!(g.notify(1), 0, "a timed-out waiter is no longer counted");
}

/// Sets the flag under the lock after a moment, then notifies.
fn set_later(cond: Condition, flag: RawValue<u32>) {
    std::thread::sleep(Duration::from_millis(100));
    let g = cond.acquire().unwrap();
    flag.set(1);
    g.notify_all();
}

#[test]
fn wait_for_returns_when_the_predicate_holds() {
    let cond = Condition::new().unwrap();
    let flag = RawValue::new(0u32).unwrap();
    let g = cond.acquire().unwrap();
    let kid = Kid::spawn(set_later, (cond.clone(), flag.clone()));
    let g = g.wait_for(|| flag.get() == 1).unwrap();
    assert_eq!(flag.get(), 1);
    drop(g);
    kid.join();

    // With a timeout and a predicate that never holds: false after ≈T.
    let g = cond.acquire().unwrap();
    let t = Duration::from_millis(200);
    let start = Instant::now();
    let (_g, ok) = g.wait_for_timeout(t, || flag.get() == 2).unwrap();
    assert!(!ok);
    assert_about(start, t);
}

fn add_under(lock: Lock, n: RawValue<u64>) {
    for _ in 0..500 {
        let _g = lock.acquire().unwrap();
        n.set(n.get() + 1);
    }
}

#[test]
fn a_condition_can_share_an_existing_lock() {
    let lock = Lock::new().unwrap();
    let cond = Condition::with_lock(lock.clone()).unwrap();
    let n = RawValue::new(0u64).unwrap();
    let g = cond.acquire().unwrap();
    assert!(lock.locked(), "holding the condition holds the lock");
    drop(g);
    let kid = Kid::spawn(add_under, (cond.lock().clone(), n.clone()));
    add_under(lock.clone(), n.clone());
    kid.join();
    assert_eq!(n.get(), 1000);
    let guard = lock.acquire().unwrap();
    let g = cond.guard(guard);
    assert_eq!(g.notify_all(), 0);
}

/// Waits (registered under the lock, then asleep, with no timeout) until
/// `flag` is 1.
fn wait_for_flag(cond: Condition, flag: RawValue<u32>) -> bool {
    let g = cond.acquire().unwrap();
    flag.set(2); // "registered": the notifier waits for this under the lock
    let _g = g.wait_for(|| flag.get() == 1).unwrap();
    true
}

#[test]
fn a_wait_begun_after_notify_all_does_not_take_an_earlier_waiters_wake_up() {
    // notify_all is for the waiters waiting when it runs. A thread that
    // starts waiting right after it must not take one of their wake-ups:
    // the waiter left asleep would miss the change it waits for.
    let cond = Condition::new().unwrap();
    let flag = RawValue::new(0u32).unwrap();
    let kid = Kid::spawn(wait_for_flag, (cond.clone(), flag.clone()));
    wait_until("the child to register", || registered_under_lock(&cond, &flag) == 2);
    sync_support::wait_asleep(kid.pid());
    let g = cond.acquire().unwrap();
    flag.set(1);
    assert_eq!(g.notify_all(), 1);
    // The notifier waits itself at once, before the child can wake up.
    let (g, notified) = g.wait_timeout(Duration::from_millis(100)).unwrap();
    drop(g);
    // Before: the child slept on, for ever (the join gives up after LONG).
    assert!(kid.join(), "the child waiting for the flag was never woken");
    assert!(!notified, "a wait begun after notify_all reported a notify");
}

#[test]
fn a_wait_on_a_guard_whose_hold_was_released_leaves_the_next_owner_alone() {
    // As a `LockGuard` whose hold `Lock::release` ended: waiting on such a
    // condition guard must not free the lock that another thread now holds.
    let cond = Condition::new().unwrap();
    let (released_tx, released_rx) = std::sync::mpsc::channel();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (back_tx, back_rx) = std::sync::mpsc::channel();
    let c = cond.clone();
    let stale_waiter = std::thread::spawn(move || {
        let g = c.acquire().unwrap();
        c.lock().release().unwrap(); // Python-style release of our own hold
        released_tx.send(()).unwrap();
        held_rx.recv_timeout(LONG).unwrap(); // another thread holds it now
        let (g, _) = g.wait_timeout(Duration::from_millis(50)).unwrap();
        back_tx.send(()).unwrap();
        drop(g);
    });
    released_rx.recv_timeout(LONG).unwrap();
    let mine = cond.lock().acquire_timeout(LONG).expect("the lock is free");
    held_tx.send(()).unwrap();
    // The wait takes the lock back before it returns: not while we hold it.
    let returned_meanwhile = back_rx.recv_timeout(Duration::from_millis(500)).is_ok();
    drop(mine);
    stale_waiter.join().unwrap();
    assert!(!returned_meanwhile, "the stale wait freed and took the lock another thread held");
}
