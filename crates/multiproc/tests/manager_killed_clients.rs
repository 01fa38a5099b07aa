//! A client process SIGKILLed at any point of its calls (holding a manager
//! lock, or a reentrant one twice, waiting on a condition, waiting in a
//! queue's get, mid-update)
//! leaves nothing stuck in the manager: its locks are freed, its
//! connections' threads end, and the objects go on serving. Every wait is
//! bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::time::{Duration, Instant};

use multiproc::manager::{AcquireError, Condition, Dict, Lock, Manager, Queue, RLock};
use sync_support::{Kid, LONG, wait_until};

/// How long a lock a killed client held may take to be freed (its death is
/// seen at once; this is for a loaded machine).
const FREED_WITHIN: Duration = Duration::from_secs(10);

/// Acquires `lock`, also from a holder that died.
macro_rules! take {
    ($lock:expr) => {
        match $lock.acquire_timeout(FREED_WITHIN) {
            Ok(guard) => guard,
            Err(AcquireError::OwnerDied(died)) => died.into_inner(),
            Err(e) => panic!("not acquired within {FREED_WITHIN:?}: {e:?}"),
        }
    };
}

/// Calls without end from three threads: counts under `lock` (and `rlock`,
/// taken twice), waits and
/// notifies on `cond`, and waits in `q.get` (handed to its connection's
/// thread).
fn busy_everywhere((lock, rlock): (Lock, RLock), cond: Condition, d: Dict<u8, u64>, q: Queue<u8>) {
    let counter = {
        let d = d.clone();
        move || {
            loop {
                let guard = take!(lock);
                let (outer, inner) = (take!(rlock), take!(rlock));
                d.update(&0, |c: &mut Option<u64>| *c.get_or_insert(0) += 1).unwrap();
                drop((inner, outer, guard));
            }
        }
    };
    let waiter = move || {
        loop {
            let mut guard = take!(cond);
            cond.notify_all().unwrap();
            guard.wait_timeout(Duration::from_millis(2)).unwrap();
            drop(guard);
        }
    };
    std::thread::spawn(counter);
    std::thread::spawn(waiter);
    loop {
        if let Ok(item) = q.get_timeout(Duration::from_millis(1)) {
            q.put(item).unwrap();
        }
        d.insert(1, 1).unwrap();
    }
}

fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(Iterator::count).unwrap_or(0)
}

#[test]
fn a_client_killed_at_any_point_of_its_calls_leaves_nothing_stuck() {
    let m = Manager::start().unwrap();
    let (lock, rlock, cond) = (m.lock().unwrap(), m.rlock().unwrap(), m.condition().unwrap());
    let (d, q) = (m.dict::<u8, u64>().unwrap(), m.queue::<u8>().unwrap());
    let pid = m.pid().unwrap();
    let before = threads_of(pid);
    for (round, delay_ms) in [0u64, 1, 3, 7, 15, 30].into_iter().enumerate() {
        d.insert(0, 0).unwrap();
        let kid =
            Kid::<()>::spawn(busy_everywhere, ((lock.clone(), rlock.clone()), cond.clone(), d.clone(), q.clone()));
        let start = Instant::now();
        while d.get(&0).unwrap() < Some(10) {
            assert!(start.elapsed() < LONG, "round {round}: the child never got going");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        kid.kill();
        kid.reap();
        drop(take!(lock));
        drop(take!(rlock));
        drop(take!(cond));
        q.put(round as u8).unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), round as u8);
        wait_until("the killed client's connection threads to end", || threads_of(pid) == before);
    }
    m.shutdown().unwrap();
}
