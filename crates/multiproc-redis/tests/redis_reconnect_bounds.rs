//! The reconnect timeout at its extremes: `Duration::MAX` (wait for Redis
//! for ever) still queues calls, their batch keys expiring within a day;
//! `Duration::ZERO` (never wait) still gives a dropped pool the time to
//! withdraw its tasks and delete its results stream.

mod support;

use std::time::Duration;

use multiproc_redis::schema::Keys;
use support::{assert_dropped, eventually, exists, local_worker, pool, raw, server, xlen, zcard};

/// The longest a batch key lives, in ms: a day.
const DAY_MS: i64 = 24 * 3600 * 1000;

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_pool_that_waits_for_redis_for_ever_runs_its_calls() {
    const PREFIX: &str = "reconnect-max";
    let server = server();
    let mut con = raw(&server);
    let worker = local_worker(&server, PREFIX, 1);
    let pool = pool(&server, PREFIX).reconnect_timeout(Duration::MAX).connect().unwrap();
    assert_eq!(pool.apply(square, (7,)).unwrap(), 49);
    let pattern = format!("{PREFIX}:default:batch:{}:*", pool.caller_id());
    let batch_keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
    assert_eq!(batch_keys.len(), 1, "{batch_keys:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(&batch_keys[0]).query(&mut con).unwrap();
    assert!(ttl > 0 && ttl <= DAY_MS, "{} has PTTL {ttl}", batch_keys[0]);
    drop(pool);
    worker.stop();
}

#[test]
fn a_pool_that_never_waits_for_redis_withdraws_its_tasks_when_dropped() {
    const PREFIX: &str = "reconnect-zero";
    let server = server();
    let mut con = raw(&server);
    let keys = Keys::new(PREFIX, "default");
    let worker = local_worker(&server, PREFIX, 1);
    let pool = pool(&server, PREFIX).reconnect_timeout(Duration::ZERO).connect().unwrap();
    let caller = pool.caller_id().to_string();
    // A result, read: the results stream exists (empty).
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    worker.stop();
    let results = keys.results(&caller);
    assert!(exists(&mut con, &results), "the results stream is not there");

    // No host now: the background calls' chunks wait in the task stream.
    let mut calls: Vec<_> = (0..3u64).map(|i| pool.apply_async(square, (i,))).collect();
    assert!(eventually(Duration::from_secs(30), || xlen(&mut con, &keys.tasks()) == 3), "the calls did not queue");
    drop(pool);
    for call in &mut calls {
        assert_dropped(call.get_timeout(Duration::from_secs(10)));
    }
    assert_eq!(xlen(&mut con, &keys.tasks()), 0, "the dropped pool left its tasks queued");
    assert_eq!(zcard(&mut con, &keys.withdrawn(&caller)), 3, "the dropped pool did not mark its tasks withdrawn");
    assert!(!exists(&mut con, &results), "the dropped pool did not delete its results stream");
}
