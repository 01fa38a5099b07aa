//! `try_imap` over Redis: an input that fails stops the call after the
//! earlier results. Ported from multiproc's tests/pool_faults.rs.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use multiproc_redis::RedisPoolError;
use support::{local_worker, pool, server};

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_failing_input_stops_the_call_after_the_earlier_results() {
    let server = server();
    let _w = local_worker(&server, "tryimap", 2);
    let pool = pool(&server, "tryimap").connect().unwrap();
    let input = vec![Ok(1u64), Ok(2), Err("disk on fire"), Ok(4)];
    let got: Vec<_> = pool.try_imap(square, input.clone()).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(*got[0].as_ref().unwrap(), 1);
    assert_eq!(*got[1].as_ref().unwrap(), 4);
    assert!(matches!(&got[2], Err(RedisPoolError::Input { index: 2, message }) if message == "disk on fire"));
    let mut un: Vec<_> = pool.try_imap_unordered(square, input).collect();
    assert!(matches!(un.pop(), Some(Err(RedisPoolError::Input { index: 2, .. }))), "{un:?}");
    assert_eq!(un.len(), 2);
    // The input is read no further than its first error.
    let pulled = AtomicU64::new(0);
    let endless = std::iter::repeat_with(|| {
        let n = pulled.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 5 { Err("bad line") } else { Ok(n) }
    });
    let got: Vec<_> = pool.with_chunksize(2).try_imap(square, endless).collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(matches!(&got[4], Err(RedisPoolError::Input { index: 4, .. })));
    assert_eq!(pulled.load(Ordering::SeqCst), 5);
    assert_eq!(pool.map(square, 0..3u64).unwrap(), vec![0, 1, 4], "pool still usable");
}
