//! A worker process SIGKILLed from outside while it runs a task: the task
//! is delivered again (its retries) and the call gets its result; with no
//! retries left, the call gets a clear error. A worker process frozen
//! (SIGSTOP) fails its task by the task timeout. Never a hang.

mod support;

use std::time::{Duration, Instant};

use multiproc_redis::TaskFailure;
use support::{RemovedOnDrop, local_worker, pool, server};

/// On its first run, writes its process id to `marker` and sleeps (until
/// killed); on a later run, returns at once.
fn first_run_waits(marker: String) -> u32 {
    if std::fs::metadata(&marker).is_ok() {
        return 7;
    }
    std::fs::write(&marker, std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(120));
    0
}

/// A marker path of its own for each test, removed on drop.
struct Marker(RemovedOnDrop);

impl Marker {
    fn new(name: &str) -> Marker {
        let p = std::env::temp_dir().join(format!("multiproc-redis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Marker(RemovedOnDrop(p))
    }

    fn path(&self) -> String {
        self.0.0.to_string_lossy().into_owned()
    }

    /// Waits for the task to start, then sends `signal` to the process
    /// running it; returns its pid.
    fn signal_its_process(&self, signal: &str) -> String {
        let found = support::eventually(Duration::from_secs(30), || {
            std::fs::read_to_string(&self.0.0).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
        });
        assert!(found, "the task never started");
        let pid = std::fs::read_to_string(&self.0.0).unwrap().trim().to_string();
        let status = std::process::Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
        pid
    }

    fn kill_its_process(&self) {
        self.signal_its_process("-KILL");
    }
}

#[test]
fn a_task_whose_worker_process_is_killed_runs_again() {
    let server = server();
    let worker = local_worker(&server, "killed", 1);
    let pool = pool(&server, "killed").connect().unwrap();
    let marker = Marker::new("killed");
    let started = Instant::now();
    let mut call = pool.apply_async(first_run_waits, (marker.path(),));
    marker.kill_its_process();
    assert_eq!(call.get_timeout(Duration::from_secs(60)).unwrap(), 7);
    assert!(started.elapsed() < Duration::from_secs(60));
    worker.stop();
}

#[test]
fn a_task_whose_worker_process_is_killed_with_no_retry_left_fails_clearly() {
    let server = server();
    let worker = local_worker(&server, "killed-last", 1);
    let pool = pool(&server, "killed-last").connect().unwrap();
    let marker = Marker::new("killed-last");
    let mut call = pool.with_retries(0).apply_async(first_run_waits, (marker.path(),));
    marker.kill_its_process();
    let err = call.get_timeout(Duration::from_secs(60)).expect_err("killed on its only delivery");
    let Some(TaskFailure::DeadLettered { attempts: 1, last_error }) = err.task_failure() else { panic!("{err}") };
    assert!(!last_error.is_empty(), "{err}");
    worker.stop();
}

/// Runs `f` on a thread and waits at most `limit` for it; on time out,
/// kills `pid` (so that `f` can end) and fails.
fn within<T: Send + 'static>(limit: Duration, pid: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            t.join().unwrap();
            v
        }
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-KILL", pid]).status();
            let _ = t.join();
            panic!("not done within {limit:?} with the worker process stopped (SIGSTOP)");
        }
    }
}

#[test]
fn a_task_whose_worker_process_is_frozen_fails_by_its_task_timeout() {
    let server = server();
    let worker = local_worker(&server, "frozen-timeout", 1);
    let pool = pool(&server, "frozen-timeout").connect().unwrap();
    let marker = Marker::new("frozen-timeout");
    let mut call = pool.with_task_timeout(Duration::from_secs(2)).apply_async(first_run_waits, (marker.path(),));
    let pid = marker.signal_its_process("-STOP");
    let err = within(Duration::from_secs(20), &pid, move || call.get_timeout(Duration::from_secs(30)))
        .expect_err("frozen past its task timeout");
    assert!(matches!(err.task_failure(), Some(TaskFailure::Timeout(_))), "{err}");
    worker.stop();
}
