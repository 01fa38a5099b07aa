//! A robust lock is taken from its owner only when the owner is certainly
//! dead. An owner in another pid namespace records a thread id that means
//! nothing (or another thread) here: the lock must not be "recovered" from
//! it while it runs.
//!
//! The owner here is a thread of a grandchild that is the init process of a
//! new pid namespace, whose thread id is chosen to be free in ours (so that
//! `/proc/<tid>` is missing here, exactly what a dead owner looks like).
//! Needs `CAP_SYS_ADMIN` (root) for `unshare(CLONE_NEWPID)`; without it the
//! test says so and passes.

mod sync_support;

use std::time::Duration;

use multiproc::{Event, Lock, TryLockError};
use sync_support::{Kid, LONG, wait_until};

/// The smallest pid from 2 up with no `/proc` entry in our namespace.
fn free_pid_here() -> u32 {
    (2..10_000).find(|pid| std::fs::metadata(format!("/proc/{pid}")).is_err()).expect("a free pid")
}

/// In the child: enters a new pid namespace and forks its init, which holds
/// `lock` on a thread whose id (there) is `target`, free in the parent's
/// namespace, until `release` is set. Returns false (and sets `refused`) if
/// namespaces are not allowed here.
fn hold_from_another_namespace(lock: Lock, holding: Event, release: Event, refused: Event, target: u32) -> bool {
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        refused.set();
        return false;
    }
    // SAFETY: this child is single-threaded (a fresh multiproc child); the
    // grandchild only spawns threads and ends with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        grandchild(lock, holding, release, target);
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "grandchild failed: {status}");
    true
}

fn grandchild(lock: Lock, holding: Event, release: Event, target: u32) -> ! {
    // Thread ids in a fresh namespace count up from 1 (us): spawn threads
    // until one gets `target`, which takes the lock and holds it.
    for _ in 0..10_000 {
        let (lock, holding, release) = (lock.clone(), holding.clone(), release.clone());
        let got = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            if tid != target {
                return tid > target;
            }
            let guard = lock.acquire().unwrap();
            holding.set();
            // Held until the test is done (not for a fixed time, which a
            // slow test might outlast).
            let _ = release.wait_timeout(LONG);
            drop(guard);
            true
        })
        .join()
        .unwrap();
        if got {
            // SAFETY: ends the forked grandchild without running the
            // parent image's exit handlers.
            unsafe { libc::_exit(0) }
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(1) }
}

#[test]
fn an_owner_in_another_pid_namespace_is_never_taken_for_dead() {
    let (lock, holding, refused) = (Lock::new().unwrap(), Event::new().unwrap(), Event::new().unwrap());
    let release = Event::new().unwrap();
    let target = free_pid_here();
    let args = (lock.clone(), holding.clone(), release.clone(), refused.clone(), target);
    let kid = Kid::spawn(hold_from_another_namespace, args);
    wait_until("the owner to take the lock (or namespaces to be refused)", || holding.is_set() || refused.is_set());
    if refused.is_set() {
        assert!(!kid.join());
        eprintln!("skipped: no permission to create a pid namespace here");
        return;
    }
    // The owner is alive and holds the lock until released: waiting must
    // time out, not "recover" the lock.
    match lock.acquire_timeout(Duration::from_secs(2)) {
        Err(TryLockError::Timeout) => {}
        Err(TryLockError::OwnerDied(_)) => panic!("took the lock from a live owner in another pid namespace"),
        Err(TryLockError::WouldBlock) => panic!("a timed acquisition reported WouldBlock"),
        Ok(_) => panic!("acquired a lock that a live owner holds"),
    }
    release.set();
    assert!(kid.join());
    // Released properly by its owner: free again.
    assert!(lock.acquire_timeout(LONG).is_ok());
}
