//! A call's wait timeout bounds the whole call, also when Redis stops
//! answering (a server paused with `SIGSTOP` accepts connections and never
//! replies): no command may block past the call's deadline.

mod support;

use std::time::{Duration, Instant};

use support::{pool, server};

fn square(x: u64) -> u64 {
    x * x
}

/// What a timed-out call may take beyond its timeout: withdrawing its
/// queued tasks (at most 1 s) and a loaded machine.
const SLACK: Duration = Duration::from_secs(4);

#[test]
fn a_call_on_a_paused_server_returns_within_its_wait_timeout() {
    let server = server();
    let timeout = Duration::from_secs(2);
    let pool = pool(&server, "paused-submit").wait_timeout(timeout).connect().unwrap();
    let paused = server.pause().unwrap();
    let started = Instant::now();
    let err = pool.map(square, 0..8u64).unwrap_err();
    let took = started.elapsed();
    drop(paused);
    assert!(err.is_timeout(), "{err}");
    assert!(took < timeout + SLACK, "the call took {took:?} with a wait timeout of {timeout:?}");
}

#[test]
fn a_call_whose_server_pauses_while_it_waits_returns_within_its_wait_timeout() {
    let server = server();
    let timeout = Duration::from_secs(2);
    let pool = pool(&server, "paused-wait").wait_timeout(timeout).connect().unwrap();
    // No worker: the tasks are queued, then the call waits for results.
    let started = Instant::now();
    let err = std::thread::scope(|s| {
        let call = s.spawn(|| pool.map(square, 0..8u64).unwrap_err());
        std::thread::sleep(Duration::from_millis(500));
        let paused = server.pause().unwrap();
        let err = call.join().unwrap();
        drop(paused);
        err
    });
    let took = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(took < timeout + SLACK, "the call took {took:?} with a wait timeout of {timeout:?}");
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// How long [`Worker::stop`](multiproc_redis::Worker::stop) may wait for
/// the tasks it holds and their results.
const STOP_BOUND: Duration = Duration::from_secs(32);

#[test]
fn a_worker_holding_a_result_stops_within_its_bound_while_redis_is_paused() {
    let server = server();
    let worker = support::local_worker(&server, "paused-stop", 1);
    let pool = pool(&server, "paused-stop").connect().unwrap();
    let _call = pool.apply_async(nap, (3000,));
    let holds_it = || {
        let info = multiproc_redis::queue_info(&server.url(), "paused-stop", "default").unwrap();
        info.hosts.iter().any(|h| h.pending == 1)
    };
    assert!(support::eventually(Duration::from_secs(30), holds_it));
    let paused = server.pause().unwrap();
    // The task finishes while the server is paused: its result cannot be
    // written (a transaction of several commands).
    std::thread::sleep(Duration::from_secs(4));
    let started = Instant::now();
    worker.stop();
    let took = started.elapsed();
    drop(paused);
    assert!(took < STOP_BOUND + SLACK, "the worker took {took:?} to stop");
}

#[test]
fn a_worker_running_a_long_task_stops_within_its_bound_while_redis_is_paused() {
    let server = server();
    let worker = support::local_worker(&server, "paused-long", 1);
    let pool = pool(&server, "paused-long").connect().unwrap();
    let _call = pool.apply_async(nap, (120_000,));
    let holds_it = || {
        let info = multiproc_redis::queue_info(&server.url(), "paused-long", "default").unwrap();
        info.hosts.iter().any(|h| h.pending == 1)
    };
    assert!(support::eventually(Duration::from_secs(30), holds_it));
    let paused = server.pause().unwrap();
    // The task outlives the stop's wait: it is killed, and its entry can
    // be neither written back nor acknowledged while Redis is paused.
    let started = Instant::now();
    worker.stop();
    let took = started.elapsed();
    drop(paused);
    assert!(took < STOP_BOUND + SLACK, "the worker took {took:?} to stop");
}

/// How long dropping a pool may take while Redis does not answer: its
/// result thread notices the drop (within its reply timeout), then it
/// withdraws the chunks of its calls in flight and deletes its results
/// stream (both within one second).
const DROP_BOUND: Duration = Duration::from_secs(5);

#[test]
fn a_pool_drops_promptly_while_redis_is_paused() {
    let server = server();
    let pool = pool(&server, "paused-drop").connect().unwrap();
    let paused = server.pause().unwrap();
    std::thread::sleep(Duration::from_millis(500)); // its result thread waits on Redis
    let started = Instant::now();
    drop(pool);
    let took = started.elapsed();
    drop(paused);
    assert!(took < DROP_BOUND + SLACK, "dropping the pool took {took:?}");
}

#[test]
fn a_pool_with_calls_in_flight_drops_promptly_while_redis_is_paused() {
    let server = server();
    let tasks = multiproc_redis::schema::Keys::new("paused-drop-calls", "default").tasks();
    let pool = pool(&server, "paused-drop-calls").connect().unwrap();
    // No host: the chunks wait in the task stream, to be withdrawn.
    let mut calls: Vec<_> = (0..4u64).map(|i| pool.apply_async(square, (i,))).collect();
    let mut con = support::raw(&server);
    assert!(support::eventually(Duration::from_secs(30), || support::xlen(&mut con, &tasks) == 4));
    let paused = server.pause().unwrap();
    let started = Instant::now();
    drop(pool);
    let took = started.elapsed();
    let outcomes: Vec<_> = calls.iter_mut().map(|c| c.get_timeout(Duration::from_secs(10))).collect();
    drop(paused);
    assert!(took < DROP_BOUND + SLACK, "dropping the pool took {took:?}");
    for outcome in outcomes {
        support::assert_dropped(outcome);
    }
}

/// How long a look at a queue may wait for Redis by default.
const QUEUE_INFO_BOUND: Duration = multiproc_redis::QUEUE_INFO_TIMEOUT;

#[test]
fn a_look_at_a_queue_on_a_paused_server_fails_within_its_bound() {
    let server = server();
    // The queue exists, with a host in its group.
    let worker = support::local_worker(&server, "paused-info", 1);
    assert!(support::eventually(Duration::from_secs(30), || {
        !multiproc_redis::queue_info(&server.url(), "paused-info", "default").unwrap().hosts.is_empty()
    }));
    let paused = server.pause().unwrap();
    let started = Instant::now();
    let result = multiproc_redis::queue_info(&server.url(), "paused-info", "default");
    let took = started.elapsed();
    let short = Duration::from_millis(500);
    let started = Instant::now();
    let short_result = multiproc_redis::queue_info_timeout(&server.url(), "paused-info", "default", short);
    let short_took = started.elapsed();
    drop(paused);
    worker.stop();
    let err = result.expect_err("a paused server gives no queue info");
    assert!(took < QUEUE_INFO_BOUND + SLACK, "the look took {took:?}");
    assert!(err.to_string().contains("no answer from redis within"), "{err}");
    short_result.expect_err("a paused server gives no queue info");
    assert!(short_took < short + SLACK, "the look with a timeout of {short:?} took {short_took:?}");
    // Resumed, it answers again.
    assert_eq!(multiproc_redis::queue_info(&server.url(), "paused-info", "default").unwrap().tasks, 0);
}
