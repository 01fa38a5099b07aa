//! The parent's record of each child: how to learn its exit, how to signal
//! it, and the process-wide list used by `active_children` and at exit.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Once};

use crate::log::lifecycle;
use crate::process_local::{ForkHook, ProcessLocal};
use crate::sys::Deadline;
pub(crate) use crate::sys::imp::pidfd::STATUS_LOST;
use crate::sys::imp::{self, Pid, pidfd::Pidfd};

/// How the parent learns that a child exited, and with which code: a pidfd,
/// reaped with `waitid`.
#[derive(Debug)]
pub(crate) struct ExitWatch(Pidfd);

impl ExitWatch {
    /// Watches our own child `pid`.
    pub(crate) fn child(pid: Pid) -> io::Result<ExitWatch> {
        Ok(ExitWatch(Pidfd::open(pid)?))
    }

    /// Watches our own child through a pidfd already open.
    pub(crate) fn child_with(pidfd: Pidfd) -> ExitWatch {
        ExitWatch(pidfd)
    }

    /// Kills the child and reaps it (for a child that never got its task).
    pub(crate) fn kill_and_reap(&self) {
        self.0.kill_and_reap();
    }

    /// Readable once the exit code can be collected.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Collects the exit code if the child has exited (once only).
    fn try_collect(&self) -> Option<i32> {
        self.0.try_reap().ok().flatten()
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

    /// The exit code, reaping the child if it just exited; `None` while it
    /// runs, [`STATUS_LOST`] once it ended if someone else reaped it.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        let (code, just_now) = {
            let mut code = self.code.lock().unwrap_or_else(|e| e.into_inner());
            let just_now = code.is_none() && {
                *code = self.watch.try_collect();
                code.is_some()
            };
            (*code, just_now)
        };
        // Logged outside the lock: a subscriber may call back into the library.
        if let (true, Some(c)) = (just_now, code) {
            lifecycle!(DEBUG, "child {} (pid {}) exited with exitcode {c}", self.name, self.pid);
        }
        code
    }

    /// The exit code as Python reports it: `None` while the child runs, and
    /// also once it ended if its status was lost (reaped by someone else).
    pub(crate) fn exitcode(&self) -> Option<i32> {
        self.exit_code().filter(|&code| code != STATUS_LOST)
    }

    /// Waits for the exit until the deadline; the exit code (perhaps
    /// [`STATUS_LOST`]), or `None` on timeout.
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
        imp::pidfd::send_signal(&self.watch.0, signal)
    }
}

static REGISTRY: ProcessLocal<Vec<Arc<ChildShared>>> = ProcessLocal::new(Vec::new);

/// In a child made by `fork` (its copy of `REGISTRY` is reset on its own):
/// the inherited exit handler now serves this process and its own children.
fn adopt_exit_handler() {
    // ORDERING: see HANDLER_OWNER.
    if HANDLER_OWNER.load(Ordering::Relaxed) != 0 {
        HANDLER_OWNER.store(imp::getpid(), Ordering::Relaxed);
    }
}

static ADOPT_EXIT_HANDLER: ForkHook = ForkHook::new(adopt_exit_handler);

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
        ADOPT_EXIT_HANDLER.arm();
        imp::at_exit(at_exit);
    });
}

/// At normal exit: see [`end_children`].
extern "C" fn at_exit() {
    end_children();
}

/// Terminates daemon children, then waits for the others (Python's rule), so
/// nothing is left running or unreaped. A daemon child still running
/// [`DAEMON_GRACE`] after its SIGTERM (one that ignores it, as pool workers
/// started with `ignore_stop_signals` do) is killed: the exit does not wait
/// for it for ever. Runs at exit, and in a forked child that ends without
/// exit handlers; does nothing in a process that never started a child.
pub(crate) fn end_children() {
    // ORDERING: see HANDLER_OWNER.
    if HANDLER_OWNER.load(Ordering::Relaxed) != imp::getpid() {
        return;
    }
    let children = std::mem::take(&mut *REGISTRY.lock());
    if children.is_empty() {
        return;
    }
    lifecycle!(INFO, "process shutting down");
    for child in children.iter().filter(|c| c.daemon) {
        lifecycle!(DEBUG, "calling terminate() for daemon {}", child.name);
        let _ = child.signal(imp::SIGTERM);
    }
    let grace = Deadline::after(DAEMON_GRACE);
    for child in &children {
        lifecycle!(DEBUG, "calling join() for process {}", child.name);
        if child.daemon && child.wait(grace).is_none() {
            lifecycle!(DEBUG, "daemon {} outlived its SIGTERM by {DAEMON_GRACE:?}: killing it", child.name);
            let _ = child.signal(imp::SIGKILL);
        }
        child.wait(Deadline::NEVER);
    }
}

/// How long the exit waits for daemon children after their SIGTERM before
/// it kills them.
const DAEMON_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
