//! A killed fork server is restarted on the next start, and the children it
//! forked, being ours, live on. (Its own binary: the test kills this process's
//! one fork server, which no other test may share.)

mod process_support;

use multiproc::{Connection, Pipe, Process, StartMethod};
use process_support::{JOIN, count_zombie_children, fork_server_pid, is_dead, ppid_of, stat, wait_until};

/// Waits for a number and returns it doubled.
fn double_what_comes(numbers: Connection<u32>) -> u32 {
    numbers.recv_timeout(JOIN).expect("the test sends a number") * 2
}

#[test]
fn a_killed_fork_server_is_restarted_and_its_children_live_on() {
    let me = std::process::id() as i32;
    let server = fork_server_pid();
    // The fork server is a child of ours (started by re-execution), not us.
    assert_ne!(server, me);
    assert_eq!(ppid_of(server), me, "the fork server is our child");
    assert_eq!(fork_server_pid(), server, "one fork server serves every start");

    // A child the server forked is ours, not the server's: it outlives it.
    let (ours, theirs) = Pipe::<u32>::duplex().unwrap();
    let mut running =
        Process::builder().start_method(StartMethod::ForkServer).spawn(double_what_comes, (theirs,)).unwrap();
    assert_eq!(ppid_of(running.pid().unwrap()), me);

    // SAFETY: kill(2) has no memory-safety preconditions; `server` is our child.
    assert_eq!(unsafe { libc::kill(server, libc::SIGKILL) }, 0);
    assert!(wait_until(JOIN, || is_dead(server)).is_some(), "the fork server did not die");
    ours.send(&21).unwrap();
    assert_eq!(running.join_timeout(JOIN).unwrap(), 42);
    assert_eq!(running.exitcode(), Some(0));

    // The next start brings up a new server and works.
    let restarted = fork_server_pid();
    assert_ne!(restarted, server);
    assert_eq!(ppid_of(restarted), me);
    assert_eq!(fork_server_pid(), restarted);
    // The dead server was reaped by us, and so was any spare it had forked
    // for us: no zombies.
    assert!(wait_until(JOIN, || stat(server).is_none()).is_some(), "the old server is a zombie");
    assert_eq!(count_zombie_children(), 0);
}
