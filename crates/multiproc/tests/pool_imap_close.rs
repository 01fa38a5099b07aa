//! An `imap` begun before `close` yields every result, as Python's does
//! (`it = pool.imap(f, xs); pool.close(); for r in it: …; pool.join()`), and
//! `join` does not wait for an iteration nobody reads.

mod pool_support;

use multiproc::{Executor, Pool};
use pool_support::{WAIT, square};

/// More items than the imap window (8,192), so most are read after close.
const N: u64 = 20_000;
/// The smallest imap window: at most this many items are submitted at once.
const MIN_WINDOW: usize = 8192;

#[test]
fn an_imap_begun_before_close_yields_every_result() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let mut it = pool.imap(square, 0..N);
    assert_eq!(it.next_timeout(WAIT).unwrap().unwrap(), 0);
    pool.close();
    let rest: Vec<u64> = it.map(Result::unwrap).collect();
    assert_eq!(rest, (1..N).map(square).collect::<Vec<_>>());
    pool.join_timeout(WAIT).unwrap();
    assert!(pool.imap(square, 0..2u64).next().unwrap().is_err(), "a new imap is refused");
}

fn pid(_: u64) -> u32 {
    std::process::id()
}

#[test]
fn join_after_close_returns_with_an_imap_unread() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let mut it = pool.imap_unordered(pid, 0..N);
    let mut pids = vec![it.next_timeout(WAIT).unwrap().unwrap()];
    pool.close();
    pool.join_timeout(WAIT).unwrap();
    pids.extend(it.map(Result::unwrap));
    assert_eq!(pids.len() as u64, N);
    pool.join_timeout(WAIT).unwrap();
    pids.sort_unstable();
    pids.dedup();
    let alive: Vec<_> = pids.iter().filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists()).collect();
    assert!(alive.is_empty(), "workers left after join: {alive:?}");
}

#[test]
fn executor_map_read_after_shutdown_yields_every_result() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(2).unwrap();
    let it = ex.map(square, 0..N).unwrap();
    ex.shutdown(false, false);
    let all: Vec<u64> = it.map(Result::unwrap).collect();
    assert_eq!(all, (0..N).map(square).collect::<Vec<_>>());
}

#[test]
fn executor_shutdown_with_cancel_futures_stops_a_map_reading_on() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(2).unwrap();
    let mut it = ex.map(pool_support::sleep_ms, std::iter::repeat_n(1u64, N as usize)).unwrap();
    assert!(it.next_timeout(WAIT).unwrap().is_ok());
    ex.shutdown(false, true);
    let ran = it.filter(Result::is_ok).count();
    assert!(ran < MIN_WINDOW, "{ran} tasks ran after shutdown(cancel_futures)");
}
