//! Process workloads: `spawn_join`.
//!
//! CPython side: `bench/python/process.py`.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::time::Instant;

use multiproc::{Process, StartMethod};
use serde_json::json;

use super::{Ctx, Workload};
use crate::measure::{Plan, Stats, Subject, micros};
use crate::report::{Row, Unit};
use crate::{BenchError, EXIT_AT_ONCE, ensure};

/// Start one process running a tiny function, join it and take its value.
pub const SPAWN_JOIN: Workload = Workload {
    name: "spawn_join",
    about: "µs per start + join of a child running a plain fn, per start method",
    run: spawn_join,
};

/// The function every child runs: a plain `fn` returning a small value.
fn tiny(x: u32) -> u32 {
    x.wrapping_mul(3).wrapping_add(1)
}

const FLOOR_REEXEC: &str = "posix_spawn of this binary, exits at once, + waitpid";
const FLOOR_FORK: &str = "bare fork + _exit + waitpid";

// SAFETY: the harness runs one workload at a time on its main thread, and
// the earlier workloads' pools and children are joined before this one
// starts: no other thread is in the library or holds a lock a forked child
// needs.
const FORK: StartMethod = unsafe { StartMethod::fork() };

const METHODS: [(&str, StartMethod); 3] =
    [("spawn", StartMethod::Spawn), ("forkserver", StartMethod::ForkServer), ("fork", FORK)];

fn spawn_join(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    // CPython's spawn takes ~60 ms a start, so it gets one sample per round
    // while the fast subjects take many; `min` bounds CPython's count.
    let plan = ctx.plan(Plan::new(3, 10.0, 10, 100_000, 25), Plan::new(2, 1.0, 5, 100_000, 25));
    let mut reexec = reexec_floor()?;
    let mut fork = fork_floor;
    let mut ours: Vec<_> = METHODS.iter().map(|&(_, method)| start_join(method)).collect();
    let mut theirs = Vec::new();
    for (name, _) in METHODS {
        theirs.push(ctx.python("process.py", "spawn_join", &["--method", name], &plan)?);
    }
    let labels: Vec<(String, String)> = METHODS
        .iter()
        .map(|(name, _)| (format!("multiproc spawn_join {name}"), format!("cpython spawn_join --method {name}")))
        .collect();
    let mut subjects: Vec<(&str, &mut dyn Subject)> =
        vec![("floor: re-exec of this binary", &mut reexec), ("floor: bare fork", &mut fork)];
    for (((ours_label, theirs_label), ours), theirs) in labels.iter().zip(&mut ours).zip(&mut theirs) {
        subjects.push((ours_label, ours));
        subjects.push((theirs_label, theirs));
    }
    let stats = ctx.measure(&plan, &mut subjects)?;
    drop(subjects);
    for script in theirs {
        script.finish()?;
    }

    let (reexec, fork) = (stats[0].clone(), stats[1].clone());
    let per_method: Vec<(&str, Stats, Stats)> = METHODS
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, stats[2 + 2 * i].clone(), stats[3 + 2 * i].clone()))
        .collect();
    let (our_method, our_best) = fastest(per_method.iter().map(|m| (m.0, &m.1)));
    let (py_method, py_best) = fastest(per_method.iter().map(|m| (m.0, &m.2)));
    let mut rows = vec![
        Row::new("spawn_join", Unit::Micros, our_best, py_best)
            .with_floor(FLOOR_REEXEC, reexec.clone())
            .with_extra("multiproc_method", json!(our_method))
            .with_extra("cpython_method", json!(py_method)),
    ];
    for (name, ours, theirs) in per_method {
        let floor = if name == "spawn" { (FLOOR_REEXEC, reexec.clone()) } else { (FLOOR_FORK, fork.clone()) };
        rows.push(Row::new(format!("spawn_join/{name}"), Unit::Micros, ours, theirs).with_floor(floor.0, floor.1));
    }
    Ok(rows)
}

/// The method with the lowest median.
fn fastest<'a>(methods: impl Iterator<Item = (&'a str, &'a Stats)>) -> (&'a str, Stats) {
    let (name, stats) = methods.min_by(|a, b| a.1.value().total_cmp(&b.1.value())).expect("at least one method");
    (name, stats.clone())
}

/// Start + join with `method`, checking each child's value.
fn start_join(method: StartMethod) -> impl FnMut() -> Result<f64, BenchError> {
    let mut i = 0u32;
    move || {
        i += 1;
        let t = Instant::now();
        let mut p = Process::builder().start_method(method).spawn(tiny, (i,))?;
        let got = p.join()?;
        let elapsed = t.elapsed();
        ensure(got == tiny(i), || format!("child returned {got}, expected {}", tiny(i)))?;
        Ok(micros(elapsed))
    }
}

/// The floor of `spawn`: `posix_spawn` of this very binary (same environment)
/// with an argument that makes `main` exit at once, then `waitpid`.
fn reexec_floor() -> Result<impl FnMut() -> Result<f64, BenchError>, BenchError> {
    let exe = CString::new("/proc/self/exe").expect("no NUL");
    let arg = CString::new(EXIT_AT_ONCE).expect("no NUL");
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.into_vec())
        })
        .collect::<Result<_, _>>()?;
    Ok(move || {
        let argv = [exe.as_ptr().cast_mut(), arg.as_ptr().cast_mut(), std::ptr::null_mut()];
        let envp: Vec<*mut libc::c_char> =
            env.iter().map(|e| e.as_ptr().cast_mut()).chain(std::iter::once(std::ptr::null_mut())).collect();
        let t = Instant::now();
        let mut pid: libc::pid_t = 0;
        // SAFETY: `exe`, `argv` and `envp` are valid, null-terminated and
        // outlive the call; null file actions and attributes mean "none".
        let rc = unsafe {
            libc::posix_spawn(&mut pid, exe.as_ptr(), std::ptr::null(), std::ptr::null(), argv.as_ptr(), envp.as_ptr())
        };
        if rc != 0 {
            return Err(BenchError::new(format!("posix_spawn failed: {}", std::io::Error::from_raw_os_error(rc))));
        }
        let status = wait_exit(pid)?;
        let elapsed = t.elapsed();
        ensure(status == 0, || format!("re-executed bench exited with status {status:#x}"))?;
        Ok(micros(elapsed))
    })
}

/// The floor of `fork` and `forkserver`: fork this process, `_exit(0)` in the
/// child, `waitpid` in the parent.
fn fork_floor() -> Result<f64, BenchError> {
    let t = Instant::now();
    // SAFETY: the child only calls `_exit`, which is async-signal-safe, so
    // forking this (possibly multi-threaded) process is sound.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ends the forked child at once, running no handlers.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return Err(BenchError::new(format!("fork failed: {}", std::io::Error::last_os_error())));
    }
    let status = wait_exit(pid)?;
    let elapsed = t.elapsed();
    ensure(status == 0, || format!("forked child exited with status {status:#x}"))?;
    Ok(micros(elapsed))
}

/// Reaps `pid`; returns its raw wait status.
fn wait_exit(pid: libc::pid_t) -> Result<i32, BenchError> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(BenchError::new(format!("waitpid failed: {err}")));
        }
    }
}
