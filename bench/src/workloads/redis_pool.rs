//! Distributed pool workloads (`multiproc-redis`), side by side with Celery
//! on the same Redis server (a private `redis-server` on a free port,
//! without persistence), each with one worker host (a separate process)
//! and one Celery worker with the same process count:
//!
//! - `redis_pool/chunk1`: tiny tasks (`x + 1`) per second, one task per
//!   stream entry (Celery: one `delay` per task), 2 processes;
//! - `redis_pool/chunk100`: the same, 100 tasks per entry (Celery:
//!   `tiny.chunks(…, 100)`);
//! - `redis_pool/cpu_w1`, `cpu_w2`, `cpu_w4`: CPU-bound tasks (each spins
//!   for 5 ms of its thread's CPU time, on both sides) per second with 1,
//!   2, 4 worker processes.
//!
//! The Celery side runs `bench/python/celery_pool.py` in a virtual
//! environment the harness creates under `target/bench-venv/celery`
//! (`celery[redis]` from PyPI); its figures go in the `cpython` column, with
//! `"peer": "celery"`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod};
use multiproc_redis::{RedisPool, RedisServer, Worker, queue_info};
use serde_json::json;

use super::{Ctx, Workload};
use crate::measure::{Plan, Stats};
use crate::python::Python;
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// All five rows.
pub const REDIS_POOL: Workload = Workload {
    name: "redis_pool",
    about: "tasks/s through Redis Streams (multiproc-redis) vs Celery on the same Redis: tiny tasks at chunksize 1 and 100, CPU-bound tasks with 1, 2, 4 processes",
    run: redis_pool,
};

/// CPU time each CPU-bound task burns.
const CPU_US: u64 = 5_000;

fn tiny(x: u64) -> u64 {
    x + 1
}

/// This thread's CPU time in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Spins until this thread has used `cpu_us` µs of CPU time; returns `x`.
fn burn(x: u64, cpu_us: u64) -> u64 {
    let end = thread_cpu_ns() + cpu_us * 1000;
    let mut spins = 0u64;
    while thread_cpu_ns() < end {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
    x
}

/// A worker host: serves `prefix` with `processes` processes until killed.
fn worker_host(url: String, prefix: String, processes: usize) {
    if let Err(e) = Worker::builder(&url).prefix(&prefix).processes(processes).run() {
        eprintln!("redis_pool worker host: {e}");
        std::process::exit(1);
    }
}

/// A worker host process, killed and reaped on drop.
struct Host(Process<()>);

impl Host {
    fn start(server: &RedisServer, prefix: &str, processes: usize) -> Result<Host, BenchError> {
        let p = Process::builder()
            .start_method(StartMethod::Spawn)
            .name("redis-worker-host")
            .spawn(worker_host, (server.url(), prefix.to_string(), processes))?;
        let host = Host(p);
        let deadline = Instant::now() + Duration::from_secs(60);
        while queue_info(&server.url(), prefix, multiproc_redis::DEFAULT_QUEUE)?.hosts.is_empty() {
            ensure(Instant::now() < deadline, || "the worker host did not start within 60 s".into())?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(host)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.join_timeout(Duration::from_secs(10));
    }
}

/// The Celery virtual environment's Python, created on first use.
fn celery_python() -> Result<Python, BenchError> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-venv/celery");
    let python = venv.join("bin/python");
    let stamp = venv.join(".celery-installed");
    if !stamp.exists() {
        eprintln!("  creating {} with celery[redis] from PyPI (once)", venv.display());
        let run = |cmd: &mut Command| -> Result<(), BenchError> {
            let status = cmd.status().map_err(|e| BenchError::new(format!("cannot run {cmd:?}: {e}")))?;
            ensure(status.success(), || format!("{cmd:?} failed: {status}"))
        };
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", "celery[redis]>=5,<6"]))?;
        std::fs::write(&stamp, b"")?;
    }
    Python::probe(python.to_str().ok_or_else(|| BenchError::new("the venv path is not UTF-8"))?)
}

/// One row's setup.
struct RowSpec {
    name: &'static str,
    processes: usize,
    chunksize: usize,
    cpu: bool,
    /// Tasks per sample: multiproc, Celery.
    tasks: (usize, usize),
}

const ROWS: &[RowSpec] = &[
    RowSpec { name: "redis_pool/chunk1", processes: 2, chunksize: 1, cpu: false, tasks: (5_000, 300) },
    RowSpec { name: "redis_pool/chunk100", processes: 2, chunksize: 100, cpu: false, tasks: (50_000, 5_000) },
    RowSpec { name: "redis_pool/cpu_w1", processes: 1, chunksize: 1, cpu: true, tasks: (60, 60) },
    RowSpec { name: "redis_pool/cpu_w2", processes: 2, chunksize: 1, cpu: true, tasks: (120, 120) },
    RowSpec { name: "redis_pool/cpu_w4", processes: 4, chunksize: 1, cpu: true, tasks: (240, 240) },
];

fn redis_pool(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    if !RedisServer::available() {
        return Err(BenchError::new(format!("redis_pool needs redis-server: {}", multiproc_redis::INSTALL_HINT)));
    }
    let celery = celery_python()?;
    let server = RedisServer::start_in_memory()?;
    let plan = ctx.plan(Plan::new(1, 6.0, 3, 10_000, 400), Plan::new(1, 2.0, 2, 10_000, 300));
    let mut rows = Vec::new();
    for spec in ROWS {
        rows.push(measure_row(ctx, &celery, &server, spec, &plan)?);
    }
    Ok(rows)
}

fn measure_row(
    ctx: &Ctx,
    celery: &Python,
    server: &RedisServer,
    spec: &RowSpec,
    plan: &Plan,
) -> Result<Row, BenchError> {
    let prefix = spec.name.replace('/', "-");
    let _host = Host::start(server, &prefix, spec.processes)?;
    let pool = RedisPool::builder(&server.url()).prefix(&prefix).wait_timeout(Duration::from_secs(300)).connect()?;
    let n = spec.tasks.0;
    let mut ours = || -> Result<f64, BenchError> {
        let t = Instant::now();
        let call = pool.with_chunksize(spec.chunksize);
        let (got, want): (Vec<u64>, Vec<u64>) = if spec.cpu {
            (call.starmap(burn, (0..n as u64).map(|i| (i, CPU_US)))?, (0..n as u64).collect())
        } else {
            (call.map(tiny, 0..n as u64)?, (1..=n as u64).collect())
        };
        let took = t.elapsed();
        ensure(got == want, || format!("{}: results differ from the expected ones", spec.name))?;
        Ok(n as f64 / took.as_secs_f64())
    };
    let args: Vec<String> = vec![
        "--url".into(),
        server.url(),
        "--processes".into(),
        spec.processes.to_string(),
        "--tasks".into(),
        spec.tasks.1.to_string(),
        "--chunksize".into(),
        spec.chunksize.to_string(),
        "--kind".into(),
        if spec.cpu { "cpu" } else { "tiny" }.into(),
        "--cpu-us".into(),
        CPU_US.to_string(),
    ];
    let mut peer = celery.start("celery_pool.py", spec.name, &args, plan.budget * 10 + Duration::from_secs(300))?;
    let stats = ctx.measure(
        plan,
        &mut [(&format!("multiproc-redis {}", spec.name), &mut ours), (&format!("celery {}", spec.name), &mut peer)],
    )?;
    peer.finish()?;
    let [ours, theirs] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    Ok(Row::new(spec.name, Unit::PerSec, ours, theirs)
        .with_extra("peer", json!("celery"))
        .with_extra("peer_version", json!(celery_version(celery)))
        .with_extra(
            "api",
            json!("RedisPool::with_chunksize(c).map / starmap (Celery: delay + get, or chunks(…, c) for c > 1)"),
        )
        .with_extra(
            "params",
            json!({ "processes": spec.processes, "chunksize": spec.chunksize, "cpu_us_per_task": spec.cpu.then_some(CPU_US),
                    "tasks_per_sample": { "multiproc": spec.tasks.0, "celery": spec.tasks.1 }, "cpus": multiproc::cpu_count() }),
        ))
}

fn celery_version(python: &Python) -> String {
    Command::new(&python.command)
        .args(["-c", "import celery; print(celery.__version__)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
