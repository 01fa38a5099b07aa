//! Process file descriptors: wait for a child's exit with `poll`, reap it with
//! `waitid`, and never confuse it with a recycled pid.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::process::{Pid as RustixPid, PidfdFlags, WaitId, WaitIdOptions};

use super::signal::Pid;

/// What [`Pidfd::try_reap`] returns for a child that ended but whose exit
/// status someone else collected: no real exit code or `-signal` is this.
pub(crate) const STATUS_LOST: i32 = i32::MIN;

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

    /// Kills the child and reaps it (waiting for it to die).
    pub(crate) fn kill_and_reap(&self) {
        let _ = send_signal(self, libc::SIGKILL);
        let _ = rustix::process::waitid(WaitId::PidFd(self.0.as_fd()), WaitIdOptions::EXITED);
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
