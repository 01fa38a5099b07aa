//! Helpers for the in-process tests of lost wake-ups: a sleeper that a
//! `release` or `notify` woke and that vanishes before it acts (as a process
//! killed right there would) must not leave the other sleepers asleep while
//! they could go on.
//!
//! Futex wakes go to the sleepers in the order they fell asleep (among
//! threads of the same priority), so a vanishing sleeper put to sleep first
//! gets the one wake, deterministically.

use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::sys::imp::thread::current_tid;

/// Bound of every wait in these tests.
pub(super) const LONG: Duration = Duration::from_secs(5);
/// A waiter whose wake-up was lost must go on within this (it sleeps at
/// most `LOST_WAKE_EVERY` at a time); far below [`LONG`].
pub(super) const PROMPT: Duration = Duration::from_secs(2);

/// True while thread `tid` of this process sleeps (on a futex, where the
/// kernel names wait channels).
fn asleep(tid: u32) -> bool {
    let task = format!("/proc/self/task/{tid}");
    let stat = std::fs::read_to_string(format!("{task}/stat")).unwrap_or_default();
    let sleeping = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
    let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
    sleeping && (wchan.contains("futex") || wchan.trim() == "0" || wchan.is_empty())
}

/// Runs `sleeper` on a new thread and returns once that thread is asleep.
/// `sleeper` must fall asleep on its futex without blocking anywhere before.
///
/// # Panics
///
/// If the thread is not asleep within [`LONG`].
pub(super) fn spawn_asleep<T: Send + 'static>(sleeper: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        tx.send(current_tid()).expect("the test waits for the tid");
        sleeper()
    });
    let tid = rx.recv_timeout(LONG).expect("the sleeper thread started");
    let start = Instant::now();
    while !asleep(tid) {
        assert!(start.elapsed() < LONG, "thread {tid} did not fall asleep within {LONG:?}");
        thread::sleep(Duration::from_millis(2));
    }
    handle
}
