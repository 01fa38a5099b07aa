//! A full Redis (`maxmemory` reached, `noeviction`) refuses a batch of
//! chunks whose script also deletes the keys of earlier batches: it queues
//! nothing, writes nothing, and the call fails saying why.

mod support;

use std::time::Duration;

use multiproc_redis::schema::Keys;
use support::{pool, raw, server, used_memory, xlen};

const PREFIX: &str = "enqueue-oom";

/// The most filler written to reach the limit (it is 1 MB away).
const FILLER_KEYS: usize = 1024;

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_full_redis_refuses_a_batch_that_has_spent_batch_keys_to_delete() {
    let server = server();
    let mut con = raw(&server);
    let tasks = Keys::new(PREFIX, "default").tasks();
    let pool = pool(&server, PREFIX).connect().unwrap();

    // A first call, whose script is answered at once (no host runs it: it
    // runs out of wait time), leaves its batch's key to the script of the
    // next batch to delete.
    let first = pool.with_wait_timeout(Duration::from_millis(300)).apply(square, (2,)).unwrap_err();
    assert!(first.is_timeout(), "{first}");
    let pattern = format!("{PREFIX}:default:batch:{}:*", pool.caller_id());
    let spent: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
    assert_eq!(spent.len(), 1, "{spent:?}");

    // Filled until it refuses writes.
    redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").exec(&mut con).unwrap();
    let limit = used_memory(&mut con) + (1 << 20);
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(limit).exec(&mut con).unwrap();
    let filler = vec![0u8; 64 << 10];
    let refused = (0..FILLER_KEYS)
        .find_map(|i| redis::cmd("SET").arg(format!("{PREFIX}:filler:{i}")).arg(&filler).exec(&mut con).err())
        .expect("redis took 64 MB of filler over a limit 1 MB away");
    assert_eq!(refused.code(), Some("OOM"), "{refused}");
    let before = xlen(&mut con, &tasks);

    // No host: a batch queued despite the refusal would wait there, and
    // its call with it.
    let mut call = pool.apply_async(square, (3,));
    let outcome = call.get_timeout(Duration::from_secs(5));
    let after = xlen(&mut con, &tasks);
    let left: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).exec(&mut con).unwrap();

    let err = outcome.expect_err("a full redis queued the call's batch").to_string();
    assert!(err.contains("OOM") && err.contains("none of them was queued"), "{err}");
    assert_eq!(after, before, "a full redis queued the batch of a call that failed with: {err}");
    assert_eq!(left, spent, "the refused script deleted the spent batch key (it wrote)");
}
