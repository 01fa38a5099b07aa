//! A long-lived client process (a pool worker, say) given the proxies of
//! one short-lived manager after another keeps no connection to the
//! managers that are gone. Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use multiproc::manager::{Dict, Manager, Queue};
use sync_support::{Kid, LONG};

/// Open descriptors of process `pid`.
fn fds_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Uses the dict of each job (each from another manager) once.
fn worker(jobs: Queue<Option<Dict<u32, u32>>>, done: Queue<u32>) {
    while let Some(d) = jobs.get_timeout(LONG).unwrap() {
        d.insert(1, 1).unwrap();
        done.put(d.len().unwrap() as u32).unwrap();
    }
}

#[test]
fn a_client_keeps_no_connections_to_managers_that_are_gone() {
    let control = Manager::start().unwrap();
    let (jobs, done) = (control.queue().unwrap(), control.queue().unwrap());
    let kid = Kid::<()>::spawn(worker, (jobs.clone(), done.clone()));
    let batch = || {
        let m = Manager::start().unwrap();
        jobs.put(Some(m.dict().unwrap())).unwrap();
        assert_eq!(done.get_timeout(LONG).unwrap(), 1);
        m.shutdown().unwrap();
    };
    batch();
    batch();
    let before = fds_of(kid.pid()); // the worker waits for its next job
    for _ in 0..12 {
        batch();
    }
    let after = fds_of(kid.pid());
    // One manager's worth at most (the last one's connection, not yet seen
    // closed), not one per manager.
    assert!(after <= before + 3, "the worker went from {before} to {after} descriptors over 12 managers");
    jobs.put(None).unwrap();
    kid.join();
    control.shutdown().unwrap();
}
