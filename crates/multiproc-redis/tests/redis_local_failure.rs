//! A pool that cannot start a thread on its own host says so, and what to
//! do, rather than blame Redis. This file has one test: it lowers its
//! process's limit of processes (and, as root, changes its user ids), so it
//! runs in a fresh copy of this test binary.

mod support;

use std::error::Error;
use std::time::Duration;

use multiproc_redis::{RedisPool, RedisPoolError};
use multiproc_test_support::{NoRoomForThreads, in_fresh_copy, run_in_fresh_copy};
use support::server;

fn square(x: u64) -> u64 {
    x * x
}

/// The error says the host, not Redis, failed, and what to do.
fn blames_the_host(err: &RedisPoolError, what: &str) {
    let text = err.to_string();
    assert!(!matches!(err, RedisPoolError::Redis(_)), "blamed on redis: {text}");
    assert!(text.contains(what) && text.contains("out of threads or memory") && text.contains("ulimit"), "{text}");
    assert!(err.source().is_some(), "no OS error as the source: {text}");
}

/// Set in the fresh copy that runs the test's body.
const IN_FRESH_COPY: &str = "MULTIPROC_REDIS_TEST_NO_THREADS";

#[test]
fn a_thread_that_cannot_start_is_a_local_failure() {
    if in_fresh_copy(IN_FRESH_COPY) {
        return thread_start_failures_blame_the_host();
    }
    run_in_fresh_copy("a_thread_that_cannot_start_is_a_local_failure", IN_FRESH_COPY, Duration::from_secs(120));
}

fn thread_start_failures_blame_the_host() {
    let server = server();
    let url = server.url();

    let limit = NoRoomForThreads::new();
    let err = RedisPool::builder(&url).connect().expect_err("no result thread, no pool");
    drop(limit);
    blames_the_host(&err, "could not start the pool's result thread");

    let pool = RedisPool::builder(&url).connect().unwrap();
    let limit = NoRoomForThreads::new();
    let mut call = pool.apply_async(square, (3u64,));
    drop(limit);
    let err = call.get_timeout(Duration::from_secs(30)).expect_err("no call thread, no call");
    blames_the_host(&err, "could not start the call's thread");
}
