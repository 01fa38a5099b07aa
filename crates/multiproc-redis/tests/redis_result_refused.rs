//! Redis refuses to store a result (out of memory under `maxmemory` with
//! `noeviction`): the caller learns it at once from the worker host, not
//! by waiting out its timeout.

mod support;

use std::time::{Duration, Instant};

use multiproc_redis::{RedisPoolError, TaskFailure};
use support::{local_worker, pool, raw, server, used_memory};

fn blob(n: u64) -> Vec<u8> {
    vec![7; n as usize]
}

#[test]
fn a_result_redis_refuses_to_store_fails_its_call_saying_why() {
    let server = server();
    let mut con = raw(&server);
    let _w = local_worker(&server, "oom", 1);
    let pool = pool(&server, "oom").wait_timeout(Duration::from_secs(20)).connect().unwrap();
    assert_eq!(pool.apply(blob, (3,)).unwrap(), vec![7; 3]);
    // Room for the small writes, none for a 32 MB result.
    let limit = used_memory(&mut con) + (4 << 20);
    redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").exec(&mut con).unwrap();
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(limit).exec(&mut con).unwrap();

    let started = Instant::now();
    let r = pool.apply(blob, (32 << 20,));
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).exec(&mut con).unwrap();
    match r {
        Err(RedisPoolError::Task { index: 0, error: TaskFailure::ResultRefused(why) }) => {
            assert!(why.contains("OOM"), "{why}");
        }
        other => panic!("expected the refusal, got {:?}", other.map(|v| v.len())),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "the caller learned it only after {:?}", started.elapsed());
    // The host goes on.
    assert_eq!(pool.apply(blob, (5,)).unwrap(), vec![7; 5]);
}
