//! Seams of `Process` found in review (issue 13, item 5): a failed
//! `terminate`/`kill` is its own error, not a start error; `executable()`
//! does not silently change the start method.

use std::time::Duration;

use multiproc::{Connection, Pipe, Process, ProcessError, StartMethod};

const LONG: Duration = Duration::from_secs(20);

fn answer() -> u32 {
    42
}

#[test]
fn executable_with_another_explicit_start_method_is_refused() {
    let exe = std::env::current_exe().unwrap();
    let err = Process::builder()
        .start_method(StartMethod::ForkServer)
        .executable(&exe)
        .spawn(answer, ())
        .expect_err("an executable cannot run with the fork server");
    assert!(err.to_string().contains("Spawn"), "{err}");
    // The other order is refused the same way (no option wins silently).
    // SAFETY: the builder refuses this combination before it forks anything.
    let fork = unsafe { StartMethod::fork() };
    let err = Process::builder().executable(&exe).start_method(fork).spawn(answer, ()).unwrap_err();
    assert!(matches!(&err, ProcessError::Start(e) if e.kind() == std::io::ErrorKind::InvalidInput), "{err}");
    // Alone, or with Spawn, it runs.
    let mut p = Process::builder().executable(&exe).spawn(answer, ()).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 42);
    let mut p = Process::builder().start_method(StartMethod::Spawn).executable(&exe).spawn(answer, ()).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 42);
}

/// The grandchild: becomes another user, says so, then waits (bounded) for
/// its parent to go away.
fn other_user(conn: Connection<u32>) {
    // SAFETY: setuid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::setuid(65533) }, 0, "setuid");
    conn.send(&1).unwrap();
    let _ = conn.recv_timeout(LONG);
}

/// Starts a grandchild that runs as another user, becomes a third user itself
/// (so the OS refuses its signals), and reports what `terminate` and `kill`
/// said: (grandchild pid, both were `Signal` errors, the messages).
fn signal_a_stranger() -> (i32, bool, String) {
    let (ours, theirs) = Pipe::<u32>::duplex().unwrap();
    let stranger = Process::spawn(other_user, (theirs,)).unwrap();
    assert_eq!(ours.recv_timeout(LONG).unwrap(), 1);
    // SAFETY: setuid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::setuid(65534) }, 0, "setuid");
    let (t, k) = (stranger.terminate().unwrap_err(), stranger.kill().unwrap_err());
    let both =
        matches!(t, ProcessError::Signal { signal: 15, .. }) && matches!(k, ProcessError::Signal { signal: 9, .. });
    let pid = stranger.pid().unwrap();
    std::mem::forget(stranger); // its drop could not signal it either; the test kills it
    (pid, both, format!("{t} / {k}"))
}

#[test]
fn a_refused_signal_is_a_signal_error_not_a_start_error() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to make a child of another user");
        return;
    }
    let mut p = Process::spawn(signal_a_stranger, ()).unwrap();
    let (pid, both, messages) = p.join_timeout(LONG).unwrap();
    // SAFETY: kill has no memory-safety preconditions; `pid` is the orphaned
    // grandchild, which nothing else reaps or reuses before this.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(both, "{messages}");
    assert!(!messages.contains("could not start"), "{messages}");
    assert!(messages.contains("SIGTERM") && messages.contains("SIGKILL"), "{messages}");
}

#[test]
fn terminate_and_kill_after_exit_are_fine() {
    let mut p = Process::spawn(answer, ()).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 42);
    p.terminate().unwrap();
    p.kill().unwrap();
}
