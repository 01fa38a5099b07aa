//! A pool dropped while a call holds its submitting connection (the call's
//! queuing script has run in Redis, and its reply is held back by a proxy)
//! cannot withdraw anything itself: it leaves the withdrawal of the calls
//! in flight, and the deletion of its results stream, to that call, which
//! does it when it lets the connection go. So once that call has ended,
//! no task of the pool is left in the task stream, every chunk is marked
//! withdrawn, the results stream is gone, and both calls failed with
//! `RedisPoolError::Dropped`.

mod support;

use std::time::{Duration, Instant};

use multiproc_redis::schema::Keys;
use support::proxy::LossyProxy;
use support::{assert_dropped, eventually, exists, local_worker, pool_at, raw, server, xlen, zcard};

/// The queue prefix of this test.
const PREFIX: &str = "drop-handover";

/// How long dropping the pool may take: its result thread stops within
/// one `XREAD` block, then it waits at most 1 s for the connection.
const DROP_BOUND: Duration = Duration::from_secs(5);

/// How long the test waits for anything else (a call's outcome, a stream).
const WAIT: Duration = Duration::from_secs(10);

/// The task of every call here.
fn square(x: u64) -> u64 {
    x * x
}

/// The drop meets the connection held by a call whose queuing reply the
/// proxy holds back; the call, once answered, does the drop's work.
#[test]
fn a_drop_that_meets_a_call_holding_the_connection_leaves_its_work_to_that_call() {
    let server = server();
    let mut con = raw(&server);
    let keys = Keys::new(PREFIX, "default");
    let proxy = LossyProxy::start(&server);
    let pool = pool_at(&proxy.url(), PREFIX).connect().unwrap();
    let results = keys.results(pool.caller_id());
    let withdrawn = keys.withdrawn(pool.caller_id());

    // A call run to its end leaves the pool a results stream (empty, its
    // entries read and deleted), which the drop is to delete.
    let worker = local_worker(&server, PREFIX, 1);
    assert_eq!(pool.with_chunksize(1).map(square, [1, 2]).unwrap(), [1, 4]);
    worker.stop();
    assert!(exists(&mut con, &results), "the results stream is not there");

    // With no host left, a background call's three chunks wait in the task
    // stream: the drop is to withdraw them.
    let mut queued = pool.with_chunksize(1).map_async(square, [3, 4, 5]);
    assert!(eventually(WAIT, || xlen(&mut con, &keys.tasks()) == 3), "the first call did not queue its chunks");

    // The next call's queuing script runs in Redis, and its reply is held
    // back: the call holds the submitting connection, waiting for it.
    let stall = proxy.stall_next_reply_to("EVAL");
    let mut holding = pool.with_chunksize(1).map_async(square, [6, 7]);
    assert!(stall.wait_held(WAIT), "the second call's queuing script was not sent");
    assert_eq!(xlen(&mut con, &keys.tasks()), 5, "the second call's script did not queue its chunks");

    // The drop cannot get the connection: it waits for it (at most 1 s),
    // then leaves its work to the call that holds it and returns.
    let started = Instant::now();
    drop(pool);
    let took = started.elapsed();
    assert!(took < DROP_BOUND, "dropping the pool took {took:?}");
    assert_dropped(queued.get_timeout(WAIT));
    // Nothing was withdrawn yet: the drop did not run its commands.
    assert_eq!(xlen(&mut con, &keys.tasks()), 5, "the drop withdrew chunks without the connection");
    assert!(exists(&mut con, &results), "the drop deleted the results stream without the connection");
    assert!(!holding.wait_timeout(Duration::from_millis(100)), "the call holding the connection ended");

    // The call gets its reply, withdraws its own batch, and, as it lets
    // the connection go, does what the drop left to it.
    stall.release();
    assert_dropped(holding.get_timeout(WAIT));
    assert_eq!(xlen(&mut con, &keys.tasks()), 0, "chunks of the dropped pool stayed queued");
    assert!(!exists(&mut con, &results), "the dropped pool's results stream was not deleted");
    assert_eq!(zcard(&mut con, &withdrawn), 5, "not every chunk in flight was marked withdrawn");
}
