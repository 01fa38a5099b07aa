//! Hosts of one queue with different visibility timeouts: a host with a
//! short timeout does not take a long task from a live host with a long
//! one (it reclaims only after the longest timeout a live host declared).

mod support;

use std::time::Duration;

use support::{RemovedOnDrop, eventually, host_process, logged_run, pending_of, pool, raw, server, starts};

#[test]
fn a_short_timeout_host_does_not_take_a_long_task_from_a_live_long_timeout_host() {
    let server = server();
    // The long host heartbeats every 2 s: its entry's idle time reaches
    // 2 s between heartbeats, twice the short host's own timeout.
    let (long_timeout, short_timeout) = (Duration::from_secs(8), Duration::from_secs(1));
    let long_host = host_process(&server, "mixed", 1, long_timeout);
    let pool = pool(&server, "mixed").connect().unwrap();
    let log = std::env::temp_dir().join(format!("multiproc-redis-mixed-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log = RemovedOnDrop(log);
    let path = log.0.to_str().unwrap().to_string();
    let mut call = pool.apply_async(logged_run, (path, 5000u64));
    let pid = long_host.pid();
    assert!(
        eventually(Duration::from_secs(30), || pending_of(&server, "mixed", pid) == 1),
        "the long host took nothing"
    );

    let _short_host = host_process(&server, "mixed", 1, short_timeout);
    let both = eventually(Duration::from_secs(30), || {
        multiproc_redis::queue_info(&server.url(), "mixed", "default").unwrap().hosts.len() == 2
    });
    assert!(both, "the short host did not start");
    let declared: u64 = redis::cmd("GET").arg("mixed:default:visibility").query(&mut raw(&server)).unwrap();
    assert_eq!(declared, 8000);

    assert_eq!(call.get_timeout(Duration::from_secs(30)).unwrap(), 5000);
    let runs = starts(&log.0);
    assert_eq!(runs, 1, "the short host took the task from the live long host");
}
