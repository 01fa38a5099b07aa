//! What one request costs end to end, by tensor size: a lone request to a
//! model that returns its input tensors (one worker, no batching), against
//! copying the tensor once in this process.
//! `cargo run --release -p multiproc-serve --example request_cost`

use std::time::{Duration, Instant};

use multiproc_serve::{LoadError, Model, ModelSpec, Server, Tensor, WorkerContext};

struct Identity;

impl Model for Identity {
    type Config = ();
    type Input = Vec<Tensor>;
    type Output = Vec<Tensor>;
    fn load((): (), _: &WorkerContext) -> Result<Self, LoadError> {
        Ok(Identity)
    }
    fn predict(&mut self, batch: Vec<Vec<Tensor>>) -> Vec<Result<Vec<Tensor>, String>> {
        batch.into_iter().map(Ok).collect()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let server = Server::new();
    server.add(ModelSpec::<Identity>::new("identity").version(1, ())).unwrap();
    println!("{:>10}  {:>12}  {:>12}  {:>10}", "bytes", "request p50", "one copy", "GB/s");
    for bytes in [16usize, 4 << 10, 64 << 10, 1 << 20, 16 << 20] {
        let values: Vec<f32> = (0..bytes / 4).map(|i| i as f32).collect();
        let t = Tensor::from_slice("x", vec![bytes / 4], &values).unwrap();
        let rounds = if bytes >= 1 << 20 { 30 } else { 300 };
        let mut took = Vec::new();
        let mut copies = Vec::new();
        for _ in 0..rounds {
            let input = vec![t.clone()];
            let start = Instant::now();
            let reply = server.infer_tensors("identity", None, input).unwrap();
            took.push(start.elapsed());
            assert_eq!(reply.output[0].data().len(), bytes);
            let start = Instant::now();
            std::hint::black_box(t.data().to_vec());
            copies.push(start.elapsed());
        }
        let (p50, copy) = (median(took), median(copies));
        let gbps = 2.0 * bytes as f64 / p50.as_secs_f64() / 1e9;
        println!(
            "{bytes:>10}  {:>10.1}µs  {:>10.1}µs  {gbps:>10.2}",
            p50.as_secs_f64() * 1e6,
            copy.as_secs_f64() * 1e6
        );
    }
    server.shutdown();
}
