//! Dynamic batching: full batches at high load, a lone request waits at
//! most `max_queue_delay`, `max_batch_size` counts rows, a full queue
//! rejects at once, deadlines.

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, Doubler, PATIENCE, Tagged, block_on};
use multiproc_serve::{
    ErrorKind, LoadError, Model, ModelSettings, ModelSpec, Request, Server, StartMode, WorkerContext,
};

#[test]
fn at_high_load_batches_are_full() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 16, queue_capacity: 1000, ..Default::default() };
    let behaviour = Behaviour { batch_ms: 20, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("busy").version(1, behaviour).settings(settings)).unwrap();
    let futures: Vec<_> = (0..400u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("busy", i))).collect();
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(block_on(f, PATIENCE).unwrap().output.value, 2 * i as u64);
    }
    let m = &common::metrics_when(&server, "busy", 1, |m| m.request_success == 400);
    let full = m.batch_reasons.get("full").copied().unwrap_or(0);
    eprintln!("batches: {:?}, reasons {:?}", m.batch_sizes, m.batch_reasons);
    assert_eq!(m.inference_count, 400);
    assert_eq!(m.request_success, 400);
    // The first request goes alone (the worker was idle); after that the
    // queue refills while the worker runs, so nearly every batch is full.
    assert!(full >= 22, "only {full} of {} batches were full", m.execution_count);
    assert!(m.batch_sizes.iter().all(|(size, _)| *size <= 16));
    server.shutdown();
}

#[test]
fn at_low_load_a_lone_request_waits_at_most_max_queue_delay() {
    let server = Server::new();
    let delay = Duration::from_millis(80);
    let settings = ModelSettings { max_batch_size: 32, max_queue_delay: delay, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("quiet").version(1, Behaviour::default()).settings(settings)).unwrap();
    for i in 0..3u64 {
        let started = Instant::now();
        let reply = server.infer::<u64, Tagged>(Request::new("quiet", i)).unwrap();
        let took = started.elapsed();
        assert_eq!(reply.batch_size, 1);
        assert!(reply.queue_time >= delay, "left the queue after {:?}, before the delay", reply.queue_time);
        // Slack for a loaded 2-core machine; the bench measures it tightly.
        assert!(reply.queue_time < delay + Duration::from_secs(2), "waited {:?}", reply.queue_time);
        assert!(took < delay + Duration::from_secs(3), "took {took:?}");
    }
    let metrics = server.metrics();
    assert_eq!(metrics.get("quiet", 1).unwrap().batch_reasons.get("delay"), Some(&3));
    server.shutdown();
}

/// Takes a request's rows as its input and answers every request with the
/// rows of the model call it ran in, after 20 ms (the queue fills meanwhile).
struct RowCounter;

impl Model for RowCounter {
    type Config = ();
    type Input = u64;
    type Output = u64;

    fn load((): (), _: &WorkerContext) -> Result<Self, LoadError> {
        Ok(RowCounter)
    }

    fn predict(&mut self, batch: Vec<u64>) -> Vec<Result<u64, String>> {
        std::thread::sleep(Duration::from_millis(20));
        let rows: u64 = batch.iter().sum();
        batch.iter().map(|_| Ok(rows)).collect()
    }
}

#[test]
fn max_batch_size_caps_the_rows_of_one_model_call_not_the_requests() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 8, queue_capacity: 100, ..Default::default() };
    server.add(ModelSpec::<RowCounter>::new("rows").version(1, ()).settings(settings)).unwrap();
    let mut answers = Vec::new();
    let mut calls = |sizes: &[u64]| -> Vec<u64> {
        let futures: Vec<_> =
            sizes.iter().map(|&n| server.infer_async::<u64, u64>(Request::new("rows", n).rows(n as usize))).collect();
        let calls: Vec<u64> = futures.into_iter().map(|f| block_on(f, PATIENCE).unwrap().output).collect();
        answers.extend(sizes.iter().copied().zip(calls.iter().copied()));
        calls
    };
    let eights = calls(&[8; 16]);
    assert!(eights.iter().all(|&rows| rows == 8), "model calls of {eights:?} rows for a max_batch_size of 8");
    let mixed = calls(&[3, 5, 3, 5, 3, 5, 3, 5, 3, 5]);
    assert!(mixed.iter().all(|&rows| rows <= 8), "model calls of {mixed:?} rows for a max_batch_size of 8");
    assert!(mixed.contains(&8), "3- and 5-row requests queued together were not packed to 8: {mixed:?}");
    let err = server.infer::<u64, u64>(Request::new("rows", 9).rows(9)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(err.to_string().contains("max_batch_size"), "{err}");

    // The counters count as Triton's do: requests (success, failure),
    // inferences (rows), executions (model calls), batch sizes in rows.
    let executions = multiproc_test_support::model_calls(&answers);
    let m = &common::metrics_when(&server, "rows", 1, |m| common::requests_counted(m) == 27);
    assert_eq!(m.request_success, 26, "{m:?}");
    assert_eq!(m.inference_count, 16 * 8 + 5 * (3 + 5), "{m:?}");
    assert_eq!(m.execution_count, executions, "{answers:?} {m:?}");
    let batches: u64 = m.batch_sizes.iter().map(|(_, n)| n).sum();
    let batch_rows: u64 = m.batch_sizes.iter().map(|(rows, n)| *rows as u64 * n).sum();
    assert_eq!((batches, batch_rows), (executions, m.inference_count), "{m:?}");
    let failures: Vec<_> = m.request_failure.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(failures, [("bad_input", 1)], "{m:?}");
    server.shutdown();
}

#[test]
fn a_full_queue_rejects_at_once_and_deadlines_fail_waiting_requests() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 1, queue_capacity: 10, ..Default::default() };
    // Input 0 takes 3 s: no batch ends while the 30 requests are sent.
    let behaviour = Behaviour { batch_ms: 3_000, slow_below: Some(1), ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("small").version(1, behaviour).settings(settings)).unwrap();
    let started = Instant::now();
    let futures: Vec<_> = (0..30u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("small", i))).collect();
    let submitted = started.elapsed();
    // One request in the worker, one in its pipe, ten queued; the rest are
    // rejected before a poll: their first poll has the error.
    let mut outcomes = Vec::new();
    for f in futures {
        let mut f = std::pin::pin!(f);
        let first = f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        let at_once = first.is_ready();
        let r = match first {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => block_on(f, PATIENCE),
        };
        outcomes.push((r, at_once));
    }
    let rejected: Vec<_> =
        outcomes.iter().filter(|(r, _)| matches!(r, Err(e) if e.kind() == ErrorKind::Overloaded)).collect();
    assert!(rejected.len() >= 18, "only {} rejected", rejected.len());
    assert!(rejected.iter().all(|(_, at_once)| *at_once), "a rejection waited");
    assert!(submitted < Duration::from_secs(2), "30 requests took {submitted:?} to send");
    let err = rejected[0].0.as_ref().unwrap_err();
    assert_eq!((err.http_status(), err.retry_after().is_some()), (503, true));
    assert_eq!(outcomes.iter().filter(|(r, _)| r.is_ok()).count(), 30 - rejected.len());

    // A request with a deadline shorter than the queue wait fails with it.
    let blockers: Vec<_> = (0..3u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("small", i))).collect();
    let err = server.infer::<u64, Tagged>(Request::new("small", 7).timeout(Duration::from_millis(100))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    let err = block_on(
        server.infer_async::<u64, Tagged>(Request::new("small", 8).timeout(Duration::from_millis(100))),
        PATIENCE,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    // Waiting on a future without a runtime, with a patience shorter than the queue.
    let err = server.infer_async::<u64, Tagged>(Request::new("small", 9)).wait_timeout(Duration::from_millis(50));
    assert_eq!(err.unwrap_err().kind(), ErrorKind::DeadlineExceeded);
    for b in blockers {
        block_on(b, PATIENCE).unwrap();
    }
    server.shutdown();
}

#[test]
fn a_request_whose_caller_is_gone_never_reaches_a_worker() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 1, ..Default::default() };
    let behaviour = Behaviour { batch_ms: 300, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, behaviour).settings(settings)).unwrap();
    let busy = server.infer_async::<u64, Tagged>(Request::new("m", 1));
    assert!(common::wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].in_flight == 1));
    drop(server.infer_async::<u64, Tagged>(Request::new("m", 2)));
    let after = server.infer_async::<u64, Tagged>(Request::new("m", 3));
    assert_eq!(busy.wait_timeout(PATIENCE).unwrap().output.value, 2);
    assert_eq!(after.wait_timeout(PATIENCE).unwrap().output.value, 6);
    let m = &common::metrics_when(&server, "m", 1, |m| common::requests_counted(m) == 3);
    assert_eq!(m.inference_count, 2, "the dropped request ran");
    assert_eq!(m.request_failure.get("cancelled"), Some(&1));
    server.shutdown();
}

#[test]
fn requests_whose_callers_gave_up_do_not_hold_a_full_queue() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 1, queue_capacity: 5, start: StartMode::Lazy, ..Default::default() };
    // Input 0 takes 6 s; the others are quick. The load takes 2 s.
    let behaviour = Behaviour { batch_ms: 6_000, slow_below: Some(1), load_ms: 2_000, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, behaviour).settings(settings)).unwrap();
    let status = || server.status().model("m").unwrap().versions[0].clone();
    // Sent while the worker loads, so that once ready it runs input 0 and
    // holds input 6 in its pipe (which counts in the queue's capacity of
    // 5): it takes no more until input 0 is done. (Sent to a worker
    // running input 0, input 6 might be held or left queued, as the
    // worker's thread is quick or not to look.)
    let busy: Vec<_> = [0, 6].map(|i| server.infer_async::<u64, Tagged>(Request::new("m", i))).into();
    assert!(common::wait_for(PATIENCE, || status().in_flight == 2), "{:?}", status());
    // The queue fills with requests whose callers then give up: two time
    // out, two are dropped. (Long enough that the four are surely queued
    // when counted below; well before input 0 is done.)
    let short = Duration::from_secs(2);
    let timing_out: Vec<_> =
        (1..3u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("m", i).timeout(short))).collect();
    let dropped: Vec<_> = (3..5u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("m", i))).collect();
    assert_eq!(status().queue_depth, 4);
    drop(dropped);
    for f in timing_out {
        assert_eq!(block_on(f, PATIENCE).unwrap_err().kind(), ErrorKind::DeadlineExceeded);
    }
    // Nobody waits for what is queued: a new request is taken, not rejected.
    let reply = server.infer::<u64, Tagged>(Request::new("m", 5).timeout(PATIENCE));
    assert_eq!(reply.map(|r| r.output.value), Ok(10), "a queue of abandoned requests refused a live one");
    for (f, x) in busy.into_iter().zip([0, 6]) {
        assert_eq!(block_on(f, PATIENCE).unwrap().output.value, 2 * x);
    }
    let m = &common::metrics_when(&server, "m", 1, |m| common::requests_counted(m) == 7);
    assert_eq!((m.request_success, m.inference_count), (3, 3), "{m:?}");
    let failures: Vec<_> = m.request_failure.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(failures, [("cancelled", 2), ("deadline_exceeded", 2)], "{m:?}");
    server.shutdown();
}
