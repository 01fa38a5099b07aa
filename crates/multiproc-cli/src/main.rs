//! The `multiproc` command.
//!
//! `multiproc tour` runs every seed example (see the `multiproc-seeds` crate)
//! and prints what each one shows; `multiproc serve` serves models over the
//! Open Inference Protocol; `multiproc infer` asks such a server;
//! `multiproc worker` runs a distributed pool's tasks from Redis.

mod serve;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use multiproc_seeds::{EXAMPLES, Example};

// `about` with no value: the help's first line is the package description.
#[derive(Debug, Parser)]
#[command(name = "multiproc", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the seed examples and print what each one shows.
    Tour {
        /// Run only these examples, in the tour's order (default: all of them).
        names: Vec<String>,
        /// List the examples instead of running them.
        #[arg(long)]
        list: bool,
    },
    /// Serve a model repository over HTTP (the Open Inference Protocol / KServe v2, Triton's binary tensors).
    Serve(serve::ServeArgs),
    /// Run one inference on a `multiproc serve` (or any Open Inference Protocol) server.
    Infer(serve::InferArgs),
    /// Serve a distributed pool's queue on Redis: run its tasks on this host.
    ///
    /// Tasks run in a local pool of worker processes; a task that crashes its
    /// process fails alone. A task names its function by name and build, so
    /// this command runs only tasks sent from this same build of `multiproc`
    /// and refuses others: to run your own program's functions, start your
    /// program as the worker (`multiproc_redis::Worker`). The key that signs tasks is read
    /// from MULTIPROC_REDIS_KEY if set. SIGTERM or SIGINT stops it once the
    /// tasks it holds are done and their results written, waiting at most
    /// --drain-timeout (30 s): a task still running then is killed and goes
    /// back to the queue for another host (which counts as one of its
    /// deliveries).
    Worker {
        /// The Redis server, e.g. redis://127.0.0.1:6379/0.
        #[arg(long, value_name = "URL")]
        redis: String,
        /// Worker processes (default: the CPU count).
        #[arg(long, value_name = "N")]
        processes: Option<usize>,
        /// The queue to serve.
        #[arg(long, value_name = "NAME", default_value = multiproc_redis::DEFAULT_QUEUE)]
        queue: String,
        /// The key prefix shared with the callers.
        #[arg(long, value_name = "PREFIX", default_value = multiproc_redis::DEFAULT_PREFIX)]
        prefix: String,
        /// Seconds a host may go without a heartbeat before its tasks are taken over.
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        visibility_timeout: f64,
        /// Seconds a stop waits for the tasks in hand to finish (0: none).
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        drain_timeout: f64,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Tour { names, list } => tour(&names, list),
        Command::Serve(args) => serve::serve(args),
        Command::Infer(args) => serve::infer(args),
        Command::Worker { redis, processes, queue, prefix, visibility_timeout, drain_timeout } => {
            worker(&redis, processes, &queue, &prefix, (visibility_timeout, drain_timeout))
        }
    }
}

/// True if standard error is a terminal: only then do log lines carry
/// colour codes (in a pipe or a file they would be noise).
fn stderr_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// `url` as it may be printed: its user and password (`redis://user:pw@host`)
/// replaced by `***`, so they stay out of the logs.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// `multiproc worker`; `timeouts`: the visibility and drain timeouts, in seconds.
fn worker(url: &str, processes: Option<usize>, queue: &str, prefix: &str, timeouts: (f64, f64)) -> ExitCode {
    let shown = without_password(url);
    let Some(visibility) = Duration::try_from_secs_f64(timeouts.0).ok().filter(|v| !v.is_zero()) else {
        eprintln!("multiproc worker: --visibility-timeout must be a positive number of seconds");
        return ExitCode::from(2);
    };
    let Ok(drain) = Duration::try_from_secs_f64(timeouts.1) else {
        eprintln!("multiproc worker: --drain-timeout must be a number of seconds, 0 or more");
        return ExitCode::from(2);
    };
    if !["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|s| url.starts_with(s)) {
        eprintln!("multiproc worker: --redis {shown} is not a Redis URL; give one like redis://127.0.0.1:6379/0");
        return ExitCode::from(2);
    }
    if processes == Some(0) {
        eprintln!("multiproc worker: --processes must be at least 1");
        return ExitCode::from(2);
    }
    let mut b = multiproc_redis::Worker::builder(url)
        .queue(queue)
        .prefix(prefix)
        .visibility_timeout(visibility)
        .drain_timeout(drain);
    if let Some(n) = processes {
        b = b.processes(n);
    }
    if let Some(key) = std::env::var_os("MULTIPROC_REDIS_KEY") {
        b = b.auth_key(key.as_encoded_bytes());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(stderr_is_terminal())
        .with_max_level(tracing::Level::INFO)
        .init();
    multiproc::process::catch_stop_signals();
    let worker = match b.start() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("multiproc worker: cannot serve queue {queue:?} on {shown}: {e}");
            // The error says what to do (see to the server, the URL, the
            // user's rights, or this host's limits): nothing to add.
            return ExitCode::FAILURE;
        }
    };
    eprintln!("multiproc worker: serving queue {queue:?} (prefix {prefix:?}) on {shown}");
    while !multiproc::process::stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("multiproc worker: stopping: finishing the tasks in hand");
    worker.stop();
    eprintln!("multiproc worker: stopped");
    ExitCode::SUCCESS
}

fn tour(names: &[String], list: bool) -> ExitCode {
    let unknown: Vec<&str> =
        names.iter().map(String::as_str).filter(|n| multiproc_seeds::example(n).is_none()).collect();
    if !unknown.is_empty() {
        eprintln!("multiproc tour: no example called {}; `multiproc tour --list` shows them", unknown.join(", "));
        return ExitCode::from(2);
    }
    let chosen: Vec<&Example> =
        EXAMPLES.iter().filter(|e| names.is_empty() || names.contains(&e.name.to_string())).collect();
    if list {
        let width = chosen.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for e in &chosen {
            println!("{:<width$}  seed {}  {}", e.name, e.seed, e.shows);
        }
        return ExitCode::SUCCESS;
    }

    let examples = if chosen.len() == 1 { "example" } else { "examples" };
    println!("multiproc tour: {} {examples} from the seed programs", chosen.len());
    let started = Instant::now();
    let mut failed = Vec::new();
    for e in &chosen {
        println!();
        println!("== {} (seed {}): {}", e.name, e.seed, e.shows);
        let t = Instant::now();
        match (e.run)() {
            Ok(lines) => {
                for line in lines {
                    println!("   {line}");
                }
                println!("   ({:.2?})", t.elapsed());
            }
            Err(err) => {
                println!("   FAILED: {err}");
                failed.push(e.name);
            }
        }
    }
    println!();
    let ran = chosen.len() - failed.len();
    println!("tour: {ran} of {} {examples} ran in {:.2?}", chosen.len(), started.elapsed());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("tour: failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
