//! A child made with the `fork` start method starts children of its own with
//! every start method: the parent's launcher thread, fork server and child
//! list did not come along, and must not be used (or hang) in the child.

use std::time::Duration;

use multiproc::{Process, StartMethod};

// SAFETY: the tests of this binary hold `serial()` while they fork, so no
// other test thread is in the library or holds a lock the child needs.
const FORK: StartMethod = unsafe { StartMethod::fork() };

/// Serializes this binary's tests (see [`FORK`]).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn leaf(x: u32) -> u32 {
    x + 1
}

fn middle(method: u8) -> Vec<u32> {
    let method = [StartMethod::Spawn, StartMethod::ForkServer, FORK][method as usize];
    (0..3)
        .map(|i| {
            let mut p = Process::builder().start_method(method).spawn(leaf, (i,)).expect("grandchild starts");
            p.join_timeout(Duration::from_secs(20)).expect("grandchild returns")
        })
        .collect()
}

fn sleepy_leaf(path: String) {
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(path, "done").unwrap();
}

/// Starts a non-daemon grandchild and returns at once: its exit must wait for it.
fn middle_that_leaves(path: String) {
    Process::builder().start_method(StartMethod::ForkServer).spawn(sleepy_leaf, (path,)).unwrap();
}

#[test]
fn fork_child_joins_its_own_children_at_exit() {
    let _serial = serial();
    Process::builder().start_method(StartMethod::ForkServer).spawn(leaf, (0,)).unwrap().join().unwrap();
    let path = std::env::temp_dir().join(format!("multiproc-fork-exit-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut p = Process::builder()
        .start_method(FORK)
        .spawn(middle_that_leaves, (path.to_string_lossy().into_owned(),))
        .unwrap();
    p.join_timeout(Duration::from_secs(30)).unwrap();
    let written = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(written.unwrap(), "done", "the grandchild finished before its parent exited");
}

#[test]
fn fork_children_start_their_own_children() {
    let _serial = serial();
    // Warm the parent's launcher and fork server first, so the fork copies them.
    Process::builder().start_method(StartMethod::ForkServer).spawn(leaf, (0,)).unwrap().join().unwrap();
    for method in 0..3u8 {
        let mut p = Process::builder().start_method(FORK).spawn(middle, (method,)).unwrap();
        assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), vec![1, 2, 3], "method #{method}");
    }
}
