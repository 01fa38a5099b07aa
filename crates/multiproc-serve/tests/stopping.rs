//! A version that stops (drain, drain timeout, shutdown) while its worker
//! holds two batches and more requests wait: every request gets an answer or
//! a clear error, none hangs, the counts go back to zero and no worker
//! process is left behind.

mod common;

use std::time::Duration;

use common::{PATIENCE, block_on, kill, two_batches_held_and_four_queued, wait_for};
use multiproc_serve::{ModelSettings, ServeError, Server, VersionState};
use multiproc_test_support::process_exists;

#[test]
fn a_worker_killed_while_its_version_drains_fails_its_batch_and_the_rest_are_still_answered() {
    let server = Server::new();
    let (futures, pid) = two_batches_held_and_four_queued(&server, 20_000, ModelSettings::default());
    let unloading = {
        let server = server.clone();
        std::thread::spawn(move || server.unload("m"))
    };
    assert!(wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].state == VersionState::Draining));
    kill(pid);
    // The batch held and the queued ones never started: the drain finishes them on a new worker.
    let pids = common::only_the_batch_that_ran_fails(
        futures,
        pid,
        |e| matches!(e, ServeError::WorkerLost { pid: p, .. } if *p == pid),
    );
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
    let (futures, pid) = two_batches_held_and_four_queued(
        &server,
        20_000,
        ModelSettings { drain_timeout: Duration::from_millis(300), ..Default::default() },
    );
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

#[test]
fn shutdown_with_batches_held_and_queued_answers_them_all_and_leaves_no_worker() {
    let server = Server::new();
    let (futures, pid) = two_batches_held_and_four_queued(&server, 1_000, ModelSettings::default());
    server.shutdown();
    // The drain finished every request before shutdown returned.
    for (i, f) in futures.into_iter().enumerate() {
        let reply = block_on(f, Duration::from_secs(1)).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(reply.output.value, 2 * i as u64);
    }
    assert!(!process_exists(pid), "the worker outlived the server");
    let err = server.infer::<u64, common::Tagged>(multiproc_serve::Request::new("m", 1)).unwrap_err();
    assert_eq!(err.kind(), multiproc_serve::ErrorKind::ShuttingDown, "{err}");
}

/// Doubles its inputs; its load fails once the file named by its config exists.
struct LoadsUntilMarked;

impl multiproc_serve::Model for LoadsUntilMarked {
    type Config = String;
    type Input = u64;
    type Output = u64;

    fn load(marker: String, _: &multiproc_serve::WorkerContext) -> Result<Self, multiproc_serve::LoadError> {
        if std::path::Path::new(&marker).exists() {
            return Err("the weights are gone".into());
        }
        Ok(LoadsUntilMarked)
    }

    fn predict(&mut self, batch: Vec<u64>) -> Vec<Result<u64, String>> {
        if batch.contains(&0) {
            std::thread::sleep(Duration::from_secs(20));
        }
        batch.into_iter().map(|x| Ok(2 * x)).collect()
    }
}

#[test]
fn a_draining_version_that_cannot_reload_fails_its_queue_without_waiting_for_the_drain_timeout() {
    let marker = std::env::temp_dir().join(format!("multiproc-serve-marker-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let server = Server::new();
    let settings = ModelSettings {
        max_batch_size: 1,
        drain_timeout: Duration::from_secs(120),
        restart: multiproc_serve::RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    let spec = multiproc_serve::ModelSpec::<LoadsUntilMarked>::new("m").version(1, marker.display().to_string());
    server.add(spec.settings(settings)).unwrap();
    let pid = server.status().model("m").unwrap().versions[0].workers[0].pid.unwrap();
    let running = server.infer_async::<u64, u64>(multiproc_serve::Request::new("m", 0));
    assert!(wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].in_flight == 1));
    let queued: Vec<_> =
        (1..4u64).map(|i| server.infer_async::<u64, u64>(multiproc_serve::Request::new("m", i))).collect();
    let unloading = {
        let server = server.clone();
        std::thread::spawn(move || server.unload("m"))
    };
    assert!(wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].state == VersionState::Draining));
    std::fs::write(&marker, b"").unwrap();
    kill(pid);
    let started = std::time::Instant::now();
    assert_eq!(block_on(running, PATIENCE).unwrap_err().kind(), multiproc_serve::ErrorKind::WorkerLost);
    for f in queued {
        let err = block_on(f, PATIENCE).unwrap_err();
        assert!(err.to_string().contains("the weights are gone"), "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "the queue failed only after {:?}", started.elapsed());
    unloading.join().unwrap().unwrap();
    let _ = std::fs::remove_file(&marker);
    let v = server.status().model("m").unwrap().versions[0].clone();
    assert_eq!((v.state, v.in_flight, v.queue_depth), (VersionState::Stopped, 0, 0), "{v:?}");
    server.shutdown();
}

#[test]
fn unloading_a_version_never_started_logs_its_stop_as_every_transition() {
    let log = common::capture_log();
    let server = Server::new();
    let settings = ModelSettings { start: multiproc_serve::StartMode::Lazy, ..Default::default() };
    let spec = multiproc_serve::ModelSpec::<common::Doubler>::new("never-started").version(1, Default::default());
    server.add(spec.settings(settings)).unwrap();
    server.unload("never-started").unwrap();
    let state = server.status().model("never-started").unwrap().versions[0].state;
    assert_eq!(state, VersionState::Stopped);
    let logged = log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|l| l.contains("model=never-started") && l.contains("from=not-started") && l.contains("to=stopped"));
    assert!(logged, "the stop of a version never started was not logged");
    server.shutdown();
}

/// Model "m": one worker, batches of one; input 0 runs 20 s. Once
/// crashed, its worker comes back only after 120 s, past the drain
/// timeout of 60 s (and past `PATIENCE`).
fn backs_off_past_the_drain_timeout(server: &Server) -> i32 {
    let settings = ModelSettings {
        drain_timeout: Duration::from_secs(60),
        restart: multiproc_serve::RestartPolicy {
            initial_backoff: Duration::from_secs(120),
            max_backoff: Duration::from_secs(120),
            crash_loop_threshold: 100,
            ..Default::default()
        },
        ..Default::default()
    };
    let slow_zero = common::Behaviour { batch_ms: 20_000, slow_below: Some(1), ..Default::default() };
    server
        .add(multiproc_serve::ModelSpec::<common::Doubler>::new("m").version(1, slow_zero).settings(settings))
        .unwrap();
    server.status().model("m").unwrap().versions[0].workers[0].pid.unwrap()
}

/// Requests without a deadline fail with `NotReady`, saying why the
/// worker is gone and that no worker is back before the drain timeout.
fn fail_as_no_worker_back(futures: Vec<multiproc_serve::InferFuture<common::Tagged>>) {
    for f in futures {
        let err = block_on(f, PATIENCE).expect_err("a request ran on a version whose worker is gone");
        assert_eq!(err.kind(), multiproc_serve::ErrorKind::NotReady, "{err}");
        let message = err.to_string();
        assert!(message.contains("drain timeout") && message.contains("signal 9"), "{err}");
    }
}

#[test]
fn an_unload_while_the_worker_backs_off_past_the_drain_timeout_fails_the_queue_at_once() {
    let server = Server::new();
    let pid = backs_off_past_the_drain_timeout(&server);
    kill(pid);
    let worker = || server.status().model("m").unwrap().versions[0].workers[0].clone();
    let backing_off = || worker().state == multiproc_serve::WorkerState::BackingOff;
    assert!(wait_for(PATIENCE, backing_off), "{:?}", worker());
    // No deadline: before, only the drain timeout ended their wait.
    let queued: Vec<_> =
        (1..3u64).map(|i| server.infer_async::<u64, common::Tagged>(multiproc_serve::Request::new("m", i))).collect();
    let started = std::time::Instant::now();
    server.unload("m").unwrap();
    fail_as_no_worker_back(queued);
    assert!(started.elapsed() < Duration::from_secs(20), "the unload took {:?}", started.elapsed());
    let v = server.status().model("m").unwrap().versions[0].clone();
    assert_eq!((v.state, v.queue_depth), (VersionState::Stopped, 0), "{v:?}");
    server.shutdown();
}

#[test]
fn a_worker_killed_while_its_version_drains_and_backing_off_past_the_drain_timeout_fails_the_queue_at_once() {
    let server = Server::new();
    let pid = backs_off_past_the_drain_timeout(&server);
    let running = server.infer_async::<u64, common::Tagged>(multiproc_serve::Request::new("m", 0));
    assert!(wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].in_flight == 1));
    // One held in the worker's pipe, one queued.
    let queued: Vec<_> =
        (1..3u64).map(|i| server.infer_async::<u64, common::Tagged>(multiproc_serve::Request::new("m", i))).collect();
    let unloading = {
        let server = server.clone();
        std::thread::spawn(move || server.unload("m"))
    };
    assert!(wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].state == VersionState::Draining));
    kill(pid);
    let started = std::time::Instant::now();
    let err = block_on(running, PATIENCE).unwrap_err();
    assert!(matches!(&err, ServeError::WorkerLost { pid: p, .. } if *p == pid), "{err}");
    fail_as_no_worker_back(queued);
    unloading.join().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "the drain ended after {:?}", started.elapsed());
    let v = server.status().model("m").unwrap().versions[0].clone();
    assert_eq!((v.state, v.in_flight, v.queue_depth), (VersionState::Stopped, 0, 0), "{v:?}");
    server.shutdown();
}
