//! 1,000 pool create/terminate cycles leave file descriptors, threads,
//! processes and /dev/shm handles unchanged. Alone in its file: it counts
//! process-wide resources, which other tests running alongside would change.
//! (The machine-wide /dev/shm listing is not counted: other programs change
//! it; what this process holds there is.)

mod pool_support;
mod shm_support;

use std::time::Instant;

use multiproc::{Pool, StartMethod};
use pool_support::{WAIT, child_pids, open_fds, square, threads};
use shm_support::own_dev_shm_handles;

/// The fork server and at most two spares it forked for us.
const FORK_SERVER_AND_SPARES: usize = 3;

#[test]
fn a_thousand_pools_leave_no_trace() {
    let _watchdog = pool_support::watchdog();
    let cycle = || {
        let pool = Pool::builder().processes(1).start_method(StartMethod::ForkServer).build().unwrap();
        pool.terminate();
        pool.join_timeout(WAIT).unwrap();
    };
    // Warm up: the fork server and the launcher thread live for the process.
    for _ in 0..3 {
        cycle();
    }
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    drop(pool);
    // A dropped (or terminated) pool's threads end on their own, shortly
    // after: the count is read once it holds still, here and at the end.
    let thr = settled_threads();
    let (fds, kids, shm) = (open_fds(), child_pids().len(), own_dev_shm_handles());
    let t = Instant::now();
    for _ in 0..1000 {
        cycle();
    }
    eprintln!("1000 pool cycles took {:?}", t.elapsed());
    assert_eq!(open_fds(), fds, "file descriptors");
    assert_eq!(settled_threads(), thr, "threads");
    // The fork server keeps spare children coming (siblings of the workers,
    // so children of this process), forked asynchronously: their number at
    // any instant is 0 to 2. A leak of even one worker in a hundred cycles
    // would leave ten.
    let settled = Instant::now();
    let bound = kids.max(FORK_SERVER_AND_SPARES);
    while child_pids().len() > bound && settled.elapsed() < WAIT {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(child_pids().len() <= bound, "processes: {:?}, at most {bound} expected", child_pids());
    assert_eq!(own_dev_shm_handles(), shm, "/dev/shm handles");
}

/// The thread count once it has held still for 100 ms (bounded by `WAIT`:
/// a count that keeps moving is read as it is then).
fn settled_threads() -> usize {
    let start = Instant::now();
    let (mut last, mut same) = (threads(), 0);
    while same < 5 && start.elapsed() < WAIT {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = threads();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}
