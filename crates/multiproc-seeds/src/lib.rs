//! The seed programs: the Python `multiprocessing` examples from the blog
//! posts this project started from (seeds 000 to 004, not part of this
//! repository), rebuilt with multiproc.
//!
//! Each example is a library function that runs the program and returns a
//! [`Report`]: the lines the program prints, and the facts it showed (pids,
//! exit codes, values) for tests to check. A thin `examples/NAME.rs` runs each
//! one (`cargo run -p multiproc-seeds --example five_children`), and
//! `multiproc tour` runs them all from [`EXAMPLES`].
//!
//! ```
//! let report = multiproc_seeds::seed_003::exit_codes().unwrap();
//! assert_eq!(report.outcome.iter().map(|(_, code)| *code).collect::<Vec<_>>(), [Some(1), Some(0), Some(0), Some(1), Some(-15)]);
//! ```

#![warn(missing_docs)]

pub mod seed_000;
pub mod seed_000_predict;
pub mod seed_001;
pub mod seed_001_pipe_pools;
pub mod seed_001_pool;
pub mod seed_002_distributed;
pub mod seed_003;
pub mod seed_003_logging;
pub mod seed_003_pool;
pub mod seed_003_sync;
pub mod seed_004_pipeline;
pub mod seed_004_pool;
pub mod seed_globals;
pub mod seed_manager;
pub mod seed_queue;

use std::time::Duration;

use multiproc::manager::ManagerError;
use multiproc::{ConnectionError, PoolError, ProcessError};
use multiproc_redis::RedisPoolError;

/// What an example printed, and what it showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Report<T> {
    /// The lines the program prints, in order.
    pub lines: Vec<String>,
    /// The facts the program showed, for tests to check.
    pub outcome: T,
}

impl<T> Report<T> {
    /// The printed lines, dropping the outcome.
    pub fn into_lines(self) -> Vec<String> {
        self.lines
    }
}

/// Why an example could not run to the end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Starting or joining a process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A pipe failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A pool call failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A manager call failed.
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// A distributed pool call failed.
    #[error(transparent)]
    Redis(#[from] RedisPoolError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The program saw something it did not expect.
    #[error("unexpected: {0}")]
    Unexpected(String),
}

/// How long an example waits for any one child before giving up: far longer
/// than any of them takes, so that a broken child is an error, not a hang.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One runnable example.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    /// Name of the example (`cargo run --example NAME`).
    pub name: &'static str,
    /// The seed file it comes from (`000`, `001`, …).
    pub seed: &'static str,
    /// What it shows, in a few words.
    pub shows: &'static str,
    /// Runs it and returns the lines it prints.
    pub run: fn() -> Result<Vec<String>, Error>,
}

/// Every example, in tour order. Add one line per new example.
#[rustfmt::skip]
pub const EXAMPLES: &[Example] = &[
    Example { name: "five_children", seed: "000", shows: "five children print their pid; the parent joins them", run: || Ok(seed_000::five_children()?.lines) },
    Example { name: "process_kinds", seed: "001", shows: "a process running a function, and a process type (Run)", run: || Ok(seed_001::process_kinds()?.lines) },
    Example { name: "pipe_ping_pong", seed: "001", shows: "a duplex Pipe between parent and child", run: || Ok(seed_001::pipe_ping_pong()?.lines) },
    Example { name: "named_processes", seed: "003", shows: "process names, given and default", run: || Ok(seed_003::named_processes()?.lines) },
    Example { name: "daemon_join_timeout", seed: "003", shows: "daemon vs non-daemon, join with a timeout", run: || Ok(seed_003::daemon_join_timeout()?.lines) },
    Example { name: "terminate_join", seed: "003", shows: "terminate, then join to collect the exit status", run: || Ok(seed_003::terminate_join()?.lines) },
    Example { name: "exit_codes", seed: "003", shows: "exit codes of exit(1), a return, a returned value, a panic, a terminated process", run: || Ok(seed_003::exit_codes()?.lines) },
    Example { name: "logging", seed: "003", shows: "log_to_stderr: a child's life in records with its name; the level carries over", run: || Ok(seed_003_logging::logging()?.lines) },
    Example { name: "event_wait", seed: "003", shows: "an Event set by the parent, waited with and without a timeout", run: || Ok(seed_003_sync::event_wait()?.lines) },
    Example { name: "globals_not_shared", seed: "003", shows: "a child's changes to a global list and ten children's count += 1 stay in each child", run: || Ok(seed_globals::globals_not_shared()?.lines) },
    Example { name: "shared_value_array", seed: "003", shows: "a shared Value and Array written by a child", run: || Ok(seed_003_sync::shared_value_array()?.lines) },
    Example { name: "queue_producers", seed: "001", shows: "three producer processes and the parent on a Queue", run: || Ok(seed_queue::queue_producers()?.lines) },
    Example { name: "queue_writers_readers", seed: "002", shows: "two writers, two readers on a Queue; readers terminated at the end", run: || Ok(seed_queue::queue_writers_readers()?.lines) },
    Example { name: "queue_object", seed: "003", shows: "an object sent through a Queue; its method runs in the child that got it", run: || Ok(seed_queue::queue_object()?.lines) },
    Example { name: "joinable_queue", seed: "003", shows: "a JoinableQueue with consumers, task_done and a poison pill each", run: || Ok(seed_queue::joinable_queue()?.lines) },
    Example { name: "queue_two_files", seed: "004", shows: "two processes write records forward and reversed, linked by a Queue and a sentinel", run: || Ok(seed_queue::queue_two_files()?.lines) },
    Example { name: "pool_api", seed: "001", shows: "Pool: apply_async x10 with wait/ready/successful/get, apply, map, map_async", run: || Ok(seed_001_pool::pool_api()?.lines) },
    Example { name: "thumbnails", seed: "001", shows: "thumbnails of a folder of PNGs with Pool.map and the image crate", run: || Ok(seed_001_pool::thumbnails()?.lines) },
    Example { name: "pipe_pools", seed: "001", shows: "producers and consumers in two Pools over one Pipe, stopped by a None poison pill", run: || Ok(seed_001_pipe_pools::pipe_pools()?.lines) },
    Example { name: "pool_shared_queue", seed: "002", shows: "pool workers sharing a plain Queue (Python needs a Manager)", run: || Ok(seed_queue::pool_shared_queue()?.lines) },
    Example { name: "pool_worker_names", seed: "003", shows: "a Pool of 4: each result names the worker that made it, got in submission order", run: || Ok(seed_003_pool::pool_worker_names()?.lines) },
    Example { name: "pool_callbacks", seed: "003", shows: "apply_async with callback and error_callback, exactly one per task", run: || Ok(seed_003_pool::pool_callbacks()?.lines) },
    Example { name: "imap_progress", seed: "004", shows: "imap over a folder of files with a progress bar, results in one file", run: || Ok(seed_004_pool::imap_progress()?.lines) },
    Example { name: "manager_dict_list", seed: "001", shows: "a Manager dict and list mutated by ten processes; exact counts with update", run: || Ok(seed_manager::manager_dict_list()?.lines) },
    Example { name: "manager_written_by_child", seed: "003", shows: "a Manager dict and list written by a child", run: || Ok(seed_manager::manager_written_by_child()?.lines) },
    Example { name: "distributed_master_worker", seed: "002", shows: "a master serves task and result queues over TCP with an auth key; two workers connect", run: || Ok(seed_manager::distributed_master_worker()?.lines) },
    Example { name: "redis_master_worker", seed: "002", shows: "seed 002 on Redis Streams: master and two worker hosts, one SIGKILLed, every result exactly once", run: || Ok(seed_002_distributed::redis_master_worker()?.lines) },
    Example { name: "inference_pipeline", seed: "004", shows: "seed 004's async inference: preprocessing pool of 2, batches of 128 or 1 s, a model process, results back", run: || Ok(seed_004_pipeline::inference_pipeline()?.lines) },
    Example { name: "predict_server", seed: "000", shows: "PredictServer on multiproc-serve: lazy start, a killed model process restarted, version switch, status", run: || Ok(seed_000_predict::predict_server()?.lines) },
];

/// The code in the workspace README, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The example called `name`.
pub fn example(name: &str) -> Option<&'static Example> {
    EXAMPLES.iter().find(|e| e.name == name)
}

/// `main` of `examples/NAME.rs`: runs the example, prints its lines, and
/// exits with 1 if it failed.
pub fn run_example_main(name: &str) -> std::process::ExitCode {
    let Some(example) = example(name) else {
        eprintln!("no example called {name}");
        return std::process::ExitCode::FAILURE;
    };
    match (example.run)() {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name} failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
