//! A worker that leaves stopping to its parent ignores SIGINT and SIGTERM
//! (and still dies of SIGKILL); a process that catches them sees a stop
//! request instead of dying; an external program can be made to ignore them.

mod process_support;

use std::time::{Duration, Instant};

use multiproc::{Connection, Pipe, Process};
use process_support::JOIN;

const LONG: Duration = Duration::from_secs(20);

fn send_signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) on the pid of our own unreaped child.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Ignores the stop signals, says so, and then waits for the word to end.
fn ignoring_worker(conn: Connection<u32>) -> u32 {
    multiproc::process::ignore_stop_signals();
    conn.send(&1).unwrap();
    conn.recv_timeout(LONG).unwrap() + 1
}

#[test]
fn a_worker_that_ignores_stop_signals_outlives_sigint_and_sigterm() {
    let (ours, theirs) = Pipe::<u32>::duplex().unwrap();
    let mut p = Process::spawn(ignoring_worker, (theirs,)).unwrap();
    assert_eq!(ours.recv_timeout(LONG).unwrap(), 1);
    let pid = p.pid().unwrap();
    send_signal(pid, libc::SIGINT);
    send_signal(pid, libc::SIGTERM);
    // Still there: it answers, and ends as it was asked to.
    ours.send(&41).unwrap();
    assert_eq!(p.join_timeout(JOIN).unwrap(), 42);
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn kill_pid_ends_a_worker_that_ignores_stop_signals() {
    let (ours, theirs) = Pipe::<u32>::duplex().unwrap();
    let mut p = Process::spawn(ignoring_worker, (theirs,)).unwrap();
    assert_eq!(ours.recv_timeout(LONG).unwrap(), 1);
    multiproc::process::kill_pid(p.pid().unwrap()).unwrap();
    assert!(p.join_timeout(JOIN).is_err());
    assert_eq!(p.exitcode(), Some(-9));
    // Not one process: refused, with what was wrong.
    for bad in [0, -1] {
        let err = multiproc::process::kill_pid(bad).unwrap_err();
        assert!(err.to_string().contains("is not the id of one process"), "{err}");
    }
}

/// Catches the stop signals, says so, and counts polls until a stop request.
fn catching_worker(conn: Connection<u32>) -> u32 {
    multiproc::process::catch_stop_signals();
    assert!(!multiproc::process::stop_requested());
    conn.send(&1).unwrap();
    let start = Instant::now();
    while !multiproc::process::stop_requested() {
        assert!(start.elapsed() < LONG, "no stop request came");
        std::thread::sleep(Duration::from_millis(1));
    }
    7
}

#[test]
fn a_caught_sigterm_or_sigint_is_a_stop_request_not_a_death() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let (ours, theirs) = Pipe::<u32>::duplex().unwrap();
        let mut p = Process::spawn(catching_worker, (theirs,)).unwrap();
        assert_eq!(ours.recv_timeout(LONG).unwrap(), 1);
        send_signal(p.pid().unwrap(), signal);
        assert_eq!(p.join_timeout(JOIN).unwrap(), 7, "signal {signal}");
        assert_eq!(p.exitcode(), Some(0));
    }
}

#[test]
fn a_command_can_be_made_to_ignore_stop_signals() {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("30");
    multiproc::process::command_ignores_stop_signals(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    // SigIgn in /proc: both signals ignored (SIGINT is bit 1, SIGTERM bit 14).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ignored = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap().trim();
    let mask = u64::from_str_radix(ignored, 16).unwrap();
    assert_eq!(mask & (1 << 1 | 1 << 14), 1 << 1 | 1 << 14, "SigIgn {ignored}");
    send_signal(pid, libc::SIGINT);
    send_signal(pid, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.try_wait().unwrap().is_none(), "sleep died of a stop signal");
    child.kill().unwrap();
    child.wait().unwrap();
}
