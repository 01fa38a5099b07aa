//! How a supervisor waits without a request to wait for: for its worker
//! to load, and through the backoff after a crash. It sleeps until what it
//! waits for happens (the worker answers or dies, the backoff ends) or its
//! version may be winding down (see `BatchQueue::sleep_unless_closing`).
//! While a queued request holds something for its caller
//! ([`crate::Request::hold`]: a front end's share of its byte budget), it
//! wakes every [`SWEEP_EVERY`] too, to drop the queued requests whose
//! caller went away or whose deadline passed (nothing takes batches from
//! the queue meanwhile, which would drop them; see
//! [`VersionGroup::sweep_abandoned`]); such a request arriving wakes it
//! for that. Without one, it does not wake up for them.

use std::time::{Duration, Instant};

use multiproc::{ConnectionError, Process, Waitable};

use crate::bell::Bell;
use crate::deadline::after;
use crate::model::WorkerContext;
use crate::supervisor::{EXIT_WAIT, Gone, KILL_WAIT, exit_status, kill_and_reap, log_line};
use crate::version::{SWEEP_EVERY, Sweeps, VersionGroup};
use crate::worker::{FromWorker, ServerEnds, worker_pipes};

/// How often a supervisor without a bell (it could not make one) looks at its
/// version while it backs off or its worker loads.
const NO_BELL_POLL: Duration = Duration::from_millis(20);

/// Sleeps `d`, waking early (false) if the version winds down.
pub(crate) fn sleep_unless_stopping(group: &VersionGroup, d: Duration, bell: Option<&Bell>) -> bool {
    let until = after(Instant::now(), d);
    let mut sweeps = Sweeps::new();
    loop {
        if group.winding_down() {
            return false;
        }
        sweeps.due(group);
        let now = Instant::now();
        if now >= until {
            return true;
        }
        sleep_on(group, bell, &[], group.nap(until - now));
    }
}

/// Sleeps up to `d` until one of `watched` is ready or the version may be
/// winding down (its queue closing, stopping or running empty once closed
/// rings `bell`), and at most [`SWEEP_EVERY`] while a queued request holds
/// something (one arriving rings `bell`); without a bell, wakes every
/// [`NO_BELL_POLL`] to look.
fn sleep_on(group: &VersionGroup, bell: Option<&Bell>, watched: &[&dyn Waitable], d: Duration) {
    match bell {
        Some(bell) => group.queue.sleep_unless_closing(bell, |holding| {
            bell.sleep(watched, if holding { d.min(SWEEP_EVERY) } else { d });
        }),
        None if watched.is_empty() => std::thread::sleep(d.min(NO_BELL_POLL)),
        None => {
            let _ = multiproc::wait(watched, Some(d.min(NO_BELL_POLL)));
        }
    }
}

/// How a worker that sent why it did not load is gone: retried, or
/// refused for good.
fn load_failed(reason: &str, permanent: bool) -> Gone {
    if permanent {
        Gone::Refused(format!("load failed for good (not retried): {reason}"))
    } else {
        Gone::Crashed(format!("load failed: {reason}"))
    }
}

/// The load error a worker seen dead sent before it died, if any (its log
/// lines on the way go to the log).
fn last_load_error(group: &VersionGroup, ends: &ServerEnds) -> Option<Gone> {
    loop {
        match ends.replies.recv_timeout(Duration::ZERO) {
            Ok(FromWorker::LoadFailed(reason)) => return Some(load_failed(&reason, false)),
            Ok(FromWorker::LoadRefused(reason)) => return Some(load_failed(&reason, true)),
            Ok(FromWorker::Log(line)) => log_line(group, &line),
            Ok(_) | Err(_) => return None,
        }
    }
}

/// A worker process that loaded its model, and its pipes.
pub(crate) struct Loaded {
    pub process: Process<()>,
    pub ends: ServerEnds,
    pub pid: i32,
}

/// Spawns the worker and waits for its ready message.
pub(crate) fn load(group: &VersionGroup, instance: usize, bell: Option<&Bell>) -> Result<Loaded, Gone> {
    let (ends, theirs) = worker_pipes().map_err(|e| Gone::Crashed(format!("could not create pipes: {e}")))?;
    let ctx = WorkerContext { model: group.model.clone(), version: group.version, instance };
    let builder = Process::builder().name(format!("{}-v{}-{instance}", group.model, group.version));
    let mut process = (group.spawner)(builder, theirs, ctx).map_err(|e| Gone::Crashed(format!("spawn failed: {e}")))?;
    let pid = process.pid().unwrap_or(0);
    group.worker_starting(instance, Some(pid));
    let deadline = after(Instant::now(), group.settings.startup_timeout);
    let mut sweeps = Sweeps::new();
    loop {
        if group.winding_down() {
            kill_and_reap(&mut process, KILL_WAIT);
            return Err(Gone::Quit);
        }
        sweeps.due(group);
        let now = Instant::now();
        if now >= deadline {
            kill_and_reap(&mut process, KILL_WAIT);
            return Err(Gone::Crashed(format!(
                "worker {pid} did not load within the startup timeout of {:?}",
                group.settings.startup_timeout
            )));
        }
        // Sleeps until the worker sends something or dies, or the version
        // may be winding down; then reads without waiting.
        sleep_on(group, bell, &[&ends.replies, &process], group.nap(deadline - now));
        match ends.replies.recv_timeout(Duration::ZERO) {
            Ok(FromWorker::Ready) => {
                group.worker_ready(instance);
                return Ok(Loaded { process, ends, pid });
            }
            Ok(FromWorker::Log(line)) => log_line(group, &line),
            Ok(FromWorker::LoadFailed(reason)) => {
                let _ = process.join_timeout(EXIT_WAIT);
                return Err(load_failed(&reason, false));
            }
            Ok(FromWorker::LoadRefused(reason)) => {
                let _ = process.join_timeout(EXIT_WAIT);
                return Err(load_failed(&reason, true));
            }
            Ok(FromWorker::Batch { .. }) => {
                kill_and_reap(&mut process, KILL_WAIT);
                return Err(Gone::Crashed("worker answered before it was ready".to_string()));
            }
            Err(ConnectionError::Timeout) if process.is_alive() => {}
            Err(_) => {
                // Seen dead: all it sent is in the pipe now. A load error
                // sent just after this wait timed out, and the worker's exit
                // right after it, are its reason, not a silent death.
                if let Some(gone) = last_load_error(group, &ends) {
                    let _ = process.join_timeout(EXIT_WAIT);
                    return Err(gone);
                }
                let status = exit_status(&mut process);
                return Err(Gone::Crashed(format!("worker {pid} died while loading: {status}")));
            }
        }
    }
}
