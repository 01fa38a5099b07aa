//! Manager barriers broken while parties wait: every waiter of a broken pass
//! is told `BarrierBroken`, however soon the barrier is mended after. Every
//! wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::thread;

use multiproc::manager::{Barrier, Manager, ManagerError, RemoteError};
use sync_support::{LONG, wait_until};

/// Waiting parties: enough that waking them all takes longer than a call.
const PARTIES: usize = 16;

fn waiting_parties(b: &Barrier, n: usize) -> Vec<thread::JoinHandle<Result<usize, ManagerError>>> {
    let parties: Vec<_> = (0..n)
        .map(|_| {
            let b = b.clone();
            thread::spawn(move || b.wait_timeout(LONG))
        })
        .collect();
    wait_until("the parties to wait", || b.n_waiting().unwrap() == n);
    parties
}

fn broken(r: &Result<usize, ManagerError>) -> bool {
    matches!(r, Err(ManagerError::Remote(RemoteError::BarrierBroken)))
}

#[test]
fn an_abort_mended_at_once_still_breaks_its_waiters() {
    let m = Manager::start().unwrap();
    let b = m.barrier(PARTIES + 1).unwrap();
    for round in 0..5 {
        let parties = waiting_parties(&b, PARTIES);
        // Mended before the waiters had time to look: they were still in
        // the aborted pass, which did not pass.
        b.abort().unwrap();
        b.reset().unwrap();
        for p in parties {
            let r = p.join().unwrap();
            assert!(broken(&r), "round {round}: a waiter of an aborted pass got {r:?}");
        }
    }
    // Mended: a full pass goes through.
    let parties = waiting_parties(&b, PARTIES);
    b.wait_timeout(LONG).unwrap();
    for p in parties {
        p.join().unwrap().unwrap();
    }
}

fn wait_at(b: Barrier) {
    let _ = b.wait_timeout(LONG);
}

#[test]
fn a_party_killed_while_waiting_breaks_the_pass_for_the_others() {
    let m = Manager::start().unwrap();
    let b = m.barrier(3).unwrap();
    let doomed = sync_support::Kid::<()>::spawn(wait_at, (b.clone(),));
    wait_until("the doomed party to wait", || b.n_waiting().unwrap() == 1);
    let b2 = b.clone();
    let live = thread::spawn(move || b2.wait_timeout(LONG));
    wait_until("the live party to wait", || b.n_waiting().unwrap() == 2);
    doomed.kill();
    doomed.reap();
    // The pass cannot complete with a dead party: the live one is told.
    let r = live.join().unwrap();
    assert!(broken(&r), "{r:?}");
    assert!(b.is_broken().unwrap());
    assert_eq!(b.n_waiting().unwrap(), 0);
    // Mended, it serves a full pass.
    b.reset().unwrap();
    let parties = waiting_parties(&b, 2);
    b.wait_timeout(LONG).unwrap();
    for p in parties {
        p.join().unwrap().unwrap();
    }
}
