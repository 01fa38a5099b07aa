//! A fork server that dies is reaped at once, without waiting for the next
//! start to find it dead: a program that starts nothing more keeps no
//! zombie. (Its own binary: it kills this process's fork server, which no
//! other test may share.)

mod process_support;

use process_support::{JOIN, count_zombie_children, fork_server_pid, stat, wait_until};

#[test]
fn a_killed_fork_server_is_reaped_without_another_start() {
    for round in 0..5 {
        let server = fork_server_pid();
        // SAFETY: kill(2) on our own fork server.
        assert_eq!(unsafe { libc::kill(server, libc::SIGKILL) }, 0);
        assert!(
            wait_until(JOIN, || stat(server).is_none()).is_some(),
            "round {round}: the killed server {server} was not reaped"
        );
        assert!(
            wait_until(JOIN, || count_zombie_children() == 0).is_some(),
            "round {round}: zombies left (the spares the server forked ahead are ours to reap too)"
        );
    }
}
