//! A start under the fork server just as the server is killed (its socket
//! already closed, its exit not yet visible) restarts the server and
//! succeeds, instead of failing with a closed connection. (Its own binary: it
//! kills this process's fork server, which no other test may share.)

mod process_support;

use multiproc::{Process, StartMethod};
use process_support::{JOIN, count_zombie_children, fork_server_pid, wait_until};

fn triple(x: u32) -> u32 {
    x * 3
}

#[test]
fn a_start_racing_the_fork_servers_death_restarts_it() {
    let mut killed = 0;
    for round in 0..40u32 {
        let server = fork_server_pid();
        killed = server;
        // SAFETY: kill(2) on our own fork server. The child that named it
        // may have come from a spare of the server killed last round, which
        // its watcher may have reaped since: then nothing is left to kill.
        let killed_now = unsafe { libc::kill(server, libc::SIGKILL) } == 0;
        let gone = std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        assert!(killed_now || gone, "round {round}: could not kill the fork server {server}");
        // At once: the kill may still be under way.
        let started = Process::builder().start_method(StartMethod::ForkServer).spawn(triple, (round,));
        let mut p = started.unwrap_or_else(|e| panic!("round {round}: a start as the fork server died failed: {e}"));
        assert_eq!(p.join_timeout(JOIN).unwrap(), 3 * round);
    }
    // The last server killed is reaped by its watcher, or by the next start
    // that finds it dead. Starts may first be served by the spares it forked
    // before it died (two are forked ahead), whose children it loaded. By the
    // time one is forked by a new server, no server is left a zombie.
    let restarted = (0..4).map(|_| fork_server_pid()).find(|&loader| loader != killed);
    assert!(restarted.is_some(), "four starts after the last kill were all forked by the server killed");
    assert!(wait_until(JOIN, || count_zombie_children() == 0).is_some(), "dead fork servers left as zombies");
}
