//! Pool workloads: `pool_map_small` (map of `x * x` over 200,000 `u64`,
//! default chunks), `pool_map_chunk1` (the same with one task per chunk) and
//! `pool_1mib` (1 MiB byte buffers to the workers and back, each subject in
//! a fresh process of its own), each with two workers, side by side with
//! CPython's `Pool(2)`.
//!
//! CPython side: `bench/python/pool.py`.

use std::hint::black_box;
use std::time::Instant;

use std::time::Duration;

use multiproc::{Connection, Pipe, Pool, PoolError, Process, Queue, TaskError};
use serde_bytes::ByteBuf;
use serde_json::json;

use super::{Ctx, Workload};
use crate::measure::{Plan, Stats, gb_per_s, micros};
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// `map(square, 0..200_000)` with Python's default chunk size.
pub const POOL_MAP_SMALL: Workload = Workload {
    name: "pool_map_small",
    about: "million items/s of Pool(2).map(x * x) over 200,000 u64, default chunks",
    run: pool_map_small,
};

/// The same with `chunksize = 1`: one task per message.
pub const POOL_MAP_CHUNK1: Workload = Workload {
    name: "pool_map_chunk1",
    about: "million tasks/s of Pool(2).map(x * x) with chunksize=1 (50,000 tasks)",
    run: pool_map_chunk1,
};

/// 1 MiB buffers to the workers and back through `imap`.
pub const POOL_1MIB: Workload = Workload {
    name: "pool_1mib",
    about: "GB/s of 1 MiB byte buffers sent to Pool(2) workers and returned (imap, chunksize=1)",
    run: pool_1mib,
};

/// The time from SIGKILL of a busy worker to the error on its task.
pub const POOL_WORKER_LOST: Workload = Workload {
    name: "pool_worker_lost",
    about: "µs from SIGKILL of the Pool(2) worker running a task to that task's WorkerLost error \
            (peer: concurrent.futures' BrokenProcessPool)",
    run: pool_worker_lost,
};

/// Items of `pool_map_small`.
const SMALL_ITEMS: usize = 200_000;
/// Tasks of `pool_map_chunk1` per sample (CPython needs seconds for 200,000).
const CHUNK1_ITEMS: usize = 50_000;
/// 1 MiB buffers per `pool_1mib` sample.
const MIB_BUFFERS: usize = 256;
const MIB: usize = 1 << 20;
const WORKERS: usize = 2;

const FLOOR_LOOP: &str = "the same squares in a loop in this process (no pool)";
const FLOOR_MEMCPY: &str = "memcpy of 1 MiB, one core";

fn square(x: u64) -> u64 {
    x * x
}

fn identity(b: ByteBuf) -> ByteBuf {
    b
}

/// Samples `pool.map(square, 0..n)` (million items per second), checking
/// every result.
fn map_subject(pool: &Pool, n: usize, chunksize: Option<usize>) -> impl FnMut() -> Result<f64, BenchError> + '_ {
    move || {
        let t = Instant::now();
        let got = match chunksize {
            Some(c) => pool.with_chunksize(c).map(square, 0..n as u64)?,
            None => pool.map(square, 0..n as u64)?,
        };
        let took = t.elapsed();
        ensure(got.len() == n, || format!("map returned {} results for {n} items", got.len()))?;
        let bad = got.iter().enumerate().find(|&(i, v)| *v != (i * i) as u64);
        ensure(bad.is_none(), || format!("map result {bad:?} differs from i * i"))?;
        Ok(n as f64 / micros(took))
    }
}

/// The floor: the same squares in a plain loop in this process.
fn loop_subject(n: usize) -> impl FnMut() -> Result<f64, BenchError> {
    move || {
        let t = Instant::now();
        let got: Vec<u64> = black_box(0..n as u64).map(square).collect();
        let took = t.elapsed();
        ensure(got[n - 1] == ((n - 1) * (n - 1)) as u64, || "loop result differs".into())?;
        Ok(n as f64 / micros(took))
    }
}

fn map_rows(ctx: &Ctx, name: &str, n: usize, chunksize: Option<usize>, plan: Plan) -> Result<Vec<Row>, BenchError> {
    let pool = Pool::new(WORKERS)?;
    let items = n.to_string();
    let mut args = vec!["--items", items.as_str()];
    if chunksize.is_some() {
        args.extend(["--chunksize", "1"]);
    }
    let mut py = ctx.python("pool.py", "pool_map", &args, &plan)?;
    let mut ours = map_subject(&pool, n, chunksize);
    let mut floor = loop_subject(n);
    let stats = ctx.measure(
        &plan,
        &mut [
            ("floor: squares in a loop, one process", &mut floor),
            (&format!("multiproc {name}"), &mut ours),
            (&format!("cpython {name}"), &mut py),
        ],
    )?;
    drop(ours);
    py.finish()?;
    pool.close();
    pool.join()?;
    let [floor, ours, py] = <[Stats; 3]>::try_from(stats).expect("three subjects");
    Ok(vec![
        Row::new(name, Unit::MillionsPerSec, ours, py)
            .with_floor(FLOOR_LOOP, floor)
            .with_extra("api", json!(if chunksize.is_some() { "with_chunksize(1).map" } else { "map" }))
            .with_extra("params", json!({ "items": n, "workers": WORKERS, "chunksize": chunksize })),
    ])
}

fn pool_map_small(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(3, 6.0, 15, 1_000_000, 40), Plan::new(2, 1.5, 5, 1_000_000, 40));
    map_rows(ctx, "pool_map_small", SMALL_ITEMS, None, plan)
}

fn pool_map_chunk1(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(1, 8.0, 4, 1_000_000, 40), Plan::new(1, 2.0, 2, 1_000_000, 40));
    map_rows(ctx, "pool_map_chunk1", CHUNK1_ITEMS, Some(1), plan)
}

/// Byte `i` of every buffer (a prime period, so a shifted copy shows).
fn pattern() -> Vec<u8> {
    (0..MIB).map(|i| (i % 251) as u8).collect()
}

fn stamp_of(buf: &[u8]) -> (u64, u64) {
    let head = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    let tail = u64::from_le_bytes(buf[MIB - 8..].try_into().expect("8 bytes"));
    (head, tail)
}

/// Sends [`MIB_BUFFERS`] stamped buffers through `imap` and checks each one
/// that comes back; the figure counts the bytes sent one way.
struct Roundtrip<'p> {
    pool: &'p Pool,
    pattern: Vec<u8>,
    seq: u64,
    samples: u64,
    full_checks: u64,
}

impl Roundtrip<'_> {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let seq0 = self.seq;
        let bufs: Vec<ByteBuf> = (0..MIB_BUFFERS as u64)
            .map(|k| {
                let mut b = self.pattern.clone();
                b[..8].copy_from_slice(&(seq0 + k).to_le_bytes());
                b[MIB - 8..].copy_from_slice(&(seq0 + k).to_le_bytes());
                ByteBuf::from(b)
            })
            .collect();
        let full = self.samples < self.full_checks;
        let t = Instant::now();
        let mut n = 0u64;
        for back in self.pool.with_chunksize(1).imap(identity, bufs) {
            let back = back?;
            let seq = seq0 + n;
            ensure(back.len() == MIB && stamp_of(&back) == (seq, seq), || format!("buffer {seq} came back wrong"))?;
            let body = 8..MIB - 8;
            let ok = if full {
                back[body.clone()] == self.pattern[body]
            } else {
                [8, 4099, MIB / 2 + 7, MIB - 9].iter().all(|&i| back[i] == self.pattern[i])
            };
            ensure(ok, || format!("buffer {seq} content differs from the pattern"))?;
            n += 1;
        }
        let took = t.elapsed();
        ensure(n == MIB_BUFFERS as u64, || format!("{n} buffers came back, {MIB_BUFFERS} sent"))?;
        self.seq += n;
        self.samples += 1;
        Ok(gb_per_s(MIB_BUFFERS * MIB, took))
    }
}

/// Between the bench and [`fresh_process_child`].
#[derive(serde::Serialize, serde::Deserialize)]
enum Msg {
    /// Take a sample.
    Sample,
    /// Finish.
    Stop,
    /// A sample's figure, or what went wrong.
    Figure(Result<f64, String>),
}

/// How the process of a `pool_1mib` subject treats its allocator.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Allocator {
    /// As the library leaves it: the pool tunes it on its first large input.
    Defaults,
    /// The program called [`multiproc::keep_freed_memory`] first.
    KeepFreedMemory,
    /// The pool was told not to touch it (`PoolBuilder::keep_freed_memory(false)`).
    Untouched,
}

/// `pool_1mib` in a fresh process of its own, so that allocator settings
/// neither come from nor reach the other workloads: one sample per request
/// on `link`.
fn fresh_process_child(link: Connection<Msg>, full_checks: u64, allocator: Allocator) {
    if let Allocator::KeepFreedMemory = allocator {
        multiproc::keep_freed_memory();
    }
    let tune = !matches!(allocator, Allocator::Untouched);
    let pool = Pool::builder().processes(WORKERS).keep_freed_memory(tune).build();
    let mut subject =
        pool.as_ref().ok().map(|pool| Roundtrip { pool, pattern: pattern(), seq: 0, samples: 0, full_checks });
    while let Ok(Msg::Sample) = link.recv() {
        let figure = match (&mut subject, &pool) {
            (Some(s), _) => s.sample().map_err(|e| e.to_string()),
            (None, Err(e)) => Err(format!("no pool: {e}")),
            (None, Ok(_)) => unreachable!("a pool makes a subject"),
        };
        if link.send(&Msg::Figure(figure)).is_err() {
            break;
        }
    }
}

/// The parent's side of [`fresh_process_child`].
struct FreshProcess {
    link: Connection<Msg>,
    child: Process<()>,
}

impl FreshProcess {
    fn start(full_checks: u64, allocator: Allocator) -> Result<FreshProcess, BenchError> {
        let (ours, theirs) = Pipe::<Msg>::duplex()?;
        let child = Process::spawn(fresh_process_child, (theirs, full_checks, allocator))?;
        Ok(FreshProcess { link: ours, child })
    }

    fn finish(mut self) -> Result<(), BenchError> {
        self.link.send(&Msg::Stop)?;
        self.child.join_timeout(Duration::from_secs(60))?;
        Ok(())
    }
}

impl crate::measure::Subject for FreshProcess {
    fn sample(&mut self) -> Result<f64, BenchError> {
        self.link.send(&Msg::Sample)?;
        match self.link.recv_timeout(Duration::from_secs(120))? {
            Msg::Figure(figure) => figure.map_err(BenchError::new),
            _ => Err(BenchError::new("the pool_1mib child answered out of turn")),
        }
    }
}

fn memcpy_rate() -> impl FnMut() -> Result<f64, BenchError> {
    let src = pattern();
    let mut dst = vec![0u8; MIB];
    move || {
        let t = Instant::now();
        for _ in 0..64 {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        }
        Ok(gb_per_s(64 * MIB, t.elapsed()))
    }
}

fn pool_1mib(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(2, 8.0, 5, 1_000_000, 40), Plan::new(1, 2.0, 2, 1_000_000, 40));
    let full_checks = ctx.full_check_batches(&plan);
    let mut ours = FreshProcess::start(full_checks, Allocator::Defaults)?;
    let mut floor = memcpy_rate();
    let buffers = MIB_BUFFERS.to_string();
    let full = full_checks.to_string();
    let args = ["--buffers", buffers.as_str(), "--full-check-batches", full.as_str()];
    let mut py = ctx.python("pool.py", "pool_1mib", &args, &plan)?;
    let mut kept = FreshProcess::start(full_checks, Allocator::KeepFreedMemory)?;
    let mut untouched = FreshProcess::start(full_checks, Allocator::Untouched)?;
    let stats = ctx.measure(
        &plan,
        &mut [
            ("floor: memcpy 1 MiB", &mut floor),
            ("multiproc pool_1mib imap(identity)", &mut ours),
            ("multiproc pool_1mib, keep_freed_memory()", &mut kept),
            ("multiproc pool_1mib, allocator untouched", &mut untouched),
            ("cpython pool_1mib imap(identity)", &mut py),
        ],
    )?;
    py.finish()?;
    ours.finish()?;
    kept.finish()?;
    untouched.finish()?;
    let [floor, ours, kept, untouched, py] = <[Stats; 5]>::try_from(stats).expect("five subjects");
    let params = json!({ "buffer_bytes": MIB, "buffers_per_sample": MIB_BUFFERS, "workers": WORKERS,
                         "counted": "bytes sent to the workers; each buffer also comes back" });
    Ok(vec![
        Row::new("pool_1mib", Unit::GigabytesPerSec, ours, py.clone())
            .with_floor(FLOOR_MEMCPY, floor.clone())
            .with_extra("api", json!("with_chunksize(1).imap(identity, Vec<ByteBuf>), in a fresh process"))
            .with_extra("params", params.clone()),
        Row::new("pool_1mib/allocator_untouched", Unit::GigabytesPerSec, untouched, py.clone())
            .with_floor(FLOOR_MEMCPY, floor.clone())
            .with_extra("api", json!("the same, with PoolBuilder::keep_freed_memory(false): glibc's defaults"))
            .with_extra("params", params.clone()),
        Row::new("pool_1mib/keep_freed_memory", Unit::GigabytesPerSec, kept, py)
            .with_floor(FLOOR_MEMCPY, floor)
            .with_extra("api", json!("the same, in a process that called multiproc::keep_freed_memory()"))
            .with_extra("params", params),
    ])
}

/// A task that says which worker runs it, then runs until killed.
fn report_and_sleep(q: Queue<i32>) {
    let _ = q.put(std::process::id() as i32);
    std::thread::sleep(Duration::from_secs(60));
}

/// One sample of `pool_worker_lost`: a task tells its worker's pid, the
/// worker is killed, and the time until the task fails with `WorkerLost` is
/// the figure (µs). The pool replaces the worker, so it serves every sample.
fn worker_lost_sample(pool: &Pool, q: &Queue<i32>) -> Result<f64, BenchError> {
    let mut task = pool.apply_async(report_and_sleep, (q.clone(),));
    let pid = q.get_timeout(Duration::from_secs(60)).map_err(|e| BenchError::new(format!("no pid: {e}")))?;
    let t = Instant::now();
    // SAFETY: kill has no memory-safety preconditions; `pid` is a live worker
    // of our pool (it just told us so and sleeps for a minute).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let outcome = task.get_timeout(Duration::from_secs(60));
    let took = t.elapsed();
    match outcome {
        Err(PoolError::Task { error: TaskError::WorkerLost { signal: Some(9), .. }, .. }) => Ok(micros(took)),
        other => Err(BenchError::new(format!("expected WorkerLost after SIGKILL, got {other:?}"))),
    }
}

fn pool_worker_lost(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(1, 8.0, 5, 200, 1), Plan::new(1, 2.0, 3, 50, 1));
    let pool = Pool::new(WORKERS)?;
    let q = Queue::new()?;
    let mut ours = || worker_lost_sample(&pool, &q);
    let mut py = ctx.python("pool.py", "pool_worker_lost", &[], &plan)?;
    let stats =
        ctx.measure(&plan, &mut [("multiproc pool_worker_lost", &mut ours), ("python ProcessPoolExecutor", &mut py)])?;
    py.finish()?;
    pool.close();
    pool.join_timeout(Duration::from_secs(60))?;
    let [ours, py] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    Ok(vec![
        Row::new("pool_worker_lost", Unit::Micros, ours, py)
            .with_extra("peer", json!("concurrent.futures.ProcessPoolExecutor (BrokenProcessPool)"))
            .with_extra(
                "api",
                json!("apply_async, SIGKILL the worker running it, get_timeout -> TaskError::WorkerLost"),
            )
            .with_extra("params", json!({ "workers": WORKERS, "promise": "within 100 ms" })),
    ])
}
