//! Logging, as Python's `multiprocessing.log_to_stderr` and `get_logger`.
//!
//! The library reports what happens to processes — a child started, running
//! its task, exiting with code N, a pool worker lost and replaced, the
//! program shutting down its children — as [`tracing`] events with target
//! `multiproc` and a `process` field holding the name of the process they
//! happened in. Any `tracing` subscriber sees them.
//!
//! No subscriber is needed to see them: [`log_to_stderr`] prints them the
//! way Python does, `[LEVEL/process name] message` (a subscriber, if any, gets
//! them too), from every process: the level set in the parent travels to
//! each child it starts, under every start method (and on to theirs), and
//! each child writes its records to its own standard error, which it shares
//! with the parent unless the builder redirects it (see
//! [`ProcessBuilder::stderr`](crate::ProcessBuilder::stderr)). Each record is
//! one write, so records of several processes sharing a pipe never mix
//! mid-line as long as each is under the pipe's atomic size (4 KiB on
//! Linux). Levels are named as `tracing` names them: `WARN` where Python
//! writes `WARNING`.
//!
//! # Examples
//!
//! ```
//! use multiproc::{Level, Process, logger};
//!
//! fn work() -> u32 {
//!     logger().info("doing some work");
//!     7
//! }
//!
//! let log = multiproc::log_to_stderr(Level::INFO);
//! assert_eq!(log.level(), Some(Level::INFO));
//! // stderr: [INFO/Process-1] child process started, running its task
//! //         [INFO/Process-1] doing some work
//! //         [INFO/Process-1] process exiting with exitcode 0
//! assert_eq!(Process::spawn(work, ()).unwrap().join().unwrap(), 7);
//! log.set_level(None);
//! ```

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

pub use tracing::Level;

use crate::process::identity;

/// Bit of [`STATE`]: records at or above the level go to standard error.
const TO_STDERR: u8 = 0x80;
/// Bits of [`STATE`]: the level (0: off, 1 = ERROR … 5 = TRACE).
const LEVEL_BITS: u8 = 0x07;

/// This process's logging state: the level and where records go. Set by
/// [`log_to_stderr`] and [`Logger::set_level`]; given to every child.
static STATE: AtomicU8 = AtomicU8::new(0);

fn rank(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn from_rank(rank: u8) -> Option<Level> {
    match rank {
        1 => Some(Level::ERROR),
        2 => Some(Level::WARN),
        3 => Some(Level::INFO),
        4 => Some(Level::DEBUG),
        5 => Some(Level::TRACE),
        _ => None,
    }
}

/// Prints this process's records at `level` and above to standard error, as
/// `[LEVEL/process name] message`, here and in every child started from now
/// on (Python's `log_to_stderr(level)`). Returns the [`logger`].
///
/// # Examples
///
/// ```
/// let log = multiproc::log_to_stderr(multiproc::Level::WARN);
/// assert_eq!(log.level(), Some(multiproc::Level::WARN));
/// log.warn("printed: [WARN/MainProcess] printed");
/// log.info("not printed: below the level");
/// log.set_level(None);
/// ```
pub fn log_to_stderr(level: Level) -> Logger {
    // ORDERING: Relaxed: a setting; nothing else is published with it.
    STATE.store(TO_STDERR | rank(level), Ordering::Relaxed);
    Logger { _private: () }
}

/// The library's logger (Python's `multiprocessing.get_logger()`): its level
/// decides which of this process's records [`log_to_stderr`] prints, and it
/// logs messages of your own under the process's name.
///
/// # Examples
///
/// ```
/// let log = multiproc::logger();
/// log.set_level(Some(multiproc::Level::ERROR));
/// assert_eq!(log.level(), Some(multiproc::Level::ERROR));
/// log.set_level(None);
/// assert_eq!(log.level(), None);
/// ```
pub fn logger() -> Logger {
    Logger { _private: () }
}

/// Handle to the library's logger; see [`logger`]. All handles are the same
/// logger.
#[derive(Clone, Copy)]
pub struct Logger {
    _private: (),
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger").field("level", &self.level()).field("to_stderr", &to_stderr()).finish()
    }
}

impl Logger {
    /// The level below which records are dropped; `None` when off.
    pub fn level(&self) -> Option<Level> {
        // ORDERING: Relaxed: a setting.
        from_rank(STATE.load(Ordering::Relaxed) & LEVEL_BITS)
    }

    /// Sets the level (Python's `logger.setLevel`); `None` turns records off.
    /// Children started afterwards take the new level.
    pub fn set_level(&self, level: Option<Level>) {
        let rank = level.map_or(0, rank);
        // ORDERING: Relaxed: a setting.
        let _ = STATE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some((s & !LEVEL_BITS) | rank));
    }

    /// True if a record at `level` would be kept.
    pub fn enabled(&self, level: Level) -> bool {
        self.level().is_some_and(|threshold| rank(level) <= rank(threshold))
    }

    /// Logs `message` at ERROR.
    pub fn error(&self, message: impl fmt::Display) {
        record(Level::ERROR, format_args!("{message}"));
    }

    /// Logs `message` at WARN.
    pub fn warn(&self, message: impl fmt::Display) {
        record(Level::WARN, format_args!("{message}"));
    }

    /// Logs `message` at INFO.
    pub fn info(&self, message: impl fmt::Display) {
        record(Level::INFO, format_args!("{message}"));
    }

    /// Logs `message` at DEBUG.
    pub fn debug(&self, message: impl fmt::Display) {
        record(Level::DEBUG, format_args!("{message}"));
    }
}

fn to_stderr() -> bool {
    // ORDERING: Relaxed: a setting.
    STATE.load(Ordering::Relaxed) & TO_STDERR != 0
}

/// One record: a `tracing` event (target `multiproc`, field `process`) and,
/// after [`log_to_stderr`], a line on standard error if the level allows.
pub(crate) fn record(level: Level, message: fmt::Arguments<'_>) {
    let process = identity::current_name();
    match level {
        Level::ERROR => tracing::error!(target: "multiproc", process = %process, "{message}"),
        Level::WARN => tracing::warn!(target: "multiproc", process = %process, "{message}"),
        Level::INFO => tracing::info!(target: "multiproc", process = %process, "{message}"),
        Level::DEBUG => tracing::debug!(target: "multiproc", process = %process, "{message}"),
        Level::TRACE => tracing::trace!(target: "multiproc", process = %process, "{message}"),
    }
    if to_stderr() && logger().enabled(level) {
        // One write per record, so lines of several processes do not mix.
        let line = format!("[{level}/{process}] {message}\n");
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// This process's logging state, for a child's start message.
pub(crate) fn state_for_child() -> u8 {
    // ORDERING: Relaxed: a setting.
    STATE.load(Ordering::Relaxed)
}

/// In a child: takes the state its parent had.
pub(crate) fn adopt_state(state: u8) {
    // ORDERING: Relaxed: a setting, set before the task runs.
    STATE.store(state & (TO_STDERR | LEVEL_BITS), Ordering::Relaxed);
}

/// Logs a lifecycle event: `lifecycle!(INFO, "child {name} started")`.
macro_rules! lifecycle {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::record($crate::log::Level::$level, format_args!($($arg)+))
    };
}
pub(crate) use lifecycle;

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn levels_filter_and_round_trip() {
        for level in [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE] {
            assert_eq!(from_rank(rank(level)), Some(level));
        }
        let before = state_for_child();
        adopt_state(TO_STDERR | rank(Level::INFO));
        let log = logger();
        assert!(log.enabled(Level::WARN) && log.enabled(Level::INFO) && !log.enabled(Level::DEBUG));
        log.set_level(None);
        assert!(!log.enabled(Level::ERROR));
        assert_eq!(state_for_child(), TO_STDERR);
        adopt_state(before);
    }
}
