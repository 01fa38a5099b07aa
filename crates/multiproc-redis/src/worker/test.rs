//! A host joining its queue's consumer group waits for Redis a bounded time.

use std::time::{Duration, Instant};

use super::intake::ensure_group;
use crate::conn::Conn;
use crate::server::RedisServer;

/// What joining may take beyond its 10 s bound on a loaded machine.
const SLACK: Duration = Duration::from_secs(4);

#[test]
fn joining_the_group_on_a_server_that_stopped_answering_fails_within_its_bound() {
    let server = RedisServer::start_in_memory().unwrap_or_else(|e| panic!("this test needs redis-server: {e}"));
    let mut conn = Conn::open(&server.url()).unwrap();
    let paused = server.pause().unwrap();
    let started = Instant::now();
    let result = ensure_group(&mut conn, "joining:default:tasks", "host-1-0");
    let took = started.elapsed();
    drop(paused);
    let err = result.expect_err("a paused server creates no group");
    assert!(took < Duration::from_secs(10) + SLACK, "joining took {took:?}");
    assert!(err.to_string().contains("check that the server is running"), "{err}");
    // Resumed, it answers again.
    ensure_group(&mut conn, "joining:default:tasks", "host-1-0").unwrap();
}

#[test]
fn arguments_that_cannot_be_read_while_redis_is_away_are_not_taken_for_lost() {
    let mut server = RedisServer::start_in_memory().unwrap_or_else(|e| panic!("this test needs redis-server: {e}"));
    let mut conn = Conn::open(&server.url()).unwrap();
    let args = crate::schema::Args::Blob { key: "away:blob:1".into(), len: 16 };
    server.kill();
    // Not a task failure (it would be dead-lettered, and its caller told
    // to submit it again): the error of a Redis away.
    let e = super::intake::load_args(&mut conn, &args, || true).expect_err("redis is away");
    assert!(crate::conn::is_transient(&e), "{e}");
}
