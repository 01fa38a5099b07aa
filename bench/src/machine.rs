//! What the figures were measured on: machine, kernel, tool versions, commit.

use std::process::Command;

use serde_json::{Value, json};

use crate::python::Python;

/// Machine and tool information for the JSON file.
pub fn describe(python: &Python) -> Value {
    json!({
        "machine": {
            "cpus": multiproc::cpu_count(),
            "cpu_model": cpu_model(),
            "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
            "mem_total_mib": mem_total_mib(),
        },
        "python": {
            "command": python.command,
            "executable": python.executable,
            "version": python.version,
        },
        "rustc": command_line("rustc", &["--version"]),
        "commit": command_line("git", &["rev-parse", "HEAD"]),
        "worktree_dirty": command_line("git", &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        "build_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// One line describing the machine, for the top of the printed table.
pub fn summary(python: &Python) -> String {
    format!(
        "{} × {} · Linux {} · CPython {} · {}",
        multiproc::cpu_count(),
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        python.version,
        command_line("rustc", &["--version"]).unwrap_or_else(|| "rustc ?".into()),
    )
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn mem_total_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The first line a command prints, or `None` if it cannot run or fails.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_string())
}

/// The machine's CPU time so far, from `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct CpuTicks {
    /// Time the hypervisor ran something else while this VM's CPUs wanted
    /// to run ("steal").
    steal: u64,
    /// All time, busy, idle and stolen.
    total: u64,
}

impl CpuTicks {
    /// Reads the counters now (`None` without `/proc/stat`).
    pub fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().ok()?;
        // user, nice, system, idle, iowait, irq, softirq, steal; the guest
        // times after them are counted in user and nice already.
        Some(CpuTicks { steal: *fields.get(7)?, total: fields.get(..8)?.iter().sum() })
    }

    /// The share of the CPUs' time stolen since `earlier`, in percent.
    pub fn steal_percent_since(&self, earlier: &CpuTicks) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 { 0.0 } else { 100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total as f64 }
    }
}
