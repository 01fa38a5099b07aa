//! Spares killed while they wait (by an OOM killer, a stray `kill`, a
//! process-group signal) cost a start nothing: the next start under the fork
//! server finds them dead and still brings up a working child, soon, and the
//! dead spares are reaped. (Its own binary: it kills this process's spares,
//! which no other test may share.)

mod process_support;

use std::time::{Duration, Instant};

use multiproc::{Pool, Process, StartMethod};
use process_support::{JOIN, children_of, count_zombie_children, fork_server_pid, is_dead, wait_until};

fn triple(x: u32) -> u32 {
    x * 3
}

/// Kills every child of ours but the fork server (the spares, when no
/// process of ours runs); returns them.
fn kill_spares() -> Vec<i32> {
    let server = fork_server_pid();
    let me = std::process::id() as i32;
    // The spares are forked asynchronously: let them come.
    wait_until(JOIN, || children_of(me).len() >= 2);
    let spares: Vec<i32> = children_of(me).into_iter().filter(|p| *p != server).collect();
    for p in &spares {
        // SAFETY: kill(2) on a child of ours.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    for p in &spares {
        assert!(wait_until(JOIN, || is_dead(*p)).is_some(), "spare {p} did not die");
    }
    spares
}

#[test]
fn killed_spares_do_not_fail_or_delay_the_next_starts() {
    for round in 0..3u32 {
        let spares = kill_spares();
        assert!(!spares.is_empty(), "round {round}: no spare to kill");
        let t = Instant::now();
        for i in 0..4 {
            let mut p = Process::builder().start_method(StartMethod::ForkServer).spawn(triple, (i,)).unwrap();
            assert_eq!(p.join_timeout(JOIN).unwrap(), 3 * i, "round {round}, start {i}");
        }
        assert!(t.elapsed() < Duration::from_secs(5), "round {round}: four starts took {:?}", t.elapsed());
        // And a pool, whose workers come from the same spares.
        let spares = kill_spares();
        assert!(!spares.is_empty());
        let pool = Pool::builder().processes(2).start_method(StartMethod::ForkServer).build().unwrap();
        let mut r = pool.map_async(triple, 0..10u32);
        assert_eq!(r.get_timeout(JOIN).unwrap(), (0..10u32).map(triple).collect::<Vec<_>>());
        pool.terminate();
        pool.join_timeout(JOIN).unwrap();
    }
    assert!(wait_until(JOIN, || count_zombie_children() == 0).is_some(), "dead spares left as zombies");
}
