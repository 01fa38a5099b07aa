//! A look at a queue is bounded when Redis stops answering.

use super::*;
use crate::server::RedisServer;

/// What a bounded look may take beyond its bound on a loaded machine.
const SLACK: Duration = Duration::from_secs(4);

#[test]
fn a_look_on_a_connection_whose_server_paused_fails_within_its_bound() {
    let server = RedisServer::start_in_memory().unwrap_or_else(|e| panic!("this test needs redis-server: {e}"));
    let keys = Keys::new("paused-look", "default");
    let mut conn = Conn::open(&server.url()).unwrap();
    let paused = server.pause().unwrap();
    let started = Instant::now();
    let result = look(&mut conn, &keys, Some(started + QUEUE_INFO_TIMEOUT));
    let took = started.elapsed();
    drop(paused);
    assert!(result.is_err(), "a paused server gives no queue info: {result:?}");
    assert!(took < QUEUE_INFO_TIMEOUT + SLACK, "the look took {took:?}");
}

#[test]
fn a_queue_without_stream_or_group_has_no_hosts() {
    let server = RedisServer::start_in_memory().unwrap_or_else(|e| panic!("this test needs redis-server: {e}"));
    let keys = Keys::new("fresh", "default");
    let mut conn = Conn::open(&server.url()).unwrap();
    let deadline = Some(Instant::now() + QUEUE_INFO_TIMEOUT);
    let empty = QueueInfo { tasks: 0, dead_letters: 0, hosts: Vec::new() };
    // No stream: XINFO says "no such key".
    assert_eq!(look(&mut conn, &keys, deadline).unwrap(), empty);
    // A stream without the group: XINFO says NOGROUP.
    conn.run(|c| redis::cmd("XADD").arg(keys.tasks()).arg("*").arg("f").arg("v").exec(c)).unwrap();
    assert_eq!(look(&mut conn, &keys, deadline).unwrap(), QueueInfo { tasks: 1, ..empty });
}
