//! Entries delivered to a host that never saw them (the reply of its read
//! was lost when Redis restarted) run once the host reconnects, not only
//! after the visibility timeout, when another host would take them over.

mod support;

use std::time::{Duration, Instant};

use multiproc_redis::Worker;
use support::{eventually, pool, raw, server};

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn entries_delivered_to_a_host_that_never_saw_them_run_after_it_reconnects() {
    let mut server = server();
    let tasks = "lostread:default:tasks";
    let worker = Worker::builder(&server.url())
        .prefix("lostread")
        .processes(1)
        .visibility_timeout(Duration::from_secs(120))
        .start()
        .unwrap();
    let pool = pool(&server, "lostread").connect().unwrap();
    // Two long tasks fill the host (two items per process): it reads no more
    // until they end, long after the test has read the next entries itself
    // (however slowly a loaded machine runs it).
    let mut busy = pool.with_chunksize(1).map_async(nap, [6_000u64, 6_000]);
    let mut con = raw(&server);
    let pending = |con: &mut redis::Connection| -> usize {
        let summary: redis::Value = redis::cmd("XPENDING").arg(tasks).arg("workers").query(con).unwrap();
        match summary {
            redis::Value::Array(v) => redis::from_redis_value_ref(&v[0]).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    assert!(eventually(Duration::from_secs(30), || pending(&mut con) == 2));
    let mut call = pool.with_chunksize(1).map_async(nap, [1u64, 2, 3]);
    assert!(eventually(Duration::from_secs(30), || {
        redis::cmd("XLEN").arg(tasks).query::<usize>(&mut con).unwrap() == 5
    }));
    // The call's entries are delivered to the host; the reply is lost.
    let opts = redis::streams::StreamReadOptions::default().group("workers", worker.consumer()).count(10);
    let read: redis::streams::StreamReadReply =
        redis::cmd("XREADGROUP").arg(&opts).arg("STREAMS").arg(tasks).arg(">").query(&mut con).unwrap();
    assert_eq!(read.keys.iter().map(|k| k.ids.len()).sum::<usize>(), 3);
    drop(con);
    server.restart().unwrap();
    let started = Instant::now();
    assert_eq!(busy.get_timeout(Duration::from_secs(60)).unwrap(), [6_000, 6_000]);
    // Well before the 120 s visibility timeout.
    assert_eq!(call.get_timeout(Duration::from_secs(40)).unwrap(), [1, 2, 3], "after {:?}", started.elapsed());
    drop(pool);
    worker.stop();
}
