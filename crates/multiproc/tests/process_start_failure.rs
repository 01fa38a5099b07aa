//! A `start` that fails midway leaves nothing behind: no process (running or
//! zombie) and no descriptor it opened. The failures are made by running out
//! of descriptors at the right moment, inside a child of the test (so the
//! limit and the filler descriptors touch only that process).

mod process_support;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use multiproc::{Process, ProcessError, StartMethod};
use process_support::{JOIN, children_of, count_fds, count_zombie_children};

fn nothing() {}

/// Lowers this process's descriptor limit and fills every free slot under
/// it but `free`; returns the fillers (dropping them frees the slots again).
fn leave_free_descriptors(free: usize) -> Vec<OwnedFd> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into `limit`, a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit.rlim_cur = 256.min(limit.rlim_max);
    // SAFETY: setrlimit reads `limit`, a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let stdin = std::io::stdin();
    let mut fillers = Vec::new();
    while let Ok(fd) = stdin.as_fd().try_clone_to_owned() {
        fillers.push(fd);
    }
    assert!(fillers.len() > free, "too few descriptors free under the limit");
    fillers.truncate(fillers.len() - free);
    fillers
}

/// Starts a fork-server child while only `free` descriptors are free, for
/// `free` from 1 up until the fork server itself starts; for each start that
/// failed before that: how many descriptors were free, the error, the
/// children of this process left (running or not yet reaped) and the
/// descriptors left open.
fn fail_fork_server_starts() -> Vec<(usize, String, usize, usize)> {
    // The launcher thread and other lazy state, started before the counts.
    let mut warm = Process::builder().start_method(StartMethod::Spawn).spawn(nothing, ()).unwrap();
    warm.join_timeout(JOIN).unwrap();
    let me = std::process::id() as i32;
    let mut failures = Vec::new();
    for free in 1..=16 {
        let before = count_fds();
        let fillers = leave_free_descriptors(free);
        let started = Process::builder().start_method(StartMethod::ForkServer).spawn(nothing, ());
        drop(fillers);
        match started {
            Err(ProcessError::Start(e)) => {
                let left = children_of(me).len() + count_zombie_children();
                failures.push((free, e.to_string(), left, count_fds().saturating_sub(before)));
            }
            // The fork server started (and stays, with its spares): from
            // here on a failure is another story.
            Err(_) => break,
            Ok(mut p) => {
                p.join_timeout(JOIN).unwrap();
                break;
            }
        }
    }
    failures
}

#[test]
fn fork_server_starts_that_fail_midway_leave_no_process_and_no_descriptor() {
    let mut p = Process::builder().start_method(StartMethod::Spawn).spawn(fail_fork_server_starts, ()).unwrap();
    let failures = p.join_timeout(Duration::from_secs(120)).unwrap();
    // Fails at the control socket, then at each request for a spare.
    assert!(failures.len() >= 3, "expected starts to fail for want of descriptors: {failures:?}");
    for (free, error, left, more_fds) in &failures {
        assert_eq!(*left, 0, "{free} free: the failed start ({error}) left a process behind: {failures:?}");
        assert_eq!(*more_fds, 0, "{free} free: the failed start ({error}) left descriptors open: {failures:?}");
    }
}
