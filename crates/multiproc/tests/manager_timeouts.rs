//! The timed forms of manager calls at their edges: a timeout far larger
//! than any clock (Python's `timeout=1e12`) waits as an untimed call does.
//! Every wait is bounded.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use multiproc::manager::Manager;

/// Bounds every wait of these tests.
const LONG: Duration = Duration::from_secs(10);

/// A timeout no clock can add: `Instant::now() + HUGE` overflows.
const HUGE: Duration = Duration::MAX;

/// Runs `call` on a thread; asserts it is still waiting a while later (it
/// did not fail at once), then runs `release` and returns the call's
/// result, printed.
fn waits_until_released<T: std::fmt::Debug + Send + 'static>(
    what: &str,
    call: impl FnOnce() -> T + Send + 'static,
    release: impl FnOnce(),
) -> String {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(call());
    });
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(RecvTimeoutError::Timeout) => {}
        Ok(_) => panic!("{what} with a huge timeout returned at once"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what} with a huge timeout panicked"),
    }
    release();
    let result = rx.recv_timeout(LONG).unwrap_or_else(|_| panic!("{what} still waits {LONG:?} after its release"));
    format!("{result:?}")
}

#[test]
fn a_huge_timeout_waits_like_no_timeout() {
    let m = Manager::start().unwrap();

    let q = m.queue::<u32>().unwrap();
    let q2 = q.clone();
    let got = waits_until_released("get_timeout", move || q2.get_timeout(HUGE), || q.put(7).unwrap());
    assert_eq!(got, "Ok(7)");

    let bounded = m.bounded_queue::<u32>(1).unwrap();
    bounded.put(1).unwrap();
    let b2 = bounded.clone();
    let put =
        waits_until_released("put_timeout", move || b2.put_timeout(2, HUGE), || assert_eq!(bounded.get().unwrap(), 1));
    assert_eq!(put, "Ok(())");

    let lock = m.lock().unwrap();
    let held = lock.acquire().unwrap();
    let l2 = lock.clone();
    let acquired = waits_until_released(
        "lock acquire_timeout",
        move || l2.acquire_timeout(HUGE).map(|g| g.leak()).map_err(|e| e.to_string()),
        || drop(held),
    );
    assert_eq!(acquired, "Ok(())");

    let sem = m.semaphore(0).unwrap();
    let s2 = sem.clone();
    let taken =
        waits_until_released("semaphore acquire_timeout", move || s2.acquire_timeout(HUGE), || sem.release().unwrap());
    assert_eq!(taken, "Ok(true)");

    let event = m.event().unwrap();
    let e2 = event.clone();
    let set = waits_until_released("event wait_timeout", move || e2.wait_timeout(HUGE), || event.set().unwrap());
    assert_eq!(set, "Ok(true)");

    let cond = m.condition().unwrap();
    let c2 = cond.clone();
    let notified = waits_until_released(
        "condition wait_timeout",
        move || {
            let mut guard = c2.acquire().unwrap();
            guard.wait_timeout(HUGE)
        },
        || {
            // Its lock is free once the waiter waits.
            let guard = cond.acquire_timeout(LONG).unwrap();
            assert_eq!(cond.notify(1).unwrap(), 1);
            drop(guard);
        },
    );
    assert_eq!(notified, "Ok(true)");

    let ready = m.value(false).unwrap();
    let (c3, r2) = (cond.clone(), ready.clone());
    let became = waits_until_released(
        "condition wait_for_timeout",
        move || {
            let mut guard = c3.acquire().unwrap();
            guard.wait_for_timeout(HUGE, || r2.get().unwrap())
        },
        || {
            let guard = cond.acquire_timeout(LONG).unwrap();
            ready.set(true).unwrap();
            assert_eq!(cond.notify_all().unwrap(), 1);
            drop(guard);
        },
    );
    assert_eq!(became, "Ok(true)");

    let barrier = m.barrier(2).unwrap();
    let b2 = barrier.clone();
    let passed = waits_until_released(
        "barrier wait_timeout",
        move || b2.wait_timeout(HUGE),
        || {
            barrier.wait_timeout(LONG).unwrap();
        },
    );
    assert!(passed.starts_with("Ok("), "{passed}");

    let jq = m.joinable_queue::<u32>().unwrap();
    jq.put(1).unwrap();
    let j2 = jq.clone();
    let joined = waits_until_released(
        "join_timeout",
        move || j2.join_timeout(HUGE),
        || {
            jq.get().unwrap();
            jq.task_done().unwrap();
        },
    );
    assert_eq!(joined, "Ok(())");

    m.shutdown().unwrap();
}

#[test]
fn a_zero_timeout_is_a_timeout_like_any_other() {
    let m = Manager::start().unwrap();
    let q = m.bounded_queue::<u32>(1).unwrap();
    // A deadline loop's last `left` is zero: its error must say "timeout"
    // as for any other timeout (only the _nowait forms say Empty / Full).
    let err = q.get_timeout(Duration::ZERO).unwrap_err();
    assert!(err.is_timeout(), "get_timeout(0) on an empty queue: {err:?}");
    assert!(q.get_timeout(Duration::from_nanos(1)).unwrap_err().is_timeout());
    q.put(1).unwrap();
    let err = q.put_timeout(2, Duration::ZERO).unwrap_err();
    assert!(err.is_timeout(), "put_timeout(0) on a full queue: {err:?}");
    assert!(q.put_timeout(2, Duration::from_nanos(1)).unwrap_err().is_timeout());
    assert!(!q.put_nowait(2).unwrap_err().is_timeout());
    assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), 1);
    assert!(!q.get_nowait().unwrap_err().is_timeout());
    let jq = m.joinable_queue::<u32>().unwrap();
    jq.put(1).unwrap();
    assert!(jq.join_timeout(Duration::ZERO).unwrap_err().is_timeout());
    let lock = m.lock().unwrap();
    let held = lock.acquire().unwrap();
    assert!(lock.acquire_timeout(Duration::ZERO).unwrap_err().is_timeout());
    drop(held);
    let e = m.event().unwrap();
    assert!(!e.wait_timeout(Duration::ZERO).unwrap());
    let s = m.semaphore(0).unwrap();
    assert!(!s.acquire_timeout(Duration::ZERO).unwrap());
    m.shutdown().unwrap();
}
