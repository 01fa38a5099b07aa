//! The parent's record of each child: how to learn its exit, how to signal
//! it, and the process-wide list used by `active_children` and at exit.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Once};

use crate::process_local::ProcessLocal;
use crate::sys::Deadline;
use crate::sys::imp::{self, Pid, pidfd::Pidfd};

/// How the parent learns that a child exited, and with which code.
#[derive(Debug)]
pub(crate) enum ExitWatch {
    /// Our own child: a pidfd, reaped with `waitid`.
    Child(Pidfd),
    /// A child of the fork server: the server writes the exit code to a pipe.
    Server { pid: Pid, status: OwnedFd },
}

impl ExitWatch {
    /// Watches our own child `pid`.
    pub(crate) fn child(pid: Pid) -> io::Result<ExitWatch> {
        Ok(ExitWatch::Child(Pidfd::open(pid)?))
    }

    /// Watches a child of the fork server through its status pipe.
    pub(crate) fn forked_by_server(pid: Pid, status: OwnedFd) -> ExitWatch {
        ExitWatch::Server { pid, status }
    }

    /// Readable once the exit code can be collected.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            ExitWatch::Child(p) => p.as_fd(),
            ExitWatch::Server { status, .. } => status.as_fd(),
        }
    }

    /// Collects the exit code if the child has exited (once only).
    fn try_collect(&self) -> Option<i32> {
        match self {
            ExitWatch::Child(p) => p.try_reap().ok().flatten(),
            ExitWatch::Server { status, .. } => {
                let mut buf = [0u8; 4];
                match rustix::io::read(status, &mut buf) {
                    Ok(4) => Some(i32::from_le_bytes(buf)),
                    // The fork server is gone; its children were killed with it.
                    Ok(_) => Some(-imp::SIGKILL),
                    Err(_) => None,
                }
            }
        }
    }
}

/// A child as every part of the parent shares it.
#[derive(Debug)]
pub(crate) struct ChildShared {
    pub pid: Pid,
    pub name: String,
    pub daemon: bool,
    watch: ExitWatch,
    code: Mutex<Option<i32>>,
}

impl ChildShared {
    /// Records a started child and lists it among the active children.
    pub(crate) fn register(pid: Pid, name: String, daemon: bool, watch: ExitWatch) -> Arc<ChildShared> {
        let child = Arc::new(ChildShared { pid, name, daemon, watch, code: Mutex::new(None) });
        ensure_exit_handler();
        let mut list = REGISTRY.lock();
        // Reap children that finished unobserved (their handles were dropped),
        // as Python does on every start, so none stays a zombie.
        list.retain(|c| c.exit_code().is_none());
        list.push(child.clone());
        child
    }

    /// The exit code, reaping the child if it just exited; `None` while it runs.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        let mut code = self.code.lock().unwrap_or_else(|e| e.into_inner());
        if code.is_none() {
            *code = self.watch.try_collect();
        }
        *code
    }

    /// Waits for the exit until the deadline; the exit code, or `None` on timeout.
    pub(crate) fn wait(&self, deadline: Deadline) -> Option<i32> {
        loop {
            if let Some(code) = self.exit_code() {
                return Some(code);
            }
            match imp::wait_readable(self.watch.fd(), deadline) {
                Ok(true) => continue,
                _ => return self.exit_code(),
            }
        }
    }

    /// The descriptor that becomes readable when the child exits.
    pub(crate) fn exit_fd(&self) -> BorrowedFd<'_> {
        self.watch.fd()
    }

    /// Sends a signal unless the child has already been reaped.
    pub(crate) fn signal(&self, signal: i32) -> io::Result<()> {
        let code = self.code.lock().unwrap_or_else(|e| e.into_inner());
        if code.is_some() {
            return Ok(());
        }
        match &self.watch {
            ExitWatch::Child(p) => imp::pidfd::send_signal(p, signal),
            ExitWatch::Server { pid, .. } => imp::send_signal(*pid, signal),
        }
    }
}

static REGISTRY: ProcessLocal<Vec<Arc<ChildShared>>> = ProcessLocal::new(Vec::new);

/// Forgets the parent's children in a child made by `fork` (see
/// `launch::forget_parent_state`).
pub(crate) fn forget_in_child() {
    REGISTRY.forget_in_child();
    // The inherited exit handler now serves this process and its own children.
    // ORDERING: see HANDLER_OWNER.
    if HANDLER_OWNER.load(Ordering::Relaxed) != 0 {
        HANDLER_OWNER.store(imp::getpid(), Ordering::Relaxed);
    }
}

/// The children still running; finished ones are reaped and dropped.
pub(crate) fn active() -> Vec<Arc<ChildShared>> {
    let mut list = REGISTRY.lock();
    list.retain(|c| c.exit_code().is_none());
    list.clone()
}

/// Forgets a child whose exit the caller collected.
pub(crate) fn forget(pid: Pid) {
    REGISTRY.lock().retain(|c| c.pid != pid);
}

/// The process that installed the exit handler. A child made with the `fork`
/// start method inherits the handler and a copy of the registry (its parent's
/// children, whose pidfds it has closed): it must not wait for them.
static HANDLER_OWNER: AtomicI32 = AtomicI32::new(0);

fn ensure_exit_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // ORDERING: written once before the handler is installed; read at exit
        // by the same process, so no cross-thread ordering is needed.
        HANDLER_OWNER.store(imp::getpid(), Ordering::Relaxed);
        // SAFETY: `at_exit` is a plain extern "C" function with no arguments.
        unsafe { libc::atexit(at_exit) };
    });
}

/// At normal exit: terminate daemon children, then wait for the others
/// (Python's rule), so nothing is left running or unreaped.
extern "C" fn at_exit() {
    // ORDERING: see HANDLER_OWNER.
    if HANDLER_OWNER.load(Ordering::Relaxed) != imp::getpid() {
        return;
    }
    let children = std::mem::take(&mut *REGISTRY.lock());
    for child in children.iter().filter(|c| c.daemon) {
        let _ = child.signal(imp::SIGTERM);
    }
    for child in &children {
        child.wait(Deadline::NEVER);
    }
}
