//! AsyncResult: get, get_timeout, wait, ready, successful, callbacks (exactly
//! one per call), cancel, and the Future implementation under tokio.

mod pool_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use multiproc::{Event, Pool, PoolError, TaskError};
use pool_support::{SLACK, WAIT, add, get, sleep_ms, square};

fn fail(x: u64) -> u64 {
    panic!("no {x}")
}

#[test]
fn get_timeout_expires_after_about_t_and_the_task_goes_on() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(1).unwrap();
    // Far longer than the timeout: still running when `get_timeout` returns,
    // however late this thread is scheduled then.
    let mut r = pool.apply_async(sleep_ms, (2_000,));
    let t = Instant::now();
    let err = r.get_timeout(Duration::from_millis(200)).unwrap_err();
    let took = t.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(200) + SLACK, "{took:?}");
    assert!(!r.ready());
    assert_eq!(r.get_timeout(WAIT).unwrap(), 2_000, "the task went on");
    assert!(matches!(r.get_timeout(WAIT), Err(PoolError::Taken)));
}

#[test]
fn wait_ready_and_successful() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    // Far longer than the 50 ms wait below, however late this thread runs.
    let slow = pool.apply_async(sleep_ms, (2_000,));
    assert!(!slow.ready());
    assert!(matches!(slow.successful(), Err(PoolError::NotReady)));
    assert!(!slow.wait_timeout(Duration::from_millis(50)));
    assert!(slow.wait_timeout(WAIT));
    assert!(slow.ready());
    assert!(slow.successful().unwrap());
    let bad = pool.apply_async(fail, (1,));
    assert!(bad.wait_timeout(WAIT));
    assert!(!bad.successful().unwrap());
    assert!(matches!(get(bad), Err(PoolError::Task { error: TaskError::Panicked(_), .. })));
    let many: Vec<_> = (0..10u64).map(|x| pool.apply_async(square, (x,))).collect();
    for (x, r) in (0..10u64).zip(many) {
        assert!(r.wait_timeout(WAIT));
        assert!(r.successful().unwrap());
        assert_eq!(get(r).unwrap(), x * x);
    }
}

#[test]
fn exactly_one_callback_runs_per_call() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let oks = Arc::new(AtomicUsize::new(0));
    let errs = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for x in 0..20u64 {
        let (o, e, t1, t2) = (oks.clone(), errs.clone(), tx.clone(), tx.clone());
        let r = if x % 4 == 0 { pool.apply_async(fail, (x,)) } else { pool.apply_async(square, (x,)) };
        handles.push(
            r.callback(move |v| {
                o.fetch_add(1, Ordering::SeqCst);
                t1.send(Ok(*v)).unwrap();
            })
            .error_callback(move |err| {
                e.fetch_add(1, Ordering::SeqCst);
                t2.send(Err(err.to_string())).unwrap();
            }),
        );
    }
    for h in &handles {
        assert!(h.wait_timeout(WAIT));
    }
    let got: Vec<_> = (0..20).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "no extra callback");
    assert_eq!(oks.load(Ordering::SeqCst), 15);
    assert_eq!(errs.load(Ordering::SeqCst), 5);
    assert!(got.iter().filter_map(|r| r.as_ref().err()).all(|m| m.contains("panicked")));
    // A callback attached after completion runs at once, on this thread.
    let done = pool.apply_async(add, (1, 1));
    assert!(done.wait_timeout(WAIT));
    let (t, r) = mpsc::channel();
    let done = done.callback(move |v| t.send(*v).unwrap());
    assert_eq!(r.try_recv().unwrap(), 2);
    assert_eq!(get(done).unwrap(), 2, "the value stays for get");
    // map_async: one callback for the whole call.
    let (t, r) = mpsc::channel();
    let m = pool.map_async(square, 0..100u64).callback(move |v: &Vec<u64>| t.send(v.len()).unwrap());
    assert_eq!(r.recv_timeout(WAIT).unwrap(), 100);
    assert_eq!(get(m).unwrap().len(), 100);
}

/// Sets `started`, then sleeps `ms`.
fn say_started_then_sleep(started: Event, ms: u64) -> u64 {
    started.set();
    sleep_ms(ms)
}

#[test]
fn a_queued_task_can_be_cancelled_a_running_one_cannot() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(1).unwrap();
    let started = Event::new().unwrap();
    // Runs long enough that the tasks queued behind it are still queued
    // when this thread cancels one, however late it is scheduled.
    let running = pool.apply_async(say_started_then_sleep, (started.clone(), 2_000));
    let queued: Vec<_> = (0..50).map(|_| pool.apply_async(sleep_ms, (1,))).collect();
    // Running (so handed to the worker) once it says so, not after a guess.
    assert!(started.wait_timeout(WAIT), "the first task did not start");
    assert!(!running.cancel());
    let last = queued.last().unwrap();
    assert!(last.cancel());
    assert!(last.cancelled());
    let mut outcomes = queued.into_iter().map(get).collect::<Vec<_>>();
    let last = outcomes.pop().unwrap();
    assert!(matches!(last, Err(PoolError::Task { error: TaskError::Cancelled, .. })), "{last:?}");
    assert!(outcomes.iter().all(|o| o.is_ok()));
    assert_eq!(get(running).unwrap(), 2_000);
}

#[test]
fn async_results_are_futures() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let a = pool.apply_async(square, (7,));
        let b = pool.map_async(square, 0..10u64);
        let c = pool.apply_async(sleep_ms, (150,));
        let (a, b, c) = tokio::time::timeout(WAIT, async { (a.await, b.await, c.await) }).await.unwrap();
        assert_eq!(a.unwrap(), 49);
        assert_eq!(b.unwrap(), (0..10u64).map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(c.unwrap(), 150);
        let bad = tokio::time::timeout(WAIT, pool.apply_async(fail, (3,))).await.unwrap();
        assert!(bad.is_err());
        // A slow task and a timer race fairly: the future is woken, not polled in a loop.
        let slow = pool.apply_async(sleep_ms, (2_000,));
        assert!(tokio::time::timeout(Duration::from_millis(100), slow).await.is_err());
    });
}
