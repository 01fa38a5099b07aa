//! A cancelled call's chunk that was queued again after its host died (a
//! new entry, whose id the caller does not know) is dropped unrun by the
//! host that takes it: no second run, no entry left, no dead letter; one
//! reclaimed on its last delivery is not dead-lettered either.

mod support;

use std::path::Path;
use std::time::Duration;

use multiproc_redis::schema::{self, Keys};
use support::{RemovedOnDrop, host_process, pending_of, pool, raw, server, starts};

const PREFIX: &str = "withdrawn";

/// Appends a line to `log` when it starts (so the test can count its
/// runs), then sleeps long: its host is killed meanwhile.
fn started(log: String) -> u64 {
    support::logged_run(log, 20_000);
    1
}

/// Waits until file `gate` exists, at most 60 s: it keeps a host busy, so
/// that its intake reads nothing until the test opens the gate.
fn gate(gate: String) -> bool {
    support::eventually(Duration::from_secs(60), || Path::new(&gate).exists())
}

fn hosts(server: &multiproc_redis::RedisServer) -> usize {
    multiproc_redis::queue_info(&server.url(), PREFIX, "default").unwrap().hosts.len()
}

#[test]
fn a_cancelled_chunk_queued_again_after_its_host_died_does_not_run_again() {
    let server = server();
    let visibility = Duration::from_millis(1000);
    let keys = Keys::new(PREFIX, "default");
    let mut con = raw(&server);
    let tag = std::process::id();
    let log = RemovedOnDrop(std::env::temp_dir().join(format!("multiproc-redis-withdrawn-log-{tag}")));
    let gate_file = RemovedOnDrop(std::env::temp_dir().join(format!("multiproc-redis-withdrawn-gate-{tag}")));
    let _ = std::fs::remove_file(&log.0);
    let _ = std::fs::remove_file(&gate_file.0);
    let (log_path, gate_path) = (log.0.to_str().unwrap().to_string(), gate_file.0.to_str().unwrap().to_string());

    // Host B, one process, busy with two gated items: its intake reads no
    // more (it keeps two items per process at most), but its outlet
    // reclaims the entries of dead hosts and queues them again.
    let b = host_process(&server, PREFIX, 1, visibility);
    assert!(support::eventually(Duration::from_secs(30), || hosts(&server) == 1), "host B did not start");
    let blockers = pool(&server, PREFIX).connect().unwrap();
    let mut gated = blockers.with_chunksize(2).map_async(gate, vec![gate_path.clone(), gate_path.clone()]);
    let b_pid = b.pid();
    assert!(
        support::eventually(Duration::from_secs(30), || pending_of(&server, PREFIX, b_pid) > 0),
        "host B took nothing"
    );

    // Host A runs the call's one chunk; it is killed once the task started.
    let mut a = host_process(&server, PREFIX, 1, visibility);
    assert!(support::eventually(Duration::from_secs(30), || hosts(&server) == 2), "host A did not start");
    let caller = pool(&server, PREFIX).connect().unwrap();
    let call = caller.imap(started, vec![log_path]);
    assert!(support::eventually(Duration::from_secs(30), || starts(&log.0) == 1), "the task did not start");
    assert!(pending_of(&server, PREFIX, a.pid()) > 0, "host A does not hold the task");
    a.kill();

    // B reclaims it after the visibility timeout and queues it again: a
    // new entry, delivery 2, which B cannot read while its gate is shut.
    let requeued = support::eventually(Duration::from_secs(30), || {
        support::entries(&mut con, &keys.tasks()).iter().any(|(_, fields)| {
            schema::decode_task(fields).is_ok_and(|m| m.caller == caller.caller_id() && m.attempt == 2)
        })
    });
    assert!(requeued, "the chunk was not queued again");

    // The caller gives up on the call: its chunk is withdrawn.
    drop(call);
    let withdrawn: Vec<u64> =
        redis::cmd("ZRANGE").arg(keys.withdrawn(caller.caller_id())).arg(0).arg(-1).query(&mut con).unwrap();
    assert_eq!(withdrawn.len(), 1, "the chunk was not marked withdrawn");
    let ttl: i64 = redis::cmd("PTTL").arg(keys.withdrawn(caller.caller_id())).query(&mut con).unwrap();
    assert!(ttl > 0, "the withdrawn set has no expiry ({ttl})");

    // B takes the entry once its gate opens, and drops it unrun.
    std::fs::write(&gate_file.0, b"open").unwrap();
    assert_eq!(gated.get_timeout(Duration::from_secs(60)).unwrap(), [true, true]);
    let gone = support::eventually(Duration::from_secs(30), || {
        starts(&log.0) > 1 || redis::cmd("XLEN").arg(keys.tasks()).query::<i64>(&mut con).unwrap() == 0
    });
    assert!(gone, "the entry stayed in the task stream");
    // Long enough for a run, or another reclaim and delivery, to show.
    std::thread::sleep(3 * visibility);
    assert_eq!(starts(&log.0), 1, "the withdrawn chunk ran again");
    let info = multiproc_redis::queue_info(&server.url(), PREFIX, "default").unwrap();
    assert_eq!((info.tasks, info.dead_letters), (0, 0));
    assert_eq!(pending_of(&server, PREFIX, b_pid), 0, "host B still holds an entry");
}

#[test]
fn a_cancelled_chunk_whose_host_died_on_its_last_delivery_is_not_dead_lettered() {
    let server = server();
    let visibility = Duration::from_millis(1000);
    let log =
        RemovedOnDrop(std::env::temp_dir().join(format!("multiproc-redis-withdrawn-last-{}", std::process::id())));
    let _ = std::fs::remove_file(&log.0);
    let log_path = log.0.to_str().unwrap().to_string();

    // Two deliveries at most: host A runs the first and dies, host B
    // reclaims the chunk, queues it again and runs the second.
    let mut a = host_process(&server, PREFIX, 1, visibility);
    assert!(support::eventually(Duration::from_secs(30), || hosts(&server) == 1), "host A did not start");
    let caller = pool(&server, PREFIX).retries(1).connect().unwrap();
    let call = caller.imap(started, vec![log_path]);
    assert!(support::eventually(Duration::from_secs(30), || starts(&log.0) == 1), "the task did not start");
    a.kill();
    let mut b = host_process(&server, PREFIX, 1, visibility);
    assert!(support::eventually(Duration::from_secs(30), || starts(&log.0) == 2), "host B did not run the task");

    // The caller gives up on the call, then B dies too: host C reclaims
    // the chunk on its last delivery, and drops it rather than bury it.
    drop(call);
    b.kill();
    let _c = host_process(&server, PREFIX, 1, visibility);
    let mut con = raw(&server);
    let tasks = Keys::new(PREFIX, "default").tasks();
    let gone = support::eventually(Duration::from_secs(30), || {
        redis::cmd("XLEN").arg(&tasks).query::<i64>(&mut con).unwrap() == 0
    });
    assert!(gone, "the entry stayed in the task stream");
    std::thread::sleep(3 * visibility);
    assert_eq!(starts(&log.0), 2, "the withdrawn chunk ran again");
    let info = multiproc_redis::queue_info(&server.url(), PREFIX, "default").unwrap();
    assert_eq!((info.tasks, info.dead_letters), (0, 0), "the withdrawn chunk was dead-lettered");
}
