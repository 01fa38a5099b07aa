//! The socket timeouts of a connection are set when they change, not
//! before every command.

use std::time::{Duration, Instant};

use multiproc_test_support::wait_until;

use super::*;
use crate::server::RedisServer;

fn server() -> RedisServer {
    RedisServer::start_in_memory().unwrap_or_else(|e| panic!("this test needs redis-server: {e}"))
}

/// Timeouts set on the socket of `conn`'s connection so far.
fn timeout_sets(conn: &Conn) -> u64 {
    conn.link.as_ref().expect("connected").timeout_sets
}

fn ping(c: &mut Link) -> RedisResult<String> {
    redis::cmd("PING").query(c)
}

#[test]
fn commands_set_the_socket_timeouts_only_when_they_change() {
    let server = server();
    let mut conn = Conn::open(&server.url()).unwrap();
    // Connecting set the read and write timeouts once.
    assert_eq!(timeout_sets(&conn), 2);
    for _ in 0..100 {
        assert_eq!(conn.run(ping).unwrap(), "PONG");
    }
    assert_eq!(timeout_sets(&conn), 2, "commands with the same bound set nothing");

    // A nearer deadline bounds the next command by it: both timeouts are
    // set, and set back for the command after it.
    let deadline = Some(Instant::now() + Duration::from_secs(1));
    assert_eq!(conn.run_until(deadline, ping).unwrap(), "PONG");
    assert_eq!(timeout_sets(&conn), 4);
    assert_eq!(conn.run(ping).unwrap(), "PONG");
    assert_eq!(timeout_sets(&conn), 6);
}

#[test]
fn pipelines_answered_at_once_set_no_timeout() {
    let server = server();
    let mut conn = Conn::open(&server.url()).unwrap();
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("SET").arg("k").arg(1).ignore().cmd("INCR").arg("k").ignore().cmd("DEL").arg("k").ignore();
    let rounds = 100;
    for _ in 0..rounds {
        conn.run(|c| c.exec_pipeline(&pipe)).unwrap();
        assert_eq!(conn.run(ping).unwrap(), "PONG");
    }
    // Each reply may set the read timeout again if it comes later than the
    // slack (a loaded machine), and the command after it sets it back:
    // the test asks only that most rounds set nothing (before, each round
    // made 2 + 5 settings for the pipeline and 2 for the command).
    let sets = timeout_sets(&conn) - 2;
    assert!(sets < rounds, "{sets} timeouts set in {rounds} rounds of a pipeline and a command");
}

#[test]
fn a_pipeline_that_gets_an_error_reply_fails_with_it() {
    let server = server();
    let mut conn = Conn::open(&server.url()).unwrap();
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("s").arg("text").ignore().cmd("INCR").arg("s").ignore();
    let err = conn.run(|c| c.exec_pipeline(&pipe)).unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    // The connection is still in step.
    assert_eq!(conn.run(ping).unwrap(), "PONG");
}

#[test]
fn a_pipeline_to_a_server_that_stopped_answering_fails_by_its_deadline() {
    let server = server();
    let mut conn = Conn::open(&server.url()).unwrap();
    let mut pipe = redis::pipe();
    for _ in 0..50 {
        pipe.cmd("PING").ignore();
    }
    let paused = server.pause().unwrap();
    // redis-rs's own pipelines wait for each reply the full read timeout:
    // 50 × 300 ms here. The whole pipeline must end by its deadline.
    let started = Instant::now();
    let deadline = Some(started + Duration::from_millis(300));
    let err = conn.run_until(deadline, |c| c.exec_pipeline(&pipe)).unwrap_err();
    let took = started.elapsed();
    drop(paused);
    assert!(err.is_timeout(), "{err}");
    assert!(took < Duration::from_secs(3), "the pipeline took {took:?}");
    // The connection whose replies are out of step was dropped; the next
    // command makes a new one.
    assert_eq!(conn.run(ping).unwrap(), "PONG");
    assert_eq!(conn.connects(), 2);
}

#[test]
fn a_long_pipeline_sets_its_read_timeout_at_most_once_per_slack() {
    let server = server();
    let mut conn = Conn::open(&server.url()).unwrap();
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("SET").arg("k").arg(i).ignore();
    }
    let before = timeout_sets(&conn);
    let started = Instant::now();
    conn.run(|c| c.exec_pipeline(&pipe)).unwrap();
    let took = started.elapsed();
    // Not once per reply: once each time the deadline comes nearer than
    // the socket's bound by more than the slack.
    let most = (took.as_millis() / TIMEOUT_SLACK.as_millis()) as u64 + 1;
    let sets = timeout_sets(&conn) - before;
    assert!(sets <= most, "{sets} timeouts set for 20000 replies in {took:?}");
}

#[test]
fn a_retry_told_to_stop_in_its_pause_makes_no_more_attempt() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let server = server();
    let mut conn = Conn::open(&server.url()).unwrap();
    let (attempts, stop) = (AtomicU32::new(0), AtomicBool::new(false));
    // Every attempt fails as a lost reply does; the pauses after them are
    // 50, 100, 200, 400 and 800 ms, then 1 s.
    let lost = |_: &mut Link| -> RedisResult<()> {
        attempts.fetch_add(1, Ordering::SeqCst);
        Err(io::Error::new(io::ErrorKind::TimedOut, "lost").into())
    };
    let (told, ended) = std::thread::scope(|s| {
        let retry = s.spawn(|| {
            let r = conn.retry_while(Duration::from_secs(60), None, || !stop.load(Ordering::SeqCst), lost);
            (r, Instant::now())
        });
        let give_up = Instant::now() + Duration::from_secs(20);
        while attempts.load(Ordering::SeqCst) < 6 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100)); // in the 1 s pause
        let told = Instant::now();
        stop.store(true, Ordering::SeqCst);
        let (r, ended) = retry.join().unwrap();
        assert!(r.is_err_and(|e| is_transient(&e)));
        (told, ended)
    });
    assert_eq!(attempts.load(Ordering::SeqCst), 6, "an attempt was made after the retry was told to stop");
    let took = ended - told;
    assert!(took < Duration::from_millis(500), "the retry ended {took:?} after it was told to stop");
}

#[test]
fn a_refusal_keeps_the_connection() {
    let server = server();
    let mut conn = Conn::open(&server.url()).unwrap();
    let client_id = |c: &mut Link| -> RedisResult<i64> { redis::cmd("CLIENT").arg("ID").query(c) };
    let before = conn.run(client_id).unwrap();
    conn.run(|c| redis::cmd("CONFIG").arg("SET").arg("busy-reply-threshold").arg(50).exec(c)).unwrap();
    // Another client keeps Redis busy for 800 ms.
    let url = server.url();
    let script = std::thread::spawn(move || -> RedisResult<i64> {
        let mut con = redis::Client::open(url.as_str())?.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(10)))?;
        redis::cmd("EVAL").arg(multiproc_test_support::REDIS_BUSY_SCRIPT).arg(0).arg(800).query(&mut con)
    });
    wait_until(
        "redis answers BUSY while the script runs",
        Duration::from_secs(5),
        || matches!(conn.run_until(Some(Instant::now() + Duration::from_secs(2)), ping), Err(e) if is_refusal(&e)),
    );
    assert!(conn.link.is_some(), "the refusal dropped the connection");
    assert_eq!(script.join().expect("the script's thread panicked").unwrap(), 1);
    assert_eq!(conn.run(client_id).unwrap(), before, "the connection was replaced");
}
