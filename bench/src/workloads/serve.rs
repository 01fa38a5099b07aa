//! Serving workloads (`multiproc-serve`), side by side with seed 004's
//! pipeline written with CPython `multiprocessing` (peer
//! `cpython-seed004-pipeline`, `bench/python/serve.py`):
//!
//! - `serve_pipeline`: million requests/s through preprocessing (a pool of 2
//!   processes) → dynamic batching (up to 128) → a trivial model in its own
//!   process → back to each request, with 1024 requests in flight; the same
//!   run gives `serve_latency/p50` and `serve_latency/p99` (µs per request).
//! - `serve_overhead/p50`, `serve_overhead/p99`: µs a request spends in the
//!   pipeline beyond the model call itself, one request at a time (low load);
//!   the floor is the direct call of the model in this process. The extras
//!   add the same figures for the model path alone (no preprocessing) and,
//!   under `overload`, a 2× overload: how fast the excess is rejected and the
//!   p99 of accepted requests against `max_queue_delay` + model time + 1 ms
//!   (the median of five one-second windows, each window's p99 listed).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use multiproc_serve::{
    ErrorKind, InferFuture, LoadError, Model, ModelSettings, ModelSpec, PipelineSpec, Request, Server, WorkerContext,
};
use serde_json::json;

use super::{Ctx, Workload};
use crate::machine::CpuTicks;
use crate::measure::{Plan, Stats, Subject, micros};
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// Requests through the pipeline, with latency percentiles of the same run.
pub const SERVE_PIPELINE: Workload = Workload {
    name: "serve_pipeline",
    about: "million requests/s through preprocess pool(2) → batch ≤128 → model process → back; p50/p99 latency",
    run: serve_pipeline,
};

/// Time the server adds over a direct model call, at low load.
pub const SERVE_OVERHEAD: Workload = Workload {
    name: "serve_overhead",
    about: "µs a lone request spends in the pipeline beyond the model call (floor: the direct call); 2× overload",
    run: serve_overhead,
};

const PEER: &str = "cpython-seed004-pipeline";
const REQUESTS: usize = 10_000;
const WINDOW: usize = 1024;
const LOW_LOAD_REQUESTS: usize = 200;

/// The seed's model: `'modelpredict_' + e` for each item of a batch.
struct Prefix;

impl Model for Prefix {
    type Config = u64;
    type Input = String;
    type Output = String;

    fn load(_: u64, _: &WorkerContext) -> Result<Self, LoadError> {
        Ok(Prefix)
    }

    fn predict(&mut self, batch: Vec<String>) -> Vec<Result<String, String>> {
        // One allocation of the exact size, like the seed's `+`.
        batch.into_iter().map(|e| Ok(["modelpredict_", &e].concat())).collect()
    }
}

/// The same model with a fixed time per batch (for the overload run).
struct Timed(Duration);

impl Model for Timed {
    type Config = u64;
    type Input = String;
    type Output = String;

    fn load(micros: u64, _: &WorkerContext) -> Result<Self, LoadError> {
        Ok(Timed(Duration::from_micros(micros)))
    }

    fn predict(&mut self, batch: Vec<String>) -> Vec<Result<String, String>> {
        std::thread::sleep(self.0);
        Prefix.predict(batch)
    }
}

/// The seed's `receive`, in the preprocessing pool.
fn receive(info: String) -> Result<String, String> {
    Ok(["receive_", &info].concat())
}

fn serve_err(e: multiproc_serve::ServeError) -> BenchError {
    BenchError::new(e.to_string())
}

/// A server with the model and the seed's pipeline in front of it.
fn pipeline_server() -> Result<Server, BenchError> {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 128, queue_capacity: 1 << 16, ..Default::default() };
    server.add(ModelSpec::<Prefix>::new("model").version(1, 0).settings(settings)).map_err(serve_err)?;
    let spec = PipelineSpec::<String, String, String, String>::new("pipeline", "model", receive, 2)
        .capacity(1 << 16)
        .chunk(WINDOW);
    server.add_pipeline(spec).map_err(serve_err)?;
    Ok(server)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn wait<O: serde::de::DeserializeOwned>(f: InferFuture<O>) -> Result<multiproc_serve::Reply<O>, BenchError> {
    f.wait_timeout(Duration::from_secs(60)).map_err(serve_err)
}

/// Request `id`'s input, `msg{id}`, allocated once at its final size.
fn message(id: usize) -> String {
    let mut s = String::with_capacity(24);
    write!(s, "msg{id}").expect("a String takes any write");
    s
}

/// Whether `output` is the seed's answer to request `id`, written into
/// `expected` (reused: the check allocates nothing per request).
fn is_answer(output: &str, id: usize, expected: &mut String) -> bool {
    expected.clear();
    write!(expected, "modelpredict_receive_msg{id}").expect("a String takes any write");
    output == expected
}

/// `n` requests through the pipeline with `window` in flight: million
/// requests/s; keeps each sample's latency percentiles.
struct Throughput {
    server: Server,
    next: usize,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Subject for Throughput {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let mut in_flight: VecDeque<(usize, InferFuture<String>)> = VecDeque::with_capacity(WINDOW);
        let mut latencies = Vec::with_capacity(REQUESTS);
        let mut expected = String::new();
        let (first, end) = (self.next, self.next + REQUESTS);
        let t = Instant::now();
        while self.next < end || !in_flight.is_empty() {
            while self.next < end && in_flight.len() < WINDOW {
                let id = self.next;
                self.next += 1;
                in_flight.push_back((id, self.server.infer_async(Request::new("pipeline", message(id)))));
            }
            if let Some((id, f)) = in_flight.pop_front() {
                let reply = wait(f)?;
                ensure(is_answer(&reply.output, id, &mut expected), || format!("request {id} got {:?}", reply.output))?;
                latencies.push(micros(reply.latency));
            }
        }
        let took = t.elapsed();
        ensure(latencies.len() == end - first, || "a request got no answer".to_string())?;
        let lat = sorted(latencies);
        self.p50.push(percentile(&lat, 0.5));
        self.p99.push(percentile(&lat, 0.99));
        Ok(REQUESTS as f64 / micros(took))
    }
}

fn serve_pipeline(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(1, 8.0, 3, 1000, 200), Plan::new(1, 2.0, 2, 1000, 50));
    let mut ours = Throughput { server: pipeline_server()?, next: 0, p50: Vec::new(), p99: Vec::new() };
    let (n, w) = (REQUESTS.to_string(), WINDOW.to_string());
    let py = |figure: &str| {
        ctx.python("serve.py", "serve_pipeline", &["--requests", &n, "--window", &w, "--figure", figure], &plan)
    };
    let (mut py_rate, mut py_p50, mut py_p99) = (py("rate")?, py("p50")?, py("p99")?);
    let stats = ctx.measure(
        &plan,
        &mut [
            ("multiproc serve_pipeline", &mut ours),
            ("cpython seed 004 pipeline (rate)", &mut py_rate),
            ("cpython seed 004 pipeline (p50)", &mut py_p50),
            ("cpython seed 004 pipeline (p99)", &mut py_p99),
        ],
    )?;
    for p in [py_rate, py_p50, py_p99] {
        p.finish()?;
    }
    let metrics = ours.server.metrics();
    let batches = metrics.get("model", 1).map(|m| json!({"sizes": m.batch_sizes, "reasons": m.batch_reasons}));
    ours.server.shutdown();
    let [rate, cp_rate, cp_p50, cp_p99] = <[Stats; 4]>::try_from(stats).expect("four subjects");
    let params =
        json!({"requests_per_sample": REQUESTS, "in_flight": WINDOW, "preprocess_processes": 2, "max_batch_size": 128});
    let row = |name: &str, unit, ours: Stats, py: Stats| {
        Row::new(name, unit, ours, py).with_extra("peer", json!(PEER)).with_extra("params", params.clone())
    };
    Ok(vec![
        row("serve_pipeline", Unit::MillionsPerSec, rate, cp_rate).with_extra("batches", json!(batches)),
        row("serve_latency/p50", Unit::Micros, Stats::of(ours.p50), cp_p50),
        row("serve_latency/p99", Unit::Micros, Stats::of(ours.p99), cp_p99),
    ])
}

/// Lone requests, one at a time: per-sample p50 and p99 of the time beyond
/// the direct call.
struct LowLoad {
    server: Server,
    endpoint: &'static str,
    direct: f64,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Subject for LowLoad {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let mut lat = Vec::with_capacity(LOW_LOAD_REQUESTS);
        for i in 0..LOW_LOAD_REQUESTS {
            let input = if self.endpoint == "model" { format!("receive_msg{i}") } else { format!("msg{i}") };
            let t = Instant::now();
            let reply = self.server.infer::<String, String>(Request::new(self.endpoint, input)).map_err(serve_err)?;
            lat.push(micros(t.elapsed()));
            ensure(reply.output == format!("modelpredict_receive_msg{i}"), || format!("got {:?}", reply.output))?;
        }
        let lat = sorted(lat);
        let (p50, p99) =
            ((percentile(&lat, 0.5) - self.direct).max(0.0), (percentile(&lat, 0.99) - self.direct).max(0.0));
        self.p50.push(p50);
        self.p99.push(p99);
        Ok(p50)
    }
}

/// Direct calls as a subject: per-sample p50 and p99 (the floor).
struct Direct {
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Subject for Direct {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let mut m = Prefix;
        let lat: Vec<f64> = (0..LOW_LOAD_REQUESTS)
            .map(|i| {
                let t = Instant::now();
                std::hint::black_box(m.predict(vec![format!("receive_msg{i}")]));
                micros(t.elapsed())
            })
            .collect();
        let lat = sorted(lat);
        self.p50.push(percentile(&lat, 0.5));
        self.p99.push(percentile(&lat, 0.99));
        Ok(percentile(&lat, 0.5))
    }
}

fn serve_overhead(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(1, 6.0, 5, 1000, 100), Plan::new(1, 1.5, 3, 1000, 50));
    let server = pipeline_server()?;
    // The median direct call, subtracted from each request's time.
    let direct = Direct { p50: Vec::new(), p99: Vec::new() }.sample()?;
    let low = |endpoint| LowLoad { server: server.clone(), endpoint, direct, p50: Vec::new(), p99: Vec::new() };
    let (mut pipeline, mut model_only) = (low("pipeline"), low("model"));
    let mut floor = Direct { p50: Vec::new(), p99: Vec::new() };
    let n = LOW_LOAD_REQUESTS.to_string();
    let py = |figure: &str| ctx.python("serve.py", "serve_overhead", &["--requests", &n, "--figure", figure], &plan);
    let (mut py_p50, mut py_p99) = (py("p50")?, py("p99")?);
    let stats = ctx.measure(
        &plan,
        &mut [
            ("multiproc serve_overhead (pipeline)", &mut pipeline),
            ("multiproc serve_overhead (model only)", &mut model_only),
            ("direct model call", &mut floor),
            ("cpython seed 004 pipeline (p50)", &mut py_p50),
            ("cpython seed 004 pipeline (p99)", &mut py_p99),
        ],
    )?;
    py_p50.finish()?;
    py_p99.finish()?;
    server.shutdown();
    let [_, _, _, cp_p50, cp_p99] = <[Stats; 5]>::try_from(stats).expect("five subjects");
    let overload = overload()?;
    eprintln!("  overload: {overload}");
    let floor_name = "the model's predict called directly in this process (one item)";
    let model_only =
        json!({"p50_us": Stats::of(model_only.p50.clone()).median, "p99_us": Stats::of(model_only.p99.clone()).median});
    let params = json!({"requests_per_sample": LOW_LOAD_REQUESTS, "direct_call_median_us": direct});
    Ok(vec![
        Row::new("serve_overhead/p50", Unit::Micros, Stats::of(pipeline.p50), cp_p50)
            .with_floor(floor_name, Stats::of(floor.p50))
            .with_extra("peer", json!(PEER))
            .with_extra("model_only", model_only.clone())
            .with_extra("params", params.clone()),
        Row::new("serve_overhead/p99", Unit::Micros, Stats::of(pipeline.p99), cp_p99)
            .with_floor(floor_name, Stats::of(floor.p99))
            .with_extra("peer", json!(PEER))
            .with_extra("model_only", model_only)
            .with_extra("overload", overload)
            .with_extra("params", params),
    ])
}

/// Open-loop windows of the overload run: a window's p99 rests on its
/// slowest 1 % (about four batches' worth), so one burst of time stolen
/// from the VM decides a window; the row gives the median window, as every
/// other row gives the median sample.
const OVERLOAD_WINDOWS: usize = 5;
/// How long each open-loop window offers requests.
const OVERLOAD_WINDOW: Duration = Duration::from_secs(1);

/// 2× overload of a model with a fixed model time: measures its capacity
/// closed-loop, then offers twice that, open-loop, in
/// [`OVERLOAD_WINDOWS`] windows (each drained before the next).
fn overload() -> Result<serde_json::Value, BenchError> {
    const MODEL_US: u64 = 2000;
    let delay = Duration::from_millis(2);
    let server = Server::new();
    let settings =
        ModelSettings { max_batch_size: 32, max_queue_delay: delay, queue_capacity: 32, ..Default::default() };
    server.add(ModelSpec::<Timed>::new("timed").version(1, MODEL_US).settings(settings)).map_err(serve_err)?;
    // Capacity: closed loop, 32 in flight, for half a second.
    let mut in_flight = VecDeque::new();
    let (t, mut done) = (Instant::now(), 0u64);
    while t.elapsed() < Duration::from_millis(500) {
        while in_flight.len() < 32 {
            in_flight.push_back(server.infer_async::<String, String>(Request::new("timed", "x".to_string())));
        }
        if let Some(f) = in_flight.pop_front()
            && wait(f).is_ok()
        {
            done += 1;
        }
    }
    for f in in_flight {
        let _ = wait(f);
    }
    let capacity = done as f64 / t.elapsed().as_secs_f64();
    let offered = 2.0 * capacity;
    let windows = (0..OVERLOAD_WINDOWS).map(|_| open_loop(&server, offered)).collect::<Result<Vec<_>, _>>()?;
    let model_us = server
        .metrics()
        .get("timed", 1)
        .map_or(0.0, |m| m.compute_infer_duration_us as f64 / m.inference_count.max(1) as f64);
    server.shutdown();
    let bound = micros(delay) + model_us + 1000.0;
    let median = |f: fn(&Window) -> f64| Stats::of(windows.iter().map(f).collect()).median;
    let accepted_p99 = median(|w| w.accepted_p99_us);
    let sum = |f: fn(&Window) -> usize| windows.iter().map(f).sum::<usize>();
    Ok(json!({
        "capacity_per_s": capacity.round(),
        "offered_per_s": offered.round(),
        "windows": OVERLOAD_WINDOWS,
        "accepted": sum(|w| w.accepted),
        "rejected": sum(|w| w.rejected),
        "reject_p99_us": median(|w| w.reject_p99_us),
        "accepted_p50_us": median(|w| w.accepted_p50_us),
        "accepted_p99_us": accepted_p99,
        "accepted_p99_us_per_window": windows.iter().map(|w| w.accepted_p99_us.round()).collect::<Vec<_>>(),
        "steal_percent_per_window": windows.iter().map(|w| w.steal_percent.map(|p| (p * 10.0).round() / 10.0)).collect::<Vec<_>>(),
        "bound_us": bound,
        "bound_is": "max_queue_delay + measured model time per batch + 1 ms",
        "within_bound": windows.iter().all(|w| w.accepted > 0) && accepted_p99 <= bound,
    }))
}

/// What one open-loop window of the overload run saw.
struct Window {
    accepted: usize,
    rejected: usize,
    reject_p99_us: f64,
    accepted_p50_us: f64,
    accepted_p99_us: f64,
    /// The share of the machine's CPU time the hypervisor took meanwhile.
    steal_percent: Option<f64>,
}

/// Offers `offered` requests per second for [`OVERLOAD_WINDOW`] (every
/// tick, the requests due by then), then waits for every accepted one.
fn open_loop(server: &Server, offered: f64) -> Result<Window, BenchError> {
    let (mut accepted, mut reject_us) = (Vec::new(), Vec::new());
    let ticks = CpuTicks::now();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < OVERLOAD_WINDOW {
        let due = (offered * start.elapsed().as_secs_f64()) as u64;
        while sent < due {
            sent += 1;
            let t = Instant::now();
            let mut f = server.infer_async::<String, String>(Request::new("timed", "x".to_string()));
            let waker = std::task::Waker::noop();
            match Pin::new(&mut f).poll(&mut std::task::Context::from_waker(waker)) {
                std::task::Poll::Ready(Err(e)) if e.kind() == ErrorKind::Overloaded => {
                    reject_us.push(micros(t.elapsed()));
                }
                _ => accepted.push(f),
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut accepted_us = Vec::with_capacity(accepted.len());
    for f in accepted {
        accepted_us.push(micros(wait(f)?.latency));
    }
    let steal_percent = ticks.zip(CpuTicks::now()).map(|(before, after)| after.steal_percent_since(&before));
    let (acc, rej) = (sorted(accepted_us), sorted(reject_us));
    let p = |v: &[f64], q| if v.is_empty() { 0.0 } else { percentile(v, q) };
    Ok(Window {
        accepted: acc.len(),
        rejected: rej.len(),
        reject_p99_us: p(&rej, 0.99),
        accepted_p50_us: p(&acc, 0.5),
        accepted_p99_us: p(&acc, 0.99),
        steal_percent,
    })
}
