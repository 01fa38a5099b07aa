//! OS pieces of the fork server: forking a child of the server's parent, and
//! the descriptor and signal set-up of a freshly forked child.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::signal::Pid;

/// Forks children of this process's *parent* (`clone` with `CLONE_PARENT`), so
/// the fork server's children are the program's own: it reaps them, gets
/// their exit status and sees them in its process tree, as with any child.
///
/// A raw `clone` skips glibc's `fork` bookkeeping; in a single-threaded
/// process with no locks held, two things of it matter and are done here: the
/// child's thread id is written where glibc keeps it (the address the kernel
/// clears at thread exit, read back with `PR_GET_TID_ADDRESS`), and the
/// robust-futex list, which the kernel does not copy, is registered again.
#[derive(Debug)]
pub(crate) struct SiblingFork {
    tid_field: usize,
    robust_head: usize,
    robust_len: usize,
}

impl SiblingFork {
    /// Reads the addresses the children need; fails where the kernel cannot
    /// report them (built without `CONFIG_CHECKPOINT_RESTORE`).
    pub(crate) fn prepare() -> io::Result<SiblingFork> {
        let mut tid_field: usize = 0;
        // SAFETY: PR_GET_TID_ADDRESS writes one pointer-sized value to the
        // address passed, which is a live local.
        let rc =
            unsafe { libc::prctl(libc::PR_GET_TID_ADDRESS, &mut tid_field as *mut usize as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if tid_field == 0 {
            return Err(io::Error::other("glibc registered no thread-id address"));
        }
        let mut robust_head: usize = 0;
        let mut robust_len: usize = 0;
        // SAFETY: get_robust_list writes the head pointer and length into the
        // two live locals passed.
        let rc = unsafe {
            libc::syscall(libc::SYS_get_robust_list, 0, &mut robust_head as *mut usize, &mut robust_len as *mut usize)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SiblingFork { tid_field, robust_head, robust_len })
    }

    /// Forks a sibling. In the child, `child` runs and must not return.
    ///
    /// # Safety
    ///
    /// The calling process must be single-threaded, hold no locks, and have
    /// made `self` with `prepare` (the addresses are its own).
    pub(crate) unsafe fn fork(&self, child: impl FnOnce()) -> io::Result<Pid> {
        let flags = libc::CLONE_PARENT | libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD;
        // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child
        // continues on a copy of this stack. `tid_field` is glibc's own
        // thread-id word of this (only) thread, so the kernel's writes there
        // are what glibc's fork does.
        let pid =
            unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_ulong, 0usize, 0usize, self.tid_field, 0usize) };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                // SAFETY: the head is this thread's robust list, which the
                // child has at the same address; the kernel only records it.
                unsafe { libc::syscall(libc::SYS_set_robust_list, self.robust_head, self.robust_len) };
                // As in `spawn::fork`: a panic ends the child with `_exit`.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
                // SAFETY: _exit ends the child without running the server's exit handlers.
                unsafe { libc::_exit(1) }
            }
            pid => Ok(pid as Pid),
        }
    }
}

/// True if a sibling fork failed because the kernel or a sandbox (seccomp)
/// refuses that kind of clone, not for want of resources.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM | libc::ENOSYS))
}

/// In a freshly forked child: unblock every signal (the child's bootstrap
/// then ignores SIGPIPE, as every child's task runs with it ignored).
pub(crate) fn reset_child_signals() {
    // SAFETY: as in `SigchldFd::new`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
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
