//! Process file descriptors: wait for a child's exit with `poll`, reap it with
//! `waitid`, and never confuse it with a recycled pid.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::process::{Pid as RustixPid, PidfdFlags, WaitId, WaitIdOptions};

use super::super::Deadline;
use super::signal::Pid;

/// What [`Pidfd::try_reap`] returns for a child that ended but whose exit
/// status someone else collected: no real exit code or `-signal` is this.
pub(crate) const STATUS_LOST: i32 = i32::MIN;

/// How long a kill of our child waits for it to end. SIGKILL ends a process
/// at once unless it sleeps uninterruptibly (on a hung disk or network
/// mount, until that wait ends); its killer does not hang with it.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);

/// An owned pidfd for one of our children.
#[derive(Debug)]
pub(crate) struct Pidfd(OwnedFd);

impl Pidfd {
    /// Opens a pidfd for `pid`, which must be our unreaped child (so the pid
    /// cannot have been recycled).
    pub(crate) fn open(pid: Pid) -> io::Result<Pidfd> {
        let pid = RustixPid::from_raw(pid).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(Pidfd(rustix::process::pidfd_open(pid, PidfdFlags::empty())?))
    }

    /// Takes a pidfd made elsewhere (for our child).
    pub(crate) fn from_fd(fd: OwnedFd) -> Pidfd {
        Pidfd(fd)
    }

    /// The descriptor, to send to another process.
    pub(crate) fn into_fd(self) -> OwnedFd {
        self.0
    }

    /// Kills the child and reaps it, waiting for it to end at most
    /// [`KILL_WAIT`] (then it is left unreaped, and a warning says so).
    pub(crate) fn kill_and_reap(&self) {
        let _ = send_signal(self, libc::SIGKILL);
        if !self.reap_within(KILL_WAIT) {
            tracing::warn!("a killed child did not end within {KILL_WAIT:?}; it is left unreaped");
        }
    }

    /// Waits up to `timeout` for the child to end and reaps it; false if it
    /// has not ended.
    fn reap_within(&self, timeout: Duration) -> bool {
        // Readable once the child has ended (and stays so until reaped).
        let _ = super::fd::wait_readable(self.0.as_fd(), Deadline::after(timeout));
        matches!(self.try_reap(), Ok(Some(_)))
    }

    /// Reaps the child if it has exited; returns its Python-style exit code
    /// (the exit status, or `-N` after signal N), or `None` while it runs.
    /// [`STATUS_LOST`] when it ended but was reaped by someone else.
    pub(crate) fn try_reap(&self) -> io::Result<Option<i32>> {
        match rustix::process::waitid(WaitId::PidFd(self.0.as_fd()), WaitIdOptions::EXITED | WaitIdOptions::NOHANG) {
            Ok(status) => Ok(status.and_then(|s| s.exit_status().or_else(|| s.terminating_signal().map(|sig| -sig)))),
            // Our own child can be waited for until it is reaped: it ended,
            // and the kernel (SIGCHLD ignored) or another `waitpid` took its
            // status.
            Err(rustix::io::Errno::CHILD) => Ok(Some(STATUS_LOST)),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Sends `signal` through the pidfd (immune to pid reuse). A process that
/// already exited is not an error.
pub(crate) fn send_signal(pidfd: &Pidfd, signal: i32) -> io::Result<()> {
    let Some(sig) = rustix::process::Signal::from_named_raw(signal) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "unknown signal"));
    };
    match rustix::process::pidfd_send_signal(pidfd.as_fd(), sig) {
        Err(rustix::io::Errno::SRCH) | Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A child that would run for 5 s (so one that a failed test leaves
    /// behind ends soon by itself). The tests reap it themselves.
    #[allow(clippy::zombie_processes)]
    fn sleeper() -> Pid {
        let child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep(1) starts");
        i32::try_from(child.id()).expect("a pid fits an i32")
    }

    #[test]
    fn the_wait_for_a_child_to_end_is_bounded_and_a_kill_reaps_it() {
        let pid = sleeper();
        let pidfd = Pidfd::open(pid).expect("pidfd of our child");
        let t = Instant::now();
        assert!(!pidfd.reap_within(Duration::from_millis(100)), "a running child is not reaped");
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(3), "waited {waited:?}");
        pidfd.kill_and_reap();
        // Reaped: no status is left to collect.
        assert_eq!(pidfd.try_reap().ok(), Some(Some(STATUS_LOST)));
    }

    #[test]
    fn a_kill_by_pid_reaps_the_child() {
        let pid = sleeper();
        let t = Instant::now();
        super::super::signal::kill_and_reap(pid);
        assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
        let gone = rustix::process::waitpid(RustixPid::from_raw(pid), rustix::process::WaitOptions::NOHANG);
        assert_eq!(gone.err(), Some(rustix::io::Errno::CHILD), "the child was reaped");
    }
}
