//! Seed 000 (`python多进程-multiprocessing`): processes and their pids.
//!
//! ```python
//! def run_proc(name):
//!     print('Child process {0} {1} Running '.format(name, os.getpid()))
//!
//! if __name__ == '__main__':
//!     print('Parent process {0} is Running'.format(os.getpid()))
//!     for i in range(5):
//!         p = multiprocessing.Process(target=run_proc, args=(str(i),))
//!         print('process start')
//!         p.start()
//!     p.join()
//!     print('Process close')
//! ```
//!
//! The Python program joins only the last child; here every child is joined,
//! and each child's line travels back as its return value, so the report
//! shows them in order.

use multiproc::{Process, current_process, parent_process};

use crate::{Error, PATIENCE, Report};

/// What [`five_children`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiveChildren {
    /// The parent's pid.
    pub parent_pid: i32,
    /// For each child: the pid its handle reports, the pid the child saw
    /// for itself, and the pid it saw for its parent.
    pub children: Vec<ChildSeen>,
    /// Each child's exit code.
    pub exit_codes: Vec<Option<i32>>,
}

/// One child of [`five_children`], as both sides saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSeen {
    /// `Process::pid` in the parent.
    pub pid: i32,
    /// `current_process().pid` in the child.
    pub own_pid: i32,
    /// `parent_process().pid` in the child.
    pub parent_pid: i32,
}

/// The child: says who it is (the Python child prints this line).
fn run_proc(name: String) -> (String, i32, i32) {
    let me = current_process().pid;
    let parent = parent_process().map_or(0, |p| p.pid);
    (format!("Child process {name} {me} Running"), me, parent)
}

/// Starts five children that report their pid, and joins them.
///
/// # Errors
///
/// A child could not start or did not return.
pub fn five_children() -> Result<Report<FiveChildren>, Error> {
    let parent_pid = current_process().pid;
    let mut lines = vec![format!("Parent process {parent_pid} is Running")];
    let mut started = Vec::new();
    for i in 0..5 {
        let p = Process::spawn(run_proc, (i.to_string(),))?;
        lines.push(format!("process start (pid {})", p.pid().unwrap_or(0)));
        started.push(p);
    }
    let mut children = Vec::new();
    let mut exit_codes = Vec::new();
    for p in &mut started {
        let (line, own_pid, parent) = p.join_timeout(PATIENCE)?;
        lines.push(line);
        children.push(ChildSeen { pid: p.pid().unwrap_or(0), own_pid, parent_pid: parent });
        exit_codes.push(p.exitcode());
    }
    lines.push("Process close".to_string());
    Ok(Report { lines, outcome: FiveChildren { parent_pid, children, exit_codes } })
}
