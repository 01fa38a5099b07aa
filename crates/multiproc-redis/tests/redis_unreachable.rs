//! A pool or a worker host whose Redis is down or does not answer fails
//! to start soon, with an error that says what happened and what to do.

mod support;

use std::time::{Duration, Instant};

use multiproc_redis::{RedisPool, RedisPoolError, Worker};
use support::server;

/// What starting may take on a loaded machine beyond its connect timeout.
const BOUND: Duration = Duration::from_secs(10);

/// A URL on a loopback port where nothing listens: port 1 (tcpmux), which
/// no test binds. A port bound and released instead may be taken by a
/// server another test starts meanwhile.
fn nothing_listening() -> String {
    "redis://127.0.0.1:1/".to_string()
}

/// Starts a pool and a worker host on `url`, at once: both fail, within
/// twice [`BOUND`] (as when they started one after the other); returns
/// their errors.
fn start_both(url: &str) -> Vec<RedisPoolError> {
    let started = Instant::now();
    let (pool, worker) = std::thread::scope(|s| {
        let pool = s.spawn(|| RedisPool::builder(url).connect().expect_err("no pool without redis"));
        let worker = Worker::builder(url).processes(1).start().expect_err("no worker without redis");
        (pool.join().unwrap(), worker)
    });
    let took = started.elapsed();
    assert!(took < 2 * BOUND, "starting took {took:?}");
    vec![pool, worker]
}

fn says_what_to_do(err: &RedisPoolError) {
    let text = err.to_string();
    assert!(text.contains("could not connect to redis"), "{text}");
    assert!(text.contains("check that the server is running"), "{text}");
}

#[test]
fn starting_without_a_server_says_what_to_do() {
    for err in start_both(&nothing_listening()) {
        assert!(err.to_string().contains("refused"), "{err}");
        says_what_to_do(&err);
    }
}

#[test]
fn starting_on_a_paused_server_says_what_to_do() {
    let server = server();
    let paused = server.pause().unwrap();
    let errors = start_both(&server.url());
    drop(paused);
    for err in errors {
        assert!(err.to_string().contains("no answer"), "{err}");
        says_what_to_do(&err);
    }
}

#[test]
fn a_url_that_is_not_redis_says_so() {
    let err = RedisPool::builder("http://127.0.0.1:1/").connect().expect_err("not a redis url");
    assert!(err.to_string().contains("redis://"), "{err}");
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_call_that_cannot_queue_its_tasks_says_what_to_do() {
    let mut server = server();
    let pool = RedisPool::builder(&server.url()).reconnect_timeout(Duration::from_secs(1)).connect().unwrap();
    server.kill();
    let started = Instant::now();
    let err = pool.map(square, 0..4u64).expect_err("no redis, no call");
    assert!(started.elapsed() < BOUND, "the call took {:?}", started.elapsed());
    let text = err.to_string();
    assert!(text.contains("could not queue"), "{text}");
    assert!(text.contains("check that the server is running"), "{text}");
}

#[test]
fn starting_on_a_paused_server_with_a_database_and_a_password_says_what_to_do() {
    let server = server();
    let paused = server.pause().unwrap();
    // The connection's handshake (AUTH, SELECT) waits for the server too.
    let url = server.url().replace("redis://", "redis://user:pw@") + "3";
    let errors = start_both(&url);
    drop(paused);
    for err in errors {
        says_what_to_do(&err);
    }
}
