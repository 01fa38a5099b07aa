//! A child made by `fork` ends only through `_exit`: the exit handlers it
//! inherited belong to the parent's image and must not run in the child,
//! also when its task fails (here: a panic; a working directory it cannot
//! enter, the early failure this test used, is now refused by `start()` in
//! the parent). Alone in its binary: it forks, and registers an exit
//! handler for the whole process.

mod process_support;

use std::sync::OnceLock;

use multiproc::{Process, ProcessError};
use process_support::{FORK, JOIN, TempDir};

/// Where the exit handler leaves its mark (one file per process it runs in).
static MARKS: OnceLock<std::path::PathBuf> = OnceLock::new();

extern "C" fn leave_a_mark() {
    if let Some(dir) = MARKS.get() {
        let _ = std::fs::write(dir.join(std::process::id().to_string()), "exit handler ran");
    }
}

fn fails() {
    panic!("the task fails")
}

#[test]
fn a_forked_child_that_fails_runs_no_exit_handler_of_the_parent() {
    let dir = TempDir::new("fork-exit");
    MARKS.set(dir.0.clone()).unwrap();
    // SAFETY: registers a plain extern "C" function.
    assert_eq!(unsafe { libc::atexit(leave_a_mark) }, 0);
    let mut p = Process::builder().start_method(FORK).spawn(fails, ()).unwrap();
    let err = p.join_timeout(JOIN).unwrap_err();
    assert!(matches!(err, ProcessError::Panicked(_)), "{err:?}");
    assert_eq!(p.exitcode(), Some(1));
    let marks: Vec<_> = std::fs::read_dir(&dir.0).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(marks.is_empty(), "the parent's exit handler ran in the forked child: {marks:?}");
}
