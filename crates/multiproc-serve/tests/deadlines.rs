//! Deadlines racing answers: a request whose deadline passes while its
//! batch runs gets its error at the deadline, the late answer goes nowhere,
//! and the metrics count what the callers saw.

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, Doubler, PATIENCE, Tagged, block_on, wait_for};
use multiproc_serve::{ErrorKind, ModelSettings, ModelSpec, Request, Server};

#[test]
fn a_deadline_that_passes_while_the_batch_runs_fails_the_request_and_counts_as_a_failure() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 4, ..Default::default() };
    // Batches with an input below 100 take 4 s.
    let slow = Behaviour { batch_ms: 4_000, slow_below: Some(100), ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, slow).settings(settings)).unwrap();
    let short = Duration::from_millis(300);
    let asked = Instant::now();
    let late_async = server.infer_async::<u64, Tagged>(Request::new("m", 1).timeout(short));
    let late_blocking = {
        let server = server.clone();
        std::thread::spawn(move || server.infer::<u64, Tagged>(Request::new("m", 2).timeout(short)))
    };
    let err = block_on(late_async, PATIENCE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert!(asked.elapsed() < Duration::from_millis(3_500), "the deadline error came with the answer");
    let err = late_blocking.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    // A request in time after them is answered.
    let reply = server.infer::<u64, Tagged>(Request::new("m", 200).timeout(PATIENCE)).unwrap();
    assert_eq!(reply.output.value, 400);
    assert!(wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].in_flight == 0));
    let m = common::metrics_when(&server, "m", 1, |m| common::requests_counted(m) == 3);
    assert_eq!(m.request_success, 1, "answers that came after their deadline counted as successes: {m:?}");
    assert_eq!(m.request_failure.get("deadline_exceeded"), Some(&2), "{m:?}");
    server.shutdown();
}

#[test]
fn a_request_past_its_deadline_in_a_worker_that_dies_counts_once_as_a_deadline() {
    let server = Server::new();
    let slow = Behaviour { batch_ms: 20_000, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, slow)).unwrap();
    let pid = server.status().model("m").unwrap().versions[0].workers[0].pid.unwrap();
    let f = server.infer_async::<u64, Tagged>(Request::new("m", 1).timeout(Duration::from_millis(200)));
    assert!(wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].in_flight == 1));
    assert_eq!(block_on(f, PATIENCE).unwrap_err().kind(), ErrorKind::DeadlineExceeded);
    common::kill(pid);
    assert!(wait_for(PATIENCE, || {
        let v = server.status().model("m").unwrap().versions[0].clone();
        v.in_flight == 0 && v.restarts == 1
    }));
    let metrics = server.metrics();
    let m = metrics.get("m", 1).unwrap();
    let failures: Vec<_> = m.request_failure.iter().collect();
    assert_eq!(failures, [(&"deadline_exceeded".to_string(), &1)], "{m:?}");
    server.shutdown();
}

#[test]
fn futures_waited_past_their_timeout_count_as_the_deadlines_their_callers_saw() {
    let server = Server::new();
    let slow = Behaviour { batch_ms: 600, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, slow)).unwrap();
    let status = || server.status().model("m").unwrap().versions[0].clone();
    // One request running, one held in the worker's pipe, one queued.
    let futures: Vec<_> = (0..3u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("m", i))).collect();
    assert!(wait_for(PATIENCE, || { status().in_flight + status().queue_depth == 3 }), "{:?}", status());
    for f in futures {
        let err = f.wait_timeout(Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    }
    assert!(wait_for(PATIENCE, || status().in_flight + status().queue_depth == 0), "{:?}", status());
    // The last answer, late, is counted just after it left `in_flight`.
    let m = common::metrics_when(&server, "m", 1, |m| common::requests_counted(m) == 3);
    assert_eq!(m.request_success, 0, "answers nobody got counted as successes: {m:?}");
    let failures: Vec<_> = m.request_failure.iter().collect();
    assert_eq!(failures, [(&"deadline_exceeded".to_string(), &3)], "{m:?}");
    server.shutdown();
}

#[test]
fn requests_queued_while_every_worker_restarts_fail_at_their_deadline_and_hold_up_no_unload() {
    use multiproc_serve::{RestartPolicy, WorkerState};
    let server = Server::new();
    // The worker, once killed, comes back only after 20 s.
    let restart = RestartPolicy {
        initial_backoff: Duration::from_secs(20),
        max_backoff: Duration::from_secs(20),
        crash_loop_threshold: 100,
        crash_window: Duration::from_secs(60),
    };
    let timeout = Duration::from_millis(300);
    let settings = ModelSettings { restart, request_timeout: Some(timeout), queue_capacity: 2, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, Behaviour::default()).settings(settings)).unwrap();
    let worker = || server.status().model("m").unwrap().versions[0].workers[0].clone();
    common::kill(worker().pid.unwrap());
    assert!(wait_for(PATIENCE, || worker().state == WorkerState::BackingOff), "{:?}", worker());
    let asked = Instant::now();
    // The model's request_timeout, and a request's own timeout.
    let by_settings = server.infer_async::<u64, Tagged>(Request::new("m", 1));
    let own = {
        let server = server.clone();
        std::thread::spawn(move || server.infer::<u64, Tagged>(Request::new("m", 2).timeout(timeout)))
    };
    let err = block_on(by_settings, PATIENCE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    let err = own.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert!(asked.elapsed() < Duration::from_secs(5), "queued requests waited {:?} for the restart", asked.elapsed());
    // The two past their deadline fill the queue until a worker is back:
    // they make room for the next one, which is not refused as overload.
    let err = server.infer::<u64, Tagged>(Request::new("m", 3)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    // They keep no drain waiting for the worker's restart either.
    let started = Instant::now();
    server.unload("m").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "the unload waited {:?} for the backoff", started.elapsed());
    server.shutdown();
}
