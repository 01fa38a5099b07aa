//! A batch of chunks whose queuing reply was lost after Redis had queued
//! it (a network cut) is sent again, and queued once: each task runs once.

mod support;

use std::time::Duration;

use multiproc_redis::schema::Keys;
use support::proxy::LossyProxy;
use support::{eventually, local_worker, logged_run, pool_at, raw, server, start_log, starts, xlen};

const PREFIX: &str = "enqueue-retry";

#[test]
fn a_batch_sent_again_after_its_reply_was_lost_is_queued_once() {
    let server = server();
    let mut con = raw(&server);
    let tasks = Keys::new(PREFIX, "default").tasks();
    let log = start_log("enqueue-retry");
    let log_path = log.0.to_str().unwrap().to_string();

    // The caller talks to Redis through the proxy; the host does not.
    let proxy = LossyProxy::start(&server);
    let pool = pool_at(&proxy.url(), PREFIX).connect().unwrap();
    let worker = local_worker(&server, PREFIX, 2);

    // One batch of four chunks, one script: Redis runs it, its reply is
    // lost, and the caller sends it again on a new connection.
    proxy.lose_next_reply_to("EVAL");
    let items: Vec<(String, u64)> = (0..4).map(|_| (log_path.clone(), 0)).collect();
    let results = pool.with_chunksize(1).starmap(logged_run, items).unwrap();
    assert_eq!(results, [0; 4]);
    assert_eq!(proxy.replies_lost(), 1, "no reply was lost: the batch was not sent again");

    // A batch queued twice leaves four more entries, which the host runs.
    assert!(eventually(Duration::from_secs(30), || xlen(&mut con, &tasks) == 0), "entries stayed queued");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(starts(&log.0), 4, "the tasks of a batch sent twice ran twice");

    // The batch's key, which made the second run a no-op, expires.
    let pattern = format!("{PREFIX}:default:batch:{}:*", pool.caller_id());
    let batch_keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
    assert_eq!(batch_keys.len(), 1, "{batch_keys:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(&batch_keys[0]).query(&mut con).unwrap();
    assert!(ttl > 0 && ttl <= 120_000, "{} has PTTL {ttl}", batch_keys[0]);
    worker.stop();
}
