//! An ordered `RedisPool::imap` behind a slow first item reads its input
//! at most a window ahead of the next result it yields: the results that
//! finish meanwhile wait in the caller's memory, so they must stay bounded
//! (the local `Pool::imap` bounds them too). It read the whole input before.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{local_worker, pool, server};

const WAIT: Duration = Duration::from_secs(30);

/// Items the call has pulled from its input.
static PULLED: AtomicUsize = AtomicUsize::new(0);

/// Item 0 takes 1.5 s; the others are quick.
fn first_slow(i: u64) -> u64 {
    if i == 0 {
        std::thread::sleep(Duration::from_millis(1500));
    }
    i
}

#[test]
fn an_ordered_imap_reads_at_most_a_window_ahead_of_a_slow_item() {
    let server = server();
    let _w = local_worker(&server, "bounded", 2);
    let pool = pool(&server, "bounded").window(4).connect().unwrap();
    let input = (0..200u64).inspect(|_| {
        PULLED.fetch_add(1, Ordering::Relaxed);
    });
    let mut results = pool.imap(first_slow, input);
    assert_eq!(results.next_timeout(WAIT).expect("a first result").unwrap(), 0);
    // While item 0 ran, the other worker process could have run the rest.
    let pulled = PULLED.load(Ordering::Relaxed);
    assert!(pulled <= 8, "{pulled} items read while item 0 ran (the window is 4 chunks of 1)");
    for i in 1..200 {
        assert_eq!(results.next_timeout(WAIT).expect("a result per item").unwrap(), i);
    }
    assert!(results.next_timeout(WAIT).is_none());
    drop(results);
    pool.close();
    pool.join_timeout(WAIT).unwrap();
}
