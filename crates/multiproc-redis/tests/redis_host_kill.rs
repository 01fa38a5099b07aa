//! A worker host SIGKILLed mid-task: its entries stay pending, a live host
//! reclaims them after the visibility timeout, and every result reaches the
//! caller exactly once.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::{host_process, logged_run, pending_of, pool, server, starts};

/// Sleeps, then names the item and the host (the pool worker's parent).
/// 60 items on four processes then take seconds: host A still holds some
/// when the test looks, however slowly a loaded machine runs the test.
fn slow(i: u64) -> (u64, u32) {
    std::thread::sleep(Duration::from_millis(300));
    (i, std::os::unix::process::parent_id())
}

#[test]
fn a_killed_host_loses_nothing_and_nothing_arrives_twice() {
    let server = server();
    let visibility = Duration::from_millis(1500);
    let mut a = host_process(&server, "kill", 2, visibility);
    let b = host_process(&server, "kill", 2, visibility);
    let pool = pool(&server, "kill").connect().unwrap();
    let both = support::eventually(Duration::from_secs(30), || {
        multiproc_redis::queue_info(&server.url(), "kill", "default").unwrap().hosts.len() == 2
    });
    assert!(both, "the two hosts did not start");
    let mut con = support::raw(&server);

    let n = 60u64;
    let mut results = pool.imap_unordered(slow, 0..n);
    let mut seen: HashMap<u64, u32> = HashMap::new();
    // Let both hosts get going, then kill host A while it holds entries.
    let started = Instant::now();
    while seen.len() < 6 {
        let (i, host) = results.next().unwrap().unwrap();
        assert!(seen.insert(i, host).is_none(), "item {i} arrived twice");
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    let a_pid = a.pid();
    assert!(
        support::eventually(Duration::from_secs(10), || pending_of(&server, "kill", a_pid) > 0),
        "host A holds nothing"
    );
    a.kill();
    let killed_at = Instant::now();

    for r in results {
        let (i, host) = r.unwrap();
        assert!(seen.insert(i, host).is_none(), "item {i} arrived twice");
    }
    assert_eq!(seen.len() as u64, n);
    assert!((0..n).all(|i| seen.contains_key(&i)));
    let b_pid = b.pid() as u32;
    assert!(seen.values().any(|h| *h == b_pid), "host B ran nothing");
    assert!(killed_at.elapsed() < Duration::from_secs(60));
    // Nothing left behind in the task stream.
    assert!(support::eventually(Duration::from_secs(10), || {
        redis::cmd("XLEN").arg("kill:default:tasks").query::<i64>(&mut con).unwrap() == 0
    }));
    let dead: i64 = redis::cmd("XLEN").arg("kill:default:dead").query(&mut con).unwrap();
    assert_eq!(dead, 0);
}

#[test]
fn a_long_task_on_a_live_host_is_not_taken_over() {
    let server = server();
    // Tasks run 3× the visibility timeout; heartbeats (every quarter of it)
    // keep them with their host. Two seconds of visibility leave a host's
    // heartbeat thread 1.5 s of slack on a loaded machine (with 500 ms,
    // a full test run beside other work once saw a takeover).
    let visibility = Duration::from_millis(2000);
    let _a = host_process(&server, "long", 1, visibility);
    let _b = host_process(&server, "long", 1, visibility);
    let pool = pool(&server, "long").connect().unwrap();
    let log = std::env::temp_dir().join(format!("multiproc-redis-long-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log = support::RemovedOnDrop(log);
    let path = log.0.to_str().unwrap().to_string();
    let got = pool.with_chunksize(1).starmap(logged_run, vec![(path.clone(), 6000u64), (path.clone(), 6000)]).unwrap();
    assert_eq!(got, [6000, 6000]);
    let runs = starts(&log.0);
    assert_eq!(runs, 2, "a task ran again on another host while its own was alive");
    let info = multiproc_redis::queue_info(&server.url(), "long", "default").unwrap();
    assert_eq!((info.tasks, info.dead_letters), (0, 0));
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_chunk_whose_host_died_on_its_last_delivery_is_dead_lettered_whole() {
    let server = server();
    let visibility = Duration::from_millis(800);
    let mut a = host_process(&server, "last", 1, visibility);
    let pool = pool(&server, "last").wait_timeout(Duration::from_secs(30)).connect().unwrap();
    let call = pool.with_chunksize(3).retries(0).map_async(sleepy, vec![20_000u64; 3]);
    let a_pid = a.pid();
    let held = support::eventually(Duration::from_secs(20), || {
        multiproc_redis::queue_info(&server.url(), "last", "default")
            .unwrap()
            .hosts
            .iter()
            .any(|h| h.is_pid(a_pid as u32) && h.pending > 0)
    });
    assert!(held, "host A took nothing");
    a.kill();
    let _b = host_process(&server, "last", 1, visibility);
    let err = call.get().unwrap_err();
    let Some(multiproc_redis::TaskFailure::DeadLettered { attempts: 1, last_error }) = err.task_failure() else {
        panic!("not dead-lettered: {err}")
    };
    assert!(last_error.contains("no heartbeat"), "{err}");
    assert!(support::eventually(Duration::from_secs(10), || {
        let info = multiproc_redis::queue_info(&server.url(), "last", "default").unwrap();
        (info.tasks, info.dead_letters) == (0, 1)
    }));
}
