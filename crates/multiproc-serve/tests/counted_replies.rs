//! A caller holding its answer finds it in the counters: a batch's
//! successes are counted before any of its answers can be read, for
//! blocking callers, callers with many requests in flight, and pipelines.

mod common;

use std::collections::VecDeque;

use common::{Behaviour, Doubler, PATIENCE, Tagged};
use multiproc_serve::{InferFuture, ModelSettings, ModelSpec, PipelineSpec, Request, Server, VersionMetrics};

fn counters(server: &Server, model: &str) -> VersionMetrics {
    server.metrics().get(model, 1).cloned().expect("the model's counters")
}

#[test]
fn a_blocking_caller_finds_its_answer_counted() {
    let server = Server::new();
    server.add(ModelSpec::<Doubler>::new("double").version(1, Behaviour::default())).unwrap();
    for i in 0..200u64 {
        assert_eq!(
            server.infer::<u64, Tagged>(Request::new("double", i).timeout(PATIENCE)).unwrap().output.value,
            2 * i
        );
        let m = counters(&server, "double");
        assert_eq!((m.request_success, m.inference_count), (i + 1, i + 1), "after {} answers: {m:?}", i + 1);
    }
    server.shutdown();
}

/// Keeps 256 requests (`send(i)` for the `i`th) in flight until `n` are
/// answered, checks each answer, and every tenth answer (reading the
/// counters takes longer than an answer, and the batches are to stay full)
/// that the model `double` counted every answer held so far.
fn answers_held_are_counted(server: &Server, n: u64, send: impl Fn(u64) -> InferFuture<Tagged>) {
    let mut in_flight = VecDeque::new();
    let (mut next, mut answered) = (0u64, 0u64);
    while answered < n {
        while next < n && in_flight.len() < 256 {
            in_flight.push_back((next, send(next)));
            next += 1;
        }
        let (i, f) = in_flight.pop_front().expect("a request in flight");
        assert_eq!(f.wait_timeout(PATIENCE).unwrap().output.value, 2 * i);
        answered += 1;
        if answered % 10 == 1 {
            let m = counters(server, "double");
            assert!(m.request_success >= answered, "{answered} answers held, {} counted: {m:?}", m.request_success);
        }
    }
    assert_eq!(counters(server, "double").request_success, n);
}

#[test]
fn callers_with_batches_in_flight_find_every_answer_they_hold_counted() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 64, queue_capacity: 1 << 12, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("double").version(1, Behaviour::default()).settings(settings)).unwrap();
    answers_held_are_counted(&server, 40_000, |i| server.infer_async(Request::new("double", i)));
    server.shutdown();
}

/// The pipeline's preprocessing step.
fn parse(text: String) -> Result<u64, String> {
    text.parse().map_err(|e| format!("{text:?} is not a number: {e}"))
}

#[test]
fn a_pipelines_answers_are_counted_at_its_model_before_they_are_read() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 64, queue_capacity: 1 << 12, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("double").version(1, Behaviour::default()).settings(settings)).unwrap();
    server.add_pipeline(PipelineSpec::<String, u64, Tagged, Tagged>::new("pipeline", "double", parse, 2)).unwrap();
    answers_held_are_counted(&server, 20_000, |i| server.infer_async(Request::new("pipeline", i.to_string())));
    server.shutdown();
}
