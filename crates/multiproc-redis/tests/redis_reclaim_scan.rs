//! The reclaim scan goes on where it stopped: entries of a dead host that
//! sit behind many entries of live hosts in the pending list are reclaimed
//! too (`XAUTOCLAIM` looks at no more than ten times its count per call).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use multiproc_redis::Worker;
use support::{eventually, pool, raw, server};

fn square(x: u64) -> u64 {
    x * x
}

/// Entries a live host holds ahead of the dead host's: more than one
/// `XAUTOCLAIM` call looks at.
const HELD_BY_LIVE: usize = 1500;

#[test]
fn entries_of_a_dead_host_behind_many_live_ones_are_reclaimed() {
    let server = server();
    let tasks = "scan:default:tasks";
    let mut con = raw(&server);
    redis::cmd("XGROUP").arg("CREATE").arg(tasks).arg("workers").arg("0").arg("MKSTREAM").exec(&mut con).unwrap();
    let mut fill = redis::pipe();
    for _ in 0..HELD_BY_LIVE {
        fill.cmd("XADD").arg(tasks).arg("*").arg("filler").arg("x").ignore();
    }
    fill.exec(&mut con).unwrap();
    let read = |con: &mut redis::Connection, consumer: &str, count: usize| -> Vec<String> {
        let opts = redis::streams::StreamReadOptions::default().group("workers", consumer).count(count);
        let r: redis::streams::StreamReadReply =
            redis::cmd("XREADGROUP").arg(&opts).arg("STREAMS").arg(tasks).arg(">").query(con).unwrap();
        r.keys.into_iter().flat_map(|k| k.ids).map(|e| e.id).collect()
    };
    let live = read(&mut con, "live-host", HELD_BY_LIVE);
    assert_eq!(live.len(), HELD_BY_LIVE);

    let pool = pool(&server, "scan").connect().unwrap();
    let mut call = pool.with_chunksize(1).map_async(square, 0..4u64);
    assert!(eventually(Duration::from_secs(30), || {
        redis::cmd("XLEN").arg(tasks).query::<usize>(&mut con).unwrap() == HELD_BY_LIVE + 4
    }));
    // A host takes the call's four entries and dies.
    assert_eq!(read(&mut con, "dead-host", 100).len(), 4);

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Ends the heartbeats however this scope ends (it joins them).
        let _stop = StopOnDrop(&stop);
        // The live host's heartbeats keep its entries its own.
        s.spawn(|| {
            let mut con = raw(&server);
            while !stop.load(Ordering::Acquire) {
                redis::cmd("XCLAIM")
                    .arg(tasks)
                    .arg("workers")
                    .arg("live-host")
                    .arg(0)
                    .arg(&live)
                    .arg("JUSTID")
                    .exec(&mut con)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let worker = Worker::builder(&server.url())
            .prefix("scan")
            .processes(1)
            .visibility_timeout(Duration::from_secs(2))
            .start()
            .unwrap();
        let got = call.get_timeout(Duration::from_secs(40));
        worker.stop();
        assert_eq!(got.unwrap(), vec![0, 1, 4, 9]);
    });
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
