//! A spare of the fork server that is stopped (SIGSTOP) while it waits does
//! not hold up a `ForkServer` start: the start finds it stopped, kills and
//! reaps it, and hands its task to another spare, so the child runs at once.
//! (Its own binary: the test stops this process's spares, which no other
//! test may share.)

mod process_support;

use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod};
use process_support::{JOIN, children_of, count_zombie_children, fork_server_pid, is_dead, stat, wait_until};

fn seven() -> u32 {
    7
}

/// Kills the stopped spares when dropped, so that a failed test leaves no
/// stopped process behind.
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &p in &self.0 {
            // SAFETY: kill(2) has no memory-safety preconditions; the pids
            // are children of ours (or already gone).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// Far below the 30 s a stopped spare could hold a start up.
const FAST: Duration = Duration::from_secs(5);

#[test]
fn a_stopped_spare_is_replaced_and_the_start_runs_its_child_at_once() {
    let server = fork_server_pid();
    let me = std::process::id() as i32;
    for round in 0..2 {
        // The spares are forked asynchronously: let them come.
        assert!(wait_until(JOIN, || children_of(me).len() >= 3).is_some(), "round {round}: no spares");
        let spares: Vec<i32> = children_of(me).into_iter().filter(|p| *p != server).collect();
        let guard = KillOnDrop(spares.clone());
        for &p in &spares {
            // SAFETY: as in `KillOnDrop::drop`.
            assert_eq!(unsafe { libc::kill(p, libc::SIGSTOP) }, 0);
        }
        for &p in &spares {
            assert!(wait_until(JOIN, || matches!(stat(p), Some(('T', _)))).is_some(), "spare {p} did not stop");
        }
        let t = Instant::now();
        let started = Process::builder().start_method(StartMethod::ForkServer).spawn(seven, ());
        let mut p = started.unwrap_or_else(|e| panic!("round {round}: a start with stopped spares failed: {e}"));
        let joined = p.join_timeout(FAST);
        assert_eq!(joined.map_err(|e| e.to_string()), Ok(7), "round {round}: after {:?}", t.elapsed());
        assert!(t.elapsed() < FAST, "round {round}: the start took {:?}", t.elapsed());
        assert!(!spares.contains(&p.pid().unwrap()), "round {round}: a stopped spare ran the child");
        for &s in &spares {
            assert!(wait_until(JOIN, || is_dead(s)).is_some(), "round {round}: stopped spare {s} left running");
        }
        drop(guard);
    }
    assert!(wait_until(JOIN, || count_zombie_children() == 0).is_some(), "stopped spares left as zombies");
}
