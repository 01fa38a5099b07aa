//! A `start` that fails midway leaves nothing behind: no process (running or
//! zombie) and no descriptor it opened. The failures are made by running out
//! of descriptors at the right moment, inside a child of the test (so the
//! limit and the filler descriptors touch only that process).

mod process_support;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use multiproc::{ChildOutput, Process, ProcessError, StartMethod};
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

/// Starts a child (by the fork server or spawned; with its output captured
/// and prefixed, or inherited) while only `free` descriptors are free, for
/// `free` from 1 up until a start gets past its own set-up (with the fork
/// server: until the server itself starts); for each start that failed
/// before: how many descriptors were free, the error, the children of this
/// process left (running or not yet reaped) and the descriptors left open.
fn fail_starts(fork_server: bool, redirect: bool) -> Vec<(usize, String, usize, usize)> {
    let method = if fork_server { StartMethod::ForkServer } else { StartMethod::Spawn };
    let (stdout, stderr) = if redirect {
        (ChildOutput::Capture, ChildOutput::Prefix)
    } else {
        (ChildOutput::Inherit, ChildOutput::Inherit)
    };
    // The launcher thread and other lazy state, started before the counts.
    let mut warm = Process::builder().start_method(StartMethod::Spawn).spawn(nothing, ()).unwrap();
    warm.join_timeout(JOIN).unwrap();
    let me = std::process::id() as i32;
    let mut failures = Vec::new();
    for free in 1..=16 {
        let before = count_fds();
        let fillers = leave_free_descriptors(free);
        let started = Process::builder().start_method(method).stdout(stdout).stderr(stderr).spawn(nothing, ());
        drop(fillers);
        match started {
            Err(ProcessError::Start(e)) => {
                // Counted at once: `start` has returned, everything it
                // opened must be closed by now.
                let more_fds = count_fds().saturating_sub(before);
                let left = children_of(me).len() + count_zombie_children();
                failures.push((free, e.to_string(), left, more_fds));
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

/// [`fail_starts`] `rounds` times (a descriptor closed late by another
/// thread shows in some rounds only).
fn fail_starts_repeatedly(fork_server: bool, redirect: bool, rounds: usize) -> Vec<(usize, String, usize, usize)> {
    (0..rounds).flat_map(|_| fail_starts(fork_server, redirect)).collect()
}

/// Runs [`fail_starts`] in a child (the limit and the fillers stay there),
/// and checks that no failed start left a process or a descriptor behind.
fn check_failed_starts(fork_server: bool, redirect: bool, rounds: usize, at_least: usize) {
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(fail_starts_repeatedly, (fork_server, redirect, rounds))
        .unwrap();
    let failures = p.join_timeout(Duration::from_secs(120)).unwrap();
    assert!(failures.len() >= at_least, "expected starts to fail for want of descriptors: {failures:?}");
    for (free, error, left, more_fds) in &failures {
        assert_eq!(*left, 0, "{free} free: the failed start ({error}) left a process behind: {failures:?}");
        assert_eq!(*more_fds, 0, "{free} free: the failed start ({error}) left descriptors open: {failures:?}");
    }
}

#[test]
fn fork_server_starts_that_fail_midway_leave_no_process_and_no_descriptor() {
    // Fails at the control socket, then at each request for a spare (the
    // server, once started, stays: one round).
    check_failed_starts(true, false, 1, 3);
}

#[test]
fn starts_with_redirected_output_that_fail_midway_leave_no_descriptor() {
    // Fails at each output pipe, then at the channel.
    check_failed_starts(false, true, 30, 3);
}
