//! A pool dropped while its background calls are in flight withdraws
//! them as `terminate` does: their tasks still queued never run, a task a
//! host already runs finishes there (its result dropped), and the calls
//! fail with `RedisPoolError::Dropped`. An iterator that outlives its pool
//! reads its input no further: it yields `Dropped`, then ends.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use multiproc_redis::schema::Keys;
use support::{assert_dropped, eventually, local_worker, logged_run, pool, raw, server, start_log, starts, xlen};

const PREFIX: &str = "pool-drop";

/// How long dropping the pool may take: its result thread notices the
/// drop, then it withdraws the chunks and deletes its results stream.
const DROP_BOUND: Duration = Duration::from_secs(5);

/// How long each item of the chunk the host runs at the drop takes.
const RUN_MS: u64 = 2000;

#[test]
fn dropping_a_pool_withdraws_the_tasks_of_its_background_calls() {
    let server = server();
    let mut con = raw(&server);
    let keys = Keys::new(PREFIX, "default");
    let (running_log, queued_log) = (start_log("drop-running"), start_log("drop-queued"));
    let running_path = running_log.0.to_str().unwrap().to_string();
    let queued_path = queued_log.0.to_str().unwrap().to_string();

    // One process, which holds two items at most: a chunk of two slow
    // items keeps the host busy, and it reads no more entries meanwhile.
    let worker = local_worker(&server, PREFIX, 1);
    let pool = pool(&server, PREFIX).connect().unwrap();
    let caller = pool.caller_id().to_string();
    let mut running = pool.with_chunksize(2).starmap_async(logged_run, vec![(running_path, RUN_MS); 2]);
    assert!(eventually(Duration::from_secs(30), || starts(&running_log.0) == 1), "the first task did not start");
    let mut apply = pool.apply_async(logged_run, (queued_path.clone(), 0));
    let mut map = pool.with_chunksize(1).starmap_async(logged_run, vec![(queued_path, 0); 3]);
    let queued = eventually(Duration::from_secs(30), || xlen(&mut con, &keys.tasks()) == 5);
    assert!(queued, "the background calls did not queue their four chunks behind the busy one");

    let started = Instant::now();
    drop(pool);
    let took = started.elapsed();
    assert!(took < DROP_BOUND, "dropping the pool took {took:?}");
    assert_dropped(apply.get_timeout(Duration::from_secs(10)));
    assert_dropped(map.get_timeout(Duration::from_secs(10)));
    assert_dropped(running.get_timeout(Duration::from_secs(10)));

    // The busy chunk finishes on its host; its result, which nobody reads,
    // lands in a results stream that expires.
    let finished =
        eventually(Duration::from_secs(30), || starts(&running_log.0) == 2 && xlen(&mut con, &keys.tasks()) == 0);
    assert!(finished, "the busy chunk did not finish, or entries stayed queued");
    let ttl: i64 = redis::cmd("PTTL").arg(keys.results(&caller)).query(&mut con).unwrap();
    assert_ne!(ttl, -1, "the dropped pool's results stream does not expire");
    // The host, idle now, has had time to take any entry left.
    std::thread::sleep(Duration::from_millis(2 * RUN_MS));
    assert_eq!(starts(&queued_log.0), 0, "a task queued by a call of the dropped pool ran");

    // Every chunk in flight was withdrawn, the busy one too (should its
    // host die, the host that takes it drops it), in a set that expires.
    let withdrawn: Vec<u64> = redis::cmd("ZRANGE").arg(keys.withdrawn(&caller)).arg(0).arg(-1).query(&mut con).unwrap();
    assert_eq!(withdrawn.len(), 5, "{withdrawn:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(keys.withdrawn(&caller)).query(&mut con).unwrap();
    assert!(ttl > 0, "the withdrawn set has no expiry ({ttl})");
    worker.stop();
}

fn square(x: u64) -> u64 {
    x * x
}

/// How far an iterator may read its endless input before the test calls
/// it endless: the input panics there (so that a reader going on for ever
/// fails the test instead of filling memory).
const READ_LIMIT: usize = 10_000;

#[test]
fn an_unordered_iterator_that_outlives_its_pool_ends() {
    let server = server();
    let window = 4;
    let pool = pool(&server, "drop-endless").window(window).connect().unwrap();
    let read = Arc::new(AtomicUsize::new(0));
    let counter = read.clone();
    let input = (0u64..).inspect(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(n < READ_LIMIT, "the input was read {n} items deep after the pool was dropped");
    });
    // No host: the first window waits in the task stream.
    let it = pool.with_chunksize(1).imap_unordered(square, input);
    drop(pool);
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let outcomes: Vec<_> = it.take(READ_LIMIT).collect();
        let _ = tx.send(outcomes);
    });
    let outcomes = rx.recv_timeout(Duration::from_secs(30)).expect("the iterator did not end (or its input panicked)");
    reader.join().unwrap();
    assert!(!outcomes.is_empty() && outcomes.len() <= window + 2, "{} outcomes", outcomes.len());
    for outcome in outcomes {
        assert_dropped(outcome);
    }
    let read = read.load(Ordering::SeqCst);
    assert!(read <= window + 1, "the input was read {read} items deep");
}
