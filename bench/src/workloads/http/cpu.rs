//! Where a burst's CPU time goes: the load generator's thread, the rest of
//! this process (the server under test runs here, on its own runtime), and
//! the processes this one started (a model's worker processes), from the
//! scheduler's run time of every thread (`/proc/…/schedstat`, in ns).
//!
//! With the wall time of the burst this says whether a subject is bound by
//! CPU (the CPUs were busy all along: cores busy ≈ the machine's CPUs) or by
//! latency (requests waited on each other while CPUs idled), and which side
//! a request's CPU time was spent on.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::measure::Stats;

/// Run time so far of the calling thread, the whole process, and the
/// processes descended from it.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuSnapshot {
    client_ns: u64,
    process_ns: u64,
    descendants_ns: u64,
}

/// The run time of a thread, or of every thread of a process in `tasks`.
fn run_ns(schedstat: &Path) -> u64 {
    std::fs::read_to_string(schedstat)
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn threads_ns(tasks: &Path) -> u64 {
    std::fs::read_dir(tasks).map(|dir| dir.flatten().map(|t| run_ns(&t.path().join("schedstat"))).sum()).unwrap_or(0)
}

/// The parent of every process (`/proc/PID/stat`, field 4).
fn parents() -> HashMap<u32, u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return HashMap::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // The command name may hold spaces and parentheses: read after the last ')'.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

impl CpuSnapshot {
    /// Taken on the load generator's thread.
    pub(super) fn now() -> CpuSnapshot {
        let me = std::process::id();
        let parents = parents();
        let descends = |mut pid: u32| {
            for _ in 0..64 {
                match parents.get(&pid) {
                    Some(&p) if p == me => return true,
                    Some(&p) if p > 1 => pid = p,
                    _ => return false,
                }
            }
            false
        };
        let descendants_ns = parents
            .keys()
            .filter(|&&pid| descends(pid))
            .map(|pid| threads_ns(&Path::new("/proc").join(pid.to_string()).join("task")))
            .sum();
        CpuSnapshot {
            client_ns: run_ns(Path::new("/proc/thread-self/schedstat")),
            process_ns: threads_ns(Path::new("/proc/self/task")),
            descendants_ns,
        }
    }
}

/// One burst's CPU time per request, in µs, and how many CPUs were busy
/// with it on average.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuBurst {
    client: f64,
    server: f64,
    workers: f64,
    cores_busy: f64,
}

impl CpuBurst {
    /// Between two snapshots taken around `requests` requests that took `wall`.
    pub(super) fn between(before: CpuSnapshot, after: CpuSnapshot, requests: usize, wall: Duration) -> CpuBurst {
        let us = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e3 / requests.max(1) as f64;
        let client = us(before.client_ns, after.client_ns);
        // Threads of this process other than the client: the server (a
        // thread that ended in between is missing from `after`: saturate).
        let server = (us(before.process_ns, after.process_ns) - client).max(0.0);
        let workers = us(before.descendants_ns, after.descendants_ns);
        let total_s = (client + server + workers) * 1e-6 * requests as f64;
        CpuBurst { client, server, workers, cores_busy: total_s / wall.as_secs_f64().max(1e-9) }
    }
}

/// The medians over bursts, as a row's extra field.
pub(super) fn cpu_json(bursts: &[CpuBurst]) -> serde_json::Value {
    if bursts.is_empty() {
        return serde_json::Value::Null;
    }
    let median = |f: fn(&CpuBurst) -> f64| Stats::of(bursts.iter().map(f).collect()).value();
    let (client, server, workers) = (median(|b| b.client), median(|b| b.server), median(|b| b.workers));
    let round = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "client_us": round(client),
        "server_us": round(server),
        "model_workers_us": round(workers),
        "total_us": round(median(|b| b.client + b.server + b.workers)),
        "cores_busy": round(median(|b| b.cores_busy)),
    })
}
