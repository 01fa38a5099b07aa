//! A call that gives up waiting (its wait timeout) leaves nothing behind
//! in Redis for a worker to run later.

mod support;

use std::time::Duration;

use support::{pool, raw, server};

fn square(x: u64) -> u64 {
    x * x
}

fn len(v: Vec<u8>) -> usize {
    v.len()
}

#[test]
fn a_call_that_timed_out_cancels_its_queued_tasks_and_arguments() {
    let server = server();
    let pool = pool(&server, "gaveup").wait_timeout(Duration::from_millis(500)).connect().unwrap();
    let info = || multiproc_redis::queue_info(&server.url(), "gaveup", "default").unwrap();
    for _ in 0..3 {
        let err = pool.map(square, 0..40u64).unwrap_err();
        assert!(err.is_timeout() && !err.to_string().contains("go on"), "{err}");
        // Arguments over the entry limit travel in a key of their own.
        assert!(pool.map(len, vec![vec![7u8; 300 * 1024]]).unwrap_err().is_timeout());
    }
    // No worker runs: the entries of the calls that gave up would pile up
    // and be run, for nobody, by the next worker to start.
    assert_eq!(info().tasks, 0, "{:?}", info());
    let blobs: Vec<String> = redis::cmd("KEYS").arg("gaveup:*blob*").query(&mut raw(&server)).unwrap();
    assert!(blobs.is_empty(), "{blobs:?}");
}
