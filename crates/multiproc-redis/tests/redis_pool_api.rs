//! The Pool's calls through Redis, with a real redis-server and a worker
//! host in this process.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use multiproc_redis::{RedisPoolError, TaskFailure};
use support::{local_worker, pool, server};

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn picky(x: u64) -> u64 {
    assert!(x != 3, "no threes");
    x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn crash(_: u64) -> u64 {
    std::process::abort()
}

fn len(v: Vec<u8>) -> usize {
    v.len()
}

#[test]
fn every_call_of_the_pool() {
    let server = server();
    let _w = local_worker(&server, "api", 2);
    let pool = pool(&server, "api").connect().unwrap();

    assert_eq!(pool.map(square, 0..100u64).unwrap(), (0..100u64).map(square).collect::<Vec<_>>());
    assert_eq!(pool.with_chunksize(7).map(square, 0..50u64).unwrap(), (0..50u64).map(square).collect::<Vec<_>>());
    assert_eq!(pool.apply(add, (2, 3)).unwrap(), 5);
    assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)]).unwrap(), [3, 7]);
    let mut r = pool.apply_async(add, (20, 22));
    assert_eq!(r.get_timeout(Duration::from_secs(60)).unwrap(), 42);
    assert!(matches!(r.get_timeout(Duration::from_secs(1)), Err(RedisPoolError::Taken)));
    let m = pool.map_async(square, vec![1u64, 2, 3]);
    assert_eq!(m.get().unwrap(), [1, 4, 9]);

    let ordered: Vec<u64> = pool.imap(square, 0..300u64).map(Result::unwrap).collect();
    assert_eq!(ordered, (0..300u64).map(square).collect::<Vec<_>>());
    let unordered: HashSet<u64> = pool.imap_unordered(square, 0..300u64).map(Result::unwrap).collect();
    assert_eq!(unordered, (0..300u64).map(square).collect::<HashSet<_>>());
}

#[test]
fn a_failing_task_fails_alone() {
    let server = server();
    let _w = local_worker(&server, "faults", 2);
    let pool = pool(&server, "faults").retries(1).connect().unwrap();

    let each: Vec<_> = pool.imap(picky, 0..6u64).collect();
    assert!(
        matches!(&each[3], Err(RedisPoolError::Task { index: 3, error: TaskFailure::Panicked { message, .. } }) if message == "no threes"),
        "{:?}",
        each[3]
    );
    assert_eq!(*each[5].as_ref().unwrap(), 5);

    let err = pool.with_task_timeout(Duration::from_millis(300)).apply(nap, (10_000,)).unwrap_err();
    assert!(matches!(err.task_failure(), Some(TaskFailure::Timeout(_))), "{err}");
    assert_eq!(pool.with_task_timeout(Duration::from_secs(30)).apply(nap, (1,)).unwrap(), 1);

    // A task that kills its process: delivered twice (retries 1), then dead.
    let err = pool.apply(crash, (1,)).unwrap_err();
    assert!(matches!(err.task_failure(), Some(TaskFailure::DeadLettered { attempts: 2, .. })), "{err}");
    // The host goes on.
    assert_eq!(pool.map(square, 0..10u64).unwrap().len(), 10);
}

#[test]
fn large_arguments_travel_in_their_own_keys() {
    let server = server();
    let _w = local_worker(&server, "big", 1);
    let pool = pool(&server, "big").connect().unwrap();
    let big = vec![7u8; 3 << 20];
    assert_eq!(pool.apply(len, (big.clone(),)).unwrap(), 3 << 20);
    assert_eq!(pool.with_chunksize(4).map(len, vec![big.clone(); 8]).unwrap(), vec![3 << 20; 8]);
    // Read results and used argument keys are gone.
    let mut con = support::raw(&server);
    assert!(support::eventually(Duration::from_secs(10), || {
        let keys: Vec<String> = redis::cmd("KEYS").arg("big:*blob*").query(&mut con).unwrap();
        keys.is_empty()
    }));
}

#[test]
fn a_wait_is_bounded_when_no_worker_runs() {
    let server = server();
    let pool = pool(&server, "idle").wait_timeout(Duration::from_millis(500)).connect().unwrap();
    let err = pool.map(square, 0..3u64).unwrap_err();
    assert!(err.is_timeout(), "{err}");
}
