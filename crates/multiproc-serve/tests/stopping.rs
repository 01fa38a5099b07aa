//! A version that stops (drain, drain timeout, shutdown) while its worker
//! holds two batches and more requests wait: every request gets an answer or
//! a clear error, none hangs, the counts go back to zero and no worker
//! process is left behind.

mod common;

use std::time::Duration;

use common::{Behaviour, Doubler, PATIENCE, Tagged, block_on, wait_for};
use multiproc_serve::{InferFuture, ModelSettings, ModelSpec, Request, ServeError, Server, StartMode, VersionState};

/// True while a process with this pid exists (a zombie counts: it was not reaped).
fn process_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Model "m", version 1: one worker, batches of 2; a batch holding an input
/// below 2 sleeps `slow_ms`. Started lazily by 8 requests sent while it
/// loads, so that when it is ready it takes batch {0, 1} (slow) and holds
/// batch {2, 3} in its pipe, while {4..8} wait in the queue. Returns the
/// futures and the worker's pid.
fn two_batches_held_and_four_queued(
    server: &Server,
    slow_ms: u64,
    drain_timeout: Duration,
) -> (Vec<InferFuture<Tagged>>, i32) {
    let settings = ModelSettings {
        max_batch_size: 2,
        start: StartMode::Lazy,
        drain_timeout,
        restart: multiproc_serve::RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    let behaviour = Behaviour { batch_ms: slow_ms, slow_below: Some(2), load_ms: 500, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, behaviour).settings(settings)).unwrap();
    let futures: Vec<_> = (0..8u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("m", i))).collect();
    assert!(
        wait_for(PATIENCE, || {
            let v = server.status().model("m").unwrap().versions[0].clone();
            v.in_flight == 4 && v.queue_depth == 4
        }),
        "{:?}",
        server.status().model("m").unwrap().versions[0]
    );
    let pid = server.status().model("m").unwrap().versions[0].workers[0].pid.unwrap();
    (futures, pid)
}

fn kill(pid: i32) {
    // SAFETY: kill(2) on the pid of our own worker process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

#[test]
fn a_worker_killed_while_its_version_drains_fails_its_batch_and_the_rest_are_still_answered() {
    let server = Server::new();
    let (futures, pid) = two_batches_held_and_four_queued(&server, 20_000, Duration::from_secs(60));
    let unloading = {
        let server = server.clone();
        std::thread::spawn(move || server.unload("m"))
    };
    assert!(wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].state == VersionState::Draining));
    kill(pid);
    let mut pids = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        let result = block_on(f, PATIENCE);
        if i < 2 {
            // The batch the worker was running.
            assert!(matches!(&result, Err(ServeError::WorkerLost { pid: p, .. }) if *p == pid), "{result:?}");
        } else {
            // Never started: the drain finishes them on a new worker.
            let reply = result.unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(reply.output.value, 2 * i as u64);
            assert_ne!(reply.output.pid as i32, pid);
            pids.push(reply.output.pid as i32);
        }
    }
    unloading.join().unwrap().unwrap();
    let v = server.status().model("m").unwrap().versions[0].clone();
    assert_eq!((v.state, v.in_flight, v.queue_depth), (VersionState::Stopped, 0, 0), "{v:?}");
    assert!(!process_exists(pid));
    assert!(pids.iter().all(|p| !process_exists(*p)), "a worker outlived its drained version");
    server.shutdown();
}

#[test]
fn a_drain_that_times_out_answers_every_request_held_or_queued() {
    let server = Server::new();
    let (futures, pid) = two_batches_held_and_four_queued(&server, 20_000, Duration::from_millis(300));
    server.unload("m").unwrap();
    for (i, f) in futures.into_iter().enumerate() {
        let err = block_on(f, PATIENCE).unwrap_err();
        if i < 2 {
            // The batch the worker was running when the drain timed out.
            assert!(matches!(&err, ServeError::WorkerLost { pid: p, .. } if *p == pid), "{err}");
        } else {
            assert_eq!(err.kind(), multiproc_serve::ErrorKind::NotReady, "request {i}: {err}");
            let message = err.to_string();
            assert!(message.contains("drain timed out") || message.contains("stopped"), "{err}");
        }
    }
    let v = server.status().model("m").unwrap().versions[0].clone();
    assert_eq!((v.state, v.in_flight, v.queue_depth), (VersionState::Stopped, 0, 0), "{v:?}");
    assert!(!process_exists(pid));
    server.shutdown();
}
