//! A program that ignores SIGCHLD: the kernel then reaps its children by
//! itself and their exit status is lost (so it is when another part of the
//! program reaps with `waitpid(-1)`). `join` must still return — with the
//! child's value when it sent one — the child must no longer count as alive,
//! and the program must still be able to exit (its exit handler joins its
//! children). Starting a child that ends at once must not fail either. The
//! SIGCHLD disposition is changed only inside a child of the test, under
//! each start method.

mod process_support;

use std::time::Duration;

use multiproc::Process;
use process_support::{JOIN, METHODS};

/// The inner children's joins: far longer than they take, shorter than the outer join.
const INNER: Duration = Duration::from_secs(5);

fn seven() -> u32 {
    7
}

fn exits_with_3() -> u32 {
    std::process::exit(3)
}

/// Runs in a child of the test: ignores SIGCHLD, then starts and joins a child
/// that returns a value and one that exits without one, with `METHODS[method]`.
/// Returns (first join, its exitcode, its is_alive, second join).
fn with_sigchld_ignored(method: usize) -> (Result<u32, String>, Option<i32>, bool, Result<u32, String>) {
    // SAFETY: this process runs no signal-sensitive code of its own; SIG_IGN
    // for SIGCHLD only makes the kernel reap its children.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let method = METHODS[method];
    let mut p = Process::builder().start_method(method).spawn(seven, ()).unwrap();
    let value = p.join_timeout(INNER).map_err(|e| e.to_string());
    let (code, alive) = (p.exitcode(), p.is_alive());
    let mut q = Process::builder().start_method(method).spawn(exits_with_3, ()).unwrap();
    let exited = q.join_timeout(INNER).map_err(|e| e.to_string());
    (value, code, alive, exited)
}

/// Runs in a child of the test: ignores SIGCHLD, then starts and joins
/// children that end at once with `METHODS[method]`; the start errors.
fn start_quick_children_with_sigchld_ignored(method: usize) -> Vec<String> {
    // SAFETY: as in `with_sigchld_ignored`.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let mut errors = Vec::new();
    for _ in 0..20 {
        match Process::builder().start_method(METHODS[method]).spawn(seven, ()) {
            Ok(mut p) => assert_eq!(p.join_timeout(INNER).unwrap(), 7),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

#[test]
fn children_that_end_at_once_start_when_sigchld_is_ignored() {
    for (index, method) in METHODS.iter().enumerate() {
        let mut outer = Process::spawn(start_quick_children_with_sigchld_ignored, (index,)).unwrap();
        let result = outer.join_timeout(JOIN);
        if result.is_err() {
            let _ = outer.kill();
            let _ = outer.join_timeout(JOIN);
        }
        assert_eq!(result.unwrap_or_else(|e| panic!("{method:?}: {e}")), Vec::<String>::new(), "{method:?}");
    }
}

#[test]
fn join_returns_and_the_program_exits_when_sigchld_is_ignored() {
    for (index, method) in METHODS.iter().enumerate() {
        let mut outer = Process::spawn(with_sigchld_ignored, (index,)).unwrap();
        let result = outer.join_timeout(JOIN);
        if result.is_err() {
            let _ = outer.kill();
            let _ = outer.join_timeout(JOIN);
        }
        let (value, code, alive, exited) = result.unwrap_or_else(|e| panic!("{method:?}: {e}"));
        assert_eq!(value, Ok(7), "{method:?}");
        assert!(!alive, "{method:?}: a child that ended is not alive");
        assert_eq!(code, None, "{method:?}: the status is unknown, as in Python");
        let err = exited.unwrap_err();
        assert!(err.contains("exit status was lost"), "{method:?}: {err}");
    }
}
