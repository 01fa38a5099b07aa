//! Spares killed while they wait (by an OOM killer, a stray `kill`, a
//! process-group signal) cost a start nothing: the next start under the fork
//! server finds them dead and still brings up a working child, soon, and the
//! dead spares are reaped; a pool whose fork server and worker were killed
//! replaces the worker. (Its own binary: it kills this process's spares and
//! fork server, which no other test may share.)

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

/// The tests of this file kill the one fork server and its spares: one at
/// a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn killed_spares_do_not_fail_or_delay_the_next_starts() {
    let _serial = serial();
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

fn pid() -> i32 {
    std::process::id() as i32
}

#[test]
fn a_pool_replaces_workers_after_its_fork_server_was_killed() {
    let _serial = serial();
    let pool = Pool::builder().processes(2).start_method(StartMethod::ForkServer).build().unwrap();
    for round in 0..4 {
        let server = fork_server_pid();
        let mut worker = pool.apply_async(pid, ());
        let worker = worker.get_timeout(JOIN).unwrap();
        // SAFETY: kill(2) on our own fork server and worker.
        unsafe {
            libc::kill(server, libc::SIGKILL);
            libc::kill(worker, libc::SIGKILL);
        }
        assert!(wait_until(JOIN, || is_dead(server) && is_dead(worker)).is_some());
        let mut r = pool.map_async(triple, 0..20u32);
        match r.get_timeout(JOIN) {
            Ok(v) => assert_eq!(v, (0..20u32).map(triple).collect::<Vec<_>>(), "round {round}"),
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    pool.terminate();
    pool.join_timeout(JOIN).unwrap();
}
