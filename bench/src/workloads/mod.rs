//! The registry of workloads. One file per subsystem; each exports
//! [`Workload`] constants that are listed in [`ALL`].
//!
//! To add a workload: write `fn run(ctx: &Ctx) -> Result<Vec<Row>, BenchError>`
//! in the subsystem's file: build one [`Subject`] per figure (multiproc, the
//! floor, CPython via [`Ctx::python`]), measure them together with
//! [`Ctx::measure`], finish the children (checking what they report), and
//! return the rows. Give it a `pub const` [`Workload`] and add that constant
//! to [`ALL`]. The CPython side goes in `bench/python/<subsystem>.py`.

use std::time::Duration;

use crate::BenchError;
use crate::measure::{Plan, Stats, Subject, interleave};
use crate::python::{PyScript, Python};
use crate::report::Row;

pub mod http;
pub mod manager;
pub mod manager_large;
pub mod pipe;
pub mod pool;
pub mod process;
pub mod queue;
pub mod queue_large;
pub mod redis_pool;
pub mod serve;
pub mod sync;
pub mod tcp_echo;

/// Every workload, in the order they run and appear in the table.
pub const ALL: &[Workload] = &[
    process::SPAWN_JOIN,
    pipe::PIPE_RTT,
    pipe::PIPE_1MIB,
    pool::POOL_MAP_SMALL,
    pool::POOL_MAP_CHUNK1,
    pool::POOL_1MIB,
    pool::POOL_WORKER_LOST,
    queue::QUEUE_1TO1,
    queue::QUEUE_2TO2,
    queue_large::QUEUE_1MIB,
    queue_large::QUEUE_4MIB,
    sync::LOCK_HANDOFF,
    sync::VALUE_INCR,
    sync::LOCK_CREATE,
    serve::SERVE_PIPELINE,
    serve::SERVE_OVERHEAD,
    http::HTTP_INFER,
    http::HTTP_BATCHING,
    manager::MANAGER_DICT,
    manager::MANAGER_QUEUE_TCP,
    manager::MANAGER_UPDATE,
    manager_large::MANAGER_DICT_1MIB,
    redis_pool::REDIS_POOL,
];

/// A named benchmark producing one or more table rows.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The name given to `--only` (rows are named `name` or `name/variant`).
    pub name: &'static str,
    /// One line saying what it measures.
    pub about: &'static str,
    /// Measures multiproc, CPython and the floor; returns the rows.
    pub run: fn(&Ctx) -> Result<Vec<Row>, BenchError>,
}

/// What a workload gets from the harness.
#[derive(Debug)]
pub struct Ctx {
    /// `--quick`: shorter plans, for a run in well under two minutes.
    pub quick: bool,
    /// `--verify-all`: check every byte of every message, not only during
    /// warm-up (slower; for validating results, not for figures).
    pub verify_all: bool,
    /// The CPython interpreter.
    pub python: Python,
}

impl Ctx {
    /// The `full` plan, or the `quick` one under `--quick`.
    pub fn plan(&self, full: Plan, quick: Plan) -> Plan {
        if self.quick { quick } else { full }
    }

    /// How many leading batches a sink checks byte for byte: the warm-up
    /// batches, or all of them under `--verify-all`.
    pub fn full_check_batches(&self, plan: &Plan) -> u64 {
        if self.verify_all { 1 << 62 } else { plan.warmup as u64 }
    }

    /// Starts `bench/python/<script> <workload> <args…>` as a [`Subject`].
    /// Finish it with [`PyScript::finish`] after measuring, so its own
    /// checks count.
    ///
    /// # Errors
    ///
    /// The script could not start or failed during setup.
    pub fn python(&self, script: &str, workload: &str, args: &[&str], plan: &Plan) -> Result<PyScript, BenchError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.python.start(script, workload, &args, plan.budget * 10 + Duration::from_secs(120))
    }

    /// Measures the subjects interleaved (see [`interleave`]) and prints
    /// each one's figure as the run goes.
    ///
    /// # Errors
    ///
    /// A subject failed a check or an operation.
    pub fn measure(&self, plan: &Plan, subjects: &mut [(&str, &mut dyn Subject)]) -> Result<Vec<Stats>, BenchError> {
        let stats = interleave(plan, subjects)?;
        for ((name, _), s) in subjects.iter().zip(&stats) {
            progress(name, s);
        }
        Ok(stats)
    }
}

/// Prints one measured figure to stderr as the run goes.
pub fn progress(what: &str, stats: &Stats) {
    eprintln!(
        "  {what:<48} median {:>10}  (n={}, min {}, max {})",
        crate::report::fmt_figure(stats.median),
        stats.n,
        crate::report::fmt_figure(stats.min),
        crate::report::fmt_figure(stats.max)
    );
}

/// Finds workloads by name.
///
/// # Errors
///
/// A name that is not in [`ALL`].
pub fn select(names: &[String]) -> Result<Vec<Workload>, BenchError> {
    if names.is_empty() {
        return Ok(ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            ALL.iter().find(|w| w.name == n).copied().ok_or_else(|| {
                let known: Vec<&str> = ALL.iter().map(|w| w.name).collect();
                BenchError::new(format!("unknown workload {n:?}; known: {}", known.join(", ")))
            })
        })
        .collect()
}
