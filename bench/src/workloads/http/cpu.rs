//! Where a burst's CPU time goes: the load generator's thread, the rest of
//! this process (the server under test runs here, on its own runtime), and
//! the processes this one started (a model's worker processes), from the
//! scheduler's run time of every thread (`/proc/…/schedstat`, in ns; a
//! running thread's figure is brought up to date at least every scheduler
//! tick, a few ms, small against a burst of 100 ms or more).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the calling thread busy until it has run for `d` (CPU time,
    /// not wall time: on a loaded machine the thread may wait between).
    fn spin(d: Duration) {
        let me = Path::new("/proc/thread-self/schedstat");
        let start = run_ns(me);
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while run_ns(me).saturating_sub(start) < d.as_nanos() as u64 && std::time::Instant::now() < give_up {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
    }

    #[test]
    fn a_busy_thread_and_a_busy_child_are_counted_on_their_sides() {
        let before = CpuSnapshot::now();
        // This thread (the "client") spins; another thread of this process
        // (the "server") spins; a child process (a "worker") spins.
        spin(Duration::from_millis(60));
        std::thread::spawn(|| spin(Duration::from_millis(60))).join().unwrap();
        // A shell loop (no external commands: all its time is its own),
        // read while it still runs.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        let after = loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = CpuSnapshot::now();
            if now.descendants_ns.saturating_sub(before.descendants_ns) >= 40_000_000
                || std::time::Instant::now() > give_up
            {
                break now;
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        let b = CpuBurst::between(before, after, 1000, Duration::from_millis(500));
        // µs per request over 1000 requests: 60 ms of spinning is 60 µs.
        assert!(b.client >= 50.0, "{b:?}");
        // The spawned thread ended before `after`: its time is lost, so
        // the server side is at least zero (saturated), never negative.
        assert!(b.server >= 0.0, "{b:?}");
        assert!(b.workers >= 40.0, "the child's spinning counts as the workers' side: {b:?}");
        assert!(b.cores_busy > 0.0, "{b:?}");
    }

    #[test]
    fn a_live_server_thread_is_counted_as_server() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            spin(Duration::from_millis(80));
            let _ = rx.recv_timeout(Duration::from_secs(10));
        });
        let before = CpuSnapshot::now();
        std::thread::sleep(Duration::from_millis(150));
        let after = CpuSnapshot::now();
        tx.send(()).unwrap();
        server.join().unwrap();
        let b = CpuBurst::between(before, after, 1000, Duration::from_millis(150));
        assert!(b.client < 20.0, "the sleeping client used little: {b:?}");
        assert!(b.server >= 20.0, "the spinning thread is the server side: {b:?}");
        let json = cpu_json(&[b]);
        assert!(json["server_us"].as_f64().unwrap() >= 20.0, "{json}");
        assert!(cpu_json(&[]).is_null());
    }
}
