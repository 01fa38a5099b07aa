//! close, terminate and join on a RedisPool, as on the local Pool. Ported
//! from multiproc's tests/pool_lifecycle.rs; over Redis, terminate ends the
//! calls (and deletes their queued tasks) but cannot kill remote workers.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiproc_redis::RedisPoolError;
use support::{local_worker, pool, server};

/// Generous bound for waits that should finish quickly (loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(30);
/// Slack on top of a promised time.
const SLACK: Duration = Duration::from_secs(5);

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn close_then_join_lets_calls_in_flight_finish() {
    let server = server();
    let _w = local_worker(&server, "close", 2);
    let pool = pool(&server, "close").connect().unwrap();
    assert!(matches!(pool.join_timeout(WAIT), Err(RedisPoolError::NotClosed)));
    assert!(matches!(pool.join(), Err(RedisPoolError::NotClosed)));
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    // The callback outlasts the slow task: join must wait for it too.
    let r = pool.map_async(sleep_ms, vec![20u64; 20]).callback(move |_| {
        std::thread::sleep(Duration::from_millis(2_500));
        c.fetch_add(1, Ordering::SeqCst);
    });
    let slow = pool.apply_async(sleep_ms, (1_500,));
    pool.close();
    let err = pool.join_timeout(Duration::from_millis(100)).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    pool.join_timeout(WAIT).unwrap();
    assert!(r.ready() && slow.ready());
    assert_eq!(called.load(Ordering::SeqCst), 1, "join waited for the callback");
    assert_eq!(r.get().unwrap(), vec![20; 20]);
    assert_eq!(slow.get().unwrap(), 1_500);
    // No new calls, of any kind.
    assert!(matches!(pool.apply(square, (1,)), Err(RedisPoolError::Closed)));
    assert!(matches!(pool.map(square, 0..3u64), Err(RedisPoolError::Closed)));
    assert!(matches!(pool.with_chunksize(2).map(square, 0..3u64), Err(RedisPoolError::Closed)));
    assert!(matches!(pool.apply_async(square, (1,)).get(), Err(RedisPoolError::Closed)));
    let mut it = pool.imap(square, 0..3u64);
    assert!(matches!(it.next(), Some(Err(RedisPoolError::Closed))));
    assert!(it.next().is_none());
    drop(it);
    pool.join_timeout(WAIT).unwrap();
}

#[test]
fn an_imap_begun_before_close_yields_all_its_results() {
    let server = server();
    let _w = local_worker(&server, "closeimap", 2);
    let pool = pool(&server, "closeimap").connect().unwrap();
    let mut it = pool.imap(square, 0..50u64);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    pool.close();
    assert!(pool.join_timeout(Duration::from_millis(100)).unwrap_err().is_timeout(), "the imap is in flight");
    let rest: Vec<u64> = it.map(Result::unwrap).collect();
    assert_eq!(rest, (1..50u64).map(square).collect::<Vec<_>>());
    pool.join_timeout(WAIT).unwrap();
}

#[test]
fn terminate_fails_the_calls_in_flight_at_once_and_deletes_their_tasks() {
    let server = server();
    // No worker: every task stays queued, and without terminate each call
    // would wait its full 60 s wait timeout.
    // Chunk sizes and the window set, so the entries queued can be counted.
    let pool = pool(&server, "term").window(200).connect().unwrap();
    let results: Vec<_> = (0..100).map(|x| pool.apply_async(square, (x,))).collect();
    let m = pool.with_chunksize(10).map_async(square, 0..1_000u64);
    let endless = pool.with_chunksize(1).imap(square, 0u64..);
    let queued = || multiproc_redis::queue_info(&server.url(), "term", "default").unwrap().tasks;
    std::thread::scope(|s| {
        let blocked = s.spawn(|| pool.with_chunksize(1).map(square, 0..10u64));
        let lazy = s.spawn(move || endless.collect::<Vec<_>>());
        // Every call has queued its tasks (100 + 100 + a window of 200 + 10),
        // so the blocking map is in flight when the pool is terminated (after
        // a fixed sleep, a loaded machine may not have run its thread yet:
        // the map would then fail as Closed, not Terminated).
        assert!(support::eventually(WAIT, || queued() == 410), "queued {}", queued());
        let t = Instant::now();
        pool.terminate();
        pool.join_timeout(WAIT).unwrap();
        let took = t.elapsed();
        assert!(took < SLACK, "terminate + join took {took:?}");
        assert!(matches!(blocked.join().unwrap(), Err(RedisPoolError::Terminated)));
        let lazy = lazy.join().unwrap();
        assert!(lazy.iter().all(|r| matches!(r, Err(RedisPoolError::Terminated))), "{lazy:?}");
    });
    for r in results {
        assert!(r.ready(), "already failed");
        assert!(matches!(r.get(), Err(RedisPoolError::Terminated)));
    }
    assert!(matches!(m.get(), Err(RedisPoolError::Terminated)));
    assert!(matches!(pool.apply(square, (1,)), Err(RedisPoolError::Closed)));
    let info = multiproc_redis::queue_info(&server.url(), "term", "default").unwrap();
    assert_eq!(info.tasks, 0, "the queued tasks were deleted: {info:?}");
}
