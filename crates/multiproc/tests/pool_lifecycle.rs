//! Lifecycle: terminate is prompt however much is queued, dropping a running
//! pool terminates it, imap reads its input lazily, and 1,000 pools leave no
//! trace (see `pool_cycles.rs`).

mod pool_support;

use std::cell::Cell;
use std::time::{Duration, Instant};

use multiproc::{Pool, PoolError, TaskError};
use multiproc_test_support::process_exists;
use pool_support::{WAIT, sleep_ms, square};

#[test]
fn terminate_with_10000_queued_tasks_is_prompt() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let results: Vec<_> = (0..10_000).map(|_| pool.apply_async(sleep_ms, (10,))).collect();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    pool.terminate();
    pool.join_timeout(WAIT).unwrap();
    let took = t.elapsed();
    assert!(took < pool_support::SLACK, "terminate + join took {took:?}");
    let mut terminated = 0;
    for mut r in results {
        match r.get_timeout(WAIT) {
            Ok(10) => {}
            Err(PoolError::Task { error: TaskError::Terminated, .. }) => terminated += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(terminated > 9_000, "{terminated}");
    assert!(matches!(pool.apply(square, (1,)), Err(PoolError::Closed)));
}

#[test]
fn dropping_a_running_pool_terminates_it() {
    let _watchdog = pool_support::watchdog();
    fn pid() -> i32 {
        std::process::id() as i32
    }
    let pool = Pool::new(1).unwrap();
    let worker = pool.apply(pid, ()).unwrap();
    assert!(process_exists(worker));
    let mut slow = pool.apply_async(sleep_ms, (60_000,));
    let t = Instant::now();
    drop(pool);
    assert!(t.elapsed() < pool_support::SLACK);
    assert!(matches!(slow.get_timeout(WAIT), Err(PoolError::Task { error: TaskError::Terminated, .. })));
    assert!(!process_exists(worker), "the worker was killed and reaped");
}

#[test]
fn imap_reads_an_endless_input_lazily() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let pulled = Cell::new(0u64);
    let endless = std::iter::repeat_with(|| {
        pulled.set(pulled.get() + 1);
        pulled.get()
    });
    let first: Vec<u64> = pool.imap(square, endless).take(10).map(Result::unwrap).collect();
    assert_eq!(first, (1..=10u64).map(square).collect::<Vec<_>>());
    assert!(pulled.get() < 100_000, "pulled {} items for 10 results", pulled.get());
    let endless = (0u64..).map(|x| x % 7);
    assert_eq!(pool.imap_unordered(square, endless).take(10).count(), 10);
}

#[test]
fn close_then_join_lets_queued_work_finish() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let r = pool.map_async(sleep_ms, vec![20u64; 20]);
    pool.close();
    pool.join_timeout(WAIT).unwrap();
    assert!(r.ready());
    assert_eq!(pool_support::get(r).unwrap(), vec![20; 20]);
}
