//! Redis restarted (append-only persistence) in the middle of a call: the
//! call resumes; Redis gone for good: the call fails with a clear error
//! within the reconnect timeout. Never a hang.

mod support;

use std::time::{Duration, Instant};

use multiproc_redis::RedisPoolError;
use support::{local_worker, pool, server};

fn nap(i: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    i
}

#[test]
fn a_call_resumes_after_a_redis_restart() {
    let mut server = server();
    let worker = local_worker(&server, "restart", 2);
    let pool = pool(&server, "restart").reconnect_timeout(Duration::from_secs(30)).connect().unwrap();

    let mut call = pool.with_chunksize(1).map_async(nap, 0..150u64);
    std::thread::sleep(Duration::from_millis(600));
    server.restart().unwrap();
    let t = Instant::now();
    let got = call.get_timeout(Duration::from_secs(90)).unwrap();
    assert_eq!(got, (0..150u64).collect::<Vec<_>>());
    assert!(t.elapsed() < Duration::from_secs(90));
    // The pool and the worker go on after it.
    assert_eq!(pool.map(nap, 0..5u64).unwrap(), [0, 1, 2, 3, 4]);
    worker.stop();
}

#[test]
fn a_call_fails_clearly_when_redis_stays_away() {
    let mut server = server();
    let worker = local_worker(&server, "gone", 1);
    let pool = pool(&server, "gone").reconnect_timeout(Duration::from_secs(2)).connect().unwrap();
    assert_eq!(pool.apply(nap, (1,)).unwrap(), 1);

    let mut call = pool.with_chunksize(1).map_async(nap, 0..500u64);
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    let t = Instant::now();
    let err = call.get_timeout(Duration::from_secs(60)).unwrap_err();
    assert!(matches!(err, RedisPoolError::Redis(_)), "{err}");
    assert!(err.to_string().contains("redis"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30), "took {:?}", t.elapsed());
    drop(pool);
    drop(worker);
}

#[test]
fn a_restart_that_lost_the_data_fails_the_call_clearly() {
    let mut server = multiproc_redis::RedisServer::start_in_memory().unwrap();
    let worker = local_worker(&server, "lost", 1);
    let pool = pool(&server, "lost").connect().unwrap();
    assert_eq!(pool.apply(nap, (1,)).unwrap(), 1);

    let mut call = pool.with_chunksize(1).map_async(nap, 0..500u64);
    std::thread::sleep(Duration::from_millis(300));
    server.restart().unwrap();
    let t = Instant::now();
    let err = call.get_timeout(Duration::from_secs(60)).unwrap_err();
    assert!(err.to_string().contains("without append-only persistence"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30), "took {:?}", t.elapsed());
    drop(pool);
    drop(worker);
}

#[test]
fn an_imap_that_cannot_queue_its_tasks_yields_one_error_per_item() {
    let mut server = server();
    let pool = pool(&server, "queue").reconnect_timeout(Duration::from_millis(300)).connect().unwrap();
    server.kill();
    let got: Vec<_> = pool.with_chunksize(2).imap(nap, 0..5u64).collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.iter().all(|r| matches!(r, Err(RedisPoolError::Redis(m)) if m.contains("could not queue"))), "{got:?}");
}

#[test]
fn a_server_outlives_the_thread_that_started_or_restarted_it() {
    let mut server = std::thread::spawn(server).join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(pool(&server, "thread").connect().is_ok(), "the server died with the thread that started it");
    server = std::thread::spawn(move || {
        server.restart().unwrap();
        server
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _w = local_worker(&server, "thread", 1);
    assert_eq!(pool(&server, "thread").connect().unwrap().apply(nap, (7,)).unwrap(), 7);
}

#[test]
fn the_wait_timeout_bounds_a_call_that_cannot_queue_its_tasks() {
    let mut server = server();
    let pool = pool(&server, "bounded")
        .wait_timeout(Duration::from_secs(1))
        .reconnect_timeout(Duration::from_secs(20))
        .connect()
        .unwrap();
    server.kill();
    let t = Instant::now();
    let err = pool.map(nap, 0..3u64).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}: {err}", t.elapsed());
    assert!(err.is_timeout(), "{err}");
}

#[test]
fn a_pool_dropped_while_redis_is_away_goes_at_once() {
    let mut server = server();
    let pool = pool(&server, "dropped").reconnect_timeout(Duration::from_secs(20)).connect().unwrap();
    server.kill();
    std::thread::sleep(Duration::from_millis(500)); // its result thread is waiting for redis
    let t = Instant::now();
    drop(pool);
    assert!(t.elapsed() < Duration::from_secs(5), "drop took {:?}", t.elapsed());
}
