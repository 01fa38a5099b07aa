//! A caller holding its answer or its model's error finds it in the
//! counters: a batch's outcomes are counted before any of them can be
//! read, for blocking callers, callers with many requests in flight, and
//! pipelines.

mod common;

use std::cell::Cell;
use std::collections::VecDeque;

use common::{Behaviour, Doubler, PATIENCE, Tagged};
use multiproc_serve::{
    ErrorKind, InferFuture, ModelSettings, ModelSpec, PipelineSpec, Request, Server, VersionMetrics,
};

fn counters(server: &Server, model: &str) -> VersionMetrics {
    server.metrics().get(model, 1).cloned().expect("the model's counters")
}

#[test]
fn a_blocking_caller_finds_its_answer_or_error_counted() {
    let server = Server::new();
    server.add(ModelSpec::<Doubler>::new("double").version(1, Behaviour::default())).unwrap();
    let mut failed = 0;
    for i in 0..200u64 {
        if i % 7 == 3 {
            let e = server.infer::<u64, Tagged>(Request::new("double", u64::MAX).timeout(PATIENCE)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ModelFailed, "{e}");
            failed += 1;
        } else {
            let reply = server.infer::<u64, Tagged>(Request::new("double", i).timeout(PATIENCE)).unwrap();
            assert_eq!(reply.output.value, 2 * i);
        }
        let m = counters(&server, "double");
        let seen = (m.request_success, m.request_failure.get("model_failed").copied().unwrap_or(0), m.inference_count);
        assert_eq!(seen, (i + 1 - failed, failed, i + 1), "after {} outcomes: {m:?}", i + 1);
    }
    server.shutdown();
}

/// Keeps 256 requests (`send(x)` sends `x`) in flight until `n` are
/// answered, checks each answer (every seventh asks for `u64::MAX`, which
/// the model fails), and every tenth answer (reading the counters takes
/// longer than an answer, and the batches are to stay full) that the model
/// `double` counted every answer and error held so far.
fn answers_held_are_counted(server: &Server, n: u64, send: impl Fn(u64) -> InferFuture<Tagged>) {
    let fails = |i: u64| i % 7 == 3;
    let mut in_flight = VecDeque::new();
    let (mut next, mut answered) = (0u64, 0u64);
    while answered < n {
        while next < n && in_flight.len() < 256 {
            in_flight.push_back((next, send(if fails(next) { u64::MAX } else { next })));
            next += 1;
        }
        let (i, f) = in_flight.pop_front().expect("a request in flight");
        match f.wait_timeout(PATIENCE) {
            Err(e) if fails(i) => assert_eq!(e.kind(), ErrorKind::ModelFailed, "{e}"),
            reply => assert_eq!(reply.unwrap().output.value, 2 * i),
        }
        answered += 1;
        if answered % 10 == 1 {
            let m = counters(server, "double");
            let failed = m.request_failure.get("model_failed").copied().unwrap_or(0);
            assert!(m.request_success + failed >= answered, "{answered} outcomes held, {m:?}");
        }
    }
    let m = counters(server, "double");
    assert_eq!((m.request_success + m.request_failure["model_failed"], m.request_failure.len()), (n, 1), "{m:?}");
}

/// A server with the model `double`, batches of up to 64, room for 4,096 queued.
fn batched_doubler() -> Server {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 64, queue_capacity: 1 << 12, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("double").version(1, Behaviour::default()).settings(settings)).unwrap();
    server
}

#[test]
fn callers_with_batches_in_flight_find_every_answer_they_hold_counted() {
    let server = batched_doubler();
    answers_held_are_counted(&server, 40_000, |x| server.infer_async(Request::new("double", x)));
    server.shutdown();
}

/// The pipeline's preprocessing step.
fn parse(text: String) -> Result<u64, String> {
    text.parse().map_err(|e| format!("{text:?} is not a number: {e}"))
}

#[test]
fn a_pipelines_answers_are_counted_at_its_model_before_they_are_read() {
    let server = batched_doubler();
    server.add_pipeline(PipelineSpec::<String, u64, Tagged, Tagged>::new("pipeline", "double", parse, 2)).unwrap();
    answers_held_are_counted(&server, 20_000, |x| server.infer_async(Request::new("pipeline", x.to_string())));
    server.shutdown();
}

#[test]
fn a_lost_batch_is_counted_before_its_callers_see_it() {
    let server = Server::new();
    let (futures, pid) = common::two_batches_held_and_four_queued(&server, 20_000, ModelSettings::default());
    common::kill(pid);
    // Each caller of the lost batch finds its own error, and those before it, counted.
    let lost = Cell::new(0);
    common::only_the_batch_that_ran_fails(futures, pid, |e| {
        assert_eq!(e.kind(), ErrorKind::WorkerLost, "{e}");
        lost.set(lost.get() + 1);
        let m = counters(&server, "m");
        assert!(m.request_failure.get("worker_lost").is_some_and(|n| *n >= lost.get()), "{m:?}");
        true
    });
    server.shutdown();
}
