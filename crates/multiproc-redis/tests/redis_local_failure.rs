//! A pool that cannot start a thread on its own host says so, and what to
//! do, rather than blame Redis. This file has one test: it lowers this
//! process's address-space limit (process-global), so that a new thread's
//! stack cannot be mapped.

mod support;

use std::error::Error;
use std::time::Duration;

use multiproc_redis::{RedisPool, RedisPoolError};
use support::server;

fn square(x: u64) -> u64 {
    x * x
}

/// This process's virtual memory size, in bytes.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmSize:")).unwrap().trim().trim_end_matches("kB").trim();
    kb.parse::<u64>().unwrap() * 1024
}

/// Lowers the address-space limit to what is mapped now and a little more
/// (no room for a thread's stack) until dropped.
struct NoRoomForThreads(libc::rlimit);

impl NoRoomForThreads {
    fn new() -> NoRoomForThreads {
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit(2) writes the limit into `old`, a valid rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
        let low = libc::rlimit { rlim_cur: vm_size() + 512 * 1024, rlim_max: old.rlim_max };
        // SAFETY: setrlimit(2) reads `low`, a valid rlimit; it lowers only
        // the soft limit, which the drop raises back.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &low) }, 0);
        NoRoomForThreads(old)
    }
}

impl Drop for NoRoomForThreads {
    fn drop(&mut self) {
        // SAFETY: as above; the old soft limit is at most the hard one.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &self.0) };
    }
}

/// The error says the host, not Redis, failed, and what to do.
fn blames_the_host(err: &RedisPoolError, what: &str) {
    let text = err.to_string();
    assert!(!matches!(err, RedisPoolError::Redis(_)), "blamed on redis: {text}");
    assert!(text.contains(what) && text.contains("out of threads or memory") && text.contains("ulimit"), "{text}");
    assert!(err.source().is_some(), "no OS error as the source: {text}");
}

#[test]
fn a_thread_that_cannot_start_is_a_local_failure() {
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
