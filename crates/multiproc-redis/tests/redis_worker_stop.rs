//! A host being stopped (`Worker::stop`, `multiproc worker` on SIGTERM)
//! while a task arrives: the task is run and written, or left queued for
//! the next host; the stop does not stall.

mod support;

use std::time::{Duration, Instant};

use support::{local_worker, pool, server};

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_task_read_as_the_host_stops_is_not_stranded() {
    let server = server();
    let pool = pool(&server, "stopping").connect().unwrap();
    for round in 0..6u64 {
        let host = local_worker(&server, "stopping", 1);
        // Settles into its blocking reads.
        assert_eq!(pool.apply(square, (round,)).unwrap(), round * round);
        let stopping = std::thread::spawn(move || {
            let t = Instant::now();
            host.stop();
            t.elapsed()
        });
        // Arrives while the stopping host's last read is still blocked.
        std::thread::sleep(Duration::from_millis(40));
        let mut call = pool.apply_async(square, (round + 10,));
        let took = stopping.join().unwrap();
        assert!(took < Duration::from_secs(10), "round {round}: stop took {took:?}");
        // Whatever the stopped host did not write is still queued, for the
        // next host at once (the visibility timeout is 30 s).
        let _next = local_worker(&server, "stopping", 1);
        let got = call.get_timeout(Duration::from_secs(20));
        assert_eq!(got.unwrap(), (round + 10) * (round + 10), "round {round}");
    }
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_task_still_running_when_the_stop_gives_up_goes_back_to_the_queue_at_once() {
    const DRAIN: Duration = Duration::from_secs(2);
    let server = server();
    let host = support::draining_worker(&server, "outlived", 1, DRAIN);
    let consumer = host.consumer().to_string();
    let pool = pool(&server, "outlived").connect().unwrap();
    let _call = pool.apply_async(nap, (120_000,));
    let info = || multiproc_redis::queue_info(&server.url(), "outlived", "default").unwrap();
    assert!(support::eventually(Duration::from_secs(30), || info().hosts.iter().any(|h| h.pending == 1)));
    let started = Instant::now();
    host.stop();
    let took = started.elapsed();
    // The drain timeout for the task, 2 s to write, and a loaded machine.
    assert!(took >= DRAIN, "the stop did not wait for the task: {took:?}");
    assert!(took < DRAIN + Duration::from_secs(6), "stop took {took:?}");
    // Its entry was queued again (one more delivery), not left pending.
    let after = info();
    let stopped = after.hosts.iter().find(|h| h.name == consumer).expect("the stopped host is still in the group");
    assert_eq!(stopped.pending, 0, "{after:?}");
    assert_eq!(after.tasks, 1, "{after:?}");
}
