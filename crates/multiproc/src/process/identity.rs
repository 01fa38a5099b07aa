//! Who this process is: its name, whether it is a daemon, and its parent.

use super::protocol::Start;
use crate::process_local::ProcessLocal;
use crate::sys::imp;

#[derive(Debug, Clone)]
struct Identity {
    name: String,
    daemon: bool,
    parent: Option<(i32, String)>,
}

static IDENTITY: ProcessLocal<Option<Identity>> = ProcessLocal::new(|| None);

fn get() -> Identity {
    IDENTITY.lock().clone().unwrap_or(Identity { name: "MainProcess".to_string(), daemon: false, parent: None })
}

/// Records the identity the parent gave this child.
pub(crate) fn become_child(start: &Start) {
    *IDENTITY.lock() = Some(Identity {
        name: start.name.clone(),
        daemon: start.daemon,
        parent: Some((start.parent_pid, start.parent_name.clone())),
    });
}

/// This process's name: `MainProcess` in the original program.
pub(crate) fn current_name() -> String {
    get().name
}

/// True in a daemon child (which may not start children of its own).
pub(crate) fn is_daemon() -> bool {
    get().daemon
}

/// Description of a process: its pid, name and daemon flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: i32,
    /// Name given at start (`MainProcess` for the original program).
    pub name: String,
    /// Whether the process is a daemon.
    pub daemon: bool,
}

/// The process this code runs in.
///
/// # Examples
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid as u32, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    let id = get();
    ProcessInfo { pid: imp::getpid(), name: id.name, daemon: id.daemon }
}

/// The process that started this one, or `None` in the original program.
///
/// # Examples
///
/// ```
/// assert!(multiproc::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    get().parent.map(|(pid, name)| ProcessInfo { pid, name, daemon: false })
}

/// The number of CPUs this process may run on.
///
/// # Examples
///
/// ```
/// assert!(multiproc::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
