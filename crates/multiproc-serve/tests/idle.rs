//! An idle worker sleeps: with no request and nothing to watch, its
//! process does not wake up until a batch comes or its server is gone.

mod common;

use std::time::Duration;

use common::{Behaviour, Doubler, PATIENCE, Tagged};
use multiproc_serve::{ModelSpec, Request, Server};

/// Context switches of every thread of process `pid` so far (each wake-up
/// from a sleep is one).
fn wake_ups(pid: i32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the worker's threads");
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

#[test]
fn an_idle_worker_does_not_wake_up() {
    let server = Server::new();
    server.add(ModelSpec::<Doubler>::new("m").version(1, Behaviour::default())).unwrap();
    // Loaded and answered a request; the worker then waits for the next.
    let reply = server.infer::<u64, Tagged>(Request::new("m", 1).timeout(PATIENCE)).unwrap();
    let pid = i32::try_from(reply.output.pid).unwrap();
    // Past the short poll that follows a lone request (see `crate::lone`).
    std::thread::sleep(Duration::from_millis(500));
    let before = wake_ups(pid);
    std::thread::sleep(Duration::from_secs(2));
    let woke = wake_ups(pid) - before;
    // Polling every 100 ms would be about 20; a stray signal or the
    // scheduler may add one or two.
    assert!(woke <= 4, "the idle worker woke up {woke} times in 2 s");
    // Asleep, it still answers at once.
    assert_eq!(server.infer::<u64, Tagged>(Request::new("m", 4).timeout(PATIENCE)).unwrap().output.value, 8);
    server.shutdown();
}
