//! Executor in the concurrent.futures style: submit, map, shutdown(wait,
//! cancel_futures), submit after shutdown, max_tasks_per_child.

mod pool_support;

use std::time::{Duration, Instant};

use multiproc::{Event, Executor, PoolError, RawArray, TaskError};
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

/// Sets `started`, then sleeps `ms`.
fn say_started_then_sleep(started: Event, ms: u64) -> u64 {
    started.set();
    sleep_ms(ms)
}

#[test]
fn shutdown_waits_for_running_work_or_cancels_pending_work() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(1).unwrap();
    // Timed from before the submits: the five run one after the other, so
    // 250 ms pass before the last is done, however late this thread runs.
    let t = Instant::now();
    let futs: Vec<_> = (0..5).map(|_| ex.submit(sleep_ms, (50,)).unwrap()).collect();
    ex.shutdown(true, false);
    assert!(t.elapsed() >= Duration::from_millis(250), "waited for the work");
    assert!(futs.into_iter().all(|f| f.ready() && pool_support::get(f).is_ok()));

    let ex = Executor::new(1).unwrap();
    let started = Event::new().unwrap();
    let running = ex.submit(say_started_then_sleep, (started.clone(), 300)).unwrap();
    // Running (so not cancellable) once it says so, not after a guess.
    assert!(started.wait_timeout(WAIT), "the first task did not start");
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

/// Sleeps 50 ms, then counts itself in slot 0 (one worker: no race).
fn counted_sleep(item: (u64, RawArray<u32>)) -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    let (x, ran) = item;
    ran.set(0, ran.get(0).unwrap() + 1);
    x
}

#[test]
fn shutdown_with_cancel_futures_cancels_the_queued_items_of_a_map() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(1).unwrap();
    let ran = RawArray::<u32>::zeroed(1).unwrap();
    let mut results = ex.map(counted_sleep, (0..100u64).map(|x| (x, ran.clone()))).unwrap();
    assert_eq!(results.next_timeout(WAIT).unwrap().unwrap(), 0);
    ex.shutdown(true, true);
    let rest: Vec<_> = std::iter::from_fn(|| results.next_timeout(WAIT)).collect();
    let cancelled =
        rest.iter().filter(|r| matches!(r, Err(PoolError::Task { error: TaskError::Cancelled, .. }))).count();
    assert!(ran.get(0).unwrap() < 20, "{} items ran after the shutdown", ran.get(0).unwrap());
    assert!(cancelled >= 80, "{cancelled} cancelled of {}", rest.len());
}

#[test]
fn a_dropped_map_sends_no_more_of_its_items() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(1).unwrap();
    let ran = RawArray::<u32>::zeroed(1).unwrap();
    let mut results = ex.map(counted_sleep, (0..100u64).map(|x| (x, ran.clone()))).unwrap();
    assert_eq!(results.next_timeout(WAIT).unwrap().unwrap(), 0);
    drop(results);
    ex.shutdown(true, false);
    let n = ran.get(0).unwrap();
    assert!(n < 20, "{n} of 100 items ran though the map was dropped after the first");
}

/// As [`counted_sleep`], returning the worker's pid.
fn counted_sleep_pid(item: (u64, RawArray<u32>)) -> u32 {
    counted_sleep(item);
    std::process::id()
}

#[test]
fn a_dropped_maps_items_are_not_run_again_when_their_worker_dies() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(1).unwrap();
    let ran = RawArray::<u32>::zeroed(1).unwrap();
    let mut results = ex.map(counted_sleep_pid, (0..100u64).map(|x| (x, ran.clone()))).unwrap();
    let worker = results.next_timeout(WAIT).unwrap().unwrap();
    // Let the worker receive a few more chunks, then drop the map: those
    // chunks are in flight, not queued.
    std::thread::sleep(Duration::from_millis(20));
    drop(results);
    let killed = std::process::Command::new("kill").args(["-9", &worker.to_string()]).status().unwrap();
    assert!(killed.success());
    // Counted once the worker is dead: until the kill lands (starting `kill`
    // takes a while on a loaded machine) it goes on running the items it
    // holds, which is not running them again.
    let t = Instant::now();
    while !is_dead(worker) && t.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(is_dead(worker), "the worker survived SIGKILL");
    let before = ran.get(0).unwrap();
    ex.shutdown(true, false);
    let after = ran.get(0).unwrap();
    assert_eq!(after, before, "{} items ran again after the worker died", after - before);
}

/// True once process `pid` no longer runs (a zombie, or reaped).
fn is_dead(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    // The state follows the command name, which may hold spaces and ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X"))
}

#[test]
fn an_executor_whose_last_handle_is_dropped_in_a_result_callback_ends_without_hanging() {
    let _watchdog = pool_support::watchdog();
    // The callback runs on the pool's own thread; dropping the executor
    // there (its shutdown joins the pool) once waited there for itself.
    let ex = std::sync::Arc::new(Executor::new(2).unwrap());
    let held = std::sync::Arc::clone(&ex);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut later = ex.submit(sleep_ms, (400,)).unwrap();
    // 100 ms: the callback is attached before the result comes, so it runs
    // on the pool's thread.
    let first = ex.submit(sleep_ms, (100,)).unwrap().callback(move |v| {
        drop(held);
        tx.send(*v).unwrap();
    });
    drop(ex); // the callback holds the last handle
    assert_eq!(rx.recv_timeout(WAIT).expect("the callback ended"), 100);
    drop(first);
    // Work submitted before the drop still finishes, as a shutdown waits for it.
    assert_eq!(later.get_timeout(WAIT).unwrap(), 400);
}
