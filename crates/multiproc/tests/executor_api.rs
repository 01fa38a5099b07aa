//! Executor in the concurrent.futures style: submit, map, shutdown(wait,
//! cancel_futures), submit after shutdown, max_tasks_per_child.

mod pool_support;

use std::time::{Duration, Instant};

use multiproc::{Executor, PoolError, TaskError};
use pool_support::{WAIT, sleep_ms, square};

fn pid(_: u64) -> u32 {
    std::process::id()
}

#[test]
fn submit_and_map() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(2).unwrap();
    let futs: Vec<_> = (0..20u64).map(|x| ex.submit(square, (x,)).unwrap()).collect();
    for (x, mut f) in (0..20u64).zip(futs) {
        assert_eq!(f.get_timeout(WAIT).unwrap(), x * x);
    }
    let got: Vec<u64> = ex.map(square, 0..50u64).unwrap().map(Result::unwrap).collect();
    assert_eq!(got, (0..50u64).map(square).collect::<Vec<_>>());
}

#[test]
fn submit_after_shutdown_is_an_error() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(1).unwrap();
    ex.shutdown(true, false);
    assert!(matches!(ex.submit(square, (1,)), Err(PoolError::ShutDown)));
    assert!(matches!(ex.map(square, 0..2u64), Err(PoolError::ShutDown)));
}

#[test]
fn shutdown_waits_for_running_work_or_cancels_pending_work() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(1).unwrap();
    let futs: Vec<_> = (0..5).map(|_| ex.submit(sleep_ms, (50,)).unwrap()).collect();
    let t = Instant::now();
    ex.shutdown(true, false);
    assert!(t.elapsed() >= Duration::from_millis(150), "waited for the work");
    assert!(futs.into_iter().all(|f| f.ready() && pool_support::get(f).is_ok()));

    let ex = Executor::new(1).unwrap();
    let running = ex.submit(sleep_ms, (300,)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pending: Vec<_> = (0..200).map(|_| ex.submit(sleep_ms, (300,)).unwrap()).collect();
    let t = Instant::now();
    ex.shutdown(true, true);
    assert!(t.elapsed() < Duration::from_secs(5), "cancelled work does not run");
    assert_eq!(pool_support::get(running).unwrap(), 300);
    let cancelled = pending
        .into_iter()
        .filter(|f| f.wait_timeout(WAIT))
        .map(pool_support::get)
        .filter(|r| matches!(r, Err(PoolError::Task { error: TaskError::Cancelled, .. })))
        .count();
    assert!(cancelled >= 190, "{cancelled} cancelled");
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::builder().max_workers(1).max_tasks_per_child(3).build().unwrap();
    let pids: Vec<u32> = (0..9u64).map(|x| pool_support::get(ex.submit(pid, (x,)).unwrap()).unwrap()).collect();
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{pids:?}");
}

#[test]
fn dropping_an_executor_waits_for_its_work() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(2).unwrap();
    let f = ex.submit(sleep_ms, (100,)).unwrap();
    drop(ex);
    assert!(f.ready());
    assert_eq!(pool_support::get(f).unwrap(), 100);
}
