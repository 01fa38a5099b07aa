//! HTTP serving workloads: `multiproc serve` (the same server the command
//! runs, `multiproc_serve_http::serve`, started in this process on its own
//! runtime) side by side with KServe's Python model server (`kserve` 0.21,
//! `ModelServer` with one worker and its per-request log lines off, as ours
//! writes none, `bench/python/http_kserve.py`), both
//! serving the same trivial model (output = input × 2, FP32 [1, 4]) over the
//! Open Inference Protocol with JSON bodies.
//!
//! The load generator keeps a fixed number of keep-alive connections busy
//! (one request at a time on each) until a bounded number of requests is
//! done; a sample is one such burst: its requests/s, and the p50/p90/p99 of
//! its request latencies. Every response is checked (status 200 and the
//! expected output).
//!
//! Rows: `http_infer/c1`, `/c16`, `/c64` (req/s), `http_p99/c1`, `/c64`
//! (µs), peer "kserve"; `http_batching/c64`: the demo digits classifier
//! with dynamic batching (`max_batch_size` 64) against the same server with
//! `max_batch_size` 1 (the peer column), and as its floor the same client
//! against a bare tokio server replaying a recorded answer (what loopback
//! TCP, the runtime and the client cost: the most any server could reach).
//! The `http_batching` row also says, for each of the three, where a
//! request's CPU time went (the client's thread, the server's threads, the
//! model's worker processes) and how many CPUs were busy on average
//! (`cpu_per_request`, medians over the bursts): fewer than the machine has
//! means the subject waited on latency, not on CPU.
//!
//! KServe is installed by the harness on first use into a virtual
//! environment under `target/py-venvs/kserve` (`python3 -m venv`, then
//! `pip install kserve==0.21.*` from PyPI).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc_serve_http::app::HttpOptions;
use multiproc_serve_http::serve::{ServeOptions, start};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod cpu;
mod load;

use load::{Conn, Driver, content_length, runtime};

use super::{Ctx, Workload};
use crate::measure::{Plan, Stats};
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// `multiproc serve` against KServe at concurrency 1, 16 and 64.
pub const HTTP_INFER: Workload = Workload {
    name: "http_infer",
    about: "req/s and p99 of OIP v2 JSON inference on a trivial model, multiproc serve vs KServe (1 worker), c1/c16/c64",
    run: http_infer,
};

/// Dynamic batching on the demo classifier.
pub const HTTP_BATCHING: Workload = Workload {
    name: "http_batching",
    about: "req/s of the demo digits MLP at c64 over HTTP, dynamic batching (max 64) vs max_batch_size 1",
    run: http_batching,
};

const DOUBLE_BODY: &str = r#"{"id":"b","inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
const DOUBLE_EXPECT: &str = "[2.0,4.0,6.0,8.0]";

fn serve_http_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/multiproc-serve-http")
}

/// A temporary model repository, removed on drop.
struct Repo(PathBuf);

impl Repo {
    fn new(models: &[(&str, &Path, &str)]) -> Result<Repo, BenchError> {
        let nonce = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
        let repo = Repo(std::env::temp_dir().join(format!("multiproc-bench-http-{}-{nonce:x}", std::process::id())));
        for (name, onnx, config) in models {
            std::fs::create_dir_all(repo.0.join(name).join("1"))?;
            std::fs::copy(onnx, repo.0.join(name).join("1/model.onnx"))?;
            std::fs::write(repo.0.join(name).join("config.toml"), config)?;
        }
        Ok(repo)
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server on its own multi-thread tokio runtime (a thread of this
/// process), stopped and joined on drop.
struct Hosted {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where a hosted server reports the address it listens on, or why it could
/// not start.
type AddrSender = std::sync::mpsc::Sender<Result<SocketAddr, String>>;

impl Hosted {
    /// Runs `serve` on a new runtime: it reports its address (or why it
    /// failed) and serves until the stop receiver completes. `what` names it
    /// if it does not start within `limit`.
    fn start<F, Fut>(what: &str, limit: Duration, serve: F) -> Result<Hosted, BenchError>
    where
        F: FnOnce(AddrSender, tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            rt.block_on(serve(addr_tx, stop_rx));
        });
        let addr = addr_rx
            .recv_timeout(limit)
            .map_err(|_| BenchError::new(format!("{what} did not start in {limit:?}")))?
            .map_err(BenchError::new)?;
        Ok(Hosted { addr, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `multiproc serve` running on its own runtime in this process (the
/// repository is removed after the server stops).
struct Multiproc {
    server: Hosted,
    _repo: Repo,
}

impl Multiproc {
    fn start(repo: Repo) -> Result<Multiproc, BenchError> {
        let options = ServeOptions {
            repository: repo.0.clone(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            http: HttpOptions::default(),
        };
        let server = Hosted::start("multiproc serve", Duration::from_secs(120), |addr, stop| async move {
            match start(options).await {
                Ok(running) => {
                    let _ = addr.send(Ok(running.http_addr));
                    running
                        .run(async move {
                            let _ = stop.await;
                        })
                        .await;
                }
                Err(e) => {
                    let _ = addr.send(Err(e.to_string()));
                }
            }
        })?;
        Ok(Multiproc { server, _repo: repo })
    }
}

/// KServe's model server in its own process group, stopped on drop.
struct KServe {
    child: Child,
    addr: SocketAddr,
}

fn run_limited(cmd: &mut Command, limit: Duration) -> Result<(), BenchError> {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return if status.success() { Ok(()) } else { Err(BenchError::new(format!("{cmd:?} failed: {err}"))) };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::new(format!("{cmd:?} took more than {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Python of the bench's kserve virtual environment, created if missing.
fn kserve_python(ctx: &Ctx) -> Result<PathBuf, BenchError> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-venvs/kserve");
    let python = venv.join("bin/python");
    let works = |p: &Path| Command::new(p).args(["-c", "import kserve"]).status().is_ok_and(|s| s.success());
    if !works(&python) {
        eprintln!("  creating {} and installing kserve==0.21.* from PyPI (once)", venv.display());
        run_limited(Command::new(&ctx.python.command).args(["-m", "venv"]).arg(&venv), Duration::from_secs(120))?;
        run_limited(
            Command::new(venv.join("bin/pip")).args(["install", "-q", "kserve==0.21.*"]),
            Duration::from_secs(900),
        )?;
        ensure(works(&python), || "kserve does not import after installing it".into())?;
    }
    Ok(python)
}

fn free_port() -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl KServe {
    fn start(ctx: &Ctx) -> Result<KServe, BenchError> {
        let python = kserve_python(ctx)?;
        let (port, grpc) = (free_port()?, free_port()?);
        let script = crate::python::script_dir().join("http_kserve.py");
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(python).arg(script).arg(port.to_string()).arg(grpc.to_string()),
            0,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
        let server = KServe { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        let start = Instant::now();
        let rt = runtime()?;
        loop {
            let probe = rt.block_on(async {
                let mut c = Conn::open(server.addr).await?;
                c.request(b"GET /v2/health/ready HTTP/1.1\r\nHost: bench\r\n\r\n").await.map(|(status, _)| status)
            });
            if matches!(probe, Ok(200)) {
                return Ok(server);
            }
            ensure(start.elapsed() < Duration::from_secs(90), || format!("kserve not ready in 90 s: {probe:?}"))?;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for KServe {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group of our own child (it leads it).
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                // SAFETY: as above.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The floor of `http_batching`: a server on a tokio runtime like the one
/// multiproc serve runs on here, which reads each HTTP/1.1 request (head,
/// then `Content-Length` bytes of body) and answers with a response that
/// multiproc serve gave, recorded byte for byte. What is left is the
/// loopback TCP, the async runtime and the load generator: the most any
/// HTTP server could do here with this client, before HTTP parsing, JSON
/// or a model.
const FLOOR_CANNED: &str =
    "recorded answer replayed by a bare tokio TCP server (no HTTP library, JSON or model), same client";

/// Starts the floor's server, answering with `answer`.
fn start_canned(answer: Vec<u8>) -> Result<Hosted, BenchError> {
    let answer = std::sync::Arc::new(answer);
    Hosted::start("the canned-answer server", Duration::from_secs(10), |addr, stop| async move {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l,
            Err(e) => return drop(addr.send(Err(e.to_string()))),
        };
        let _ = addr.send(listener.local_addr().map_err(|e| e.to_string()));
        let serve = async {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(canned_connection(stream, std::sync::Arc::clone(&answer)));
                }
            }
        };
        tokio::select! {
            () = serve => {}
            _ = stop => {}
        }
    })
}

/// Answers every request on `stream` with `answer` until the client closes.
async fn canned_connection(mut stream: TcpStream, answer: std::sync::Arc<Vec<u8>>) -> Result<(), BenchError> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut searched = 0;
        let end = loop {
            if let Some(i) = buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..searched + i]).map_err(|_| BenchError::new("head not UTF-8"))?;
                break searched + i + 4 + content_length(head).ok_or_else(|| BenchError::new("no Content-Length"))?;
            }
            searched = buf.len().saturating_sub(3);
            ensure(buf.len() < 64 << 10, || "request head over 64 KiB".into())?;
            buf.reserve(4096);
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        while buf.len() < end {
            buf.reserve(end - buf.len());
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..end);
        stream.write_all(&answer).await?;
    }
}

fn http_infer(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(1, 8.0, 5, 1000, 0), Plan::new(1, 2.0, 2, 1000, 0));
    let onnx = serve_http_dir().join("demo/bench/double/1/model.onnx");
    let config = std::fs::read_to_string(serve_http_dir().join("demo/bench/double/config.toml"))?;
    let ours = Multiproc::start(Repo::new(&[("double", &onnx, &config)])?)?;
    let kserve = KServe::start(ctx)?;
    let path = "/v2/models/double/infer";
    let mut rows = Vec::new();
    for (c, ours_n, theirs_n) in [(1usize, 1000usize, 300usize), (16, 4000, 1000), (64, 8000, 1000)] {
        let mut a = Driver::new(ours.server.addr, path, DOUBLE_BODY, DOUBLE_EXPECT, c, ours_n)?;
        let mut b = Driver::new(kserve.addr, path, DOUBLE_BODY, DOUBLE_EXPECT, c, theirs_n)?;
        let stats =
            ctx.measure(&plan, &mut [(&format!("multiproc serve c{c}"), &mut a), (&format!("kserve c{c}"), &mut b)])?;
        let [sa, sb] = <[Stats; 2]>::try_from(stats).expect("two subjects");
        let params = json!({"concurrency": c, "requests_per_burst": {"multiproc": ours_n, "kserve": theirs_n},
            "model": "output = input * 2, FP32 [1, 4], JSON", "kserve": "0.21, ModelServer(workers=1), per-request logs off"});
        let latency = json!({"multiproc": a.latency_json(), "kserve": b.latency_json()});
        rows.push(
            Row::new(format!("http_infer/c{c}"), Unit::RequestsPerSec, sa, sb)
                .with_extra("peer", json!("kserve"))
                .with_extra("latency", latency.clone())
                .with_extra("params", params.clone()),
        );
        if c != 16 {
            rows.push(
                Row::new(format!("http_p99/c{c}"), Unit::Micros, a.stats(|b| b.p99), b.stats(|b| b.p99))
                    .with_extra("peer", json!("kserve"))
                    .with_extra("latency", latency)
                    .with_extra("params", params),
            );
        }
    }
    drop(kserve);
    drop(ours);
    Ok(rows)
}

fn http_batching(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(1, 6.0, 5, 1000, 0), Plan::new(1, 2.0, 2, 1000, 0));
    let onnx = serve_http_dir().join("demo/repository/digits/1/model.onnx");
    let batched = std::fs::read_to_string(serve_http_dir().join("demo/repository/digits/config.toml"))?;
    let single = batched.replace("max_batch_size = 64", "max_batch_size = 1");
    ensure(single != batched, || "the demo digits config no longer says max_batch_size = 64".into())?;
    let ours = Multiproc::start(Repo::new(&[("digits", &onnx, &batched), ("digits_single", &onnx, &single)])?)?;
    let test_set: serde_json::Value = serde_json::from_str(multiproc_serve_http::demo::DIGITS_TEST_SET)?;
    let image = &test_set["inputs"][0];
    let body: &'static str = Box::leak(
        json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": image}]})
            .to_string()
            .into_boxed_str(),
    );
    let path = "/v2/models/digits/infer";
    let mut a = Driver::new(ours.server.addr, path, body, "\"probabilities\"", 64, 8000)?;
    let mut b = Driver::new(ours.server.addr, "/v2/models/digits_single/infer", body, "\"probabilities\"", 64, 8000)?;
    let canned = start_canned(a.record()?)?;
    let mut f = Driver::new(canned.addr, path, body, "\"probabilities\"", 64, 8000)?;
    let stats = ctx.measure(
        &plan,
        &mut [
            ("digits batched c64", &mut a),
            ("digits max_batch_size 1 c64", &mut b),
            ("floor: canned answers c64", &mut f),
        ],
    )?;
    let [sa, sb, sf] = <[Stats; 3]>::try_from(stats).expect("three subjects");
    let batch = mean_batch_size(ours.server.addr, "digits")?;
    eprintln!("  digits batched: {batch:.1} rows per model call on average");
    let latency = json!({"batched": a.latency_json(), "max_batch_size_1": b.latency_json()});
    let cpu = json!({"batched": a.cpu_json(), "max_batch_size_1": b.cpu_json(), "floor": f.cpu_json()});
    eprintln!("  CPU µs per request (client, server, model workers) and CPUs busy, medians: {cpu}");
    Ok(vec![
        Row::new("http_batching/c64", Unit::RequestsPerSec, sa, sb)
            .with_floor(FLOOR_CANNED, sf)
            .with_extra("peer", json!("multiproc serve, max_batch_size 1"))
            .with_extra("latency", latency)
            .with_extra("cpu_per_request", cpu)
            .with_extra(
                "params",
                json!({"concurrency": 64, "requests_per_burst": 8000, "model": "demo digits MLP, FP32 [1, 64]",
                    "batched_mean_batch_size": (batch * 10.0).round() / 10.0}),
            ),
    ])
}

/// Rows per model call of `model` over the server's life so far, from its
/// `/metrics` (`nv_inference_count`, rows, ÷ `nv_inference_exec_count`,
/// model calls). The driver's requests carry one row each, so this is
/// also requests per model call.
fn mean_batch_size(addr: SocketAddr, model: &str) -> Result<f64, BenchError> {
    let text = runtime()?.block_on(async {
        let mut c = Conn::open(addr).await?;
        let (status, body) = c.request(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n").await?;
        ensure(status == 200, || format!("/metrics answered {status}"))?;
        Ok::<_, BenchError>(String::from_utf8_lossy(body).into_owned())
    })?;
    let counter = |name: &str| {
        let key = format!("{name}{{model=\"{model}\",");
        text.lines()
            .find(|l| l.starts_with(&key))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .ok_or_else(|| BenchError::new(format!("/metrics has no {name} for {model}")))
    };
    Ok(counter("nv_inference_count")? / counter("nv_inference_exec_count")?.max(1.0))
}
