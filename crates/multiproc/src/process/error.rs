//! Errors of processes and of code that ran in them.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::WireError;

/// A panic that happened in another process: message, where, and backtrace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePanic {
    /// The panic message.
    pub message: String,
    /// `file:line:column` of the panic, when known.
    pub location: Option<String>,
    /// The backtrace captured in the other process.
    pub backtrace: String,
    /// Name of the process that panicked.
    pub process: String,
}

impl fmt::Display for RemotePanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' in process {}", self.message, self.process)?;
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        Ok(())
    }
}

/// Why a process could not start, or what happened to it instead of returning
/// a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// `join` (or a status call that needs a running child) before `start`.
    #[error("the process has not been started; call start() first")]
    NotStarted,
    /// `start` on a process that was already started.
    #[error("the process was already started; a Process runs once, build a new one to run again")]
    AlreadyStarted,
    /// The value was already taken by an earlier `join`.
    #[error("the process was already joined and its value taken; check exitcode() instead")]
    AlreadyJoined,
    /// The process did not finish in time; it is still running.
    #[error("the process did not finish within {0:?}; it is still running (terminate() or join again)")]
    Timeout(Duration),
    /// The function panicked in the child (exit code 1).
    #[error("the child panicked: {0}")]
    Panicked(RemotePanic),
    /// The function could not run, or its result could not be sent back.
    #[error("the task failed in the child: {0}")]
    Failed(String),
    /// The child exited without returning a value (`exit(code)` in the child).
    #[error("the child exited with code {code} before returning a value")]
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The child was killed by a signal.
    #[error("the child was killed by signal {signal} ({name})", name = crate::sys::imp::signal_name(*signal))]
    Signaled {
        /// The signal number (exitcode is `-signal`).
        signal: i32,
    },
    /// The child is a different build of the program and refused the task.
    #[error(
        "the child runs build {child} but the parent is build {parent}; parent and child must be the same executable"
    )]
    BuildMismatch {
        /// Build id of the parent.
        parent: String,
        /// Build id of the child.
        child: String,
    },
    /// A daemon process tried to start a child.
    #[error("a daemon process may not start child processes; make the parent non-daemon")]
    DaemonCannotSpawn,
    /// The operating system refused to start the process.
    #[error("could not start the child process: {0}")]
    Start(#[source] io::Error),
    /// `terminate` or `kill` could not signal the child (it was not gone:
    /// a child that already exited is not an error).
    #[error("could not send signal {signal} ({name}) to the child: {source}", name = crate::sys::imp::signal_name(*signal))]
    Signal {
        /// The signal number.
        signal: i32,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Sending the task or receiving the result failed.
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl ProcessError {
    /// True for [`ProcessError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, ProcessError::Timeout(_))
    }

    /// The remote panic, if the child panicked.
    pub fn panic(&self) -> Option<&RemotePanic> {
        match self {
            ProcessError::Panicked(p) => Some(p),
            _ => None,
        }
    }

    /// Error for a child that ended with `code` and sent no value.
    pub(crate) fn from_exit(code: i32) -> ProcessError {
        match code {
            super::child::STATUS_LOST => ProcessError::Failed(
                "the child ended without returning a value, and its exit status was lost: another part of the \
                 program reaped it (is SIGCHLD ignored?)"
                    .into(),
            ),
            code if code < 0 => ProcessError::Signaled { signal: -code },
            code => ProcessError::Exited { code },
        }
    }
}
