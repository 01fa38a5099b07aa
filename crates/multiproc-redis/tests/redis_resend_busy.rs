//! A batch whose queuing reply was lost after Redis queued it, and whose
//! script sent again meets a real `BUSY` (another client's script running
//! past `busy-reply-threshold`): `BUSY` is waited out, as a Redis gone is,
//! so the batch sent again once the script ended finds it queued, and
//! each task runs once; the host, refused by the busy Redis too, goes on.

mod support;

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use multiproc_redis::schema::Keys;
use multiproc_test_support::REDIS_BUSY_SCRIPT;
use support::proxy::LossyProxy;
use support::{eventually, local_worker, logged_run, pool_at, raw, server, start_log, starts, xlen};

/// How long the other client's script keeps Redis busy.
const BUSY_FOR: Duration = Duration::from_millis(1500);

/// A connection to `url` whose replies are waited for at most `timeout`.
fn connect(url: &str, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// Starts [`REDIS_BUSY_SCRIPT`] for [`BUSY_FOR`] on a connection of its own to `url`,
/// and waits (at most 3 s) until Redis answers another client `BUSY`.
/// Returns the script's thread and whether `BUSY` was seen.
fn keep_busy(url: &str) -> redis::RedisResult<(JoinHandle<redis::RedisResult<i64>>, bool)> {
    let mut probe = connect(url, Duration::from_secs(2))?;
    let mut spinner = connect(url, BUSY_FOR + Duration::from_secs(5))?;
    let script = std::thread::spawn(move || {
        redis::cmd("EVAL").arg(REDIS_BUSY_SCRIPT).arg(0).arg(BUSY_FOR.as_millis() as u64).query::<i64>(&mut spinner)
    });
    let busy = eventually(Duration::from_secs(3), || {
        redis::cmd("PING").query::<String>(&mut probe).is_err_and(|e| e.code() == Some("BUSY"))
    });
    Ok((script, busy))
}

#[test]
fn a_batch_sent_again_into_a_busy_redis_waits_the_script_out_and_is_queued_once() {
    const PREFIX: &str = "resend-busy";
    let server = server();
    let mut con = raw(&server);
    redis::cmd("CONFIG").arg("SET").arg("busy-reply-threshold").arg(50).exec(&mut con).unwrap();
    let tasks = Keys::new(PREFIX, "default").tasks();
    let log = start_log("resend-busy");
    let log_path = log.0.to_str().unwrap().to_string();
    // The caller talks to Redis through the proxy; the host does not.
    let proxy = LossyProxy::start(&server);
    let pool = pool_at(&proxy.url(), PREFIX).wait_timeout(Duration::from_secs(30)).connect().unwrap();
    let worker = local_worker(&server, PREFIX, 2);
    // Once Redis ran the batch's script, its reply is lost and another
    // client's script keeps Redis busy: the try sent again meets BUSY.
    let (tx, rx) = mpsc::channel();
    let url = server.url();
    proxy.lose_next_reply_to_then("EVAL", move || {
        let _ = tx.send(keep_busy(&url));
    });

    let items: Vec<(String, u64)> = (0..4).map(|_| (log_path.clone(), 0)).collect();
    let results = pool.with_chunksize(1).starmap(logged_run, items);
    let (script, saw_busy) = rx.recv_timeout(Duration::from_secs(5)).expect("the reply was not lost").unwrap();
    assert_eq!(script.join().expect("the script's thread panicked").unwrap(), 1, "the busy script failed");
    assert!(saw_busy, "redis never answered BUSY while the script ran");
    assert_eq!(proxy.replies_lost(), 1, "no reply was lost: the batch was not sent again");
    assert_eq!(results.unwrap(), [0; 4]);

    // A batch queued twice would leave four more entries, which the host runs.
    assert!(eventually(Duration::from_secs(30), || xlen(&mut con, &tasks) == 0), "entries stayed queued");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(starts(&log.0), 4, "the tasks of a batch sent twice ran twice");
    worker.stop();
}
