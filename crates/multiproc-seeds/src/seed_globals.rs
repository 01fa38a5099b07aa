//! Seeds 003 and 004: a process's globals are its own. A child changes a
//! global list, and ten children each add one to a global count; the
//! parent's globals do not move, and each child sees only its own change.
//!
//! Seed 003:
//!
//! ```python
//! datalist = ['+++']
//! def adddata():
//!     global datalist
//!     datalist.append(1); datalist.append(2); datalist.append(3)
//!     print("子进程", os.getpid(), datalist)          # ['+++', 1, 2, 3]
//! p = multiprocessing.Process(target=adddata, args=()); p.start(); p.join()
//! datalist.append("a"); datalist.append("b"); datalist.append("c")
//! print("主进程", os.getpid(), datalist)              # ['+++', 'a', 'b', 'c']
//! ```
//!
//! Seed 004:
//!
//! ```python
//! count = 0
//! def do_fun(name):
//!     global count
//!     count += 1
//!     print('process name %s is running----count:%d' % (name, count))   # count:1, ten times
//! for i in range(10): Process(target=do_fun, args=('process_%d' % i,)).start()  # then join them
//! print('this main process')
//! ```
//!
//! The globals here are `static`s behind a `Mutex`; what a child saw comes
//! back as its return value. A child started by the fork server (the
//! default) begins with the program's initial globals, as Python's `spawn`
//! and `forkserver` children do; a `fork`ed one would begin with a copy of
//! the parent's. Either way a change stays in the process that made it. (To
//! share state, use a `Value`, an `Array` or a manager: see
//! `shared_value_array` and `manager_dict_list`.)

use std::sync::Mutex;

use multiproc::Process;

use crate::{Error, PATIENCE, Report};

/// Seed 003's `datalist`.
static DATALIST: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Seed 004's `count`.
static COUNT: Mutex<u32> = Mutex::new(0);

/// Held for a whole run in this process: the run resets the parent's
/// globals as the Python program starts with them, and runs from two
/// threads (tests) must not interleave.
static RUN: Mutex<()> = Mutex::new(());

/// The list as it starts, in every process: `['+++']`.
fn datalist() -> std::sync::MutexGuard<'static, Vec<String>> {
    let mut list = DATALIST.lock().unwrap_or_else(|e| e.into_inner());
    if list.is_empty() {
        list.push("+++".to_string());
    }
    list
}

/// The child of seed 003: appends 1, 2, 3 to its `datalist`; returns its pid
/// and the list it then holds.
fn adddata() -> (u32, Vec<String>) {
    let mut list = datalist();
    list.extend(["1", "2", "3"].map(String::from));
    (std::process::id(), list.clone())
}

/// The child of seed 004: adds one to its `count`; returns the count it then
/// holds.
fn do_fun(name: String) -> (String, u32) {
    let mut count = COUNT.lock().unwrap_or_else(|e| e.into_inner());
    *count += 1;
    (name, *count)
}

/// What [`globals_not_shared`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Globals {
    /// `datalist` in the child after its appends.
    pub child_list: Vec<String>,
    /// The child's pid.
    pub child_pid: u32,
    /// `datalist` in the parent after the child ran and the parent appended.
    pub parent_list: Vec<String>,
    /// `(name, count)` each of the ten children saw after its `count += 1`.
    pub counts: Vec<(String, u32)>,
    /// `count` in the parent after the ten children ran.
    pub parent_count: u32,
}

/// Seed 003's list and seed 004's count, each changed by children and read
/// by the parent.
///
/// # Errors
///
/// A child could not start or did not return.
pub fn globals_not_shared() -> Result<Report<Globals>, Error> {
    let _run = RUN.lock().unwrap_or_else(|e| e.into_inner());
    DATALIST.lock().unwrap_or_else(|e| e.into_inner()).clear(); // `datalist()` makes it ['+++'] again
    *COUNT.lock().unwrap_or_else(|e| e.into_inner()) = 0;
    let (child_pid, child_list) = Process::spawn(adddata, ())?.join_timeout(PATIENCE)?;
    let parent_list = {
        let mut list = datalist();
        list.extend(["a", "b", "c"].map(String::from));
        list.clone()
    };
    let mut lines =
        vec![format!("child {child_pid} {child_list:?}"), format!("parent {} {parent_list:?}", std::process::id())];

    let mut children = Vec::new();
    for i in 0..10 {
        children.push(Process::spawn(do_fun, (format!("process_{i}"),))?);
    }
    let mut counts = Vec::new();
    for child in &mut children {
        let (name, count) = child.join_timeout(PATIENCE)?;
        lines.push(format!("process name {name} is running----count:{count}"));
        counts.push((name, count));
    }
    let parent_count = *COUNT.lock().unwrap_or_else(|e| e.into_inner());
    lines.push(format!("this main process: count:{parent_count}"));
    Ok(Report { lines, outcome: Globals { child_list, child_pid, parent_list, counts, parent_count } })
}
