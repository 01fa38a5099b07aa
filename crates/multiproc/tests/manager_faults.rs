//! Manager faults (issue 9, item 6): a killed manager fails every pending
//! and later call promptly; a client killed holding a manager lock leaves it
//! to the next acquirer with `OwnerDied`; a client killed mid-call leaves
//! the objects consistent. Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::time::{Duration, Instant, SystemTime};

use multiproc::manager::{
    AcquireError, Barrier, Condition, Event, JoinableQueue, Lock, Manager, Queue, RLock, Semaphore,
};
use sync_support::{Kid, LONG};

/// How soon a death must be seen: a lane client sees its manager gone
/// within 100 ms, a manager sees a client gone at once; the rest is room
/// for a loaded machine (these tests run beside each other's processes).
const WITHIN: Duration = Duration::from_secs(3);

fn sigkill(pid: i32) {
    let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

/// A client blocked in one call; returns (was it a connection error, when it
/// returned, as seconds since the epoch).
fn blocked_client(
    which: u8,
    q: Queue<u8>,
    lock: Lock,
    cond: Condition,
    barrier: Barrier,
    ready: Queue<u8>,
) -> (bool, f64) {
    let result = match which {
        0 => {
            ready.put(0).unwrap();
            q.get().map(drop)
        }
        1 => {
            ready.put(1).unwrap();
            match lock.acquire() {
                Ok(_) | Err(AcquireError::OwnerDied(_)) => Ok(()),
                Err(AcquireError::Manager(e)) => Err(e),
                Err(AcquireError::Timeout) => panic!("timeout without one"),
            }
        }
        2 => {
            let mut guard = cond.acquire().unwrap();
            ready.put(2).unwrap();
            guard.wait()
        }
        _ => {
            ready.put(3).unwrap();
            barrier.wait().map(drop)
        }
    };
    let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    (result.is_err_and(|e| e.is_connection()), at)
}

#[test]
fn sigkilled_manager_fails_four_blocked_clients_promptly() {
    let m = Manager::start().unwrap();
    let (q, lock, cond, barrier, ready) =
        (m.queue().unwrap(), m.lock().unwrap(), m.condition().unwrap(), m.barrier(2).unwrap(), m.queue().unwrap());
    lock.acquire().unwrap().leak(); // the lock client blocks
    let kids: Vec<Kid<(bool, f64)>> = (0..4u8)
        .map(|i| Kid::spawn(blocked_client, (i, q.clone(), lock.clone(), cond.clone(), barrier.clone(), ready.clone())))
        .collect();
    for _ in 0..4 {
        ready.get_timeout(LONG).unwrap();
    }
    sync_support::until_calls_wait(&m, 4);
    let killed_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    sigkill(m.pid().unwrap());
    for kid in kids {
        let (connection_error, at) = kid.join();
        assert!(connection_error, "a blocked call did not fail with a connection error");
        assert!(at - killed_at < WITHIN.as_secs_f64(), "a blocked call failed {:.3}s after the kill", at - killed_at);
    }
    // Later calls fail at once too.
    let t = Instant::now();
    assert!(q.put(1).unwrap_err().is_connection());
    assert!(Manager::connect(m.address(), None).is_err());
    assert!(t.elapsed() < WITHIN);
}

fn hold_and_linger(lock: Lock, rlock: RLock, cond: Condition, holding: Event) {
    lock.acquire().unwrap().leak();
    rlock.acquire().unwrap().leak();
    rlock.acquire().unwrap().leak();
    cond.acquire().unwrap().leak();
    holding.set().unwrap();
    std::thread::sleep(LONG);
}

fn owner_died<G>(r: Result<G, AcquireError<G>>) -> bool {
    match r {
        Err(AcquireError::OwnerDied(g)) => {
            drop(g.into_inner());
            true
        }
        Ok(_) => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn sigkilled_lock_holder_next_acquirer_gets_owner_died() {
    let m = Manager::start().unwrap();
    let (lock, rlock, cond, holding) =
        (m.lock().unwrap(), m.rlock().unwrap(), m.condition().unwrap(), m.event().unwrap());
    let holder = Kid::<()>::spawn(hold_and_linger, (lock.clone(), rlock.clone(), cond.clone(), holding.clone()));
    assert!(holding.wait_timeout(LONG).unwrap());
    // One acquirer is already waiting when the holder dies.
    let l2 = lock.clone();
    let waiter = std::thread::spawn(move || {
        let died = owner_died(l2.acquire_timeout(LONG));
        (died, Instant::now())
    });
    sync_support::until_calls_wait(&m, 1);
    assert!(lock.is_locked().unwrap());
    holder.kill();
    let killed = Instant::now();
    let (died, at) = waiter.join().unwrap();
    assert!(died, "the waiting acquirer was not told OwnerDied");
    assert!(at.duration_since(killed) < WITHIN, "{:?}", at.duration_since(killed));
    assert!(owner_died(rlock.acquire_timeout(LONG)));
    assert!(owner_died(cond.acquire_timeout(LONG)));
    // Only the first acquirer after the death is told.
    assert!(!owner_died(lock.acquire_timeout(LONG)));
    holder.reap();
}

fn take_one(q: Queue<u32>, started: Event) -> u32 {
    started.set().unwrap();
    q.get().unwrap()
}

#[test]
fn a_client_killed_mid_get_takes_nothing() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u32>().unwrap();
    let started = m.event().unwrap();
    let taker = Kid::spawn(take_one, (q.clone(), started.clone()));
    assert!(started.wait_timeout(LONG).unwrap());
    sync_support::until_calls_wait(&m, 1);
    taker.kill();
    assert_eq!(taker.reap(), Some(-9));
    // Put right away: the dead client's wait must not take it.
    q.put(42).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 42);
    assert_eq!(q.qsize().unwrap(), 0);
}

fn put_one(q: Queue<u32>, started: Event) {
    started.set().unwrap();
    q.put(99).unwrap();
}

#[test]
fn a_client_killed_mid_put_on_a_full_queue_puts_nothing() {
    let m = Manager::start().unwrap();
    let q = m.bounded_queue::<u32>(1).unwrap();
    q.put(1).unwrap();
    let started = m.event().unwrap();
    let putter = Kid::<()>::spawn(put_one, (q.clone(), started.clone()));
    assert!(started.wait_timeout(LONG).unwrap());
    sync_support::until_calls_wait(&m, 1);
    putter.kill();
    assert_eq!(putter.reap(), Some(-9));
    // Make room right away: the dead client's wait must not fill it.
    assert_eq!(q.get_timeout(LONG).unwrap(), 1);
    q.put_timeout(2, LONG).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 2);
    assert_eq!(q.qsize().unwrap(), 0);
}

fn update_forever(d: multiproc::manager::Dict<u8, Vec<u64>>, started: Event) {
    started.set().unwrap();
    for i in 0.. {
        d.update_with(&0, i, |v: &mut Option<Vec<u64>>, i: u64| {
            let v = v.get_or_insert_with(Vec::new);
            v.push(i);
            v.push(i);
        })
        .unwrap();
    }
}

#[test]
fn a_client_killed_mid_updates_leaves_entries_whole() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, Vec<u64>>().unwrap();
    let started = m.event().unwrap();
    let writer = Kid::<()>::spawn(update_forever, (d.clone(), started.clone()));
    assert!(started.wait_timeout(LONG).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    writer.kill();
    writer.reap();
    let v = d.get(&0).unwrap().unwrap();
    assert!(!v.is_empty());
    // Each update pushes a pair: no half-done update is visible.
    assert_eq!(v.len() % 2, 0);
    assert!(v.chunks(2).all(|p| p[0] == p[1]));
    d.update(&0, |v: &mut Option<Vec<u64>>| v.take()).unwrap();
    assert_eq!(d.len().unwrap(), 0);
}

fn wait_for_lock(lock: Lock, waiting: Event) {
    waiting.set().unwrap();
    let _ = lock.acquire_timeout(LONG);
}

#[test]
fn a_waiter_killed_before_its_turn_never_takes_the_lock() {
    let m = Manager::start().unwrap();
    let (lock, waiting) = (m.lock().unwrap(), m.event().unwrap());
    let guard = lock.acquire().unwrap();
    let waiter = Kid::<()>::spawn(wait_for_lock, (lock.clone(), waiting.clone()));
    assert!(waiting.wait_timeout(LONG).unwrap());
    sync_support::until_calls_wait(&m, 1);
    waiter.kill();
    waiter.reap();
    drop(guard); // release right away: the dead waiter must not take it
    // A plain acquisition: nobody died holding it.
    match lock.acquire_timeout(LONG) {
        Ok(g) => drop(g),
        Err(AcquireError::OwnerDied(_)) => panic!("the dead waiter took the lock"),
        Err(e) => panic!("{e}"),
    }
}

fn hold_then_slow_update(lock: Lock, d: multiproc::manager::Dict<u8, u8>, marker: String) {
    lock.acquire().unwrap().leak();
    // The update runs on the manager's dispatcher; the test kills this
    // client while it runs (the marker file says it started).
    let _ = d.update_with(&0, marker, |_: &mut Option<u8>, marker: String| {
        std::fs::write(&marker, b"running").unwrap();
        std::thread::sleep(Duration::from_secs(2));
    });
    sync_support::linger();
}

#[test]
fn a_client_killed_while_its_call_runs_still_releases_its_lock() {
    let m = Manager::start().unwrap();
    let (lock, d) = (m.lock().unwrap(), m.dict::<u8, u8>().unwrap());
    let marker = std::env::temp_dir().join(format!("multiproc-slow-update-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let holder =
        Kid::<()>::spawn(hold_then_slow_update, (lock.clone(), d.clone(), marker.to_string_lossy().into_owned()));
    sync_support::wait_until("the slow update to start", || marker.exists());
    holder.kill();
    holder.reap();
    std::fs::remove_file(&marker).unwrap();
    // The dead client's connection ends once its call is answered, and its
    // lock goes to the next acquirer with OwnerDied.
    assert!(owner_died(lock.acquire_timeout(Duration::from_secs(10))), "the dead client's lock was not released");
}

fn wait_on_condition(cond: Condition, holding: Event) {
    let mut guard = cond.acquire().unwrap();
    holding.set().unwrap();
    let _ = guard.wait_timeout(LONG);
    guard.leak();
    sync_support::linger();
}

/// A client process waiting on `cond` (to be killed), then a live waiter
/// (a thread here) after it in line; returns once both wait, with the
/// condition's lock free.
fn doomed_then_live_waiter(cond: &Condition, holding: &Event) -> (Kid<()>, std::thread::JoinHandle<bool>) {
    let doomed = Kid::<()>::spawn(wait_on_condition, (cond.clone(), holding.clone()));
    assert!(holding.wait_timeout(LONG).unwrap());
    // The condition's lock is free once the doomed client waits in it.
    drop(cond.acquire_timeout(LONG).unwrap());
    let (c2, (tx, rx)) = (cond.clone(), std::sync::mpsc::channel());
    let live = std::thread::spawn(move || {
        let mut guard = c2.acquire_timeout(LONG).unwrap();
        tx.send(()).unwrap();
        let notified = guard.wait_timeout(Duration::from_secs(10)).unwrap();
        drop(guard);
        notified
    });
    rx.recv_timeout(LONG).unwrap();
    drop(cond.acquire_timeout(LONG).unwrap()); // the live one waits now
    (doomed, live)
}

#[test]
fn a_notify_that_reaches_a_killed_waiter_goes_to_a_live_one() {
    let m = Manager::start().unwrap();
    let (cond, holding) = (m.condition().unwrap(), m.event().unwrap());
    let (doomed, live) = doomed_then_live_waiter(&cond, &holding);
    let guard = cond.acquire_timeout(LONG).unwrap();
    doomed.kill();
    doomed.reap();
    // Notified at once, before the manager noticed the death: the notify
    // must not be lost on the dead waiter.
    assert_eq!(cond.notify(1).unwrap(), 1);
    drop(guard);
    assert!(live.join().unwrap(), "the live waiter was not notified");
    // Nobody holds the lock: the dead waiter did not take it back.
    assert!(!owner_died(cond.acquire_timeout(LONG)));
}

#[test]
fn a_notified_waiter_killed_before_it_takes_the_lock_back_passes_the_notify_on() {
    let m = Manager::start().unwrap();
    let (cond, holding) = (m.condition().unwrap(), m.event().unwrap());
    let (doomed, live) = doomed_then_live_waiter(&cond, &holding);
    let guard = cond.acquire_timeout(LONG).unwrap();
    assert_eq!(cond.notify(1).unwrap(), 1); // to the doomed one, first in line
    // It waits to take the lock back (held here) when it is killed.
    std::thread::sleep(Duration::from_millis(200));
    doomed.kill();
    doomed.reap();
    std::thread::sleep(Duration::from_millis(300)); // the manager notices
    drop(guard);
    assert!(live.join().unwrap(), "the notify was lost with the killed waiter");
    assert!(!owner_died(cond.acquire_timeout(LONG)));
}

/// Blocks in one call of kind `which` (after saying so on `ready`); true if
/// it ended with a connection error.
fn blocked_in_any_call(
    which: u8,
    m: (Queue<u8>, Queue<u8>, Event, Semaphore, JoinableQueue<u8>),
    ready: Queue<u8>,
) -> bool {
    let (q, full, event, sem, jq) = m;
    ready.put(which).unwrap();
    let result = match which {
        0 => q.get().map(drop),
        1 => full.put(2),
        2 => event.wait(),
        3 => sem.acquire(),
        _ => jq.join(),
    };
    result.is_err_and(|e| e.is_connection())
}

#[test]
fn shutdown_fails_every_blocked_call_promptly_and_exits_zero() {
    let m = Manager::start().unwrap();
    let objects = (
        m.queue().unwrap(),
        m.bounded_queue(1).unwrap(),
        m.event().unwrap(),
        m.semaphore(0).unwrap(),
        m.joinable_queue().unwrap(),
    );
    objects.1.put(1).unwrap();
    objects.4.put(1).unwrap();
    let ready = m.queue().unwrap();
    let kids: Vec<Kid<bool>> =
        (0..5u8).map(|i| Kid::spawn(blocked_in_any_call, (i, objects.clone(), ready.clone()))).collect();
    for _ in 0..5 {
        ready.get_timeout(LONG).unwrap();
    }
    sync_support::until_calls_wait(&m, 5);
    let t = Instant::now();
    m.shutdown().unwrap(); // exit code 0, or an error
    for kid in kids {
        assert!(kid.join(), "a blocked call did not end with a connection error");
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

fn notify_and_hold(cond: Condition, holding: Event) {
    let guard = cond.acquire().unwrap();
    assert_eq!(cond.notify(1).unwrap(), 1);
    guard.leak();
    holding.set().unwrap();
    sync_support::linger();
}

#[test]
fn a_waiter_taking_back_a_lock_whose_holder_died_is_told_owner_died() {
    let m = Manager::start().unwrap();
    let (cond, holding) = (m.condition().unwrap(), m.event().unwrap());
    let (c2, (tx, rx)) = (cond.clone(), std::sync::mpsc::channel());
    let waiter = std::thread::spawn(move || {
        let mut guard = c2.acquire_timeout(LONG).unwrap();
        tx.send(()).unwrap();
        let waited = guard.wait_timeout(LONG).map_err(|e| e.to_string());
        // Held again either way; released here.
        drop(guard);
        waited
    });
    rx.recv_timeout(LONG).unwrap();
    // The notifier takes the lock once the waiter waits, notifies, and
    // dies holding it: the waiter takes it back from a dead holder.
    let notifier = Kid::<()>::spawn(notify_and_hold, (cond.clone(), holding.clone()));
    assert!(holding.wait_timeout(LONG).unwrap());
    notifier.kill();
    notifier.reap();
    let waited = waiter.join().unwrap();
    assert!(waited.as_ref().is_err_and(|e| e.contains("died")), "the waiter was not told: {waited:?}");
    // Told once: the next acquirer finds it clean.
    assert!(!owner_died(cond.acquire_timeout(LONG)));
}
