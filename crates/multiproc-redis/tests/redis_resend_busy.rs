//! A batch whose queuing reply was lost after Redis queued it, and whose
//! script sent again meets a real `BUSY` (another client's script running
//! past `busy-reply-threshold`): `BUSY` is a refusal for good, not waited
//! out, and the question whether the first try queued the batch meets
//! `BUSY` too. So the call fails at once with an error that names `BUSY`
//! and says that the tasks may run (not that none was queued), and they
//! are indeed queued, with their argument keys kept.

mod support;

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use multiproc_redis::RedisPool;
use multiproc_redis::schema::Keys;
use support::proxy::LossyProxy;
use support::{eventually, raw, server, xlen};

/// How long the other client's script keeps Redis busy.
const BUSY_FOR: Duration = Duration::from_secs(3);

/// A script that spins for `ARGV[1]` ms by the server's clock, then
/// returns 1.
const SPIN: &str = r"
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local stop = now() + tonumber(ARGV[1]) * 1000
while now() < stop do end
return 1
";

fn len(v: Vec<u8>) -> usize {
    v.len()
}

/// Three chunks, the second with its arguments in a key of their own.
fn items() -> Vec<Vec<u8>> {
    vec![vec![1u8; 10], vec![2u8; 300 * 1024], vec![3u8; 10]]
}

/// A connection to `url` whose replies are waited for at most `timeout`.
fn connect(url: &str, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// Starts [`SPIN`] for [`BUSY_FOR`] on a connection of its own to `url`,
/// and waits (at most 3 s) until Redis answers another client `BUSY`.
/// Returns the script's thread and whether `BUSY` was seen.
fn keep_busy(url: &str) -> redis::RedisResult<(JoinHandle<redis::RedisResult<i64>>, bool)> {
    let mut probe = connect(url, Duration::from_secs(2))?;
    let mut spinner = connect(url, BUSY_FOR + Duration::from_secs(5))?;
    let script = std::thread::spawn(move || {
        redis::cmd("EVAL").arg(SPIN).arg(0).arg(BUSY_FOR.as_millis() as u64).query::<i64>(&mut spinner)
    });
    let busy = eventually(Duration::from_secs(3), || {
        redis::cmd("PING").query::<String>(&mut probe).is_err_and(|e| e.code() == Some("BUSY"))
    });
    Ok((script, busy))
}

#[test]
fn a_batch_sent_again_into_a_busy_redis_fails_at_once_saying_it_may_run() {
    const PREFIX: &str = "resend-busy";
    let server = server();
    let mut con = raw(&server);
    redis::cmd("CONFIG").arg("SET").arg("busy-reply-threshold").arg(50).exec(&mut con).unwrap();
    let keys = Keys::new(PREFIX, "default");
    let proxy = LossyProxy::start(&server);
    // No host runs the tasks: a call that waited `BUSY` out and queued
    // would time out here (the error would not name `BUSY`).
    let pool = RedisPool::builder(&proxy.url()).prefix(PREFIX).wait_timeout(Duration::from_secs(5)).connect().unwrap();
    // Once Redis ran the batch's script, its reply is lost and another
    // client's script keeps Redis busy: the try sent again meets BUSY.
    let (tx, rx) = mpsc::channel();
    let url = server.url();
    proxy.lose_next_reply_to_then("EVAL", move || {
        let _ = tx.send(keep_busy(&url));
    });

    let started = Instant::now();
    let err = pool.with_chunksize(1).map(len, items()).unwrap_err().to_string();
    let failed_after = started.elapsed();
    let (script, saw_busy) = rx.recv_timeout(Duration::from_secs(5)).expect("the reply was not lost").unwrap();
    let script_ran_on = !script.is_finished();
    assert_eq!(script.join().expect("the script's thread panicked").unwrap(), 1, "the busy script failed");
    assert!(saw_busy, "redis never answered BUSY while the script ran");
    assert_eq!(proxy.replies_lost(), 1, "no reply was lost: the batch was not sent again ({err})");

    assert!(err.contains("BUSY"), "the error does not name the cause: {err}");
    assert!(err.contains("they may run") && !err.contains("none of them was queued"), "{err}");
    assert!(script_ran_on, "the call waited BUSY out ({failed_after:?}): {err}");
    // What the error says is so: the first try's entries and argument key
    // are there (for nobody: no host here).
    assert_eq!(xlen(&mut con, &keys.tasks()), 3, "{err}");
    let blobs: Vec<String> = redis::cmd("KEYS").arg(format!("{PREFIX}:default:blob:*")).query(&mut con).unwrap();
    assert_eq!(blobs.len(), 1, "the argument key of a batch that may run was deleted: {err}");
    drop(pool);
}
