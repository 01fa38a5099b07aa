//! `RedisImap::next_timeout` (Python's `IMapIterator.next(timeout)`): a
//! timeout is an error for that call only, and the results still come.
//! Ported from multiproc's tests/pool_imap_timeout.rs.

mod support;

use std::time::{Duration, Instant};

use support::{local_worker, pool, server};

/// Generous bound for waits that should finish quickly (loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(30);

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn next_timeout_times_out_then_yields_every_result_in_order() {
    let server = server();
    let _w = local_worker(&server, "imapto", 2);
    let pool = pool(&server, "imapto").connect().unwrap();
    // The first item runs long enough that its timeout cannot miss it,
    // however slowly a loaded machine runs this thread.
    let mut it = pool.imap(sleep_ms, [3_000u64, 0, 0]);
    let start = Instant::now();
    let first = it.next_timeout(Duration::from_millis(50)).expect("not at the end");
    assert!(first.unwrap_err().is_timeout());
    assert!(start.elapsed() >= Duration::from_millis(50));
    let got: Vec<u64> = std::iter::from_fn(|| it.next_timeout(WAIT)).map(Result::unwrap).collect();
    assert_eq!(got, [3_000, 0, 0]);
    assert!(it.next_timeout(WAIT).is_none());
    drop(it);
    pool.close();
    pool.join_timeout(WAIT).unwrap();
}

#[test]
fn next_timeout_on_imap_unordered_and_an_empty_input() {
    let server = server();
    let _w = local_worker(&server, "imapto2", 2);
    let pool = pool(&server, "imapto2").connect().unwrap();
    let mut it = pool.imap_unordered(sleep_ms, [0u64, 3_000]);
    assert_eq!(it.next_timeout(WAIT).unwrap().unwrap(), 0);
    assert!(it.next_timeout(Duration::from_millis(10)).unwrap().unwrap_err().is_timeout());
    assert_eq!(it.next_timeout(WAIT).unwrap().unwrap(), 3_000);
    assert!(it.next_timeout(WAIT).is_none());
    let mut empty = pool.imap(sleep_ms, Vec::<u64>::new());
    assert!(empty.next_timeout(Duration::ZERO).is_none());
    drop((it, empty));
    pool.terminate();
    pool.join_timeout(WAIT).unwrap();
}
