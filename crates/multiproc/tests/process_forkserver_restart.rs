//! A killed fork server is restarted on the next start. (Its own binary: the
//! test kills this process's one fork server, which no other test may share.)

mod process_support;

use multiproc::{Process, ProcessError, StartMethod};
use process_support::{JOIN, is_dead, ppid_of, wait_until};

fn pid_and_parent() -> (i32, i32) {
    (std::process::id() as i32, std::os::unix::process::parent_id() as i32)
}

fn nap() {
    std::thread::sleep(std::time::Duration::from_secs(30));
}

fn fork_server_pid() -> i32 {
    let mut p = Process::builder().start_method(StartMethod::ForkServer).spawn(pid_and_parent, ()).unwrap();
    let (pid, ppid) = p.join_timeout(JOIN).unwrap();
    assert_eq!(Some(pid), p.pid());
    ppid
}

#[test]
fn a_killed_fork_server_is_restarted_on_the_next_start() {
    let me = std::process::id() as i32;
    let server = fork_server_pid();
    // The fork server is a child of ours (started by re-execution), not us.
    assert_ne!(server, me);
    assert_eq!(ppid_of(server), me, "the fork server is our child");
    assert_eq!(fork_server_pid(), server, "one fork server serves every start");

    // A child running on the server when it dies dies with it.
    let mut running = Process::builder().start_method(StartMethod::ForkServer).spawn(nap, ()).unwrap();
    let running_pid = running.pid().unwrap();
    assert_eq!(ppid_of(running_pid), server);

    // SAFETY: kill(2) has no memory-safety preconditions; `server` is our child.
    assert_eq!(unsafe { libc::kill(server, libc::SIGKILL) }, 0);
    assert!(wait_until(JOIN, || is_dead(server)).is_some(), "the fork server did not die");

    let err = running.join_timeout(JOIN).unwrap_err();
    assert!(matches!(err, ProcessError::Signaled { signal: 9 }), "{err:?}");
    assert_eq!(running.exitcode(), Some(-9));
    assert!(wait_until(JOIN, || is_dead(running_pid)).is_some(), "the server's child outlived it");

    // The next start brings up a new server and works.
    let restarted = fork_server_pid();
    assert_ne!(restarted, server);
    assert_eq!(ppid_of(restarted), me);
    assert_eq!(fork_server_pid(), restarted);
    // The dead server was reaped by us: it is not left as a zombie.
    assert!(wait_until(JOIN, || process_support::stat(server).is_none()).is_some(), "the old server is a zombie");
}
