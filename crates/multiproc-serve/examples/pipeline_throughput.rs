//! Requests per second through a pipeline (2 preprocessing processes →
//! batches of up to 128 → a trivial model process), 1024 in flight; with
//! `model` as the second argument, straight to the model (no
//! preprocessing: the request is what preprocessing would have made of it).
//! `cargo run --release -p multiproc-serve --example pipeline_throughput [SECONDS] [pipeline|model]`
//!
//! Each request costs the client what it costs in the bench's
//! `serve_pipeline` loop: one allocation for its input, and its answer
//! checked against one reused buffer (the client's thread is the
//! pipeline's busiest, so its own work moves the rate).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use multiproc_serve::{
    InferFuture, LoadError, Model, ModelSettings, ModelSpec, PipelineSpec, Request, Server, WorkerContext,
};

struct Prefix;

impl Model for Prefix {
    type Config = ();
    type Input = String;
    type Output = String;
    fn load((): (), _: &WorkerContext) -> Result<Self, LoadError> {
        Ok(Prefix)
    }
    fn predict(&mut self, batch: Vec<String>) -> Vec<Result<String, String>> {
        batch.into_iter().map(|e| Ok(["modelpredict_", &e].concat())).collect()
    }
}

fn receive(info: String) -> Result<String, String> {
    Ok(["receive_", &info].concat())
}

fn wait(f: InferFuture<String>) -> String {
    f.wait_timeout(Duration::from_secs(60)).expect("request failed").output
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let endpoint = std::env::args().nth(2).unwrap_or_else(|| "pipeline".into());
    let prefix = match endpoint.as_str() {
        "pipeline" => "",
        "model" => "receive_",
        other => panic!("no endpoint {other:?}: pipeline or model"),
    };
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 128, queue_capacity: 1 << 16, ..Default::default() };
    server.add(ModelSpec::<Prefix>::new("model").version(1, ()).settings(settings)).unwrap();
    let spec = PipelineSpec::<String, String, String, String>::new("pipeline", "model", receive, 2)
        .capacity(1 << 16)
        .chunk(1024);
    server.add_pipeline(spec).unwrap();
    let mut in_flight = VecDeque::new();
    let mut expected = String::new();
    let (start, mut done, mut next) = (Instant::now(), 0u64, 0u64);
    // The clock is read once per window, not per request (a read costs
    // about as much as a small part of a request here).
    while done % 1024 != 0 || start.elapsed().as_secs_f64() < seconds {
        while in_flight.len() < 1024 {
            let mut input = String::with_capacity(24);
            write!(input, "{prefix}msg{next}").expect("a String takes any write");
            in_flight.push_back((next, server.infer_async::<String, String>(Request::new(endpoint.as_str(), input))));
            next += 1;
        }
        let (id, f) = in_flight.pop_front().unwrap();
        expected.clear();
        write!(expected, "modelpredict_receive_msg{id}").expect("a String takes any write");
        assert_eq!(wait(f), expected);
        done += 1;
    }
    println!("{:.0} requests/s", done as f64 / start.elapsed().as_secs_f64());
    println!("{:?}", server.metrics().get("model", 1).map(|m| (m.execution_count, m.inference_count)));
    server.shutdown();
}
