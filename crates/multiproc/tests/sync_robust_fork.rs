//! A child made with the `fork` start method, forked while the parent's
//! owner-watch thread runs, has a watch of its own (alone in its binary:
//! forking is only sound while no other test thread is in the library).

mod sync_support;

use multiproc::{Lock, OwnerDied, StartMethod};
use sync_support::Kid;

/// Takes `lock` on a thread that then exits holding it, and waits for it
/// without a timeout: true if the wait ends with `OwnerDied`.
fn outlive_a_dead_thread_holder(lock: Lock) -> bool {
    let l2 = lock.clone();
    std::thread::spawn(move || l2.acquire().unwrap().leak()).join().unwrap();
    matches!(lock.acquire(), Err(OwnerDied { .. }))
}

// SAFETY: this binary's only test forks; no other thread of it is in the
// library or holds a lock the child needs.
const FORK: StartMethod = unsafe { StartMethod::fork() };

#[test]
fn a_forked_child_of_a_process_whose_owner_watch_runs_has_its_own() {
    // The parent's watch thread is running (it just found a dead holder)
    // when the child is forked: the child must not rely on that thread,
    // which did not come along, and still detect a dead holder.
    assert!(outlive_a_dead_thread_holder(Lock::new().unwrap()));
    let child = Kid::spawn_with(FORK, outlive_a_dead_thread_holder, (Lock::new().unwrap(),));
    assert!(child.join(), "the forked child saw OwnerDied");
}
