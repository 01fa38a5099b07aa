//! The admin lock alone: who waits for whom, in one process, each wait
//! bounded.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use super::{AdminLock, UnloadCause};

/// Long enough to see a thread does not get through (it would at once).
const BLOCKED: Duration = Duration::from_millis(300);
/// Longest a thread that may go on takes to do so.
const GOES: Duration = Duration::from_secs(10);

/// Runs `f` with the lock on a thread; its result comes on the receiver.
fn on_thread<T: Send + 'static>(
    lock: &Arc<AdminLock>,
    f: impl FnOnce(&AdminLock) -> T + Send + 'static,
) -> mpsc::Receiver<T> {
    let (done, result) = mpsc::channel();
    let lock = Arc::clone(lock);
    std::thread::spawn(move || done.send(f(&lock)));
    result
}

#[test]
fn a_version_unload_goes_beside_a_load_that_only_waits_for_other_versions() {
    let lock = Arc::new(AdminLock::default());
    let load = lock.to_load(None).unwrap();
    let (release, released) = mpsc::channel::<()>();
    let unload = on_thread(&lock, move |l| {
        let beside = l.to_unload_version(1, || {});
        (beside.held.is_none(), released.recv_timeout(GOES).is_ok())
    });
    // Still starting its versions: the unload waits (and is seen).
    assert!(wait_until(|| lock.unloading_version(1)), "the unload was never seen");
    assert_eq!(lock.cancelled(Some(1)).as_deref(), Some("version 1 was unloaded"));
    assert_eq!(lock.cancelled(Some(2)), None);
    // Only waiting for version 2: the unload goes beside while it holds the lock.
    load.only_waits(vec![2]);
    assert!(wait_until(|| lock.state().beside == 1), "the unload did not go beside the load");
    // A new holder waits for it, even once the load is done.
    drop(load);
    let next = on_thread(&lock, |l| l.to_load(Some(2)).map(drop));
    assert!(next.recv_timeout(BLOCKED).is_err(), "a load took the lock while an unload went on beside");
    release.send(()).unwrap();
    assert_eq!(unload.recv_timeout(GOES).unwrap(), (true, true));
    next.recv_timeout(GOES).unwrap().unwrap();
    assert!(!lock.unloading_version(1));
}

/// Polls `cond` for up to [`GOES`].
fn wait_until(cond: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + GOES;
    while !cond() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn a_version_unload_waits_for_a_load_that_keeps_that_version() {
    let lock = Arc::new(AdminLock::default());
    let load = lock.to_load(Some(1)).unwrap();
    load.only_waits(vec![1]);
    let unload = on_thread(&lock, |l| drop(l.to_unload_version(1, || {})));
    assert!(wait_until(|| lock.unloading_version(1)), "the unload was never seen");
    std::thread::sleep(BLOCKED);
    // The load sees it is cancelled, and gives up.
    assert_eq!(lock.cancelled(Some(1)).as_deref(), Some("version 1 was unloaded"));
    assert_eq!(lock.cancelled(Some(2)), None);
    assert!(unload.try_recv().is_err(), "the unload went beside the load of its version");
    drop(load);
    unload.recv_timeout(GOES).unwrap();
}

#[test]
fn a_model_unload_cancels_every_load_and_a_retired_model_loads_no_more() {
    let lock = Arc::new(AdminLock::default());
    let load = lock.to_load(None).unwrap();
    let unload = on_thread(&lock, |l| drop(l.to_unload(UnloadCause::Unloaded, || {})));
    assert!(wait_until(|| lock.cancelled(None).is_some()), "the unload was never seen");
    assert_eq!(lock.cancelled(None).as_deref(), Some("the model was unloaded"));
    drop(load);
    unload.recv_timeout(GOES).unwrap();
    // Unloaded, not retired: it loads again.
    assert_eq!(lock.cancelled(None), None);
    drop(lock.to_load(None).unwrap());
    drop(lock.to_unload(UnloadCause::ShuttingDown, || {}));
    assert_eq!(lock.to_load(Some(1)).unwrap_err(), "the server is shutting down");
}
