//! A caller holding its answer finds it in the counters: a batch's
//! successes are counted before any of its answers can be read, for
//! blocking callers, callers with many requests in flight, and pipelines.

mod common;

use std::collections::VecDeque;

use common::{Behaviour, Doubler, PATIENCE, Tagged};
use multiproc_serve::{
    LoadError, Model, ModelSettings, ModelSpec, PipelineSpec, Request, Server, VersionMetrics, WorkerContext,
};

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

#[test]
fn callers_with_batches_in_flight_find_every_answer_they_hold_counted() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 64, queue_capacity: 1 << 12, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("double").version(1, Behaviour::default()).settings(settings)).unwrap();
    let mut in_flight = VecDeque::new();
    let (mut next, mut answered) = (0u64, 0u64);
    while answered < 4_000 {
        while next < 4_000 && in_flight.len() < 256 {
            in_flight.push_back((next, server.infer_async::<u64, Tagged>(Request::new("double", next))));
            next += 1;
        }
        let (i, f) = in_flight.pop_front().expect("a request in flight");
        assert_eq!(f.wait_timeout(PATIENCE).unwrap().output.value, 2 * i);
        answered += 1;
        // Every tenth answer (reading the counters takes longer than an
        // answer, and the batches are to stay full).
        if answered % 10 == 1 {
            let m = counters(&server, "double");
            assert!(m.request_success >= answered, "{answered} answers held, {} counted: {m:?}", m.request_success);
        }
    }
    assert_eq!(counters(&server, "double").request_success, 4_000);
    server.shutdown();
}

/// Prefixes each input, in batches.
struct Prefix;

impl Model for Prefix {
    type Config = ();
    type Input = String;
    type Output = String;
    fn load((): (), _: &WorkerContext) -> Result<Self, LoadError> {
        Ok(Prefix)
    }
    fn predict(&mut self, batch: Vec<String>) -> Vec<Result<String, String>> {
        batch.into_iter().map(|e| Ok(["model_", &e].concat())).collect()
    }
}

fn step(input: String) -> Result<String, String> {
    Ok(["step_", &input].concat())
}

#[test]
fn a_pipelines_answers_are_counted_at_its_model_before_they_are_read() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 64, queue_capacity: 1 << 12, ..Default::default() };
    server.add(ModelSpec::<Prefix>::new("model").version(1, ()).settings(settings)).unwrap();
    server.add_pipeline(PipelineSpec::<String, String, String, String>::new("pipeline", "model", step, 2)).unwrap();
    let mut in_flight = VecDeque::new();
    let (mut next, mut answered) = (0u64, 0u64);
    while answered < 2_000 {
        while next < 2_000 && in_flight.len() < 256 {
            let f = server.infer_async::<String, String>(Request::new("pipeline", next.to_string()));
            in_flight.push_back((next, f));
            next += 1;
        }
        let (i, f) = in_flight.pop_front().expect("a request in flight");
        assert_eq!(f.wait_timeout(PATIENCE).unwrap().output, format!("model_step_{i}"));
        answered += 1;
        if answered % 10 == 1 {
            let m = counters(&server, "model");
            assert!(m.request_success >= answered, "{answered} answers held, {} counted: {m:?}", m.request_success);
        }
    }
    server.shutdown();
}
