//! Operating-system calls, behind one module per platform.
//!
//! Everything above this module is platform-neutral: it calls `imp::…` and never
//! uses `libc` or `cfg(unix)` itself. Linux is the implemented and tested
//! platform; a macOS `imp` would provide the same functions.

#[cfg(target_os = "linux")]
pub(crate) mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux as imp;

#[cfg(not(target_os = "linux"))]
compile_error!("multiproc currently supports Linux only; see src/sys/mod.rs for the functions a port provides");

use std::time::{Duration, Instant};

/// A point in time after which a blocking call gives up; `None` waits forever.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// Never expires.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// Expires `timeout` from now.
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }

    /// From an optional timeout: `None` never expires.
    pub(crate) fn from_timeout(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::NEVER, Deadline::after)
    }

    /// Time left, or `None` for a deadline that never expires. Zero once passed.
    pub(crate) fn remaining(self) -> Option<Duration> {
        self.0.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The earlier of this deadline and one `timeout` from now.
    pub(crate) fn at_most(self, timeout: Duration) -> Deadline {
        let soon = Deadline::after(timeout);
        match (self.0, soon.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            _ => {
                if self.0.is_some() {
                    self
                } else {
                    soon
                }
            }
        }
    }

    /// True once the deadline has passed.
    pub(crate) fn expired(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// Milliseconds for `poll(2)`: -1 for never, rounded up so that a wait
    /// never returns before the deadline.
    pub(crate) fn poll_millis(self) -> i32 {
        match self.remaining() {
            None => -1,
            Some(left) => {
                let ms = left.as_nanos().div_ceil(1_000_000);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
        }
    }
}
