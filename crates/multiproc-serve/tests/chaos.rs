//! Workers killed at random moments under load from several threads: every
//! request is answered once, right or with the worker-lost error, nothing
//! hangs, and the counts add up afterwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Behaviour, Doubler, PATIENCE, Tagged, block_on, wait_for};
use multiproc_serve::{ModelSettings, ModelSpec, Request, RestartPolicy, ServeError, Server};

/// Restarts that come fast and never count as a crash loop: the tests kill
/// workers on purpose, again and again.
fn quick_restarts() -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        crash_loop_threshold: 1_000,
        ..Default::default()
    }
}

#[test]
fn workers_killed_at_random_under_load_lose_no_request_and_the_counts_add_up() {
    let server = Server::new();
    let settings = ModelSettings {
        max_batch_size: 4,
        instances: 2,
        queue_capacity: 100_000,
        restart: quick_restarts(),
        ..Default::default()
    };
    let behaviour = Behaviour { batch_ms: 2, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, behaviour).settings(settings)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4u64)
        .map(|t| {
            let (server, stop) = (server.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let (mut sent, mut ok, mut lost) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    let futures: Vec<_> = (0..16u64)
                        .map(|i| {
                            let x = t * 1_000_000 + sent + i;
                            (x, server.infer_async::<u64, Tagged>(Request::new("m", x)))
                        })
                        .collect();
                    sent += 16;
                    for (x, f) in futures {
                        match block_on(f, PATIENCE) {
                            Ok(reply) => {
                                assert_eq!(reply.output.value, 2 * x);
                                ok += 1;
                            }
                            Err(ServeError::WorkerLost { .. }) => lost += 1,
                            Err(e) => panic!("request {x}: {e}"),
                        }
                    }
                }
                (sent, ok, lost)
            })
        })
        .collect();
    let mut kills = 0;
    for round in 0..12 {
        std::thread::sleep(Duration::from_millis(100 + 37 * (round % 3)));
        let status = server.status();
        let pids: Vec<i32> = status.model("m").unwrap().versions[0].workers.iter().filter_map(|w| w.pid).collect();
        if let Some(pid) = pids.get(round as usize % pids.len().max(1)) {
            // SAFETY: kill(2) on the pid of our own worker process.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            kills += 1;
        }
    }
    stop.store(true, Ordering::Release);
    let (mut sent, mut ok, mut lost) = (0, 0, 0);
    for s in senders {
        let (a, b, c) = s.join().unwrap();
        (sent, ok, lost) = (sent + a, ok + b, lost + c);
    }
    eprintln!("{sent} requests, {ok} answered, {lost} lost with their worker, {kills} kills");
    assert_eq!(sent, ok + lost);
    assert!(ok > 0 && kills > 0);
    assert!(wait_for(PATIENCE, || {
        let v = server.status().model("m").unwrap().versions[0].clone();
        v.in_flight == 0 && v.queue_depth == 0
    }));
    let m = counted(&server, ok, lost);
    assert_eq!(m.pending_requests, 0);
    server.shutdown();
}

#[test]
fn a_worker_killed_at_random_under_lone_requests_loses_at_most_the_request_it_ran() {
    let server = Server::new();
    let settings = ModelSettings { restart: quick_restarts(), ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, Behaviour::default()).settings(settings)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // One caller, one request at a time: the polling paths of a lone request.
    let caller = {
        let (server, stop) = (server.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut ok, mut lost) = (0u64, 0u64);
            let mut x = 0u64;
            while !stop.load(Ordering::Acquire) {
                match server.infer::<u64, Tagged>(Request::new("m", x).timeout(PATIENCE)) {
                    Ok(reply) => {
                        assert_eq!(reply.output.value, 2 * x);
                        ok += 1;
                    }
                    Err(ServeError::WorkerLost { .. }) => lost += 1,
                    Err(e) => panic!("request {x}: {e}"),
                }
                x += 1;
            }
            (ok, lost)
        })
    };
    let mut kills = 0u64;
    for round in 0..15u64 {
        std::thread::sleep(Duration::from_millis(60 + 23 * (round % 4)));
        if let Some(pid) = server.status().model("m").unwrap().versions[0].workers[0].pid {
            // SAFETY: kill(2) on the pid of our own worker process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            kills += 1;
        }
    }
    stop.store(true, Ordering::Release);
    let (ok, lost) = caller.join().unwrap();
    eprintln!("{ok} answered, {lost} lost with their worker, {kills} kills");
    assert!(ok > 0 && lost <= kills);
    assert!(wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].in_flight == 0));
    counted(&server, ok, lost);
    server.shutdown();
}

/// The counters of "m" v1 once they show `ok` successes and `lost`
/// failures, as the callers saw, or a failure after `PATIENCE` (see
/// [`common::metrics_when`]).
fn counted(server: &Server, ok: u64, lost: u64) -> multiproc_serve::VersionMetrics {
    let seen = |m: &multiproc_serve::VersionMetrics| (m.request_success, m.request_failure.values().sum::<u64>());
    let m = common::metrics_when(server, "m", 1, |m| seen(m) == (ok, lost));
    assert_eq!(seen(&m), (ok, lost), "{m:?}");
    m
}
