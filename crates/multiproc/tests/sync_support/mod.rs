//! Helpers shared by the `sync_*` and `shared_*` integration tests (and
//! `assert_about` by `connection_listener` and `connection_wait`).

#![allow(dead_code)] // each test file uses a different subset

use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Upper bound for any wait in these tests: far above the real time, so a
/// slow machine does not fail them, but a hang still ends.
pub const LONG: Duration = Duration::from_secs(20);

/// Upper bound for something that must happen promptly (woken by the event
/// it waits for, not by its timeout): far below [`LONG`], and far above the
/// real time even when a loaded machine leaves a process unscheduled for a
/// second or two.
pub const PROMPT: Duration = Duration::from_secs(5);

/// How much longer than its timeout a timed wait may take in [`assert_about`]:
/// the wake-up after the deadline may wait for a CPU on a loaded machine.
pub const SLACK: Duration = Duration::from_secs(3);

/// A child that is killed and reaped if the test ends without joining it.
pub struct Kid<R: Serialize + DeserializeOwned> {
    process: Option<Process<R>>,
}

impl<R: Serialize + DeserializeOwned> Kid<R> {
    /// Spawns `f(args)`.
    pub fn spawn<F, A>(f: F, args: A) -> Kid<R>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned,
    {
        Kid { process: Some(Process::spawn(f, args).expect("spawn")) }
    }

    /// Spawns `f(args)` with start method `method`.
    pub fn spawn_with<F, A>(method: StartMethod, f: F, args: A) -> Kid<R>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned,
    {
        Kid { process: Some(Process::builder().start_method(method).spawn(f, args).expect("spawn")) }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.process.as_ref().and_then(Process::pid).expect("started")
    }

    /// SIGKILLs the child (does not wait).
    pub fn kill(&self) {
        self.process.as_ref().expect("not joined").kill().expect("kill");
    }

    /// Joins with [`LONG`]; panics if the child failed.
    pub fn join(mut self) -> R {
        let mut p = self.process.take().expect("joined once");
        match p.join_timeout(LONG) {
            Ok(r) => r,
            Err(e) => {
                let _ = p.kill();
                let _ = p.join_timeout(LONG);
                panic!("child failed: {e}");
            }
        }
    }

    /// Joins a child that is expected to die (killed); returns its exit code.
    pub fn reap(mut self) -> Option<i32> {
        let mut p = self.process.take().expect("joined once");
        let _ = p.join_timeout(LONG);
        p.exitcode()
    }
}

impl<R: Serialize + DeserializeOwned> Drop for Kid<R> {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.join_timeout(LONG);
        }
    }
}

/// Asserts that `start.elapsed()` is about `t`: at least `t`, less than `t` + [`SLACK`].
pub fn assert_about(start: Instant, t: Duration) {
    let took = start.elapsed();
    assert!(took >= t && took < t + SLACK, "expected ≈{t:?}, took {took:?}");
}

/// Polls `done` every 2 ms until it is true; panics after [`LONG`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until at least `n` calls wait in manager `m` (each then sleeps on
/// its object: a change made now wakes it); panics after [`LONG`].
pub fn until_calls_wait(m: &multiproc::manager::Manager, n: usize) {
    wait_until(&format!("{n} calls to wait in the manager"), || m.waiting_calls().unwrap() >= n);
}

/// Waits until the main thread of process `pid` sleeps on a futex (where
/// the kernel names the wait channel; elsewhere, until it sleeps at all).
pub fn wait_asleep(pid: i32) {
    let task = format!("/proc/{pid}/task/{pid}");
    wait_until("the child to fall asleep", || {
        let stat = std::fs::read_to_string(format!("{task}/stat")).unwrap_or_default();
        let sleeping = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
        let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
        sleeping && (wchan.contains("futex") || wchan.trim() == "0")
    });
}

/// Sleeps "for ever" (a minute), for children that are killed while they hold something.
pub fn linger() {
    std::thread::sleep(Duration::from_secs(60));
}
