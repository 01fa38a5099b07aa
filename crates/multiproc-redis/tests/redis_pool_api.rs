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

fn reversed(mut v: Vec<u8>) -> Vec<u8> {
    v.reverse();
    v
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
    let mut s = pool.starmap_async(add, vec![(1u64, 1u64), (2, 2)]);
    assert_eq!(s.get_timeout(Duration::from_secs(60)).unwrap(), [2, 4]);

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
    // Large results too: several 2 MiB results, over more than one result entry.
    let half: Vec<u8> = (0..2 << 20).map(|i| i as u8).collect();
    let back = pool.with_chunksize(3).map(reversed, vec![half.clone(); 6]).unwrap();
    let want: Vec<u8> = half.iter().rev().copied().collect();
    assert!(back.len() == 6 && back.iter().all(|b| *b == want));
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

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(30));
    x * x
}

#[test]
fn a_result_delivered_twice_reaches_the_caller_once() {
    use multiproc_redis::schema::{self, ChunkResult, Keys, Outcome};
    let server = server();
    let _w = local_worker(&server, "dupes", 1);
    let pool = pool(&server, "dupes").connect().unwrap();
    let results_key = Keys::new("dupes", "default").results(pool.caller_id());
    let mut con = support::raw(&server);
    // Chunk ids start at 1: chunk k holds item k - 1.
    let result_of = |task: u64| {
        let bytes = postcard::to_allocvec(&((task - 1) * (task - 1))).unwrap();
        ChunkResult { task, outcome: Outcome::Items(vec![Ok(serde_bytes::ByteBuf::from(bytes))]) }
    };
    let n = 20u64;
    let mut got = Vec::new();
    let mut results = pool.with_chunksize(1).imap_unordered(slow_square, 0..n);
    for r in results.by_ref().take(5) {
        got.push(r.unwrap());
    }
    // Every chunk's result again, twice: the first five are duplicates of
    // delivered results, the rest arrive before the worker's own (which
    // then are the duplicates).
    for _ in 0..2 {
        let fields = schema::result_fields(&(1..=n).map(result_of).collect::<Vec<_>>());
        let _: String = redis::cmd("XADD").arg(&results_key).arg("*").arg(&fields[..]).query(&mut con).unwrap();
    }
    got.extend(results.map(Result::unwrap));
    assert_eq!(got.len() as u64, n);
    assert_eq!(got.iter().copied().collect::<HashSet<_>>(), (0..n).map(|i| i * i).collect::<HashSet<_>>());
    // The worker's late results for the same chunks are dropped too: the
    // next call gets only its own.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(pool.map(square, 0..3u64).unwrap(), [0, 1, 4]);
}

#[test]
fn a_pool_and_a_worker_with_different_keys_say_so() {
    let server = server();
    let _w =
        multiproc_redis::Worker::builder(&server.url()).prefix("keys").auth_key(b"one").processes(1).start().unwrap();
    let pool = pool(&server, "keys").auth_key(b"two").connect().unwrap();
    let err = pool.apply(square, (3,)).unwrap_err();
    assert_eq!(err.task_failure(), Some(&TaskFailure::WrongKey), "{err}");
    let pool = support::pool(&server, "keys").auth_key(b"one").connect().unwrap();
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<multiproc_redis::RedisPool>();
    send_sync::<multiproc_redis::Worker>();
    send::<multiproc_redis::RedisAsync<u64>>();
    send::<multiproc_redis::RedisImap<'static, u64>>();
}

#[test]
fn an_abandoned_call_cancels_its_queued_tasks() {
    let server = server();
    let _w = local_worker(&server, "cancel", 1);
    let pool = pool(&server, "cancel").connect().unwrap();
    let mut it = pool.with_chunksize(1).imap(slow_square, 0..300u64);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    let queued = multiproc_redis::queue_info(&server.url(), "cancel", "default").unwrap().tasks;
    assert!(queued > 100, "only {queued} entries queued");
    drop(it);
    // Only what the worker already holds is left, and it drains.
    let info = || multiproc_redis::queue_info(&server.url(), "cancel", "default").unwrap();
    assert!(info().tasks < 20, "{:?}", info());
    assert!(support::eventually(Duration::from_secs(30), || info().tasks == 0), "{:?}", info());
    // A map that stops at its first failure cancels the rest the same way.
    let err = pool.with_chunksize(1).map(picky, (3..200u64).chain(0..3)).unwrap_err();
    assert!(err.task_failure().is_some(), "{err}");
    assert!(support::eventually(Duration::from_secs(30), || info().tasks == 0), "{:?}", info());
    assert_eq!(pool.map(square, 0..3u64).unwrap(), [0, 1, 4]);
}

#[test]
fn a_stopped_worker_finishes_what_it_holds() {
    let server = server();
    let first = local_worker(&server, "stop", 2);
    let consumer = first.consumer().to_string();
    let pool = pool(&server, "stop").connect().unwrap();
    let mut call = pool.with_chunksize(1).map_async(nap, vec![300u64; 8]);
    let info = || multiproc_redis::queue_info(&server.url(), "stop", "default").unwrap();
    let held_by_first = || info().hosts.iter().filter(|h| h.name == consumer).map(|h| h.pending).sum::<u64>();
    // Stopped once it holds tasks (a fixed sleep may end before a loaded
    // host has read any).
    assert!(support::eventually(Duration::from_secs(30), || held_by_first() > 0), "the host took nothing");
    let t = std::time::Instant::now();
    first.stop(); // finishes and writes the tasks it took
    // What it held was finished: acknowledged and deleted, not left pending.
    let after = info();
    assert_eq!(held_by_first(), 0, "the stopped host still holds entries: {after:?}");
    assert!(after.tasks < 8, "stop returned with nothing finished: {after:?}");
    // The rest is still queued, not held by a stopped host: a new host runs it
    // at once (the visibility timeout is 30 s).
    let _second = local_worker(&server, "stop", 2);
    assert_eq!(call.get_timeout(Duration::from_secs(20)).unwrap(), vec![300u64; 8]);
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_host_serves_any_number_of_distinct_task_timeouts_one_after_another() {
    let server = server();
    let _w = local_worker(&server, "timeouts", 1);
    let pool = pool(&server, "timeouts").connect().unwrap();
    for k in 0..12u64 {
        let r = pool.with_task_timeout(Duration::from_secs(60 + k)).apply(square, (k,));
        assert_eq!(r.unwrap(), k * k, "call {k}");
    }
}

#[test]
fn durations_past_u64_milliseconds_do_not_wrap() {
    // 2^64 ms + 384 ms: as u64 milliseconds, 384 ms.
    let huge = Duration::from_secs(18_446_744_073_709_552);
    let server = server();
    let pool = pool(&server, "huge").result_ttl(huge).connect().unwrap();
    let mut call = pool.apply_async(len, (vec![7u8; 1 << 20],));
    // Queued with no host for a second: its argument key outlives that.
    std::thread::sleep(Duration::from_secs(1));
    let _w = local_worker(&server, "huge", 1);
    assert_eq!(call.get_timeout(Duration::from_secs(30)).unwrap(), 1 << 20);
    assert_eq!(pool.with_task_timeout(huge).apply(nap, (1000,)).unwrap(), 1000);
}

#[test]
fn a_background_call_whose_pool_is_dropped_fails_saying_so() {
    let server = server();
    // No worker: nothing would ever answer these calls.
    let pool = multiproc_redis::RedisPool::builder(&server.url()).prefix("dropped").connect().unwrap();
    let mut calls: Vec<_> = (0..64u64).map(|i| pool.apply_async(square, (i,))).collect();
    drop(pool);
    for call in &mut calls {
        let err = call.get_timeout(Duration::from_secs(10)).expect_err("no pool, no result");
        assert!(matches!(err, RedisPoolError::Dropped), "{err:?}");
        assert!(err.to_string().contains("the pool was dropped before the result arrived"), "{err}");
    }
}
