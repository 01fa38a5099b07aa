//! 1,000 pool create/terminate cycles leave file descriptors, threads,
//! processes and /dev/shm entries unchanged. Alone in its file: it counts
//! process-wide resources, which other tests running alongside would change.

mod pool_support;

use std::time::Instant;

use multiproc::{Pool, StartMethod};
use pool_support::{WAIT, child_pids, dev_shm_entries, open_fds, square, threads};

#[test]
fn a_thousand_pools_leave_no_trace() {
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
    let (fds, thr, kids, shm) = (open_fds(), threads(), child_pids().len(), dev_shm_entries());
    let t = Instant::now();
    for _ in 0..1000 {
        cycle();
    }
    eprintln!("1000 pool cycles took {:?}", t.elapsed());
    assert_eq!(open_fds(), fds, "file descriptors");
    assert_eq!(threads(), thr, "threads");
    assert_eq!(child_pids().len(), kids, "processes");
    assert_eq!(dev_shm_entries(), shm, "/dev/shm entries");
}
