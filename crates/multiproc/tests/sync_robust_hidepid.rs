//! A robust lock is taken from its owner only when the owner is certainly
//! dead. With `/proc` mounted `hidepid=2`, another user's threads have no
//! `/proc` entry although they run: the waiter must not take that for death.
//!
//! The waiter here is a child that enters its own mount namespace, mounts a
//! `hidepid=2` procfs over `/proc` there, and becomes `nobody`, while the
//! parent (root) holds the lock. Needs root; without it the test says so and
//! passes.

mod sync_support;

use std::ffi::CString;
use std::time::Duration;

use multiproc::{Lock, TryLockError};
use sync_support::Kid;

/// What the waiter found.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Outcome {
    /// Not allowed to set up the hidden `/proc` here.
    Skipped(String),
    /// The wait timed out: the owner counted as alive.
    TimedOut,
    /// The lock was taken from the (live) owner.
    TookOver,
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn wait_behind_a_hidden_proc(lock: Lock, owner_tid: u32) -> Outcome {
    let fail = |what: &str| Outcome::Skipped(format!("{what}: {}", std::io::Error::last_os_error()));
    // SAFETY: plain system calls on C strings that outlive them.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return fail("unshare");
        }
        let none = std::ptr::null::<libc::c_char>();
        if libc::mount(none, c("/").as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
            return fail("make mounts private");
        }
        let opts = c("hidepid=2");
        if libc::mount(c("proc").as_ptr(), c("/proc").as_ptr(), c("proc").as_ptr(), 0, opts.as_ptr().cast()) != 0 {
            return fail("mount proc");
        }
        if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
            return fail("become nobody");
        }
    }
    if std::fs::metadata(format!("/proc/{owner_tid}")).is_ok() {
        return Outcome::Skipped("hidepid did not hide the owner".into());
    }
    match lock.acquire_timeout(Duration::from_secs(2)) {
        Err(TryLockError::Timeout) => Outcome::TimedOut,
        Err(TryLockError::OwnerDied(_)) | Ok(_) => Outcome::TookOver,
        Err(TryLockError::WouldBlock) => panic!("a timed acquisition reported WouldBlock"),
    }
}

#[test]
fn an_owner_hidden_by_hidepid_is_never_taken_for_dead() {
    let lock = Lock::new().unwrap();
    let held = lock.acquire().unwrap();
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() } as u32;
    let outcome = Kid::spawn(wait_behind_a_hidden_proc, (lock.clone(), me)).join();
    drop(held);
    match outcome {
        Outcome::Skipped(why) => eprintln!("skipped: {why}"),
        other => assert_eq!(other, Outcome::TimedOut, "a live owner hidden by hidepid was taken for dead"),
    }
}
