//! A pool runs under every start method, `Fork` included (alone in its
//! binary: forking is only sound while no other test thread is in the
//! library; the pool's own scheduler thread is allowed, see
//! `StartMethod::fork`).

mod pool_support;

use multiproc::{Pool, StartMethod};
use pool_support::{WAIT, add, square};

// SAFETY: this binary's only test forks; no other thread of it is in the
// library or holds a lock the child needs.
const FORK: StartMethod = unsafe { StartMethod::fork() };

#[test]
fn every_start_method_runs_a_pool() {
    let _watchdog = pool_support::watchdog();
    for method in [StartMethod::Spawn, StartMethod::ForkServer, FORK] {
        let pool = Pool::builder().processes(2).start_method(method).build().unwrap();
        assert_eq!(pool.map(square, 0..100u64).unwrap(), (0..100u64).map(square).collect::<Vec<_>>(), "{method:?}");
        let mut r = pool.apply_async(add, (20, 22));
        assert_eq!(r.get_timeout(WAIT).unwrap(), 42, "{method:?}");
        pool.close();
        pool.join_timeout(WAIT).unwrap();
    }
}
