//! An `imap` whose next chunk cannot be queued (Redis gone) fails its
//! items still in flight with the same error as the rest.

mod support;

use std::time::Duration;

use multiproc_redis::{RedisPoolBuilder, RedisPoolError};
use support::{local_worker, pool, server};

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Item 0 comes back, item 1 is still running when Redis is killed, and
/// items 2 and 3 cannot be queued: the outcomes of items 1 to 3.
fn outcomes_after_redis_dies(prefix: &str, builder: impl FnOnce(RedisPoolBuilder) -> RedisPoolBuilder) -> Vec<String> {
    let mut server = server();
    let worker = local_worker(&server, prefix, 2);
    let pool = builder(pool(&server, prefix).window(2)).connect().unwrap();
    // Item 1 runs long enough to be still running at the kill, however
    // slowly a loaded machine brings item 0 back.
    let mut it = pool.with_chunksize(1).imap(nap, [0u64, 5_000, 0, 0]);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    server.kill();
    let rest: Vec<Result<u64, RedisPoolError>> = it.collect();
    drop(pool);
    drop(worker);
    assert!(rest.len() >= 2, "{rest:?}");
    rest.into_iter()
        .map(|r| {
            let e = r.unwrap_err();
            format!("{}{e}", if e.is_timeout() { "timeout: " } else { "" })
        })
        .collect()
}

#[test]
fn the_items_in_flight_fail_with_the_wait_timeout_too() {
    let got = outcomes_after_redis_dies("qf-wait", |b| {
        b.wait_timeout(Duration::from_secs(10)).reconnect_timeout(Duration::from_secs(120))
    });
    assert!(got.iter().all(|e| e.starts_with("timeout: ")), "{got:?}");
}

#[test]
fn the_items_in_flight_fail_with_one_redis_error() {
    let got = outcomes_after_redis_dies("qf-gone", |b| b.reconnect_timeout(Duration::from_millis(500)));
    assert!(got.iter().all(|e| e.contains("could not queue") && !e.contains("redis: redis:")), "{got:?}");
}
