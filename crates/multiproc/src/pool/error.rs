//! Errors of pool tasks and pool calls.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process::{ProcessError, RemotePanic};

/// Why one task produced no value.
///
/// A task's own error travels as its value: a task returning `Result<T, E>`
/// gives the caller that `Result`, with `E` intact. `TaskError` covers what
/// happened *to* the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the worker survived.
    #[error("the task panicked: {0}")]
    Panicked(RemotePanic),
    /// The worker running the task died (killed, crashed, out of memory)
    /// before the task's result came back. The task may have run, in part or
    /// in full (a chunk's results travel together, so a finished item of a
    /// chunk whose worker died later is lost too). The worker was replaced
    /// and the pool's other tasks were not affected.
    #[error(
        "the worker running the task (pid {pid}) died{} before the task's result came back (the task may have run, in part or in full)",
        death(*signal, *code)
    )]
    WorkerLost {
        /// The dead worker's pid.
        pid: i32,
        /// The signal that killed it, if a signal did.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        code: Option<i32>,
    },
    /// The task ran longer than the pool's task timeout; its worker was killed
    /// and replaced.
    #[error("the task ran longer than the pool's {0:?} task timeout; its worker was killed")]
    Timeout(Duration),
    /// The task's argument or result could not be serialized or deserialized.
    #[error("the task's {0}")]
    Unserializable(String),
    /// No worker of the pool can run tasks: the worker's initializer failed
    /// (or its workers were killed while running it), or workers could not
    /// be started (the message says which). In the last case the pool keeps
    /// trying, and takes tasks again once a worker starts.
    #[error("no worker of the pool can run tasks: {0}")]
    NoWorkers(String),
    /// The pool was terminated (or dropped) before the task finished.
    #[error("the pool was terminated before the task finished")]
    Terminated,
    /// The task was cancelled before it started.
    #[error("the task was cancelled before it started")]
    Cancelled,
}

fn death(signal: Option<i32>, code: Option<i32>) -> String {
    match (signal, code) {
        (Some(s), _) => format!(" of signal {s} ({})", crate::sys::imp::signal_name(s)),
        (None, Some(c)) => format!(" with exit code {c}"),
        (None, None) => String::new(),
    }
}

/// The prefix of an item's failure; none for a single task.
fn failed_item(index: Option<usize>) -> String {
    index.map(|i| format!("task {i} failed: ")).unwrap_or_default()
}

impl TaskError {
    /// True for [`TaskError::WorkerLost`].
    pub fn is_worker_lost(&self) -> bool {
        matches!(self, TaskError::WorkerLost { .. })
    }

    /// The remote panic, if the task panicked.
    pub fn panic(&self) -> Option<&RemotePanic> {
        match self {
            TaskError::Panicked(p) => Some(p),
            _ => None,
        }
    }
}

/// Why a pool call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A task failed; `index` is its position in the call's input, `None`
    /// for a single task (`apply`, `apply_async`, `Executor::submit`). The
    /// message of a single task's failure is its [`TaskError`]'s; an item's
    /// says which item it was ("task 3 failed: ...").
    #[error("{}{error}", failed_item(*index))]
    Task {
        /// Position of the task in the call's input; `None` for a single task.
        index: Option<usize>,
        /// What happened to it.
        error: TaskError,
    },
    /// The input iterator failed at `index`; the tasks before it ran.
    #[error("the input iterator failed at item {index}: {message}")]
    Input {
        /// Position of the failed item.
        index: usize,
        /// The iterator's error, as text.
        message: String,
    },
    /// `get_timeout`, `join_timeout` or `Imap::next_timeout` gave up; the
    /// work goes on.
    #[error("not finished within {0:?}; the work goes on, ask again later")]
    Timeout(Duration),
    /// The pool was closed or terminated: it takes no new work.
    #[error("the pool is closed and takes no new work; create a new pool")]
    Closed,
    /// The executor was shut down: it takes no new work.
    #[error("the executor is shut down and takes no new work")]
    ShutDown,
    /// `join` before `close` or `terminate`.
    #[error("join() needs close() or terminate() first, or it would wait forever")]
    NotClosed,
    /// `join` on the pool's own thread: in a result callback (which runs
    /// there), it would wait for itself.
    #[error(
        "join() was called in a result callback, on the pool's own thread, and would wait for itself; join from another thread"
    )]
    OnPoolThread,
    /// `successful` before the result is ready.
    #[error("the result is not ready yet; wait() first")]
    NotReady,
    /// The value was already taken by an earlier `get`.
    #[error("the result was already taken by an earlier get")]
    Taken,
    /// A pool needs at least one process.
    #[error("a pool needs at least one process, not 0")]
    NoProcesses,
    /// A worker could not be started.
    #[error("could not start a pool worker: {0}")]
    Start(#[source] ProcessError),
}

impl PoolError {
    /// The task error, when a task failed.
    pub fn task_error(&self) -> Option<&TaskError> {
        match self {
            PoolError::Task { error, .. } => Some(error),
            _ => None,
        }
    }

    /// True for [`PoolError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, PoolError::Timeout(_))
    }
}
