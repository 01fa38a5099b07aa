//! A pool that cannot start a replacement worker (here: the calling process
//! is out of descriptors) does not leave its queued tasks waiting for ever.
//! Its own test binary: it lowers this process's open-files limit.

mod pool_support;

use multiproc::{Pool, PoolError, TaskError};
use pool_support::{WAIT, get, square, watchdog};

fn pid() -> i32 {
    std::process::id() as i32
}

/// Sets this process's soft open-files limit; returns the old one.
fn set_open_files_limit(limit: u64) -> u64 {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into `old`, a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let new = libc::rlimit { rlim_cur: limit, rlim_max: old.rlim_max };
    // SAFETY: setrlimit reads `new`, a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
    old.rlim_cur
}

#[test]
fn a_task_queued_when_no_worker_can_be_started_does_not_wait_for_ever() {
    let _w = watchdog();
    let pool = Pool::new(1).unwrap();
    let worker = pool.apply(pid, ()).unwrap();
    // No new descriptor from here on: a replacement worker cannot start.
    let old = set_open_files_limit(3);
    // SAFETY: kill(2) on our own pool worker.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    let outcome = get(pool.apply_async(square, (3,)));
    set_open_files_limit(old);
    match outcome {
        Ok(v) => assert_eq!(v, 9),
        Err(PoolError::Task { error: TaskError::NoWorkers(message), .. }) => {
            assert!(message.contains("could not be started"), "{message}");
            // Said as it is: nothing to do with an initializer (there is none).
            let shown = TaskError::NoWorkers(message.clone()).to_string();
            assert!(!shown.contains("initializer"), "{shown}");
        }
        Err(e) => panic!("the task was left waiting with no worker to run it: {e} (after {WAIT:?})"),
    }
    pool.terminate();
    pool.join_timeout(WAIT).unwrap();
}
