//! Lock and shared-value workloads: `lock_handoff` (a lock passed back and
//! forth between two processes) and `value_incr` (two processes incrementing
//! a locked shared counter).
//!
//! CPython side: `bench/python/sync.py`.

use std::time::Instant;

use multiproc::{Connection, Lock, Pipe, Process, RawValue, Value};
use serde_json::json;

use super::{Ctx, Workload};
use crate::measure::{Plan, Stats, Subject, micros};
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// A lock handed from one process to the other and back.
pub const LOCK_HANDOFF: Workload = Workload {
    name: "lock_handoff",
    about: "µs per lock pass between two processes (ping-pong ownership of two Locks); /one_cpu: both on CPU 0",
    run: lock_handoff,
};

/// Two processes incrementing one locked shared counter.
pub const VALUE_INCR: Workload = Workload {
    name: "value_incr",
    about: "millions of increments per second of a locked shared Value, by two processes",
    run: value_incr,
};

/// Creating (and dropping) a Lock.
pub const LOCK_CREATE: Workload = Workload {
    name: "lock_create",
    about: "µs to create and drop a Lock (each is a small shared-memory segment)",
    run: lock_create,
};

/// Locks created per sample.
const CREATE_BATCH: usize = 200;

/// Round trips (two passes each) per sample.
const HANDOFF_BATCH: u64 = 500;
/// Increments per child per sample.
const INCR_BATCH: u64 = 100_000;

/// The CPU of the `lock_handoff/one_cpu` row.
const ONE_CPU: usize = 0;

/// Two rows: where the scheduler puts the two processes (on this 2-CPU VM,
/// usually two CPUs), and both on one CPU.
fn lock_handoff(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(2, 6.0, 20, 1_000_000, 30), Plan::new(1, 1.5, 10, 1_000_000, 30));
    let placed = handoff_row(ctx, &plan, None)?;
    let one_cpu = handoff_row(ctx, &plan, Some(ONE_CPU))?;
    Ok(vec![placed, one_cpu])
}

fn handoff_row(ctx: &Ctx, plan: &Plan, cpu: Option<usize>) -> Result<Row, BenchError> {
    let batch = HANDOFF_BATCH.to_string();
    let cpu_arg = cpu.map(|c| c.to_string());
    let mut args = vec!["--batch", batch.as_str()];
    if let Some(c) = &cpu_arg {
        args.extend(["--cpu", c.as_str()]);
    }
    let mut ours = Handoff::start(cpu)?;
    let mut py = ctx.python("sync.py", "lock_handoff", &args, plan)?;
    let name = if cpu.is_some() { "lock_handoff/one_cpu" } else { "lock_handoff" };
    let stats =
        ctx.measure(plan, &mut [(&format!("multiproc {name}"), &mut ours), (&format!("cpython {name}"), &mut py)])?;
    ours.finish()?;
    py.finish()?;
    let [ours, py] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    Ok(Row::new(name, Unit::Micros, ours, py)
        .with_extra("api", json!("Lock acquire/release (CPython: multiprocessing.Lock)"))
        .with_extra("params", json!({ "passes_per_sample": 2 * HANDOFF_BATCH, "cpu": cpu })))
}

/// The calling thread's CPU mask.
fn affinity() -> Result<libc::cpu_set_t, BenchError> {
    // SAFETY: cpu_set_t is plain data (zeroed is the empty set), filled in by
    // sched_getaffinity for the calling thread (0).
    let (rc, set) = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), set)
    };
    ensure(rc == 0, || format!("sched_getaffinity failed: {}", std::io::Error::last_os_error()))?;
    Ok(set)
}

/// Sets the calling thread's CPU mask.
fn set_affinity(set: &libc::cpu_set_t) -> Result<(), BenchError> {
    // SAFETY: reads `set`, a valid cpu_set_t, for the calling thread (0).
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    ensure(rc == 0, || format!("sched_setaffinity failed: {}", std::io::Error::last_os_error()))
}

/// The mask of CPU `cpu` alone.
fn only(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: zeroed is the empty set; CPU_SET checks the index.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// The child of `lock_handoff`: takes `ping` (which the parent releases),
/// hands over `pong` (which the parent takes), until `stop` is set. Returns
/// how many times it took `ping`.
fn handoff_child(ping: Lock, pong: Lock, stop: RawValue<u8>, cpu: Option<usize>) -> u64 {
    if let Some(c) = cpu
        && set_affinity(&only(c)).is_err()
    {
        return u64::MAX; // fails the check
    }
    let mut taken = 0;
    loop {
        match ping.acquire() {
            Ok(g) => g.leak(),
            Err(_) => return u64::MAX, // a dead owner: cannot happen here; fails the check
        }
        if stop.get() != 0 {
            return taken;
        }
        taken += 1;
        if pong.release().is_err() {
            return u64::MAX;
        }
    }
}

/// The parent's side of `lock_handoff`.
struct Handoff {
    ping: Lock,
    pong: Lock,
    stop: RawValue<u8>,
    child: Process<u64>,
    round_trips: u64,
    /// The parent's CPU mask while it samples, and its own (the child pins
    /// itself).
    pinned: Option<(libc::cpu_set_t, libc::cpu_set_t)>,
}

impl Handoff {
    fn start(cpu: Option<usize>) -> Result<Handoff, BenchError> {
        let (ping, pong) = (Lock::new()?, Lock::new()?);
        let stop = RawValue::new(0u8)?;
        // The parent holds both to begin with: each round trip it releases
        // `ping` (pass 1: to the child) and takes `pong` (pass 2: back).
        ping.acquire().map_err(|_| BenchError::new("fresh lock reported a dead owner"))?.leak();
        pong.acquire().map_err(|_| BenchError::new("fresh lock reported a dead owner"))?.leak();
        let child = Process::spawn(handoff_child, (ping.clone(), pong.clone(), stop.clone(), cpu))?;
        let pinned = match cpu {
            Some(c) => Some((only(c), affinity()?)),
            None => None,
        };
        Ok(Handoff { ping, pong, stop, child, round_trips: 0, pinned })
    }

    fn finish(mut self) -> Result<(), BenchError> {
        self.stop.set(1);
        self.ping.release()?;
        let taken = self.child.join()?;
        ensure(taken == self.round_trips, || {
            format!("the child took the lock {taken} times in {} round trips", self.round_trips)
        })
    }
}

impl Subject for Handoff {
    fn sample(&mut self) -> Result<f64, BenchError> {
        if let Some((during, _)) = &self.pinned {
            set_affinity(during)?;
        }
        let t = Instant::now();
        for _ in 0..HANDOFF_BATCH {
            self.ping.release()?;
            match self.pong.acquire() {
                Ok(g) => g.leak(),
                Err(_) => return Err(BenchError::new("the child died holding the lock")),
            }
        }
        let elapsed = t.elapsed();
        if let Some((_, after)) = &self.pinned {
            set_affinity(after)?;
        }
        self.round_trips += HANDOFF_BATCH;
        Ok(micros(elapsed) / (2 * HANDOFF_BATCH) as f64)
    }
}

fn lock_create(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(2, 4.0, 20, 1_000_000, 30), Plan::new(1, 1.0, 10, 1_000_000, 30));
    let batch = CREATE_BATCH.to_string();
    let mut created = 0u64;
    let mut ours = || -> Result<f64, BenchError> {
        let t = Instant::now();
        let locks: Vec<Lock> = (0..CREATE_BATCH).map(|_| Lock::new()).collect::<Result<_, _>>()?;
        let usable = locks.iter().all(|l| l.try_acquire().is_ok());
        drop(locks);
        let elapsed = t.elapsed();
        ensure(usable, || "a new lock was not free".into())?;
        created += CREATE_BATCH as u64;
        Ok(micros(elapsed) / CREATE_BATCH as f64)
    };
    let mut py = ctx.python("sync.py", "lock_create", &["--batch", &batch], &plan)?;
    let stats = ctx.measure(&plan, &mut [("multiproc lock_create", &mut ours), ("cpython lock_create", &mut py)])?;
    py.finish()?;
    let [ours, py] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    Ok(vec![
        Row::new("lock_create", Unit::Micros, ours, py)
            .with_extra(
                "api",
                json!("Lock::new() + try_acquire + drop (CPython: multiprocessing.Lock() + acquire(False))"),
            )
            .with_extra("params", json!({ "locks_per_sample": CREATE_BATCH })),
    ])
}

fn value_incr(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(2, 6.0, 15, 1_000_000, 50), Plan::new(1, 1.5, 8, 1_000_000, 50));
    let batch = INCR_BATCH.to_string();
    let mut ours = Incrementers::start()?;
    let mut py = ctx.python("sync.py", "value_incr", &["--batch", &batch], &plan)?;
    let stats = ctx.measure(&plan, &mut [("multiproc value_incr", &mut ours), ("cpython value_incr", &mut py)])?;
    ours.finish()?;
    py.finish()?;
    let [ours, py] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    Ok(vec![
        Row::new("value_incr", Unit::MillionsPerSec, ours, py)
            .with_extra("api", json!("*value.lock() += 1 (CPython: with v.get_lock(): v.value += 1)"))
            .with_extra("params", json!({ "processes": 2, "increments_per_process_per_sample": INCR_BATCH })),
    ])
}

/// The child of `value_incr`: on each request, increments the counter `n`
/// times under its lock, then answers.
fn incr_child(conn: Connection<u64>, counter: Value<u64>) -> u64 {
    let mut done = 0;
    while let Ok(n) = conn.recv() {
        for _ in 0..n {
            match counter.lock() {
                Ok(mut g) => *g += 1,
                Err(_) => return u64::MAX,
            }
        }
        done += n;
        if conn.send(&n).is_err() {
            break;
        }
    }
    done
}

/// Two incrementing children and the counter they share.
struct Incrementers {
    counter: Value<u64>,
    ends: Vec<(Connection<u64>, Process<u64>)>,
    expected: u64,
}

impl Incrementers {
    fn start() -> Result<Incrementers, BenchError> {
        let counter = Value::new(0u64)?;
        let mut ends = Vec::new();
        for _ in 0..2 {
            let (ours, theirs) = Pipe::<u64>::duplex()?;
            ends.push((ours, Process::spawn(incr_child, (theirs, counter.clone()))?));
        }
        Ok(Incrementers { counter, ends, expected: 0 })
    }

    fn finish(self) -> Result<(), BenchError> {
        let per_child = self.expected / 2;
        for (conn, mut child) in self.ends {
            drop(conn);
            let done = child.join()?;
            ensure(done == per_child, || format!("a child made {done} increments, expected {per_child}"))?;
        }
        Ok(())
    }
}

impl Subject for Incrementers {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let t = Instant::now();
        for (conn, _) in &self.ends {
            conn.send(&INCR_BATCH)?;
        }
        for (conn, _) in &self.ends {
            let n = conn.recv()?;
            ensure(n == INCR_BATCH, || format!("a child answered {n}"))?;
        }
        let elapsed = t.elapsed();
        self.expected += 2 * INCR_BATCH;
        let got = self.counter.get();
        ensure(got == self.expected, || format!("counter is {got}, expected {} (lost updates)", self.expected))?;
        Ok((2 * INCR_BATCH) as f64 / elapsed.as_secs_f64() / 1e6)
    }
}
