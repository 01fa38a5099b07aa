//! A pool that cannot start a thread on its own host says so, and what to
//! do, rather than blame Redis. This file has one test: it lowers its
//! process's limit of processes (and, as root, changes its user ids), so it
//! runs in a fresh copy of this test binary.

mod support;

use std::error::Error;
use std::time::Duration;

use multiproc_redis::{RedisPool, RedisPoolError};
use support::server;

fn square(x: u64) -> u64 {
    x * x
}

/// Lets this process start no thread or process until dropped: its soft
/// limit of processes (RLIMIT_NPROC, counted per real user) is set to 1.
/// Root is exempt from that limit, so a root process first takes the real
/// and effective ids of `nobody` (keeping root as its saved id, to come back
/// when dropped).
struct NoRoomForThreads {
    old: libc::rlimit,
    was_root: bool,
}

/// The uid of `nobody`.
const NOBODY: libc::uid_t = 65534;

impl NoRoomForThreads {
    fn new() -> NoRoomForThreads {
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        let was_root = unsafe { libc::geteuid() } == 0;
        // SAFETY: setresuid(2) with plain ids; glibc applies it to every thread.
        assert!(!was_root || unsafe { libc::setresuid(NOBODY, NOBODY, 0) } == 0, "cannot become nobody");
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit(2) writes the limit into `old`, a valid rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut old) }, 0);
        let low = libc::rlimit { rlim_cur: 1, rlim_max: old.rlim_max };
        // SAFETY: setrlimit(2) reads `low`, a valid rlimit; it lowers only
        // the soft limit, which the drop raises back.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &low) }, 0);
        NoRoomForThreads { old, was_root }
    }
}

impl Drop for NoRoomForThreads {
    fn drop(&mut self) {
        // SAFETY: as above; the old soft limit is at most the hard one, and
        // root is the saved id of a process that was root.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NPROC, &self.old);
            if self.was_root {
                libc::setresuid(0, 0, 0);
            }
        }
    }
}

/// The error says the host, not Redis, failed, and what to do.
fn blames_the_host(err: &RedisPoolError, what: &str) {
    let text = err.to_string();
    assert!(!matches!(err, RedisPoolError::Redis(_)), "blamed on redis: {text}");
    assert!(text.contains(what) && text.contains("out of threads or memory") && text.contains("ulimit"), "{text}");
    assert!(err.source().is_some(), "no OS error as the source: {text}");
}

/// Set in the fresh copy that runs the test's body.
const IN_FRESH_COPY: &str = "MULTIPROC_REDIS_TEST_NO_THREADS";

#[test]
fn a_thread_that_cannot_start_is_a_local_failure() {
    if std::env::var_os(IN_FRESH_COPY).is_some() {
        return thread_start_failures_blame_the_host();
    }
    let mut copy = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_thread_that_cannot_start_is_a_local_failure", "--nocapture", "--test-threads=1"])
        .env(IN_FRESH_COPY, "1")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = copy.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = copy.kill();
            let _ = copy.wait();
            panic!("the test's copy did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the test's copy failed: {status}");
}

fn thread_start_failures_blame_the_host() {
    let server = server();
    let url = server.url();

    let limit = NoRoomForThreads::new();
    let err = RedisPool::builder(&url).connect().expect_err("no result thread, no pool");
    drop(limit);
    blames_the_host(&err, "could not start the pool's result thread");

    let pool = RedisPool::builder(&url).connect().unwrap();
    let limit = NoRoomForThreads::new();
    let mut call = pool.apply_async(square, (3u64,));
    drop(limit);
    let err = call.get_timeout(Duration::from_secs(30)).expect_err("no call thread, no call");
    blames_the_host(&err, "could not start the call's thread");
}
