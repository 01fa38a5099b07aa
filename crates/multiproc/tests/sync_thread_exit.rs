//! Waiting for a lock from a thread-local destructor, as the thread ends
//! (after the library's own per-thread state is gone), works like any wait.
//! Every blocking call has a timeout.

mod sync_support;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use multiproc::Lock;
use sync_support::{Kid, LONG};

/// Set once the destructor got the lock.
static GOT_IT: AtomicBool = AtomicBool::new(false);

struct AcquireOnExit(Lock);

impl Drop for AcquireOnExit {
    fn drop(&mut self) {
        let got = self.0.acquire_timeout(LONG).is_ok();
        GOT_IT.store(got, Ordering::SeqCst);
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<AcquireOnExit>> = const { RefCell::new(None) };
}

/// In a child: a thread whose thread-local destructor (registered before the
/// thread ever slept on a lock) waits for a lock the main thread holds.
fn wait_for_a_lock_as_a_thread_ends(lock: Lock) -> bool {
    lock.acquire_timeout(LONG).unwrap().leak();
    let (slept, go) = (mpsc::channel(), mpsc::channel::<()>());
    let mine = lock.clone();
    let t = std::thread::spawn(move || {
        ON_EXIT.with(|g| *g.borrow_mut() = Some(AcquireOnExit(mine.clone())));
        // Sleep on the lock once, so the thread's wait state exists.
        mine.acquire_timeout(LONG).unwrap().leak();
        mine.release().unwrap();
        slept.0.send(()).unwrap();
        go.1.recv_timeout(LONG).unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    lock.release().unwrap();
    slept.1.recv_timeout(LONG).unwrap();
    lock.acquire_timeout(LONG).unwrap().leak();
    go.0.send(()).unwrap();
    // The thread ends and its destructor waits for us.
    std::thread::sleep(Duration::from_millis(100));
    lock.release().unwrap();
    t.join().unwrap();
    GOT_IT.load(Ordering::SeqCst)
}

#[test]
fn a_thread_local_destructor_can_wait_for_a_lock() {
    let lock = Lock::new().unwrap();
    assert!(Kid::spawn(wait_for_a_lock_as_a_thread_ends, (lock,)).join());
}
