//! Supervision: a killed worker fails its in-flight requests at once and
//! comes back; a model that panics on load crash-loops with visible backoff;
//! a worker past its call timeout is killed.

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, Doubler, PATIENCE, Tagged, block_on, wait_for};
use multiproc_serve::{
    ErrorKind, ModelSettings, ModelSpec, Request, RestartPolicy, ServeError, Server, VersionState, WorkerState,
};

#[test]
fn sigkill_with_50_requests_in_flight_fails_them_at_once_and_the_rest_succeed() {
    let server = Server::new();
    let settings = ModelSettings {
        max_batch_size: 50,
        max_queue_delay: Duration::from_secs(2),
        restart: RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    let slow = Behaviour { batch_ms: 20_000, slow_below: Some(100), ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("victim").version(1, slow).settings(settings)).unwrap();
    let pid = server.status().model("victim").unwrap().versions[0].workers[0].pid.unwrap();

    // 50 requests form one full batch inside the worker; 20 more wait behind it.
    let in_flight: Vec<_> = (0..50u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("victim", i))).collect();
    assert!(wait_for(PATIENCE, || server.status().model("victim").unwrap().versions[0].in_flight == 50));
    let queued: Vec<_> = (100..120u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("victim", i))).collect();

    // SAFETY: kill(2) on the pid of our own worker process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let mut failed_within = Duration::ZERO;
    for f in in_flight {
        let err = block_on(f, PATIENCE).unwrap_err();
        failed_within = killed.elapsed();
        let ServeError::WorkerLost { model, version, pid: lost, status } = &err else {
            panic!("not worker-lost: {err}")
        };
        assert_eq!((model.as_str(), *version, *lost), ("victim", 1, pid));
        assert!(status.contains("signal 9"), "{status}");
        assert!(err.to_string().contains("victim") && err.to_string().contains("version 1"), "{err}");
    }
    // Generous bound for a loaded 2-core machine; the bench has the tight figure.
    assert!(failed_within < Duration::from_secs(2), "in-flight requests failed only after {failed_within:?}");
    eprintln!("50 in-flight requests failed {failed_within:?} after the SIGKILL");

    // The queued ones were never sent to the dead worker: the new worker runs them
    // (they form a batch when the delay runs out).
    for f in queued {
        let reply = block_on(f, PATIENCE).unwrap();
        assert_ne!(reply.output.pid as i32, pid);
        assert_eq!(reply.output.value % 2, 0);
    }
    let v = server.status().model("victim").unwrap().versions[0].clone();
    assert_eq!(v.state, VersionState::Ready);
    assert_eq!(v.restarts, 1);
    assert!(v.workers[0].pid.is_some_and(|p| p != pid));
    assert!(v.last_failure.as_deref().unwrap().contains("signal 9"));
    let m = server.metrics();
    let m = m.get("victim", 1).unwrap();
    assert_eq!(m.request_failure.get("worker_lost"), Some(&50));
    assert_eq!(m.restarts, 1);
    server.shutdown();
}

#[test]
fn a_model_that_panics_on_load_crash_loops_fails_fast_and_backs_off() {
    let server = Server::new();
    let settings = ModelSettings {
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(40),
            max_backoff: Duration::from_millis(320),
            crash_loop_threshold: 3,
            crash_window: Duration::from_secs(60),
        },
        startup_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let broken = Behaviour { panic_on_load: Some("weights file is corrupt".into()), ..Default::default() };
    let err = server.add(ModelSpec::<Doubler>::new("broken").version(1, broken).settings(settings)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReady);
    assert!(err.to_string().contains("weights file is corrupt"), "{err}");

    let status = server.status();
    let v = &status.model("broken").unwrap().versions[0];
    assert_eq!(v.state, VersionState::CrashLooping);
    assert!(!v.ready && !status.ready);
    assert!(v.recent_crashes >= 3);
    assert!(v.last_failure.as_deref().unwrap().contains("panicked: weights file is corrupt"));

    // Fail fast, with the reason.
    let asked = Instant::now();
    let err = server.infer::<u64, Tagged>(Request::new("broken", 1)).unwrap_err();
    assert!(asked.elapsed() < Duration::from_secs(1));
    let ServeError::CrashLooping { crashes, last_failure, .. } = &err else { panic!("{err}") };
    assert!(*crashes >= 3 && last_failure.contains("corrupt"));
    assert_eq!(err.http_status(), 503);

    // The backoff grows and is capped, visible in status().
    let mut seen = Vec::new();
    assert!(wait_for(PATIENCE, || {
        let v = server.status().model("broken").unwrap().versions[0].clone();
        let w = &v.workers[0];
        if w.state == WorkerState::BackingOff {
            let b = w.backoff.unwrap();
            if seen.last() != Some(&(w.restarts, b)) {
                seen.push((w.restarts, b));
            }
        }
        v.restarts >= 5
    }));
    let max = seen.iter().map(|(_, b)| *b).max().unwrap();
    assert!(max <= Duration::from_millis(320), "{seen:?}");
    assert!(max > Duration::from_millis(40), "backoff did not grow: {seen:?}");
    server.shutdown();
}

#[test]
fn a_worker_past_its_call_timeout_is_killed_and_restarted() {
    let server = Server::new();
    let settings = ModelSettings { call_timeout: Some(Duration::from_millis(300)), ..Default::default() };
    let slow = Behaviour { batch_ms: 30_000, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("slow").version(1, slow).settings(settings)).unwrap();
    let pid = server.status().model("slow").unwrap().versions[0].workers[0].pid.unwrap();
    let started = Instant::now();
    let err = server.infer::<u64, Tagged>(Request::new("slow", 1)).unwrap_err();
    assert!(matches!(err, ServeError::CallTimeout { pid: p, .. } if p == pid), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(wait_for(PATIENCE, || {
        let v = server.status().model("slow").unwrap().versions[0].clone();
        v.ready && v.workers[0].pid.is_some_and(|p| p != pid)
    }));
    server.shutdown();
}

/// The startup timeout bounds a load; the call timeout bounds a batch, not
/// a load. Both set, the call timeout shorter than the load.
fn timeouts(startup_ms: u64, call_ms: u64) -> ModelSettings {
    ModelSettings {
        startup_timeout: Duration::from_millis(startup_ms),
        call_timeout: Some(Duration::from_millis(call_ms)),
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(40),
            crash_loop_threshold: 1_000,
            crash_window: Duration::from_secs(60),
        },
        ..Default::default()
    }
}

#[test]
fn a_worker_that_does_not_load_within_the_startup_timeout_is_killed_and_restarted() {
    let server = Server::new();
    let never_in_time = Behaviour { load_ms: 5_000, ..Default::default() };
    let started = Instant::now();
    let spec = ModelSpec::<Doubler>::new("late").version(1, never_in_time).settings(timeouts(300, 100));
    let err = server.add(spec).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReady, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "the add waited {:?}", started.elapsed());
    // Each worker is killed at the startup timeout and replaced.
    let mut pids = Vec::new();
    let restarted = wait_for(Duration::from_secs(5), || {
        let v = server.status().model("late").unwrap().versions[0].clone();
        if let Some(pid) = v.workers[0].pid.filter(|p| !pids.contains(p)) {
            pids.push(pid);
        }
        v.restarts >= 2
    });
    let v = server.status().model("late").unwrap().versions[0].clone();
    assert!(restarted, "{v:?}");
    assert!(!v.ready && v.state == VersionState::Loading, "{v:?}");
    let why = v.last_failure.as_deref().unwrap_or_default();
    assert!(why.contains("did not load within the startup timeout of 300ms"), "{v:?}");
    assert!(!why.contains("call timeout"), "{v:?}");
    assert!(server.metrics().get("late", 1).unwrap().restarts >= 2);
    // The workers killed at their startup timeout are gone (reaped).
    let replaced = &pids[..pids.len() - 1];
    assert!(!replaced.is_empty() && replaced.iter().all(|p| !multiproc_test_support::process_exists(*p)), "{pids:?}");
    server.shutdown();
    assert!(
        wait_for(Duration::from_secs(5), || pids.iter().all(|p| !multiproc_test_support::process_exists(*p))),
        "{pids:?}"
    );
}

#[test]
fn a_load_longer_than_the_call_timeout_but_within_the_startup_timeout_serves() {
    let server = Server::new();
    let loads_slowly = Behaviour { load_ms: 600, ..Default::default() };
    let started = Instant::now();
    let spec = ModelSpec::<Doubler>::new("slow_load").version(1, loads_slowly).settings(timeouts(5_000, 100));
    server.add(spec).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600), "loaded in {:?}", started.elapsed());
    let reply = server.infer::<u64, Tagged>(Request::new("slow_load", 21).timeout(Duration::from_secs(5))).unwrap();
    assert_eq!(reply.output.value, 42);
    let v = server.status().model("slow_load").unwrap().versions[0].clone();
    assert!(v.ready && v.state == VersionState::Ready, "{v:?}");
    assert_eq!((v.restarts, v.last_failure.as_deref()), (0, None), "{v:?}");
    server.shutdown();
}

#[test]
fn the_models_own_errors_fail_only_their_request() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 8, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("d").version(1, Behaviour::default()).settings(settings)).unwrap();
    let futures: Vec<_> =
        [1, u64::MAX, 3].into_iter().map(|x| server.infer_async::<u64, Tagged>(Request::new("d", x))).collect();
    let results: Vec<_> = futures.into_iter().map(|f| block_on(f, PATIENCE)).collect();
    assert_eq!(results[0].as_ref().unwrap().output.value, 2);
    assert!(matches!(&results[1], Err(ServeError::ModelFailed { message, .. }) if message.contains("u64::MAX")));
    assert_eq!(results[2].as_ref().unwrap().output.value, 6);
    // Wrong types and unknown names are caller errors.
    assert_eq!(server.infer::<String, Tagged>(Request::new("d", "x".to_string())).unwrap_err().http_status(), 400);
    assert_eq!(server.infer::<u64, Tagged>(Request::new("nope", 1)).unwrap_err().http_status(), 404);
    assert_eq!(server.infer::<u64, Tagged>(Request::new("d", 1).version(9)).unwrap_err().http_status(), 404);
    server.shutdown();
}

#[test]
fn a_request_sent_while_the_only_worker_restarts_waits_for_it() {
    let server = Server::new();
    let settings = ModelSettings {
        restart: RestartPolicy { initial_backoff: Duration::from_millis(300), ..Default::default() },
        ..Default::default()
    };
    let loads_slowly = Behaviour { load_ms: 300, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, loads_slowly).settings(settings)).unwrap();
    let pid = server.status().model("m").unwrap().versions[0].workers[0].pid.unwrap();
    // SAFETY: kill(2) on the pid of our own worker process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(wait_for(PATIENCE, || !server.status().model("m").unwrap().versions[0].ready));
    // Without a version and with one: both wait in the queue for the new worker.
    let default = server.infer_async::<u64, Tagged>(Request::new("m", 1));
    let named = server.infer_async::<u64, Tagged>(Request::new("m", 2).version(1));
    for (f, x) in [(default, 1), (named, 2)] {
        let reply = block_on(f, PATIENCE).unwrap_or_else(|e| panic!("request {x} while the worker restarted: {e}"));
        assert_eq!(reply.output.value, 2 * x);
        assert_ne!(reply.output.pid as i32, pid);
    }
    server.shutdown();
}

#[test]
fn a_call_timeout_fails_the_batch_that_ran_and_the_batch_held_behind_it_runs_on_the_new_worker() {
    let server = Server::new();
    let settings = ModelSettings { call_timeout: Some(Duration::from_millis(500)), ..Default::default() };
    let (futures, pid) = common::two_batches_held_and_four_queued(&server, 20_000, settings);
    common::only_the_batch_that_ran_fails(
        futures,
        pid,
        |e| matches!(e, ServeError::CallTimeout { pid: p, .. } if *p == pid),
    );
    let v = server.status().model("m").unwrap().versions[0].clone();
    assert_eq!((v.in_flight, v.queue_depth, v.restarts), (0, 0, 1), "{v:?}");
    let m = common::metrics_when(&server, "m", 1, |m| common::requests_counted(m) == 8);
    assert_eq!((m.request_success, m.request_failure.get("call_timeout")), (6, Some(&2)), "{m:?}");
    assert!(!multiproc_test_support::process_exists(pid));
    server.shutdown();
}

#[test]
fn a_worker_killed_while_it_loads_leaves_the_queued_requests_to_the_next_one() {
    let server = Server::new();
    let settings = ModelSettings {
        start: multiproc_serve::StartMode::Lazy,
        restart: RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    let loads_slowly = Behaviour { load_ms: 1_000, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, loads_slowly).settings(settings)).unwrap();
    let futures: Vec<_> = (0..5u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("m", i))).collect();
    let loading = || server.status().model("m").unwrap().versions[0].workers[0].pid;
    assert!(wait_for(PATIENCE, || loading().is_some()));
    let pid = loading().unwrap();
    common::kill(pid);
    for (i, f) in futures.into_iter().enumerate() {
        let reply = block_on(f, PATIENCE).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(reply.output.value, 2 * i as u64);
        assert_ne!(reply.output.pid as i32, pid);
    }
    let v = server.status().model("m").unwrap().versions[0].clone();
    assert_eq!((v.state, v.in_flight, v.queue_depth, v.restarts), (VersionState::Ready, 0, 0, 1), "{v:?}");
    assert!(v.last_failure.as_deref().is_some_and(|f| f.contains("while loading")), "{v:?}");
    server.shutdown();
}

#[test]
fn a_worker_killed_mid_batch_with_a_second_batch_in_its_pipe_fails_only_the_batch_it_ran() {
    let server = Server::new();
    let (futures, pid) = common::two_batches_held_and_four_queued(&server, 20_000, ModelSettings::default());
    common::kill(pid);
    let killed = Instant::now();
    common::only_the_batch_that_ran_fails(futures, pid, |e| {
        assert!(killed.elapsed() < Duration::from_secs(2), "worker lost only after {:?}", killed.elapsed());
        matches!(e, ServeError::WorkerLost { pid: p, status, .. } if *p == pid && status.contains("signal 9"))
    });
    let v = server.status().model("m").unwrap().versions[0].clone();
    assert_eq!((v.state, v.in_flight, v.queue_depth, v.restarts), (VersionState::Ready, 0, 0, 1), "{v:?}");
    let m = common::metrics_when(&server, "m", 1, |m| common::requests_counted(m) == 8);
    assert_eq!((m.request_success, m.request_failure.get("worker_lost")), (6, Some(&2)), "{m:?}");
    assert_eq!(m.pending_requests, 0);
    server.shutdown();
}

#[test]
fn requests_failed_because_their_version_crash_loops_or_stops_are_counted() {
    let server = Server::new();
    let settings = ModelSettings {
        start: multiproc_serve::StartMode::Lazy,
        restart: RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    let broken = Behaviour { panic_on_load: Some("no weights".into()), ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("broken").version(1, broken).settings(settings)).unwrap();
    // Queued while the version loads, failed when it turns crash-looping.
    let futures: Vec<_> = (0..5u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("broken", i))).collect();
    for f in futures {
        assert_eq!(block_on(f, PATIENCE).unwrap_err().kind(), ErrorKind::CrashLooping);
    }
    // Queued when a drain times out.
    let (futures, _) = common::two_batches_held_and_four_queued(
        &server,
        20_000,
        ModelSettings { drain_timeout: Duration::from_millis(200), ..Default::default() },
    );
    server.unload("m").unwrap();
    futures.into_iter().for_each(|f| assert!(block_on(f, PATIENCE).is_err()));
    let metrics = server.metrics();
    let failed = |model: &str| -> u64 { metrics.get(model, 1).unwrap().request_failure.values().sum() };
    assert_eq!(failed("broken"), 5, "{:?}", metrics.get("broken", 1));
    assert_eq!(failed("m"), 8, "{:?}", metrics.get("m", 1));
    server.shutdown();
}

/// Loads, then dies on every batch it is given.
struct DiesOnEveryBatch;

impl multiproc_serve::Model for DiesOnEveryBatch {
    type Config = ();
    type Input = u64;
    type Output = u64;

    fn load(_: (), _: &multiproc_serve::WorkerContext) -> Result<Self, multiproc_serve::LoadError> {
        Ok(DiesOnEveryBatch)
    }

    fn predict(&mut self, _: Vec<u64>) -> Vec<Result<u64, String>> {
        std::process::exit(9)
    }
}

#[test]
fn a_worker_that_loads_but_dies_on_every_batch_backs_off_more_each_time() {
    let log = common::capture_log();
    let server = Server::new();
    let restart = RestartPolicy {
        initial_backoff: Duration::from_millis(40),
        max_backoff: Duration::from_secs(10),
        crash_loop_threshold: 100,
        ..Default::default()
    };
    let settings = ModelSettings { restart, ..Default::default() };
    server.add(ModelSpec::<DiesOnEveryBatch>::new("dies-on-batch").version(1, ()).settings(settings)).unwrap();
    for x in 0..4u64 {
        let err = server.infer::<u64, u64>(Request::new("dies-on-batch", x).timeout(PATIENCE)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err}");
    }
    let backoffs = || -> Vec<String> {
        let lines = log.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter(|l| l.contains("model=dies-on-batch") && l.contains("worker crashed"))
            .filter_map(|l| l.split("backoff=").nth(1)?.split_whitespace().next().map(str::to_string))
            .collect()
    };
    assert!(wait_for(PATIENCE, || backoffs().len() == 4), "{:?}", backoffs());
    assert_eq!(backoffs(), ["40ms", "80ms", "160ms", "320ms"], "the restarts did not back off");
    server.shutdown();
}
