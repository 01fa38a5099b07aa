//! OS pieces of the fork server: SIGCHLD as a descriptor, reaping, and the
//! signal reset of a freshly forked child.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::fd::cvt;
use super::signal::Pid;

/// A signalfd that becomes readable when a child exits.
#[derive(Debug)]
pub(crate) struct SigchldFd(OwnedFd);

impl SigchldFd {
    /// Blocks SIGCHLD for normal delivery and opens a signalfd for it.
    pub(crate) fn new() -> io::Result<SigchldFd> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset/sigaddset;
        // sigprocmask and signalfd only read it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            cvt(libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()))?;
            let fd = cvt(libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK))?;
            Ok(SigchldFd(OwnedFd::from_raw_fd(fd)))
        }
    }

    /// Consumes pending notifications.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 128 * 8];
        while matches!(rustix::io::read(&self.0, &mut buf), Ok(n) if n > 0) {}
    }
}

impl AsFd for SigchldFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Reaps one exited child without blocking: its pid and Python-style exit code.
pub(crate) fn reap_any() -> Option<(Pid, i32)> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into our local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        return Some((pid, 0));
    };
    Some((pid, code))
}

/// In a freshly forked child: unblock every signal and restore SIGPIPE's
/// default action (the fork server ignores it).
pub(crate) fn reset_child_signals() {
    // SAFETY: as in `SigchldFd::new`; signal(2) only changes a disposition.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// In the fork server: a status pipe whose reader already left must not kill
/// the server (its write just fails).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: signal(2) only changes this process's disposition of SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Moves descriptor `from` to number `to` (clearing close-on-exec).
pub(crate) fn move_fd(from: i32, to: i32) {
    if from != to {
        // SAFETY: dup2 only manipulates the descriptor table of this (freshly
        // forked, single-threaded) child.
        unsafe {
            libc::dup2(from, to);
            libc::close(from);
        }
    }
}

/// Raw number of a descriptor.
pub(crate) fn raw(fd: BorrowedFd<'_>) -> i32 {
    fd.as_raw_fd()
}
