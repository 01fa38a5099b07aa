//! A version's workers as their supervisors report them: starting, ready,
//! busy, crashed (with the backoff and the crash-loop verdict), refused,
//! restarting and stopped.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Shared, VersionGroup};
use crate::error::ServeError;
use crate::status::{VersionState, WorkerState};

impl VersionGroup {
    /// A worker process started (loading).
    pub fn worker_starting(&self, instance: usize, pid: Option<i32>) {
        let mut s = self.lock();
        s.backoff_until[instance] = None;
        let w = &mut s.workers[instance];
        w.pid = pid;
        w.state = WorkerState::Starting;
        w.backoff = None;
        tracing::info!(model = %self.model, version = self.version, instance, pid, "worker loading the model");
    }

    /// A worker loaded its model.
    pub fn worker_ready(&self, instance: usize) {
        let mut s = self.lock();
        s.workers[instance].state = WorkerState::Idle;
        let pid = s.workers[instance].pid;
        tracing::info!(model = %self.model, version = self.version, instance, pid, "worker ready");
        if matches!(s.state, VersionState::Loading | VersionState::CrashLooping) {
            self.transition(&mut s, VersionState::Ready, "a worker is ready");
        }
    }

    /// A worker took or finished a batch.
    pub fn worker_busy(&self, instance: usize, busy: bool) {
        let mut s = self.lock();
        let w = &mut s.workers[instance];
        if busy {
            w.state = WorkerState::Busy;
        } else {
            w.state = WorkerState::Idle;
            w.batches += 1;
        }
    }

    /// A worker died or failed to load. Records the crash, moves to
    /// crash-looping after K crashes in the window (failing the queue fast),
    /// and returns how long to back off before restarting.
    pub fn worker_crashed(&self, instance: usize, reason: String, attempt: u32) -> Duration {
        let backoff = self.settings.restart.backoff(attempt);
        let now = Instant::now();
        let mut s = self.lock();
        if matches!(s.state, VersionState::Failed | VersionState::Stopped) {
            // The version stopped its workers itself (it failed, or was
            // unloaded): this death is not a crash, and the version's
            // reason stays the one it failed with.
            let w = &mut s.workers[instance];
            w.pid = None;
            w.last_failure = Some(reason);
            return Duration::ZERO;
        }
        let window = self.settings.restart.crash_window;
        s.crashes.push_back(now);
        while s.crashes.front().is_some_and(|t| now.duration_since(*t) > window) {
            s.crashes.pop_front();
        }
        let pid = s.workers[instance].pid;
        tracing::warn!(model = %self.model, version = self.version, instance, pid, backoff = ?backoff, "worker crashed: {reason}");
        s.last_failure = Some(reason.clone());
        s.backoff_until[instance] = Some(now + backoff);
        let w = &mut s.workers[instance];
        w.pid = None;
        w.state = WorkerState::BackingOff;
        w.last_failure = Some(reason);
        w.backoff = Some(backoff);
        let live = s.workers.iter().any(|w| matches!(w.state, WorkerState::Idle | WorkerState::Busy));
        let crashes = s.crashes.len() as u32;
        let e = if crashes >= self.settings.restart.crash_loop_threshold && !live {
            match s.state {
                VersionState::Loading | VersionState::Ready => {
                    let why = format!("{crashes} crashes within {window:?}; failing requests fast");
                    self.transition(&mut s, VersionState::CrashLooping, &why);
                }
                // A draining version whose workers do not come back cannot
                // finish its queue: it fails now, not at the drain timeout
                // (and the workers, with nothing queued, stop).
                VersionState::Draining => {}
                _ => return backoff,
            }
            drop(s);
            self.crash_looping_error()
        } else {
            let none_back = self.none_back_before_the_drain_ends(&s);
            drop(s);
            match none_back {
                Some(e) => e,
                None => return backoff,
            }
        };
        self.fail_requests(self.queue.take_all(), &e);
        backoff
    }

    /// While the version drains with no worker serving or loading, and
    /// none back from its backoff before the drain times out: the error
    /// for its queued requests, which could only fail at that timeout
    /// (they fail now, saying why, and the workers, with nothing queued,
    /// stop). `None` while a worker may still run them.
    pub(super) fn none_back_before_the_drain_ends(&self, s: &Shared) -> Option<ServeError> {
        let end = s.drain_until.filter(|_| s.state == VersionState::Draining)?;
        let none_back = s.workers.iter().zip(&s.backoff_until).all(|(w, until)| match w.state {
            WorkerState::Stopped => true,
            WorkerState::BackingOff => until.is_some_and(|t| t >= end),
            WorkerState::Starting | WorkerState::Idle | WorkerState::Busy => false,
        });
        let why = s.last_failure.as_deref().unwrap_or("none recorded");
        none_back.then(|| {
            self.not_ready(&format!(
                "the version is draining and no worker can be back before its drain timeout of {:?} \
                 (they crashed; last failure: {why}); the request did not run",
                self.settings.drain_timeout
            ))
        })
    }

    /// A worker's load failed for good ([`crate::LoadError::permanent`]):
    /// it is not restarted. Unless another worker serves, the version
    /// fails now with `reason` (its queued requests and a load waiting for
    /// it fail saying so, its other workers stop) and stays failed until
    /// it is started again.
    pub fn load_refused(&self, instance: usize, reason: String) {
        let pids = {
            let mut s = self.lock();
            let pid = s.workers[instance].pid;
            tracing::warn!(model = %self.model, version = self.version, instance, pid, "worker not restarted: {reason}");
            let w = &mut s.workers[instance];
            w.pid = None;
            w.last_failure = Some(reason.clone());
            let live = s.workers.iter().any(|w| matches!(w.state, WorkerState::Idle | WorkerState::Busy));
            if live || !matches!(s.state, VersionState::Loading | VersionState::Ready | VersionState::CrashLooping) {
                return;
            }
            let why = format!("{reason}; correct it, then load the version again");
            s.last_failure = Some(why.clone());
            self.transition(&mut s, VersionState::Failed, &why);
            s.workers.iter().filter_map(|w| w.pid).collect::<Vec<i32>>()
        };
        // The other workers, loading, see the version failed and quit.
        let left = self.queue.stop();
        let why = self.lock().last_failure.clone().unwrap_or_default();
        self.fail_requests(left, &self.not_ready(&format!("the version failed to load: {why}")));
        for pid in pids {
            let _ = multiproc::process::kill_pid(pid);
        }
    }

    /// A worker is being restarted.
    pub fn worker_restarting(&self, instance: usize) {
        let mut s = self.lock();
        s.workers[instance].restarts += 1;
        self.counters.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::info!(model = %self.model, version = self.version, instance, "restarting worker");
    }

    /// A worker thread quit.
    pub fn worker_stopped(&self, instance: usize) {
        let mut s = self.lock();
        let w = &mut s.workers[instance];
        w.state = WorkerState::Stopped;
        w.pid = None;
        w.backoff = None;
        s.backoff_until[instance] = None;
        if s.workers.iter().all(|w| w.state == WorkerState::Stopped) {
            if s.state == VersionState::Draining {
                self.transition(&mut s, VersionState::Stopped, "drained");
            }
            self.changed.notify_all();
            // Batches a worker held but never started go back to the queue
            // when it dies, also after the queue stopped: with no worker
            // left, nothing else would answer them.
            let state = s.state;
            drop(s);
            let why = format!("the version is {} and no worker is left to run the request", state.as_str());
            self.fail_requests(self.queue.take_all(), &self.not_ready(&why));
        }
    }
}
